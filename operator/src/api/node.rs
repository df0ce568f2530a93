//! `JukiNode`: one server of the network (national, prefectural or a municipality's CS).

use juki_calendar::Tier;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::NodeRef;

/// A node of the Basic Resident Registration Network. The operator runs it as a Deployment of the
/// juki-node service, scaled up inside its tier's online window on open days (once its upstream is
/// Online) and down again in dependency order, then runs its daily batches.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "jukinet.io",
    version = "v1alpha1",
    kind = "JukiNode",
    doc = "A node of the Basic Resident Registration Network (national, prefectural or a municipality CS), run by the jukinet operator.",
    namespaced,
    shortname = "jn",
    category = "juki",
    status = "JukiNodeStatus",
    printcolumn(name = "Tier", type_ = "string", json_path = ".spec.tier"),
    printcolumn(name = "Pref", type_ = "string", json_path = ".spec.prefecture"),
    printcolumn(name = "Muni", type_ = "string", json_path = ".spec.municipality"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".status.reason"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.nextTransition.at"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.tier == oldSelf.tier", "message": "spec.tier is immutable: create a new JukiNode instead"},
    {"rule": "self.tier != 'CS' || has(self.municipality)", "message": "a CS node needs spec.municipality (its 6-digit local government code)"},
    {"rule": "self.tier != 'Prefecture' || has(self.prefecture)", "message": "a Prefecture node needs spec.prefecture (01-47)"},
    {"rule": "self.tier != 'National' || !has(self.prefecture)", "message": "a National node has no spec.prefecture"},
    {"rule": "self.tier != 'National' || !has(self.upstream)", "message": "a National node has no spec.upstream"},
    {"rule": "!has(self.municipality) || self.tier == 'CS'", "message": "spec.municipality applies only to the CS tier"},
    {"rule": "!has(self.onlineEnd) || self.tier == 'Prefecture'", "message": "spec.onlineEnd applies only to the Prefecture tier"},
    {"rule": "!has(self.municipality) || !has(self.prefecture) || self.municipality.startsWith(self.prefecture)", "message": "spec.municipality must lie in spec.prefecture (its first two digits)"},
    {"rule": "!has(self.replicas) || self.replicas <= 1 || (has(self.database) && self.database.kind == 'Postgres')", "message": "spec.replicas: more than 1 replica needs spec.database.kind Postgres; an embedded SQLite database is one file on one volume, with one writer"}
]))]
pub struct JukiNodeSpec {
    /// Tier of the node: National, Prefecture or CS. Immutable.
    pub tier: Tier,
    /// Prefecture code, "01" to "47". Required for Prefecture; optional for CS (taken from the
    /// municipality code); not allowed for National.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "prefecture_code_schema")]
    pub prefecture: Option<String>,
    /// Local government code (地方公共団体コード) of the municipality, 6 digits with its check digit.
    /// Required for CS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "municipality_code_schema")]
    pub municipality: Option<String>,
    /// The node this one sends updates to. Default: a CS's Prefecture node of its prefecture, a
    /// Prefecture's National node (found by tier, in any namespace). It must be a node of the
    /// tier right above (a CS names a Prefecture node, a Prefecture node the National one; a
    /// National node has none), not the node itself and not a cycle: otherwise the node is
    /// planned with the upstream it had (status.upstream) and reports SpecValid=False, or, with
    /// none that is still valid, it is Failed with reason InvalidSpec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<NodeRef>,
    /// Name of the OperatingCalendar to follow. Default "japan".
    #[serde(default = "default_calendar")]
    pub calendar: String,
    /// Replicas while online. Default 1; more only with `database.kind: Postgres` (SQLite is
    /// one file on one volume, with one writer).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 20))]
    pub replicas: i32,
    /// Pod template parts of the node service.
    #[serde(default)]
    pub template: NodeTemplate,
    /// Where the node keeps its records. Default: embedded SQLite on a volume.
    #[serde(default)]
    pub database: Database,
    /// The volume the nightly `backup` batch writes to: a claim of its own (`<node>-backups`),
    /// so that a backup outlives the database's volume and the pod, whatever the database.
    #[serde(default)]
    pub backups: BackupVolume,
    /// This prefecture's own online end, "HH:MM" (up to "29:59"); overrides the calendar's
    /// prefecture window end. Prefecture tier only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-2][0-9]:[0-5][0-9]$"))]
    pub online_end: Option<String>,
    /// Freeze the node: until it is set back to false the operator changes nothing on it (no
    /// scaling, no final request, no batch Job; phase kept, reason Suspended). A node suspended
    /// while Offline stays Offline, and the nodes below it with it; the nodes above never wait
    /// for a suspended node: they stop at their own window end as if it were Offline.
    #[serde(default)]
    pub suspend: bool,
    /// Pin the node Online or Offline until a given time (for maintenance); expires by itself.
    /// Online also keeps the node's whole upstream chain Online until then (unless a node
    /// above has its own override).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "override")]
    pub manual_override: Option<ManualOverride>,
    /// Mutual TLS between the tiers: the node serves HTTPS with this identity, its upstream is
    /// called over HTTPS, and the operator sends its final request straight to the node with
    /// its own client certificate. Unset: plain HTTP (local demos and tests only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<NodeTls>,
}

