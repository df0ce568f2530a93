//! HTTP (the only actix code): the route list, the authentication middleware, the JSON API
//! handlers (`api`), the web UI (`ui`) and the API description (`openapi`).

pub mod api;
pub mod auth;
pub mod error;
pub mod openapi;
pub mod ui;

use actix_web::body::BoxBody;
use actix_web::dev::{Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::{App, HttpMessage, ResponseError, web};

use crate::service::CallCenter;
use auth::AuthMode;

/// The handlers' state.
#[derive(Debug, Clone)]
pub struct AppState {
    pub cc: CallCenter,
    pub auth: AuthMode,
}

/// Routes anyone may call, authenticated or not.
pub const PUBLIC_ROUTES: &[&str] = &[
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/ui/login",
    "/ui/style.css",
];

/// Registers every route (the one list; `openapi` is tested against it).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::PathConfig::default()
            .error_handler(|e, _| crate::Error::InvalidBody(format!("path: {e}")).into()),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| crate::Error::InvalidBody(format!("query: {e}")).into()),
    )
    .app_data(
        web::FormConfig::default()
            .limit(api::MAX_BODY_BYTES)
            .error_handler(|e, _| crate::Error::InvalidBody(format!("form: {e}")).into()),
    )
    .route("/healthz", web::get().to(api::healthz))
    .route("/readyz", web::get().to(api::readyz))
    .route("/metrics", web::get().to(api::metrics))
    .route("/openapi.json", web::get().to(api::openapi))
    .route("/v1/tickets", web::post().to(api::file))
    .route("/v1/tickets", web::get().to(api::list))
    .route("/v1/tickets/{id}", web::get().to(api::get))
    .route("/v1/tickets/{id}/answer", web::post().to(api::answer))
    .route("/v1/tickets/{id}/state", web::post().to(api::state))
    .route("/v1/tickets/{id}/context", web::get().to(api::context))
    .route("/v1/search", web::get().to(api::search))
    .route("/v1/suggestions", web::get().to(api::suggestions))
    .route("/v1/alerts", web::post().to(api::alerts))
    .configure(ui::configure)
    .default_service(web::to(api::no_route));
}

/// The application: authentication before every non-public route, a metric and a log line per
/// request, and a warning with the caller for every 401 and 403.
pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = state.cc.metrics.clone();
    let mode = state.auth.clone();
    App::new()
        .app_data(web::Data::new(state))
        .wrap_fn(move |req, srv| {
            let metrics = metrics.clone();
            let method = req.method().to_string();
            let route = req
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_owned());
            let public = PUBLIC_ROUTES.contains(&route.as_str()) || route == "unmatched";
            let (who, call) = if public {
                ("anonymous".to_owned(), Ok(srv.call(req)))
            } else {
                match auth::authenticate(&mode, &req) {
                    Ok(caller) => {
                        let who = caller.name();
                        req.extensions_mut().insert(caller);
                        (who, Ok(srv.call(req)))
                    }
                    Err(e) => {
                        let response =
                            ui::unauthenticated(&req, &e).unwrap_or_else(|| e.error_response());
                        (
                            "anonymous".to_owned(),
                            Err((req.into_response(response), e)),
                        )
                    }
                }
            };
            async move {
                let (response, refusal) = match call {
                    Ok(fut) => (fut.await?, None),
                    Err((response, e)) => (response, Some(e.to_string())),
                };
                let status = response.status().as_u16();
                metrics.request(&method, &route, status);
                if status == 401 || status == 403 {
                    metrics.refused(status, &route);
                    tracing::warn!(
                        method = %method,
                        route = %route,
                        caller = %who,
                        status,
                        reason = refusal.as_deref().unwrap_or(""),
                        "request refused"
                    );
                }
                Ok(response)
            }
        })
        .configure(configure)
}
