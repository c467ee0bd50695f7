//! The `port_forwards` table. A terminated instance's rows are deleted by a trigger
//! (migration 0005) in the same write as its state.

use rusqlite::{Connection, OptionalExtension, params};

use super::DbError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardRow {
    pub host_port: u16,
    pub instance_id: String,
    pub instance_port: u16,
    pub created_at: String,
}

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ForwardRow> {
    Ok(ForwardRow {
        host_port: row.get(0)?,
        instance_id: row.get(1)?,
        instance_port: row.get(2)?,
        created_at: row.get(3)?,
    })
}

const COLUMNS: &str = "host_port, instance_id, instance_port, created_at";

/// What became of a new forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    Inserted,
    NoSuchInstance,
    InstanceTerminated,
    /// Another forward has the host port.
    HostPortTaken(ForwardRow),
}

/// Records a forward if its instance exists, is not terminated, and the host port is
/// free, in one transaction: a terminate finishing meanwhile cannot leave a forward on
/// a terminated instance.
pub fn insert(conn: &mut Connection, row: &ForwardRow) -> Result<Recorded, DbError> {
    let tx = conn.transaction()?;
    let state: Option<String> =
        tx.query_row("SELECT state FROM instances WHERE id = ?1", [&row.instance_id], |r| r.get(0)).optional()?;
    match state.as_deref() {
        None => return Ok(Recorded::NoSuchInstance),
        Some("terminated") => return Ok(Recorded::InstanceTerminated),
        Some(_) => {}
    }
    if let Some(taken) = by_host_port(&tx, row.host_port)? {
        return Ok(Recorded::HostPortTaken(taken));
    }
    tx.execute(
        &format!("INSERT INTO port_forwards ({COLUMNS}) VALUES (?1, ?2, ?3, ?4)"),
        params![row.host_port, row.instance_id, row.instance_port, row.created_at],
    )?;
    tx.commit()?;
    Ok(Recorded::Inserted)
}

pub fn by_host_port(conn: &Connection, host_port: u16) -> Result<Option<ForwardRow>, DbError> {
    Ok(conn
        .query_row(&format!("SELECT {COLUMNS} FROM port_forwards WHERE host_port = ?1"), [host_port], from_row)
        .optional()?)
}

/// Every forward, or one instance's, by host port.
pub fn list(conn: &Connection, instance_id: Option<&str>) -> Result<Vec<ForwardRow>, DbError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM port_forwards WHERE ?1 IS NULL OR instance_id = ?1 ORDER BY host_port"
    ))?;
    let rows = stmt.query_map([instance_id], from_row)?.collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Deletes one instance's forward; returns whether there was one.
pub fn delete(conn: &Connection, instance_id: &str, host_port: u16) -> Result<bool, DbError> {
    let deleted = conn.execute(
        "DELETE FROM port_forwards WHERE instance_id = ?1 AND host_port = ?2",
        params![instance_id, host_port],
    )?;
    Ok(deleted == 1)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::db::Db;
    use crate::db::instances::{self, InstanceRow, StatusWrite};

    /// An instance row in `state`; `n` makes its MAC address unique.
    pub(crate) fn instance(id: &str, state: &str, n: u8) -> InstanceRow {
        InstanceRow {
            id: id.into(),
            name: String::new(),
            instance_type: "t2.nano".into(),
            vcpus: 1,
            memory_mib: 512,
            disk_gib: 8,
            image_id: "ami-1".into(),
            image_name: String::new(),
            login_user: "ubuntu".into(),
            key_name: None,
            public_key: None,
            user_data: None,
            state: state.into(),
            task: None,
            state_reason: None,
            mac_address: format!("52:54:00:00:00:{n:02x}"),
            reserved_ip: None,
            ip_address: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            launched_at: None,
            terminated_at: None,
            reservation_id: None,
            disable_api_termination: false,
            disable_api_stop: false,
            reachable_at: None,
            host_public_keys: Vec::new(),
            host_key: None,
        }
    }

    fn forward(host_port: u16, instance_id: &str) -> ForwardRow {
        ForwardRow { host_port, instance_id: instance_id.into(), instance_port: 80, created_at: "now".into() }
    }

    #[test]
    fn a_forward_needs_a_live_instance_and_a_free_host_port() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::open(&tmp.path().join("x.db")).unwrap();
        let mut conn = db.conn.lock().unwrap();
        instances::insert(&conn, &instance("i-0000000a", "running", 1)).unwrap();
        instances::insert(&conn, &instance("i-0000000b", "terminated", 2)).unwrap();
        assert_eq!(insert(&mut conn, &forward(8080, "i-0000000a")).unwrap(), Recorded::Inserted);
        assert_eq!(insert(&mut conn, &forward(8081, "i-0000000f")).unwrap(), Recorded::NoSuchInstance);
        assert_eq!(insert(&mut conn, &forward(8081, "i-0000000b")).unwrap(), Recorded::InstanceTerminated);
        assert_eq!(
            insert(&mut conn, &forward(8080, "i-0000000a")).unwrap(),
            Recorded::HostPortTaken(forward(8080, "i-0000000a"))
        );
        // The same instance port again, on another host port, is another forward.
        assert_eq!(insert(&mut conn, &forward(8082, "i-0000000a")).unwrap(), Recorded::Inserted);
        assert_eq!(list(&conn, Some("i-0000000a")).unwrap().len(), 2);
        assert!(list(&conn, Some("i-0000000b")).unwrap().is_empty());
        assert!(!delete(&conn, "i-0000000b", 8080).unwrap(), "another instance's forward is not deleted");
        assert!(delete(&conn, "i-0000000a", 8080).unwrap());
        assert_eq!(list(&conn, None).unwrap(), [forward(8082, "i-0000000a")]);
    }

    #[test]
    fn terminating_an_instance_deletes_its_forwards_in_the_same_write() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::open(&tmp.path().join("x.db")).unwrap();
        let mut conn = db.conn.lock().unwrap();
        instances::insert(&conn, &instance("i-0000000a", "running", 1)).unwrap();
        instances::insert(&conn, &instance("i-0000000c", "running", 3)).unwrap();
        insert(&mut conn, &forward(8080, "i-0000000a")).unwrap();
        insert(&mut conn, &forward(8081, "i-0000000c")).unwrap();
        let stop = StatusWrite { from_state: "running", to_state: "stopped", clear_ip: true, ..Default::default() };
        assert!(instances::write_status(&conn, "i-0000000a", &stop).unwrap());
        assert_eq!(list(&conn, None).unwrap().len(), 2, "a stopped instance keeps its forwards");
        let terminate = StatusWrite {
            from_state: "stopped",
            to_state: "terminated",
            terminated_at: Some("now"),
            ..Default::default()
        };
        assert!(instances::write_status(&conn, "i-0000000a", &terminate).unwrap());
        assert_eq!(list(&conn, None).unwrap(), [forward(8081, "i-0000000c")]);
    }
}
