//! The crate's one error type and its stable JSON body, the shape juki-node answers:
//! `{"error": "<tag>", "message": "...", "field": "..."|null}`. Errors are built by the domain,
//! the store and the search layer; `http::error` alone maps them to HTTP statuses. Internal
//! details (database, index) stay in the logs.

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of a request breaks a rule (format, check digit, length, ...).
    #[error("{field}: {message}")]
    InvalidField {
        field: &'static str,
        rule: &'static str,
        message: String,
    },
    /// The request body is not the expected JSON shape (or not UTF-8, or too large).
    #[error("request body: {0}")]
    InvalidBody(String),
    /// The change does not fit the ticket's current state (an illegal transition).
    #[error("{message}")]
    StateConflict {
        rule: &'static str,
        field: Option<&'static str>,
        message: String,
    },
    /// The request body is larger than the route accepts.
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0} not found")]
    NotFound(String),
    /// No client certificate (or, in development mode, no identity) where one is needed.
    #[error("authentication required: {0}")]
    Unauthenticated(String),
    /// The caller may not do this (see `domain::authz`).
    #[error("{message}")]
    Forbidden { rule: &'static str, message: String },
    #[error("database query: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("database connection: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error("migrations: {0}")]
    Migration(String),
    #[error("search index: {0}")]
    Index(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("blocking task failed: {0}")]
    Blocking(String),
    #[error("stored data: {0}")]
    Corrupt(String),
    #[error("Kubernetes API: {0}")]
    Upstream(String),
}

/// The JSON error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: &'static str,
    pub message: String,
    pub field: Option<&'static str>,
}

impl Error {
    /// A field error.
    pub fn field(field: &'static str, rule: &'static str, message: impl Into<String>) -> Error {
        Error::InvalidField {
            field,
            rule,
            message: message.into(),
        }
    }

    /// The stable tag of the JSON body.
    pub fn tag(&self) -> &'static str {
        match self {
            Error::InvalidField { rule, .. } => rule,
            Error::InvalidBody(_) => "invalid_body",
            Error::StateConflict { rule, .. } => rule,
            Error::NotFound(_) => "not_found",
            Error::TooLarge(_) => "payload_too_large",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden { rule, .. } => rule,
            Error::Database(_)
            | Error::Migration(_)
            | Error::Index(_)
            | Error::Config(_)
            | Error::Blocking(_)
            | Error::Corrupt(_) => "internal",
            Error::Pool(_) | Error::Upstream(_) => "unavailable",
        }
    }

    /// The request field the error is about, if any.
    pub fn field_name(&self) -> Option<&'static str> {
        match self {
            Error::InvalidField { field, .. } => Some(field),
            Error::StateConflict { field, .. } => *field,
            _ => None,
        }
    }

    /// Whether the error is the server's fault (a 5xx).
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Error::Database(_)
                | Error::Migration(_)
                | Error::Index(_)
                | Error::Config(_)
                | Error::Blocking(_)
                | Error::Corrupt(_)
                | Error::Pool(_)
                | Error::Upstream(_)
        )
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.tag(),
            message: self.public_message(),
            field: self.field_name(),
        }
    }

    fn public_message(&self) -> String {
        match self {
            Error::Database(_)
            | Error::Migration(_)
            | Error::Index(_)
            | Error::Config(_)
            | Error::Blocking(_)
            | Error::Corrupt(_) => "internal error".to_owned(),
            Error::Pool(_) => "database unavailable".to_owned(),
            other => other.to_string(),
        }
    }
}
