//! The wide-area services at a CS (transfers, move-ins, issuances) and the mailbox its
//! children pull their messages from.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::domain::authz::{self};
use crate::error::Error;
use crate::http::extract::{
    answer, caller_of, checked_id, created_or_replayed, idempotency_key, json_body, long_poll,
};
use crate::http::routes::AppState;

fn outside_window_service() -> Error {
    Error::StateConflict {
        rule: "outside_window_service",
        field: None,
        message: "wide-area services are taken only inside the window-service hours".into(),
    }
}

/// `POST /v1/transfers`: a card holder files a move-out here (the source).
pub(crate) async fn post_transfer(
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
pub(crate) async fn get_transfer(
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
pub(crate) async fn post_cancel(
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
pub(crate) async fn post_move_in(
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
pub(crate) struct WaitQuery {
    /// Seconds to wait for the home CS's answer (default 10, at most 60).
    wait: Option<u64>,
}

/// `POST /v1/issuances`: a wide-area issuance requested here (the issuing CS); waits up to
/// `wait` seconds for the home CS's answer.
pub(crate) async fn post_issuance(
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
pub(crate) async fn get_issuance(
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
pub(crate) struct MailboxQuery {
    recipient: String,
    after: Option<i64>,
    wait: Option<u64>,
}

/// `GET /v1/mailbox?recipient=<child>&after=<cursor>&wait=<s>`: a child's messages after its
/// cursor (which acknowledges the earlier ones); a long poll of up to `wait` seconds.
pub(crate) async fn get_mailbox(
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
