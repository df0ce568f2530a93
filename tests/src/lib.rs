//! Helpers for the cluster integration tests: connect to the local control plane of
//! `tests/cluster/` (see its README), give each test its own namespace, apply YAML with
//! server-side apply, install the CRDs and wait for conditions.

pub mod cluster;
pub mod collector;
pub mod network_policy;
pub mod operator;
pub mod pki;
pub mod real_node;

pub use cluster::{Guard, TestCluster};

/// `let Some(cluster) = require_cluster!() else { return };` at the top of a cluster test: skips
/// (passes) without a control plane, but fails when `JUKINET_REQUIRE_CLUSTER=1`.
#[macro_export]
macro_rules! require_cluster {
    () => {
        $crate::cluster::TestCluster::require().await
    };
}
