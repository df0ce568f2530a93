//! The relay: delivering the outbox to the upstream node (sender side), applying relayed batches
//! idempotently (receiver side), and the final request / final answer exchange.
//!
//! Delivery is at least once and strictly in outbox `seq` order: the sender sends the lowest
//! unsent rows, the receiver applies each `(sender, seq)` at most once (the `inbox` table) and
//! acknowledges the highest seq of the batch, and the sender then marks the rows sent. A crash
//! anywhere repeats at most one batch, which the receiver acknowledges without re-applying.

pub mod client;
pub mod mailbox;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::prelude::*;
use jiff::Timestamp;
use juki_calendar::{Calendar, Tier};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::domain::identity::{NodeIdentity, Role};
use crate::domain::trace::TraceParent;
use crate::domain::{self, Status, Update};
use crate::error::Error;
use crate::node::Node;
use crate::store::db::DbConnection;
use crate::store::models::{HistoryRow, OutboxRow, ResidentRow};
use crate::store::schema::{change_history, counters, inbox, outbox};
use crate::store::{BatchResidents, CHUNK, insert_rows, lock_writes, reserve_ids};

/// Tuning of the sender side.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Most rows per relay request.
    pub batch: i64,
    /// First retry delay; doubled after every failure up to `backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Timeout of one relay request.
    pub request_timeout: Duration,
    /// How long a final request waits for the upstream's confirmation.
    pub final_timeout: Duration,
    /// How often an idle relay looks at the outbox (new rows also wake it at once).
    pub idle_poll: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            batch: 2000,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            final_timeout: Duration::from_secs(30),
            idle_poll: Duration::from_millis(500),
        }
    }
}

/// A capped exponential backoff: the first retry waits `initial`, every failure doubles the
/// wait up to `max`, a success starts again from `initial`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            current: initial,
        }
    }

    /// The wait before the next retry.
    pub fn delay(&self) -> Duration {
        self.current
    }

    /// Counts a failure: the next wait doubles, up to the cap.
    pub fn fail(&mut self) {
        self.current = (self.current * 2).min(self.max);
    }

    /// Sleeps [`Backoff::delay`], then counts the failure.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.current).await;
        self.fail();
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }

    /// Waits the longest from now on (a refusal that retrying soon cannot change).
    pub fn to_max(&mut self) {
        self.current = self.max;
    }
}

/// Relay state shared by the handlers and the background task.
#[derive(Debug, Default)]
pub struct RelayControl {
    /// Base URL of the upstream (None: the national server, or no upstream configured).
    pub upstream: Option<String>,
    /// The operating calendar (None: the upstream is always open).
    pub calendar: Option<Calendar>,
    pub settings: RelaySettings,
    /// Set by a final request: relays from below are refused until resume or restart.
    draining: AtomicBool,
    /// Wakes the relay task (new outbox rows, final request).
    wake: Notify,
    /// Why the last relay attempt did not deliver (None after a success).
    last_error: Mutex<Option<String>>,
    /// The upstream's last permanent refusal (None after a success).
    rejection: Mutex<Option<Rejection>>,
}

impl RelayControl {
    pub fn new(
        upstream: Option<String>,
        calendar: Option<Calendar>,
        settings: RelaySettings,
    ) -> Self {
        RelayControl {
            upstream,
            calendar,
            settings,
            ..RelayControl::default()
        }
    }

    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Wakes the relay task (call after writing outbox rows).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// The upstream's permanent refusal the outbox is held on, if any.
    pub fn rejection(&self) -> Option<Rejection> {
        self.rejection.lock().map(|r| r.clone()).unwrap_or(None)
    }

