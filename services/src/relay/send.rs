//! The sender side: the background task that delivers the outbox to the upstream in seq order
//! while the upstream is in its online window, with capped exponential backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use tracing::Instrument;

use super::outbox::{mark_sent, outbox_status, pending};
use super::{Backoff, RelayControl};
use crate::domain::trace::TraceParent;
use crate::error::Error;
use crate::node::Node;
use crate::store::models::OutboxRow;

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

pub(super) fn is_permanent(status: u16) -> bool {
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
    let mut state = RunState {
        backoff: Backoff::new(settings.backoff_initial, settings.backoff_max),
        failures: 0,
        acked_upto: 0,
        marking: None,
    };
    // The outbox gauges are refreshed at most once a second here (and on every scrape): counting
    // a large backlog on every round would slow the delivery down.
    let mut status_at: Option<Instant> = None;
    // The last confirmation survives a restart: it is the confirmed rows' time.
    if let Ok(Some(at)) = node.db.read(super::outbox::last_confirmed_at).await {
        node.metrics.relay_succeeded(at);
    }
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
        let after = state.acked_upto;
        let rows = match node.db.read(move |c| pending(c, after, limit)).await {
            Ok(rows) => rows,
            Err(e) => {
                state.failures += 1;
                tracing::warn!(
                    sender = %sender,
                    error = %e,
                    backoff_ms = state.backoff.delay().as_millis() as u64,
                    failures = state.failures,
                    "relay cannot read the outbox; retrying"
                );
                control.set_last_error(Some(format!("read outbox: {e}")));
                state.backoff.wait().await;
                continue;
            }
        };
        if rows.is_empty() {
            if state.marking.is_some() {
                settle(&node, &control, &mut state.marking, &mut state.acked_upto).await;
                continue;
            }
            control.set_last_error(None);
            sleep_or_wake(&control, settings.idle_poll).await;
            continue;
        }
        // One span per batch: its log lines say which rows and which trace without repeating it.
        let span = tracing::info_span!(
            "relay_batch",
            sender = %sender,
            upstream = %upstream,
            first_seq = rows.first().map_or(0, |r| r.seq),
            last_seq = rows.last().map_or(0, |r| r.seq),
            count = rows.len(),
            trace_id = %first_trace_id(&rows),
        );
        let batch = Batch {
            node: &node,
            control: &control,
            upstream: &upstream,
            sender: &sender,
        };
        batch.deliver(rows, &mut state).instrument(span).await;
    }
}

/// What a relay run carries from one batch to the next.
struct RunState {
    backoff: Backoff,
    /// Failures in a row.
    failures: u32,
    /// The highest seq the upstream acknowledged in this run; the next batch starts after it.
    acked_upto: i64,
    marking: Option<Marking>,
}

/// One batch's delivery, with what it needs of the run.
struct Batch<'a> {
    node: &'a Node,
    control: &'a RelayControl,
    upstream: &'a str,
    sender: &'a str,
}

impl Batch<'_> {
    /// Sends `rows` and acts on the answer: marks them sent in the background, holds the outbox
    /// on a refusal, or backs off on a failure.
    async fn deliver(&self, rows: Vec<OutboxRow>, state: &mut RunState) {
        let (node, control) = (self.node, self.control);
        let settings = &control.settings;
        let started = Instant::now();
        let (up, who, timeout) = (
            self.upstream.to_string(),
            self.sender.to_string(),
            settings.request_timeout,
        );
        let sent = tokio::task::spawn_blocking(move || {
            let result = send(&up, &who, &rows, timeout);
            (rows, result)
        })
        .await;
        let (rows, result) = match sent {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(error = %e, "relay task failed");
                control.set_last_error(Some(format!("relay task: {e}")));
                return;
            }
        };
        let elapsed = started.elapsed();
        node.metrics.relay(elapsed.as_secs_f64(), result.is_ok());
        match result {
            Ok(acked) => {
                node.metrics.relay_succeeded(node.clock.now());
                tracing::info!(
                    acked,
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    "relay batch delivered"
                );
                control.set_last_error(None);
                control.set_rejection(None);
                state.backoff.reset();
                state.failures = 0;
                // The acknowledged rows are marked sent in the background while the next batch
                // is read and sent (one marking at a time, so they complete in order).
                settle(node, control, &mut state.marking, &mut state.acked_upto).await;
                state.acked_upto = state.acked_upto.max(acked);
                let now = node.clock.now();
                let marker = node.clone();
                state.marking = Some(tokio::task::spawn_local(async move {
                    let n = marker.db.write(move |c| mark_sent(c, acked, now)).await?;
                    marker.metrics.updates("relayed", n as u64);
                    Ok(n)
                }));
                // A short batch means the outbox is drained for now.
                if (rows.len() as i64) < settings.batch {
                    sleep_or_wake(control, Duration::from_millis(20)).await;
                }
            }
            Err(SendError {
                message,
                rejection: Some(rejection),
            }) => {
                // A permanent refusal: the batch is not skipped (delivery stays in order and
                // nothing is dropped), the outbox is held until the cause is fixed, loudly.
                state.failures += 1;
                node.metrics.relay_rejected();
                tracing::error!(
                    status = rejection.status,
                    rejected_seq = rejection.seq,
                    error = %message,
                    retry_in_ms = settings.backoff_max.as_millis() as u64,
                    failures = state.failures,
                    "relay batch rejected by the upstream; the outbox is held until this is fixed"
                );
                control.set_rejection(Some(*rejection));
                control.set_last_error(Some(format!(
                    "relay to {} rejected (the outbox is held): {message}",
                    self.upstream
                )));
                state.backoff.to_max();
                sleep_or_wake(control, state.backoff.delay()).await;
            }
            Err(e) => {
                state.failures += 1;
                tracing::warn!(
                    duration_ms = elapsed.as_secs_f64() * 1000.0,
                    error = %e,
                    backoff_ms = state.backoff.delay().as_millis() as u64,
                    failures = state.failures,
                    "relay batch failed; retrying after backoff"
                );
                control.set_last_error(Some(format!("relay to {}: {e}", self.upstream)));
                state.backoff.wait().await;
            }
        }
    }
}
