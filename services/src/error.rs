//! The crate's one error type and its stable JSON body
//! `{"error": "<tag>", "message": "...", "field": "..."|null}` (plus `"index"` for batch items).
//! Every layer builds it (diesel and pool errors convert with `?`); only `http/error.rs` maps it
//! to an HTTP status and response, so this file knows no web framework.

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field of an update breaks a rule (format, check digit, date, ...).
    #[error("{field}: {message}")]
    InvalidField {
        field: &'static str,
        rule: &'static str,
        message: String,
    },
    /// The update names a municipality other than this CS's own.
    #[error("municipality_code {got} is not this node's municipality {own}")]
    ForeignMunicipality { got: String, own: String },
    /// The update does not fit the resident's current state.
    #[error("{message}")]
    StateConflict {
        rule: &'static str,
        field: Option<&'static str>,
        message: String,
    },
    /// The request body is not the expected JSON shape.
    #[error("request body: {0}")]
    InvalidBody(String),
    #[error("the Idempotency-Key header is required (1–255 visible ASCII characters)")]
    MissingIdempotencyKey,
    #[error("Idempotency-Key {0:?} was already used with a different request")]
    IdempotencyKeyReused(String),
    #[error("no resident {0} at this node")]
    NotFound(String),
    #[error("no route {0}")]
    NoRoute(String),
    #[error("this endpoint is not served by a {0} node")]
    WrongRole(&'static str),
    /// No client certificate (or, without TLS, no identity header) where one is needed.
    #[error("authentication required: {0}")]
    Unauthenticated(String),
    /// The caller's identity may not do this (the tree rules of authz.rs, the allow-list).
    #[error("{message}")]
    Forbidden { rule: &'static str, message: String },
    /// One item of a batch failed; nothing of the batch was written.
    #[error("item {index}: {source}")]
    InBatch {
        index: usize,
        #[source]
        source: Box<Error>,
    },
    #[error("database query: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("database connection: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error("migrations: {0}")]
    Migration(String),
    #[error("a final request is in progress: relays are not taken until resume")]
    FinalRequestInProgress,
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("blocking task failed: {0}")]
    Blocking(String),
    #[error("stored data: {0}")]
    Corrupt(String),
    #[error("batch: {0}")]
    Batch(String),
    /// A request parameter (path, query or header) is malformed.
    #[error("{field}: {message}")]
    BadRequest {
        field: &'static str,
        rule: &'static str,
        message: String,
    },
    #[error("no content {0} at this node")]
    ContentNotFound(String),
    /// Received content whose sha256 is not the one it was sent as; nothing was kept.
    #[error("sha256 mismatch: expected {expected}, the content has {actual}; nothing was kept")]
    DigestMismatch { expected: String, actual: String },
    #[error("Range: the content has {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    /// Fetching content from the upstream node failed (`rule` says how).
    #[error("{message}")]
    Fetch { rule: &'static str, message: String },
    /// The delivery store on disk (content, staged and applied files).
    #[error("delivery store: {0}")]
    Storage(String),
}

/// The JSON error body.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: &'static str,
    pub message: String,
    pub field: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

impl Error {
    /// Wraps an error of batch item `index` (no-op for non-batch requests).
    pub fn in_batch(self, index: Option<usize>) -> Error {
        match index {
            Some(index) => Error::InBatch {
                index,
                source: Box::new(self),
            },
            None => self,
        }
    }

    /// The stable tag of the JSON body.
    pub fn tag(&self) -> &'static str {
        match self {
            Error::InvalidField { rule, .. } => rule,
            Error::ForeignMunicipality { .. } => "foreign_municipality",
            Error::StateConflict { rule, .. } => rule,
            Error::InvalidBody(_) => "invalid_body",
            Error::MissingIdempotencyKey => "missing_idempotency_key",
            Error::IdempotencyKeyReused(_) => "idempotency_key_reused",
            Error::NotFound(_) | Error::NoRoute(_) => "not_found",
            Error::WrongRole(_) => "wrong_role",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::Forbidden { rule, .. } => rule,
            Error::InBatch { source, .. } => source.tag(),
            Error::Database(_)
            | Error::Migration(_)
            | Error::Config(_)
            | Error::Blocking(_)
            | Error::Corrupt(_)
            | Error::Batch(_) => "internal",
            Error::Pool(_) | Error::NotReady(_) => "unavailable",
            Error::FinalRequestInProgress => "final_request_in_progress",
            Error::BadRequest { rule, .. } | Error::Fetch { rule, .. } => rule,
            Error::ContentNotFound(_) => "not_found",
            Error::DigestMismatch { .. } => "digest_mismatch",
            Error::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            Error::Storage(_) => "internal",
        }
    }

    /// The request field the error is about, if any.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Error::InvalidField { field, .. } => Some(field),
            Error::ForeignMunicipality { .. } => Some("municipality_code"),
            Error::StateConflict { field, .. } => *field,
            Error::MissingIdempotencyKey => Some("Idempotency-Key"),
            Error::IdempotencyKeyReused(_) => Some("Idempotency-Key"),
            Error::InBatch { source, .. } => source.field(),
            Error::BadRequest { field, .. } => Some(field),
            Error::DigestMismatch { .. } => Some("sha256"),
            Error::RangeNotSatisfiable { .. } => Some("Range"),
            _ => None,
        }
    }

    pub fn body(&self) -> ErrorBody {
        let (index, message) = match self {
            Error::InBatch { index, source } => (Some(*index), source.public_message()),
            other => (None, other.public_message()),
        };
        ErrorBody {
            error: self.tag(),
            message,
            field: self.field(),
            index,
        }
    }

    fn public_message(&self) -> String {
        match self {
            // Internal details stay in the logs, not in the response.
            Error::Database(_)
            | Error::Migration(_)
            | Error::Config(_)
            | Error::Blocking(_)
            | Error::Corrupt(_)
            | Error::Batch(_)
            | Error::Storage(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }
}
