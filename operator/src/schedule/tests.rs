//! The schedule's decisions on a small country: the national server, Tokyo (two CSs) and Osaka
//! (one CS), on the Japan calendar (CS 08:00–21:00, prefecture 07:30–21:30, national 07:00–22:00).

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use jiff::civil::{Date, date};
use juki_calendar::{Calendar, CalendarConfig, Tier};
use serde_json::json;

use super::*;
use crate::api::{JobScheduleSpec, NodePhase};
use crate::topology::TopologyNode;

fn tokyo(text: &str) -> Timestamp {
    format!("{text}[Asia/Tokyo]")
        .parse::<jiff::Zoned>()
        .unwrap()
        .timestamp()
}

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
        labels: BTreeMap::new(),
        online_end: None,
        phase: NodePhase::Offline,
        stopped: None,
    }
}

fn spec(entries: serde_json::Value) -> JobScheduleSpec {
    serde_json::from_value(json!({ "entries": entries })).unwrap()
}

struct Case {
    calendar: Calendar,
    schedule: Schedule,
    nodes: Vec<ScheduleNode>,
    records: HashMap<RunId, RunState>,
    /// When the schedule was created; default 12 hours before each decision.
    since: Option<Timestamp>,
}

impl Case {
    fn new(entries: serde_json::Value) -> Case {
        Case {
            calendar: Calendar::new(&CalendarConfig::default()).unwrap(),
            schedule: Schedule::new(&spec(entries)).unwrap(),
            nodes: vec![
                node("nat", "national", Tier::National, None),
                node("p13", "pref-13", Tier::Prefecture, Some(13)),
                node("p13", "cs-131016", Tier::Cs, Some(13)),
                node("p13", "cs-131041", Tier::Cs, Some(13)),
                node("p27", "pref-27", Tier::Prefecture, Some(27)),
                node("p27", "cs-271004", Tier::Cs, Some(27)),
            ],
            records: HashMap::new(),
            since: None,
        }
    }

    fn node(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.topology.name == name)
            .unwrap()
    }

    /// Every node stopped after the window of `day`.
    fn all_stopped(mut self, day: Date) -> Case {
        for n in &mut self.nodes {
            n.stopped = Some(day);
        }
        self
    }

    fn run(&self, node: &str, entry: &str, day: Date) -> RunId {
        RunId {
            node: self.node(node),
            entry: self.schedule.entry(entry).unwrap(),
            date: day,
        }
    }

    fn record(&mut self, node: &str, entry: &str, day: Date, state: RunState) {
        let run = self.run(node, entry, day);
        self.records.insert(run, state);
    }

    fn decide(&self, now: &str) -> Decisions {
        let now = tokyo(now);
        let since = self
            .since
            .unwrap_or(now - jiff::SignedDuration::from_hours(12));
        decide(
            World {
                calendar: &self.calendar,
                schedule: &self.schedule,
                namespace: "nat",
                nodes: &self.nodes,
                records: &self.records,
                since,
            },
            now,
        )
    }
}

fn started(d: &Decisions) -> Vec<String> {
    d.start.iter().map(|s| s.key.job_name()).collect()
}

const MON: Date = date(2026, 11, 30);
const TUE: Date = date(2026, 12, 1);
const WED: Date = date(2026, 12, 2);

fn backup_everywhere() -> serde_json::Value {
    json!([{"name": "backup", "batch": "backup", "nodes": {"namespaces": ["*"]}}])
}

#[test]
fn an_after_stop_run_waits_for_the_node_to_stop_then_starts_once_with_the_batch_job_name() {
    let mut case = Case::new(backup_everywhere());
    let d = case.decide("2026-11-30T21:10");
    assert!(d.start.is_empty(), "{d:?}");
    let cs = case.run("cs-131016", "backup", MON);
    assert!(d.waiting.contains(&(cs, Wait::NodeNotStopped)), "{d:?}");
    assert!(d.pending.contains(&cs));
    let i = case.node("cs-131016");
    case.nodes[i].stopped = Some(MON);
    let d = case.decide("2026-11-30T21:10");
    assert_eq!(started(&d), ["cs-131016-backup-20261130"]);
    assert_eq!(d.start[0].deadline, Some(tokyo("2026-12-01T08:00")));
    // Running: not started again.
    case.record(
        "cs-131016",
        "backup",
        MON,
        RunState::Running {
            attempt: 1,
            started: tokyo("2026-11-30T21:10"),
        },
    );
    assert!(started(&case.decide("2026-11-30T21:20")).is_empty());
    case.record(
        "cs-131016",
        "backup",
        MON,
        RunState::Succeeded { attempt: 1 },
    );
    assert!(started(&case.decide("2026-11-30T23:00")).is_empty());
}

