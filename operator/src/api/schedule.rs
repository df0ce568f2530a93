//! `JobSchedule`: scheduled work on the nodes of the three tiers (ジョブスケジューラ), at set times
//! and in set order, exactly once per node, entry and operating day. The calendar's `batches` stay
//! the default schedule (see `crate::schedule::implicit_spec`).
//!
//! The API server checks what one object can say about itself (CEL rules below); the rest
//! (dependency cycles, unknown entries, selectors) is checked by `crate::schedule::Schedule::new`.

use juki_calendar::Tier;
use juki_calendar::config::{BatchSchedule, ClosedDayPolicy, WeekdayName};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Work that runs on the selected nodes at set times and in set order: after each node stops,
/// at a time of day, or before it starts; after other entries of the same node or of the nodes
/// below it; retried with backoff; held to the node's next online start.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "jukinet.io",
    version = "v1alpha1",
    kind = "JobSchedule",
    doc = "Scheduled work on the nodes of the three tiers (ジョブスケジューラ): jobs at set times and in set order, exactly once per node and operating day.",
    namespaced,
    shortname = "js",
    category = "juki",
    status = "JobScheduleStatus",
    printcolumn(name = "Entries", type_ = "integer", json_path = ".status.entries"),
    printcolumn(name = "Running", type_ = "integer", json_path = ".status.running"),
    printcolumn(name = "Late", type_ = "integer", json_path = ".status.late"),
    printcolumn(name = "Failed", type_ = "integer", json_path = ".status.failed"),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct JobScheduleSpec {
    /// The OperatingCalendar whose open days, closed-day rules and online windows the schedule
    /// follows. Default "japan".
    #[serde(default = "default_calendar")]
    pub calendar: String,
    /// Limits on the runs of every entry of this schedule together. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// The scheduled work, one entry per kind of job. Names are unique (a list map).
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub entries: Vec<ScheduleEntry>,
}

fn default_calendar() -> String {
    "japan".into()
}

/// One kind of job: where, what, when, after what, and what to do when it goes wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.batch) != has(self.template)", "message": "an entry runs exactly one of batch (a juki-node batch) or template (a pod template)"},
    {"rule": "!has(self.template) || (has(self.template.spec) && has(self.template.spec.containers) && size(self.template.spec.containers) > 0)", "message": "template.spec.containers: a pod template needs at least one container"},
    {"rule": "(self.trigger == 'At') == has(self.at)", "message": "at (\"HH:MM\") is required with trigger At and allowed only with it"},
    {"rule": "!has(self.at) || self.at.matches('^[0-2][0-9]:[0-5][0-9]$')", "message": "at must be \"HH:MM\" from 00:00 to 29:59 (the operating day runs past midnight: 25:30 is 01:30 the next morning)"},
    {"rule": "!has(self.leadMinutes) || self.trigger == 'BeforeStart'", "message": "leadMinutes applies only to trigger BeforeStart"},
    {"rule": "!has(self.runOnClosedDays) || !self.runOnClosedDays || self.trigger == 'At'", "message": "runOnClosedDays applies only to trigger At (nodes neither stop nor start on closed days)"},
    {"rule": "self.schedule != 'Weekly' || has(self.weekday)", "message": "a Weekly entry needs weekday"},
    {"rule": "self.schedule != 'Monthly' || has(self.dayOfMonth)", "message": "a Monthly entry needs dayOfMonth"}
]))]
pub struct ScheduleEntry {
    /// Entry name: lowercase letters, digits and '-', at most 20 characters. It names the runs'
    /// Jobs (`<node>-<entry>-<YYYYMMDD>`) and is what `after` refers to.
    #[schemars(
        regex(pattern = r"^[a-z]([a-z0-9-]{0,18}[a-z0-9])?$"),
        length(max = 20)
    )]
    pub name: String,
    /// The nodes that run it. Empty: every node of the schedule's namespace.
    #[serde(default)]
    pub nodes: NodeSelection,
    /// A juki-node batch: the Job runs `juki-node batch NAME --date YYYY-MM-DD` with the node's
    /// image and database, as the calendar's batches do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        regex(pattern = r"^[a-z]([a-z0-9-]{0,18}[a-z0-9])?$"),
        length(max = 20)
    )]
    pub batch: Option<String>,
    /// A pod template for the Job (at least one container). The operator adds
    /// `JUKI_NODE`, `JUKI_OPERATING_DATE` and `JUKI_ATTEMPT` to every container's environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "pod_template_schema")]
    pub template: Option<PodTemplateSpec>,
    /// When a run becomes due: AfterStop (once the node has stopped after its online window:
    /// today's batches), At (a time of the operating day, `at`), or BeforeStart (`leadMinutes`
    /// before the node's online start). Default AfterStop.
    #[serde(default)]
    pub trigger: Trigger,
    /// The time of trigger At, "HH:MM" from 00:00 to 29:59 (past 24:00 is the next morning,
    /// still counted to the operating day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 5))]
    pub at: Option<String>,
    /// Minutes before the node's online start at which a BeforeStart run becomes due. Default 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 720))]
    pub lead_minutes: Option<u32>,
    /// Which operating days: Daily (every open day), Weekly (on `weekday`) or Monthly (on
    /// `dayOfMonth`). Default Daily.
    #[serde(default = "daily")]
    pub schedule: BatchSchedule,
    /// The weekday of a Weekly entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekday: Option<WeekdayName>,
    /// The day of month (1–31) of a Monthly entry; the last day of a shorter month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31))]
    pub day_of_month: Option<u8>,
    /// What a Weekly or Monthly entry does when its day is closed, as the calendar's batches:
    /// Skip, PreviousOpenDay or NextOpenDay. Default Skip.
    #[serde(default)]
    pub closed_day_policy: ClosedDayPolicy,
    /// Trigger At only: run on closed days too (weekends, holidays, the year-end closure).
    /// Default false: never on a closed day.
    #[serde(default)]
    pub run_on_closed_days: bool,
    /// Entries whose run of the same operating day must have succeeded (or been skipped) first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub after: Vec<Dependency>,
    /// Retries of a failed or timed-out run, each a new Job after a backoff. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// How long one attempt may run before it counts as failed (the Job's
    /// activeDeadlineSeconds). Default 60.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 1440))]
    pub timeout_minutes: u32,
    /// Limits on this entry's runs at once. Unset: only the schedule's limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// What to do when a run is not done by its deadline, the node's next online start:
    /// HoldStart (the node does not start until the run is done), Skip (a run not started by
    /// then is skipped) or Alert (it goes on and is reported late). Default Alert.
    #[serde(default)]
    pub deadline: DeadlinePolicy,
    /// Operating days missed while the operator was away (the deadline passed before the run
    /// was seen): Once (only the newest missed day runs), All (every missed day runs, oldest
    /// first) or Skip (none). Up to ten days back. Default Once.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Held (保留): no new attempt of this entry starts while true; attempts already running go
    /// on, due runs wait (and are late, and hold a HoldStart node, as any waiting run).
    /// `kubectl juki hold|release` sets it. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold: bool,
}

