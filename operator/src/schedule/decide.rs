//! What to do now: given the schedule, the calendar, the node tree with each node's state and the
//! record of runs, which runs start, which wait and why, which are skipped, which attempts ran out
//! of time, which are late, and which nodes must not start yet.
//!
//! Invariants (tested as properties): a run starts only after its dependencies' runs of the same
//! operating day succeeded or were skipped; at most one attempt of a node/entry/day is running
//! or started at a time, and a day that succeeded or was skipped never starts again; no run is
//! on a closed day unless its entry asks (At with runOnClosedDays).

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp, ToSpan};
use juki_calendar::{Calendar, Tier, TimeOfDay, Window};

use super::compile::{Entry, Schedule, When};
use super::key::RunKey;
use super::select::selects;
use crate::api::{CatchUp, DeadlinePolicy, DependencyScope, NodePhase};
use crate::planner::{NodeView, window_on};
use crate::topology::{Resolved, TopologyNode, resolve};

/// How far back runs are looked for (a long weekend, the year-end closure), as the batches.
pub const LOOKBACK_DAYS: i32 = 10;

/// A node as the schedule sees it.
#[derive(Debug, Clone)]
pub struct ScheduleNode {
    pub topology: TopologyNode,
    pub labels: BTreeMap<String, String>,
    /// The node's own online end (Prefecture tier).
    pub online_end: Option<TimeOfDay>,
    pub phase: NodePhase,
    /// The operating date of the node's last stop (its window's date), if it stopped.
    pub stopped: Option<Date>,
}

/// Which run: a node (index into the nodes), an entry (index into the schedule), a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RunId {
    pub node: usize,
    pub entry: usize,
    pub date: Date,
}

/// A run as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Due and seen, not started yet (waiting for dependencies, a slot, the node's stop).
    Pending,
    Running {
        attempt: u32,
        started: Timestamp,
    },
    Succeeded {
        attempt: u32,
    },
    /// This attempt failed (or ran out of time); another follows if retries are left.
    Failed {
        attempt: u32,
        at: Timestamp,
    },
    Skipped,
}

/// Why a run is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A missed day that the entry's catch-up does not run.
    CatchUp,
    /// Not started by its deadline (deadline Skip).
    DeadlineMissed,
}

/// Why a due run does not start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// AfterStop: the node has not stopped after that day's window yet.
    NodeNotStopped,
    /// An older day of the same node and entry is not done.
    EarlierDay(Date),
    /// These runs ("namespace/node entry") have not succeeded yet.
    Dependencies(Vec<String>),
    /// A concurrency limit is reached.
    Concurrency(&'static str),
    /// The next attempt's backoff ends then.
    Backoff(Timestamp),
    /// The entry is held (`hold: true`).
    Held,
}

/// An attempt to start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    pub run: RunId,
    pub key: RunKey,
    /// When the attempt counts as failed (the Job's activeDeadlineSeconds).
    pub timeout: SignedDuration,
    pub deadline: Option<Timestamp>,
}

/// A run not done by (or, started now, at risk of missing) its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Late {
    pub run: RunId,
    pub deadline: Timestamp,
    /// The deadline has passed (else: a run of the full timeout would end after it).
    pub missed: bool,
    pub policy: DeadlinePolicy,
}

/// Everything decided at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decisions {
    pub start: Vec<Start>,
    /// Due runs seen for the first time: record them Pending.
    pub pending: Vec<RunId>,
    pub skip: Vec<(RunId, SkipReason)>,
    /// Attempts past their timeout: stop the Job, record the attempt Failed.
    pub expire: Vec<RunKey>,
    pub waiting: Vec<(RunId, Wait)>,
    pub late: Vec<Late>,
    /// Nodes that must not start while these HoldStart runs are not done: (node, run).
    pub holds: Vec<(usize, RunId)>,
    /// When to decide again even if nothing is observed to change.
    pub wake_at: Option<Timestamp>,
}

/// The inputs of [`decide`].
#[derive(Debug, Clone, Copy)]
pub struct World<'a> {
    pub calendar: &'a Calendar,
    pub schedule: &'a Schedule,
    /// The schedule's namespace (where entries select nodes by default).
    pub namespace: &'a str,
    pub nodes: &'a [ScheduleNode],
    pub records: &'a HashMap<RunId, RunState>,
    /// When the schedule was created: a day triggered before is not a missed day.
    pub since: Timestamp,
}

