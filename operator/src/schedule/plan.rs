//! The schedule's forecast for `kubectl juki plan --schedule`: [`decide`] run against an ideal
//! cluster (each node Online in its window, stopped after it; every run succeeds at once), listing
//! when each run would start and each night's deadline: the first online start its runs must
//! finish before.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;

use jiff::civil::Date;
use jiff::{Timestamp, ToSpan};
use juki_calendar::Calendar;
use serde::Deserialize;

use super::compile::Schedule;
use super::decide::{RunId, RunState, ScheduleNode, World, decide};
use crate::api::{JobSchedule, JukiNode, NodePhase};
use crate::planner::{NodeView, window_on};

/// One run the forecast starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRun {
    pub at: Timestamp,
    pub run: RunId,
    pub job: String,
    pub deadline: Option<Timestamp>,
}

/// A node's phase and last stop on an ideal cluster: Online inside its window, else Offline,
/// stopped after the last window that ended.
fn ideal(calendar: &Calendar, node: &mut ScheduleNode, now: Timestamp) {
    let view = NodeView::bare(
        node.topology.tier,
        node.topology.prefecture,
        node.online_end,
    );
    let today = calendar.date_of(now);
    let windows: Vec<_> = (-12..=0)
        .filter_map(|i| today.checked_add(i.days()).ok())
        .filter_map(|d| window_on(calendar, &view, d))
        .collect();
    node.phase = if windows.iter().any(|w| w.contains(now)) {
        NodePhase::Online
    } else {
        NodePhase::Offline
    };
    node.stopped = windows.iter().rev().find(|w| w.end <= now).map(|w| w.date);
}

/// The runs started from `from` to `to`, in order. Days before `from` are not caught up.
pub fn simulate(
    calendar: &Calendar,
    schedule: &Schedule,
    namespace: &str,
    nodes: &[ScheduleNode],
    from: Timestamp,
    to: Timestamp,
) -> Vec<PlannedRun> {
    let mut nodes = nodes.to_vec();
    let mut records: HashMap<RunId, RunState> = HashMap::new();
    let mut runs = Vec::new();
    let mut now = from;
    // Bounded: every pass either starts a run (finitely many in the range) or moves time on.
    for _ in 0..100_000 {
        for n in &mut nodes {
            ideal(calendar, n, now);
        }
        let world = World {
            calendar,
            schedule,
            namespace,
            nodes: &nodes,
            records: &records,
            since: from,
        };
        let d = decide(world, now);
        for run in &d.pending {
            records.insert(*run, RunState::Pending);
        }
        for (run, _) in &d.skip {
            records.insert(*run, RunState::Skipped);
        }
        for s in &d.start {
            records.insert(
                s.run,
                RunState::Succeeded {
                    attempt: s.key.attempt,
                },
            );
            runs.push(PlannedRun {
                at: now,
                run: s.run,
                job: s.key.job_name(),
                deadline: s.deadline,
            });
        }
        if !d.start.is_empty() {
            // The runs after these may go at the same instant.
            continue;
        }
        match d.wake_at.filter(|w| *w > now && *w < to) {
            Some(w) => now = w,
            None => break,
        }
    }
    runs
}

/// The forecast as text: per operating day, its deadline (the earliest of its runs', and whose),
/// then one line per run with its own deadline.
pub fn render(
    calendar: &Calendar,
    schedule_name: &str,
    schedule: &Schedule,
    nodes: &[ScheduleNode],
    runs: &[PlannedRun],
) -> String {
    let tz = calendar.time_zone().clone();
    let time = |t: Timestamp| {
        t.to_zoned(tz.clone())
            .strftime("%Y-%m-%d %a %H:%M")
            .to_string()
    };
    let name = |i: usize| {
        let t = &nodes[i].topology;
        format!("{}/{}", t.namespace, t.name)
    };
    let mut by_day: BTreeMap<Date, Vec<&PlannedRun>> = BTreeMap::new();
    for r in runs {
        by_day.entry(r.run.date).or_default().push(r);
    }
    let mut out = String::new();
    writeln!(out, "JobSchedule {schedule_name}: {} runs", runs.len()).unwrap();
    for (day, day_runs) in by_day {
        let first = day_runs
            .iter()
            .filter_map(|r| r.deadline.map(|d| (d, r.run.node)))
            .min();
        let deadline = first.map_or("no deadline".to_string(), |(d, node)| {
            format!("done by {} ({} starts)", time(d), name(node))
        });
        writeln!(
            out,
            "operating day {day} {}: {} runs, {deadline}",
            day.strftime("%a"),
            day_runs.len()
        )
        .unwrap();
        for r in day_runs {
            let entry = &schedule.entries[r.run.entry];
            let by = r
                .deadline
                .map_or("no deadline".to_string(), |d| format!("by {}", time(d)));
            writeln!(
                out,
                "  {}  {:<28} {:<16} {}  {by} ({:?})",
                time(r.at),
                name(r.run.node),
                entry.name,
                r.job,
                entry.deadline
            )
            .unwrap();
        }
    }
    out
}

