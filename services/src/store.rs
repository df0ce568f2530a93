//! Transactions: read the state, call the pure core, write. Runs on a blocking thread.

use diesel::prelude::*;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::db::DbConnection;
use crate::domain::{self, Context, Status, Update};
use crate::error::Error;
use crate::models::{HistoryRow, IdempotencyRow, OutboxRow, ResidentRow};
use crate::schema::{change_history, counters, idempotency_keys, outbox, residents};
use crate::trace::TraceParent;
use crate::views::{Accepted, HistoryView, ResidentView};

/// A stored HTTP result (status and JSON body).
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: u16,
    pub body: Value,
    /// True when the result was replayed for a retried Idempotency-Key.
    pub replayed: bool,
}

/// The body of `POST /v1/updates`: one object or an array of objects.
#[derive(Debug, Clone)]
pub struct Submission {
    pub items: Vec<Value>,
    pub batch: bool,
}

impl Submission {
    pub fn from_json(body: Value) -> Result<Self, Error> {
        match body {
            Value::Array(items) if items.is_empty() => Err(Error::InvalidBody(
                "an empty batch has nothing to apply".into(),
            )),
            Value::Array(items) => Ok(Submission { items, batch: true }),
            obj @ Value::Object(_) => Ok(Submission {
                items: vec![obj],
                batch: false,
            }),
            _ => Err(Error::InvalidBody(
                "expected an update object or an array of them".into(),
            )),
        }
    }

    fn canonical(&self) -> String {
        // serde_json maps are sorted, so equal requests have equal text.
        if self.batch {
            Value::Array(self.items.clone()).to_string()
        } else {
            self.items[0].to_string()
        }
    }
}

/// Takes the node-wide write lock (a row lock on PostgreSQL, the database write lock on SQLite)
/// so writers are serialised and the state checks see every earlier commit.
pub(crate) fn lock_writes(conn: &mut DbConnection) -> Result<(), Error> {
    diesel::update(counters::table.filter(counters::name.eq("writes")))
        .set(counters::value.eq(counters::value + 1))
        .execute(conn)?;
    Ok(())
}

