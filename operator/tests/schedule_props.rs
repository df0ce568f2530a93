//! Properties of the job schedule, over random schedules run against a simulated cluster for two
//! days from a random instant between late November and the year-end closure (weekends, 勤労感謝の日,
//! Dec 29 – Jan 3): a run never starts before its dependencies are done, never twice for the
//! same node, entry and day, never on a closed day unless its entry asks; run keys are stable
//! DNS-1123 labels of at most 63 characters.

use std::collections::{HashMap, HashSet};

use jiff::civil::{Date, date};
use jiff::{SignedDuration, Timestamp};
use juki_calendar::{Calendar, CalendarConfig, Tier};
use juki_operator::api::{DependencyScope, JobScheduleSpec, NodePhase};
use juki_operator::planner::{NodeView, window_on};
use juki_operator::schedule::{
    RunId, RunKey, RunState, Schedule, ScheduleNode, When, World, decide, is_dns_label, job_name,
    selects,
};
use juki_operator::topology::TopologyNode;
use proptest::prelude::*;
use serde_json::json;

fn node(ns: &str, name: &str, tier: Tier, prefecture: Option<u8>) -> ScheduleNode {
    ScheduleNode {
        topology: TopologyNode {
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

fn country() -> Vec<ScheduleNode> {
    vec![
        node("nat", "national", Tier::National, None),
        node("p13", "pref-13", Tier::Prefecture, Some(13)),
        node("p13", "cs-131016", Tier::Cs, Some(13)),
        node("p13", "cs-131041", Tier::Cs, Some(13)),
        node("p27", "pref-27", Tier::Prefecture, Some(27)),
        node("p27", "cs-271004", Tier::Cs, Some(27)),
    ]
}

/// One entry's random choices.
#[derive(Debug, Clone)]
struct EntryChoice {
    trigger: u8,
    hour: u16,
    minute: u16,
    closed_days: bool,
    tiers: Vec<bool>,
    /// (entry index, scope 0 same node / 1 below / 2 all below)
    after: Vec<(usize, u8)>,
    retries: u32,
    timeout: u32,
    limit: Option<u32>,
    deadline: u8,
    catch_up: u8,
}

fn entry_choice() -> impl Strategy<Value = EntryChoice> {
    (
        (0u8..3, 0u16..30, 0u16..60, any::<bool>()),
        prop::collection::vec(any::<bool>(), 3),
        prop::collection::vec((0usize..4, 0u8..3), 0..3),
        (
            0u32..3,
            20u32..180,
            prop::option::of(1u32..3),
            0u8..3,
            0u8..3,
        ),
    )
        .prop_map(
            |(
                (trigger, hour, minute, closed_days),
                tiers,
                after,
                (retries, timeout, limit, deadline, catch_up),
            )| {
                EntryChoice {
                    trigger,
                    hour,
                    minute,
                    closed_days,
                    tiers,
                    after,
                    retries,
                    timeout,
                    limit,
                    deadline,
                    catch_up,
                }
            },
        )
}

/// A valid spec: same-node dependencies only on earlier entries (no cycle).
fn spec(choices: &[EntryChoice]) -> JobScheduleSpec {
    let entries: Vec<serde_json::Value> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let tiers: Vec<&str> = ["National", "Prefecture", "CS"]
                .into_iter()
                .zip(&c.tiers)
                .filter(|(_, on)| **on)
                .map(|(t, _)| t)
                .collect();
            let after: Vec<serde_json::Value> = c
                .after
                .iter()
                .filter_map(|&(k, scope)| {
                    let k = k % choices.len();
                    match scope {
                        0 if k < i => Some(json!({"entry": format!("e{k}")})),
                        1 => Some(json!({"entry": format!("e{k}"), "scope": "NodesBelow"})),
                        2 => Some(json!({"entry": format!("e{k}"), "scope": "AllBelow"})),
                        _ => None,
                    }
                })
                .collect();
            let deadline = ["HoldStart", "Skip", "Alert"][c.deadline as usize];
            let catch_up = ["Once", "All", "Skip"][c.catch_up as usize];
            let mut e = json!({
                "name": format!("e{i}"),
                "batch": "statistics",
                "nodes": {"namespaces": ["*"], "tiers": tiers},
                "after": after,
                "retries": {"limit": c.retries, "backoffSeconds": 600},
                "timeoutMinutes": c.timeout,
                "deadline": deadline,
                "catchUp": catch_up,
            });
            if let Some(limit) = c.limit {
                e["concurrency"] = json!({"perPrefecture": limit});
            }
            match c.trigger {
                0 => e["trigger"] = json!("AfterStop"),
                1 => {
                    e["trigger"] = json!("At");
                    e["at"] = json!(format!("{:02}:{:02}", c.hour, c.minute));
                    e["runOnClosedDays"] = json!(c.closed_days);
                }
                _ => e["trigger"] = json!("BeforeStart"),
            }
            e
        })
        .collect();
    serde_json::from_value(json!({ "entries": entries })).unwrap()
}

/// Each node's phase and last stop at `now`, as an ideal operator would have them.
fn observe(calendar: &Calendar, nodes: &mut [ScheduleNode], now: Timestamp) {
    let today = calendar.date_of(now);
    for n in nodes.iter_mut() {
        let view = NodeView::bare(n.topology.tier, n.topology.prefecture, n.online_end);
        let windows: Vec<_> = (-12..=0)
            .filter_map(|i| today.checked_add(jiff::Span::new().days(i)).ok())
            .filter_map(|d| window_on(calendar, &view, d))
            .collect();
        n.phase = if windows.iter().any(|w| w.contains(now)) {
            NodePhase::Online
        } else {
            NodePhase::Offline
        };
        n.stopped = windows.iter().rev().find(|w| w.end <= now).map(|w| w.date);
    }
}

/// Whether an entry runs on a node on a day (selection and days rule), as the properties see it.
fn applies(
    schedule: &Schedule,
    calendar: &Calendar,
    n: &ScheduleNode,
    entry: usize,
    day: Date,
) -> bool {
    let e = &schedule.entries[entry];
    selects(&e.nodes, "nat", &n.topology, &n.labels)
        && (e.run_on_closed_days || calendar.is_open(day))
}

fn below(nodes: &[ScheduleNode], node: usize, all: bool) -> Vec<usize> {
    // The country's tree: national → prefectures → their CSs.
    let tier = nodes[node].topology.tier;
    let pref = nodes[node].topology.prefecture;
    nodes
        .iter()
        .enumerate()
        .filter(|(_, m)| match (tier, m.topology.tier) {
            (Tier::National, Tier::Prefecture) => true,
            (Tier::National, Tier::Cs) => all,
            (Tier::Prefecture, Tier::Cs) => m.topology.prefecture == pref,
            _ => false,
        })
        .map(|(i, _)| i)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn runs_respect_dependencies_once_per_day_and_closed_days(
        choices in prop::collection::vec(entry_choice(), 1..4),
        start_minutes in 0i64..(42 * 24 * 60),
        steps in prop::collection::vec((10i64..150, 0u8..10), 20..60),
    ) {
        let calendar = Calendar::new(&CalendarConfig::default()).unwrap();
        let schedule = Schedule::new(&spec(&choices)).unwrap();
        let mut nodes = country();
        let begin = date(2026, 11, 20)
            .to_zoned(calendar.time_zone().clone())
            .unwrap()
            .timestamp()
            + SignedDuration::from_mins(start_minutes);
        let mut records: HashMap<RunId, RunState> = HashMap::new();
        let mut started: HashSet<RunKey> = HashSet::new();
        let mut now = begin;
        for (minutes, luck) in steps {
            now += SignedDuration::from_mins(minutes);
            observe(&calendar, &mut nodes, now);
            // Some runs finish: most succeed, some fail; the others go on running.
            for (run, state) in records.iter_mut() {
                let fate = (u32::from(luck) + run.node as u32 + run.entry as u32) % 10;
                if let RunState::Running { attempt, .. } = *state {
                    *state = match fate {
                        0..=5 => RunState::Succeeded { attempt },
                        6 | 7 => *state,
                        _ => RunState::Failed { attempt, at: now },
                    };
                }
            }
            let world = World {
                calendar: &calendar,
                schedule: &schedule,
                namespace: "nat",
                nodes: &nodes,
                records: &records,
                since: begin,
            };
            let d = decide(world, now);
            let mut this_step = HashSet::new();
            for s in &d.start {
                let run = s.run;
                let name = s.key.job_name();
                prop_assert!(is_dns_label(&name), "{name}");
                prop_assert!(this_step.insert((run.node, run.entry, run.date)), "two attempts of {run:?} at once");
                prop_assert!(started.insert(s.key.clone()), "{name} started twice");
                let expected_attempt = match records.get(&run) {
                    None | Some(RunState::Pending) => 1,
                    Some(RunState::Failed { attempt, .. }) => attempt + 1,
                    Some(other) => {
                        prop_assert!(false, "{name} started while {other:?}");
                        0
                    }
                };
                prop_assert_eq!(s.key.attempt, expected_attempt);
                let entry = &schedule.entries[run.entry];
                if !calendar.is_open(run.date) {
                    prop_assert!(
                        matches!(entry.when, When::At(_)) && entry.run_on_closed_days,
                        "{name} on a closed day"
                    );
                }
                for &(dep, scope) in &entry.after {
                    let targets = match scope {
                        DependencyScope::SameNode => vec![run.node],
                        DependencyScope::NodesBelow => below(&nodes, run.node, false),
                        DependencyScope::AllBelow => below(&nodes, run.node, true),
                    };
                    for m in targets {
                        if !applies(&schedule, &calendar, &nodes[m], dep, run.date) {
                            continue;
                        }
                        let dep_run = RunId { node: m, entry: dep, date: run.date };
                        prop_assert!(
                            matches!(records.get(&dep_run), Some(RunState::Succeeded { .. } | RunState::Skipped)),
                            "{name} started before e{dep} on node {m}: {:?}", records.get(&dep_run)
                        );
                    }
                }
            }
            for run in &d.pending {
                records.entry(*run).or_insert(RunState::Pending);
            }
            for (run, _) in &d.skip {
                records.insert(*run, RunState::Skipped);
            }
            for key in &d.expire {
                let run = records.keys().copied().find(|r| {
                    nodes[r.node].topology.name == key.node
                        && schedule.entries[r.entry].name == key.entry
                        && r.date == key.date
                });
                if let Some(run) = run {
                    records.insert(run, RunState::Failed { attempt: key.attempt, at: now });
                }
            }
            for s in &d.start {
                records.insert(s.run, RunState::Running { attempt: s.key.attempt, started: now });
            }
        }
    }

    #[test]
    fn run_keys_are_stable_dns_labels_and_tell_runs_apart(
        node in "[a-z0-9]([a-z0-9.-]{0,80}[a-z0-9])?",
        entry in "[a-z]([a-z0-9-]{0,18}[a-z0-9])?",
        day in 0i32..3000,
        attempt in 1u32..12,
    ) {
        let date = date(2020, 1, 1) + jiff::Span::new().days(day);
        let name = job_name(&node, &entry, date, attempt);
        prop_assert!(is_dns_label(&name), "{name}");
        prop_assert_eq!(&name, &job_name(&node, &entry, date, attempt));
        prop_assert_ne!(&name, &job_name(&node, &entry, date, attempt + 1));
        prop_assert_ne!(&name, &job_name(&node, &entry, date + jiff::Span::new().days(1), attempt));
        prop_assert_ne!(&name, &job_name(&format!("{node}x"), &entry, date, attempt));
    }
}
