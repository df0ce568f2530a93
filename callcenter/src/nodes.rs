//! A ticket's node context from the Kubernetes API: each affected JukiNode's phase, why and
//! since when, its conditions and last batch, its recent batch Jobs (label `jukinet.io/node`),
//! the operator's Events about it (its timeline: warnings, batch outcomes, and every phase
//! change with `--transition-events`), the files delivered to it and the deliveries that
//! failed on it, so the staff see at once whether the CS was even supposed to be up.
//! Read-only; resources are read as dynamic objects (no dependency on the operator crate).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde::Serialize;
use serde_json::Value;

use crate::error::Error;

/// The label the operator puts on everything it makes for a node.
pub const NODE_LABEL: &str = "jukinet.io/node";
/// The most batch Jobs shown per node.
pub const MAX_JOBS: usize = 10;
/// The most Events shown per node.
pub const MAX_EVENTS: usize = 20;

/// One node's context.
#[derive(Debug, Clone, Serialize)]
pub struct NodeContext {
    pub node: String,
    /// False when no JukiNode of that name exists.
    pub found: bool,
    pub namespace: Option<String>,
    pub tier: Option<String>,
    pub phase: Option<String>,
    /// Why it is in that phase (e.g. `DeliveryNotApplied`), and the operator's sentence.
    pub reason: Option<String>,
    pub message: Option<String>,
    pub phase_since: Option<String>,
    pub operating_date: Option<String>,
    /// `status.conditions` as the operator wrote them.
    pub conditions: Value,
    pub last_batch: Value,
    /// The most recent batch Jobs, newest first.
    pub jobs: Vec<BatchJob>,
    /// The operator's Events about the node, newest first.
    pub events: Vec<NodeEvent>,
    /// `status.deliveredFiles`: the delivered files it applied (file, sha256, appliedAt).
    pub delivered_files: Value,
    /// FileDeliveries that failed on it or are being taken back from it.
    pub deliveries: Vec<DeliveryIssue>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeEvent {
    /// When it last happened (RFC 3339).
    pub time: Option<String>,
    /// Normal or Warning.
    pub kind: String,
    pub reason: String,
    pub note: String,
    pub count: i32,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeliveryIssue {
    /// `namespace/name` of the FileDelivery.
    pub delivery: String,
    pub file: Option<String>,
    pub phase: Option<String>,
    /// Failed (with why) or Withdrawing.
    pub state: String,
    pub message: Option<String>,
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

fn file_delivery() -> ApiResource {
    ApiResource {
        group: "jukinet.io".into(),
        version: "v1alpha1".into(),
        api_version: "jukinet.io/v1alpha1".into(),
        kind: "FileDelivery".into(),
        plural: "filedeliveries".into(),
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
                reason: None,
                message: None,
                phase_since: None,
                operating_date: None,
                conditions: Value::Array(vec![]),
                last_batch: Value::Null,
                jobs,
                events: Vec::new(),
                delivered_files: Value::Array(vec![]),
                deliveries: Vec::new(),
            },
            Some(n) => {
                let status = n.data.get("status").cloned().unwrap_or(Value::Null);
                let ns = n.metadata.namespace.clone().unwrap_or_default();
                NodeContext {
                    node: node.to_owned(),
                    found: true,
                    namespace: n.metadata.namespace.clone(),
                    tier: text(&n.data, &["spec", "tier"]),
                    phase: text(&status, &["phase"]),
                    reason: text(&status, &["reason"]),
                    message: text(&status, &["message"]),
                    phase_since: text(&status, &["phaseSince"]),
                    operating_date: text(&status, &["operatingDate"]),
                    conditions: status
                        .get("conditions")
                        .cloned()
                        .unwrap_or(Value::Array(vec![])),
                    last_batch: status.get("lastBatch").cloned().unwrap_or(Value::Null),
                    jobs,
                    events: self.events(&ns, node).await?,
                    delivered_files: status
                        .get("deliveredFiles")
                        .cloned()
                        .unwrap_or(Value::Array(vec![])),
                    deliveries: self.deliveries(&format!("{ns}/{node}")).await?,
                }
            }
        })
    }

