//! The `key_pairs` table.

use rusqlite::{Connection, OptionalExtension, params};

use super::DbError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPairRow {
    pub name: String,
    pub key_type: String,
    pub public_key: String,
    pub fingerprint_md5: String,
    pub fingerprint_sha256: String,
    pub has_private_key: bool,
    pub created_at: String,
    /// `key-` + 17 hex, EC2's KeyPairId.
    pub key_pair_id: String,
    /// The fingerprint EC2 shows, when it cannot be computed from the public key (an
    /// RSA pair made here: the SHA-1 of its private key).
    pub ec2_fingerprint: Option<String>,
}

const COLUMNS: &str = "name, key_type, public_key, fingerprint_md5, fingerprint_sha256, has_private_key, created_at, \
    key_pair_id, ec2_fingerprint";

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<KeyPairRow> {
    Ok(KeyPairRow {
        name: row.get(0)?,
        key_type: row.get(1)?,
        public_key: row.get(2)?,
        fingerprint_md5: row.get(3)?,
        fingerprint_sha256: row.get(4)?,
        has_private_key: row.get(5)?,
        created_at: row.get(6)?,
        key_pair_id: row.get(7)?,
        ec2_fingerprint: row.get(8)?,
    })
}

pub fn insert(conn: &Connection, row: &KeyPairRow) -> Result<(), DbError> {
    conn.execute(
        &format!("INSERT INTO key_pairs ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        params![
            row.name,
            row.key_type,
            row.public_key,
            row.fingerprint_md5,
            row.fingerprint_sha256,
            row.has_private_key,
            row.created_at,
            row.key_pair_id,
            row.ec2_fingerprint
        ],
    )?;
    Ok(())
}

pub fn get(conn: &Connection, name: &str) -> Result<Option<KeyPairRow>, DbError> {
    Ok(conn.query_row(&format!("SELECT {COLUMNS} FROM key_pairs WHERE name = ?1"), [name], from_row).optional()?)
}

pub fn find_by_fingerprint(conn: &Connection, fingerprint_sha256: &str) -> Result<Option<KeyPairRow>, DbError> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM key_pairs WHERE fingerprint_sha256 = ?1"),
            [fingerprint_sha256],
            from_row,
        )
        .optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<KeyPairRow>, DbError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM key_pairs ORDER BY name"))?;
    let rows = stmt.query_map([], from_row)?.collect::<Result<_, _>>()?;
    Ok(rows)
}

/// Returns whether a row was deleted.
pub fn delete(conn: &Connection, name: &str) -> Result<bool, DbError> {
    Ok(conn.execute("DELETE FROM key_pairs WHERE name = ?1", [name])? > 0)
}

/// Why a key pair cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPairTaken {
    /// A pair with this name exists.
    Name,
    /// This key is stored already, under the given name.
    Key(String),
}

/// Stores a new pair unless its name or its key is taken. `before_commit` runs inside
/// the transaction after the row is written (the private key's file): if it fails, no
/// row is left.
pub fn insert_new<E>(
    conn: &mut Connection,
    row: &KeyPairRow,
    before_commit: impl FnOnce() -> Result<(), E>,
) -> Result<Result<Result<(), E>, KeyPairTaken>, DbError> {
    let tx = conn.transaction()?;
    if get(&tx, &row.name)?.is_some() {
        return Ok(Err(KeyPairTaken::Name));
    }
    if let Some(existing) = find_by_fingerprint(&tx, &row.fingerprint_sha256)? {
        return Ok(Err(KeyPairTaken::Key(existing.name)));
    }
    insert(&tx, row)?;
    if let Err(e) = before_commit() {
        return Ok(Ok(Err(e)));
    }
    tx.commit()?;
    Ok(Ok(Ok(())))
}

pub fn set_has_private_key(conn: &Connection, name: &str, has: bool) -> Result<(), DbError> {
    conn.execute("UPDATE key_pairs SET has_private_key = ?2 WHERE name = ?1", params![name, has])?;
    Ok(())
}
