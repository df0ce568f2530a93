//! Messages between CSs for the wide-area services (the transfer-out/in special procedure and
//! the wide-area issuance of resident-record copies), routed through the tiers.
//!
//! Up the tree a message travels like an update: the sending CS writes it into its outbox in
//! the transaction that decided it, and the relay delivers it at least once, in order, only
//! while the upstream is in its online window (`relay.rs`). A receiver applies it once per
//! `(sender, seq)` (the inbox) and routes it: a prefecture keeps it in its mailbox for one of
//! its own CSs, or forwards it to the national server through its outbox; the national server
//! keeps it in its mailbox for the destination's prefecture.
//!
//! Down the tree a child fetches its messages from its upstream — the one address it already
//! has — with a long poll `GET <upstream>/v1/mailbox?recipient=<me>&after=<cursor>&wait=<s>`
//! (only while the upstream is in its online window). The child applies the messages and moves
//! its cursor in one transaction; the next poll carries the cursor, which acknowledges them. A
//! crash anywhere repeats a fetch, never loses one; every handler is idempotent (by message id
//! at a prefecture, by transfer or issuance id at a CS).

use std::time::Duration;

use diesel::prelude::*;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::domain::identity::{NodeIdentity, Role};
use crate::domain::trace::TraceParent;
use crate::error::Error;
use crate::http::routes::AppState;
use crate::relay::{Envelope, RelayItem};
use crate::store::db::DbConnection;
use crate::store::models::OutboxRow;
use crate::store::schema::{counters, inbox, mailbox, outbox};
use crate::store::{insert_rows, reserve_ids};

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    /// 転出証明書情報: source A → destination B.
    MoveOutInfo,
    /// 転入通知: destination B → source A.
    MoveInNotice,
    /// 転出取消: source A → destination B.
    MoveOutCancelled,
    /// Wide-area issuance: issuing CS → home CS.
    IssuanceRequest,
    /// The copy data or the refusal: home CS → issuing CS.
    IssuanceAnswer,
}

/// A message from one CS (`from`, municipality code) to another (`to`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Unique over the network: `<kind>:<transfer or issuance id>`.
    pub message_id: String,
    pub kind: MessageKind,
    pub from: String,
    pub to: String,
    pub body: Value,
    /// W3C trace context: the span of the request (or message) that sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Message {
    pub fn new(kind: MessageKind, id: &str, from: &str, to: &str, body: Value) -> Message {
        let tag = serde_json::to_value(kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        Message {
            message_id: format!("{tag}:{id}"),
            kind,
            from: from.to_owned(),
            to: to.to_owned(),
            body,
            traceparent: None,
        }
    }

    /// The message as a new span of `trace` (a new trace without one).
    pub fn in_trace(mut self, trace: Option<&TraceParent>) -> Message {
        let span = trace.map_or_else(TraceParent::root, TraceParent::child);
        self.traceparent = Some(span.header());
        self
    }

    /// The destination's prefecture (the message's municipality codes are checked).
    pub fn check(&self) -> Result<u8, Error> {
        if self.message_id.is_empty() || self.message_id.len() > 128 {
            return Err(Error::InvalidBody("message_id must be 1–128 bytes".into()));
        }
        juki_codes::validate_municipality_code(&self.from)
            .map_err(|e| Error::InvalidBody(format!("message from: {e}")))?;
        juki_codes::validate_municipality_code(&self.to)
            .map_err(|e| Error::InvalidBody(format!("message to: {e}")))
    }
}

/// Wide-area state shared by the handlers and the background tasks.
#[derive(Debug, Default)]
pub struct WideArea {
    /// The node's name from the configuration file (the JukiNode's name), if any.
    pub name: Option<String>,
    /// The active ServiceExtensions file (`extensions.json`), if configured.
    pub extensions: Option<std::path::PathBuf>,
    /// New mailbox rows (wakes long polls).
    pub mailbox: Notify,
    /// New issuance answers (wakes waiting `POST /v1/issuances`).
    pub answers: Notify,
}

