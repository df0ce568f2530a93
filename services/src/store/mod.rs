//! Transactions: read the state, call the pure core, write. Runs on a blocking thread.

pub mod db;
pub mod models;
pub mod schema;
pub mod views;

use std::collections::HashMap;

use diesel::prelude::*;
use jiff::Timestamp;
use serde_json::Value;

use crate::domain::trace::TraceParent;
use crate::domain::{self, Status, Update};
use crate::error::Error;
use crate::store::db::DbConnection;
use crate::store::models::{HistoryRow, OutboxRow, ResidentRow};
use crate::store::schema::{change_history, counters, outbox, residents};
use crate::store::views::{Accepted, HistoryView, ResidentView};
use juki_telemetry::SpanKind;

/// Takes the node-wide write lock (a row lock on PostgreSQL, the database write lock on SQLite)
/// so writers are serialised and the state checks see every earlier commit.
pub(crate) fn lock_writes(conn: &mut DbConnection) -> Result<(), Error> {
    diesel::update(counters::table.filter(counters::name.eq("writes")))
        .set(counters::value.eq(counters::value + 1))
        .execute(conn)?;
    Ok(())
}

/// Reserves `n` consecutive values of a named counter (call with the write lock held); returns
/// the first. Two statements for a whole batch instead of two per row.
pub(crate) fn reserve_ids(conn: &mut DbConnection, name: &str, n: usize) -> Result<i64, Error> {
    let n = n as i64;
    diesel::update(counters::table.filter(counters::name.eq(name)))
        .set(counters::value.eq(counters::value + n))
        .execute(conn)?;
    let last: i64 = counters::table
        .filter(counters::name.eq(name))
        .select(counters::value)
        .first(conn)?;
    Ok(last - n + 1)
}

/// Rows per multi-row INSERT and codes per `IN (…)` lookup: far below the bind-parameter limits
/// of both backends (SQLite 32766, PostgreSQL 65535).
pub(crate) const CHUNK: usize = 500;

/// Inserts `$rows` (a slice) into `$table`: on PostgreSQL with multi-row INSERTs in chunks (one
/// round trip per CHUNK rows); on SQLite row by row with diesel's cached prepared statement
/// (no round trips to save, and a multi-row INSERT is prepared anew each time: the throughput
/// benchmark measured 74,000 against 60,000 rows/s). The MultiConnection has no batch insert,
/// so each backend's connection runs it.
macro_rules! insert_rows {
    ($conn:expr, $table:expr, $rows:expr) => {{
        let conn: &mut DbConnection = $conn;
        match conn {
            DbConnection::Pg(c) => {
                for chunk in $rows.chunks($crate::store::CHUNK) {
                    diesel::insert_into($table).values(chunk).execute(c)?;
                }
            }
            DbConnection::Sqlite(c) => {
                for row in $rows.iter() {
                    diesel::insert_into($table).values(row).execute(c)?;
                }
            }
        }
    }};
}
pub(crate) use insert_rows;

/// The current records of `codes` (one query per CHUNK codes), by resident code.
pub(crate) fn load_residents(
    conn: &mut DbConnection,
    codes: &[&str],
) -> Result<HashMap<String, ResidentRow>, Error> {
    let mut out = HashMap::with_capacity(codes.len());
    for chunk in codes.chunks(CHUNK) {
        let rows: Vec<ResidentRow> = residents::table
            .filter(residents::resident_code.eq_any(chunk))
            .select(ResidentRow::as_select())
            .load(conn)?;
        out.extend(rows.into_iter().map(|r| (r.resident_code.clone(), r)));
    }
    Ok(out)
}

/// Residents of a batch: the records loaded at its start, changed as the batch goes on. Records
/// already in the database are updated in item order (as the rules saw them); new records are
/// inserted once, with their final contents, at the end.
#[derive(Debug, Default)]
pub(crate) struct BatchResidents {
    current: HashMap<String, ResidentRow>,
    /// Codes whose record is not in the database yet, in order of first appearance.
    new: Vec<String>,
    is_new: HashMap<String, bool>,
}

impl BatchResidents {
    pub(crate) fn load(conn: &mut DbConnection, codes: &[&str]) -> Result<Self, Error> {
        let current = load_residents(conn, codes)?;
        Ok(BatchResidents {
            current,
            ..BatchResidents::default()
        })
    }

    pub(crate) fn get(&self, code: &str) -> Option<&ResidentRow> {
        self.current.get(code)
    }

