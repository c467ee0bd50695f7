//! The `instance_tags` table: tags other than `Name`, which is the instance's name.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use super::DbError;

/// The tags of each instance asked for, by key.
pub fn of(conn: &Connection, ids: &[String]) -> Result<BTreeMap<String, BTreeMap<String, String>>, DbError> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut stmt = conn.prepare("SELECT key, value FROM instance_tags WHERE instance_id = ?1 ORDER BY key")?;
    for id in ids {
        let tags = stmt
            .query_map([id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        out.insert(id.clone(), tags);
    }
    Ok(out)
}

/// Sets `tags` on every instance in `ids` (a key already there takes the new value).
pub fn put(conn: &Connection, ids: &[String], tags: &[(String, String)]) -> Result<(), DbError> {
    let mut stmt = conn.prepare(
        "INSERT INTO instance_tags (instance_id, key, value) VALUES (?1, ?2, ?3)
         ON CONFLICT (instance_id, key) DO UPDATE SET value = excluded.value",
    )?;
    for id in ids {
        for (key, value) in tags {
            stmt.execute(params![id, key, value])?;
        }
    }
    Ok(())
}

/// Removes each key from every instance in `ids`; with a value, only where the tag has it.
pub fn remove(conn: &Connection, ids: &[String], keys: &[(String, Option<String>)]) -> Result<(), DbError> {
    let mut stmt =
        conn.prepare("DELETE FROM instance_tags WHERE instance_id = ?1 AND key = ?2 AND (?3 IS NULL OR value = ?3)")?;
    for id in ids {
        for (key, value) in keys {
            stmt.execute(params![id, key, value])?;
        }
    }
    Ok(())
}

/// How many tags an instance has (for the 50-tag limit), Name not counted.
pub fn count(conn: &Connection, id: &str) -> Result<usize, DbError> {
    Ok(conn.query_row("SELECT COUNT(*) FROM instance_tags WHERE instance_id = ?1", [id], |r| r.get::<_, i64>(0))?
        as usize)
}
