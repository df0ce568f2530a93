//! The provision log's rows and their batched insert (the provision desk commits them, see
//! `provision_desk.rs`).

use diesel::prelude::*;

use crate::db::DbConnection;
use crate::error::Error;
use crate::schema::provision_log;

/// One row of `provision_log`.
#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = provision_log)]
pub struct LogRow {
    pub id: String,
    pub at: String,
    pub recipient: String,
    pub affair: String,
    pub reason: String,
    pub query_kind: String,
    pub resident_code: Option<String>,
    /// JSON array of the items given (or that would have been).
    pub items: String,
    pub outcome: String,
    pub detail: String,
}

/// Most rows committed in one multi-row INSERT.
pub const MAX_BATCH: usize = 512;

/// Inserts `rows`: on PostgreSQL as one multi-row INSERT (one statement, atomic, one commit;
/// up to MAX_BATCH rows), on SQLite row by row in one transaction.
pub fn insert(conn: &mut DbConnection, rows: &[LogRow]) -> Result<(), Error> {
    match conn {
        DbConnection::Pg(c) if rows.len() <= MAX_BATCH => {
            diesel::insert_into(provision_log::table)
                .values(rows)
                .execute(c)?;
            Ok(())
        }
        _ => conn.transaction(|conn| {
            crate::store::insert_rows!(conn, provision_log::table, rows);
            Ok(())
        }),
    }
}