/// One occurrence of an entry on a node and day, with its times.
#[derive(Debug, Clone, Copy)]
struct Due {
    run: RunId,
    trigger: Timestamp,
    deadline: Option<Timestamp>,
}

/// What shapes a node's window on a date: tier, a prefectural server's prefecture, its own end.
type WindowShape = (Tier, Option<u8>, Option<TimeOfDay>, Date);

/// What the decision knows about the world, computed once.
struct Facts<'a> {
    world: World<'a>,
    children: Vec<Vec<usize>>,
    /// selected[entry][node]
    selected: Vec<Vec<bool>>,
    /// Dates from the oldest looked at to tomorrow.
    dates: Vec<Date>,
    /// due_day[entry][date index]: the entry's days rule holds on that date.
    due_day: Vec<Vec<bool>>,
    /// Online windows by what shapes them (tier, a prefecture's own end, the node's own end),
    /// so that 1,741 CSs share one computation per date.
    windows: HashMap<WindowShape, Option<Window>>,
}

/// Decides at `now`; see the module docs.
pub fn decide(world: World<'_>, now: Timestamp) -> Decisions {
    let mut facts = Facts::new(world, now);
    let mut out = Decisions::default();
    let dues = facts.dues(now, &mut out);
    let mut counts = Counts::running(&facts, &dues);
    let mut candidates = Vec::new();
    // Days skipped by this decision no longer hold the newer days back.
    let mut skipped = HashSet::new();
    for (i, due) in dues.iter().enumerate() {
        let older = dues[..i]
            .iter()
            .rev()
            .take_while(|d| (d.run.node, d.run.entry) == (due.run.node, due.run.entry))
            .find(|d| !skipped.contains(&d.run) && facts.unfinished(d.run))
            .map(|d| d.run.date);
        let skips_before = out.skip.len();
        if let Some(c) = facts.classify(due, older, &dues, now, &mut out) {
            candidates.push(c);
        }
        skipped.extend(out.skip[skips_before..].iter().map(|(run, _)| *run));
    }
    // First due first: the oldest day, the earliest trigger, the entry order, the node order.
    candidates.sort_by_key(|(due, _)| (due.run.date, due.trigger, due.run.entry, due.run.node));
    for (due, attempt) in candidates {
        facts.start_or_wait(due, attempt, &mut counts, now, &mut out);
    }
    // Triggers are looked for up to tomorrow: look again when tomorrow begins at the latest.
    let tomorrow = world.calendar.date_of(now).tomorrow().ok();
    let start_of = |d| TimeOfDay::hm(0, 0).and_then(|t| world.calendar.checked_instant(d, t));
    if let Some(midnight) = tomorrow.and_then(start_of) {
        wake(&mut out, midnight);
    }
    out
}

impl<'a> Facts<'a> {
    fn new(world: World<'a>, now: Timestamp) -> Facts<'a> {
        let topology: Vec<TopologyNode> = world.nodes.iter().map(|n| n.topology.clone()).collect();
        let mut children = vec![Vec::new(); world.nodes.len()];
        for (i, r) in resolve(&topology).into_iter().enumerate() {
            if let Resolved::Node(up) = r {
                children[up].push(i);
            }
        }
        let selected = world
            .schedule
            .entries
            .iter()
            .map(|e| {
                world
                    .nodes
                    .iter()
                    .map(|n| selects(&e.nodes, world.namespace, &n.topology, &n.labels))
                    .collect()
            })
            .collect();
        let today = world.calendar.date_of(now);
        let dates: Vec<Date> = (-LOOKBACK_DAYS..=1)
            .filter_map(|i| today.checked_add(i.days()).ok())
            .collect();
        let due_day = world
            .schedule
            .entries
            .iter()
            .map(|e| {
                dates
                    .iter()
                    .map(|d| day_rule(world.calendar, e, *d))
                    .collect()
            })
            .collect();
        Facts {
            world,
            children,
            selected,
            dates,
            due_day,
            windows: HashMap::new(),
        }
    }

    fn entry(&self, run: RunId) -> &'a Entry {
        &self.world.schedule.entries[run.entry]
    }

