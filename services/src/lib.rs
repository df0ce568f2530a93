//! juki-node: the jukinet node service (national, prefectural or CS server).
//!
//! Functional core, imperative shell: [`domain`] holds the pure rules, [`store`] runs them inside
//! database transactions, [`routes`] is the HTTP surface.

pub mod app;
pub mod authz;
pub mod batch;
pub mod client;
pub mod clock;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod issuance;
pub mod logging;
pub mod mailbox;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod pgtools;
pub mod provision;
pub mod provision_desk;
pub mod provision_log;
pub mod relay;
pub mod routes;
pub mod schema;
pub mod store;
pub mod tls;
pub mod trace;
pub mod transfer;
pub mod views;

pub use error::Error;
