//! The one place the crate's errors become HTTP: statuses, and the JSON body of `error.rs`.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::error::Error;

impl ResponseError for Error {
    fn status_code(&self) -> StatusCode {
        match self {
            Error::InvalidField { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Error::InvalidBody(_) => StatusCode::BAD_REQUEST,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::StateConflict { .. } => StatusCode::CONFLICT,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden { .. } => StatusCode::FORBIDDEN,
            Error::Pool(_) | Error::Upstream(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(_)
            | Error::Migration(_)
            | Error::Index(_)
            | Error::Config(_)
            | Error::Blocking(_)
            | Error::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
