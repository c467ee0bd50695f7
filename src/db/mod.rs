//! SQLite: opening, migrations, and the queries, one file per table.
//! Only this module touches SQLite.

pub mod forwards;
pub mod images;
pub mod instances;
pub mod key_pairs;
pub mod reservations;
pub mod spares;
pub mod tags;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

/// Migrations in order; migration N brings the schema to `user_version` N.
const MIGRATIONS: &[(u32, &str)] = &[
    (1, include_str!("migrations/0001_initial.sql")),
    (2, include_str!("migrations/0002_instance_task.sql")),
    (3, include_str!("migrations/0003_ec2_api.sql")),
    (4, include_str!("migrations/0004_status_checks.sql")),
    (5, include_str!("migrations/0005_port_forwards.sql")),
    (6, include_str!("migrations/0006_list_order.sql")),
    (7, include_str!("migrations/0007_warm_spares.sql")),
];

pub const SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database {path}: {source}")]
    Open { path: PathBuf, source: rusqlite::Error },
    #[error(
        "database {path} has schema version {found}, newer than this ec2local understands ({supported}); \
         it was written by a newer ec2local. Upgrade ec2local, or move the file away to start afresh"
    )]
    TooNew { path: PathBuf, found: u32, supported: u32 },
    #[error("migration {version} failed: {source}")]
    Migration { version: u32, source: rusqlite::Error },
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database file permissions: {0}")]
    Permissions(std::io::Error),
}

