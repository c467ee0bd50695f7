//! The `instances` table.

use std::net::Ipv4Addr;

use rusqlite::{Connection, OptionalExtension, params};

use super::DbError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceRow {
    pub id: String,
    pub name: String,
    pub instance_type: String,
    pub vcpus: u32,
    pub memory_mib: i64,
    pub disk_gib: i64,
    pub image_id: String,
    pub image_name: String,
    pub login_user: String,
    pub key_name: Option<String>,
    pub public_key: Option<String>,
    pub user_data: Option<String>,
    pub state: String,
    /// What the service is doing to it (`launching`, `stopping`, …); None when idle.
    pub task: Option<String>,
    pub state_reason: Option<String>,
    pub mac_address: String,
    pub reserved_ip: Option<String>,
    pub ip_address: Option<String>,
    pub created_at: String,
    pub launched_at: Option<String>,
    pub terminated_at: Option<String>,
    /// The reservation it was launched in (with the others of one RunInstances call).
    pub reservation_id: Option<String>,
    /// Refuses terminate (EC2's DisableApiTermination).
    pub disable_api_termination: bool,
    /// Refuses stop (EC2's DisableApiStop).
    pub disable_api_stop: bool,
    /// When SSH first answered in the current run (launch, start or reboot).
    pub reachable_at: Option<String>,
    /// The guest's SSH host public keys, OpenSSH lines without comment.
    pub host_public_keys: Vec<String>,
    /// The SSH host key fingerprint trusted on first use (terminal or status check).
    pub host_key: Option<String>,
}

const COLUMNS: &str = "id, name, instance_type, vcpus, memory_mib, disk_gib, image_id, image_name, login_user, \
    key_name, public_key, user_data, state, state_reason, mac_address, reserved_ip, ip_address, created_at, \
    launched_at, terminated_at, task, reservation_id, disable_api_termination, disable_api_stop, reachable_at, \
    host_public_keys, host_key";

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<InstanceRow> {
    Ok(InstanceRow {
        id: row.get(0)?,
        name: row.get(1)?,
        instance_type: row.get(2)?,
        vcpus: row.get(3)?,
        memory_mib: row.get(4)?,
        disk_gib: row.get(5)?,
        image_id: row.get(6)?,
        image_name: row.get(7)?,
        login_user: row.get(8)?,
        key_name: row.get(9)?,
        public_key: row.get(10)?,
        user_data: row.get(11)?,
        state: row.get(12)?,
        state_reason: row.get(13)?,
        mac_address: row.get(14)?,
        reserved_ip: row.get(15)?,
        ip_address: row.get(16)?,
        created_at: row.get(17)?,
        launched_at: row.get(18)?,
        terminated_at: row.get(19)?,
        task: row.get(20)?,
        reservation_id: row.get(21)?,
        disable_api_termination: row.get(22)?,
        disable_api_stop: row.get(23)?,
        reachable_at: row.get(24)?,
        host_public_keys: split_keys(row.get(25)?),
        host_key: row.get(26)?,
    })
}

fn split_keys(stored: Option<String>) -> Vec<String> {
    stored.unwrap_or_default().lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
}

fn joined_keys(keys: &[String]) -> Option<String> {
    (!keys.is_empty()).then(|| keys.join("\n"))
}

pub fn insert(conn: &Connection, r: &InstanceRow) -> Result<(), DbError> {
    conn.execute(
        &format!(
            "INSERT INTO instances ({COLUMNS}) VALUES
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)"
        ),
        params![
            r.id,
            r.name,
            r.instance_type,
            r.vcpus,
            r.memory_mib,
            r.disk_gib,
            r.image_id,
            r.image_name,
            r.login_user,
            r.key_name,
            r.public_key,
            r.user_data,
            r.state,
            r.state_reason,
            r.mac_address,
            r.reserved_ip,
            r.ip_address,
            r.created_at,
            r.launched_at,
            r.terminated_at,
            r.task,
            r.reservation_id,
            r.disable_api_termination,
            r.disable_api_stop,
            r.reachable_at,
            joined_keys(&r.host_public_keys),
            r.host_key
        ],
    )?;
    Ok(())
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<InstanceRow>, DbError> {
    Ok(conn.query_row(&format!("SELECT {COLUMNS} FROM instances WHERE id = ?1"), [id], from_row).optional()?)
}

/// Why a launch cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchRefusal {
    /// What the memory check said, given the memory of the launches in flight.
    Memory(String),
    /// No free address in the network's range.
    NoAddress,
}

