//! A forecast of the operator's transitions: the planner run against an ideal cluster (replicas
//! ready at once, batch Jobs and final answers done at once) from one instant to another. Used by
//! `kubectl juki plan`, and by the tests to check the order rules over whole weeks. The same
//! order checks apply to transitions recorded from a real cluster.

use std::collections::BTreeMap;
use std::fmt::Write;

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use juki_calendar::{Calendar, TimeOfDay};

use crate::api::NodePhase;
use crate::planner::{Action, FinalAnswer, JobState, NodeView, Reason, plan};
use crate::topology::{Resolved, TopologyNode, downstream_of, resolve};

/// A node of the forecast.
#[derive(Debug, Clone)]
pub struct ForecastNode {
    pub topology: TopologyNode,
    pub online_end: Option<TimeOfDay>,
    pub replicas: i32,
}

/// One phase change of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Position in the forecast's combined order of changes and Jobs.
    pub seq: usize,
    pub at: Timestamp,
    pub node: usize,
    pub from: NodePhase,
    pub to: NodePhase,
    /// Why (none when the change was only observed, as a test's watcher does).
    pub reason: Option<Reason>,
}

/// One batch Job started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    pub seq: usize,
    pub at: Timestamp,
    pub node: usize,
    pub batch: String,
    pub date: Date,
}

/// Everything that happened, in order.
#[derive(Debug, Clone, Default)]
pub struct Forecast {
    pub changes: Vec<Change>,
    pub jobs: Vec<JobRun>,
}

#[derive(Debug, Clone)]
struct State {
    phase: NodePhase,
    since: Option<Timestamp>,
    reason: Option<Reason>,
    ready: i32,
    final_answer: FinalAnswer,
    jobs: Vec<(String, Date, JobState)>,
    last_batch_date: Option<Date>,
}

/// Where a node of the forecast starts from.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// Offline, or Online with every replica ready.
    pub phase: NodePhase,
    /// The last operating date whose batches ran.
    pub last_batch_date: Option<Date>,
}

/// Runs the planner for every node from `from` to `to`, all nodes starting Offline with their
/// batches done up to the day before `from`.
pub fn simulate(
    calendar: &Calendar,
    nodes: &[ForecastNode],
    from: Timestamp,
    to: Timestamp,
) -> Forecast {
    let start = Start {
        phase: NodePhase::Offline,
        last_batch_date: calendar.date_of(from).yesterday().ok(),
    };
    simulate_from(calendar, nodes, &vec![start; nodes.len()], from, to)
}

/// Runs the planner for every node from `from` to `to`, node `i` starting as `starts[i]` says
/// (e.g. Online with nights missed while the operator was away).
pub fn simulate_from(
    calendar: &Calendar,
    nodes: &[ForecastNode],
    starts: &[Start],
    from: Timestamp,
    to: Timestamp,
) -> Forecast {
    let topology: Vec<TopologyNode> = nodes.iter().map(|n| n.topology.clone()).collect();
    let resolved = resolve(&topology);
    let mut states: Vec<State> = nodes
        .iter()
        .zip(starts)
        .map(|(node, start)| State {
            phase: start.phase,
            since: Some(from),
            reason: None,
            ready: if start.phase == NodePhase::Online {
                node.replicas
            } else {
                0
            },
            final_answer: FinalAnswer::NotRequested,
            jobs: Vec::new(),
            last_batch_date: start.last_batch_date,
        })
        .collect();
    let mut out = Forecast::default();
    let mut now = from;
    while now < to {
        let mut wake: Option<Timestamp> = None;
        // Settle this instant: each pass may let a neighbour move; a node changes phase at most a
        // few times per instant, so the bound is never reached in practice.
        for _ in 0..(8 * nodes.len() + 8) {
            let mut changed = false;
            wake = None;
            for i in 0..nodes.len() {
                let (plan, view_changed) =
                    step_node(calendar, nodes, &resolved, &mut states, i, now, &mut out);
                changed |= view_changed;
                if let Some(w) = plan.wake_at.filter(|w| *w > now) {
                    wake = Some(wake.map_or(w, |x| x.min(w)));
                }
            }
            if !changed {
                break;
            }
        }
        match wake {
            Some(w) => now = w,
            None => break,
        }
    }
    out
}

