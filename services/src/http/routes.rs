//! The handlers' state ([`AppState`]), authentication, and the one route list; the handlers
//! are in `handlers/`, one file per resource.

use std::sync::Arc;

use actix_web::{HttpRequest, web};
use serde_json::Value;

use crate::domain::authz::{self, Caller};
use crate::domain::identity::Role;
use crate::domain::trace::TraceParent;
use crate::error::Error;
use crate::http::extract::traceparent;
use crate::http::handlers;
use crate::node::Node;
use crate::relay::RelayControl;
use crate::wide_area::{CsContext, WideArea};

/// Shared state of the handlers: the [`Node`] every task shares (reached through `Deref`:
/// `state.db`, `state.identity`, `state.clock`, `state.metrics`) and what only the HTTP surface
/// holds. Built by [`AppState::new`] alone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub node: Node,
    pub relay: Arc<RelayControl>,
    /// The wide-area services' state (mailbox and answer notifications, extensions file).
    pub wide: Arc<WideArea>,
    /// Mutual TLS is on: every caller is identified by its client certificate and the tree
    /// rules apply to every request. Off (plain HTTP), a request may name its identity in
    /// [`IDENTITY_HEADER`] and is then checked the same way; one without it is not checked.
    pub mtls: bool,
    /// The agency allow-list of the provision service.
    pub allow: Arc<crate::provision::AllowList>,
    /// Answers the agency queries and commits their log rows in batches (provision/desk.rs).
    pub provision_desk: crate::provision::desk::Desk,
    /// Delivered content and files (None: the delivery endpoints answer 503).
    pub deliveries: Option<Arc<crate::delivery::Deliveries>>,
}

impl std::ops::Deref for AppState {
    type Target = Node;
    fn deref(&self) -> &Node {
        &self.node
    }
}

impl std::ops::DerefMut for AppState {
    fn deref_mut(&mut self) -> &mut Node {
        &mut self.node
    }
}

/// Without TLS, the header a caller names its identity in (local demos and tests only: a node
/// reachable by anyone else must run with TLS, where the header is ignored).
pub const IDENTITY_HEADER: &str = "x-juki-identity";

/// The caller of a request and whether it may call `route` (the 401 or 403 otherwise).
pub fn authenticate(
    state: &AppState,
    req: &actix_web::dev::ServiceRequest,
    route: &str,
) -> Result<Option<Caller>, Error> {
    // Probes, scraping and the API description answer whoever asks, whatever they send.
    if authz::PUBLIC_ROUTES.contains(&route) {
        return Ok(None);
    }
    let caller = if state.mtls {
        match req.conn_data::<crate::http::tls::Peer>() {
            Some(crate::http::tls::Peer::Known(c)) => Some(c.clone()),
            Some(crate::http::tls::Peer::Unknown(cn)) => {
                return Err(Error::Unauthenticated(format!(
                    "the client certificate's CN {cn:?} is not a jukinet identity"
                )));
            }
            _ => None,
        }
    } else {
        match req.headers().get(IDENTITY_HEADER) {
            None => return Ok(None),
            Some(v) => Some(v.to_str().ok().and_then(Caller::parse).ok_or_else(|| {
                Error::Unauthenticated(format!("{IDENTITY_HEADER} {v:?} is not a jukinet identity"))
            })?),
        }
    };
    authz::decide(&state.identity, caller.as_ref(), route)?;
    Ok(caller)
}

impl AppState {
    /// The guard of the routes a CS does not serve (relay from below, agency, disclosure).
    pub(crate) fn not_at_cs(&self) -> Result<(), Error> {
        match self.identity.role {
            Role::Cs => Err(Error::WrongRole(Role::Cs.as_str())),
            _ => Ok(()),
        }
    }

    /// Logs a refused agency query in the provision log before the answer, and counts it.
    pub(crate) async fn log_agency_refusal(
        &self,
        who: &str,
        detail: &str,
        answer: Result<Value, Error>,
    ) -> Result<Result<Value, Error>, Error> {
        let row = crate::provision::refusal_row(who, detail, self.clock.now());
        let logged = self.provision_desk.log(row, answer).await?;
        self.metrics.provision("refused");
        Ok(logged)
    }

    pub(crate) fn own_municipality(&self) -> Result<&str, Error> {
        match (self.identity.role, &self.identity.municipality) {
            (Role::Cs, Some(m)) => Ok(m),
            (role, _) => Err(Error::WrongRole(role.as_str())),
        }
    }

