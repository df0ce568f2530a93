//! The pull task of a CS or prefecture: fetches its messages from the upstream's mailbox with a
//! long poll while the upstream is in its online window, and applies them (a prefecture keeps
//! them for its CSs, a CS hands each to its procedure). See `relay/mailbox.rs` for the
//! transport and its guarantees.

use std::sync::Arc;
use std::time::Duration;

use diesel::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use crate::domain::identity::Role;
use crate::domain::trace::TraceParent;
use crate::error::Error;
use crate::node::Node;
use crate::relay::mailbox::{
    MAX_WAIT_SECS, Message, MessageKind, cursor, keep_for, recipient_below,
};
use crate::relay::{Backoff, RelayControl, client};
use crate::store::db::DbConnection;
use crate::store::lock_writes;
use crate::store::schema::counters;
use crate::wide_area::{CsContext, WideArea, issuance, transfer};

/// Applies fetched messages and moves the cursor to `last`, in one transaction.
pub fn apply_fetched(
    conn: &mut DbConnection,
    ctx: &CsContext,
    messages: &[(i64, Value)],
    last: i64,
) -> Result<(), Error> {
    conn.transaction(|conn| {
        lock_writes(conn)?;
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
        MessageKind::MoveOutInfo => transfer::receive_move_out_info(conn, ctx, message),
        MessageKind::MoveInNotice => transfer::receive_move_in_notice(conn, ctx, message),
        MessageKind::MoveOutCancelled => transfer::receive_cancellation(conn, ctx, message),
        MessageKind::IssuanceRequest => issuance::receive_request(conn, ctx, message),
        MessageKind::IssuanceAnswer => issuance::receive_answer(conn, ctx, message),
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

/// The background task of a CS or prefecture: fetches its messages from the upstream while the
/// upstream is in its online window, and applies them. Returns at once without an upstream.
pub async fn run(node: Node, relay: Arc<RelayControl>, wide: Arc<WideArea>, wait_secs: u64) {
    let Some(upstream) = relay.upstream.clone() else {
        return;
    };
    if node.identity.role == Role::National {
        return;
    }
    let me = node.identity.sender_id();
    let wait = wait_secs.min(MAX_WAIT_SECS);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut held = false;
    let mut refused: Option<String> = None;
    loop {
        if !relay.upstream_open(&node.identity, node.clock.now()) {
            if !held {
                tracing::info!("mailbox: the upstream is outside its online window; held");
                held = true;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        held = false;
        let after = match node.db.read(cursor).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "mailbox: cannot read the cursor");
                backoff.wait().await;
                continue;
            }
        };
        let url = format!("{upstream}/v1/mailbox?recipient={me}&after={after}&wait={wait}");
        let fetched = tokio::task::spawn_blocking(move || {
            let r = client::get(&url, Duration::from_secs(wait + 10))?;
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
                tracing::warn!(upstream = %upstream, error = %e, backoff_ms = backoff.delay().as_millis() as u64, "mailbox: fetch failed; retrying");
                backoff.wait().await;
                continue;
            }
        };
        refused = None;
        backoff.reset();
        let Some(last) = messages.iter().map(|(id, _)| *id).max() else {
            continue;
        };
        let extensions = crate::wide_area::issuance::read_extensions(wide.extensions.as_deref());
        let ctx = CsContext {
            identity: node.identity.clone(),
            calendar: relay.calendar.current(),
            extensions,
            own_names: wide.own_names(&node.identity),
            now: node.clock.now(),
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
        match node
            .db
            .write(move |conn| apply_fetched(conn, &ctx, &messages, last))
            .await
        {
            Ok(()) => {
                tracing::debug!(count, last, "mailbox: messages applied");
                for kind in &kinds {
                    node.metrics.wide_area(kind, 1);
                }
                relay.wake();
                wide.mailbox.notify_waiters();
                wide.answers.notify_waiters();
            }
            Err(e) => {
                tracing::warn!(error = %e, "mailbox: cannot apply fetched messages; retrying");
                backoff.wait().await;
            }
        }
    }
}