fn step_node(
    calendar: &Calendar,
    nodes: &[ForecastNode],
    resolved: &[Resolved],
    states: &mut [State],
    i: usize,
    now: Timestamp,
    out: &mut Forecast,
) -> (crate::planner::Plan, bool) {
    let node = &nodes[i];
    let s = &states[i];
    let view = NodeView {
        tier: node.topology.tier,
        prefecture: node.topology.prefecture,
        online_end: node.online_end,
        replicas: node.replicas,
        suspend: false,
        manual_override: None,
        pinned_below: None,
        extensions: &[],
        held: None,
        delivery_held: None,
        phase: s.phase,
        phase_since: s.since,
        reason: s.reason,
        ready_replicas: s.ready,
        pods: s.ready,
        upstream: resolved[i].state(|j| states[j].phase),
        downstream_offline: downstream_of(resolved, i)
            .all(|j| states[j].phase == NodePhase::Offline),
        final_answer: s.final_answer.clone(),
        jobs: &s.jobs,
        last_batch_date: s.last_batch_date,
        readiness_timeout: SignedDuration::from_mins(30),
        waiting_grace: SignedDuration::from_mins(5),
    };
    let plan = plan(calendar, &view, now);
    let s = &mut states[i];
    let mut changed = false;
    if let Some(r) = plan.replicas
        && s.ready != r
    {
        s.ready = r;
        changed = true;
    }
    match &plan.action {
        Action::None => {}
        Action::FinalRequest => {
            s.final_answer = FinalAnswer::Done;
            changed = true;
        }
        Action::CreateJob { batch, date } => {
            s.jobs.push((batch.clone(), *date, JobState::Succeeded));
            let seq = out.changes.len() + out.jobs.len();
            out.jobs.push(JobRun {
                seq,
                at: now,
                node: i,
                batch: batch.clone(),
                date: *date,
            });
            changed = true;
        }
    }
    if plan.phase != s.phase {
        let seq = out.changes.len() + out.jobs.len();
        out.changes.push(Change {
            seq,
            at: now,
            node: i,
            from: s.phase,
            to: plan.phase,
            reason: Some(plan.reason),
        });
        s.phase = plan.phase;
        s.since = Some(now);
        changed = true;
    }
    s.reason = Some(plan.reason);
    if let Some(done) = plan.batches_done {
        s.last_batch_date = Some(done).max(s.last_batch_date);
        s.jobs.retain(|(_, date, _)| *date > done);
    }
    if plan.phase == NodePhase::Starting {
        s.final_answer = FinalAnswer::NotRequested;
    }
    (plan, changed)
}

/// Every break of the order rules in a sequence of changes (from any source: a forecast or a
/// watch of the real cluster). Nodes start Offline.
pub fn order_violations(
    calendar: &Calendar,
    nodes: &[TopologyNode],
    changes: &[Change],
    jobs: &[JobRun],
) -> Vec<String> {
    let resolved = resolve(nodes);
    let mut phase = vec![NodePhase::Offline; nodes.len()];
    let mut stopped_at: Vec<Option<Timestamp>> = vec![None; nodes.len()];
    // Between a node's Stopping and its next Offline, the nodes below it must stay Offline:
    // it stopped on the strength of that.
    let mut stopping = vec![false; nodes.len()];
    let mut problems = Vec::new();
    let name = |i: usize| format!("{}/{}", nodes[i].namespace, nodes[i].name);
    let mut job_iter = jobs.iter().peekable();
    let mut seen_jobs: BTreeMap<(usize, String, Date), usize> = BTreeMap::new();
    for c in changes {
        // Changes at the same instant as a Job come first: the Job is created by the step that
        // enters DailyBatch.
        while let Some(j) = job_iter.next_if(|j| j.at < c.at) {
            check_job(&mut problems, &phase, &stopped_at, j, &name);
            *seen_jobs
                .entry((j.node, j.batch.clone(), j.date))
                .or_default() += 1;
        }
        if c.to == NodePhase::Starting {
            if let Resolved::Node(up) = resolved[c.node]
                && phase[up] != NodePhase::Online
            {
                problems.push(format!(
                    "{} {} started while its upstream {} was {:?}",
                    c.at,
                    name(c.node),
                    name(up),
                    phase[up]
                ));
            }
            // Inside the node's tier window (a prefecture's own end from the calendar): not just
            // any time of an open day or of the day after one.
            let n = &nodes[c.node];
            if !calendar.in_online_window(n.tier, n.prefecture, c.at) {
                let date = calendar.date_of(c.at);
                let day = calendar.day_status(date);
                problems.push(if day.is_open() {
                    format!(
                        "{} {} started outside its online window",
                        c.at,
                        name(c.node)
                    )
                } else {
                    format!("{} {} started on a closed day ({day})", c.at, name(c.node))
                });
            }
        }
        if c.to == NodePhase::Stopping {
            for down in downstream_of(&resolved, c.node) {
                if phase[down] != NodePhase::Offline {
                    problems.push(format!(
                        "{} {} stopped while {} below it was {:?}",
                        c.at,
                        name(c.node),
                        name(down),
                        phase[down]
                    ));
                }
            }
            stopped_at[c.node] = Some(c.at);
        }
        if c.to == NodePhase::DailyBatch
            && !matches!(c.from, NodePhase::Stopping | NodePhase::DailyBatch)
            && let Resolved::Node(up) = resolved[c.node]
            && stopping[up]
        {
            problems.push(format!(
                "{} {} left {:?} for DailyBatch while its upstream {} was stopping",
                c.at,
                name(c.node),
                c.from,
                name(up)
            ));
        }
        stopping[c.node] = match c.to {
            NodePhase::Stopping => true,
            NodePhase::DailyBatch => stopping[c.node],
            _ => false,
        };
        phase[c.node] = c.to;
    }
    for j in job_iter {
        check_job(&mut problems, &phase, &stopped_at, j, &name);
        *seen_jobs
            .entry((j.node, j.batch.clone(), j.date))
            .or_default() += 1;
    }
    for ((node, batch, date), count) in seen_jobs {
        if count > 1 {
            problems.push(format!(
                "{} ran batch {batch} of {date} {count} times",
                name(node)
            ));
        }
    }
    problems
}