    fn record(&self, run: RunId) -> Option<RunState> {
        self.world.records.get(&run).copied()
    }

    /// Not done: due and neither succeeded, skipped, nor failed with no retry left.
    fn unfinished(&self, run: RunId) -> bool {
        match self.record(run) {
            None | Some(RunState::Pending | RunState::Running { .. }) => true,
            Some(RunState::Succeeded { .. } | RunState::Skipped) => false,
            Some(RunState::Failed { attempt, .. }) => attempt <= self.entry(run).retries.limit,
        }
    }

    fn window(&mut self, node: usize, date: Date) -> Option<Window> {
        let World {
            calendar, nodes, ..
        } = self.world;
        let n = &nodes[node];
        let t = &n.topology;
        let prefecture = t.prefecture.filter(|_| t.tier == Tier::Prefecture);
        *self
            .windows
            .entry((t.tier, prefecture, n.online_end, date))
            .or_insert_with(|| {
                let view = NodeView::bare(t.tier, t.prefecture, n.online_end);
                window_on(calendar, &view, date)
            })
    }

    /// The node's first online start after `at` (within a month).
    fn next_start(&mut self, node: usize, at: Timestamp) -> Option<Timestamp> {
        let from = self.world.calendar.date_of(at).yesterday().ok()?;
        (0..=31)
            .filter_map(|i| from.checked_add(i.days()).ok())
            .filter_map(|d| self.window(node, d))
            .map(|w| w.start)
            .find(|start| *start > at)
    }

    /// The entry's trigger instant and deadline on a node and day, if it has one that day.
    fn times(&mut self, run: RunId) -> Option<(Timestamp, Option<Timestamp>)> {
        let entry = self.entry(run);
        match entry.when {
            When::AfterStop => {
                let w = self.window(run.node, run.date)?;
                Some((w.end, self.next_start(run.node, w.end)))
            }
            When::At(time) => {
                let at = self.world.calendar.checked_instant(run.date, time)?;
                Some((at, self.next_start(run.node, at)))
            }
            When::BeforeStart(lead) => {
                let w = self.window(run.node, run.date)?;
                Some((w.start.checked_sub(lead).ok()?, Some(w.start)))
            }
        }
    }

    /// Every occurrence triggered by `now`, grouped by node and entry, oldest day first. Also
    /// sets the wake-up for the next trigger.
    fn dues(&mut self, now: Timestamp, out: &mut Decisions) -> Vec<Due> {
        let mut dues = Vec::new();
        for node in 0..self.world.nodes.len() {
            for entry in 0..self.world.schedule.entries.len() {
                if !self.selected[entry][node] {
                    continue;
                }
                for d in 0..self.dates.len() {
                    if !self.due_day[entry][d] {
                        continue;
                    }
                    let run = RunId {
                        node,
                        entry,
                        date: self.dates[d],
                    };
                    let Some((trigger, deadline)) = self.times(run) else {
                        continue;
                    };
                    let recorded = self.record(run).is_some();
                    if trigger > now {
                        wake(out, trigger);
                    } else if recorded || trigger >= self.world.since {
                        dues.push(Due {
                            run,
                            trigger,
                            deadline,
                        });
                    }
                }
            }
        }
        dues
    }

