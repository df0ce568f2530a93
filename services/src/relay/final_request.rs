//! The final request of the day: stop taking relays from below, flush the outbox, and answer
//! once the upstream has confirmed the last seq; and the relay status JSON.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::RelayControl;
use super::outbox::{OutboxStatus, outbox_status};
use crate::error::Error;
use crate::node::Node;

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
