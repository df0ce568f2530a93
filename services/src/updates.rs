//! L3, the `POST /v1/updates` use case: an idempotent submission of updates from the
//! municipality, applied by the store's engine, then the wide-area consequences (a 死亡 or
//! 転出 ends a pending special-procedure move-out).

use diesel::prelude::*;
use jiff::Timestamp;
use serde_json::{Value, json};

use crate::domain::trace::TraceParent;
use crate::domain::{self, Context, Update};
use crate::error::Error;
use crate::store::db::DbConnection;
use crate::store::models::IdempotencyRow;
use crate::store::schema::idempotency_keys;
use crate::store::views::Accepted;
use crate::store::{apply_parsed, lock_writes};

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
            // The same text as the array's Value, without cloning the items.
            serde_json::to_string(&self.items).unwrap_or_default()
        } else {
            self.items[0].to_string()
        }
    }
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

        let results = apply_all(conn, ctx, sender, submission, now, trace)?;
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

/// Applies every update of a submission (the caller holds the write lock and the transaction):
/// the rules run item by item against the state as changed by the earlier items, with a
/// constant number of queries per batch for the lookups, the ids and the history and outbox rows
/// (the first failing item fails the whole submission, as before).
fn apply_all(
    conn: &mut DbConnection,
    ctx: &Context,
    sender: &str,
    submission: &Submission,
    now: Timestamp,
    trace: Option<&TraceParent>,
) -> Result<Vec<Accepted>, Error> {
    let parsed: Vec<Result<Update, Error>> = submission
        .items
        .iter()
        .map(|item| domain::parse_update(item, ctx))
        .collect();
    let results = apply_parsed(conn, sender, parsed, submission.batch, now, trace)?;
    // A 死亡 or an ordinary 転出 ends a pending special-procedure move-out of the resident
    // (only these reasons pay for the lookup).
    let ending: Vec<&str> = results
        .iter()
        .filter(|r| matches!(r.reason, domain::Reason::Death | domain::Reason::MoveOut))
        .map(|r| r.resident_code.as_str())
        .collect();
    if !ending.is_empty() {
        crate::wide_area::transfer::cancel_pending_of(conn, sender, &ending, now, trace)?;
    }
    Ok(results)
}
