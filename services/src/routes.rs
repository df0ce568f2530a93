//! HTTP routes (the one routes file): handlers by resource.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde_json::{Value, json};

use crate::clock::Clock;
use crate::config::{NodeIdentity, Role};
use crate::db::{DbConnection, Pool};
use crate::domain::Context;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::relay::{self, RelayBatch, RelayControl};
use crate::store::{self, Submission};
use crate::trace::TraceParent;

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: Pool,
    pub identity: NodeIdentity,
    pub clock: Arc<dyn Clock>,
    pub relay: Arc<RelayControl>,
    pub metrics: Metrics,
    /// Writers of this node take turns here first on SQLite (see [`AppState::with_write`]).
    pub writes: Arc<std::sync::Mutex<()>>,
}

impl AppState {
    fn own_municipality(&self) -> Result<&str, Error> {
        match (self.identity.role, &self.identity.municipality) {
            (Role::Cs, Some(m)) => Ok(m),
            (role, _) => Err(Error::WrongRole(role.as_str())),
        }
    }

    /// A node without upstream (relay disabled) and with fresh metrics.
    pub fn new(pool: Pool, identity: NodeIdentity, clock: Arc<dyn Clock>) -> Self {
        AppState {
            pool,
            identity,
            clock,
            relay: Arc::new(RelayControl::default()),
            metrics: Metrics::new(),
            writes: Arc::default(),
        }
    }

