//! `FileDelivery`: programs and files pushed from the national server to prefectural servers and
//! CSs, applied before online start.

use juki_calendar::Tier;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A file, or a program (a juki-node image), delivered to the nodes of the targeted tiers and
/// prefectures and applied at their next online start: a file verified by its sha256, a
/// program taken by the node's pods only when they start from none.
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
    printcolumn(name = "File", type_ = "string", json_path = ".spec.file"),
    printcolumn(
        name = "Program",
        type_ = "string",
        json_path = ".spec.program.image",
        priority = 1
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Wave", type_ = "string", json_path = ".status.wave"),
    printcolumn(name = "Applied", type_ = "integer", json_path = ".status.applied"),
    printcolumn(name = "Targets", type_ = "integer", json_path = ".status.targets"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.program) ? !(has(self.file) || has(self.source) || has(self.sha256)) : (has(self.file) && has(self.source) && has(self.sha256))", "message": "spec: a delivery is either a program (spec.program, alone) or a file (spec.file, spec.source and spec.sha256)"},
    {"rule": "!has(self.program) || (!has(self.signature) && !has(self.requiredBefore))", "message": "spec.program: signature and requiredBefore apply to files only (a program is an image the node's pods take at their next start)"}
]))]
pub struct FileDeliverySpec {
    /// The name the nodes apply the content as (`allow-list` is the agency allow-list the
    /// provision service reads; any other name is a file an application reads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z0-9_-][a-z0-9._-]{0,63}$"),
        length(min = 1, max = 64)
    )]
    pub file: Option<String>,
    /// Where the file comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DeliverySource>,
    /// sha256 of the file, 64 lowercase hex digits; a node refuses a file that does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
    /// A program instead of a file: a juki-node image the targets' pods take at their next
    /// start, wave by wave. A running node never changes mid-day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<ProgramSource>,
    /// Ed25519 signature (128 lowercase hex digits) of `jukinet-delivery-v1\n<file>\n<sha256>`
    /// by a key of the operator's `--delivery-keys`. Nodes given keys stage only signed
    /// deliveries: a missing or wrong signature fails the node (and halts the delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{128}$"))]
    pub signature: Option<String>,
    /// Which nodes receive it.
    #[serde(default)]
    pub targets: DeliveryTargets,
    /// The wave after the national server: these prefectures (with their CSs) apply the file
    /// first, and the rest wait until every canary node has applied it and is Online again.
    #[serde(default)]
    pub canaries: DeliveryCanaries,
    /// Nothing new is fetched while true (what has been fetched is still applied at the next
    /// start; a halted delivery stays halted).
    #[serde(default)]
    pub paused: bool,
    /// When the targets must have applied it: `NextOnlineStart`, or an RFC 3339 instant (starts
    /// at or after it). A target that has not applied it when its pods are ready stays
    /// `Starting` (reason `DeliveryNotApplied`) instead of going Online: it fetches the file
    /// while held, once its wave is open, and is restarted to apply it. Unset: nobody waits.
    /// A halted or rolled-back delivery holds nobody; removing this field releases the held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_before: Option<String>,
    /// Take the delivery back from every node: a node that staged it unstages it, a node that
    /// applied it returns to its previous version at its next start; nothing more is fetched.
    #[serde(default)]
    pub rollback: bool,
}

/// A program delivery: the juki-node image to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgramSource {
    /// The image reference (e.g. `registry.example/juki-node:1.4.2`, or one pinned by digest);
    /// the nodes' `spec.template.image` is what they return to on a rollback.
    #[schemars(regex(pattern = r"^[^\s]+$"), length(min = 1, max = 512))]
    pub image: String,
}

/// The canary wave: named prefectures, or the first `count` targeted prefectures by code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(has(self.prefectures) && size(self.prefectures) > 0 && has(self.count))", "message": "spec.canaries takes prefectures or count, not both"}
]))]
pub struct DeliveryCanaries {
    /// Prefecture codes ("01"–"47").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefectures: Vec<String>,
    /// How many prefectures, by code order, when none are named. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 47))]
    pub count: Option<u8>,
}

