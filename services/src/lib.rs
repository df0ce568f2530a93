//! juki-node: the jukinet node service (national, prefectural or CS server).
//!
//! Functional core, imperative shell: [`domain`] holds the pure rules, [`store`] runs them inside
//! database transactions, [`http`] is the HTTP surface.

pub mod cli;
pub mod domain;
pub mod error;
pub mod http;
pub mod metrics;
pub mod provision;
pub mod relay;
pub mod store;
pub mod wide_area;

pub use error::Error;