#[test]
fn an_at_run_past_midnight_belongs_to_its_operating_day_and_skips_closed_days() {
    let case = Case::new(json!([{
        "name": "report", "batch": "report", "trigger": "At", "at": "25:30",
        "nodes": {"tiers": ["National"]}
    }]));
    // Friday 2026-11-27's 25:30 is Saturday 01:30.
    assert!(started(&case.decide("2026-11-28T01:29")).is_empty());
    assert_eq!(
        started(&case.decide("2026-11-28T01:30")),
        ["national-report-20261127"]
    );
    // Saturday's own 25:30 (Sunday 01:30) is not due: Saturday is closed.
    let sunday = case.decide("2026-11-29T03:00");
    assert!(sunday.start.is_empty(), "{sunday:?}");
    assert_eq!(
        case.decide("2026-11-28T01:00").wake_at,
        Some(tokyo("2026-11-28T01:30"))
    );
}

#[test]
fn run_on_closed_days_reaches_weekends_holidays_and_the_year_end() {
    let entry = |closed: bool| {
        json!([{
            "name": "sweep", "batch": "sweep", "trigger": "At", "at": "10:00",
            "runOnClosedDays": closed, "nodes": {"tiers": ["National"]}
        }])
    };
    for (day, now) in [
        ("20261128", "2026-11-28T10:00"), // Saturday
        ("20261123", "2026-11-23T10:00"), // 勤労感謝の日
        ("20261230", "2026-12-30T10:00"), // the year-end closure
    ] {
        let asked = Case::new(entry(true)).decide(now);
        assert!(
            started(&asked).contains(&format!("national-sweep-{day}")),
            "{now}: {asked:?}"
        );
        let not_asked = Case::new(entry(false)).decide(now);
        assert!(
            !started(&not_asked).contains(&format!("national-sweep-{day}")),
            "{now}"
        );
    }
}

#[test]
fn a_weekly_entry_on_a_holiday_follows_its_closed_day_policy() {
    // Monday 2026-11-23 is a holiday: NextOpenDay runs it on Tuesday's operating day.
    let case = Case::new(json!([{
        "name": "weekly", "batch": "weekly", "schedule": "Weekly", "weekday": "Monday",
        "closedDayPolicy": "NextOpenDay", "nodes": {"tiers": ["National"]}
    }]))
    .all_stopped(date(2026, 11, 24));
    assert_eq!(
        started(&case.decide("2026-11-24T22:30")),
        ["national-weekly-20261124"]
    );
    let skip = Case::new(json!([{
        "name": "weekly", "batch": "weekly", "schedule": "Weekly", "weekday": "Monday",
        "nodes": {"tiers": ["National"]}
    }]))
    .all_stopped(date(2026, 11, 24));
    assert!(started(&skip.decide("2026-11-24T22:30")).is_empty());
}

#[test]
fn every_cs_backup_comes_before_its_prefecture_and_national_statistics_after_every_prefecture() {
    let mut case = Case::new(json!([
        {"name": "backup", "batch": "backup", "nodes": {"namespaces": ["*"]},
         "after": [{"entry": "backup", "scope": "NodesBelow"}]},
        {"name": "statistics", "batch": "statistics",
         "nodes": {"namespaces": ["*"], "tiers": ["National", "Prefecture"]},
         "after": [{"entry": "statistics", "scope": "NodesBelow"}]}
    ]))
    .all_stopped(MON);
    let d = case.decide("2026-11-30T22:30");
    assert_eq!(
        started(&d),
        [
            "cs-131016-backup-20261130",
            "cs-131041-backup-20261130",
            "cs-271004-backup-20261130",
            "pref-13-statistics-20261130",
            "pref-27-statistics-20261130",
        ]
    );
    let pref13 = case.run("pref-13", "backup", MON);
    assert!(d.waiting.contains(&(
        pref13,
        Wait::Dependencies(vec![
            "p13/cs-131016 backup".into(),
            "p13/cs-131041 backup".into()
        ])
    )));
    // Tokyo's CSs done: Tokyo's backup goes; Osaka's still waits for its CS.
    for cs in ["cs-131016", "cs-131041"] {
        case.record(cs, "backup", MON, RunState::Succeeded { attempt: 1 });
    }
    case.record(
        "pref-13",
        "statistics",
        MON,
        RunState::Succeeded { attempt: 1 },
    );
    let d = case.decide("2026-11-30T22:40");
    assert!(started(&d).contains(&"pref-13-backup-20261130".to_string()));
    assert!(!started(&d).contains(&"pref-27-backup-20261130".to_string()));
    assert!(!started(&d).contains(&"national-statistics-20261130".to_string()));
    case.record(
        "pref-27",
        "statistics",
        MON,
        RunState::Succeeded { attempt: 1 },
    );
    let d = case.decide("2026-11-30T22:50");
    assert!(started(&d).contains(&"national-statistics-20261130".to_string()));
}

