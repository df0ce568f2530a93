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

use diesel::prelude::*;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::identity::{NodeIdentity, Role};
use crate::domain::trace::TraceParent;
use crate::error::Error;
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

/// The mailbox recipient name of the child that serves `to` below this node.
pub(crate) fn recipient_below(identity: &NodeIdentity, to_prefecture: u8, to: &str) -> String {
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
pub(crate) fn keep_for(
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

/// Longest wait of one long poll.
pub const MAX_WAIT_SECS: u64 = 30;

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