    /// Runs `f` with a pooled connection on the blocking thread pool.
    pub async fn with_db<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, Error> + Send + 'static,
    {
        let pool = self.pool.clone();
        web::block(move || {
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .await
        .map_err(|e| Error::Blocking(e.to_string()))?
    }
}

impl AppState {
    /// [`AppState::with_db`] for a writing transaction. On SQLite the node's writers take turns
    /// on an in-process mutex before they ask SQLite for its write lock: a writer that finds the
    /// database locked waits in SQLite's busy handler, which sleeps (1, 2, 5 … 100 ms) instead
    /// of waking when the lock is free. Under a steady stream of ingestion transactions the
    /// relay's writes lost that race again and again (the throughput benchmark found the
    /// national server had applied a quarter of the updates when the ingestion ended).
    pub async fn with_write<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, Error> + Send + 'static,
    {
        let pool = self.pool.clone();
        let writes = self.writes.clone();
        web::block(move || {
            let mut conn = pool.get()?;
            let _turn = matches!(*conn, DbConnection::Sqlite(_))
                .then(|| writes.lock().unwrap_or_else(|e| e.into_inner()));
            f(&mut conn)
        })
        .await
        .map_err(|e| Error::Blocking(e.to_string()))?
    }
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::PathConfig::default()
            .error_handler(|e, _| Error::InvalidBody(format!("path: {e}")).into()),
    )
    .route("/healthz", web::get().to(healthz))
    .route("/readyz", web::get().to(readyz))
    .route("/v1/updates", web::post().to(post_updates))
    .route("/v1/residents/{code}", web::get().to(get_resident))
    .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
    .route("/v1/residents/{code}/history", web::get().to(get_history))
    .route("/v1/relay", web::post().to(post_relay))
    .route(
        "/admin/v1/final-request",
        web::post().to(post_final_request),
    )
    .route("/admin/v1/resume", web::post().to(post_resume))
    .route("/admin/v1/relay", web::get().to(get_relay_status))
    .route("/metrics", web::get().to(get_metrics))
    .route("/openapi.json", web::get().to(get_openapi))
    .default_service(web::to(no_route));
}

/// Largest accepted request body (a batch of a few thousand updates).
pub const MAX_BODY_BYTES: usize = 8 << 20;

async fn no_route(req: HttpRequest) -> HttpResponse {
    Error::NoRoute(format!("{} {}", req.method(), req.path())).error_response()
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    state
        .with_db(store::check_ready)
        .await
        .map_err(|e| match e {
            e @ Error::NotReady(_) => e,
            other => Error::NotReady(other.to_string()),
        })?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}

/// The longest accepted Idempotency-Key.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

fn idempotency_key(headers: &HeaderMap) -> Result<String, Error> {
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

/// `POST /v1/updates`: one update object or an array (all-or-nothing), with `Idempotency-Key`.
async fn post_updates(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Error> {
    let municipality = state.own_municipality()?.to_owned();
    let key = idempotency_key(req.headers())?;
    let json: Value = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidBody(format!("invalid JSON: {e}")))?;
    let submission = Submission::from_json(json)?;
    let now = state.clock.now();
    let ctx = Context {
        own_municipality: municipality,
        today: state.clock.today(),
    };
    let sender = state.identity.sender_id();
    let trace = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    let outcome = state
        .with_write(move |conn| {
            store::submit_traced(conn, &ctx, &sender, &key, &submission, now, trace.as_ref())
        })
        .await?;
    if !outcome.replayed {
        let n = outcome.body["results"]
            .as_array()
            .map_or(1, |r| r.len() as u64);
        state.metrics.updates("accepted", n);
        state.relay.wake();
    }
    let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    if outcome.replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(response.json(outcome.body))
}

fn checked_code(code: &str) -> Result<(), Error> {
    juki_codes::validate_resident_record_code(code).map_err(|e| Error::InvalidField {
        field: "resident_code",
        rule: match e {
            juki_codes::CodeError::CheckDigit { .. } => "check_digit",
            _ => "format",
        },
        message: e.to_string(),
    })
}

/// `GET /v1/residents/{code}`: the current record of one of this CS's residents.
async fn get_resident(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let municipality = state.own_municipality()?.to_owned();
    let code = path.into_inner();
    checked_code(&code)?;
    let view = state
        .with_db(move |conn| store::resident(conn, &municipality, &code))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /v1/residents/{code}/history`: the change history, oldest first.
async fn get_history(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let municipality = state.own_municipality()?.to_owned();
    let code = path.into_inner();
    checked_code(&code)?;
    let lookup = code.clone();
    let views = state
        .with_db(move |conn| store::history(conn, &municipality, &lookup))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "resident_code": code, "history": views })))
}

/// `POST /v1/relay`: a batch from the node below, applied idempotently by (sender, seq);
/// answers `{"acked": N, "applied": a, "duplicates": d}`.
async fn post_relay(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Error> {
    if state.identity.role == Role::Cs {
        return Err(Error::WrongRole(state.identity.role.as_str()));
    }
    if state.relay.draining() {
        return Err(Error::FinalRequestInProgress);
    }
    let batch: RelayBatch = serde_json::from_slice(&body)
        .map_err(|e| Error::InvalidBody(format!("relay batch: {e}")))?;
    let identity = state.identity.clone();
    let now = state.clock.now();
    let trace_id = req
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
        .map(|t| t.trace_id)
        .unwrap_or_default();
    let sender = batch.sender.clone();
    let (first_seq, count) = (batch.items.first().map_or(0, |i| i.seq), batch.items.len());
    let started = std::time::Instant::now();
    let ack = state
        .with_write(move |conn| relay::apply_batch(conn, &identity, &batch, now))
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
    }
    Ok(HttpResponse::Ok().json(ack))
}

#[derive(Debug, serde::Deserialize)]
struct FinalRequestQuery {
    /// Overrides the configured wait, in seconds.
    #[serde(rename = "timeoutSeconds")]
    timeout_seconds: Option<u64>,
}

/// `POST /admin/v1/final-request[?timeoutSeconds=N]`: stop taking relays from below, flush the
/// outbox and answer when the upstream has confirmed the last seq (the final answer).
async fn post_final_request(
    state: web::Data<AppState>,
    query: web::Query<FinalRequestQuery>,
) -> Result<HttpResponse, Error> {
    let timeout = query
        .timeout_seconds
        .map_or(state.relay.settings.final_timeout, |s| {
            std::time::Duration::from_secs(s.min(3600))
        });
    let answer = relay::final_request(&state, timeout).await?;
    Ok(HttpResponse::Ok().json(answer))
}

/// `POST /admin/v1/resume`: take relays from below again after a final request.
async fn post_resume(state: web::Data<AppState>) -> HttpResponse {
    state.relay.set_draining(false);
    tracing::info!("resumed: relays from below are taken again");
    HttpResponse::Ok().json(json!({ "draining": false }))
}

/// `GET /admin/v1/relay`: the outbox and the relay's state.
async fn get_relay_status(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let outbox = state.with_db(relay::outbox_status).await?;
    Ok(HttpResponse::Ok().json(relay::status_json(&state, outbox)))
}

/// `GET /metrics`: Prometheus text.
async fn get_metrics(state: web::Data<AppState>) -> HttpResponse {
    if let Ok(s) = state.with_db(relay::outbox_status).await {
        state.metrics.set_outbox_depth(s.pending.max(0) as u64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

/// `GET /openapi.json`.
async fn get_openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::openapi::document())
}