/// The node's identity for mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTls {
    /// A Secret in the node's namespace (type kubernetes.io/tls, as cert-manager writes them):
    /// `tls.crt`, the node's certificate (CN `national`, `pref-PP` or `cs-MMMMMM`, with
    /// NAME.NAMESPACE.svc among its DNS names), `tls.key`, and `ca.crt`, the project CA that
    /// signs every jukinet identity.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
}

fn default_calendar() -> String {
    "japan".into()
}

fn default_replicas() -> i32 {
    1
}

fn prefecture_code_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": "^(0[1-9]|[1-3][0-9]|4[0-7])$",
        "maxLength": 2,
    })
}

/// The check digit of 地方公共団体コード as a CEL rule: weights 6,5,4,3,2 on the first five digits,
/// r = Σ mod 11, check digit = (11 − r) mod 10. Kept equal to `juki_codes` by a test.
pub(crate) const MUNICIPALITY_SUM: &str = "(int(self.substring(0,1))*6 + int(self.substring(1,2))*5 + int(self.substring(2,3))*4 + int(self.substring(3,4))*3 + int(self.substring(4,5))*2)";

fn municipality_code_schema(_: &mut SchemaGenerator) -> Schema {
    let expected = format!("(11 - {MUNICIPALITY_SUM} % 11) % 10");
    json_schema!({
        "type": "string",
        "pattern": "^(0[1-9]|[1-3][0-9]|4[0-7])[0-9]{4}$",
        "maxLength": 6,
        "x-kubernetes-validations": [{
            "rule": format!("!self.matches('^[0-9]{{6}}$') || int(self.substring(5,6)) == {expected}"),
            "messageExpression": format!("'municipality code ' + self + ': check digit is ' + self.substring(5,6) + ', expected ' + ['0','1','2','3','4','5','6','7','8','9'][{expected}] + ' (weights 6,5,4,3,2; (11 - sum mod 11) mod 10)'"),
        }],
    })
}

/// Pod template parts of the node service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTemplate {
    /// Container image of juki-node.
    #[serde(default = "default_image")]
    pub image: String,
    /// Compute resources of the node container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the node's pods (the service and its batch Jobs) must run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the node's pods (the service and its batch Jobs) tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
}

fn default_image() -> String {
    "jukinet/juki-node:0.1.0".into()
}

impl JukiNodeSpec {
    /// The node's prefecture ("01".."47"): its own, or its municipality's first two digits;
    /// None for the national node. Read from the spec as written, so an invalid node has one too.
    pub fn prefecture_code(&self) -> Option<&str> {
        self.prefecture
            .as_deref()
            .or_else(|| self.municipality.as_deref().and_then(|m| m.get(..2)))
    }
}

impl Default for NodeTemplate {
    fn default() -> Self {
        NodeTemplate {
            image: default_image(),
            resources: None,
            node_selector: None,
            tolerations: None,
        }
    }
}

/// Storage of the node's records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.kind != 'Postgres' || has(self.postgres)", "message": "spec.database.postgres is required when kind is Postgres"}
]))]
pub struct Database {
    /// Sqlite (embedded, one file on a volume; the default) or Postgres (production).
    #[serde(default)]
    pub kind: DatabaseKind,
    /// Settings of the embedded SQLite database.
    #[serde(default)]
    pub sqlite: SqliteDatabase,
    /// Settings of a PostgreSQL database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresDatabase>,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            kind: DatabaseKind::Sqlite,
            sqlite: SqliteDatabase::default(),
            postgres: None,
        }
    }
}

/// Which database backend a node uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum DatabaseKind {
    #[default]
    Sqlite,
    Postgres,
}

/// The embedded SQLite database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SqliteDatabase {
    /// Size of the volume that holds the database file. Default "1Gi".
    #[serde(default = "default_storage_size")]
    pub storage_size: String,
    /// Storage class of that volume; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// What happens to the volume, and so to the residents' records, when the JukiNode is
    /// deleted (a `helm uninstall` too): `Retain` (the default) keeps the claim, and a JukiNode
    /// of the same name in the namespace finds its data again; `Delete` lets the garbage
    /// collector remove it with the node.
    #[serde(default)]
    pub when_deleted: ClaimPolicy,
}

