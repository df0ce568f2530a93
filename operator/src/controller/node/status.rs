//! Status: the JukiNode status a plan leads to, and its conditions. Pure.

use jiff::Timestamp;
use jiff::civil::Date;
use juki_calendar::Calendar;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{
    FinalAnswerStatus, JukiNode, JukiNodeStatus, LastBatch, NextTransition, NodePhase,
};
use crate::planner::{JobState, Plan, Reason};

#[allow(clippy::too_many_arguments)]
pub(super) fn next_status(
    node: &JukiNode,
    old: &JukiNodeStatus,
    plan: &Plan,
    calendar: &Calendar,
    now: Timestamp,
    ready: i32,
    upstream: Option<String>,
    final_answer: Option<FinalAnswerStatus>,
) -> JukiNodeStatus {
    let mut s = old.clone();
    let changed = s.phase != Some(plan.phase);
    s.phase = Some(plan.phase);
    s.reason = Some(plan.reason.to_string());
    s.message = Some(plan.message.clone());
    s.observed_generation = node.metadata.generation;
    s.ready_replicas = ready;
    s.upstream = upstream;
    s.next_transition = plan.next.map(|(at, phase)| NextTransition {
        at: Time(at),
        phase,
    });
    if changed {
        s.phase_since = Some(Time(now));
    }
    if plan.operating_date.is_some() {
        s.operating_date = plan.operating_date.map(|d| d.to_string());
    }
    s.final_answer = final_answer;
    if let Some((date, outcome)) = recorded_batch(plan) {
        let batches = calendar
            .batch_runs_for(node.spec.tier, date)
            .iter()
            .map(|r| r.batch.name.clone())
            .collect();
        s.last_batch = Some(LastBatch {
            date: date.to_string(),
            outcome: outcome.as_str().into(),
            batches,
        });
    }
    // Ready: Online with every replica ready (Degraded is Online without them).
    let online = plan.phase == NodePhase::Online && ready >= node.spec.replicas;
    set_condition(
        &mut s.conditions,
        "Ready",
        online,
        plan.reason.as_str(),
        &plan.message,
        now,
    );
    let in_window = matches!(plan.phase, NodePhase::Starting | NodePhase::Online)
        || plan.reason == Reason::WaitingForUpstream;
    set_condition(
        &mut s.conditions,
        "InWindow",
        in_window,
        if in_window {
            Reason::WindowOpen
        } else {
            Reason::OutsideWindow
        }
        .as_str(),
        "",
        now,
    );
    let upstream_ok = !matches!(
        plan.reason,
        Reason::UpstreamMissing | Reason::UpstreamAmbiguous | Reason::WaitingForUpstream
    );
    let up_reason = if upstream_ok {
        "UpstreamResolved"
    } else {
        plan.reason.as_str()
    };
    set_condition(
        &mut s.conditions,
        "UpstreamReady",
        upstream_ok,
        up_reason,
        if upstream_ok { "" } else { &plan.message },
        now,
    );
    if let Some(last) = &s.last_batch {
        let ok = last.outcome == BatchOutcome::Succeeded.as_str();
        set_condition(
            &mut s.conditions,
            "BatchSucceeded",
            ok,
            if ok {
                Reason::BatchSucceeded
            } else {
                Reason::BatchFailed
            }
            .as_str(),
            &format!("batches of {}", last.date),
            now,
        );
    }
    s
}

/// The date and outcome a plan records in `status.lastBatch`: a failed batch's date, else the
/// date whose batches it records as done (also on the way through a catch-up).
fn recorded_batch(plan: &Plan) -> Option<(Date, BatchOutcome)> {
    match (plan.reason, plan.operating_date, plan.batches_done) {
        (Reason::BatchFailed, Some(date), _) => Some((date, BatchOutcome::Failed)),
        (_, _, Some(date)) => Some((date, BatchOutcome::Succeeded)),
        _ => None,
    }
}

/// The status of a node that cannot be planned: Failed with the reason and message, Ready false;
/// everything else as it was.
pub(super) fn invalid_status(
    node: &JukiNode,
    old: &JukiNodeStatus,
    reason: Reason,
    message: &str,
    now: Timestamp,
) -> JukiNodeStatus {
    let mut s = old.clone();
    s.phase = Some(NodePhase::Failed);
    s.reason = Some(reason.to_string());
    s.message = Some(message.to_string());
    s.observed_generation = node.metadata.generation;
    set_condition(
        &mut s.conditions,
        "Ready",
        false,
        reason.as_str(),
        message,
        now,
    );
    if old.phase != Some(NodePhase::Failed) {
        s.phase_since = Some(Time(now));
    }
    s
}

/// Whether the node is asked for its delivered files now: as it goes Online (files change only
/// at a start), when node calls are on and any FileDelivery exists. Deliveries usually live in
/// the national namespace and reach nodes in every other, so any namespace counts.
pub(super) fn reads_delivered_files(
    plan: &Plan,
    old_phase: Option<NodePhase>,
    node_calls: bool,
    deliveries: &[std::sync::Arc<crate::api::FileDelivery>],
) -> bool {
    let going_online = plan.phase == NodePhase::Online && old_phase != Some(NodePhase::Online);
    going_online && node_calls && !deliveries.is_empty()
}

