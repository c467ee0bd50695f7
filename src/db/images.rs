//! The `images` table.

use rusqlite::{Connection, OptionalExtension, params};

use super::DbError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRow {
    pub id: String,
    pub name: String,
    pub description: String,
    pub os: String,
    pub os_version: String,
    pub architecture: String,
    pub file_path: String,
    pub format: String,
    pub default_user: String,
    pub source_url: Option<String>,
    pub sha256: Option<String>,
    pub size_bytes: Option<i64>,
    pub created_at: String,
}

const COLUMNS: &str = "id, name, description, os, os_version, architecture, file_path, format, default_user, \
                       source_url, sha256, size_bytes, created_at";

fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRow> {
    Ok(ImageRow {
        id: row.get(0)?,
        name: row.get(1)?,
        description: row.get(2)?,
        os: row.get(3)?,
        os_version: row.get(4)?,
        architecture: row.get(5)?,
        file_path: row.get(6)?,
        format: row.get(7)?,
        default_user: row.get(8)?,
        source_url: row.get(9)?,
        sha256: row.get(10)?,
        size_bytes: row.get(11)?,
        created_at: row.get(12)?,
    })
}

/// The row's columns in `COLUMNS` order, for `?1`…`?13`.
fn values(row: &ImageRow) -> [&dyn rusqlite::ToSql; 13] {
    [
        &row.id,
        &row.name,
        &row.description,
        &row.os,
        &row.os_version,
        &row.architecture,
        &row.file_path,
        &row.format,
        &row.default_user,
        &row.source_url,
        &row.sha256,
        &row.size_bytes,
        &row.created_at,
    ]
}

/// Inserts, or updates everything but `created_at` of the row with the same id.
pub fn upsert(conn: &Connection, row: &ImageRow) -> Result<(), DbError> {
    conn.execute(
        &format!(
            "INSERT INTO images ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT(id) DO UPDATE SET name = excluded.name, description = excluded.description,
               os = excluded.os, os_version = excluded.os_version, architecture = excluded.architecture,
               file_path = excluded.file_path, format = excluded.format, default_user = excluded.default_user,
               source_url = excluded.source_url,
               sha256 = COALESCE(excluded.sha256, images.sha256),
               size_bytes = COALESCE(excluded.size_bytes, images.size_bytes)"
        ),
        values(row),
    )?;
    Ok(())
}

/// Inserts a new row; false when its id or name is taken (nothing is replaced).
pub fn insert_new(conn: &Connection, row: &ImageRow) -> Result<bool, DbError> {
    let inserted = conn.execute(
        &format!("INSERT INTO images ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
        values(row),
    );
    match inserted {
        Ok(_) => Ok(true),
        Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == rusqlite::ErrorCode::ConstraintViolation => Ok(false),
        Err(e) => Err(e.into()),
    }
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<ImageRow>, DbError> {
    Ok(conn.query_row(&format!("SELECT {COLUMNS} FROM images WHERE id = ?1"), [id], from_row).optional()?)
}

pub fn get_by_name(conn: &Connection, name: &str) -> Result<Option<ImageRow>, DbError> {
    Ok(conn.query_row(&format!("SELECT {COLUMNS} FROM images WHERE name = ?1"), [name], from_row).optional()?)
}

pub fn list(conn: &Connection) -> Result<Vec<ImageRow>, DbError> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM images ORDER BY name"))?;
    let rows = stmt.query_map([], from_row)?.collect::<Result<_, _>>()?;
    Ok(rows)
}

pub fn set_file_facts(
    conn: &Connection,
    id: &str,
    sha256: Option<&str>,
    size_bytes: Option<i64>,
) -> Result<(), DbError> {
    conn.execute("UPDATE images SET sha256 = ?2, size_bytes = ?3 WHERE id = ?1", params![id, sha256, size_bytes])?;
    Ok(())
}

pub fn delete(conn: &Connection, id: &str) -> Result<bool, DbError> {
    Ok(conn.execute("DELETE FROM images WHERE id = ?1", [id])? > 0)
}

/// How many instances that are not terminated were launched from the image.
pub fn instances_using(conn: &Connection, id: &str) -> Result<u64, DbError> {
    let count: i64 =
        conn.query_row("SELECT count(*) FROM instances WHERE image_id = ?1 AND state != 'terminated'", [id], |r| {
            r.get(0)
        })?;
    Ok(count as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, name: &str, description: &str) -> ImageRow {
        ImageRow {
            id: id.into(),
            name: name.into(),
            description: description.into(),
            os: "debian".into(),
            os_version: "12".into(),
            architecture: "x86_64".into(),
            file_path: format!("/d/images/{name}.qcow2"),
            format: "qcow2".into(),
            default_user: "debian".into(),
            source_url: None,
            sha256: None,
            size_bytes: None,
            created_at: "2026-11-26T00:00:00Z".into(),
        }
    }

    #[tokio::test]
    async fn a_new_image_row_never_replaces_one_with_its_id_or_name() {
        let tmp = tempfile::tempdir().unwrap();
        let db = crate::db::Db::open(&tmp.path().join("ec2local.db")).unwrap();
        let kept = db
            .call(|conn| {
                assert!(insert_new(conn, &row("ami-00000001", "first", "the original"))?);
                assert!(!insert_new(conn, &row("ami-00000001", "other-name", "same id"))?);
                assert!(!insert_new(conn, &row("ami-00000002", "first", "same name"))?);
                list(conn)
            })
            .await
            .unwrap();
        assert_eq!(kept, [row("ami-00000001", "first", "the original")]);
    }
}