    /// Records `row` as the resident's current record (an UPDATE at once when the record is in
    /// the database).
    pub(crate) fn put(&mut self, conn: &mut DbConnection, row: ResidentRow) -> Result<(), Error> {
        let code = row.resident_code.clone();
        let new = *self
            .is_new
            .entry(code.clone())
            .or_insert_with(|| !self.current.contains_key(&code));
        if new {
            if !self.current.contains_key(&code) {
                self.new.push(code.clone());
            }
        } else {
            diesel::update(residents::table.filter(residents::resident_code.eq(&code)))
                .set(&row)
                .execute(conn)?;
        }
        self.current.insert(code, row);
        Ok(())
    }

    /// Inserts the new records.
    pub(crate) fn finish(mut self, conn: &mut DbConnection) -> Result<(), Error> {
        let rows: Vec<ResidentRow> = self
            .new
            .iter()
            .filter_map(|code| self.current.remove(code))
            .collect();
        insert_rows!(conn, residents::table, rows);
        Ok(())
    }
}

pub(crate) fn find_resident(
    conn: &mut DbConnection,
    code: &str,
) -> Result<Option<ResidentRow>, Error> {
    Ok(residents::table
        .filter(residents::resident_code.eq(code))
        .select(ResidentRow::as_select())
        .first(conn)
        .optional()?)
}

/// Applies updates this node built itself (the special transfer procedure's 転入 at the
/// destination and confirmed 転出 at the source): the same state rules, history and outbox rows
/// as `POST /v1/updates` (the caller holds the write lock and the transaction).
pub(crate) fn apply_updates(
    conn: &mut DbConnection,
    sender: &str,
    updates: Vec<Update>,
    now: Timestamp,
    trace: Option<&TraceParent>,
) -> Result<Vec<Accepted>, Error> {
    let parsed = updates.into_iter().map(Ok).collect();
    apply_parsed(conn, sender, parsed, false, now, trace)
}