impl WideArea {
    /// The names an extension may use for this node: the configured name, the sender id
    /// (`cs-131016`, the JukiNode's name as the charts create it) and the municipality code.
    pub fn own_names(&self, identity: &NodeIdentity) -> Vec<String> {
        let mut names = vec![identity.sender_id()];
        names.extend(identity.municipality.clone());
        names.extend(self.name.clone());
        names
    }
}

/// The mailbox recipient name of the child that serves `to` below this node.
fn recipient_below(identity: &NodeIdentity, to_prefecture: u8, to: &str) -> String {
    match identity.role {
        Role::National => format!("pref-{to_prefecture:02}"),
        _ => format!("cs-{to}"),
    }
}

/// Writes `message` into this CS's outbox (the caller holds the write lock and transaction).
pub fn enqueue(
    conn: &mut DbConnection,
    sender: &str,
    message: &Message,
    now: Timestamp,
) -> Result<i64, Error> {
    let seq = reserve_ids(conn, "outbox", 1)?;
    // The envelope's traceparent is the one the relay request carries.
    let payload = json!({ "sender": sender, "seq": seq, "message": message,
        "traceparent": message.traceparent })
    .to_string();
    diesel::insert_into(outbox::table)
        .values(OutboxRow {
            seq,
            payload,
            created_at: now.to_string(),
            sent_at: None,
        })
        .execute(conn)?;
    Ok(seq)
}

/// Keeps `message` for `recipient` unless it is there already (by message id).
fn keep_for(
    conn: &mut DbConnection,
    recipient: &str,
    message: &Message,
    now: Timestamp,
) -> Result<bool, Error> {
    let exists: i64 = mailbox::table
        .filter(mailbox::message_id.eq(&message.message_id))
        .count()
        .get_result(conn)?;
    if exists > 0 {
        return Ok(false);
    }
    let id = reserve_ids(conn, "mailbox", 1)?;
    let payload = serde_json::to_string(message).map_err(|e| Error::Corrupt(e.to_string()))?;
    diesel::insert_into(mailbox::table)
        .values((
            mailbox::id.eq(id),
            mailbox::recipient.eq(recipient),
            mailbox::message_id.eq(&message.message_id),
            mailbox::payload.eq(payload),
            mailbox::created_at.eq(now.to_string()),
        ))
        .execute(conn)?;
    Ok(true)
}

/// Routes the messages of a relayed batch (inside `relay::apply_batch`'s transaction): the inbox
/// row, then the prefecture's mailbox for its own CS, the national server through the outbox,
/// or the national server's mailbox for the destination's prefecture.
pub(crate) fn route_from_child(
    conn: &mut DbConnection,
    identity: &NodeIdentity,
    sender: &str,
    messages: Vec<(usize, &RelayItem, Envelope)>,
    now: Timestamp,
) -> Result<(), Error> {
    let at = now.to_string();
    for (index, item, envelope) in messages {
        let Some(message) = envelope.message else {
            continue;
        };
        let to_prefecture = message.check().map_err(|e| e.in_batch(Some(index)))?;
        diesel::insert_into(inbox::table)
            .values((
                inbox::sender.eq(sender),
                inbox::seq.eq(item.seq),
                inbox::applied_at.eq(&at),
            ))
            .execute(conn)?;
        let stays_here =
            identity.role == Role::National || identity.prefecture == Some(to_prefecture);
        if stays_here {
            let recipient = recipient_below(identity, to_prefecture, &message.to);
            keep_for(conn, &recipient, &message, now)?;
        } else {
            // Forwarded to the national server unchanged.
            let seq = reserve_ids(conn, "outbox", 1)?;
            let rows = [OutboxRow {
                seq,
                payload: item.payload.get().to_owned(),
                created_at: at.clone(),
                sent_at: None,
            }];
            insert_rows!(conn, outbox::table, rows);
        }
    }
    Ok(())
}