/// Every JobSchedule of a (possibly multi-document) manifest, by name and namespace.
pub fn schedules_from_manifest(text: &str) -> Result<Vec<JobSchedule>, String> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| format!("not YAML: {e}"))?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("JobSchedule") {
            continue;
        }
        out.push(serde_yaml::from_value(value).map_err(|e| format!("JobSchedule: {e}"))?);
    }
    if out.is_empty() {
        return Err("no document of kind JobSchedule found".into());
    }
    Ok(out)
}

/// Every JukiNode of a manifest as the schedule sees it (with its labels).
pub fn nodes_from_manifest(text: &str) -> Result<Vec<ScheduleNode>, String> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| format!("not YAML: {e}"))?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("JukiNode") {
            continue;
        }
        let node: JukiNode = serde_yaml::from_value(value).map_err(|e| format!("JukiNode: {e}"))?;
        let (topology, online_end) = crate::topology::from_jukinode(&node, "default")
            .map_err(|e| format!("JukiNode {:?}: {e}", topology_name(&node)))?;
        out.push(ScheduleNode {
            topology,
            labels: node.metadata.labels.clone().unwrap_or_default(),
            online_end,
            phase: NodePhase::Offline,
            stopped: None,
        });
    }
    Ok(out)
}

fn topology_name(node: &JukiNode) -> String {
    node.metadata.name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::JobScheduleSpec;
    use juki_calendar::{CalendarConfig, Tier};
    use serde_json::json;

    fn tokyo(text: &str) -> Timestamp {
        format!("{text}[Asia/Tokyo]")
            .parse::<jiff::Zoned>()
            .unwrap()
            .timestamp()
    }

    fn node(ns: &str, name: &str, tier: Tier, prefecture: Option<u8>) -> ScheduleNode {
        ScheduleNode {
            topology: crate::topology::TopologyNode {
                namespace: ns.into(),
                name: name.into(),
                tier,
                prefecture,
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
    fn the_forecast_lists_runs_in_tree_order_with_each_nights_deadline() {
        let calendar = Calendar::new(&CalendarConfig::default()).unwrap();
        let spec: JobScheduleSpec = serde_json::from_value(json!({"entries": [
            {"name": "weekend-backup", "batch": "backup", "nodes": {"namespaces": ["*"]},
             "trigger": "At", "at": "26:00", "schedule": "Weekly", "weekday": "Friday",
             "after": [{"entry": "weekend-backup", "scope": "NodesBelow"}],
             "deadline": "HoldStart"}
        ]}))
        .unwrap();
        let schedule = Schedule::new(&spec).unwrap();
        let nodes = vec![
            node("nat", "national", Tier::National, None),
            node("p13", "pref-13", Tier::Prefecture, Some(13)),
            node("p13", "cs-131016", Tier::Cs, Some(13)),
        ];
        let runs = simulate(
            &calendar,
            &schedule,
            "nat",
            &nodes,
            tokyo("2026-11-26T12:00"),
            tokyo("2026-11-30T12:00"),
        );
        assert_eq!(
            render(&calendar, "nightly", &schedule, &nodes, &runs),
            "JobSchedule nightly: 3 runs\n\
             operating day 2026-11-27 Fri: 3 runs, done by 2026-11-30 Mon 07:00 (nat/national starts)\n\
             \u{20} 2026-11-28 Sat 02:00  p13/cs-131016                weekend-backup   cs-131016-weekend-backup-20261127  by 2026-11-30 Mon 08:00 (HoldStart)\n\
             \u{20} 2026-11-28 Sat 02:00  p13/pref-13                  weekend-backup   pref-13-weekend-backup-20261127  by 2026-11-30 Mon 07:30 (HoldStart)\n\
             \u{20} 2026-11-28 Sat 02:00  nat/national                 weekend-backup   national-weekend-backup-20261127  by 2026-11-30 Mon 07:00 (HoldStart)\n"
        );
    }
}
