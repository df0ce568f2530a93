//! What the handlers read from a request and how they answer: the caller, `traceparent`,
//! `Idempotency-Key`, JSON bodies and ids; the replayed answer; the long poll.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::{HttpMessage, HttpRequest, HttpResponse};
use serde_json::Value;

use crate::domain::authz::Caller;
use crate::domain::trace::TraceParent;
use crate::error::Error;

/// The authenticated caller of a request, if any.
pub(crate) fn caller_of(req: &HttpRequest) -> Option<Caller> {
    req.extensions().get::<Caller>().cloned()
}

/// The request's W3C `traceparent`, if it sent a valid one.
pub(crate) fn traceparent(req: &HttpRequest) -> Option<TraceParent> {
    req.headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
}

/// `body` with `status`, marked `Idempotent-Replayed: true` when it answers a retried request.
pub(crate) fn answer<T: serde::Serialize + ?Sized>(
    status: u16,
    body: &T,
    replayed: bool,
) -> HttpResponse {
    let mut response = HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK));
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    response.json(body)
}

/// A long poll: reads until `done` holds or `wait` has passed, waking on `notify` between the
/// reads (at most every `step`). The notification is armed before each read, so a change that
/// lands during the read is not missed.
pub(crate) async fn long_poll<T, F, Fut>(
    notify: &tokio::sync::Notify,
    wait: Duration,
    step: Duration,
    done: impl Fn(&T) -> bool,
    mut read: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + wait;
    loop {
        let mut notified = std::pin::pin!(notify.notified());
        notified.as_mut().enable();
        let value = read().await?;
        let now = Instant::now();
        if done(&value) || now >= deadline {
            return Ok(value);
        }
        let _ = tokio::time::timeout((deadline - now).min(step), notified).await;
    }
}

/// The longest accepted Idempotency-Key.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<String, Error> {
    let value = headers
        .get("Idempotency-Key")
        .ok_or(Error::MissingIdempotencyKey)?;
    let key = value
        .to_str()
        .map_err(|_| Error::MissingIdempotencyKey)?
        .trim();
    if key.is_empty()
        || key.len() > MAX_IDEMPOTENCY_KEY
        || !key.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::MissingIdempotencyKey);
    }
    Ok(key.to_owned())
}

pub(crate) fn json_body(body: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(body).map_err(|e| Error::InvalidBody(format!("invalid JSON: {e}")))
}

/// 201 with `view`, or 200 and `Idempotent-Replayed` when a retry found it done already.
pub(crate) fn created_or_replayed<T: serde::Serialize>(view: &T, replayed: bool) -> HttpResponse {
    answer(if replayed { 200 } else { 201 }, view, replayed)
}

/// Ids of transfers and issuances: `<municipality>-T<n>` / `<municipality>-I<n>`.
pub(crate) fn checked_id(id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(Error::InvalidField {
            field: "id",
            rule: "format",
            message: "an id is 1–64 letters, digits and hyphens".into(),
        });
    }
    Ok(())
}
