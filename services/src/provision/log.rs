//! The provision log's rows and their batched insert (the provision desk commits them, see
//! `provision_desk.rs`).

use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, Nullable, Text};

use crate::error::Error;
use crate::store::db::DbConnection;
use crate::store::schema::provision_log;

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

/// Most queries the provision desk answers (and logs) in one batch.
pub const MAX_BATCH: usize = 512;

/// Inserts `rows`: on PostgreSQL as one statement of fixed text (one array per column, see
/// `ColumnArrays`: ten parameters whatever the number of rows), on SQLite row by row in one
/// transaction. Either way atomic, one commit.
pub fn insert(conn: &mut DbConnection, rows: &[LogRow]) -> Result<(), Error> {
    match conn {
        DbConnection::Pg(c) => {
            ColumnArrays::of(rows).execute(c)?;
            Ok(())
        }
        DbConnection::Sqlite(_) => conn.transaction(|conn| {
            crate::store::insert_rows!(conn, provision_log::table, rows);
            Ok(())
        }),
    }
}

/// `INSERT … SELECT * FROM unnest($1, …, $10)`: the same text for any number of rows, so the
/// connection prepares and plans it once. diesel's multi-row VALUES has a text per row count
/// and is never kept prepared: PostgreSQL parsed and planned it for every batch (about a fifth
/// of its CPU in the provision bench).
struct ColumnArrays<'a> {
    text: [Vec<&'a str>; 9],
    resident_code: Vec<Option<&'a str>>,
}

impl<'a> ColumnArrays<'a> {
    fn of(rows: &'a [LogRow]) -> Self {
        let mut text: [Vec<&str>; 9] = Default::default();
        for r in rows {
            let fields = [
                &r.id,
                &r.at,
                &r.recipient,
                &r.affair,
                &r.reason,
                &r.query_kind,
                &r.items,
                &r.outcome,
                &r.detail,
            ];
            for (column, field) in text.iter_mut().zip(fields) {
                column.push(field.as_str());
            }
        }
        let resident_code = rows.iter().map(|r| r.resident_code.as_deref()).collect();
        ColumnArrays {
            text,
            resident_code,
        }
    }
}

impl QueryFragment<Pg> for ColumnArrays<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "INSERT INTO provision_log \
             (id, at, recipient, affair, reason, query_kind, items, outcome, detail, resident_code) \
             SELECT * FROM unnest(",
        );
        for column in &self.text {
            out.push_bind_param::<Array<Text>, _>(column)?;
            out.push_sql(", ");
        }
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.resident_code)?;
        out.push_sql(")");
        Ok(())
    }
}

impl QueryId for ColumnArrays<'_> {
    type QueryId = ColumnArrays<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<Conn> RunQueryDsl<Conn> for ColumnArrays<'_> {}
