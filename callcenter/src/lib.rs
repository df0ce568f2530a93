//! juki-callcenter: the call center of the Basic Resident Registration Network. Municipalities'
//! and prefectures' administrators send inquiries (問合せ) and fault reports (障害連絡); the staff
//! answer them from a searchable history of past answers; monitoring opens fault tickets.
//!
//! The layers, each importing only the layers above it in this list:
//! - L0 `error`, `domain` — pure: ticket state machines, who may do what, business-hours
//!   arithmetic, text normalisation, the Alertmanager payload. No diesel, actix, tantivy or tokio.
//! - L1 `store` (diesel, SQLite and PostgreSQL), `search` (tantivy), `nodes` (the Kubernetes
//!   API, read-only) and `metrics`: each knows the domain only.
//! - L2 `service`: the use cases (file, answer, change state, receive alerts), which write the
//!   store first and then the index; the index is rebuilt from the store at start.
//! - L3 `http` (the only actix code): routes, authentication, the web UI, OpenAPI.
//! - L4 `cli`: configuration and wiring.

pub mod cli;
pub mod domain;
pub mod error;
pub mod http;
pub mod metrics;
pub mod nodes;
pub mod search;
pub mod seed;
pub mod service;
pub mod store;

pub use error::Error;
