//! juki-node: the jukinet node service (national, prefectural or CS server).
//!
//! The modules are layers; each imports only the layers below it (`tests/layers.rs` checks):
//!
//! | layer | modules | what |
//! |---|---|---|
//! | L0 | [`error`], [`domain`] | the pure rules, identities, clock and trace context; no I/O |
//! | L1 | [`store`], [`metrics`], [`node`] | the database (diesel), the metrics, and [`node::Node`] that every task shares |
//! | L2 | [`relay`] | the tier transport: outbox, inbox, mailbox, the node-to-node client |
//! | L3 | [`wide_area`], [`updates`], [`provision`], [`delivery`] | the use cases (`updates` may use `wide_area`; `delivery` carries files down the tree) |
//! | L4 | [`http`] | the HTTP surface (the only actix code) |
//! | L5 | [`cli`] | the wiring: command line, configuration, serving, batch jobs |

pub mod cli;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod http;
pub mod metrics;
pub mod node;
pub mod provision;
pub mod relay;
pub mod store;
pub mod updates;
pub mod wide_area;

pub use error::Error;