    /// Sorts out one occurrence: done, running (or out of time), skipped, waiting for its
    /// backoff, or a candidate to start (with its attempt number). Lateness and holds too.
    fn classify(
        &mut self,
        due: &Due,
        older: Option<Date>,
        dues: &[Due],
        now: Timestamp,
        out: &mut Decisions,
    ) -> Option<(Due, u32)> {
        let entry = self.entry(due.run);
        let past_deadline = due.deadline.is_some_and(|d| d <= now);
        if !self.unfinished(due.run) {
            return None;
        }
        // Its deadline changes what is late and held.
        if let Some(deadline) = due.deadline.filter(|d| *d > now) {
            wake(out, deadline);
        }
        let candidate = match self.record(due.run) {
            None if past_deadline => {
                if !catch_up(due, dues, self, now) {
                    out.skip.push((due.run, SkipReason::CatchUp));
                    return None;
                }
                Some(1)
            }
            None => {
                out.pending.push(due.run);
                Some(1)
            }
            Some(RunState::Pending | RunState::Failed { .. })
                if past_deadline && entry.deadline == DeadlinePolicy::Skip =>
            {
                out.skip.push((due.run, SkipReason::DeadlineMissed));
                return None;
            }
            Some(RunState::Pending) => Some(1),
            Some(RunState::Running { attempt, started }) => {
                let ends = started.checked_add(entry.timeout).unwrap_or(Timestamp::MAX);
                if ends <= now {
                    out.expire.push(self.key(due.run, attempt));
                } else {
                    wake(out, ends);
                }
                self.report_late(due, Some(ends), now, out);
                None
            }
            Some(RunState::Failed { attempt, at }) => {
                let retry_at = at
                    .checked_add(backoff(entry, attempt))
                    .unwrap_or(Timestamp::MAX);
                if retry_at > now {
                    wake(out, retry_at);
                    out.waiting.push((due.run, Wait::Backoff(retry_at)));
                    self.report_late(due, None, now, out);
                    None
                } else {
                    Some(attempt + 1)
                }
            }
            Some(RunState::Succeeded { .. } | RunState::Skipped) => None,
        };
        if let Some(day) = older {
            out.waiting.push((due.run, Wait::EarlierDay(day)));
            self.report_late(due, None, now, out);
            return None;
        }
        candidate.map(|attempt| (*due, attempt))
    }

    /// Starts a candidate if the node is ready, its dependencies are done and a slot is free;
    /// otherwise says why it waits.
    fn start_or_wait(
        &mut self,
        due: Due,
        attempt: u32,
        counts: &mut Counts,
        now: Timestamp,
        out: &mut Decisions,
    ) {
        let entry = self.entry(due.run);
        let wait = if entry.held {
            Some(Wait::Held)
        } else if entry.when == When::AfterStop && !self.stopped_after(due.run) {
            Some(Wait::NodeNotStopped)
        } else if let Some(missing) = self.missing_dependencies(due.run) {
            Some(Wait::Dependencies(missing))
        } else {
            counts.full(self, due.run).map(Wait::Concurrency)
        };
        match wait {
            Some(wait) => {
                out.waiting.push((due.run, wait));
                self.report_late(&due, None, now, out);
            }
            None => {
                counts.add(self, due.run);
                let ends = now.checked_add(entry.timeout).ok();
                self.report_late(&due, ends, now, out);
                out.start.push(Start {
                    run: due.run,
                    key: self.key(due.run, attempt),
                    timeout: entry.timeout,
                    deadline: due.deadline,
                });
            }
        }
    }

    /// Whether the node has stopped after the run's day and is not online again.
    fn stopped_after(&self, run: RunId) -> bool {
        let n = &self.world.nodes[run.node];
        n.stopped.is_some_and(|s| s >= run.date)
            && matches!(n.phase, NodePhase::Offline | NodePhase::DailyBatch)
    }

    /// The dependencies' runs of the same day that are not done yet, by name; `None` when all
    /// are (a node the entry waited for does not run that entry that day: nothing to wait for).
    fn missing_dependencies(&self, run: RunId) -> Option<Vec<String>> {
        let mut missing = Vec::new();
        for &(dep, scope) in &self.entry(run).after {
            for node in self.scope_nodes(run.node, scope) {
                let dep_run = RunId {
                    node,
                    entry: dep,
                    date: run.date,
                };
                let done = matches!(
                    self.record(dep_run),
                    Some(RunState::Succeeded { .. } | RunState::Skipped)
                );
                if self.applies(dep_run) && !done {
                    let n = &self.world.nodes[node].topology;
                    let name = &self.world.schedule.entries[dep].name;
                    missing.push(format!("{}/{} {name}", n.namespace, n.name));
                }
            }
        }
        (!missing.is_empty()).then_some(missing)
    }

    /// Whether an entry runs on a node on a day at all.
    fn applies(&self, run: RunId) -> bool {
        let day = self.dates.iter().position(|d| *d == run.date);
        self.selected[run.entry][run.node] && day.is_some_and(|d| self.due_day[run.entry][d])
    }