fn daily() -> BatchSchedule {
    BatchSchedule::Daily
}

fn default_timeout() -> u32 {
    60
}

/// Only the parts of a pod template the API server checks here; the rest is kept as written and
/// checked when the Job is created.
fn pod_template_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "A pod template (metadata and spec, as in a Job's template).",
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {
            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "spec": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": {
                    "containers": {
                        "type": "array",
                        "maxItems": 20,
                        "items": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                            "required": ["name"],
                            "properties": {"name": {"type": "string"}, "image": {"type": "string"}}
                        }
                    }
                }
            }
        }
    })
}

/// Which nodes run an entry: every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelection {
    /// Namespaces of the nodes. Empty: the schedule's own namespace; "*": every namespace (a
    /// nationwide schedule, kept in the national server's namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub namespaces: Vec<String>,
    /// Tiers: National, Prefecture, CS. Empty: all three.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<Tier>,
    /// Prefecture codes, "01" to "47" (a CS belongs to its municipality's prefecture; the
    /// national server to none). Empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 47))]
    pub prefectures: Vec<PrefectureCode>,
    /// A label selector on the JukiNodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// A prefecture code, "01" to "47".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct PrefectureCode(
    #[schemars(regex(pattern = r"^(0[1-9]|[1-3][0-9]|4[0-7])$"), length(max = 2))] pub String,
);

/// When a run becomes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum Trigger {
    /// Once the node has stopped after its online window of the operating day.
    #[default]
    AfterStop,
    /// At `at` on the operating day.
    At,
    /// `leadMinutes` before the node's online start on the operating day.
    BeforeStart,
}

/// An entry whose run must be done before this one starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    /// The entry's name.
    #[schemars(length(max = 20))]
    pub entry: String,
    /// Whose run of that entry: SameNode (default), NodesBelow (every node right below: a
    /// prefecture's CSs, the national server's prefectures) or AllBelow (the whole subtree).
    #[serde(default)]
    pub scope: DependencyScope,
}

/// Whose runs a dependency waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum DependencyScope {
    /// The same node.
    #[default]
    SameNode,
    /// Every node whose upstream is this node.
    NodesBelow,
    /// Every node under this one, at any depth.
    AllBelow,
}