/// Next value of a named counter (call with the write lock held).
pub(crate) fn next_id(conn: &mut DbConnection, name: &str) -> Result<i64, Error> {
    diesel::update(counters::table.filter(counters::name.eq(name)))
        .set(counters::value.eq(counters::value + 1))
        .execute(conn)?;
    Ok(counters::table
        .filter(counters::name.eq(name))
        .select(counters::value)
        .first(conn)?)
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

/// Applies a submission under `key` in one transaction; replays the stored result when the key
/// was used before with the same request. Every update starts its own trace.
pub fn submit(
    conn: &mut DbConnection,
    ctx: &Context,
    sender: &str,
    key: &str,
    submission: &Submission,
    now: Timestamp,
) -> Result<Outcome, Error> {
    submit_traced(conn, ctx, sender, key, submission, now, None)
}

/// [`submit`] inside the caller's trace (the request's `traceparent`): each update becomes a
/// child span of it.
pub fn submit_traced(
    conn: &mut DbConnection,
    ctx: &Context,
    sender: &str,
    key: &str,
    submission: &Submission,
    now: Timestamp,
    trace: Option<&TraceParent>,
) -> Result<Outcome, Error> {
    let request = submission.canonical();
    conn.transaction(|conn| {
        lock_writes(conn)?;
        let previous: Option<IdempotencyRow> = idempotency_keys::table
            .filter(idempotency_keys::idempotency_key.eq(key))
            .select(IdempotencyRow::as_select())
            .first(conn)
            .optional()?;
        if let Some(prev) = previous {
            if prev.request != request {
                return Err(Error::IdempotencyKeyReused(key.to_owned()));
            }
            let body = serde_json::from_str(&prev.response)
                .map_err(|e| Error::Corrupt(format!("stored response for key {key:?}: {e}")))?;
            return Ok(Outcome {
                status: prev.status as u16,
                body,
                replayed: true,
            });
        }

        let mut results = Vec::with_capacity(submission.items.len());
        for (i, item) in submission.items.iter().enumerate() {
            let index = submission.batch.then_some(i);
            let accepted =
                apply_one(conn, ctx, sender, item, now, trace).map_err(|e| e.in_batch(index))?;
            results.push(accepted);
        }
        let body = if submission.batch {
            json!({ "results": results })
        } else {
            serde_json::to_value(&results[0]).map_err(|e| Error::Corrupt(e.to_string()))?
        };
        let outcome = Outcome {
            status: 201,
            body,
            replayed: false,
        };
        diesel::insert_into(idempotency_keys::table)
            .values(IdempotencyRow {
                idempotency_key: key.to_owned(),
                request,
                status: i32::from(outcome.status),
                response: outcome.body.to_string(),
                created_at: now.to_string(),
            })
            .execute(conn)?;
        Ok(outcome)
    })
}

fn apply_one(
    conn: &mut DbConnection,
    ctx: &Context,
    sender: &str,
    item: &Value,
    now: Timestamp,
    trace: Option<&TraceParent>,
) -> Result<Accepted, Error> {
    let update: Update = domain::parse_update(item, ctx)?;
    let current = find_resident(conn, &update.resident_code)?;
    let current_status = match &current {
        None => None,
        Some(row) => Some(Status::parse(&row.status).ok_or_else(|| {
            Error::Corrupt(format!(
                "resident {} has unknown status {:?}",
                row.resident_code, row.status
            ))
        })?),
    };
    let status = domain::transition(current_status, update.reason)?;

    if let Some(number) = &update.individual_number {
        let holder: Option<String> = residents::table
            .filter(residents::individual_number.eq(number))
            .filter(residents::resident_code.ne(&update.resident_code))
            .select(residents::resident_code)
            .first(conn)
            .optional()?;
        if holder.is_some() {
            return Err(Error::StateConflict {
                rule: "individual_number_in_use",
                field: Some("individual_number"),
                message: "the individual number belongs to another resident".into(),
            });
        }
    }

    let recorded_at = now.to_string();
    let row = ResidentRow {
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
    };
    if current.is_some() {
        diesel::update(residents::table.filter(residents::resident_code.eq(&row.resident_code)))
            .set(&row)
            .execute(conn)?;
    } else {
        diesel::insert_into(residents::table)
            .values(&row)
            .execute(conn)?;
    }

    let history_id = next_id(conn, "change_history")?;
    let seq = next_id(conn, "outbox")?;
    let payload = serde_json::to_string(&update).map_err(|e| Error::Corrupt(e.to_string()))?;
    let span = trace.map_or_else(TraceParent::root, TraceParent::child);
    diesel::insert_into(change_history::table)
        .values(HistoryRow {
            id: history_id,
            resident_code: update.resident_code.clone(),
            reason: update.reason.code().to_owned(),
            change_date: update.change_date.to_string(),
            municipality_code: update.municipality_code.clone(),
            payload: payload.clone(),
            recorded_at: recorded_at.clone(),
            source_sender: sender.to_owned(),
            source_seq: seq,
            trace_id: Some(span.trace_id.clone()),
        })
        .execute(conn)?;
    let envelope = json!({
        "sender": sender,
        "seq": seq,
        "history_id": history_id,
        "recorded_at": recorded_at,
        "update": update,
        "traceparent": span.header(),
    });
    diesel::insert_into(outbox::table)
        .values(OutboxRow {
            seq,
            payload: envelope.to_string(),
            created_at: recorded_at,
            sent_at: None,
        })
        .execute(conn)?;

    Ok(Accepted {
        resident_code: update.resident_code,
        reason: update.reason,
        status,
        history_id,
        outbox_seq: seq,
    })
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
    if crate::db::has_pending_migrations(conn)? {
        return Err(Error::NotReady("database migrations are pending".into()));
    }
    counters::table.count().get_result::<i64>(conn)?;
    Ok(())
}