/// The volume of a node's backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupVolume {
    /// Size of the volume. Default "1Gi".
    #[serde(default = "default_storage_size")]
    pub storage_size: String,
    /// Storage class of the volume; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// What happens to the backups when the JukiNode is deleted: `Retain` (the default) keeps
    /// the claim, `Delete` lets the garbage collector remove it with the node.
    #[serde(default)]
    pub when_deleted: ClaimPolicy,
}

impl Default for BackupVolume {
    fn default() -> Self {
        BackupVolume {
            storage_size: default_storage_size(),
            storage_class_name: None,
            when_deleted: ClaimPolicy::Retain,
        }
    }
}

/// The fate of a node's data volume when the node is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ClaimPolicy {
    #[default]
    Retain,
    Delete,
}

fn default_storage_size() -> String {
    "1Gi".into()
}

impl Default for SqliteDatabase {
    fn default() -> Self {
        SqliteDatabase {
            storage_size: default_storage_size(),
            storage_class_name: None,
            when_deleted: ClaimPolicy::Retain,
        }
    }
}

/// A PostgreSQL database whose connection URL is kept in a Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PostgresDatabase {
    /// The Secret key holding the `postgres://` URL.
    pub url_secret_ref: SecretKeyRef,
}

/// A key of a Secret in the node's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key in the Secret. Default "url".
    #[serde(default = "default_url_key")]
    pub key: String,
}

fn default_url_key() -> String {
    "url".into()
}

/// A manual override, for maintenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManualOverride {
    /// Online or Offline.
    pub phase: OverridePhase,
    /// When the override ends by itself (RFC 3339).
    pub until: Time,
    /// Why, shown in status and Events.
    #[serde(default)]
    pub reason: String,
}

/// The phase a manual override pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OverridePhase {
    Online,
    Offline,
}

/// Where a node is in its operating day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum NodePhase {
    /// Scaled to zero, outside its window or waiting for its upstream.
    Offline,
    /// Window open and upstream Online; Deployment scaled up, waiting for ready replicas.
    Starting,
    /// Ready replicas reached; serving.
    Online,
    /// Window ended; waiting for every downstream node to be Offline, then the final request /
    /// final answer exchange.
    Draining,
    /// Scaled to zero, waiting for the pods to go.
    Stopping,
    /// Running the day's batch Jobs, in order.
    DailyBatch,
    /// Readiness timeout, batch failure or invalid spec; see reason. Left by the same rules once
    /// the cause is gone.
    Failed,
}

/// What the operator last observed and decided for a node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JukiNodeStatus {
    /// Current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<NodePhase>,
    /// Why the node is in this phase, one CamelCase word (e.g. OutsideWindow, WaitingForUpstream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A sentence for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Ready (Online with every replica ready; False with reason Degraded when pods fail while
    /// Online), UpstreamReady, InWindow, BatchSucceeded, and SpecValid (False while the node is
    /// planned with the last valid calendar or online end because of an invalid edit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready replicas of the node's Deployment.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The resolved upstream, "namespace/name".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The next planned phase change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_transition: Option<NextTransition>,
    /// The last daily batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_batch: Option<LastBatch>,
    /// When the current phase was entered, on the operator's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<Time>,
    /// The operating date the current phase belongs to, "YYYY-MM-DD".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_date: Option<String>,
    /// The final request / final answer exchange of the last stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_answer: Option<FinalAnswerStatus>,
    /// The delivered files the node applied (FileDelivery), as it said when it last went
    /// Online: files change only at a start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivered_files: Vec<DeliveredFile>,
    /// The image the node's pods run: its own `spec.template.image`, or a program delivered
    /// to it (FileDelivery `spec.program`), which the pods take only at a start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// A delivered file's version on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveredFile {
    pub file: String,
    pub sha256: String,
    /// When the node applied it (RFC 3339, on the node's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
}

/// The outcome of a final request / final answer exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FinalAnswerStatus {
    /// Operating date, "YYYY-MM-DD".
    pub date: String,
    /// Received (every update reached the upstream), Held (`done: false`: updates wait in the
    /// outbox for tomorrow), Skipped or Failed (no answer).
    pub outcome: String,
    /// What the node reported (updates held for the next online start), or why it failed.
    #[serde(default)]
    pub message: String,
}

/// A planned phase change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NextTransition {
    /// When (RFC 3339).
    pub at: Time,
    /// The phase it leads to.
    pub phase: NodePhase,
}

/// The outcome of a day's batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastBatch {
    /// Operating date, "YYYY-MM-DD".
    pub date: String,
    /// Succeeded or Failed.
    pub outcome: String,
    /// The batches run, in order.
    #[serde(default)]
    pub batches: Vec<String>,
}