/// Retries with exponential backoff: attempt n+1 starts `backoffSeconds × 2^(n-1)` (at most
/// `maxBackoffSeconds`) after attempt n failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retries {
    /// Retries after the first attempt, 0 to 10.
    #[schemars(range(max = 10))]
    pub limit: u32,
    /// The first backoff. Default 60.
    #[serde(default = "default_backoff")]
    #[schemars(range(min = 1, max = 86400))]
    pub backoff_seconds: u32,
    /// The longest backoff. Default 1800.
    #[serde(default = "default_max_backoff")]
    #[schemars(range(min = 1, max = 86400))]
    pub max_backoff_seconds: u32,
}

fn default_backoff() -> u32 {
    60
}

fn default_max_backoff() -> u32 {
    1800
}

/// How many runs at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Concurrency {
    /// At most this many runs at once on the nodes of one prefecture (its prefectural server
    /// and CSs; the national server counts alone). Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub per_prefecture: Option<u32>,
    /// At most this many runs at once in all. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub overall: Option<u32>,
}

/// What to do when a run is not done by the node's next online start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum DeadlinePolicy {
    /// Hold the node's next online start until the run is done (or given up).
    HoldStart,
    /// Skip a run not started by its deadline; one already running goes on, reported late.
    Skip,
    /// Let the run go on and report it late (an Event, a metric).
    #[default]
    Alert,
}

/// What happens to operating days whose deadline passed before the run was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
pub enum CatchUp {
    /// Only the newest missed day runs; the older ones are skipped.
    #[default]
    Once,
    /// Every missed day runs, oldest first.
    All,
    /// No missed day runs.
    Skip,
}

/// What the operator last saw of the schedule's runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobScheduleStatus {
    /// Number of entries.
    #[serde(default)]
    pub entries: i32,
    /// Runs running now.
    #[serde(default)]
    pub running: i32,
    /// Runs not done by their deadline.
    #[serde(default)]
    pub late: i32,
    /// Runs failed with no retry left, in the record kept.
    #[serde(default)]
    pub failed: i32,
    /// The last runs per node and entry, and every failure, newest first (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<RunStatus>,
    /// `Valid`: whether the spec passed validation; the message lists every error with its field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the operator first saw the schedule, on its clock: days triggered before are not
    /// missed days (nothing is caught up from before the schedule existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Runs without a Job that a restarted operator could not tell from missed days: the days
    /// skipped, and the days still waiting past their deadline. Kept for the lookback (ten
    /// days), so a restart neither runs a skipped day nor skips a waiting one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unstarted: Vec<UnstartedRuns>,
}

/// Runs of one entry and day without a Job, in one state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnstartedRuns {
    pub entry: String,
    /// Operating date, "YYYY-MM-DD".
    pub date: String,
    pub state: UnstartedState,
    /// "namespace/name" of each JukiNode.
    pub nodes: Vec<String>,
}

/// Why a run has no Job.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum UnstartedState {
    /// Skipped (its catch-up or its deadline Skip).
    Skipped,
    /// Due, not started, its deadline passed.
    Waiting,
}

/// One run: a node, an entry, an operating day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// "namespace/name" of the JukiNode.
    pub node: String,
    pub entry: String,
    /// Operating date, "YYYY-MM-DD".
    pub date: String,
    /// Pending, Running, Succeeded, Failed or Skipped.
    pub state: String,
    /// 1 for the first attempt.
    #[serde(default)]
    pub attempt: u32,
    /// The Job of the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// When the state was entered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Why (a skipped or failed run, a late one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    fn crd_json() -> String {
        serde_json::to_string(&super::JobSchedule::crd()).unwrap()
    }

    #[test]
    fn the_api_server_checks_the_rules_one_entry_can_state() {
        let crd = crd_json();
        for rule in [
            "has(self.batch) != has(self.template)",
            "size(self.template.spec.containers) > 0",
            "(self.trigger == 'At') == has(self.at)",
            "self.at.matches('^[0-2][0-9]:[0-5][0-9]$')",
            "!self.runOnClosedDays || self.trigger == 'At'",
            "self.schedule != 'Weekly' || has(self.weekday)",
        ] {
            assert!(crd.contains(rule), "missing CEL rule {rule}");
        }
    }

    #[test]
    fn entry_names_are_the_keys_of_a_list_map() {
        let crd: serde_json::Value = serde_json::from_str(&crd_json()).unwrap();
        let entries = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["entries"];
        assert_eq!(entries["x-kubernetes-list-type"], "map", "{entries}");
        assert_eq!(entries["x-kubernetes-list-map-keys"][0], "name");
        assert_eq!(entries["maxItems"], 64);
    }

    #[test]
    fn a_pod_template_keeps_its_fields_and_needs_named_containers() {
        let crd: serde_json::Value = serde_json::from_str(&crd_json()).unwrap();
        let template = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["entries"]["items"]["properties"]["template"];
        assert_eq!(template["x-kubernetes-preserve-unknown-fields"], true);
        let container = &template["properties"]["spec"]["properties"]["containers"]["items"];
        assert_eq!(container["required"][0], "name", "{template}");
    }
}