/// The current time as stored in the database and shown by the API: RFC 3339, UTC.
pub fn timestamp_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A shared connection. Calls run on a blocking thread so SQLite never stalls the runtime.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let open_err = |source| DbError::Open { path: path.to_path_buf(), source };
        let conn = Connection::open(path).map_err(open_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(DbError::Permissions)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(open_err)?;
        migrate(&conn, path)?;
        Ok(Db { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Runs `f` with the connection on a blocking thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T, DbError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, DbError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .expect("database calls do not panic")
    }

    pub async fn schema_version(&self) -> Result<u32, DbError> {
        self.call(|c| Ok(user_version(c)?)).await
    }
}

fn user_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

fn migrate(conn: &Connection, path: &Path) -> Result<(), DbError> {
    let current = user_version(conn)?;
    if current > SCHEMA_VERSION {
        return Err(DbError::TooNew { path: path.to_path_buf(), found: current, supported: SCHEMA_VERSION });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        let apply = || -> rusqlite::Result<()> {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()
        };
        apply().map_err(|source| DbError::Migration { version: *version, source })?;
        tracing::info!(version, "database migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // REQ-REL-001
    #[tokio::test]
    async fn instances_and_key_pairs_of_an_older_schema_gain_reservations_and_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("old.db");
        {
            let conn = Connection::open(&path).unwrap();
            for (version, sql) in &MIGRATIONS[..2] {
                conn.execute_batch(sql).unwrap();
                conn.pragma_update(None, "user_version", version).unwrap();
            }
            conn.execute_batch(
                "INSERT INTO key_pairs (name, key_type, public_key, fingerprint_md5, fingerprint_sha256, created_at)
                 VALUES ('old', 'ssh-ed25519', 'ssh-ed25519 AAAA', 'aa', 'SHA256:x', 't');
                 INSERT INTO instances (id, instance_type, vcpus, memory_mib, disk_gib, image_id, state, mac_address, created_at)
                 VALUES ('i-0000abcd', 't2.nano', 1, 512, 8, 'ami-1', 'running', '52:54:00:00:ab:cd', 't');",
            )
            .unwrap();
        }
        let db = Db::open(&path).unwrap();
        let (reservation, key_id, reservations): (String, String, i64) = db
            .call(|c| {
                Ok(c.query_row(
                    "SELECT (SELECT reservation_id FROM instances), (SELECT key_pair_id FROM key_pairs),
                            (SELECT COUNT(*) FROM reservations WHERE id = (SELECT reservation_id FROM instances))",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?)
            })
            .await
            .unwrap();
        assert!(reservation.starts_with("r-") && reservation.len() == 19, "{reservation}");
        assert!(key_id.starts_with("key-") && key_id.len() == 21, "{key_id}");
        assert_eq!(reservations, 1);
    }

    #[tokio::test]
    async fn a_new_database_gets_the_whole_schema_with_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ec2local.db");
        let db = Db::open(&path).unwrap();
        assert_eq!(db.schema_version().await.unwrap(), SCHEMA_VERSION);
        let tables: Vec<String> = db
            .call(|c| {
                let mut stmt = c.prepare("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")?;
                let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
                Ok(rows)
            })
            .await
            .unwrap();
        assert_eq!(
            tables,
            ["images", "instance_tags", "instances", "key_pairs", "port_forwards", "reservations", "spares"]
        );
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // REQ-REL-001
    #[tokio::test]
    async fn reopening_keeps_data_and_does_not_migrate_again() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ec2local.db");
        {
            let db = Db::open(&path).unwrap();
            db.call(|c| {
                c.execute(
                    "INSERT INTO instances (id, instance_type, vcpus, memory_mib, disk_gib, image_id, state, mac_address, created_at)
                     VALUES ('i-00000001', 't2.nano', 1, 512, 8, 'ami-1', 'running', '52:54:00:00:00:01', '2026-01-01T00:00:00Z')",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        }
        let db = Db::open(&path).unwrap();
        let state: String = db
            .call(|c| Ok(c.query_row("SELECT state FROM instances WHERE id='i-00000001'", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(state, "running");
    }

    #[test]
    fn a_database_from_a_newer_version_is_refused_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("ec2local.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch("CREATE TABLE future (x); PRAGMA user_version = 99;").unwrap();
        }
        let err = Db::open(&path).err().expect("newer schema must be refused");
        assert!(matches!(err, DbError::TooNew { found: 99, .. }), "{err}");
        assert!(err.to_string().contains("newer"));
        let conn = Connection::open(&path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), 99);
        let has_instances: i64 =
            conn.query_row("SELECT count(*) FROM sqlite_master WHERE name='instances'", [], |r| r.get(0)).unwrap();
        assert_eq!(has_instances, 0);
    }

    // REQ-LIM-001
    #[test]
    fn launching_memory_counts_only_pending_instances() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::open(&tmp.path().join("x.db")).unwrap();
        let conn = db.conn.lock().unwrap();
        assert_eq!(instances::launching_memory_mib(&conn).unwrap(), 0);
        for (n, state, memory) in [(1, "pending", 8192), (2, "pending", 1024), (3, "running", 4096), (4, "error", 2048)]
        {
            conn.execute(
                "INSERT INTO instances (id, instance_type, vcpus, memory_mib, disk_gib, image_id, state, mac_address, created_at)
                 VALUES (?1, 't2.x', 1, ?2, 8, 'ami-1', ?3, ?4, 'now')",
                rusqlite::params![format!("i-0000000{n}"), memory, state, format!("52:54:00:00:00:0{n}")],
            )
            .unwrap();
        }
        assert_eq!(instances::launching_memory_mib(&conn).unwrap(), 9216);
    }

    #[test]
    fn the_state_column_only_takes_known_states() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::open(&tmp.path().join("x.db")).unwrap();
        let conn = db.conn.lock().unwrap();
        let err = conn.execute(
            "INSERT INTO instances (id, instance_type, vcpus, memory_mib, disk_gib, image_id, state, mac_address, created_at)
             VALUES ('i-00000002', 't2.nano', 1, 512, 8, 'ami-1', 'exploded', '52:54:00:00:00:02', 'now')",
            [],
        );
        assert!(err.is_err());
    }

    // issue 17, item 5: the list reads an index in its order (no sort of every row), and
    // the default list touches only the instances not terminated.
    #[test]
    fn the_instance_lists_are_read_from_their_indexes() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::open(&tmp.path().join("x.db")).unwrap();
        let conn = db.conn.lock().unwrap();
        let plan = |include_terminated: bool| -> String {
            let sql = format!("EXPLAIN QUERY PLAN {}", instances::list_sql(include_terminated));
            let mut stmt = conn.prepare(&sql).unwrap();
            let rows = stmt.query_map([], |r| r.get::<_, String>(3)).unwrap();
            rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
        };
        let all = plan(true);
        assert!(all.contains("USING INDEX instances_created") && !all.contains("TEMP B-TREE"), "{all}");
        let live = plan(false);
        assert!(live.contains("USING INDEX instances_live_created") && !live.contains("TEMP B-TREE"), "{live}");
    }
}
