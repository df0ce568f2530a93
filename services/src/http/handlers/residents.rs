//! `POST /v1/updates` and the residents' records and history (a CS).

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

use crate::domain::Context;
use crate::error::Error;
use crate::http::extract::{answer, idempotency_key, traceparent};
use crate::http::routes::AppState;
use crate::store;
use crate::updates::{self, Submission};

/// `POST /v1/updates`: one update object or an array (all-or-nothing), with `Idempotency-Key`.
pub(crate) async fn post_updates(
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
pub(crate) async fn get_resident(
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
pub(crate) async fn get_history(
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
