//! The `spares` table: warm spares, domains started paused ahead of any request (see
//! `instances::spares`). Their IDs and addresses are never an instance's at the same
//! time: `instances::id_exists` and `instances::reserved_ips` read this table too.

use std::net::Ipv4Addr;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::DbError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpareRow {
    pub id: String,
    pub image_id: String,
    pub instance_type: String,
    pub mac_address: String,
    pub reserved_ip: Option<String>,
    pub state: String,
    pub created_at: String,
}

const COLUMNS: &str = "id, image_id, instance_type, mac_address, reserved_ip, state, created_at";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SpareRow> {
    Ok(SpareRow {
        id: r.get(0)?,
        image_id: r.get(1)?,
        instance_type: r.get(2)?,
        mac_address: r.get(3)?,
        reserved_ip: r.get(4)?,
        state: r.get(5)?,
        created_at: r.get(6)?,
    })
}

/// Records a spare being built, with an ID never used and a free address; None when the
/// network has no address to spare. Like a launch, in one transaction.
pub fn record(
    conn: &mut Connection,
    image_id: &str,
    instance_type: &str,
    new_id: impl Fn() -> (String, String),
    pick_address: impl FnOnce(&[Ipv4Addr]) -> Option<Ipv4Addr>,
) -> Result<Option<SpareRow>, DbError> {
    let tx = conn.transaction()?;
    let (id, mac) = loop {
        let (id, mac) = new_id();
        if !super::instances::id_exists(&tx, &id)? {
            break (id, mac);
        }
    };
    let Some(ip) = pick_address(&super::instances::reserved_ips(&tx)?) else {
        return Ok(None);
    };
    let row = SpareRow {
        id,
        image_id: image_id.to_string(),
        instance_type: instance_type.to_string(),
        mac_address: mac,
        reserved_ip: Some(ip.to_string()),
        state: "building".into(),
        created_at: super::timestamp_now(),
    };
    tx.execute(
        &format!("INSERT INTO spares ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![row.id, row.image_id, row.instance_type, row.mac_address, row.reserved_ip, row.state, row.created_at],
    )?;
    tx.commit()?;
    Ok(Some(row))
}

/// Moves a spare from `from` to `to`; false when it is no longer in `from` (claimed, or
/// taken for discarding, meanwhile).
pub fn set_state(conn: &Connection, id: &str, from: &str, to: &str) -> Result<bool, DbError> {
    Ok(conn.execute("UPDATE spares SET state = ?3 WHERE id = ?1 AND state = ?2", params![id, from, to])? == 1)
}

/// Takes the ready spares `pick` chooses for discarding (`state` 'discarding') and
/// returns them; spares being built are their builder's. `leftovers`: every row
/// whatever its state, at start-up, where they were all left by an earlier run.
pub fn take_for_discarding(
    conn: &mut Connection,
    mut pick: impl FnMut(&SpareRow) -> bool,
    leftovers: bool,
) -> Result<Vec<SpareRow>, DbError> {
    let tx = conn.transaction()?;
    let all = list_in(&tx)?;
    let mut taken = Vec::new();
    for mut spare in all.into_iter().filter(|s| leftovers || s.state == "ready") {
        if pick(&spare) {
            tx.execute("UPDATE spares SET state = 'discarding' WHERE id = ?1", [&spare.id])?;
            spare.state = "discarding".into();
            taken.push(spare);
        }
    }
    tx.commit()?;
    Ok(taken)
}

/// Takes the oldest ready spare of `image_id` × `instance_type` out of the table, within
/// the launch's transaction: whoever deletes the row owns the domain.
pub fn take_ready(tx: &Transaction<'_>, image_id: &str, instance_type: &str) -> Result<Option<SpareRow>, DbError> {
    let spare = tx
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM spares WHERE state = 'ready' AND image_id = ?1 AND instance_type = ?2
                 ORDER BY created_at, id LIMIT 1"
            ),
            [image_id, instance_type],
            from_row,
        )
        .optional()?;
    if let Some(spare) = &spare {
        tx.execute("DELETE FROM spares WHERE id = ?1", [&spare.id])?;
    }
    Ok(spare)
}

