//! L1, what every task and handler of a node shares: its database, who it is, its clock and
//! its metrics. The background tasks take a [`Node`] and their own handles, never the HTTP state.

use std::sync::Arc;

use crate::domain::clock::Clock;
use crate::domain::identity::NodeIdentity;
use crate::metrics::Metrics;
use crate::store::db::Db;

#[derive(Debug, Clone)]
pub struct Node {
    pub db: Db,
    pub identity: NodeIdentity,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
}

impl Node {
    /// A node with fresh metrics.
    pub fn new(db: Db, identity: NodeIdentity, clock: Arc<dyn Clock>) -> Node {
        Node {
            db,
            identity,
            clock,
            metrics: Metrics::new(),
        }
    }
}