/// Checks that `recipient` is a child of this node (a CS of this prefecture, or a prefecture).
pub fn check_recipient(identity: &NodeIdentity, recipient: &str) -> Result<(), Error> {
    let bad = |message: String| Error::InvalidField {
        field: "recipient",
        rule: "not_a_child",
        message,
    };
    match identity.role {
        Role::Cs => Err(Error::WrongRole("cs")),
        Role::Prefecture => {
            let code = recipient
                .strip_prefix("cs-")
                .ok_or_else(|| bad(format!("{recipient:?} is not cs-<municipality code>")))?;
            let p = juki_codes::validate_municipality_code(code)
                .map_err(|e| bad(format!("{recipient:?}: {e}")))?;
            if Some(p) != identity.prefecture {
                return Err(bad(format!("{recipient:?} is not a CS of this prefecture")));
            }
            Ok(())
        }
        Role::National => {
            let p = recipient
                .strip_prefix("pref-")
                .ok_or_else(|| bad(format!("{recipient:?} is not pref-<prefecture code>")))?;
            juki_codes::validate_prefecture_code(p)
                .map(|_| ())
                .map_err(|e| bad(format!("{recipient:?}: {e}")))
        }
    }
}

/// How long a delivered message is kept (a child restored from an older backup fetches again
/// what it had applied after that backup); then it is deleted, with the PIN hash and 本籍 it
/// may carry.
pub const RETENTION_DAYS: i64 = 7;

/// Marks `recipient`'s messages up to `after` delivered (the child's acknowledgement) and
/// deletes its messages delivered more than [`RETENTION_DAYS`] ago.
pub fn acknowledge(
    conn: &mut DbConnection,
    recipient: &str,
    after: i64,
    now: Timestamp,
) -> Result<usize, Error> {
    let marked = diesel::update(
        mailbox::table
            .filter(mailbox::recipient.eq(recipient))
            .filter(mailbox::id.le(after))
            .filter(mailbox::delivered_at.is_null()),
    )
    .set(mailbox::delivered_at.eq(now.to_string()))
    .execute(conn)?;
    if let Ok(cutoff) = now.checked_sub(jiff::SignedDuration::from_hours(24 * RETENTION_DAYS)) {
        diesel::delete(
            mailbox::table
                .filter(mailbox::recipient.eq(recipient))
                .filter(mailbox::delivered_at.lt(cutoff.to_string())),
        )
        .execute(conn)?;
    }
    Ok(marked)
}

/// `recipient`'s messages after `after`, oldest first: `[{"id", "message"}]`.
pub fn pending_for(
    conn: &mut DbConnection,
    recipient: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Value>, Error> {
    let rows: Vec<(i64, String)> = mailbox::table
        .filter(mailbox::recipient.eq(recipient))
        .filter(mailbox::id.gt(after))
        .order(mailbox::id.asc())
        .limit(limit)
        .select((mailbox::id, mailbox::payload))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(id, payload)| {
            let message: Value = serde_json::from_str(&payload).unwrap_or(Value::Null);
            json!({ "id": id, "message": message })
        })
        .collect())
}

/// Messages not yet acknowledged by the children (for `GET /admin/v1/relay`).
pub fn undelivered(conn: &mut DbConnection) -> Result<i64, Error> {
    Ok(mailbox::table
        .filter(mailbox::delivered_at.is_null())
        .count()
        .get_result(conn)?)
}

/// The child's cursor: the highest mailbox id of its upstream it has applied.
pub fn cursor(conn: &mut DbConnection) -> Result<i64, Error> {
    Ok(counters::table
        .filter(counters::name.eq("mailbox_cursor"))
        .select(counters::value)
        .first(conn)?)
}

/// What the CS's handlers need besides the database.
#[derive(Debug, Clone)]
pub struct CsContext {
    pub identity: NodeIdentity,
    pub calendar: Option<juki_calendar::Calendar>,
    pub extensions: Vec<crate::wide_area::issuance::Extension>,
    pub own_names: Vec<String>,
    pub now: Timestamp,
    /// The trace the work belongs to: the request's, or the message's being handled.
    pub trace: Option<TraceParent>,
}