/// The file: from a ConfigMap key, or inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "(has(self.configMap) ? 1 : 0) + (has(self.inline) ? 1 : 0) + (has(self.upload) ? 1 : 0) == 1", "message": "spec.source needs exactly one of configMap, inline or upload"}
]))]
pub struct DeliverySource {
    /// A key of a ConfigMap in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSource>,
    /// The file's text, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inline: Option<String>,
    /// Content too big for a ConfigMap (1 MiB): uploaded to the national server by
    /// `kubectl juki delivery upload FILE`; the delivery waits until the national server holds
    /// the content whose sha256 is `spec.sha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadSource>,
}

/// Content uploaded to the national server (nothing to configure).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UploadSource {}

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

/// Delivery progress, readable at 1,789 nodes: counts, counts per prefecture, and only the
/// failed nodes by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileDeliveryStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<DeliveryPhase>,
    /// The open wave as "n/total" (national, canaries, the rest; empty waves left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<String>,
    /// Number of targeted nodes.
    #[serde(default)]
    pub targets: i32,
    /// Nodes that have not fetched it yet (a node the calendar has stopped is pending).
    #[serde(default)]
    pub pending: i32,
    /// Nodes that hold it, staged for their next start.
    #[serde(default)]
    pub fetched: i32,
    /// Nodes that applied it at a start.
    #[serde(default)]
    pub applied: i32,
    /// Nodes that refused it (a wrong sha256 on fetch, a file refused at the node's start).
    #[serde(default)]
    pub failed: i32,
    /// Per prefecture code: "applied/targets", with the failures if any.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub prefectures: std::collections::BTreeMap<String, String>,
    /// The failed nodes and why (at most 50; `failed` counts them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<NodeDelivery>,
    /// On a halt or a rollback: the nodes it is being taken back from, until each confirmed it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub withdrawing: Vec<String>,
    /// Why the delivery cannot go on (bad input, no node service to reach), or the last
    /// reason a node could not be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
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
    pub phase: NodeDeliveryPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DeliveryPhase {
    /// No node has fetched it yet.
    Pending,
    /// Going out wave by wave.
    Delivering,
    /// Every wave healthy: every targeted node applied it.
    Delivered,
    /// Halted (a wave failed, or bad input) and withdrawn from the nodes that hold it.
    Failed,
    /// Taken back by `spec.rollback`.
    RolledBack,
}

/// Where a delivery is on one node.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum NodeDeliveryPhase {
    /// Not fetched yet (a node the calendar has stopped is pending).
    Pending,
    /// Held, staged for the node's next start.
    Fetched,
    /// Applied at a start.
    Applied,
    /// Refused (a wrong sha256 on fetch, a file refused at the node's start).
    Failed,
}

/// What a file delivery carries.
#[derive(Debug, Clone, Copy)]
pub struct FileParts<'a> {
    pub file: &'a str,
    pub source: &'a DeliverySource,
    pub sha256: &'a str,
}

impl FileDeliverySpec {
    /// The file, its source and its sha256; None for a program (or a spec the API server's
    /// rules would have refused).
    pub fn file_parts(&self) -> Option<FileParts<'_>> {
        Some(FileParts {
            file: self.file.as_deref()?,
            source: self.source.as_ref()?,
            sha256: self.sha256.as_deref()?,
        })
    }

    /// What is delivered, as a person names it: the file, or the program's image.
    pub fn what(&self) -> String {
        match (&self.program, self.file_parts()) {
            (Some(p), _) => format!("program {}", p.image),
            (None, Some(f)) => format!(
                "{} (sha256 {}…)",
                f.file,
                f.sha256.get(..12).unwrap_or(f.sha256)
            ),
            (None, None) => "(nothing: neither a file nor a program)".into(),
        }
    }
}

impl DeliveryPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryPhase::Pending => "Pending",
            DeliveryPhase::Delivering => "Delivering",
            DeliveryPhase::Delivered => "Delivered",
            DeliveryPhase::Failed => "Failed",
            DeliveryPhase::RolledBack => "RolledBack",
        }
    }
}