#[test]
fn same_node_order_and_all_below() {
    let mut case = Case::new(json!([
        {"name": "statistics", "batch": "statistics", "nodes": {"namespaces": ["*"]}},
        {"name": "backup", "batch": "backup", "nodes": {"namespaces": ["*"]},
         "after": [{"entry": "statistics"}, {"entry": "backup", "scope": "AllBelow"}]}
    ]))
    .all_stopped(MON);
    case.record("pref-13", "backup", MON, RunState::Succeeded { attempt: 1 });
    let d = case.decide("2026-11-30T22:30");
    let national = case.run("national", "backup", MON);
    let Some((_, Wait::Dependencies(missing))) = d.waiting.iter().find(|(r, _)| *r == national)
    else {
        panic!("{d:?}")
    };
    // The whole tree below, not only the prefectures; pref-13's backup is done.
    assert!(
        missing.contains(&"p13/cs-131016 backup".to_string()),
        "{missing:?}"
    );
    assert!(!missing.iter().any(|m| m.starts_with("p13/pref-13 ")));
    assert!(missing.contains(&"nat/national statistics".to_string()));
    assert!(started(&d).iter().all(|n| !n.contains("-backup-")), "{d:?}");
}

#[test]
fn a_run_not_done_by_the_next_start_is_late_and_its_policy_applies() {
    let entry = |policy: &str| {
        json!([{"name": "backup", "batch": "backup", "deadline": policy,
                "nodes": {"namespaces": ["p13"], "tiers": ["CS"], "prefectures": ["13"]},
                "concurrency": {"overall": 1}}])
    };
    // One slot for two CSs: the second is still pending when the CS window opens at 08:00.
    let pending = |policy: &str| {
        let mut case = Case::new(entry(policy)).all_stopped(MON);
        case.record(
            "cs-131016",
            "backup",
            MON,
            RunState::Running {
                attempt: 1,
                started: tokyo("2026-12-01T07:30"),
            },
        );
        case.record("cs-131041", "backup", MON, RunState::Pending);
        case
    };
    let case = pending("HoldStart");
    let late = case.run("cs-131041", "backup", MON);
    let d = case.decide("2026-12-01T08:00");
    assert!(d.late.iter().any(|l| l.run == late && l.missed), "{d:?}");
    assert!(d.holds.contains(&(case.node("cs-131041"), late)));
    assert!(
        d.holds
            .contains(&(case.node("cs-131016"), case.run("cs-131016", "backup", MON)))
    );
    // Before the deadline the same run is at risk: a 60-minute run started now would end after it.
    let early = case.decide("2026-12-01T07:30");
    assert!(
        early.late.iter().any(|l| l.run == late && !l.missed),
        "{early:?}"
    );

    let d = pending("Skip").decide("2026-12-01T08:00");
    assert_eq!(d.skip, [(late, SkipReason::DeadlineMissed)]);
    assert!(d.holds.is_empty());

    let d = pending("Alert").decide("2026-12-01T08:00");
    assert!(d.skip.is_empty() && d.holds.is_empty());
    assert!(d.late.iter().any(|l| l.run == late && l.missed));
    assert!(
        d.waiting
            .contains(&(late, Wait::Concurrency("entry concurrency.overall")))
    );
}

