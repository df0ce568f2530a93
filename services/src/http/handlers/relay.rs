//! The relay from below (`POST /v1/relay`) and the operator's admin endpoints.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::domain::authz::{self};
use crate::error::Error;
use crate::http::extract::{caller_of, traceparent};
use crate::http::routes::AppState;
use crate::relay::{self, RelayBatch};

/// `POST /v1/relay`: a batch from the node below, applied idempotently by (sender, seq);
/// answers `{"acked": N, "applied": a, "duplicates": d}`.
pub(crate) async fn post_relay(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Error> {
    state.not_at_cs()?;
    if state.relay.draining() {
        return Err(Error::FinalRequestInProgress);
    }
    let batch: RelayBatch = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidBody(format!("relay batch: {e}")))?;
    let envelopes = batch.envelopes()?;
    if let Some(caller) = caller_of(&req) {
        let origins: Vec<(String, Option<&str>)> =
            envelopes.iter().map(relay::Envelope::origin).collect();
        let origins: Vec<(&str, Option<&str>)> =
            origins.iter().map(|(o, m)| (o.as_str(), *m)).collect();
        authz::check_relay(&state.identity, &caller, &batch.sender, &origins)?;
    }
    let identity = state.identity.clone();
    let now = state.clock.now();
    let trace_id = traceparent(&req).map(|t| t.trace_id).unwrap_or_default();
    let sender = batch.sender.clone();
    let (first_seq, count) = (batch.items.first().map_or(0, |i| i.seq), batch.items.len());
    let started = std::time::Instant::now();
    let ack = state
        .db
        .write(move |conn| relay::apply_batch(conn, &identity, &batch, envelopes, now))
        .await
        .inspect_err(|e| {
            tracing::warn!(
                sender = %sender,
                first_seq,
                count,
                trace_id = %trace_id,
                error = %e,
                "relay batch refused"
            )
        })?;
    tracing::debug!(
        sender = %sender,
        first_seq,
        last_seq = ack.acked,
        count,
        applied = ack.applied,
        duplicates = ack.duplicates,
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        trace_id = %trace_id,
        "relay batch applied"
    );
    state.metrics.updates("applied", ack.applied);
    state.metrics.updates("duplicate", ack.duplicates);
    if ack.applied > 0 {
        state.relay.wake();
        state.wide.mailbox.notify_waiters();
    }
    Ok(HttpResponse::Ok().json(ack))
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct FinalRequestQuery {
    /// Overrides the configured wait, in seconds.
    #[serde(rename = "timeoutSeconds")]
    timeout_seconds: Option<u64>,
}

/// `POST /admin/v1/final-request[?timeoutSeconds=N]`: stop taking relays from below, flush the
/// outbox and answer when the upstream has confirmed the last seq (the final answer).
pub(crate) async fn post_final_request(
    state: web::Data<AppState>,
    query: web::Query<FinalRequestQuery>,
) -> Result<HttpResponse, Error> {
    let timeout = query
        .timeout_seconds
        .map_or(state.relay.settings.final_timeout, |s| {
            std::time::Duration::from_secs(s.min(3600))
        });
    let answer = relay::final_request(&state.node, &state.relay, timeout).await?;
    Ok(HttpResponse::Ok().json(answer))
}

/// `POST /admin/v1/resume`: take relays from below again after a final request.
pub(crate) async fn post_resume(state: web::Data<AppState>) -> HttpResponse {
    state.relay.set_draining(false);
    tracing::info!("resumed: relays from below are taken again");
    HttpResponse::Ok().json(json!({ "draining": false }))
}

/// `GET /admin/v1/relay`: the outbox and the relay's state.
pub(crate) async fn get_relay_status(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let outbox = state.db.read(relay::outbox_status).await?;
    let undelivered = state.db.read(crate::relay::mailbox::undelivered).await?;
    let mut status = relay::status_json(&state.node, &state.relay, outbox);
    // Messages kept here for the nodes below that they have not acknowledged yet.
    status["mailbox"] = json!({ "undelivered": undelivered });
    Ok(HttpResponse::Ok().json(status))
}