    fn set_rejection(&self, rejection: Option<Rejection>) {
        if let Ok(mut r) = self.rejection.lock() {
            *r = rejection;
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().map(|e| e.clone()).unwrap_or(None)
    }

    /// Records why delivery stalls; logs each new reason once at info (the failures themselves
    /// are logged at warn where they happen) and the recovery.
    fn set_last_error(&self, error: Option<String>) {
        if let Ok(mut e) = self.last_error.lock() {
            if *e != error {
                match (&error, &*e) {
                    (Some(reason), _) => tracing::info!(reason = %reason, "relay held"),
                    (None, Some(previous)) => {
                        tracing::info!(previous = %previous, "relay delivering again")
                    }
                    (None, None) => {}
                }
            }
            *e = error;
        }
    }

    /// True when this node's upstream is inside its online window at `now`.
    pub fn upstream_open(&self, identity: &NodeIdentity, now: Timestamp) -> bool {
        let Some(calendar) = &self.calendar else {
            return true;
        };
        match identity.role {
            Role::Cs => calendar.in_online_window(Tier::Prefecture, identity.prefecture, now),
            Role::Prefecture => calendar.in_online_window(Tier::National, None, now),
            Role::National => true,
        }
    }
}

/// One relayed update: the sender's outbox seq and the stored envelope, kept as the JSON text
/// it came in (parsed once into an `Envelope`, and forwarded without building a tree of it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayItem {
    pub seq: i64,
    pub payload: Box<RawValue>,
}

/// The body of `POST /v1/relay`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RelayBatch {
    pub sender: String,
    pub items: Vec<RelayItem>,
}

/// What the receiver did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RelayAck {
    /// The highest seq of the batch: every item up to it is applied.
    pub acked: i64,
    pub applied: u64,
    pub duplicates: u64,
}

/// The envelope stored in an outbox row: the origin (CS sender and seq) and the update.
#[derive(Debug, Clone, Deserialize)]
pub struct Envelope {
    sender: String,
    seq: i64,
    /// An update (本人確認情報) …
    #[serde(default)]
    update: Option<Update>,
    /// … or a message of a wide-area service for another CS (see `mailbox.rs`).
    #[serde(default)]
    pub(crate) message: Option<crate::relay::mailbox::Message>,
    #[serde(default)]
    traceparent: Option<String>,
}

impl Envelope {
    /// Who it comes from (`cs-<municipality>`: the CS that filed it) and, for an update, the
    /// municipality it names — what the authorisation checks (authz.rs).
    pub fn origin(&self) -> (String, Option<&str>) {
        match (&self.update, &self.message) {
            (_, Some(m)) => (format!("cs-{}", m.from), None),
            (Some(u), None) => (self.sender.clone(), Some(u.municipality_code.as_str())),
            (None, None) => (self.sender.clone(), None),
        }
    }
}

impl RelayBatch {
    /// Each item's envelope, parsed once (the first bad payload names its seq and index).
    pub fn envelopes(&self) -> Result<Vec<Envelope>, Error> {
        self.items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                serde_json::from_str::<Envelope>(item.payload.get()).map_err(|e| {
                    Error::InvalidBody(format!("payload of seq {}: {e}", item.seq))
                        .in_batch(Some(index))
                })
            })
            .collect()
    }

    fn check(&self) -> Result<(), Error> {
        if self.sender.is_empty() || self.sender.len() > 64 {
            return Err(Error::InvalidBody("sender must be 1–64 characters".into()));
        }
        if self.items.is_empty() {
            return Err(Error::InvalidBody("a relay batch needs items".into()));
        }
        if self.items.windows(2).any(|w| w[0].seq >= w[1].seq) {
            return Err(Error::InvalidBody(
                "items must be in strictly increasing seq order".into(),
            ));
        }
        Ok(())
    }
}