/// The words of `status.finalAnswer.outcome`.
pub(super) mod final_outcome {
    /// The node answered that every update reached its upstream.
    pub const RECEIVED: &str = "Received";
    /// The node answered `done: false`: updates wait for tomorrow.
    pub const HELD: &str = "Held";
    /// No answer (unreachable, timed out, an error status).
    pub const FAILED: &str = "Failed";
    /// `--final-exchange skip`.
    pub const SKIPPED: &str = "Skipped";
}

/// How a day's batches ended (status.lastBatch.outcome, the batch-run metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BatchOutcome {
    Succeeded,
    Failed,
}

impl BatchOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            BatchOutcome::Succeeded => "Succeeded",
            BatchOutcome::Failed => "Failed",
        }
    }
}

/// The batches whose outcome a plan records (see [`recorded_batch`]), by name: the failed one,
/// or every batch of the date done; none for any other plan.
pub(super) fn batch_outcomes(
    plan: &Plan,
    calendar: &Calendar,
    tier: juki_calendar::Tier,
    jobs: &[(String, Date, JobState)],
) -> Vec<(String, BatchOutcome)> {
    match recorded_batch(plan) {
        Some((date, BatchOutcome::Failed)) => jobs
            .iter()
            .filter(|(_, d, s)| *d == date && *s == JobState::Failed)
            .map(|(name, _, _)| (name.clone(), BatchOutcome::Failed))
            .collect(),
        Some((date, outcome)) => calendar
            .batch_runs_for(tier, date)
            .iter()
            .map(|r| (r.batch.name.clone(), outcome))
            .collect(),
        None => Vec::new(),
    }
}

/// Sets the SpecValid condition: False with the reason and message of an invalid calendar or
/// spec the node is planned around; True again once it is valid.
pub(super) fn spec_validity(
    s: &mut JukiNodeStatus,
    problem: Option<&(Reason, String)>,
    now: Timestamp,
) {
    match problem {
        Some((reason, message)) => {
            let reason = reason.as_str();
            set_condition(&mut s.conditions, "SpecValid", false, reason, message, now);
        }
        // Shown once there was a problem; no condition (and no write) for the nodes never invalid.
        None if s.conditions.iter().any(|c| c.type_ == "SpecValid") => {
            set_condition(&mut s.conditions, "SpecValid", true, "Valid", "", now);
        }
        None => {}
    }
}

/// The message of a False SpecValid condition.
pub(super) fn spec_problem(s: &JukiNodeStatus) -> Option<&str> {
    s.conditions
        .iter()
        .find(|c| c.type_ == "SpecValid" && c.status == "False")
        .map(|c| c.message.as_str())
}