fn check_job(
    problems: &mut Vec<String>,
    phase: &[NodePhase],
    stopped_at: &[Option<Timestamp>],
    j: &JobRun,
    name: &impl Fn(usize) -> String,
) {
    let stopped = stopped_at[j.node].is_some_and(|s| s <= j.at);
    if !stopped
        || matches!(
            phase[j.node],
            NodePhase::Starting | NodePhase::Online | NodePhase::Draining
        )
    {
        problems.push(format!(
            "{} batch {} of {} started while {} was {:?}",
            j.at,
            j.batch,
            j.date,
            name(j.node),
            phase[j.node]
        ));
    }
}

/// The forecast as text, one line per change or batch, in the calendar's time zone.
pub fn render(calendar: &Calendar, nodes: &[ForecastNode], forecast: &Forecast) -> String {
    let tz = calendar.time_zone().clone();
    let mut lines: Vec<(Timestamp, usize, String)> = Vec::new();
    let name = |i: usize| format!("{}/{}", nodes[i].topology.namespace, nodes[i].topology.name);
    for c in &forecast.changes {
        lines.push((
            c.at,
            c.seq,
            format!(
                "{:<28} {:?} → {:?} ({})",
                name(c.node),
                c.from,
                c.to,
                c.reason.map_or("", Reason::as_str)
            ),
        ));
    }
    for j in &forecast.jobs {
        lines.push((
            j.at,
            j.seq,
            format!("{:<28} batch {} of {}", name(j.node), j.batch, j.date),
        ));
    }
    lines.sort_by_key(|(at, k, _)| (*at, *k));
    let mut out = String::new();
    for (at, _, text) in lines {
        writeln!(
            out,
            "{}  {text}",
            at.to_zoned(tz.clone()).strftime("%Y-%m-%d %a %H:%M")
        )
        .unwrap();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use juki_calendar::{CalendarConfig, Tier};

    fn tokyo(text: &str) -> Timestamp {
        format!("{text}[Asia/Tokyo]")
            .parse::<jiff::Zoned>()
            .unwrap()
            .timestamp()
    }

    fn node(
        ns: &str,
        name: &str,
        tier: Tier,
        prefecture: Option<u8>,
        online_end: Option<&str>,
    ) -> ForecastNode {
        ForecastNode {
            topology: TopologyNode {
                namespace: ns.into(),
                name: name.into(),
                tier,
                prefecture,
                upstream: None,
                tls: false,
            },
            online_end: online_end.map(|e| TimeOfDay::parse(e).unwrap()),
            replicas: 1,
        }
    }

    fn country() -> Vec<ForecastNode> {
        vec![
            node("nat", "national", Tier::National, None, None),
            node("p13", "pref-13", Tier::Prefecture, Some(13), Some("21:45")),
            node("p13", "cs-131016", Tier::Cs, Some(13), None),
            node("p13", "cs-131041", Tier::Cs, Some(13), None),
            node("p27", "pref-27", Tier::Prefecture, Some(27), None),
            node("p27", "cs-271004", Tier::Cs, Some(27), None),
            node("p27", "cs-272051", Tier::Cs, Some(27), None),
        ]
    }

    fn names(nodes: &[ForecastNode], changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| format!("{} {:?}", nodes[c.node].topology.name, c.to))
            .collect()
    }

    #[test]
    fn a_weekday_starts_top_down_and_stops_bottom_up() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let nodes = &country()[..3];
        let f = simulate(
            &cal,
            nodes,
            tokyo("2026-11-27T00:00"),
            tokyo("2026-11-28T00:00"),
        );
        assert_eq!(
            names(nodes, &f.changes),
            [
                "national Starting",
                "national Online",
                "pref-13 Starting",
                "pref-13 Online",
                "cs-131016 Starting",
                "cs-131016 Online",
                "cs-131016 Draining",
                "cs-131016 Stopping",
                "cs-131016 DailyBatch",
                "cs-131016 Offline",
                "pref-13 Draining",
                "pref-13 Stopping",
                "pref-13 DailyBatch",
                "pref-13 Offline",
                "national Draining",
                "national Stopping",
                "national DailyBatch",
                "national Offline",
            ]
        );
        let at = |i: usize| {
            f.changes[i]
                .at
                .to_zoned(cal.time_zone().clone())
                .strftime("%H:%M")
                .to_string()
        };
        assert_eq!(
            (at(0), at(2), at(4), at(6), at(10), at(14)),
            (
                "07:00".into(),
                "07:30".into(),
                "08:00".into(),
                "21:00".into(),
                "21:45".into(),
                "22:00".into()
            )
        );
        let jobs: Vec<String> = f
            .jobs
            .iter()
            .map(|j| format!("{} {}", nodes[j.node].topology.name, j.batch))
            .collect();
        assert_eq!(
            jobs,
            [
                "cs-131016 statistics",
                "cs-131016 backup",
                "pref-13 statistics",
                "pref-13 backup",
                "national statistics",
                "national backup"
            ]
        );
    }

    #[test]
    fn two_weeks_with_a_holiday_and_the_year_end_keep_every_order_rule() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let nodes = country();
        let topology: Vec<TopologyNode> = nodes.iter().map(|n| n.topology.clone()).collect();
        // Mon 2026-11-23 is a holiday; Dec 28 – Jan 4 crosses the year-end closure.
        for (from, to, open_days) in [
            ("2026-11-21T00:00", "2026-11-28T00:00", 4),
            ("2026-12-26T00:00", "2027-01-05T00:00", 2),
        ] {
            let f = simulate(&cal, &nodes, tokyo(from), tokyo(to));
            assert_eq!(
                order_violations(&cal, &topology, &f.changes, &f.jobs),
                Vec::<String>::new()
            );
            let starts = f
                .changes
                .iter()
                .filter(|c| c.to == NodePhase::Starting)
                .count();
            assert_eq!(starts, open_days * nodes.len(), "{from}");
            assert_eq!(f.jobs.len(), open_days * nodes.len() * 2, "{from}");
            for c in f.changes.iter().filter(|c| c.to == NodePhase::Starting) {
                assert!(
                    cal.is_open(cal.date_of(c.at)),
                    "{} started on a closed day",
                    c.at
                );
            }
        }
    }

    #[test]
    fn a_prefecture_does_not_stop_between_the_dates_of_a_cs_catch_up() {
        // Friday 20:00, the operator back after an outage: every node Online, the CS with
        // Wednesday's and Thursday's batches missed. A prefecture closing with the CS (21:00)
        // must wait for the whole catch-up, not stop when the first missed date is done.
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let mut nodes = country()[..3].to_vec();
        nodes[1].online_end = Some(TimeOfDay::parse("21:00").unwrap());
        let topology: Vec<TopologyNode> = nodes.iter().map(|n| n.topology.clone()).collect();
        let online = |last: Date| Start {
            phase: NodePhase::Online,
            last_batch_date: Some(last),
        };
        let starts = [
            online(jiff::civil::date(2026, 11, 26)),
            online(jiff::civil::date(2026, 11, 26)),
            online(jiff::civil::date(2026, 11, 24)),
        ];
        let f = simulate_from(
            &cal,
            &nodes,
            &starts,
            tokyo("2026-11-27T20:00"),
            tokyo("2026-11-28T00:00"),
        );
        assert_eq!(
            order_violations(&cal, &topology, &f.changes, &f.jobs),
            Vec::<String>::new()
        );
        // The CS ran Wednesday's, Thursday's and Friday's batches, in one DailyBatch.
        let cs_dates: Vec<String> = f
            .jobs
            .iter()
            .filter(|j| j.node == 2)
            .map(|j| format!("{} {}", j.batch, j.date))
            .collect();
        assert_eq!(
            cs_dates,
            [
                "statistics 2026-11-25",
                "backup 2026-11-25",
                "statistics 2026-11-26",
                "backup 2026-11-26",
                "statistics 2026-11-27",
                "backup 2026-11-27"
            ]
        );
        let cs_batch_entries = f
            .changes
            .iter()
            .filter(|c| c.node == 2 && c.to == NodePhase::DailyBatch)
            .count();
        assert_eq!(cs_batch_entries, 1, "{:?}", names(&nodes, &f.changes));
    }

    #[test]
    fn the_order_check_catches_a_node_below_leaving_offline_while_its_upstream_stops() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let topology: Vec<TopologyNode> = country().iter().map(|n| n.topology.clone()).collect();
        let change = |node, from, to| Change {
            seq: 0,
            at: tokyo("2026-11-27T21:50"),
            node,
            from,
            to,
            reason: None,
        };
        use NodePhase::*;
        let cs_back_to_batch = [change(1, Offline, Stopping), change(2, Offline, DailyBatch)];
        let problems = order_violations(&cal, &topology, &cs_back_to_batch, &[]);
        assert!(
            problems.iter().any(|p| p.contains(
                "p13/cs-131016 left Offline for DailyBatch while its upstream p13/pref-13 was stopping"
            )),
            "{problems:?}"
        );
        // Once the prefecture is Offline again, a catch-up below it is no break of the order.
        let after = [
            change(1, Offline, Stopping),
            change(1, Stopping, DailyBatch),
            change(1, DailyBatch, Offline),
            change(2, Offline, DailyBatch),
        ];
        assert_eq!(
            order_violations(&cal, &topology, &after, &[]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_missing_upstream_keeps_a_node_offline() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let nodes = vec![node("p", "cs-011002", Tier::Cs, Some(1), None)];
        let f = simulate(
            &cal,
            &nodes,
            tokyo("2026-11-27T00:00"),
            tokyo("2026-11-28T00:00"),
        );
        assert!(
            f.changes
                .iter()
                .all(|c| c.to == NodePhase::Offline || c.to == NodePhase::DailyBatch),
            "{:?}",
            f.changes
        );
    }

    #[test]
    fn the_order_check_catches_a_start_outside_the_window_even_the_night_after_an_open_day() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let nodes = country();
        let topology: Vec<TopologyNode> = nodes.iter().map(|n| n.topology.clone()).collect();
        let start = |at| {
            let c = Change {
                seq: 0,
                at,
                node: 0,
                from: NodePhase::Offline,
                to: NodePhase::Starting,
                reason: Some(Reason::WindowOpen),
            };
            order_violations(&cal, &topology, &[c], &[])
        };
        // Saturday 03:00, after Friday's open day: the old check let it pass.
        let problems = start(tokyo("2026-11-28T03:00"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("started on a closed day"),
            "{problems:?}"
        );
        // Friday 23:00 and 06:00: open day, outside the national window.
        for at in ["2026-11-27T23:00", "2026-11-27T06:00"] {
            let problems = start(tokyo(at));
            assert!(
                problems.len() == 1 && problems[0].contains("started outside its online window"),
                "{at}: {problems:?}"
            );
        }
        assert!(start(tokyo("2026-11-27T07:00")).is_empty());
    }

    #[test]
    fn the_order_check_catches_a_start_before_the_upstream() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let nodes = country();
        let topology: Vec<TopologyNode> = nodes.iter().map(|n| n.topology.clone()).collect();
        let bad = vec![Change {
            seq: 0,
            at: tokyo("2026-11-27T08:00"),
            node: 2,
            from: NodePhase::Offline,
            to: NodePhase::Starting,
            reason: Some(Reason::WindowOpen),
        }];
        let problems = order_violations(&cal, &topology, &bad, &[]);
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0]
                .contains("p13/cs-131016 started while its upstream p13/pref-13 was Offline"),
            "{problems:?}"
        );
    }
}