/// Applies a relayed batch in one transaction: each new `(sender, seq)` writes the record, the
/// history row, the inbox row and (at a prefecture) an outbox row toward the national server;
/// an already-applied seq is skipped.
pub fn apply_batch(
    conn: &mut DbConnection,
    identity: &NodeIdentity,
    batch: &RelayBatch,
    envelopes: Vec<Envelope>,
    now: Timestamp,
) -> Result<RelayAck, Error> {
    if identity.role == Role::Cs {
        return Err(Error::WrongRole(identity.role.as_str()));
    }
    batch.check()?;
    if envelopes.len() != batch.items.len() {
        return Err(Error::Corrupt("one envelope per relayed item".into()));
    }
    let forward = identity.role == Role::Prefecture;
    conn.transaction(|conn| {
        lock_writes(conn)?;
        let seqs: Vec<i64> = batch.items.iter().map(|i| i.seq).collect();
        let mut seen: Vec<i64> = Vec::new();
        for chunk in seqs.chunks(CHUNK) {
            seen.extend(
                inbox::table
                    .filter(inbox::sender.eq(&batch.sender))
                    .filter(inbox::seq.eq_any(chunk))
                    .select(inbox::seq)
                    .load::<i64>(conn)?,
            );
        }
        let seen: HashSet<i64> = seen.into_iter().collect();
        let mut ack = RelayAck {
            acked: seqs.last().copied().unwrap_or(0),
            applied: 0,
            duplicates: seen.len() as u64,
        };
        // The new items with their envelopes.
        let fresh: Vec<(usize, &RelayItem, Envelope)> = batch
            .items
            .iter()
            .zip(envelopes)
            .enumerate()
            .filter(|(_, (item, _))| !seen.contains(&item.seq))
            .map(|(index, (item, envelope))| (index, item, envelope))
            .collect();
        if fresh.is_empty() {
            return Ok(ack);
        }
        if let Some((index, item, _)) = fresh
            .iter()
            .find(|(_, _, e)| e.update.is_some() == e.message.is_some())
        {
            return Err(Error::InvalidBody(format!(
                "payload of seq {}: needs exactly one of update and message",
                item.seq
            ))
            .in_batch(Some(*index)));
        }
        let (messages, updates): (Vec<_>, Vec<_>) =
            fresh.into_iter().partition(|(_, _, e)| e.message.is_some());
        if !updates.is_empty() {
            apply_items(conn, forward, &batch.sender, updates, &now.to_string())?;
        }
        if !messages.is_empty() {
            crate::relay::mailbox::route_from_child(conn, identity, &batch.sender, messages, now)?;
        }
        ack.applied = (batch.items.len() - seen.len()) as u64;
        Ok(ack)
    })
}

/// A CS's envelope as a prefecture forwards it: unchanged but for this tier's `traceparent`,
/// written field by field from the received JSON text (building a tree of every envelope was
/// a good part of the prefecture's time in the throughput benchmark).
struct Forwarded<'a> {
    fields: BTreeMap<Cow<'a, str>, &'a RawValue>,
    traceparent: Option<&'a str>,
}

impl<'a> Forwarded<'a> {
    fn parse(envelope: &'a RawValue, traceparent: Option<&'a str>) -> Result<Self, Error> {
        #[derive(Deserialize)]
        struct Fields<'a>(#[serde(borrow)] BTreeMap<Cow<'a, str>, &'a RawValue>);
        let Fields(fields) = serde_json::from_str(envelope.get())
            .map_err(|e| Error::InvalidBody(format!("envelope: {e}")))?;
        Ok(Forwarded {
            fields,
            traceparent,
        })
    }
}

impl Serialize for Forwarded<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (k, v) in &self.fields {
            if k != "traceparent" || self.traceparent.is_none() {
                map.serialize_entry(k, v)?;
            }
        }
        if let Some(traceparent) = self.traceparent {
            map.serialize_entry("traceparent", traceparent)?;
        }
        map.end()
    }
}

