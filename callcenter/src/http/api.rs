//! The JSON API handlers: each reads its input, calls one use case and shapes the answer.

use actix_web::{HttpRequest, HttpResponse, web};
use futures::StreamExt as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::AppState;
use super::auth::Authed;
use crate::domain::alert::Webhook;
use crate::domain::ticket::{StateInput, TicketInput};
use crate::error::Error;
use crate::service::ListRequest;

/// The largest accepted request body (a ticket is at most ~100 KB of text; an alert
/// notification of 1,000 alerts fits).
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Reads a JSON body of at most [`MAX_BODY_BYTES`] (413 beyond, 400 for anything not JSON of
/// the expected shape, invalid UTF-8 included). The Content-Type must be application/json: a
/// cross-site HTML form cannot send that without a CORS preflight, so a browser holding a
/// client certificate cannot be made to post tickets from another site.
pub async fn json_body<T: DeserializeOwned>(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<T, Error> {
    let json = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(Error::InvalidBody(
            "Content-Type must be application/json".into(),
        ));
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| Error::InvalidBody(e.to_string()))?;
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(Error::TooLarge(MAX_BODY_BYTES));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| Error::InvalidBody(e.to_string()))
}

pub async fn no_route(req: HttpRequest) -> HttpResponse {
    actix_web::ResponseError::error_response(&Error::NotFound(format!(
        "route {} {}",
        req.method(),
        req.path()
    )))
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    let counts = state.cc.db.read(crate::store::tickets::counts).await?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "ready",
        "tickets": counts.0,
        "indexed": state.cc.index.len(),
    })))
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.cc.metrics.render())
}

pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(super::openapi::document())
}

/// `POST /v1/tickets` → 201 `{"id", ...ticket}`.
pub async fn file(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, Error> {
    let input: TicketInput = json_body(&req, body).await?;
    let t = state.cc.file(&caller, input).await?;
    Ok(HttpResponse::Created()
        .insert_header(("Location", format!("/v1/tickets/{}", t.id)))
        .json(t))
}

fn ticket_id(raw: &str) -> Result<i64, Error> {
    raw.parse::<i64>().ok().filter(|id| *id > 0).ok_or_else(|| {
        Error::NotFound(format!(
            "ticket {:?}",
            raw.chars().take(40).collect::<String>()
        ))
    })
}

pub async fn get(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let detail = state.cc.detail(&caller, ticket_id(&id)?).await?;
    Ok(HttpResponse::Ok().json(detail))
}

/// `GET /v1/tickets/{id}/context`: the ticket's nodes from the Kubernetes API.
pub async fn context(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let (ticket, nodes) = state.cc.context(&caller, ticket_id(&id)?).await?;
    Ok(HttpResponse::Ok()
        .json(json!({ "ticket_id": ticket.id, "created_at": ticket.created_at, "nodes": nodes })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub org: Option<String>,
    pub state: Option<String>,
    pub kind: Option<String>,
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

pub async fn list(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, Error> {
    let q = q.into_inner();
    let tickets = state
        .cc
        .list(
            &caller,
            ListRequest {
                org: q.org,
                state: q.state,
                kind: q.kind,
                before: q.before,
                limit: q.limit,
            },
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "tickets": tickets })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerInput {
    pub answer: String,
}

pub async fn answer(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, Error> {
    let id = ticket_id(&id)?;
    let input: AnswerInput = json_body(&req, body).await?;
    let t = state.cc.answer(&caller, id, &input.answer).await?;
    Ok(HttpResponse::Ok().json(t))
}

pub async fn state(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    id: web::Path<String>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, Error> {
    let id = ticket_id(&id)?;
    let input: StateInput = json_body(&req, body).await?;
    let t = state.cc.set_state(&caller, id, input).await?;
    Ok(HttpResponse::Ok().json(t))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    pub q: String,
    pub limit: Option<usize>,
}

pub async fn search(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    q: web::Query<SearchParams>,
) -> Result<HttpResponse, Error> {
    let hits = state.cc.search(&caller, &q.q, q.limit).await?;
    Ok(HttpResponse::Ok().json(json!({ "results": hits })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuggestParams {
    pub text: String,
    pub limit: Option<usize>,
    pub exclude: Option<i64>,
}

pub async fn suggestions(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    q: web::Query<SuggestParams>,
) -> Result<HttpResponse, Error> {
    let hits = state
        .cc
        .suggest(&caller, &q.text, q.limit, q.exclude)
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "results": hits })))
}

pub async fn alerts(
    state: web::Data<AppState>,
    Authed(caller): Authed,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, Error> {
    let hook: Webhook = json_body(&req, body).await?;
    let outcome = state.cc.alerts(&caller, hook).await?;
    Ok(HttpResponse::Ok().json(outcome))
}