/// The top-level status fields that differ, for the debug log of why a status is written.
pub(super) fn changed_fields(old: Option<&JukiNodeStatus>, new: &JukiNodeStatus) -> Vec<String> {
    let old = serde_json::to_value(old).unwrap_or_default();
    let new = serde_json::to_value(new).unwrap_or_default();
    let empty = serde_json::Map::new();
    let (o, n) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    n.keys()
        .chain(o.keys())
        .filter(|k| o.get(*k) != n.get(*k))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Sets a condition; lastTransitionTime changes only when the status does.
pub(super) fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let status = if ok { "True" } else { "False" }.to_string();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status;
            c.reason = reason.into();
            c.message = message.into();
        }
        None => conditions.push(Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(now),
            observed_generation: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::planner::Action;
    use juki_calendar::CalendarConfig;
    use serde_json::json;

    fn ready_condition(ready: i32, reason: Reason) -> (String, String) {
        let spec = serde_json::from_value(json!({
            "tier": "CS", "municipality": "131016", "replicas": 2
        }))
        .unwrap();
        let node = JukiNode::new("cs-131016", spec);
        let calendar = Calendar::new(&CalendarConfig::default()).unwrap();
        let plan = Plan {
            phase: NodePhase::Online,
            reason,
            message: String::new(),
            replicas: Some(2),
            action: Action::None,
            operating_date: None,
            batches_done: None,
            wake_at: None,
            next: None,
            defer_status: false,
        };
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let s = next_status(
            &node,
            &JukiNodeStatus::default(),
            &plan,
            &calendar,
            now,
            ready,
            None,
            None,
        );
        let c = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn a_node_reads_its_delivered_files_as_it_goes_online_whatever_namespace_the_deliveries_are_in()
    {
        let plan = |phase| Plan::new(phase, Reason::Ready, "");
        // The delivery lives in the national namespace, the node in its prefecture's.
        let mut fd: crate::api::FileDelivery = serde_json::from_value(json!({
            "apiVersion": "jukinet.io/v1alpha1", "kind": "FileDelivery",
            "metadata": {"name": "codes"},
            "spec": {"file": "code-table", "sha256": "a".repeat(64), "source": {"inline": "x"}},
        }))
        .unwrap();
        fd.metadata.namespace = Some("juki-national".into());
        let deliveries = [std::sync::Arc::new(fd)];
        let starting = Some(NodePhase::Starting);
        assert!(reads_delivered_files(
            &plan(NodePhase::Online),
            starting,
            true,
            &deliveries
        ));
        // Already Online, not going Online, node calls off (kwok), or no delivery at all: no call.
        let online = Some(NodePhase::Online);
        assert!(!reads_delivered_files(
            &plan(NodePhase::Online),
            online,
            true,
            &deliveries
        ));
        assert!(!reads_delivered_files(
            &plan(NodePhase::Starting),
            starting,
            true,
            &deliveries
        ));
        assert!(!reads_delivered_files(
            &plan(NodePhase::Online),
            starting,
            false,
            &deliveries
        ));
        assert!(!reads_delivered_files(
            &plan(NodePhase::Online),
            starting,
            true,
            &[]
        ));
    }

    #[test]
    fn batch_metrics_name_each_batch_not_daily() {
        let calendar = Calendar::new(&CalendarConfig::default()).unwrap();
        let date = jiff::civil::date(2026, 11, 30);
        let mut plan = Plan {
            phase: NodePhase::Offline,
            reason: Reason::BatchSucceeded,
            message: String::new(),
            replicas: Some(0),
            action: Action::None,
            operating_date: Some(date),
            batches_done: Some(date),
            wake_at: None,
            next: None,
            defer_status: false,
        };
        let tier = juki_calendar::Tier::Cs;
        let all_succeeded = [
            ("statistics".to_string(), BatchOutcome::Succeeded),
            ("backup".to_string(), BatchOutcome::Succeeded),
        ];
        assert_eq!(batch_outcomes(&plan, &calendar, tier, &[]), all_succeeded);
        // On the way through a catch-up: the date done, while the next date's batch runs.
        plan.phase = NodePhase::DailyBatch;
        plan.reason = Reason::BatchRunning;
        plan.operating_date = date.tomorrow().ok();
        assert_eq!(batch_outcomes(&plan, &calendar, tier, &[]), all_succeeded);
        plan.operating_date = Some(date);
        plan.reason = Reason::BatchFailed;
        let jobs = [
            ("statistics".to_string(), date, JobState::Succeeded),
            ("backup".to_string(), date, JobState::Failed),
        ];
        assert_eq!(
            batch_outcomes(&plan, &calendar, tier, &jobs),
            [("backup".to_string(), BatchOutcome::Failed)]
        );
        plan.reason = Reason::Ready;
        plan.batches_done = None;
        assert!(batch_outcomes(&plan, &calendar, tier, &jobs).is_empty());
    }

    #[test]
    fn an_unplannable_node_is_failed_with_why_and_keeps_the_rest_of_its_status() {
        let spec = serde_json::from_value(json!({"tier": "National"})).unwrap();
        let mut node = JukiNode::new("national", spec);
        node.metadata.generation = Some(3);
        let before = Timestamp::from_second(1_800_000_000).unwrap();
        let now = Timestamp::from_second(1_800_000_060).unwrap();
        let online = JukiNodeStatus {
            phase: Some(NodePhase::Online),
            reason: Some("Ready".into()),
            phase_since: Some(Time(before)),
            operating_date: Some("2027-01-15".into()),
            ready_replicas: 1,
            ..Default::default()
        };
        let message = "OperatingCalendar \"juki\" does not exist";
        let failed = invalid_status(&node, &online, Reason::CalendarUnavailable, message, now);
        assert_eq!(failed.phase, Some(NodePhase::Failed));
        assert_eq!(failed.reason.as_deref(), Some("CalendarUnavailable"));
        assert_eq!(failed.message.as_deref(), Some(message));
        assert_eq!(failed.observed_generation, Some(3));
        assert_eq!(failed.phase_since, Some(Time(now)));
        assert_eq!(failed.operating_date.as_deref(), Some("2027-01-15"));
        let ready = &failed.conditions[0];
        assert_eq!(
            (
                ready.type_.as_str(),
                ready.status.as_str(),
                ready.reason.as_str()
            ),
            ("Ready", "False", "CalendarUnavailable")
        );
        // Failed already: the phase keeps its start.
        let later = Timestamp::from_second(1_800_000_600).unwrap();
        let again = invalid_status(&node, &failed, Reason::InvalidSpec, "spec.tier", later);
        assert_eq!(again.phase_since, Some(Time(now)));
        assert_eq!(again.reason.as_deref(), Some("InvalidSpec"));
    }

    #[test]
    fn ready_means_online_with_every_replica_ready() {
        assert_eq!(
            ready_condition(2, Reason::Ready),
            ("True".into(), "Ready".into())
        );
        assert_eq!(
            ready_condition(0, Reason::Degraded),
            ("False".into(), "Degraded".into())
        );
        assert_eq!(
            ready_condition(1, Reason::Degraded),
            ("False".into(), "Degraded".into())
        );
    }
}
