//! Probes, metrics, the API description and the answer to an unknown route.

use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde_json::json;

use crate::error::Error;
use crate::http::routes::AppState;
use crate::relay::{self};
use crate::store;

pub(crate) async fn no_route(req: HttpRequest) -> HttpResponse {
    Error::NoRoute(format!("{} {}", req.method(), req.path())).error_response()
}

pub(crate) async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

pub(crate) async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, Error> {
    state
        .db
        .read(store::check_ready)
        .await
        .map_err(|e| match e {
            e @ Error::NotReady(_) => e,
            other => Error::NotReady(other.to_string()),
        })?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}

/// `GET /metrics`: Prometheus text.
pub(crate) async fn get_metrics(state: web::Data<AppState>) -> HttpResponse {
    if let Ok(s) = state.db.read(relay::outbox_status).await {
        state.metrics.set_outbox_depth(s.pending.max(0) as u64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

/// `GET /openapi.json`.
pub(crate) async fn get_openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::http::openapi::document())
}