/// Writes the new items of a batch: each record (updated in item order when it exists, else
/// inserted once with its final contents), and in bulk the history rows (keeping the origin and
/// the trace), the inbox rows and — at a prefecture — the outbox rows toward the national server
/// (carrying the CS's envelope unchanged but for this tier's traceparent).
fn apply_items(
    conn: &mut DbConnection,
    forward: bool,
    sender: &str,
    fresh: Vec<(usize, &RelayItem, Envelope)>,
    recorded_at: &str,
) -> Result<(), Error> {
    let codes: Vec<&str> = fresh
        .iter()
        .filter_map(|(_, _, e)| e.update.as_ref().map(|u| u.resident_code.as_str()))
        .collect();
    let mut residents = BatchResidents::load(conn, &codes)?;
    let n = fresh.len();
    let first_history = reserve_ids(conn, "change_history", n)?;
    let first_seq = if forward {
        reserve_ids(conn, "outbox", n)?
    } else {
        0
    };
    let mut history = Vec::with_capacity(n);
    let mut inbox_rows = Vec::with_capacity(n);
    let mut outbox_rows = Vec::with_capacity(if forward { n } else { 0 });
    for (k, (index, item, envelope)) in fresh.into_iter().enumerate() {
        let Some(update) = envelope.update else {
            return Err(
                Error::InvalidBody(format!("payload of seq {}: no update", item.seq))
                    .in_batch(Some(index)),
            );
        };
        // This tier's span of the update's trace (the CS started it).
        let span = envelope
            .traceparent
            .as_deref()
            .and_then(TraceParent::parse)
            .map(|p| p.child());
        let status = domain::status_after(update.reason);
        let current = residents
            .get(&update.resident_code)
            .and_then(|r| Some((r.municipality_code.as_str(), Status::parse(&r.status)?)));
        let overwrite = domain::upstream_overwrites(current, &update);
        if overwrite {
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
                    updated_at: recorded_at.to_owned(),
                    permanent_domicile: None,
                    domicile_head: None,
                },
            )?;
        }
        let payload = serde_json::to_string(&update).map_err(|e| Error::Corrupt(e.to_string()))?;
        history.push(HistoryRow {
            id: first_history + k as i64,
            resident_code: update.resident_code.clone(),
            reason: update.reason.code().to_owned(),
            change_date: update.change_date.to_string(),
            municipality_code: update.municipality_code.clone(),
            payload,
            recorded_at: recorded_at.to_owned(),
            source_sender: envelope.sender,
            source_seq: envelope.seq,
            trace_id: span.as_ref().map(|s| s.trace_id.clone()),
        });
        inbox_rows.push((
            inbox::sender.eq(sender),
            inbox::seq.eq(item.seq),
            inbox::applied_at.eq(recorded_at),
        ));
        if forward {
            let header = span.as_ref().map(TraceParent::header);
            let payload =
                serde_json::to_string(&Forwarded::parse(&item.payload, header.as_deref())?)
                    .map_err(|e| Error::Corrupt(e.to_string()))?;
            outbox_rows.push(OutboxRow {
                seq: first_seq + k as i64,
                payload,
                created_at: recorded_at.to_owned(),
                sent_at: None,
            });
        }
    }
    residents.finish(conn)?;
    insert_rows!(conn, change_history::table, history);
    insert_rows!(conn, inbox::table, inbox_rows);
    insert_rows!(conn, outbox::table, outbox_rows);
    Ok(())
}

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

/// Why a relay request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SendError {
    message: String,
    /// The upstream refused the batch with a 4xx that retrying will not change (400, 403, 404,
    /// 413, 422, …; not 408, 409, 429, and not 503 during a final request).
    rejection: Option<Box<Rejection>>,
}

