//! Provision to agencies and disclosure to residents (national or prefectural server).

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::Value;

use crate::domain::authz::Caller;
use crate::error::Error;
use crate::http::extract::{caller_of, json_body};
use crate::http::routes::AppState;

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
pub(crate) async fn post_agency_query(
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
pub(crate) async fn post_disclosure(
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
    let answer = state
        .db
        .write(move |conn| crate::provision::disclose(conn, &node, &m, &code, now))
        .await?;
    state.metrics.provision("disclosed");
    Ok(HttpResponse::Ok().json(answer))
}