#[test]
fn a_failed_attempt_is_retried_after_its_backoff_with_a_new_job_until_the_limit() {
    let mut case = Case::new(json!([{
        "name": "backup", "batch": "backup", "nodes": {"tiers": ["National"]},
        "retries": {"limit": 2, "backoffSeconds": 60}
    }]))
    .all_stopped(MON);
    let failed_at = tokyo("2026-11-30T22:10");
    case.record(
        "national",
        "backup",
        MON,
        RunState::Failed {
            attempt: 1,
            at: failed_at,
        },
    );
    let run = case.run("national", "backup", MON);
    let d = case.decide("2026-11-30T22:10:30");
    assert!(d.start.is_empty());
    assert!(
        d.waiting
            .contains(&(run, Wait::Backoff(tokyo("2026-11-30T22:11"))))
    );
    assert_eq!(d.wake_at, Some(tokyo("2026-11-30T22:11")));
    assert_eq!(
        started(&case.decide("2026-11-30T22:11")),
        ["national-backup-20261130-2"]
    );
    // The second backoff is twice the first.
    case.record(
        "national",
        "backup",
        MON,
        RunState::Failed {
            attempt: 2,
            at: failed_at,
        },
    );
    assert!(started(&case.decide("2026-11-30T22:11:30")).is_empty());
    assert_eq!(
        started(&case.decide("2026-11-30T22:12")),
        ["national-backup-20261130-3"]
    );
    // The third attempt was the last: given up, nothing starts and nothing holds.
    case.record(
        "national",
        "backup",
        MON,
        RunState::Failed {
            attempt: 3,
            at: failed_at,
        },
    );
    let d = case.decide("2026-11-30T23:00");
    assert!(d.start.is_empty() && d.waiting.is_empty(), "{d:?}");
}

#[test]
fn an_attempt_past_its_timeout_is_expired() {
    let mut case = Case::new(json!([{
        "name": "backup", "batch": "backup", "nodes": {"tiers": ["National"]},
        "timeoutMinutes": 30
    }]))
    .all_stopped(MON);
    case.record(
        "national",
        "backup",
        MON,
        RunState::Running {
            attempt: 1,
            started: tokyo("2026-11-30T22:10"),
        },
    );
    let d = case.decide("2026-11-30T22:39");
    assert!(d.expire.is_empty());
    assert_eq!(d.wake_at, Some(tokyo("2026-11-30T22:40")));
    let d = case.decide("2026-11-30T22:40");
    assert_eq!(
        d.expire.iter().map(RunKey::job_name).collect::<Vec<_>>(),
        ["national-backup-20261130"]
    );
}

#[test]
fn missed_days_follow_the_catch_up_policy() {
    // The operator was away Monday to Wednesday night; the CS stopped Wednesday. Monday's and
    // Tuesday's deadlines (the next 08:00) passed before the runs were seen.
    let case = |policy: &str| {
        let mut case = Case::new(json!([{
            "name": "backup", "batch": "backup", "catchUp": policy,
            "nodes": {"namespaces": ["p13"], "tiers": ["CS"]}
        }]))
        .all_stopped(WED);
        case.since = Some(tokyo("2026-11-30T00:00"));
        case
    };
    let now = "2026-12-02T21:30";
    let all = case("All");
    let d = all.decide(now);
    assert_eq!(
        started(&d),
        ["cs-131016-backup-20261130", "cs-131041-backup-20261130"]
    );
    assert!(d.skip.is_empty());
    let tue = all.run("cs-131016", "backup", TUE);
    assert!(d.waiting.contains(&(tue, Wait::EarlierDay(MON))));

    let once = case("Once");
    let d = once.decide(now);
    assert_eq!(
        started(&d),
        ["cs-131016-backup-20261201", "cs-131041-backup-20261201"]
    );
    let mon = once.run("cs-131016", "backup", MON);
    assert!(d.skip.contains(&(mon, SkipReason::CatchUp)));

    let skip = case("Skip");
    let d = skip.decide(now);
    assert_eq!(
        started(&d),
        ["cs-131016-backup-20261202", "cs-131041-backup-20261202"]
    );
    assert_eq!(d.skip.len(), 4);
}

