//! `ServiceExtension`: a dated, expiring extension of service hours (運用延長).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::NodeRef;

/// An extension of service hours on one date (運用延長): the named nodes, and every node upstream of
/// them, stay Online until `endTime`, then stop in the normal order.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "jukinet.io",
    version = "v1alpha1",
    kind = "ServiceExtension",
    doc = "A dated, expiring extension of service hours (運用延長) that keeps the named nodes and their upstream chain Online.",
    namespaced,
    shortname = "svcext",
    category = "juki",
    status = "ServiceExtensionStatus",
    printcolumn(name = "Kind", type_ = "string", json_path = ".spec.kind"),
    printcolumn(name = "Date", type_ = "string", json_path = ".spec.date"),
    printcolumn(name = "End", type_ = "string", json_path = ".spec.endTime"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.kind == 'LocalProcessing' || size(self.coordinatedWith) > 0", "message": "spec.coordinatedWith must name who was coordinated with for WideAreaIssuance and IdentityVerification"},
    {"rule": "self.kind != 'LocalProcessing' || size(self.nodes) == 1", "message": "a LocalProcessing extension names exactly one node (work completed inside one municipality)"},
    {"rule": "self.nodes.all(n, !has(n.namespace))", "message": "spec.nodes[].namespace: an extension names only nodes of its own namespace; leave namespace out"}
]))]
pub struct ServiceExtensionSpec {
    /// LocalProcessing (work completed inside one municipality), WideAreaIssuance (after
    /// coordination with the municipalities involved) or IdentityVerification (after coordination
    /// with the prefecture).
    pub kind: ExtensionKind,
    /// The nodes that stay up; their upstream chain stays up with them. Only nodes of the
    /// extension's own namespace: the API server refuses a `namespace` here, and the operator
    /// rejects (OtherNamespace) one naming another namespace's node.
    #[schemars(length(min = 1, max = 100))]
    pub nodes: Vec<NodeRef>,
    /// The operating date extended, "YYYY-MM-DD".
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    pub date: String,
    /// The extended end, "HH:MM" (up to "29:59"); later than the normal window end.
    #[schemars(regex(pattern = r"^[0-2][0-9]:[0-5][0-9]$"))]
    pub end_time: String,
    /// The municipalities, prefectures or offices coordinated with.
    #[serde(default)]
    pub coordinated_with: Vec<String>,
    /// Why the extension is needed.
    #[serde(default)]
    pub reason: String,
}

/// The three kinds of exception to the common operating hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ExtensionKind {
    LocalProcessing,
    WideAreaIssuance,
    IdentityVerification,
}

/// Lifecycle of an extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ExtensionPhase {
    /// Valid, not yet in force.
    Pending,
    /// In force: the nodes are kept Online.
    Active,
    /// Its end has passed.
    Expired,
    /// Invalid; see reason and message.
    Rejected,
}

/// The extension's state as the operator sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceExtensionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ExtensionPhase>,
    /// One CamelCase word, e.g. NodeNotFound, EndNotAfterWindow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    #[test]
    fn the_api_server_refuses_an_extension_naming_another_namespace() {
        let crd = serde_json::to_string(&super::ServiceExtension::crd()).unwrap();
        assert!(
            crd.contains("self.nodes.all(n, !has(n.namespace))"),
            "{crd}"
        );
    }
}