    /// The Events about the JukiNode, newest first.
    async fn events(&self, ns: &str, node: &str) -> Result<Vec<NodeEvent>, Error> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), ns);
        let selector = format!("involvedObject.kind=JukiNode,involvedObject.name={node}");
        let mut events: Vec<NodeEvent> = api
            .list(&ListParams::default().fields(&selector))
            .await
            .map_err(upstream)?
            .items
            .into_iter()
            .map(|e| NodeEvent {
                time: e
                    .series
                    .as_ref()
                    .and_then(|s| s.last_observed_time.as_ref())
                    .map(|t| t.0.to_string())
                    .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
                    .or_else(|| e.last_timestamp.as_ref().map(|t| t.0.to_string()))
                    .or_else(|| {
                        e.metadata
                            .creation_timestamp
                            .as_ref()
                            .map(|t| t.0.to_string())
                    }),
                kind: e.type_.unwrap_or_default(),
                reason: e.reason.unwrap_or_default(),
                note: e.message.unwrap_or_default(),
                count: e
                    .series
                    .as_ref()
                    .and_then(|s| s.count)
                    .or(e.count)
                    .unwrap_or(1),
            })
            .collect();
        sort_newest_first(&mut events);
        events.truncate(MAX_EVENTS);
        Ok(events)
    }

    /// The FileDeliveries (any namespace) that failed on `node` (`namespace/name`) or are being
    /// taken back from it.
    async fn deliveries(&self, node: &str) -> Result<Vec<DeliveryIssue>, Error> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &file_delivery());
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            // No FileDelivery type installed: nothing was delivered.
            Err(kube::Error::Api(e)) if e.code == 404 => Vec::new(),
            Err(e) => return Err(upstream(e)),
        };
        Ok(list.iter().flat_map(|d| delivery_issues(d, node)).collect())
    }
}

/// What one FileDelivery's status says about `node`.
fn delivery_issues(d: &DynamicObject, node: &str) -> Vec<DeliveryIssue> {
    let status = d.data.get("status").cloned().unwrap_or(Value::Null);
    let issue = |state: &str, message: Option<String>| DeliveryIssue {
        delivery: format!(
            "{}/{}",
            d.metadata.namespace.as_deref().unwrap_or_default(),
            d.metadata.name.as_deref().unwrap_or_default()
        ),
        file: text(&d.data, &["spec", "file"]),
        phase: text(&status, &["phase"]),
        state: state.to_owned(),
        message,
    };
    let mut issues: Vec<DeliveryIssue> = status
        .get("failures")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|f| f.get("node").and_then(Value::as_str) == Some(node))
        .map(|f| issue("Failed", text(f, &["message"])))
        .collect();
    let withdrawing = status
        .get("withdrawing")
        .and_then(Value::as_array)
        .is_some_and(|w| w.iter().any(|n| n.as_str() == Some(node)));
    if withdrawing {
        issues.push(issue("Withdrawing", None));
    }
    issues
}

fn sort_newest_first(events: &mut [NodeEvent]) {
    let at = |e: &NodeEvent| {
        e.time
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    };
    events.sort_by_key(|e| std::cmp::Reverse(at(e)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_concerns_a_node_it_failed_on_or_is_taken_back_from() {
        let d: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "jukinet.io/v1alpha1", "kind": "FileDelivery",
            "metadata": {"name": "allow-list", "namespace": "juki-national"},
            "spec": {"file": "allow-list"},
            "status": {"phase": "Failed",
                       "failures": [{"node": "p13/cs-131016", "phase": "Failed", "message": "refused at its start"}],
                       "withdrawing": ["p13/pref-13", "p13/cs-131016"]},
        }))
        .unwrap();
        let issues = delivery_issues(&d, "p13/cs-131016");
        let states: Vec<(&str, Option<&str>)> = issues
            .iter()
            .map(|i| (i.state.as_str(), i.message.as_deref()))
            .collect();
        assert_eq!(
            states,
            [
                ("Failed", Some("refused at its start")),
                ("Withdrawing", None)
            ]
        );
        assert_eq!(issues[0].delivery, "juki-national/allow-list");
        assert_eq!(issues[0].phase.as_deref(), Some("Failed"));
        assert_eq!(delivery_issues(&d, "p27/pref-27").len(), 0);
    }
}
