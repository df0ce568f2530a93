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
use crate::store::{self, Submission};

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: Pool,
    pub identity: NodeIdentity,
    pub clock: Arc<dyn Clock>,
}

impl AppState {
    fn own_municipality(&self) -> Result<&str, Error> {
        match (self.identity.role, &self.identity.municipality) {
            (Role::Cs, Some(m)) => Ok(m),
            (role, _) => Err(Error::WrongRole(role.as_str())),
        }
    }

    /// Runs `f` with a pooled connection on the blocking thread pool.
    async fn with_db<T, F>(&self, f: F) -> Result<T, Error>
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
    let outcome = state
        .with_db(move |conn| store::submit(conn, &ctx, &sender, &key, &submission, now))
        .await?;
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
