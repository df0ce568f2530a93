//! `FileDelivery`: programs and files pushed from the national server to prefectural servers and
//! CSs, applied before online start.

use juki_calendar::Tier;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A file delivered to the nodes of the targeted tiers and prefectures before their next online
/// start, verified by its sha256.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "jukinet.io",
    version = "v1alpha1",
    kind = "FileDelivery",
    doc = "A file pushed from the national server to prefectural servers and CSs before their next online start.",
    namespaced,
    shortname = "fd",
    category = "juki",
    status = "FileDeliveryStatus",
    printcolumn(
        name = "SHA256",
        type_ = "string",
        json_path = ".spec.sha256",
        priority = 1
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Delivered", type_ = "integer", json_path = ".status.delivered"),
    printcolumn(name = "Targets", type_ = "integer", json_path = ".status.targets"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct FileDeliverySpec {
    /// Where the file comes from.
    pub source: DeliverySource,
    /// sha256 of the file, 64 lowercase hex digits; a node refuses a file that does not match.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
    /// Which nodes receive it.
    #[serde(default)]
    pub targets: DeliveryTargets,
}

/// The file: from a ConfigMap key, or inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.configMap) != has(self.inline)", "message": "spec.source needs exactly one of configMap or inline"}
]))]
pub struct DeliverySource {
    /// A key of a ConfigMap in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    /// The file's text, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
}

/// A ConfigMap key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapSource {
    pub name: String,
    pub key: String,
}

/// The targeted nodes. Empty lists mean every tier below National and every prefecture.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryTargets {
    /// Tiers that receive the file. Default Prefecture and CS.
    #[serde(default)]
    pub tiers: Vec<Tier>,
    /// Prefecture codes ("01"–"47") that receive it. Default all.
    #[serde(default)]
    pub prefectures: Vec<String>,
}

/// Delivery progress.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileDeliveryStatus {
    /// Pending, Delivering, Delivered or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Number of targeted nodes.
    #[serde(default)]
    pub targets: i32,
    /// Number of nodes that applied the file.
    #[serde(default)]
    pub delivered: i32,
    /// Per-node status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeDelivery>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One node's delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeDelivery {
    /// "namespace/name" of the JukiNode.
    pub node: String,
    /// Pending, Delivered or Failed.
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<Time>,
}