    fn scope_nodes(&self, node: usize, scope: DependencyScope) -> Vec<usize> {
        match scope {
            DependencyScope::SameNode => vec![node],
            DependencyScope::NodesBelow => self.children[node].clone(),
            DependencyScope::AllBelow => {
                let mut all = Vec::new();
                let mut stack = self.children[node].clone();
                while let Some(n) = stack.pop() {
                    // A malformed tree cannot loop here: resolve() leaves cycles unresolved.
                    if all.contains(&n) || all.len() > self.world.nodes.len() {
                        continue;
                    }
                    all.push(n);
                    stack.extend(&self.children[n]);
                }
                all
            }
        }
    }

    fn report_late(
        &mut self,
        due: &Due,
        ends: Option<Timestamp>,
        now: Timestamp,
        out: &mut Decisions,
    ) {
        let Some(deadline) = due.deadline else { return };
        let entry = self.entry(due.run);
        let ends = ends.or_else(|| now.checked_add(entry.timeout).ok());
        let missed = deadline <= now;
        if missed || ends.is_some_and(|e| e > deadline) {
            out.late.push(Late {
                run: due.run,
                deadline,
                missed,
                policy: entry.deadline,
            });
        }
        if entry.deadline == DeadlinePolicy::HoldStart {
            out.holds.push((due.run.node, due.run));
        }
    }

    fn key(&self, run: RunId, attempt: u32) -> RunKey {
        let n = &self.world.nodes[run.node].topology;
        RunKey {
            namespace: n.namespace.clone(),
            node: n.name.clone(),
            entry: self.entry(run).name.clone(),
            date: run.date,
            attempt,
        }
    }
}

/// Whether a missed day runs under the entry's catch-up: All, every one; Once, only the newest
/// missed day of this node and entry; Skip, none.
fn catch_up(due: &Due, dues: &[Due], facts: &Facts<'_>, now: Timestamp) -> bool {
    match facts.entry(due.run).catch_up {
        CatchUp::All => true,
        CatchUp::Skip => false,
        CatchUp::Once => !dues.iter().any(|d| {
            (d.run.node, d.run.entry) == (due.run.node, due.run.entry)
                && d.run.date > due.run.date
                && facts.record(d.run).is_none()
                && d.deadline.is_some_and(|deadline| deadline <= now)
        }),
    }
}

/// The backoff after a failed attempt: backoffSeconds doubled per attempt, capped.
fn backoff(entry: &Entry, attempt: u32) -> SignedDuration {
    let base = u64::from(entry.retries.backoff_seconds);
    let doubled = base.saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    let seconds = doubled.min(u64::from(entry.retries.max_backoff_seconds));
    SignedDuration::from_secs(seconds as i64)
}

/// Whether the entry's days rule holds on a date: its schedule and closed-day policy, or with
/// runOnClosedDays its nominal day whether open or not.
fn day_rule(calendar: &Calendar, entry: &Entry, date: Date) -> bool {
    if !entry.run_on_closed_days {
        return calendar.run_on(&entry.days, date).is_some();
    }
    use juki_calendar::config::BatchSchedule;
    match entry.days.schedule {
        BatchSchedule::Daily => true,
        BatchSchedule::Weekly => entry
            .days
            .weekday
            .is_some_and(|w| date.weekday() == jiff::civil::Weekday::from(w)),
        BatchSchedule::Monthly => entry
            .days
            .day_of_month
            .is_some_and(|d| date.day() == (d as i8).min(date.days_in_month())),
    }
}

fn wake(out: &mut Decisions, at: Timestamp) {
    out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
}

/// Runs going on, for the concurrency limits: overall and by prefecture (the national server is
/// its own group), for the schedule and per entry.
#[derive(Debug, Default)]
struct Counts {
    overall: u32,
    by_prefecture: HashMap<Option<u8>, u32>,
    entry_overall: HashMap<usize, u32>,
    entry_by_prefecture: HashMap<(usize, Option<u8>), u32>,
}

