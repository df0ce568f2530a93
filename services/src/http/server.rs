//! The actix application and server: the routes behind authentication and the tree rules
//! (`domain/authz.rs`), per request a metric and a debug log line, and the TLS peer of each
//! connection.

use std::net::SocketAddr;

use actix_web::dev::Service as _;
use actix_web::{App, HttpServer, web};

use crate::http::routes::{self, AppState};
use crate::http::tls::TlsFiles;

/// Binds the server of `state` on `listen`, with mutual TLS when `tls` is given. The returned
/// function starts it (its workers log as they start); the server runs while awaited.
pub fn bind(
    state: &AppState,
    listen: SocketAddr,
    tls: Option<&TlsFiles>,
) -> anyhow::Result<impl FnOnce() -> actix_web::dev::Server> {
    let server = HttpServer::new({
        let data = web::Data::new(state.clone());
        move || app(data.clone())
    });
    let server = match tls {
        Some(files) => server
            .on_connect(remember_peer)
            .bind_rustls_0_23(listen, files.server_config()?)?,
        None => {
            tracing::warn!(
                "no TLS files: serving plain HTTP without authentication (local use only)"
            );
            server.bind(listen)?
        }
    };
    Ok(move || server.run())
}

/// Keeps what the TLS handshake learnt about the client for the requests of the connection.
fn remember_peer(conn: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    if let Some(tls) = conn.downcast_ref::<Tls>() {
        let (_, session) = tls.get_ref();
        data.insert(crate::http::tls::Peer::of(session.peer_certificates()));
    }
}

/// The application: routes behind authentication and the tree rules (authz.rs), plus per
/// request a metric and a debug log line.
pub fn app(
    data: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<actix_web::body::BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = data.metrics.clone();
    App::new()
        .app_data(data)
        .wrap_fn(move |req, srv| {
            let metrics = metrics.clone();
            let method = req.method().to_string();
            let route = req
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_owned());
            let started = std::time::Instant::now();
            let state = req.app_data::<web::Data<AppState>>().cloned();
            let checked = state
                .as_ref()
                .map_or(Ok(None), |s| routes::authenticate(s, &req, &route));
            // A refusal at the agency endpoint goes into the provision log before the answer.
            let mut log_refusal = None;
            let (response, refused) = match checked {
                Ok(caller) => {
                    if let Some(caller) = caller {
                        actix_web::HttpMessage::extensions_mut(&req).insert(caller);
                    }
                    (Some(srv.call(req)), None)
                }
                Err(e) => {
                    let status = actix_web::ResponseError::status_code(&e).as_u16();
                    let who = refused_identity(&req, state.as_ref().map(|s| s.get_ref()));
                    tracing::warn!(
                        method = %method,
                        route = %route,
                        caller = %who,
                        status,
                        error = e.tag(),
                        "request refused: {e}"
                    );
                    metrics.auth_refused(status, &route);
                    if route == "/v1/agency/queries" {
                        log_refusal = state.clone().map(|s| (s, who, e.tag()));
                    }
                    let response = actix_web::ResponseError::error_response(&e);
                    (None, Some(req.into_response(response)))
                }
            };
            async move {
                if let Some((state, who, detail)) = log_refusal {
                    // Logged like any refusal; the answer is the refusal below.
                    let _logged = state
                        .log_agency_refusal(&who, detail, Ok(serde_json::Value::Null))
                        .await
                        .map_err(actix_web::Error::from)?;
                }
                let response = match (response, refused) {
                    (Some(call), _) => call.await?,
                    (None, Some(refused)) => refused,
                    (None, None) => unreachable!("a request is either served or refused"),
                };
                let status = response.status().as_u16();
                metrics.request(&method, &route, status);
                tracing::debug!(
                    method = %method,
                    route = %route,
                    status,
                    duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "request"
                );
                Ok(response)
            }
        })
        .configure(routes::configure)
}

/// The identity a refused request came with, for the log line and the provision log.
fn refused_identity(req: &actix_web::dev::ServiceRequest, state: Option<&AppState>) -> String {
    let from_tls = state.is_some_and(|s| s.mtls);
    if from_tls {
        match req.conn_data::<crate::http::tls::Peer>() {
            Some(crate::http::tls::Peer::Known(c)) => c.name(),
            Some(crate::http::tls::Peer::Unknown(cn)) => format!("unknown CN {cn:?}"),
            _ => "anonymous".into(),
        }
    } else {
        req.headers()
            .get(routes::IDENTITY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| "anonymous".into(), |v| v.chars().take(128).collect())
    }
}