#[test]
fn days_before_the_schedule_existed_are_not_missed_days() {
    let mut case = Case::new(backup_everywhere()).all_stopped(WED);
    case.since = Some(tokyo("2026-12-02T12:00"));
    let d = case.decide("2026-12-02T22:30");
    assert_eq!(d.start.len(), 6, "{d:?}");
    assert!(started(&d).iter().all(|n| n.ends_with("-backup-20261202")));
    assert!(d.skip.is_empty());
    // Created a week earlier, the same schedule catches up Tuesday (Once: the newest missed day).
    case.since = Some(tokyo("2026-11-25T12:00"));
    let d = case.decide("2026-12-02T22:30");
    assert!(
        started(&d).iter().all(|n| n.ends_with("-backup-20261201")),
        "{d:?}"
    );
}

#[test]
fn concurrency_limits_hold_per_prefecture_and_overall() {
    let entries = |limits: serde_json::Value| {
        json!([{"name": "backup", "batch": "backup",
                "nodes": {"namespaces": ["*"], "tiers": ["CS"]}, "concurrency": limits}])
    };
    let per = Case::new(entries(json!({"perPrefecture": 1}))).all_stopped(MON);
    let d = per.decide("2026-11-30T21:30");
    assert_eq!(
        started(&d),
        ["cs-131016-backup-20261130", "cs-271004-backup-20261130"]
    );
    let overall = Case::new(entries(json!({"overall": 2}))).all_stopped(MON);
    let mut running = overall;
    running.record(
        "cs-271004",
        "backup",
        MON,
        RunState::Running {
            attempt: 1,
            started: tokyo("2026-11-30T21:10"),
        },
    );
    assert_eq!(
        started(&running.decide("2026-11-30T21:30")),
        ["cs-131016-backup-20261130"]
    );
}

fn errors(entries: serde_json::Value) -> String {
    Schedule::new(&spec(entries)).unwrap_err().to_string()
}

#[test]
fn bad_schedules_are_refused_with_the_field_and_the_rule() {
    let cycle = errors(json!([
        {"name": "a", "batch": "a", "after": [{"entry": "b"}]},
        {"name": "b", "batch": "b", "after": [{"entry": "c"}]},
        {"name": "c", "batch": "c", "after": [{"entry": "a"}]}
    ]));
    assert_eq!(
        cycle,
        "spec.entries[0].after: dependency cycle on the same node: a → b → c → a (each waits for the next)"
    );
    assert_eq!(
        errors(json!([{"name": "a", "batch": "a", "after": [{"entry": "nope"}]}])),
        "spec.entries[0].after[0].entry: no entry named \"nope\" (entries: a)"
    );
    assert_eq!(
        errors(json!([{"name": "a", "batch": "a", "trigger": "At", "at": "30:00"}])),
        "spec.entries[0].at: \"30:00\" is out of range (00:00 to 29:59)"
    );
    assert_eq!(
        errors(json!([{"name": "a", "batch": "a", "trigger": "At", "at": "7:5"}])),
        "spec.entries[0].at: \"7:5\" is not a time of the form HH:MM"
    );
    assert_eq!(
        errors(json!([{"name": "a", "template": {"spec": {"containers": []}}}])),
        "spec.entries[0].template.spec.containers: a pod template needs at least one container"
    );
    assert_eq!(
        errors(json!([{"name": "a", "batch": "a",
                       "template": {"spec": {"containers": [{"name": "c"}]}}}])),
        "spec.entries[0]: an entry runs exactly one of batch or template, not both"
    );
    assert_eq!(
        errors(json!([{"name": "a", "batch": "a", "after": [{"entry": "a"}]}])),
        "spec.entries[0].after[0]: \"a\" waits for itself on the same node; to wait for the nodes below, set scope NodesBelow or AllBelow"
    );
    assert_eq!(
        errors(json!([{"name": "a", "batch": "a", "trigger": "At"}])),
        "spec.entries[0].at: trigger At needs a time \"HH:MM\" (00:00 to 29:59)"
    );
    let several = errors(json!([
        {"name": "a", "batch": "a", "nodes": {"prefectures": ["48"]},
         "concurrency": {"perPrefecture": 0}},
        {"name": "a", "batch": "Bad_Name", "schedule": "Weekly"}
    ]));
    for part in [
        "spec.entries[0].nodes.prefectures[0]: \"48\" is not a prefecture code (01 to 47)",
        "spec.entries[0].concurrency.perPrefecture: must be at least 1",
        "spec.entries[1].name: \"a\" is already the name of spec.entries[0]",
        "spec.entries[1].batch: \"Bad_Name\": lowercase letters",
        "spec.entries[1].weekday: a Weekly entry needs weekday",
    ] {
        assert!(several.contains(part), "{part} not in {several}");
    }
}