impl CsContext {
    /// The trace id for log lines ("" without a trace).
    pub fn trace_id(&self) -> &str {
        self.trace.as_ref().map_or("", |t| t.trace_id.as_str())
    }
}

/// Applies fetched messages and moves the cursor to `last`, in one transaction.
pub fn apply_fetched(
    conn: &mut DbConnection,
    ctx: &CsContext,
    messages: &[(i64, Value)],
    last: i64,
) -> Result<(), Error> {
    conn.transaction(|conn| {
        crate::store::lock_writes(conn)?;
        let current = cursor(conn)?;
        for (id, value) in messages {
            if *id <= current {
                continue;
            }
            let message = match Message::deserialize(value) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(id, error = %e, "mailbox: malformed message skipped");
                    continue;
                }
            };
            let to_prefecture = match message.check() {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(id, error = %e, "mailbox: malformed message skipped");
                    continue;
                }
            };
            match ctx.identity.role {
                Role::Prefecture => {
                    let recipient = recipient_below(&ctx.identity, to_prefecture, &message.to);
                    keep_for(conn, &recipient, &message, ctx.now)?;
                }
                Role::Cs => {
                    if ctx.identity.municipality.as_deref() != Some(message.to.as_str()) {
                        tracing::error!(id, to = %message.to, "mailbox: message for another municipality skipped");
                        continue;
                    }
                    let ctx = CsContext {
                        trace: message.traceparent.as_deref().and_then(TraceParent::parse),
                        ..ctx.clone()
                    };
                    dispatch(conn, &ctx, &message)?;
                }
                Role::National => {}
            }
        }
        if last > current {
            diesel::update(counters::table.filter(counters::name.eq("mailbox_cursor")))
                .set(counters::value.eq(last))
                .execute(conn)?;
        }
        Ok(())
    })
}

fn dispatch(conn: &mut DbConnection, ctx: &CsContext, message: &Message) -> Result<(), Error> {
    let result = match message.kind {
        MessageKind::MoveOutInfo => {
            crate::wide_area::transfer::receive_move_out_info(conn, ctx, message)
        }
        MessageKind::MoveInNotice => {
            crate::wide_area::transfer::receive_move_in_notice(conn, ctx, message)
        }
        MessageKind::MoveOutCancelled => {
            crate::wide_area::transfer::receive_cancellation(conn, ctx, message)
        }
        MessageKind::IssuanceRequest => {
            crate::wide_area::issuance::receive_request(conn, ctx, message)
        }
        MessageKind::IssuanceAnswer => {
            crate::wide_area::issuance::receive_answer(conn, ctx, message)
        }
    };
    match result {
        // A body that cannot be read is logged and skipped: holding it would stop every later
        // message for this CS, and no retry can make it readable.
        Err(Error::InvalidBody(e)) => {
            tracing::error!(message_id = %message.message_id, error = %e, "mailbox: unreadable message skipped");
            Ok(())
        }
        other => other,
    }
}

/// Retry interval of the fetch after the upstream refused it with a 4xx.
const PERMANENT_BACKOFF: Duration = Duration::from_secs(10);

/// Longest wait of one long poll.
pub const MAX_WAIT_SECS: u64 = 30;