pub fn delete(conn: &Connection, id: &str) -> Result<(), DbError> {
    conn.execute("DELETE FROM spares WHERE id = ?1", [id])?;
    Ok(())
}

pub fn list(conn: &Connection) -> Result<Vec<SpareRow>, DbError> {
    list_in(conn)
}

fn list_in(conn: &Connection) -> Result<Vec<SpareRow>, DbError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM spares ORDER BY created_at, id"))?;
    let rows = stmt.query_map([], from_row)?.collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Whether a spare has this ID.
pub(super) fn id_exists(conn: &Connection, id: &str) -> Result<bool, DbError> {
    Ok(conn.query_row("SELECT 1 FROM spares WHERE id = ?1", [id], |_| Ok(())).optional()?.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    fn spare_ids(n: u8) -> impl Fn() -> (String, String) {
        let next = std::cell::Cell::new(n);
        move || {
            let n = next.get();
            next.set(n + 1);
            (format!("i-0000000{n}"), format!("52:54:00:00:00:0{n}"))
        }
    }

    fn first_free(taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        (10..12).map(|n| Ipv4Addr::new(192, 168, 100, n)).find(|ip| !taken.contains(ip))
    }

    // Issue 17: a spare holds its ID and address like an instance, only one launch can
    // take it, and only once it is ready.
    #[tokio::test]
    async fn a_spare_holds_its_address_and_is_taken_once_when_ready() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite")).unwrap();
        db.call(|c| {
            let first = record(c, "ami-1", "t2.nano", spare_ids(1), first_free)?.unwrap();
            assert_eq!(first.reserved_ip.as_deref(), Some("192.168.100.10"));
            assert!(super::super::instances::id_exists(c, &first.id)?, "an instance cannot take its ID");
            // Its ID is taken: the next one gets another, and the next address.
            let second = record(c, "ami-1", "t2.nano", spare_ids(1), first_free)?.unwrap();
            assert_eq!((second.id.as_str(), second.reserved_ip.as_deref()), ("i-00000002", Some("192.168.100.11")));
            assert_eq!(record(c, "ami-1", "t2.nano", spare_ids(3), first_free)?, None, "no address left");

            let tx = c.transaction()?;
            assert_eq!(take_ready(&tx, "ami-1", "t2.nano")?, None, "still building");
            drop(tx);
            assert!(set_state(c, &first.id, "building", "ready")?);
            let tx = c.transaction()?;
            assert_eq!(take_ready(&tx, "ami-1", "t2.micro")?, None, "another type");
            assert_eq!(take_ready(&tx, "ami-1", "t2.nano")?.map(|s| s.id), Some(first.id.clone()));
            assert_eq!(take_ready(&tx, "ami-1", "t2.nano")?, None, "taken once");
            tx.commit()?;
            assert!(!set_state(c, &first.id, "ready", "discarding")?, "a claimed spare is no longer one");
            Ok(())
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn discarding_takes_ready_spares_and_building_ones_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite")).unwrap();
        db.call(|c| {
            let building = record(c, "ami-1", "t2.nano", spare_ids(1), first_free)?.unwrap();
            let ready = record(c, "ami-2", "t2.nano", spare_ids(2), first_free)?.unwrap();
            set_state(c, &ready.id, "building", "ready")?;
            let taken = take_for_discarding(c, |_| true, false)?;
            assert_eq!(taken.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), [ready.id.as_str()]);
            assert!(take_for_discarding(c, |_| true, false)?.is_empty(), "already taken");
            // At start-up, whatever an earlier run left is discarded.
            let taken = take_for_discarding(c, |_| true, true)?;
            assert_eq!(taken.len(), 2, "{taken:?}");
            assert!(taken.iter().any(|s| s.id == building.id));
            delete(c, &building.id)?;
            assert_eq!(list(c)?.len(), 1);
            Ok(())
        })
        .await
        .unwrap();
    }
}