/// What a new instance needs from the database, in one transaction: the memory check
/// against the launches in flight (`admit` gets their MiB), an ID never used, a free
/// address (`pick_address` gets the taken ones), and the row. `claim` runs just before
/// the row is written, inside the transaction: whatever it takes (the launch's ticket
/// and lock) is held before any other reader can see the row. Concurrent launches are
/// serialised here.
///
/// With `warm`, a ready warm spare of the row's image and type is taken instead, if
/// there is one: the instance gets its ID, MAC and address, and the third value is true.
#[allow(clippy::too_many_arguments)]
pub fn record_launch<T>(
    conn: &mut Connection,
    mut row: InstanceRow,
    admit: impl FnOnce(u64) -> Result<(), String>,
    new_id: impl Fn() -> (String, String),
    pick_address: impl FnOnce(&[Ipv4Addr]) -> Option<Ipv4Addr>,
    tags: &[(String, String)],
    warm: bool,
    claim: impl FnOnce(&str) -> T,
) -> Result<Result<(InstanceRow, T, bool), LaunchRefusal>, DbError> {
    let tx = conn.transaction()?;
    if let Err(refused) = admit(launching_memory_mib(&tx)?) {
        return Ok(Err(LaunchRefusal::Memory(refused)));
    }
    let spare = if warm { super::spares::take_ready(&tx, &row.image_id, &row.instance_type)? } else { None };
    let from_spare = spare.is_some();
    if let Some(spare) = spare {
        row.id = spare.id;
        row.mac_address = spare.mac_address;
        row.reserved_ip = spare.reserved_ip;
    } else {
        let (id, mac) = loop {
            let (id, mac) = new_id();
            if !id_exists(&tx, &id)? {
                break (id, mac);
            }
        };
        let Some(ip) = pick_address(&reserved_ips(&tx)?) else {
            return Ok(Err(LaunchRefusal::NoAddress));
        };
        row.id = id;
        row.mac_address = mac;
        row.reserved_ip = Some(ip.to_string());
    }
    let claimed = claim(&row.id);
    insert(&tx, &row)?;
    super::tags::put(&tx, std::slice::from_ref(&row.id), tags)?;
    tx.commit()?;
    Ok(Ok((row, claimed, from_spare)))
}

/// Whether an id was ever used, terminated rows included (IDs are never reused).
pub fn id_exists(conn: &Connection, id: &str) -> Result<bool, DbError> {
    Ok(conn.query_row("SELECT 1 FROM instances WHERE id = ?1", [id], |_| Ok(())).optional()?.is_some()
        || super::spares::id_exists(conn, id)?)
}

pub fn list(conn: &Connection, include_terminated: bool) -> Result<Vec<InstanceRow>, DbError> {
    // Both statements stay prepared; each is served by an index in this order (migration 6).
    let mut stmt = conn.prepare_cached(&list_sql(include_terminated))?;
    let rows = stmt.query_map([], from_row)?.collect::<Result<_, _>>()?;
    Ok(rows)
}

pub(super) fn list_sql(include_terminated: bool) -> String {
    let filter = if include_terminated { "" } else { "WHERE state != 'terminated'" };
    format!("SELECT {COLUMNS} FROM instances {filter} ORDER BY created_at, id")
}

/// Memory (MiB) of the instances launching or starting: QEMU has not taken it from the host yet.
pub fn launching_memory_mib(conn: &Connection) -> Result<u64, DbError> {
    let total: i64 =
        conn.query_row("SELECT COALESCE(SUM(memory_mib), 0) FROM instances WHERE state = 'pending'", [], |r| r.get(0))?;
    Ok(total.max(0) as u64)
}

/// The addresses currently reserved, warm spares' included.
pub fn reserved_ips(conn: &Connection) -> Result<Vec<Ipv4Addr>, DbError> {
    let mut stmt = conn.prepare(
        "SELECT reserved_ip FROM instances WHERE reserved_ip IS NOT NULL
         UNION ALL SELECT reserved_ip FROM spares WHERE reserved_ip IS NOT NULL",
    )?;
    let ips: Vec<String> = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    Ok(ips.iter().filter_map(|ip| ip.parse().ok()).collect())
}

/// One lifecycle move, as computed by the state machine: applied only if the row is
/// still in `from` (state and task), with the columns that go with the new state.
#[derive(Debug, Clone, Default)]
pub struct StatusWrite<'a> {
    pub from_state: &'a str,
    pub from_task: Option<&'a str>,
    pub to_state: &'a str,
    pub to_task: Option<&'a str>,
    pub reason: Option<&'a str>,
    /// Set when the guest (re)starts.
    pub launched_at: Option<&'a str>,
    /// Set when the instance is terminated; its addresses are released with it.
    pub terminated_at: Option<&'a str>,
    /// The guest is not running: it has no address.
    pub clear_ip: bool,
    /// The DHCP reservation is gone: the address is free for new launches.
    pub release_address: bool,
}

