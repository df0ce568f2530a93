//! The record of runs as the cluster keeps it: each attempt is a Job labelled with its schedule,
//! node, entry, operating date and attempt, so a restarted operator rebuilds Running, Succeeded
//! and Failed from the Jobs it finds, and never makes a Job it made before. (Pending and Skipped
//! have no Job; the controller keeps them in the JobSchedule's status and merges them in.)
//! The calendar batches' Jobs made before the scheduler carry no schedule or attempt label: they
//! count as attempt 1 of the implicit schedule (schedule "").

use std::collections::HashMap;

use jiff::Timestamp;
use jiff::civil::Date;
use k8s_openapi::api::batch::v1::Job;

use super::compile::Schedule;
use super::decide::{RunId, RunState, ScheduleNode};
use super::job::{ATTEMPT_LABEL, SCHEDULE_LABEL};
use crate::resources::{BATCH_LABEL, DATE_LABEL, NODE_LABEL};

/// The runs of schedule `schedule_name` found in `jobs`, the latest attempt of each. Jobs of
/// other schedules, of unknown nodes or entries, or with unreadable labels are left out.
pub fn runs_from_jobs<'a>(
    schedule_name: &str,
    schedule: &Schedule,
    nodes: &[ScheduleNode],
    jobs: impl IntoIterator<Item = &'a Job>,
) -> HashMap<RunId, RunState> {
    let index: HashMap<(&str, &str), usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| ((n.topology.namespace.as_str(), n.topology.name.as_str()), i))
        .collect();
    let mut runs: HashMap<RunId, RunState> = HashMap::new();
    for job in jobs {
        let Some((run, attempt)) = run_of(schedule_name, schedule, &index, job) else {
            continue;
        };
        let newer = runs.get(&run).is_none_or(|s| attempt_of(*s) < attempt);
        if newer {
            runs.insert(run, state_of(job, attempt));
        }
    }
    runs
}

fn run_of(
    schedule_name: &str,
    schedule: &Schedule,
    index: &HashMap<(&str, &str), usize>,
    job: &Job,
) -> Option<(RunId, u32)> {
    let labels = job.metadata.labels.as_ref()?;
    let label = |k: &str| labels.get(k).map(String::as_str);
    if label(SCHEDULE_LABEL).unwrap_or("") != schedule_name {
        return None;
    }
    let namespace = job.metadata.namespace.as_deref()?;
    let node = *index.get(&(namespace, label(NODE_LABEL)?))?;
    let entry = schedule.entry(label(BATCH_LABEL)?)?;
    let date = Date::strptime("%Y%m%d", label(DATE_LABEL)?).ok()?;
    let attempt = label(ATTEMPT_LABEL).map_or(Some(1), |a| a.parse().ok())?;
    Some((RunId { node, entry, date }, attempt))
}

/// A Job's state: succeeded, failed (its Failed condition, e.g. DeadlineExceeded), or running.
pub(super) fn state_of(job: &Job, attempt: u32) -> RunState {
    let status = job.status.clone().unwrap_or_default();
    let condition = |kind: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    if status.succeeded.unwrap_or(0) > 0 || condition("Complete").is_some() {
        return RunState::Succeeded { attempt };
    }
    if let Some(failed) = condition("Failed") {
        let at = failed
            .last_transition_time
            .as_ref()
            .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
        return RunState::Failed { attempt, at };
    }
    let started = status
        .start_time
        .as_ref()
        .or(job.metadata.creation_timestamp.as_ref())
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    RunState::Running { attempt, started }
}

fn attempt_of(state: RunState) -> u32 {
    match state {
        RunState::Running { attempt, .. }
        | RunState::Succeeded { attempt }
        | RunState::Failed { attempt, .. } => attempt,
        RunState::Pending | RunState::Skipped => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{JobScheduleSpec, NodePhase};
    use crate::topology::TopologyNode;
    use jiff::civil::date;
    use juki_calendar::Tier;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn job(schedule: Option<&str>, entry: &str, attempt: Option<&str>, status: JobStatus) -> Job {
        let mut labels = BTreeMap::from([
            (NODE_LABEL.to_string(), "cs-131016".to_string()),
            (BATCH_LABEL.to_string(), entry.to_string()),
            (DATE_LABEL.to_string(), "20261130".to_string()),
        ]);
        if let Some(s) = schedule {
            labels.insert(SCHEDULE_LABEL.into(), s.into());
        }
        if let Some(a) = attempt {
            labels.insert(ATTEMPT_LABEL.into(), a.into());
        }
        let mut job = Job::default();
        job.metadata.namespace = Some("p13".into());
        job.metadata.labels = Some(labels);
        job.status = Some(status);
        job
    }

    fn failed_at(at: &str) -> JobStatus {
        JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some("DeadlineExceeded".into()),
                last_transition_time: Some(Time(at.parse().unwrap())),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        }
    }

    fn nodes() -> Vec<ScheduleNode> {
        vec![ScheduleNode {
            topology: TopologyNode {
                namespace: "p13".into(),
                name: "cs-131016".into(),
                tier: Tier::Cs,
                prefecture: Some(13),
                upstream: None,
                tls: false,
            },
            labels: BTreeMap::new(),
            online_end: None,
            phase: NodePhase::Offline,
            stopped: None,
        }]
    }

    fn schedule(names: &[&str]) -> Schedule {
        let entries: Vec<_> = names
            .iter()
            .map(|n| json!({"name": n, "batch": n}))
            .collect();
        let spec: JobScheduleSpec = serde_json::from_value(json!({ "entries": entries })).unwrap();
        Schedule::new(&spec).unwrap()
    }

    #[test]
    fn the_latest_attempt_of_each_run_is_rebuilt_from_the_jobs() {
        let s = schedule(&["report", "export"]);
        let jobs = vec![
            job(
                Some("nightly"),
                "report",
                None,
                failed_at("2026-11-30T13:00:00Z"),
            ),
            job(Some("nightly"), "report", Some("2"), JobStatus::default()),
            job(
                Some("nightly"),
                "export",
                Some("1"),
                JobStatus {
                    succeeded: Some(1),
                    ..JobStatus::default()
                },
            ),
            // Another schedule's, an unknown entry's: not ours.
            job(Some("other"), "report", Some("3"), JobStatus::default()),
            job(Some("nightly"), "unknown", Some("1"), JobStatus::default()),
        ];
        let runs = runs_from_jobs("nightly", &s, &nodes(), &jobs);
        let run = |entry| RunId {
            node: 0,
            entry,
            date: date(2026, 11, 30),
        };
        assert_eq!(runs.len(), 2, "{runs:?}");
        assert_eq!(
            runs[&run(0)],
            RunState::Running {
                attempt: 2,
                started: Timestamp::UNIX_EPOCH
            }
        );
        assert_eq!(runs[&run(1)], RunState::Succeeded { attempt: 1 });
    }

    #[test]
    fn a_calendar_batch_job_from_before_the_scheduler_is_attempt_one_of_the_implicit_schedule() {
        let s = schedule(&["statistics"]);
        let jobs = vec![job(
            None,
            "statistics",
            None,
            failed_at("2026-11-30T13:00:00Z"),
        )];
        let runs = runs_from_jobs("", &s, &nodes(), &jobs);
        assert_eq!(
            runs.values().copied().collect::<Vec<_>>(),
            [RunState::Failed {
                attempt: 1,
                at: "2026-11-30T13:00:00Z".parse().unwrap()
            }]
        );
        assert!(runs_from_jobs("nightly", &s, &nodes(), &jobs).is_empty());
    }
}