pub(crate) fn apply_parsed(
    conn: &mut DbConnection,
    sender: &str,
    parsed: Vec<Result<Update, Error>>,
    batch: bool,
    now: Timestamp,
    trace: Option<&TraceParent>,
) -> Result<Vec<Accepted>, Error> {
    let at = |i: usize| batch.then_some(i);
    let began = std::time::SystemTime::now();
    let updates: Vec<&Update> = parsed.iter().filter_map(|u| u.as_ref().ok()).collect();
    let codes: Vec<&str> = updates.iter().map(|u| u.resident_code.as_str()).collect();
    let numbers: Vec<&str> = updates
        .iter()
        .filter_map(|u| u.individual_number.as_deref())
        .collect();
    let mut residents = BatchResidents::load(conn, &codes)?;
    // Who holds each individual number of the batch, kept up to date as the batch goes on.
    let mut holders: HashMap<String, String> = HashMap::new();
    for chunk in numbers.chunks(CHUNK) {
        let rows: Vec<(Option<String>, String)> = residents::table
            .filter(residents::individual_number.eq_any(chunk))
            .select((residents::individual_number, residents::resident_code))
            .load(conn)?;
        holders.extend(rows.into_iter().filter_map(|(n, c)| Some((n?, c))));
    }
    let n = parsed.len();
    let first_history = reserve_ids(conn, "change_history", n)?;
    let first_seq = reserve_ids(conn, "outbox", n)?;
    let recorded_at = now.to_string();
    let mut results = Vec::with_capacity(n);
    let mut history = Vec::with_capacity(n);
    let mut outbox_rows = Vec::with_capacity(n);
    let mut spans = Vec::with_capacity(n);
    for (i, update) in parsed.into_iter().enumerate() {
        let update = update.map_err(|e| e.in_batch(at(i)))?;
        let current = residents.get(&update.resident_code);
        let current_status = match current {
            None => None,
            Some(row) => Some(Status::parse(&row.status).ok_or_else(|| {
                Error::Corrupt(format!(
                    "resident {} has unknown status {:?}",
                    row.resident_code, row.status
                ))
            })?),
        };
        let status =
            domain::transition(current_status, update.reason).map_err(|e| e.in_batch(at(i)))?;
        if let Some(number) = &update.individual_number
            && holders
                .get(number)
                .is_some_and(|holder| *holder != update.resident_code)
        {
            return Err(Error::StateConflict {
                rule: "individual_number_in_use",
                field: Some("individual_number"),
                message: "the individual number belongs to another resident".into(),
            }
            .in_batch(at(i)));
        }
        if let Some(old) = current.and_then(|r| r.individual_number.clone())
            && holders.get(&old) == Some(&update.resident_code)
        {
            holders.remove(&old);
        }
        if let Some(number) = &update.individual_number {
            holders.insert(number.clone(), update.resident_code.clone());
        }

        residents.put(
            conn,
            ResidentRow {
                resident_code: update.resident_code.clone(),
                individual_number: update.individual_number.clone(),
                name: update.name.clone(),
                name_kana: update.name_kana.clone(),
                former_surname: update.former_surname.clone(),
                alias: update.alias.clone(),
                birth_date: update.birth_date.to_string(),
                sex: update.sex.code().to_owned(),
                address: update.address.clone(),
                municipality_code: update.municipality_code.clone(),
                status: status.code().to_owned(),
                updated_at: recorded_at.clone(),
                permanent_domicile: update.permanent_domicile.clone(),
                domicile_head: update.domicile_head.clone(),
            },
        )?;

        let history_id = first_history + i as i64;
        let seq = first_seq + i as i64;
        let payload = serde_json::to_string(&update).map_err(|e| Error::Corrupt(e.to_string()))?;
        let span = trace.map_or_else(TraceParent::root, TraceParent::child);
        spans.push(
            span.exported_span("record update", trace)
                .kind(SpanKind::Server)
                .started_at(began)
                .attr("juki.history_id", history_id)
                .attr("juki.seq", seq)
                .attr("juki.reason", update.reason.code())
                .attr("juki.municipality", update.municipality_code.clone()),
        );
        // The envelope, written around the update's JSON (serialised once, above).
        let envelope = format!(
            r#"{{"history_id":{history_id},"recorded_at":{},"sender":{},"seq":{seq},"traceparent":{},"update":{payload}}}"#,
            Value::from(recorded_at.as_str()),
            Value::from(sender),
            Value::from(span.header()),
        );
        history.push(HistoryRow {
            id: history_id,
            resident_code: update.resident_code.clone(),
            reason: update.reason.code().to_owned(),
            change_date: update.change_date.to_string(),
            municipality_code: update.municipality_code.clone(),
            payload,
            recorded_at: recorded_at.clone(),
            source_sender: sender.to_owned(),
            source_seq: seq,
            trace_id: Some(span.trace_id.clone()),
        });
        outbox_rows.push(OutboxRow {
            seq,
            payload: envelope,
            created_at: recorded_at.clone(),
            sent_at: None,
        });
        results.push(Accepted {
            resident_code: update.resident_code,
            reason: update.reason,
            status,
            history_id,
            outbox_seq: seq,
        });
    }
    residents.finish(conn)?;
    insert_rows!(conn, change_history::table, history);
    insert_rows!(conn, outbox::table, outbox_rows);
    spans.into_iter().for_each(juki_telemetry::Span::end);
    Ok(results)
}

/// The current record of one of `municipality`'s residents.
pub fn resident(
    conn: &mut DbConnection,
    municipality: &str,
    code: &str,
) -> Result<ResidentView, Error> {
    let row = find_resident(conn, code)?
        .filter(|r| r.municipality_code == municipality)
        .ok_or_else(|| Error::NotFound(code.to_owned()))?;
    Ok(row.into())
}

/// The change history of one of `municipality`'s residents, oldest first.
pub fn history(
    conn: &mut DbConnection,
    municipality: &str,
    code: &str,
) -> Result<Vec<HistoryView>, Error> {
    resident(conn, municipality, code)?;
    let rows: Vec<HistoryRow> = change_history::table
        .filter(change_history::resident_code.eq(code))
        .order(change_history::id.asc())
        .select(HistoryRow::as_select())
        .load(conn)?;
    Ok(rows.into_iter().map(HistoryView::from).collect())
}

/// Row counts of the tables an update writes (used by tests and diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub residents: i64,
    pub history: i64,
    pub outbox: i64,
}

pub fn counts(conn: &mut DbConnection) -> Result<Counts, Error> {
    Ok(Counts {
        residents: residents::table.count().get_result(conn)?,
        history: change_history::table.count().get_result(conn)?,
        outbox: outbox::table.count().get_result(conn)?,
    })
}

/// Readiness: the database answers and no migration is pending.
pub fn check_ready(conn: &mut DbConnection) -> Result<(), Error> {
    if crate::store::db::has_pending_migrations(conn)? {
        return Err(Error::NotReady("database migrations are pending".into()));
    }
    counters::table.count().get_result::<i64>(conn)?;
    Ok(())
}