impl Counts {
    fn running(facts: &Facts<'_>, dues: &[Due]) -> Counts {
        let mut counts = Counts::default();
        for due in dues {
            if matches!(facts.record(due.run), Some(RunState::Running { .. })) {
                counts.add(facts, due.run);
            }
        }
        counts
    }

    fn add(&mut self, facts: &Facts<'_>, run: RunId) {
        let p = facts.world.nodes[run.node].topology.prefecture;
        self.overall += 1;
        *self.by_prefecture.entry(p).or_default() += 1;
        *self.entry_overall.entry(run.entry).or_default() += 1;
        *self.entry_by_prefecture.entry((run.entry, p)).or_default() += 1;
    }

    /// The limit a new run would break, if any.
    fn full(&self, facts: &Facts<'_>, run: RunId) -> Option<&'static str> {
        let p = facts.world.nodes[run.node].topology.prefecture;
        let schedule = facts.world.schedule.concurrency;
        let entry = facts.world.schedule.entries[run.entry].concurrency;
        let at_limit = |count: u32, limit: Option<u32>| limit.is_some_and(|l| count >= l);
        let in_prefecture = self.by_prefecture.get(&p).copied().unwrap_or(0);
        let of_entry = self.entry_overall.get(&run.entry).copied().unwrap_or(0);
        let of_entry_in_prefecture = self
            .entry_by_prefecture
            .get(&(run.entry, p))
            .copied()
            .unwrap_or(0);
        if at_limit(self.overall, schedule.overall) {
            Some("spec.concurrency.overall")
        } else if at_limit(in_prefecture, schedule.per_prefecture) {
            Some("spec.concurrency.perPrefecture")
        } else if at_limit(of_entry, entry.overall) {
            Some("entry concurrency.overall")
        } else if at_limit(of_entry_in_prefecture, entry.per_prefecture) {
            Some("entry concurrency.perPrefecture")
        } else {
            None
        }
    }
}

/// Entries whose node selection matches none of `nodes`, and cross-tier dependencies that no
/// node of the entry has below it: an unknown node set, most likely a typo (a prefecture, a
/// namespace, a label). For the schedule's status; the schedule itself stays usable.
pub fn unknown_node_sets(
    schedule: &Schedule,
    namespace: &str,
    nodes: &[ScheduleNode],
) -> Vec<super::ScheduleError> {
    let topology: Vec<TopologyNode> = nodes.iter().map(|n| n.topology.clone()).collect();
    let resolved = resolve(&topology);
    let picks = |e: &Entry| -> Vec<bool> {
        nodes
            .iter()
            .map(|n| selects(&e.nodes, namespace, &n.topology, &n.labels))
            .collect()
    };
    let mut errors = Vec::new();
    for (i, entry) in schedule.entries.iter().enumerate() {
        let mine = picks(entry);
        if !mine.contains(&true) {
            errors.push(super::ScheduleError {
                field: format!("spec.entries[{i}].nodes"),
                message: format!(
                    "matches no JukiNode (namespaces {:?}, tiers {:?}, prefectures {:?}, selector {})",
                    entry.nodes.namespaces,
                    entry.nodes.tiers,
                    entry.nodes.prefectures.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
                    if entry.nodes.selector.is_some() { "set" } else { "none" }
                ),
            });
            continue;
        }
        for (j, &(dep, scope)) in entry.after.iter().enumerate() {
            if scope == DependencyScope::SameNode {
                continue;
            }
            let theirs = picks(&schedule.entries[dep]);
            // A node below one of mine (at any depth: enough for both scopes to be possible).
            let below_mine = |mut k: usize| {
                for _ in 0..nodes.len() {
                    match resolved[k] {
                        Resolved::Node(up) if mine[up] => return true,
                        Resolved::Node(up) => k = up,
                        _ => return false,
                    }
                }
                false
            };
            if !(0..nodes.len()).any(|k| theirs[k] && below_mine(k)) {
                errors.push(super::ScheduleError {
                    field: format!("spec.entries[{i}].after[{j}]"),
                    message: format!(
                        "no node running {:?} lies below a node running {:?}: the dependency waits for nothing",
                        schedule.entries[dep].name, entry.name
                    ),
                });
            }
        }
    }
    errors
}