#[test]
fn a_dependency_on_the_same_entry_below_is_not_a_cycle() {
    assert!(
        Schedule::new(&spec(json!([
            {"name": "backup", "batch": "backup", "after": [{"entry": "backup", "scope": "NodesBelow"}]}
        ])))
        .is_ok()
    );
}

#[test]
fn the_calendar_batches_are_the_default_schedule_with_their_job_names() {
    let calendar = Calendar::new(&CalendarConfig::default()).unwrap();
    let implicit = implicit_spec(&calendar);
    let schedule = Schedule::new(&implicit).unwrap();
    let names: Vec<&str> = schedule.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["statistics", "backup"]);
    assert_eq!(
        schedule.entries[1].after,
        [(0, crate::api::DependencyScope::SameNode)]
    );
    let mut case = Case::new(json!([]));
    case.schedule = schedule;
    let case = case.all_stopped(MON);
    let d = case.decide("2026-11-30T22:30");
    // Statistics first on every node; backup after it on the same node.
    assert_eq!(d.start.len(), 6);
    assert!(started(&d).iter().all(|n| n.contains("-statistics-")));
    assert!(started(&d).contains(&crate::resources::job_name("cs-131016", "statistics", MON)));
}

fn example(path: &str) -> crate::api::JobSchedule {
    let text =
        std::fs::read_to_string(format!("{}/../examples/{path}", env!("CARGO_MANIFEST_DIR")))
            .unwrap();
    serde_yaml::from_str(&text).unwrap()
}

fn example_nodes() -> Vec<ScheduleNode> {
    let text = std::fs::read_to_string(format!(
        "{}/../examples/topology.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    crate::preview::nodes_from_manifest(&text)
        .unwrap()
        .into_iter()
        .map(|n| ScheduleNode {
            online_end: n.online_end,
            ..node(
                &n.topology.namespace,
                &n.topology.name,
                n.topology.tier,
                n.topology.prefecture,
            )
        })
        .collect()
}

#[test]
fn the_example_schedule_is_valid_on_the_example_topology_beside_the_calendar_batches() {
    let resource = example("jobschedule.yaml");
    let schedule = Schedule::new(&resource.spec).unwrap();
    let calendar = Calendar::new(&CalendarConfig::default()).unwrap();
    let implicit = Schedule::new(&implicit_spec(&calendar)).unwrap();
    assert_eq!(
        schedule.name_clashes("the calendar's batches", &implicit),
        []
    );
    let nodes = example_nodes();
    assert_eq!(unknown_node_sets(&schedule, "juki-national", &nodes), []);
}

#[test]
fn the_invalid_examples_are_refused_by_the_operator_too() {
    for (file, message) in [
        (
            "invalid/jobschedule-time-30-00.yaml",
            "spec.entries[0].at: \"30:00\" is out of range (00:00 to 29:59)",
        ),
        (
            "invalid/jobschedule-template-without-container.yaml",
            "spec.entries[0].template.spec.containers: a pod template needs at least one container",
        ),
        (
            "invalid/jobschedule-cycle.yaml",
            "spec.entries[0].after: dependency cycle on the same node: export → compress → export",
        ),
    ] {
        let errors = Schedule::new(&example(file).spec).unwrap_err().to_string();
        assert!(errors.starts_with(message), "{file}: {errors}");
    }
}

#[test]
fn an_entry_named_like_a_calendar_batch_clashes() {
    let calendar = Calendar::new(&CalendarConfig::default()).unwrap();
    let implicit = Schedule::new(&implicit_spec(&calendar)).unwrap();
    let mine = Schedule::new(&spec(json!([
        {"name": "report", "batch": "statistics"},
        {"name": "backup", "batch": "backup"}
    ])))
    .unwrap();
    let clashes = mine.name_clashes("the calendar's batches", &implicit);
    assert_eq!(clashes.len(), 1);
    assert_eq!(
        clashes[0].to_string(),
        "spec.entries[1].name: \"backup\" is also an entry of the calendar's batches; entry names name the Jobs (<node>-<entry>-<date>), so they must differ across the schedules of a node"
    );
}

#[test]
fn an_unknown_node_set_is_reported() {
    let schedule = Schedule::new(&spec(json!([
        {"name": "a", "batch": "a", "nodes": {"namespaces": ["juki-pref-99"]}},
        {"name": "b", "batch": "b", "nodes": {"namespaces": ["*"], "tiers": ["CS"]},
         "after": [{"entry": "c", "scope": "NodesBelow"}]},
        {"name": "c", "batch": "c", "nodes": {"namespaces": ["*"], "tiers": ["National"]}}
    ])))
    .unwrap();
    let errors: Vec<String> = unknown_node_sets(&schedule, "juki-national", &example_nodes())
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "spec.entries[0].nodes: matches no JukiNode (namespaces [\"juki-pref-99\"], tiers [], prefectures [], selector none)",
            "spec.entries[1].after[0]: no node running \"c\" lies below a node running \"b\": the dependency waits for nothing",
        ]
    );
}