    /// The state of `node`: no upstream (relay disabled), no TLS, an empty allow-list, no
    /// delivery directory, and the
    /// provision desk started on the node's database. The server ([`crate::cli::app`]) and the
    /// tests set the rest from here.
    pub fn new(node: Node) -> Self {
        AppState {
            provision_desk: crate::provision::desk::Desk::start(&node.db),
            node,
            relay: Arc::new(RelayControl::default()),
            wide: Arc::default(),
            mtls: false,
            allow: Arc::default(),
            deliveries: None,
        }
    }
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::PathConfig::default()
            .error_handler(|e, _| Error::InvalidBody(format!("path: {e}")).into()),
    )
    .route("/healthz", web::get().to(handlers::probes::healthz))
    .route("/readyz", web::get().to(handlers::probes::readyz))
    .route(
        "/v1/updates",
        web::post().to(handlers::residents::post_updates),
    )
    .route(
        "/v1/residents/{code}",
        web::get().to(handlers::residents::get_resident),
    )
    .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
    .route(
        "/v1/residents/{code}/history",
        web::get().to(handlers::residents::get_history),
    )
    .route("/v1/relay", web::post().to(handlers::relay::post_relay))
    .route(
        "/admin/v1/final-request",
        web::post().to(handlers::relay::post_final_request),
    )
    .route(
        "/admin/v1/resume",
        web::post().to(handlers::relay::post_resume),
    )
    .route(
        "/admin/v1/relay",
        web::get().to(handlers::relay::get_relay_status),
    )
    .route(
        "/v1/transfers",
        web::post().to(handlers::wide_area::post_transfer),
    )
    .route(
        "/v1/transfers/{id}",
        web::get().to(handlers::wide_area::get_transfer),
    )
    .route(
        "/v1/transfers/{id}/cancel",
        web::post().to(handlers::wide_area::post_cancel),
    )
    .route(
        "/v1/move-ins",
        web::post().to(handlers::wide_area::post_move_in),
    )
    .route(
        "/v1/issuances",
        web::post().to(handlers::wide_area::post_issuance),
    )
    .route(
        "/v1/issuances/{id}",
        web::get().to(handlers::wide_area::get_issuance),
    )
    .route(
        "/v1/mailbox",
        web::get().to(handlers::wide_area::get_mailbox),
    )
    .route(
        "/v1/agency/queries",
        web::post().to(handlers::provision::post_agency_query),
    )
    .route(
        "/v1/disclosures",
        web::post().to(handlers::provision::post_disclosure),
    )
    .route(
        "/v1/deliveries/content/{sha256}",
        web::get().to(handlers::deliveries::get_content),
    )
    .route(
        "/admin/v1/deliveries/content/{sha256}",
        web::put().to(handlers::deliveries::put_content),
    )
    .route(
        "/admin/v1/deliveries/fetch",
        web::post().to(handlers::deliveries::post_fetch),
    )
    .route(
        "/admin/v1/deliveries",
        web::get().to(handlers::deliveries::get_deliveries),
    )
    .route(
        "/admin/v1/deliveries/files/{file}/rollback",
        web::post().to(handlers::deliveries::post_rollback),
    )
    .route(
        "/admin/v1/deliveries/files/{file}/withdraw",
        web::post().to(handlers::deliveries::post_withdraw),
    )
    .app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| Error::InvalidBody(format!("query: {e}")).into()),
    )
    .route("/metrics", web::get().to(handlers::probes::get_metrics))
    .route(
        "/openapi.json",
        web::get().to(handlers::probes::get_openapi),
    )
    .default_service(web::to(handlers::probes::no_route));
}

/// Largest accepted request body (a batch of a few thousand updates).
pub const MAX_BODY_BYTES: usize = 8 << 20;

impl AppState {
    /// What the wide-area transactions need (the extensions file is read when asked for).
    pub(crate) fn cs_context(&self, with_extensions: bool) -> Result<CsContext, Error> {
        self.own_municipality()?;
        Ok(self
            .wide
            .context(&self.node, self.relay.calendar.current(), with_extensions))
    }

    /// [`AppState::cs_context`] inside the request's trace (`traceparent`), or a new one.
    pub(crate) fn traced_context(
        &self,
        http: &HttpRequest,
        with_extensions: bool,
    ) -> Result<CsContext, Error> {
        let mut ctx = self.cs_context(with_extensions)?;
        ctx.trace = Some(traceparent(http).unwrap_or_else(TraceParent::root));
        Ok(ctx)
    }

    /// The window-service hours of the calendar (no calendar: always open).
    pub(crate) fn in_window_service(&self, now: jiff::Timestamp) -> bool {
        self.relay
            .calendar
            .current()
            .is_none_or(|c| c.in_window_service(now))
    }
}
