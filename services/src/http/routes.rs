//! HTTP routes (the one routes file): handlers by resource.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::http::header::HeaderMap;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, ResponseError, web};
use serde_json::{Value, json};

use crate::domain::Context;
use crate::domain::authz::{self, Caller};
use crate::domain::identity::Role;
use crate::domain::trace::TraceParent;
use crate::error::Error;
use crate::node::Node;
use crate::relay::{self, RelayBatch, RelayControl};
use crate::store;
use crate::updates::{self, Submission};
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

/// The authenticated caller of a request, if any.
fn caller_of(req: &HttpRequest) -> Option<Caller> {
    req.extensions().get::<Caller>().cloned()
}

/// The request's W3C `traceparent`, if it sent a valid one.
fn traceparent(req: &HttpRequest) -> Option<TraceParent> {
    req.headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
}

/// `body` with `status`, marked `Idempotent-Replayed: true` when it answers a retried request.
fn answer<T: serde::Serialize + ?Sized>(status: u16, body: &T, replayed: bool) -> HttpResponse {
    let mut response = HttpResponse::build(StatusCode::from_u16(status).unwrap_or(StatusCode::OK));
    if replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    response.json(body)
}

/// A long poll: reads until `done` holds or `wait` has passed, waking on `notify` between the
/// reads (at most every `step`). The notification is armed before each read, so a change that
/// lands during the read is not missed.
async fn long_poll<T, F, Fut>(
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

impl AppState {
    /// The guard of the routes a CS does not serve (relay from below, agency, disclosure).
    fn not_at_cs(&self) -> Result<(), Error> {
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

    fn own_municipality(&self) -> Result<&str, Error> {
        match (self.identity.role, &self.identity.municipality) {
            (Role::Cs, Some(m)) => Ok(m),
            (role, _) => Err(Error::WrongRole(role.as_str())),
        }
    }

    /// The state of `node`: no upstream (relay disabled), no TLS, an empty allow-list, and the
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
        }
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
    .route("/v1/transfers", web::post().to(post_transfer))
    .route("/v1/transfers/{id}", web::get().to(get_transfer))
    .route("/v1/transfers/{id}/cancel", web::post().to(post_cancel))
    .route("/v1/move-ins", web::post().to(post_move_in))
    .route("/v1/issuances", web::post().to(post_issuance))
    .route("/v1/issuances/{id}", web::get().to(get_issuance))
    .route("/v1/mailbox", web::get().to(get_mailbox))
    .route("/v1/agency/queries", web::post().to(post_agency_query))
    .route("/v1/disclosures", web::post().to(post_disclosure))
    .app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| Error::InvalidBody(format!("query: {e}")).into()),
    )
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
        .db
        .read(store::check_ready)
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
    let trace = traceparent(&req);
    let outcome = state
        .db
        .write(move |conn| {
            updates::submit_traced(conn, &ctx, &sender, &key, &submission, now, trace.as_ref())
        })
        .await?;
    if !outcome.replayed {
        let n = outcome.body["results"]
            .as_array()
            .map_or(1, |r| r.len() as u64);
        state.metrics.updates("accepted", n);
        state.relay.wake();
    }
    Ok(answer(outcome.status, &outcome.body, outcome.replayed))
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
        .db
        .read(move |conn| store::resident(conn, &municipality, &code))
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
        .db
        .read(move |conn| store::history(conn, &municipality, &lookup))
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
    let answer = relay::final_request(&state.node, &state.relay, timeout).await?;
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
    let outbox = state.db.read(relay::outbox_status).await?;
    let undelivered = state.db.read(crate::relay::mailbox::undelivered).await?;
    let mut status = relay::status_json(&state.node, &state.relay, outbox);
    // Messages kept here for the nodes below that they have not acknowledged yet.
    status["mailbox"] = json!({ "undelivered": undelivered });
    Ok(HttpResponse::Ok().json(status))
}