/// The background task of a CS or prefecture: fetches its messages from the upstream while the
/// upstream is in its online window, and applies them. Returns at once without an upstream.
pub async fn run_pull(state: AppState) {
    let Some(upstream) = state.relay.upstream.clone() else {
        return;
    };
    if state.identity.role == Role::National {
        return;
    }
    let me = state.identity.sender_id();
    let wait = std::env::var("JUKI_MAILBOX_WAIT_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(20)
        .min(MAX_WAIT_SECS);
    let initial = Duration::from_millis(100);
    let mut backoff = initial;
    let mut held = false;
    let mut refused: Option<String> = None;
    loop {
        if !state
            .relay
            .upstream_open(&state.identity, state.clock.now())
        {
            if !held {
                tracing::info!("mailbox: the upstream is outside its online window; held");
                held = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        held = false;
        let after = match state.with_db(cursor).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "mailbox: cannot read the cursor");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let url = format!("{upstream}/v1/mailbox?recipient={me}&after={after}&wait={wait}");
        let fetched = tokio::task::spawn_blocking(move || {
            let r = crate::relay::client::get(&url, Duration::from_secs(wait + 10))?;
            if r.status != 200 {
                return Err(format!(
                    "upstream answered {}: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
            let json = r.json()?;
            let messages = json["messages"]
                .as_array()
                .ok_or("no messages array")?
                .iter()
                .filter_map(|m| Some((m["id"].as_i64()?, m["message"].clone())))
                .collect::<Vec<_>>();
            Ok(messages)
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        let messages = match fetched {
            Ok(m) => m,
            // A refusal (a 4xx: this node is not a child of its upstream, or the upstream has
            // no mailbox) does not go away by retrying soon: an error, once per reason, and a
            // retry every PERMANENT_BACKOFF until the configuration is fixed.
            Err(e) if e.starts_with("upstream answered 4") => {
                if refused.as_deref() != Some(e.as_str()) {
                    tracing::error!(upstream = %upstream, error = %e, retry_in_ms = PERMANENT_BACKOFF.as_millis() as u64, "mailbox: the upstream refuses this node's fetch");
                    refused = Some(e);
                }
                tokio::time::sleep(PERMANENT_BACKOFF).await;
                continue;
            }
            Err(e) => {
                tracing::warn!(upstream = %upstream, error = %e, backoff_ms = backoff.as_millis() as u64, "mailbox: fetch failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        refused = None;
        backoff = initial;
        let Some(last) = messages.iter().map(|(id, _)| *id).max() else {
            continue;
        };
        let extensions =
            crate::wide_area::issuance::read_extensions(state.wide.extensions.as_deref());
        let ctx = CsContext {
            identity: state.identity.clone(),
            calendar: state.relay.calendar.clone(),
            extensions,
            own_names: state.wide.own_names(&state.identity),
            now: state.clock.now(),
            trace: None,
        };
        let count = messages.len();
        let kinds: Vec<String> = messages
            .iter()
            .map(|(_, m)| {
                // Only the known kinds become label values.
                let kind = MessageKind::deserialize(&m["kind"])
                    .ok()
                    .and_then(|k| serde_json::to_value(k).ok())
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "unknown".into());
                format!("message_{kind}")
            })
            .collect();
        match state
            .with_write(move |conn| apply_fetched(conn, &ctx, &messages, last))
            .await
        {
            Ok(()) => {
                tracing::debug!(count, last, "mailbox: messages applied");
                for kind in &kinds {
                    state.metrics.wide_area(kind, 1);
                }
                state.relay.wake();
                state.wide.mailbox.notify_waiters();
                state.wide.answers.notify_waiters();
            }
            Err(e) => {
                tracing::warn!(error = %e, "mailbox: cannot apply fetched messages; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_and_checks() {
        let m = Message::new(
            MessageKind::MoveInNotice,
            "131016-T1",
            "271004",
            "131016",
            json!({}),
        );
        assert_eq!(m.message_id, "move_in_notice:131016-T1");
        assert_eq!(m.check().unwrap(), 13);
        let bad = Message {
            to: "131017".into(),
            ..m
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn recipients_are_children() {
        let pref = NodeIdentity {
            role: Role::Prefecture,
            prefecture: Some(13),
            municipality: None,
        };
        assert!(check_recipient(&pref, "cs-131016").is_ok());
        assert_eq!(
            check_recipient(&pref, "cs-271004").unwrap_err().tag(),
            "not_a_child"
        );
        assert!(check_recipient(&pref, "pref-13").is_err());
        let national = NodeIdentity {
            role: Role::National,
            prefecture: None,
            municipality: None,
        };
        assert!(check_recipient(&national, "pref-27").is_ok());
        assert!(check_recipient(&national, "pref-48").is_err());
        assert!(check_recipient(&NodeIdentity::cs("131016").unwrap(), "cs-131016").is_err());
    }
}
