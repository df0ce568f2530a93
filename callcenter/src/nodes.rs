//! A ticket's node context from the Kubernetes API: each affected JukiNode's phase, since when,
//! its conditions and last batch, and its recent batch Jobs (label `jukinet.io/node`), so the
//! staff see at once whether the CS was even supposed to be up. Read-only; resources are read
//! as dynamic objects (no dependency on the operator crate).

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde::Serialize;
use serde_json::Value;

use crate::error::Error;

/// The label the operator puts on everything it makes for a node.
pub const NODE_LABEL: &str = "jukinet.io/node";
/// The most batch Jobs shown per node.
pub const MAX_JOBS: usize = 10;

/// One node's context.
#[derive(Debug, Clone, Serialize)]
pub struct NodeContext {
    pub node: String,
    /// False when no JukiNode of that name exists.
    pub found: bool,
    pub namespace: Option<String>,
    pub tier: Option<String>,
    pub phase: Option<String>,
    pub phase_since: Option<String>,
    pub operating_date: Option<String>,
    /// `status.conditions` as the operator wrote them.
    pub conditions: Value,
    pub last_batch: Value,
    /// The most recent batch Jobs, newest first.
    pub jobs: Vec<BatchJob>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BatchJob {
    pub name: String,
    pub batch: Option<String>,
    pub operating_date: Option<String>,
    /// Succeeded, Failed or Running.
    pub outcome: String,
    pub started: Option<String>,
    pub completed: Option<String>,
}

/// Reads node contexts through a kube client.
#[derive(Clone)]
pub struct NodeSource {
    client: kube::Client,
}

impl std::fmt::Debug for NodeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSource")
    }
}

fn jukinode() -> ApiResource {
    ApiResource {
        group: "jukinet.io".into(),
        version: "v1alpha1".into(),
        api_version: "jukinet.io/v1alpha1".into(),
        kind: "JukiNode".into(),
        plural: "jukinodes".into(),
    }
}

fn upstream(e: kube::Error) -> Error {
    Error::Upstream(e.to_string())
}

fn text(v: &Value, path: &[&str]) -> Option<String> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

impl NodeSource {
    pub fn new(client: kube::Client) -> NodeSource {
        NodeSource { client }
    }

    /// From the in-cluster service account or the local kubeconfig.
    pub async fn infer() -> Result<NodeSource, Error> {
        kube::Client::try_default()
            .await
            .map(NodeSource::new)
            .map_err(upstream)
    }

    /// The context of one node (names were validated as node names by the domain).
    pub async fn context(&self, node: &str) -> Result<NodeContext, Error> {
        let nodes: Api<DynamicObject> = Api::all_with(self.client.clone(), &jukinode());
        let found = nodes
            .list(&ListParams::default().fields(&format!("metadata.name={node}")))
            .await
            .map_err(upstream)?
            .items
            .into_iter()
            .next();
        let jobs: Api<Job> = Api::all(self.client.clone());
        let mut jobs = jobs
            .list(&ListParams::default().labels(&format!("{NODE_LABEL}={node}")))
            .await
            .map_err(upstream)?
            .items;
        jobs.sort_by(|a, b| {
            b.metadata
                .creation_timestamp
                .cmp(&a.metadata.creation_timestamp)
        });
        let jobs = jobs
            .into_iter()
            .take(MAX_JOBS)
            .map(|j| {
                let labels = j.metadata.labels.clone().unwrap_or_default();
                let status = j.status.clone().unwrap_or_default();
                BatchJob {
                    name: j.metadata.name.clone().unwrap_or_default(),
                    batch: labels.get("jukinet.io/batch").cloned(),
                    operating_date: labels.get("jukinet.io/operating-date").cloned(),
                    outcome: if status.succeeded.unwrap_or(0) > 0 {
                        "Succeeded".into()
                    } else if status.failed.unwrap_or(0) > 0 {
                        "Failed".into()
                    } else {
                        "Running".into()
                    },
                    started: status.start_time.map(|t| t.0.to_string()),
                    completed: status.completion_time.map(|t| t.0.to_string()),
                }
            })
            .collect();
        Ok(match found {
            None => NodeContext {
                node: node.to_owned(),
                found: false,
                namespace: None,
                tier: None,
                phase: None,
                phase_since: None,
                operating_date: None,
                conditions: Value::Array(vec![]),
                last_batch: Value::Null,
                jobs,
            },
            Some(n) => {
                let status = n.data.get("status").cloned().unwrap_or(Value::Null);
                NodeContext {
                    node: node.to_owned(),
                    found: true,
                    namespace: n.metadata.namespace.clone(),
                    tier: text(&n.data, &["spec", "tier"]),
                    phase: text(&status, &["phase"]),
                    phase_since: text(&status, &["phaseSince"]),
                    operating_date: text(&status, &["operatingDate"]),
                    conditions: status
                        .get("conditions")
                        .cloned()
                        .unwrap_or(Value::Array(vec![])),
                    last_batch: status.get("lastBatch").cloned().unwrap_or(Value::Null),
                    jobs,
                }
            }
        })
    }
}
