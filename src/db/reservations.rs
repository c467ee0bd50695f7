//! The `reservations` table: the instances one launch request made, and the client
//! token that makes repeating that request harmless.

use rusqlite::{Connection, OptionalExtension, params};

use super::DbError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRow {
    pub id: String,
    pub client_token: Option<String>,
    pub request_digest: String,
    pub created_at: String,
}

/// What a launch with a client token finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The reservation is new and this launch makes its instances.
    New,
    /// The token was used before: its reservation answers.
    Taken(ReservationRow),
}

/// Records a reservation, unless its client token already has one.
pub fn claim(conn: &Connection, row: &ReservationRow) -> Result<Claim, DbError> {
    if let Some(token) = &row.client_token
        && let Some(existing) = by_token(conn, token)?
    {
        return Ok(Claim::Taken(existing));
    }
    let inserted = conn.execute(
        "INSERT INTO reservations (id, client_token, request_digest, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT DO NOTHING",
        params![row.id, row.client_token, row.request_digest, row.created_at],
    )?;
    match (&row.client_token, inserted) {
        (_, 1) => Ok(Claim::New),
        // Another request took the token between the lookup and the insert.
        (Some(token), _) => {
            by_token(conn, token)?.map(Claim::Taken).ok_or(DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
        }
        (None, _) => Err(DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows)),
    }
}

pub fn by_token(conn: &Connection, token: &str) -> Result<Option<ReservationRow>, DbError> {
    Ok(conn
        .query_row(
            "SELECT id, client_token, request_digest, created_at FROM reservations WHERE client_token = ?1",
            [token],
            |r| {
                Ok(ReservationRow {
                    id: r.get(0)?,
                    client_token: r.get(1)?,
                    request_digest: r.get(2)?,
                    created_at: r.get(3)?,
                })
            },
        )
        .optional()?)
}

/// Undoes the claim of a refused launch: the reservation goes if none of its instances
/// were made, and its client token is free again either way (a retry may succeed).
pub fn give_up(conn: &Connection, id: &str) -> Result<(), DbError> {
    conn.execute(
        "DELETE FROM reservations WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM instances WHERE reservation_id = ?1)",
        [id],
    )?;
    conn.execute("UPDATE reservations SET client_token = NULL WHERE id = ?1", [id])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, token: Option<&str>) -> ReservationRow {
        ReservationRow {
            id: id.into(),
            client_token: token.map(str::to_string),
            request_digest: "d".into(),
            created_at: "2026-11-26T00:00:00Z".into(),
        }
    }

    #[tokio::test]
    async fn a_token_answers_with_its_first_reservation() {
        let tmp = tempfile::tempdir().unwrap();
        let db = crate::db::Db::open(&tmp.path().join("db.sqlite")).unwrap();
        db.call(|c| {
            assert_eq!(claim(c, &row("r-1", Some("tok")))?, Claim::New);
            assert_eq!(claim(c, &row("r-2", Some("tok")))?, Claim::Taken(row("r-1", Some("tok"))));
            assert_eq!(claim(c, &row("r-3", None))?, Claim::New);
            assert_eq!(claim(c, &row("r-4", None))?, Claim::New, "no token, no idempotency");
            give_up(c, "r-1")?;
            assert_eq!(claim(c, &row("r-5", Some("tok")))?, Claim::New, "a refused launch frees its token");
            Ok(())
        })
        .await
        .unwrap();
    }
}
