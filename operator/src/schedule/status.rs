//! The JobSchedule's status from the record of runs and the latest decisions: counts, the latest
//! run of each node and entry, and every run given up, newest first, bounded so that a
//! nationwide schedule (5,400 runs a night) stays a small object. Conditions are the controller's.

use std::collections::{BTreeMap, HashMap};

use super::compile::Schedule;
use super::decide::{Decisions, RunId, RunState, ScheduleNode};
use super::key::job_name;
use crate::api::{JobScheduleStatus, RunStatus};

/// Counts and the runs worth showing, at most `keep` of them (failures first).
pub fn summarize(
    schedule: &Schedule,
    nodes: &[ScheduleNode],
    records: &HashMap<RunId, RunState>,
    decisions: &Decisions,
    keep: usize,
) -> JobScheduleStatus {
    let given_up = |run: &RunId, state: &RunState| {
        matches!(state, RunState::Failed { attempt, .. }
            if *attempt > schedule.entries[run.entry].retries.limit)
    };
    let late: BTreeMap<RunId, bool> = decisions
        .late
        .iter()
        .filter(|l| l.missed)
        .map(|l| (l.run, true))
        .collect();
    // The latest day of each node and entry.
    let mut latest: BTreeMap<(usize, usize), RunId> = BTreeMap::new();
    for run in records.keys() {
        let slot = latest.entry((run.node, run.entry)).or_insert(*run);
        if run.date > slot.date {
            *slot = *run;
        }
    }
    let mut failures: Vec<RunId> = records
        .iter()
        .filter(|(run, state)| given_up(run, state))
        .map(|(run, _)| *run)
        .collect();
    failures.sort_by(|a, b| b.date.cmp(&a.date).then(a.cmp(b)));
    let mut rest: Vec<RunId> = latest
        .into_values()
        .filter(|run| !failures.contains(run))
        .collect();
    rest.sort_by(|a, b| b.date.cmp(&a.date).then(a.cmp(b)));
    let runs = failures
        .iter()
        .chain(&rest)
        .take(keep)
        .map(|run| run_status(schedule, nodes, *run, records[run], late.contains_key(run)))
        .collect();
    let count = |f: &dyn Fn(&RunId, &RunState) -> bool| {
        records.iter().filter(|(r, s)| f(r, s)).count() as i32
    };
    JobScheduleStatus {
        entries: schedule.entries.len() as i32,
        running: count(&|_, s| matches!(s, RunState::Running { .. })),
        late: late.len() as i32,
        failed: count(&given_up),
        runs,
        ..JobScheduleStatus::default()
    }
}

fn run_status(
    schedule: &Schedule,
    nodes: &[ScheduleNode],
    run: RunId,
    state: RunState,
    late: bool,
) -> RunStatus {
    let node = &nodes[run.node].topology;
    let entry = &schedule.entries[run.entry];
    let (name, attempt) = match state {
        RunState::Pending => ("Pending", 0),
        RunState::Running { attempt, .. } => ("Running", attempt),
        RunState::Succeeded { attempt } => ("Succeeded", attempt),
        RunState::Failed { attempt, .. } => ("Failed", attempt),
        RunState::Skipped => ("Skipped", 0),
    };
    let message = match state {
        RunState::Failed { attempt, .. } if attempt > entry.retries.limit => {
            Some(format!("failed {attempt} attempts; see the Job's logs"))
        }
        _ if late => Some("not done by its deadline (the node's next online start)".into()),
        _ => None,
    };
    RunStatus {
        node: format!("{}/{}", node.namespace, node.name),
        entry: entry.name.clone(),
        date: run.date.to_string(),
        state: name.into(),
        attempt,
        job: (attempt > 0).then(|| job_name(&node.name, &entry.name, run.date, attempt)),
        since: None,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{JobScheduleSpec, NodePhase};
    use crate::schedule::Late;
    use crate::topology::TopologyNode;
    use jiff::Timestamp;
    use jiff::civil::date;
    use juki_calendar::Tier;
    use serde_json::json;

    fn node(name: &str) -> ScheduleNode {
        ScheduleNode {
            topology: TopologyNode {
                namespace: "p13".into(),
                name: name.into(),
                tier: Tier::Cs,
                prefecture: Some(13),
                upstream: None,
                tls: false,
            },
            labels: Default::default(),
            online_end: None,
            phase: NodePhase::Offline,
            stopped: None,
        }
    }

    #[test]
    fn failures_come_first_then_each_nodes_latest_run_with_counts() {
        let spec: JobScheduleSpec = serde_json::from_value(json!({"entries": [
            {"name": "backup", "batch": "backup", "retries": {"limit": 1}}
        ]}))
        .unwrap();
        let schedule = Schedule::new(&spec).unwrap();
        let nodes = vec![node("cs-131016"), node("cs-131041")];
        let run = |node, day| RunId {
            node,
            entry: 0,
            date: date(2026, 11, day),
        };
        let at = Timestamp::UNIX_EPOCH;
        let records = HashMap::from([
            (run(0, 26), RunState::Failed { attempt: 2, at }),
            (run(0, 27), RunState::Succeeded { attempt: 1 }),
            (run(1, 26), RunState::Succeeded { attempt: 1 }),
            (
                run(1, 27),
                RunState::Running {
                    attempt: 2,
                    started: at,
                },
            ),
        ]);
        let decisions = Decisions {
            late: vec![Late {
                run: run(1, 27),
                deadline: at,
                missed: true,
                policy: crate::api::DeadlinePolicy::Alert,
            }],
            ..Decisions::default()
        };
        let status = summarize(&schedule, &nodes, &records, &decisions, 10);
        assert_eq!(
            (status.entries, status.running, status.late, status.failed),
            (1, 1, 1, 1)
        );
        let rows: Vec<String> = status
            .runs
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {} {:?}",
                    r.node,
                    r.date,
                    r.state,
                    r.job.as_deref().unwrap_or("-"),
                    r.message
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                "p13/cs-131016 2026-11-26 Failed cs-131016-backup-20261126-2 Some(\"failed 2 attempts; see the Job's logs\")",
                "p13/cs-131016 2026-11-27 Succeeded cs-131016-backup-20261127 None",
                "p13/cs-131041 2026-11-27 Running cs-131041-backup-20261127-2 Some(\"not done by its deadline (the node's next online start)\")",
            ]
        );
        assert_eq!(
            summarize(&schedule, &nodes, &records, &decisions, 1)
                .runs
                .len(),
            1
        );
    }
}