impl From<String> for SendError {
    fn from(message: String) -> Self {
        SendError {
            message,
            rejection: None,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// A permanent refusal by the upstream, as shown by `GET /admin/v1/relay`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    pub status: u16,
    pub error: String,
    pub message: String,
    /// The outbox seq of the refused item, when the upstream named one (its `index`).
    pub seq: Option<i64>,
    pub first_seq: i64,
    pub last_seq: i64,
    pub at: String,
}

fn is_permanent(status: u16) -> bool {
    (400..500).contains(&status) && !matches!(status, 408 | 409 | 429)
}

/// Sends `rows` to the upstream; returns the acknowledged seq.
fn send(
    upstream: &str,
    sender: &str,
    rows: &[OutboxRow],
    timeout: Duration,
) -> Result<i64, SendError> {
    // The body `{"sender": …, "items": [{"seq": …, "payload": <stored envelope>}]}` is written
    // around the stored envelopes (JSON this node wrote) instead of parsing and re-serialising
    // each of them; the receiver validates the whole batch.
    let sender_json = serde_json::to_string(sender).map_err(|e| e.to_string())?;
    let mut body =
        Vec::with_capacity(64 + rows.iter().map(|r| r.payload.len() + 32).sum::<usize>());
    body.extend_from_slice(b"{\"sender\":");
    body.extend_from_slice(sender_json.as_bytes());
    body.extend_from_slice(b",\"items\":[");
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(format!("{{\"seq\":{},\"payload\":", r.seq).as_bytes());
        body.extend_from_slice(r.payload.as_bytes());
        body.push(b'}');
    }
    body.extend_from_slice(b"]}");
    let url = format!("{upstream}/v1/relay");
    // The request's own trace context: the first update's (each item carries its own).
    let first = rows
        .first()
        .and_then(|r| serde_json::from_str::<Value>(&r.payload).ok())
        .and_then(|p| p["traceparent"].as_str().map(str::to_owned));
    let headers: Vec<(&str, &str)> = first
        .as_deref()
        .map(|t| vec![("traceparent", t)])
        .unwrap_or_default();
    let response = crate::relay::client::post_json(&url, &body, &headers, timeout)?;
    let json = response.json().unwrap_or(Value::Null);
    if response.status != 200 {
        let tag = json["error"].as_str().unwrap_or("?");
        let detail = json["message"].as_str().unwrap_or("");
        let seq = json["index"]
            .as_u64()
            .and_then(|i| rows.get(i as usize))
            .map(|r| r.seq);
        let message = match seq {
            Some(seq) => format!(
                "upstream answered {} ({tag}) for seq {seq}: {detail}",
                response.status
            ),
            None => format!("upstream answered {} ({tag}): {detail}", response.status),
        };
        let rejection = is_permanent(response.status).then(|| {
            Box::new(Rejection {
                status: response.status,
                error: tag.to_owned(),
                message: detail.to_owned(),
                seq,
                first_seq: rows.first().map_or(0, |r| r.seq),
                last_seq: rows.last().map_or(0, |r| r.seq),
                at: Timestamp::now().to_string(),
            })
        });
        return Err(SendError { message, rejection });
    }
    json["acked"]
        .as_i64()
        .ok_or_else(|| SendError::from(format!("upstream answered without acked: {json}")))
}

/// The trace id of the first row (the trace the relay request carries in its header).
fn first_trace_id(rows: &[OutboxRow]) -> String {
    rows.first()
        .and_then(|r| serde_json::from_str::<Value>(&r.payload).ok())
        .and_then(|p| p["traceparent"].as_str().and_then(TraceParent::parse))
        .map(|t| t.trace_id)
        .unwrap_or_default()
}

/// A background `mark_sent`.
type Marking = tokio::task::JoinHandle<Result<usize, Error>>;

/// Waits for the background marking. Should it fail, the cursor goes back to the start: the
/// rows it did not mark are sent again and the upstream acknowledges them as duplicates.
async fn settle(
    node: &Node,
    control: &RelayControl,
    marking: &mut Option<Marking>,
    acked_upto: &mut i64,
) {
    let Some(handle) = marking.take() else {
        return;
    };
    let error = match handle.await {
        Ok(Ok(_)) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => e.to_string(),
    };
    tracing::warn!(
        sender = %node.identity.sender_id(),
        acked = *acked_upto,
        error = %error,
        "relay delivered but cannot mark the outbox sent; sending again"
    );
    control.set_last_error(Some(format!("mark sent: {error}")));
    *acked_upto = 0;
}

async fn sleep_or_wake(control: &RelayControl, duration: Duration) {
    let _ = tokio::time::timeout(duration, control.wake.notified()).await;
}

/// The background task: delivers the outbox to the upstream while it is in its online window,
/// retrying with capped exponential backoff. Returns at once when there is no upstream.
pub async fn run(node: Node, control: Arc<RelayControl>) {
    let Some(upstream) = control.upstream.clone() else {
        return;
    };
    let sender = node.identity.sender_id();
    let settings = control.settings.clone();
    let mut backoff = Backoff::new(settings.backoff_initial, settings.backoff_max);
    let mut failures: u32 = 0;
    // The outbox gauges are refreshed at most once a second here (and on every scrape): counting
    // a large backlog on every round would slow the delivery down.
    let mut status_at: Option<Instant> = None;
    // The highest seq the upstream acknowledged in this run; the next batch starts after it.
    let mut acked_upto: i64 = 0;
    let mut marking: Option<Marking> = None;
    loop {
        let status = if status_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            status_at = Some(Instant::now());
            let status = node.db.read(outbox_status).await;
            if let Ok(s) = &status {
                node.metrics.set_outbox_depth(s.pending.max(0) as u64);
            }
            status.ok()
        } else {
            None
        };
        if !control.upstream_open(&node.identity, node.clock.now()) {
            if let Some(s) = &status {
                node.metrics.set_held(s.pending.max(0) as u64);
            }
            control.set_last_error(Some("the upstream is outside its online window".into()));
            sleep_or_wake(&control, Duration::from_secs(1)).await;
            continue;
        }
        node.metrics.set_held(0);
        let limit = settings.batch;
        let after = acked_upto;
        let rows = match node.db.read(move |c| pending(c, after, limit)).await {
            Ok(rows) => rows,
            Err(e) => {
                failures += 1;
                tracing::warn!(
                    sender = %sender,
                    error = %e,
                    backoff_ms = backoff.delay().as_millis() as u64,
                    failures,
                    "relay cannot read the outbox; retrying"
                );
                control.set_last_error(Some(format!("read outbox: {e}")));
                backoff.wait().await;
                continue;
            }
        };
        if rows.is_empty() {
            if marking.is_some() {
                settle(&node, &control, &mut marking, &mut acked_upto).await;
                continue;
            }
            control.set_last_error(None);
            sleep_or_wake(&control, settings.idle_poll).await;
            continue;
        }
        let started = Instant::now();
        let (first_seq, last_seq, count) = (
            rows.first().map_or(0, |r| r.seq),
            rows.last().map_or(0, |r| r.seq),
            rows.len(),
        );
        let trace_id = first_trace_id(&rows);
        let (up, who, timeout) = (upstream.clone(), sender.clone(), settings.request_timeout);
        let sent = tokio::task::spawn_blocking(move || {
            let result = send(&up, &who, &rows, timeout);
            (rows, result)
        })
        .await;
        let (rows, result) = match sent {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(sender = %sender, error = %e, "relay task failed");
                control.set_last_error(Some(format!("relay task: {e}")));
                continue;
            }
        };
        let elapsed = started.elapsed();
        node.metrics.relay(elapsed.as_secs_f64(), result.is_ok());
        match result {
            Ok(acked) => {
                tracing::info!(
                    sender = %sender,
                    upstream = %upstream,
                    first_seq,
                    last_seq,
                    count,
                    acked,
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    trace_id = %trace_id,
                    "relay batch delivered"
                );
                control.set_last_error(None);
                control.set_rejection(None);
                backoff.reset();
                failures = 0;
                // The acknowledged rows are marked sent in the background while the next batch
                // is read and sent (one marking at a time, so they complete in order).
                settle(&node, &control, &mut marking, &mut acked_upto).await;
                acked_upto = acked_upto.max(acked);
                let now = node.clock.now();
                let marker = node.clone();
                marking = Some(tokio::task::spawn_local(async move {
                    let n = marker.db.write(move |c| mark_sent(c, acked, now)).await?;
                    marker.metrics.updates("relayed", n as u64);
                    Ok(n)
                }));
                // A short batch means the outbox is drained for now.
                if (rows.len() as i64) < settings.batch {
                    sleep_or_wake(&control, Duration::from_millis(20)).await;
                }
            }
            Err(SendError {
                message,
                rejection: Some(rejection),
            }) => {
                // A permanent refusal: the batch is not skipped (delivery stays in order and
                // nothing is dropped), the outbox is held until the cause is fixed, loudly.
                failures += 1;
                node.metrics.relay_rejected();
                tracing::error!(
                    sender = %sender,
                    upstream = %upstream,
                    first_seq,
                    last_seq,
                    count,
                    status = rejection.status,
                    rejected_seq = rejection.seq,
                    trace_id = %trace_id,
                    error = %message,
                    retry_in_ms = settings.backoff_max.as_millis() as u64,
                    failures,
                    "relay batch rejected by the upstream; the outbox is held until this is fixed"
                );
                control.set_rejection(Some(*rejection));
                control.set_last_error(Some(format!(
                    "relay to {upstream} rejected (the outbox is held): {message}"
                )));
                backoff.to_max();
                sleep_or_wake(&control, backoff.delay()).await;
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(
                    sender = %sender,
                    upstream = %upstream,
                    first_seq,
                    last_seq,
                    count,
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    trace_id = %trace_id,
                    error = %e,
                    backoff_ms = backoff.delay().as_millis() as u64,
                    failures,
                    "relay batch failed; retrying after backoff"
                );
                control.set_last_error(Some(format!("relay to {upstream}: {e}")));
                backoff.wait().await;
            }
        }
    }
}