/// Applies a lifecycle move as a compare-and-set; returns whether it applied. This is
/// how two concurrent requests cannot both pass a state check, and how a task that was
/// overtaken (by a terminate) cannot overwrite what came after it. Any move but into
/// idle running ends the run whose `reachable_at` was recorded.
pub fn write_status(conn: &Connection, id: &str, w: &StatusWrite<'_>) -> Result<bool, DbError> {
    let changed = conn.execute(
        "UPDATE instances SET state = ?4, task = ?5, state_reason = ?6,
             launched_at = COALESCE(?7, launched_at),
             terminated_at = COALESCE(?8, terminated_at),
             reserved_ip = CASE WHEN ?8 IS NULL AND NOT ?10 THEN reserved_ip END,
             ip_address = CASE WHEN ?9 OR ?8 IS NOT NULL THEN NULL ELSE ip_address END,
             reachable_at = CASE WHEN ?4 = 'running' AND ?5 IS NULL THEN reachable_at END
         WHERE id = ?1 AND state = ?2 AND task IS ?3",
        params![
            id,
            w.from_state,
            w.from_task,
            w.to_state,
            w.to_task,
            w.reason,
            w.launched_at,
            w.terminated_at,
            w.clear_ip,
            w.release_address
        ],
    )?;
    Ok(changed == 1)
}

/// Rows the service is (or was, before a restart) working on.
pub fn list_busy(conn: &Connection) -> Result<Vec<InstanceRow>, DbError> {
    let mut stmt =
        conn.prepare(&format!("SELECT {COLUMNS} FROM instances WHERE task IS NOT NULL ORDER BY created_at, id"))?;
    let rows = stmt.query_map([], from_row)?.collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Records the address the guest has, if the row is still idle in `state`.
pub fn set_ip_if_idle(conn: &Connection, id: &str, state: &str, ip: Option<&str>) -> Result<(), DbError> {
    conn.execute(
        "UPDATE instances SET ip_address = ?3 WHERE id = ?1 AND state = ?2 AND task IS NULL",
        params![id, state, ip],
    )?;
    Ok(())
}

/// Records when SSH first answered in this run, if the row is still idle and running
/// and has no such time yet (a stop or reboot since clears it).
pub fn set_reachable_at(conn: &Connection, id: &str, at: &str) -> Result<(), DbError> {
    conn.execute(
        "UPDATE instances SET reachable_at = ?2
         WHERE id = ?1 AND state = 'running' AND task IS NULL AND reachable_at IS NULL",
        params![id, at],
    )?;
    Ok(())
}

/// Records the guest's host public keys, and pins `fingerprint` if none is pinned yet.
pub fn set_host_public_keys(
    conn: &Connection,
    id: &str,
    keys: &[String],
    fingerprint: Option<&str>,
) -> Result<(), DbError> {
    conn.execute(
        "UPDATE instances SET host_public_keys = ?2, host_key = COALESCE(host_key, ?3) WHERE id = ?1",
        params![id, joined_keys(keys), fingerprint],
    )?;
    Ok(())
}

/// Pins the host key fingerprint seen on first use; one already pinned is kept.
pub fn set_host_key(conn: &Connection, id: &str, fingerprint: &str) -> Result<(), DbError> {
    conn.execute("UPDATE instances SET host_key = ?2 WHERE id = ?1 AND host_key IS NULL", params![id, fingerprint])?;
    Ok(())
}

/// Sets what is given of the instance's protection against terminate and stop.
pub fn set_protection(
    conn: &Connection,
    id: &str,
    termination: Option<bool>,
    stop: Option<bool>,
) -> Result<bool, DbError> {
    let changed = conn.execute(
        "UPDATE instances SET disable_api_termination = COALESCE(?2, disable_api_termination),
                              disable_api_stop = COALESCE(?3, disable_api_stop)
         WHERE id = ?1",
        params![id, termination, stop],
    )?;
    Ok(changed == 1)
}

/// Renames an instance (its Name tag).
pub fn set_name(conn: &Connection, id: &str, name: &str) -> Result<(), DbError> {
    conn.execute("UPDATE instances SET name = ?2 WHERE id = ?1", params![id, name])?;
    Ok(())
}

/// The instances of one reservation, in launch order.
pub fn in_reservation(conn: &Connection, reservation_id: &str) -> Result<Vec<InstanceRow>, DbError> {
    let mut stmt =
        conn.prepare(&format!("SELECT {COLUMNS} FROM instances WHERE reservation_id = ?1 ORDER BY created_at, id"))?;
    let rows = stmt.query_map([reservation_id], from_row)?.collect::<Result<_, _>>()?;
    Ok(rows)
}