/// The whole country (1 national, 47 prefectures, 1,741 CSs spread over them) with three
/// entries each, at the moment every CS has stopped: every CS's first entry starts, nothing
/// else. Prints the time one decision takes (`--nocapture`).
#[test]
fn one_decision_for_the_whole_country() {
    let mut case = Case::new(json!([
        {"name": "statistics", "batch": "statistics", "nodes": {"namespaces": ["*"]}},
        {"name": "backup", "batch": "backup", "nodes": {"namespaces": ["*"]},
         "after": [{"entry": "statistics"}, {"entry": "backup", "scope": "NodesBelow"}]},
        {"name": "report", "batch": "report", "trigger": "At", "at": "26:00",
         "nodes": {"namespaces": ["*"]}, "after": [{"entry": "backup"}]}
    ]));
    case.nodes = vec![node("nat", "national", Tier::National, None)];
    for p in 1..=47u8 {
        case.nodes.push(node(
            &format!("p{p:02}"),
            &format!("pref-{p:02}"),
            Tier::Prefecture,
            Some(p),
        ));
    }
    for i in 0..1741u32 {
        let p = (i % 47) as u8 + 1;
        case.nodes.push(node(
            &format!("p{p:02}"),
            &format!("cs-{i:06}"),
            Tier::Cs,
            Some(p),
        ));
    }
    let case = case.all_stopped(MON);
    let started_at = std::time::Instant::now();
    let d = case.decide("2026-11-30T21:10");
    println!(
        "one decision, 1,789 nodes × 3 entries: {:?}",
        started_at.elapsed()
    );
    assert_eq!(d.start.len(), 1741);
    assert!(started(&d).iter().all(|n| n.contains("-statistics-")));
    assert_eq!(
        d.waiting.len(),
        1741,
        "each CS's backup after its statistics"
    );
}

#[test]
fn a_held_entry_starts_nothing_until_released_and_a_running_attempt_goes_on() {
    let entries = |hold: bool| {
        json!([{
            "name": "backup", "batch": "backup", "nodes": {"tiers": ["National"]},
            "deadline": "HoldStart", "hold": hold
        }])
    };
    let mut case = Case::new(entries(true)).all_stopped(MON);
    let run = case.run("national", "backup", MON);
    let d = case.decide("2026-11-30T23:00");
    assert!(d.start.is_empty(), "{d:?}");
    assert!(d.waiting.contains(&(run, Wait::Held)), "{d:?}");
    // Still not done at the next start: late, and the national server is held.
    let d = case.decide("2026-12-01T07:00");
    assert!(d.late.iter().any(|l| l.run == run && l.missed), "{d:?}");
    assert!(d.holds.iter().any(|(_, r)| *r == run), "{d:?}");
    // Released: it starts.
    let held = std::mem::replace(&mut case.schedule, Case::new(entries(false)).schedule);
    assert_eq!(
        started(&case.decide("2026-12-01T07:00")),
        ["national-backup-20261130"]
    );
    case.schedule = held;
    // Held while an attempt runs: the attempt goes on (no expiry, no new start).
    case.record(
        "national",
        "backup",
        MON,
        RunState::Running {
            attempt: 1,
            started: tokyo("2026-11-30T22:30"),
        },
    );
    let d = case.decide("2026-11-30T23:00");
    assert!(d.start.is_empty() && d.expire.is_empty(), "{d:?}");
}
