//! How an [`Error`] becomes an HTTP answer: its status, and its JSON body ([`Error::body`])
//! with internals hidden; a 5xx is logged here.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::error::Error;

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::InvalidField { .. } | Error::IdempotencyKeyReused(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Error::ForeignMunicipality { .. } | Error::WrongRole(_) | Error::Forbidden { .. } => {
                StatusCode::FORBIDDEN
            }
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::StateConflict { .. } => StatusCode::CONFLICT,
            Error::InvalidBody(_) | Error::MissingIdempotencyKey => StatusCode::BAD_REQUEST,
            Error::NotFound(_) | Error::NoRoute(_) => StatusCode::NOT_FOUND,
            Error::InBatch { source, .. } => source.status_code(),
            Error::Pool(_) | Error::NotReady(_) | Error::FinalRequestInProgress => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Database(_)
            | Error::Migration(_)
            | Error::Config(_)
            | Error::Blocking(_)
            | Error::Corrupt(_)
            | Error::Batch(_)
            | Error::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Error::ContentNotFound(_) => StatusCode::NOT_FOUND,
            Error::DigestMismatch { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::Fetch { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if self.status_code().is_server_error() {
            tracing::error!(
                status = self.status_code().as_u16(),
                error = self.tag(),
                "request failed: {self}"
            );
        }
        HttpResponse::build(self.status_code()).json(self.body())
    }
}
