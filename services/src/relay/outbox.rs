//! The sender's outbox: the unsent rows in seq order, marking them sent, its status.

use diesel::prelude::*;
use jiff::Timestamp;
use serde::Serialize;

use crate::error::Error;
use crate::store::db::DbConnection;
use crate::store::models::OutboxRow;
use crate::store::schema::{counters, outbox};

/// The lowest `limit` unsent outbox rows after seq `after`, in seq order.
pub fn pending(conn: &mut DbConnection, after: i64, limit: i64) -> Result<Vec<OutboxRow>, Error> {
    Ok(outbox::table
        .filter(outbox::sent_at.is_null())
        .filter(outbox::seq.gt(after))
        .order(outbox::seq.asc())
        .limit(limit)
        .select(OutboxRow::as_select())
        .load(conn)?)
}

/// Marks every unsent row up to `acked` sent; returns how many.
pub fn mark_sent(conn: &mut DbConnection, acked: i64, now: Timestamp) -> Result<usize, Error> {
    Ok(diesel::update(
        outbox::table
            .filter(outbox::seq.le(acked))
            .filter(outbox::sent_at.is_null()),
    )
    .set(outbox::sent_at.eq(now.to_string()))
    .execute(conn)?)
}

/// The state of the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxStatus {
    /// The last seq written to the outbox (0 when none).
    pub last_seq: i64,
    /// The highest seq the upstream confirmed (0 when none).
    pub confirmed_seq: i64,
    /// Rows not confirmed yet.
    pub pending: i64,
}

pub fn outbox_status(conn: &mut DbConnection) -> Result<OutboxStatus, Error> {
    let last_seq: i64 = counters::table
        .filter(counters::name.eq("outbox"))
        .select(counters::value)
        .first(conn)?;
    // Rows are confirmed strictly in seq order, so the confirmed seq is just below the lowest
    // pending one (both ends read from an index, whatever the backlog).
    let lowest_pending: Option<i64> = outbox::table
        .filter(outbox::sent_at.is_null())
        .select(diesel::dsl::min(outbox::seq))
        .first(conn)?;
    let confirmed_seq = match lowest_pending {
        Some(seq) => Some(seq - 1),
        None => outbox::table
            .select(diesel::dsl::max(outbox::seq))
            .first(conn)?,
    };
    let pending: i64 = match lowest_pending {
        None => 0,
        Some(_) => outbox::table
            .filter(outbox::sent_at.is_null())
            .count()
            .get_result(conn)?,
    };
    Ok(OutboxStatus {
        last_seq,
        confirmed_seq: confirmed_seq.unwrap_or(0),
        pending,
    })
}

/// When the upstream confirmed the last confirmed row (rows are confirmed in seq order, so this
/// is the newest confirmation); `None` before the first one.
pub fn last_confirmed_at(conn: &mut DbConnection) -> Result<Option<Timestamp>, Error> {
    let confirmed = outbox_status(conn)?.confirmed_seq;
    let sent_at: Option<Option<String>> = outbox::table
        .filter(outbox::seq.eq(confirmed))
        .select(outbox::sent_at)
        .first(conn)
        .optional()?;
    Ok(sent_at.flatten().and_then(|t| t.parse().ok()))
}