/// `GET /metrics`: Prometheus text.
async fn get_metrics(state: web::Data<AppState>) -> HttpResponse {
    if let Ok(s) = state.db.read(relay::outbox_status).await {
        state.metrics.set_outbox_depth(s.pending.max(0) as u64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

/// `GET /openapi.json`.
async fn get_openapi() -> HttpResponse {
    HttpResponse::Ok().json(crate::http::openapi::document())
}

// ---------------------------------------------------------------------------------------------
// Wide-area services (transfer.rs, issuance.rs, mailbox.rs)

impl AppState {
    /// What the wide-area transactions need (the extensions file is read when asked for).
    fn cs_context(&self, with_extensions: bool) -> Result<CsContext, Error> {
        self.own_municipality()?;
        Ok(self
            .wide
            .context(&self.node, self.relay.calendar.clone(), with_extensions))
    }

    /// [`AppState::cs_context`] inside the request's trace (`traceparent`), or a new one.
    fn traced_context(
        &self,
        http: &HttpRequest,
        with_extensions: bool,
    ) -> Result<CsContext, Error> {
        let mut ctx = self.cs_context(with_extensions)?;
        ctx.trace = Some(traceparent(http).unwrap_or_else(TraceParent::root));
        Ok(ctx)
    }

    /// The window-service hours of the calendar (no calendar: always open).
    fn in_window_service(&self, now: jiff::Timestamp) -> bool {
        self.relay
            .calendar
            .as_ref()
            .is_none_or(|c| c.in_window_service(now))
    }
}

fn json_body(body: &[u8]) -> Result<Value, Error> {
    serde_json::from_slice(body).map_err(|e| Error::InvalidBody(format!("invalid JSON: {e}")))
}

fn outside_window_service() -> Error {
    Error::StateConflict {
        rule: "outside_window_service",
        field: None,
        message: "wide-area services are taken only inside the window-service hours".into(),
    }
}

/// 201 with `view`, or 200 and `Idempotent-Replayed` when a retry found it done already.
fn created_or_replayed<T: serde::Serialize>(view: &T, replayed: bool) -> HttpResponse {
    answer(if replayed { 200 } else { 201 }, view, replayed)
}

/// Ids of transfers and issuances: `<municipality>-T<n>` / `<municipality>-I<n>`.
fn checked_id(id: &str) -> Result<(), Error> {
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

/// `POST /v1/transfers`: a card holder files a move-out here (the source).
async fn post_transfer(
    state: web::Data<AppState>,
    http: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Error> {
    let ctx = state.traced_context(&http, false)?;
    let own = state.own_municipality()?.to_owned();
    let req =
        crate::wide_area::transfer::parse_move_out(&json_body(&body)?, &own, state.clock.today())?;
    if !state.in_window_service(ctx.now) {
        return Err(outside_window_service());
    }
    let (view, replayed) = state
        .db
        .write(move |conn| crate::wide_area::transfer::move_out(conn, &ctx, &req))
        .await?;
    if !replayed {
        state.relay.wake();
        state.metrics.wide_area("move_out_filed", 1);
    }
    Ok(created_or_replayed(&view, replayed))
}

/// `GET /v1/transfers/{id}`: the transfer's state at this end.
async fn get_transfer(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    state.own_municipality()?;
    let id = path.into_inner();
    checked_id(&id)?;
    let view = state
        .db
        .read(move |conn| crate::wide_area::transfer::get(conn, &id))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// `POST /v1/transfers/{id}/cancel`: 転出取消 at the source before the move-in.
async fn post_cancel(
    state: web::Data<AppState>,
    http: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    let ctx = state.traced_context(&http, false)?;
    let id = path.into_inner();
    checked_id(&id)?;
    let (view, replayed) = state
        .db
        .write(move |conn| crate::wide_area::transfer::cancel(conn, &ctx, &id))
        .await?;
    if !replayed {
        state.relay.wake();
        state.metrics.wide_area("move_out_cancelled", 1);
    }
    Ok(answer(200, &view, replayed))
}

/// `POST /v1/move-ins`: the person moves in here (the destination) with card and PIN.
async fn post_move_in(
    state: web::Data<AppState>,
    http: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Error> {
    let ctx = state.traced_context(&http, false)?;
    let req = crate::wide_area::transfer::parse_move_in(&json_body(&body)?, state.clock.today())?;
    if !state.in_window_service(ctx.now) {
        return Err(outside_window_service());
    }
    let result = state
        .db
        .write(move |conn| crate::wide_area::transfer::move_in(conn, &ctx, &req))
        .await?;
    match result {
        crate::wide_area::transfer::MoveInResult::Done(view, replayed) => {
            if !replayed {
                state.relay.wake();
                state.metrics.wide_area("moved_in", 1);
            }
            Ok(created_or_replayed(&*view, replayed))
        }
        crate::wide_area::transfer::MoveInResult::Refused(e) => Err(e),
    }
}

#[derive(Debug, serde::Deserialize)]
struct WaitQuery {
    /// Seconds to wait for the home CS's answer (default 10, at most 60).
    wait: Option<u64>,
}

/// `POST /v1/issuances`: a wide-area issuance requested here (the issuing CS); waits up to
/// `wait` seconds for the home CS's answer.
async fn post_issuance(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<WaitQuery>,
    body: web::Bytes,
) -> Result<HttpResponse, Error> {
    let ctx = state.traced_context(&req, true)?;
    let own = state.own_municipality()?.to_owned();
    let key = idempotency_key(req.headers())?;
    let request = crate::wide_area::issuance::parse_request(&json_body(&body)?, &own)?;
    let open = crate::wide_area::issuance::service_open(
        ctx.calendar.as_ref(),
        &ctx.extensions,
        &ctx.own_names,
        &request.home_municipality,
        ctx.now,
    );
    let outcome = state
        .db
        .write(move |conn| crate::wide_area::issuance::request(conn, &ctx, &key, &request, open))
        .await?;
    let (mut view, replayed) = match outcome {
        crate::wide_area::issuance::Requested::Closed => return Err(outside_window_service()),
        crate::wide_area::issuance::Requested::Sent(view, replayed) => (*view, replayed),
    };
    if !replayed {
        state.relay.wake();
        state.metrics.wide_area("issuance_requested", 1);
    }
    if view.state == crate::wide_area::issuance::REQUESTED {
        let wait = Duration::from_secs(query.wait.unwrap_or(10).min(60));
        let answered = |v: &crate::wide_area::issuance::IssuanceView| {
            v.state != crate::wide_area::issuance::REQUESTED
        };
        let id = view.issuance_id.clone();
        view = long_poll(
            &state.wide.answers,
            wait,
            Duration::from_millis(500),
            answered,
            || {
                let id = id.clone();
                state
                    .db
                    .read(move |conn| crate::wide_area::issuance::get(conn, &id))
            },
        )
        .await?;
    }
    let (status, body) = crate::wide_area::issuance::http_answer(&view);
    Ok(answer(status, &body, replayed))
}

/// `GET /v1/issuances/{id}`: the issuance at this end (issuing or home).
async fn get_issuance(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, Error> {
    state.own_municipality()?;
    let id = path.into_inner();
    checked_id(&id)?;
    let view = state
        .db
        .read(move |conn| crate::wide_area::issuance::get(conn, &id))
        .await?;
    Ok(HttpResponse::Ok().json(view))
}

#[derive(Debug, serde::Deserialize)]
struct MailboxQuery {
    recipient: String,
    after: Option<i64>,
    wait: Option<u64>,
}

/// `GET /v1/mailbox?recipient=<child>&after=<cursor>&wait=<s>`: a child's messages after its
/// cursor (which acknowledges the earlier ones); a long poll of up to `wait` seconds.
async fn get_mailbox(
    state: web::Data<AppState>,
    req: HttpRequest,
    query: web::Query<MailboxQuery>,
) -> Result<HttpResponse, Error> {
    let MailboxQuery {
        recipient,
        after,
        wait,
    } = query.into_inner();
    crate::relay::mailbox::check_recipient(&state.identity, &recipient)?;
    if let Some(caller) = caller_of(&req) {
        authz::check_mailbox(&caller, &recipient)?;
    }
    let after = after.unwrap_or(0);
    if after < 0 {
        return Err(Error::InvalidField {
            field: "after",
            rule: "negative",
            message: "after is a mailbox id, 0 or more".into(),
        });
    }
    if after > 0 {
        let (who, now) = (recipient.clone(), state.clock.now());
        state
            .db
            .write(move |conn| crate::relay::mailbox::acknowledge(conn, &who, after, now))
            .await?;
    }
    let wait = Duration::from_secs(wait.unwrap_or(0).min(crate::relay::mailbox::MAX_WAIT_SECS));
    let messages = long_poll(
        &state.wide.mailbox,
        wait,
        wait,
        |m: &Vec<Value>| !m.is_empty(),
        || {
            let who = recipient.clone();
            state
                .db
                .read(move |conn| crate::relay::mailbox::pending_for(conn, &who, after, 500))
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(json!({ "messages": messages })))
}

// ---------------------------------------------------------------------------------------------
// Provision to agencies and disclosure (provision.rs)

/// The outcome a provision-log entry records for a finished query.
fn provision_outcome(result: &Result<Value, Error>) -> &'static str {
    match result {
        Ok(_) => "provided",
        Err(Error::NotFound(_)) => "not_found",
        Err(Error::Forbidden { .. } | Error::StateConflict { .. }) => "refused",
        Err(_) => "failed",
    }
}

/// `POST /v1/agency/queries`: an agency's identity query (national or prefectural server).
async fn post_agency_query(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Error> {
    state.not_at_cs()?;
    let Some(Caller::Agency(agency)) = caller_of(&req) else {
        // Only an open node (no TLS) gets here without an identity; refused and logged.
        let refusal = Err(Error::Unauthenticated(
            "agency queries need an agency certificate (CN agency-<name>)".into(),
        ));
        let refused = state
            .log_agency_refusal("anonymous", "unauthenticated", refusal)
            .await?;
        return refused.map(|v| HttpResponse::Ok().json(v));
    };
    let query = crate::provision::parse_query(&json_body(&body)?)?;
    let scope = crate::provision::desk::Scope {
        node: state.identity.clone(),
        allow: state.allow.clone(),
    };
    let asked = crate::provision::Asked {
        agency: agency.clone(),
        query,
        at: state.clock.now(),
    };
    // The answer comes back only once its log row is committed.
    let result = state.provision_desk.ask(scope, asked).await?;
    let outcome = provision_outcome(&result);
    state.metrics.provision(outcome);
    tracing::debug!(agency = %agency, outcome, "agency query");
    Ok(HttpResponse::Ok().json(result?))
}

/// `POST /v1/disclosures` `{"resident_code"}`: 開示 of a resident's record and of the
/// provisions about them, asked at a municipality's counter.
async fn post_disclosure(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Error> {
    state.not_at_cs()?;
    let Some(Caller::Municipality(m)) = caller_of(&req) else {
        return Err(Error::Unauthenticated(
            "disclosures are asked by a municipality (CN muni-<code>)".into(),
        ));
    };
    let code = crate::provision::parse_disclosure(&json_body(&body)?)?;
    let (node, now) = (state.identity.clone(), state.clock.now());
    let requester = format!("resident via muni-{m}");
    let answer = state
        .db
        .write(move |conn| crate::provision::disclose(conn, &node, &requester, &code, now))
        .await?;
    state.metrics.provision("disclosed");
    Ok(HttpResponse::Ok().json(answer))
}