/// The final answer of `POST /admin/v1/final-request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FinalAnswer {
    pub done: bool,
    pub last_seq: i64,
    pub confirmed_seq: i64,
    pub held_for_tomorrow: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The final request: stop taking relays from below, flush the outbox, and wait (up to
/// `timeout`) until the upstream has confirmed the last seq.
pub async fn final_request(
    node: &Node,
    control: &RelayControl,
    timeout: Duration,
) -> Result<FinalAnswer, Error> {
    control.set_draining(true);
    tracing::info!(
        sender = %node.identity.sender_id(),
        timeout_s = timeout.as_secs(),
        "final request: relays from below stop, flushing the outbox"
    );
    let answer = final_request_loop(node, control, timeout).await;
    match &answer {
        Ok(a) if a.done => tracing::info!(
            last_seq = a.last_seq,
            confirmed_seq = a.confirmed_seq,
            "final request done: the upstream confirmed every update"
        ),
        Ok(a) => tracing::warn!(
            last_seq = a.last_seq,
            confirmed_seq = a.confirmed_seq,
            held_for_tomorrow = a.held_for_tomorrow,
            reason = a.reason.as_deref().unwrap_or(""),
            "final request not done: updates held for tomorrow"
        ),
        Err(e) => tracing::error!(error = %e, "final request failed"),
    }
    answer
}

async fn final_request_loop(
    node: &Node,
    control: &RelayControl,
    timeout: Duration,
) -> Result<FinalAnswer, Error> {
    let deadline = Instant::now() + timeout;
    loop {
        let s = node.db.read(outbox_status).await?;
        let answer = |done: bool, reason: Option<String>| FinalAnswer {
            done,
            last_seq: s.last_seq,
            confirmed_seq: s.confirmed_seq,
            held_for_tomorrow: if done { 0 } else { s.pending },
            reason,
        };
        if s.pending == 0 {
            return Ok(answer(true, None));
        }
        if control.upstream.is_none() {
            return Ok(answer(
                false,
                Some("no upstream is configured; the outbox is held".into()),
            ));
        }
        if !control.upstream_open(&node.identity, node.clock.now()) {
            return Ok(answer(
                false,
                Some("the upstream is outside its online window".into()),
            ));
        }
        if Instant::now() >= deadline {
            let reason = control
                .last_error()
                .unwrap_or_else(|| "the upstream did not confirm in time".into());
            return Ok(answer(false, Some(reason)));
        }
        control.wake();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The JSON of `GET /admin/v1/relay`.
pub fn status_json(node: &Node, control: &RelayControl, outbox: OutboxStatus) -> Value {
    json!({
        "sender": node.identity.sender_id(),
        "upstream": control.upstream,
        "upstreamOpen": control.upstream_open(&node.identity, node.clock.now()),
        "draining": control.draining(),
        "lastError": control.last_error(),
        "rejected": control.rejection(),
        "outbox": outbox,
    })
}

#[cfg(test)]
mod tests {
    use super::{Backoff, is_permanent};
    use std::time::Duration;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let mut seen = vec![b.delay()];
        for _ in 0..4 {
            b.fail();
            seen.push(b.delay());
        }
        assert_eq!(seen, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.reset();
        assert_eq!(b.delay(), ms(100));
        b.to_max();
        assert_eq!(b.delay(), ms(500));
    }

    #[test]
    fn only_refusals_that_retrying_cannot_change_are_permanent() {
        for status in [400, 403, 404, 413, 422] {
            assert!(is_permanent(status), "{status}");
        }
        for status in [200, 408, 409, 429, 500, 502, 503] {
            assert!(!is_permanent(status), "{status}");
        }
    }
}
