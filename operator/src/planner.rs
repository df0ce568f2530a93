//! The planner: what one JukiNode should be doing now, as a pure function of the clock, the
//! calendar, the node's spec and what was observed of it and its neighbours. Controllers only
//! gather a [`NodeView`], call [`plan`], and apply the [`Plan`].
//!
//! Phases follow DESIGN.md: Offline → Starting → Online → Draining → Stopping → DailyBatch →
//! Offline, plus Failed with a reason. The dependency order comes from two rules: a node starts
//! only when its upstream is Online, and a node stops (Draining → Stopping) only when every node
//! below it is Offline.

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp, ToSpan};
use juki_calendar::{Calendar, Tier, TimeOfDay, Window};

use crate::api::{NodePhase, OverridePhase};

mod reason;
pub use reason::{Reason, UnknownReason};

/// How far back the planner looks for the operating date of a stop or a batch (a long weekend,
/// the year-end closure).
const LOOKBACK_DAYS: i32 = 10;

/// How long after its window start a node waiting for its upstream looks again by itself, in
/// real time: the grace covers the tiers above starting, which takes real seconds whatever the
/// clock's speed. The controller converts it to clock time ([`NodeView::waiting_grace`]).
pub const WAITING_GRACE: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// The state of a node's upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// National nodes have none.
    NotNeeded,
    /// Resolved, in this phase.
    Phase(NodePhase),
    /// No node matches.
    Missing,
    /// More than one node matches.
    Ambiguous,
}

/// A batch Job of the operating date, as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Absent,
    Running,
    Succeeded,
    Failed,
}

/// The final request / final answer exchange of the operating date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalAnswer {
    NotRequested,
    Done,
    /// The node could not be reached or did not answer in time; the stop goes on and the reason
    /// is reported.
    Failed(String),
    /// The node answered that not every update reached its upstream (`done: false`): the stop
    /// goes on, the updates wait in its outbox for tomorrow, and a warning says so.
    Held(String),
}

/// Everything the planner needs about one node.
#[derive(Debug, Clone)]
pub struct NodeView<'a> {
    pub tier: Tier,
    pub prefecture: Option<u8>,
    /// The node's own online end (Prefecture tier), overriding the calendar's.
    pub online_end: Option<TimeOfDay>,
    pub replicas: i32,
    pub suspend: bool,
    pub manual_override: Option<(OverridePhase, Timestamp)>,
    /// The latest `until` of an active `override: Online` of a node below this one: the
    /// upstream chain of a pinned node stays Online with it, as it does for an extension.
    pub pinned_below: Option<Timestamp>,
    /// The latest end of the active service extensions that keep this node up, by operating date.
    pub extensions: &'a [(Date, Timestamp)],
    /// Why a scheduled run holds the node's next start (a JobSchedule entry with deadline
    /// HoldStart not done yet), if one does.
    pub held: Option<&'a str>,
    /// Why a required delivery the node has not applied keeps it from going Online, if one does.
    pub delivery_held: Option<&'a str>,
    /// The phase in status (Offline when new) and when it was entered.
    pub phase: NodePhase,
    pub phase_since: Option<Timestamp>,
    pub reason: Option<Reason>,
    pub ready_replicas: i32,
    /// Pods of the node's Deployment that still exist.
    pub pods: i32,
    pub upstream: Upstream,
    /// Whether every node whose upstream is this one is Offline (true when there are none).
    pub downstream_offline: bool,
    pub final_answer: FinalAnswer,
    /// The node's batch Jobs: batch name, operating date, state.
    pub jobs: &'a [(String, Date, JobState)],
    /// The operating date of the last finished batch run.
    pub last_batch_date: Option<Date>,
    /// Starting longer than this (in clock time) makes the node Failed.
    pub readiness_timeout: SignedDuration,
    /// [`WAITING_GRACE`] in clock time.
    pub waiting_grace: SignedDuration,
}

impl<'a> NodeView<'a> {
    /// A view with only the window-shaping facts, for window queries.
    pub fn bare(tier: Tier, prefecture: Option<u8>, online_end: Option<TimeOfDay>) -> NodeView<'a> {
        NodeView {
            tier,
            prefecture,
            online_end,
            replicas: 1,
            suspend: false,
            manual_override: None,
            pinned_below: None,
            extensions: &[],
            held: None,
            delivery_held: None,
            phase: NodePhase::Offline,
            phase_since: None,
            reason: None,
            ready_replicas: 0,
            pods: 0,
            upstream: Upstream::NotNeeded,
            downstream_offline: true,
            final_answer: FinalAnswer::NotRequested,
            jobs: &[],
            last_batch_date: None,
            readiness_timeout: SignedDuration::from_mins(30),
            waiting_grace: SignedDuration::from_mins(5),
        }
    }
}

/// Something the controller does besides scaling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    /// Call the node's admin API: stop taking relays, flush, wait for the final answer.
    FinalRequest,
    /// Create the Job of this batch for the operating date.
    CreateJob {
        batch: String,
        date: Date,
    },
}

/// What the node should be doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub phase: NodePhase,
    /// Why the node is in its phase (status.reason).
    pub reason: Reason,
    pub message: String,
    /// Replicas of the Deployment; `None` leaves them as they are (suspended, invalid).
    pub replicas: Option<i32>,
    pub action: Action,
    /// The operating date the phase belongs to (the window's start date).
    pub operating_date: Option<Date>,
    /// An operating date whose batches this plan records as all succeeded (status.lastBatch):
    /// the date just finished, also on the way from one missed date to the next.
    pub batches_done: Option<Date>,
    /// When to look again even if nothing changes (a window edge, an override's expiry).
    pub wake_at: Option<Timestamp>,
    /// The next phase change the calendar foresees, for status.
    pub next: Option<(Timestamp, NodePhase)>,
    /// Nothing worth writing to status yet: a node whose upstream is still starting at window
    /// open shows WaitingForUpstream only if the wait lasts beyond the grace (it wakes then).
    pub defer_status: bool,
}

impl Plan {
    pub(crate) fn new(phase: NodePhase, reason: Reason, message: impl Into<String>) -> Plan {
        Plan {
            phase,
            reason,
            message: message.into(),
            replicas: None,
            action: Action::None,
            operating_date: None,
            batches_done: None,
            wake_at: None,
            next: None,
            defer_status: false,
        }
    }

    fn replicas(mut self, n: i32) -> Plan {
        self.replicas = Some(n);
        self
    }

    fn action(mut self, action: Action) -> Plan {
        self.action = action;
        self
    }

    fn date(mut self, date: Option<Date>) -> Plan {
        self.operating_date = date;
        self
    }

    fn batches_done(mut self, date: Option<Date>) -> Plan {
        self.batches_done = date;
        self
    }

    /// The same batch plan without its Job: the node waits for a batch slot (`--max-batch-nodes`).
    pub fn queued_for_batch(mut self) -> Plan {
        if matches!(self.action, Action::CreateJob { .. }) {
            self.action = Action::None;
            self.reason = Reason::BatchQueued;
            self.message =
                "waiting for a batch slot (--max-batch-nodes, shared with the nodes still stopping)"
                    .into();
        }
        self
    }
}

/// The node's online window containing `at`, extended by an active service extension.
pub(crate) fn window_at(calendar: &Calendar, node: &NodeView<'_>, at: Timestamp) -> Option<Window> {
    let today = calendar.date_of(at);
    [today.yesterday().ok(), Some(today)]
        .into_iter()
        .flatten()
        .filter_map(|d| window_on(calendar, node, d))
        .find(|w| w.contains(at))
}

/// The node's own window on an operating date: the calendar's tier window, the node's own end,
/// then any extension of that date.
pub fn window_on(calendar: &Calendar, node: &NodeView<'_>, date: Date) -> Option<Window> {
    let mut w = calendar.online_window(node.tier, node.prefecture, date)?;
    if let Some(end) = node.online_end {
        w.end = calendar.checked_instant(date, end)?;
    }
    for (d, end) in node.extensions {
        if *d == date && *end > w.end {
            w.end = *end;
        }
    }
    Some(w)
}

/// The most recent window of the node that has ended by `at`.
pub(crate) fn last_ended_window(
    calendar: &Calendar,
    node: &NodeView<'_>,
    at: Timestamp,
) -> Option<Window> {
    let today = calendar.date_of(at);
    (0..=LOOKBACK_DAYS)
        .filter_map(|i| today.checked_sub(i.days()).ok())
        .filter_map(|d| window_on(calendar, node, d))
        .find(|w| w.end <= at)
}

/// The next window of the node that starts after `at`.
pub(crate) fn next_window(
    calendar: &Calendar,
    node: &NodeView<'_>,
    at: Timestamp,
) -> Option<Window> {
    let today = calendar.date_of(at);
    (0..=3 * 366)
        .filter_map(|i| today.checked_add(i.days()).ok())
        .filter_map(|d| window_on(calendar, node, d))
        .find(|w| w.start > at)
}

/// The override in force at `now`: the node's own wins; else a node pinned Online below keeps
/// this one Online (then also returned on its own, as the pin's `until`).
pub(crate) fn active_override(
    node: &NodeView<'_>,
    now: Timestamp,
) -> (Option<(OverridePhase, Timestamp)>, Option<Timestamp>) {
    let own_override = node.manual_override.filter(|(_, until)| *until > now);
    let pinned = node
        .pinned_below
        .filter(|until| own_override.is_none() && *until > now);
    let active = own_override.or(pinned.map(|until| (OverridePhase::Online, until)));
    (active, pinned)
}

/// Decides what one node should be doing at `now`.
pub fn plan(calendar: &Calendar, node: &NodeView<'_>, now: Timestamp) -> Plan {
    if node.suspend {
        return Plan::new(
            node.phase,
            Reason::Suspended,
            "spec.suspend is true: the operator changes nothing",
        );
    }
    let window = window_at(calendar, node, now);
    let (override_active, pinned) = active_override(node, now);
    let want_online = match override_active {
        Some((OverridePhase::Online, _)) => true,
        Some((OverridePhase::Offline, _)) => false,
        None => window.is_some(),
    };
    let upstream_online = matches!(
        node.upstream,
        Upstream::NotNeeded | Upstream::Phase(NodePhase::Online)
    );
    let mut plan = step(calendar, node, now, want_online, upstream_online, window);

    // Wake at the next edge that can change the decision: the window's end or the next start,
    // an override's expiry.
    let mut wake = match window {
        Some(w) => Some(w.end),
        // An Offline node whose upstream is not Online yet is woken by the upstream's own phase
        // change; at its window start it only looks again after a grace. So at window open the
        // tiers go in dependency order, instead of every CS writing WaitingForUpstream at once
        // while the national node is trying to start.
        None if plan.phase == NodePhase::Offline
            && matches!(node.upstream, Upstream::Phase(p) if p != NodePhase::Online) =>
        {
            next_window(calendar, node, now)
                .and_then(|w| w.start.checked_add(node.waiting_grace).ok())
        }
        None => next_window(calendar, node, now).map(|w| w.start),
    };
    if let Some(w) = window
        && plan.phase == NodePhase::Offline
        && plan.reason == Reason::WaitingForUpstream
        && node.phase == NodePhase::Offline
        && node.reason != Some(Reason::WaitingForUpstream)
        && matches!(
            node.upstream,
            Upstream::Phase(NodePhase::Offline | NodePhase::Starting)
        )
        && let Ok(grace_end) = w.start.checked_add(node.waiting_grace)
        && now < grace_end
    {
        // The upstream's own change to Online wakes this node; a status write now would be
        // one of a thousand at the moment the tiers above are starting.
        plan.defer_status = true;
        wake = Some(wake.map_or(grace_end, |w| w.min(grace_end)));
    }
    if let Some((_, until)) = override_active {
        wake = Some(wake.map_or(until, |w| w.min(until)));
    }
    // Online through the end of a window (the operator was away from before a window's end
    // until after the next start): that night's final exchange was skipped. Say which nights;
    // their batches run after the next stop, oldest first.
    if let (Some(w), None, NodePhase::Online, NodePhase::Online, Some(since)) = (
        window,
        override_active,
        plan.phase,
        node.phase,
        node.phase_since,
    ) {
        let missed: Vec<String> = (1..=LOOKBACK_DAYS)
            .rev()
            .filter_map(|i| w.date.checked_sub(i.days()).ok())
            .filter_map(|d| window_on(calendar, node, d))
            .filter(|m| since < m.end && m.end <= now)
            .map(|m| m.date.to_string())
            .collect();
        if !missed.is_empty() {
            plan.reason = Reason::MissedNight;
            plan.message = format!(
                "stayed Online through the window end of {}: the final exchange was skipped; the missed batches run after the next stop ({})",
                missed.join(", "),
                plan.message
            );
        }
    }
    if plan.phase == NodePhase::Starting
        && let Some(since) = node.phase_since
        && let Ok(deadline) = since.checked_add(node.readiness_timeout)
    {
        wake = Some(wake.map_or(deadline, |w| w.min(deadline)));
    }
    plan.wake_at = wake;
    plan.next = match (plan.phase, window) {
        (NodePhase::Online | NodePhase::Starting, Some(w)) if override_active.is_none() => {
            Some((w.end, NodePhase::Draining))
        }
        (NodePhase::Offline, _) if override_active.is_none() => {
            next_window(calendar, node, now).map(|w| (w.start, NodePhase::Starting))
        }
        _ => None,
    };
    if let Some(until) = pinned {
        plan.message = format!(
            "{} (kept Online until {until} by a manual override Online of a node below)",
            plan.message
        );
    } else if let Some((phase, until)) = override_active {
        plan.message = format!("{} (manual override {phase:?} until {until})", plan.message);
    }
    plan
}

fn step(
    calendar: &Calendar,
    node: &NodeView<'_>,
    now: Timestamp,
    want_online: bool,
    upstream_online: bool,
    window: Option<Window>,
) -> Plan {
    use NodePhase::*;
    let current_date = window.map(|w| w.date);
    let ended_date = || last_ended_window(calendar, node, now).map(|w| w.date);
    match node.phase {
        // Replicas that time out starting may still come up: keep them and wait, Failed.
        Failed if want_online && node.reason == Some(Reason::ReadinessTimeout) => {
            if node.ready_replicas >= node.replicas {
                Plan::new(
                    Online,
                    Reason::Ready,
                    format!(
                        "{} of {} replicas ready",
                        node.ready_replicas, node.replicas
                    ),
                )
                .replicas(node.replicas)
                .date(current_date)
            } else {
                Plan::new(
                    Failed,
                    Reason::ReadinessTimeout,
                    format!(
                        "only {} of {} replicas ready",
                        node.ready_replicas, node.replicas
                    ),
                )
                .replicas(node.replicas)
                .date(current_date)
            }
        }
        Offline | Failed if want_online => start_or_wait(node, upstream_online, current_date),
        Offline => offline(calendar, node, now),
        Failed => match node.reason {
            // A failed batch is left behind by the next online start (above) or stays visible.
            Some(Reason::BatchFailed) => Plan::new(
                Failed,
                Reason::BatchFailed,
                "a batch Job failed; see the Job's logs",
            )
            .replicas(0),
            _ => offline(calendar, node, now),
        },
        Starting if !want_online => drain(node, ended_date()),
        // Its pods run (it fetches, and restarts to apply) but it does not serve: no readiness
        // timeout while held, the reason says why.
        Starting if node.delivery_held.is_some() => Plan::new(
            Starting,
            Reason::DeliveryNotApplied,
            node.delivery_held.unwrap_or_default(),
        )
        .replicas(node.replicas)
        .date(current_date),
        Starting if node.ready_replicas >= node.replicas => Plan::new(
            Online,
            Reason::Ready,
            format!(
                "{} of {} replicas ready",
                node.ready_replicas, node.replicas
            ),
        )
        .replicas(node.replicas)
        .date(current_date),
        Starting => {
            let timed_out = node
                .phase_since
                .and_then(|s| s.checked_add(node.readiness_timeout).ok())
                .is_some_and(|deadline| now >= deadline);
            if timed_out {
                Plan::new(
                    Failed,
                    Reason::ReadinessTimeout,
                    format!(
                        "only {} of {} replicas ready after {:#}",
                        node.ready_replicas, node.replicas, node.readiness_timeout
                    ),
                )
                .replicas(node.replicas)
                .date(current_date)
            } else {
                // The same reason and message as the first Starting plan: no status write until
                // a replica is ready.
                Plan::new(
                    Starting,
                    Reason::WindowOpen,
                    format!(
                        "{} of {} replicas ready",
                        node.ready_replicas, node.replicas
                    ),
                )
                .replicas(node.replicas)
                .date(current_date)
            }
        }
        Online if !want_online => drain(node, ended_date()),
        // The upstream can no longer be told apart (a second National node appeared somewhere)
        // or is gone: that says nothing about the real upstream's phase, so a serving node
        // warns and stays up rather than drain mid-day; it stops at its window's end as usual.
        Online if matches!(node.upstream, Upstream::Ambiguous | Upstream::Missing) => {
            let (reason, why) = if node.upstream == Upstream::Ambiguous {
                (
                    Reason::UpstreamAmbiguous,
                    "more than one upstream node matches (set spec.upstream)",
                )
            } else {
                (
                    Reason::UpstreamMissing,
                    "the upstream node is gone (set spec.upstream or create the node above)",
                )
            };
            Plan::new(
                Online,
                reason,
                format!(
                    "{why}; staying Online until the window ends, {} of {} replicas ready",
                    node.ready_replicas, node.replicas
                ),
            )
            .replicas(node.replicas)
            .date(current_date)
        }
        // The node above is going down: a node never stays up without its upstream.
        Online if !upstream_online => drain(node, current_date),
        // Pods failing while Online: still Online (the window is open, the replicas stay
        // asked for), but not Ready, with its own reason (a warning Event).
        Online if node.ready_replicas < node.replicas => Plan::new(
            Online,
            Reason::Degraded,
            format!(
                "only {} of {} replicas ready",
                node.ready_replicas, node.replicas
            ),
        )
        .replicas(node.replicas)
        .date(current_date),
        // As at the transition, so that staying Online writes nothing.
        Online => Plan::new(
            Online,
            Reason::Ready,
            format!(
                "{} of {} replicas ready",
                node.ready_replicas, node.replicas
            ),
        )
        .replicas(node.replicas)
        .date(current_date),
        Draining if want_online && upstream_online => {
            Plan::new(Online, Reason::InWindow, "back online: the window reopened")
                .replicas(node.replicas)
                .date(current_date)
        }
        Draining => drain(node, ended_date().or(current_date)),
        Stopping if node.pods > 0 => Plan::new(
            Stopping,
            Reason::WaitingForPods,
            format!("{} pods still running", node.pods),
        )
        .replicas(0)
        .date(ended_date()),
        Stopping | DailyBatch => batch_or_offline(calendar, node, ended_date()),
    }
}

fn start_or_wait(node: &NodeView<'_>, upstream_online: bool, date: Option<Date>) -> Plan {
    let waiting = |reason, message: &str| {
        Plan::new(NodePhase::Offline, reason, message)
            .replicas(0)
            .date(date)
    };
    match node.upstream {
        Upstream::Missing => waiting(
            Reason::UpstreamMissing,
            "no upstream node found: set spec.upstream or create the node above",
        ),
        Upstream::Ambiguous => waiting(
            Reason::UpstreamAmbiguous,
            "more than one upstream node matches: set spec.upstream",
        ),
        // Before the upstream wait: a held node says so even while the tiers above start.
        _ if node.held.is_some() => waiting(Reason::HeldBySchedule, node.held.unwrap_or_default()),
        _ if !upstream_online => waiting(
            Reason::WaitingForUpstream,
            "the window is open; waiting for the upstream node to be Online",
        ),
        _ => Plan::new(
            NodePhase::Starting,
            Reason::WindowOpen,
            format!(
                "{} of {} replicas ready",
                node.ready_replicas, node.replicas
            ),
        )
        .replicas(node.replicas)
        .date(date),
    }
}

/// The operating dates after the node's last batch run, up to `upto`, whose window the node had
/// and whose batches it has not run: each missed night, oldest first (within [`LOOKBACK_DAYS`]).
fn missed_batch_dates(calendar: &Calendar, node: &NodeView<'_>, upto: Date) -> Vec<Date> {
    let Some(last) = node.last_batch_date else {
        return Vec::new();
    };
    (1..=LOOKBACK_DAYS)
        .rev()
        .filter_map(|i| upto.checked_sub(i.days()).ok())
        .chain(std::iter::once(upto))
        .filter(|d| *d > last)
        .filter(|d| {
            window_on(calendar, node, *d).is_some()
                && !calendar.batch_runs_for(node.tier, *d).is_empty()
        })
        .collect()
}

fn offline(calendar: &Calendar, node: &NodeView<'_>, now: Timestamp) -> Plan {
    // Batches missed while the operator was away run on catch-up, each missed date once,
    // oldest first.
    if let Some(w) = last_ended_window(calendar, node, now)
        && !missed_batch_dates(calendar, node, w.date).is_empty()
    {
        return batch_or_offline(calendar, node, Some(w.date));
    }
    let today = calendar.date_of(now);
    // The day's batches done: stay as the transition left it (one write, not two).
    if let Some(w) = last_ended_window(calendar, node, now)
        && w.date == today
        && node.phase == NodePhase::Offline
        && node.last_batch_date.is_some_and(|d| d >= w.date)
    {
        return batch_or_offline(calendar, node, Some(w.date));
    }
    let status = calendar.day_status(today);
    if status.is_open() {
        Plan::new(
            NodePhase::Offline,
            Reason::OutsideWindow,
            "outside the online window",
        )
        .replicas(0)
    } else {
        Plan::new(NodePhase::Offline, Reason::ClosedDay, status.to_string()).replicas(0)
    }
}

fn drain(node: &NodeView<'_>, date: Option<Date>) -> Plan {
    use NodePhase::*;
    if !node.downstream_offline {
        return Plan::new(
            Draining,
            Reason::WaitingForDownstream,
            "window ended; waiting for every node below to be Offline",
        )
        .replicas(node.replicas)
        .date(date);
    }
    match &node.final_answer {
        FinalAnswer::NotRequested => Plan::new(
            Draining,
            Reason::FinalRequest,
            "final request sent; waiting for the final answer",
        )
        .replicas(node.replicas)
        .action(Action::FinalRequest)
        .date(date),
        // Named as the next look will name it (WaitingForPods), so that stopping is one write.
        FinalAnswer::Done => Plan::new(
            Stopping,
            Reason::WaitingForPods,
            format!("{} pods still running", node.pods),
        )
        .replicas(0)
        .date(date),
        FinalAnswer::Failed(why) => Plan::new(
            Stopping,
            Reason::FinalAnswerFailed,
            format!(
                "final request failed ({why}); stopping anyway, held updates stay in the outbox"
            ),
        )
        .replicas(0)
        .date(date),
        FinalAnswer::Held(why) => Plan::new(
            Stopping,
            Reason::UpdatesHeld,
            format!("final answer not done: {why}; stopping, they are relayed at the next start"),
        )
        .replicas(0)
        .date(date),
    }
}

/// The batches after a stop that ended the window of `ended`: those of every date missed since
/// the last run, oldest first, then `ended`'s. The node stays in DailyBatch from one date to the
/// next and is Offline only when all are done: the node above stops on its Offline.
fn batch_or_offline(calendar: &Calendar, node: &NodeView<'_>, ended: Option<Date>) -> Plan {
    use NodePhase::*;
    let Some(ended) = ended else {
        return Plan::new(Offline, Reason::Stopped, "stopped").replicas(0);
    };
    let mut dates = missed_batch_dates(calendar, node, ended);
    if dates.last() != Some(&ended) {
        dates.push(ended);
    }
    let mut done = None;
    for date in dates {
        if node.last_batch_date.is_some_and(|d| d >= date) {
            done = Some(date);
            continue;
        }
        match next_batch(calendar, node, date) {
            Some(plan) => return plan.batches_done(done),
            None => done = Some(date),
        }
    }
    let date = done.unwrap_or(ended);
    Plan::new(
        Offline,
        Reason::BatchSucceeded,
        format!("batches of {date} done"),
    )
    .replicas(0)
    .date(Some(date))
    .batches_done(Some(date))
}

/// The plan for the first batch of `date` not yet succeeded (create it, wait for it, or report
/// its failure); `None` when all have succeeded.
fn next_batch(calendar: &Calendar, node: &NodeView<'_>, date: Date) -> Option<Plan> {
    use NodePhase::*;
    for run in calendar.batch_runs_for(node.tier, date) {
        let name = &run.batch.name;
        let state = node
            .jobs
            .iter()
            .find(|(n, d, _)| n == name && *d == date)
            .map_or(JobState::Absent, |(_, _, s)| *s);
        // Creating and running read the same in status: one write per batch, not two.
        let running = || {
            Plan::new(
                DailyBatch,
                Reason::BatchRunning,
                format!("batch {name} of {date} running"),
            )
            .replicas(0)
            .date(Some(date))
        };
        return Some(match state {
            JobState::Succeeded => continue,
            JobState::Absent => running().action(Action::CreateJob {
                batch: name.clone(),
                date,
            }),
            JobState::Running => running(),
            JobState::Failed => Plan::new(
                Failed,
                Reason::BatchFailed,
                format!("batch {name} of {date} failed"),
            )
            .replicas(0)
            .date(Some(date)),
        });
    }
    None
}

/// Checks a node's own online end against the calendar's dependency order: after the prefecture
/// start, no earlier than the CS end, no later than the national end.
pub fn check_online_end(
    calendar: &Calendar,
    tier: Tier,
    online_end: Option<TimeOfDay>,
) -> Result<(), String> {
    let Some(end) = online_end else { return Ok(()) };
    if tier != Tier::Prefecture {
        return Err("spec.onlineEnd applies only to the Prefecture tier".into());
    }
    let prefecture = calendar.daily_window(Tier::Prefecture, None);
    let national = calendar.daily_window(Tier::National, None);
    let cs = calendar.daily_window(Tier::Cs, None);
    if end <= prefecture.start {
        return Err(format!(
            "spec.onlineEnd {end} is not after the prefecture start {}",
            prefecture.start
        ));
    }
    if end < cs.end {
        return Err(format!(
            "spec.onlineEnd {end} closes before the CS window ends ({}); a tier must close no earlier than the tiers below it",
            cs.end
        ));
    }
    if end > national.end {
        return Err(format!(
            "spec.onlineEnd {end} closes after the national window ends ({}); a tier must close no later than the tier above it",
            national.end
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use juki_calendar::CalendarConfig;

    fn tokyo(text: &str) -> Timestamp {
        format!("{text}[Asia/Tokyo]")
            .parse::<jiff::Zoned>()
            .unwrap()
            .timestamp()
    }

    fn view(tier: Tier, phase: NodePhase) -> NodeView<'static> {
        NodeView {
            phase,
            upstream: Upstream::Phase(NodePhase::Online),
            ..NodeView::bare(tier, Some(13), None)
        }
    }

    #[test]
    fn a_held_node_stays_offline_in_its_window_and_starts_once_released() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let mut v = view(Tier::Prefecture, NodePhase::Offline);
        v.held = Some("scheduled run backup of 2026-11-27 is not done");
        let p = plan(&cal, &v, tokyo("2026-11-30T08:05"));
        assert_eq!(
            (p.phase, p.reason, p.replicas, p.message.as_str()),
            (
                NodePhase::Offline,
                Reason::HeldBySchedule,
                Some(0),
                "scheduled run backup of 2026-11-27 is not done"
            )
        );
        v.held = None;
        let p = plan(&cal, &v, tokyo("2026-11-30T08:05"));
        assert_eq!(
            (p.phase, p.reason),
            (NodePhase::Starting, Reason::WindowOpen)
        );
    }

    #[test]
    fn a_required_delivery_keeps_a_started_node_from_going_online_until_released() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let mut v = view(Tier::Prefecture, NodePhase::Starting);
        v.phase_since = Some(tokyo("2026-11-30T07:30"));
        v.ready_replicas = v.replicas;
        v.delivery_held =
            Some("delivery p13/codes is required before this start and is not fetched yet");
        // Ready pods, and long past the readiness timeout: still Starting, saying why.
        let p = plan(&cal, &v, tokyo("2026-11-30T11:00"));
        assert_eq!(
            (p.phase, p.reason, p.replicas, p.message.as_str()),
            (
                NodePhase::Starting,
                Reason::DeliveryNotApplied,
                Some(v.replicas),
                "delivery p13/codes is required before this start and is not fetched yet"
            )
        );
        // Its pods restarting to apply it: still held, not timed out.
        v.ready_replicas = 0;
        let p = plan(&cal, &v, tokyo("2026-11-30T11:00"));
        assert_eq!(
            (p.phase, p.reason),
            (NodePhase::Starting, Reason::DeliveryNotApplied)
        );
        // Released with ready pods: Online.
        v.ready_replicas = v.replicas;
        v.delivery_held = None;
        let p = plan(&cal, &v, tokyo("2026-11-30T11:00"));
        assert_eq!((p.phase, p.reason), (NodePhase::Online, Reason::Ready));
        // The window's end still drains a held node.
        v.delivery_held = Some("held");
        let p = plan(&cal, &v, tokyo("2026-11-30T22:00"));
        assert_ne!(p.phase, NodePhase::Starting);
    }

    #[test]
    fn a_node_waits_for_its_upstream_inside_the_window() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let mut v = view(Tier::Cs, NodePhase::Offline);
        v.upstream = Upstream::Phase(NodePhase::Starting);
        let p = plan(&cal, &v, tokyo("2026-11-30T08:05"));
        assert_eq!(
            (p.phase, p.reason, p.replicas),
            (NodePhase::Offline, Reason::WaitingForUpstream, Some(0))
        );
        v.upstream = Upstream::Phase(NodePhase::Online);
        let p = plan(&cal, &v, tokyo("2026-11-30T08:05"));
        assert_eq!((p.phase, p.replicas), (NodePhase::Starting, Some(1)));
        assert_eq!(
            p.next,
            Some((tokyo("2026-11-30T21:00"), NodePhase::Draining))
        );
        v.upstream = Upstream::Missing;
        assert_eq!(
            plan(&cal, &v, tokyo("2026-11-30T08:05")).reason,
            Reason::UpstreamMissing
        );
    }

    #[test]
    fn before_the_window_a_node_below_an_offline_upstream_waits_for_it_not_for_the_clock() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let mut v = view(Tier::Cs, NodePhase::Offline);
        let before = tokyo("2026-11-30T06:00");
        let start = plan(&cal, &v, before).next.unwrap().0;
        v.upstream = Upstream::Phase(NodePhase::Offline);
        assert_eq!(
            plan(&cal, &v, before).wake_at,
            Some(start + SignedDuration::from_mins(5))
        );
        v.upstream = Upstream::Phase(NodePhase::Online);
        assert_eq!(plan(&cal, &v, before).wake_at, Some(start));
        v.upstream = Upstream::Missing;
        assert_eq!(plan(&cal, &v, before).wake_at, Some(start));
    }

    #[test]
    fn starting_too_long_fails_and_recovers_when_ready() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let mut v = view(Tier::Cs, NodePhase::Starting);
        v.phase_since = Some(tokyo("2026-11-30T08:00"));
        let p = plan(&cal, &v, tokyo("2026-11-30T08:31"));
        assert_eq!(
            (p.phase, p.reason),
            (NodePhase::Failed, Reason::ReadinessTimeout)
        );
        v.phase = NodePhase::Failed;
        v.reason = Some(Reason::ReadinessTimeout);
        v.ready_replicas = 1;
        assert_eq!(
            plan(&cal, &v, tokyo("2026-11-30T08:40")).phase,
            NodePhase::Online
        );
    }

    #[test]
    fn an_online_node_without_enough_ready_pods_is_degraded_not_ready() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let mut v = view(Tier::Cs, NodePhase::Online);
        v.replicas = 2;
        v.ready_replicas = 2;
        let at = tokyo("2026-11-30T12:00");
        let p = plan(&cal, &v, at);
        assert_eq!((p.phase, p.reason), (NodePhase::Online, Reason::Ready));
        v.ready_replicas = 0;
        let p = plan(&cal, &v, at);
        assert_eq!(
            (p.phase, p.reason, p.replicas, p.message.as_str()),
            (
                NodePhase::Online,
                Reason::Degraded,
                Some(2),
                "only 0 of 2 replicas ready"
            )
        );
        // The pods come back: Ready again.
        v.reason = Some(Reason::Degraded);
        v.ready_replicas = 2;
        assert_eq!(plan(&cal, &v, at).reason, Reason::Ready);
    }

    #[test]
    fn an_online_node_whose_upstream_becomes_ambiguous_or_missing_warns_and_stays_up() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let mut v = view(Tier::Prefecture, NodePhase::Online);
        let noon = tokyo("2026-11-30T12:00");
        v.upstream = Upstream::Ambiguous;
        let p = plan(&cal, &v, noon);
        assert_eq!(
            (p.phase, p.reason, p.replicas),
            (NodePhase::Online, Reason::UpstreamAmbiguous, Some(1))
        );
        assert!(p.message.contains("staying Online"), "{}", p.message);
        v.upstream = Upstream::Missing;
        let p = plan(&cal, &v, noon);
        assert_eq!(
            (p.phase, p.reason),
            (NodePhase::Online, Reason::UpstreamMissing)
        );
        // At the window's end it stops as usual.
        let p = plan(&cal, &v, tokyo("2026-11-30T21:31"));
        assert_eq!(p.phase, NodePhase::Draining);
        // An upstream really going down still drains the node.
        v.upstream = Upstream::Phase(NodePhase::Draining);
        assert_eq!(plan(&cal, &v, noon).phase, NodePhase::Draining);
        // An Offline node does not start with an ambiguous upstream.
        v.phase = NodePhase::Offline;
        v.upstream = Upstream::Ambiguous;
        let p = plan(&cal, &v, noon);
        assert_eq!(
            (p.phase, p.reason),
            (NodePhase::Offline, Reason::UpstreamAmbiguous)
        );
    }

    #[test]
    fn draining_waits_for_the_nodes_below_then_asks_for_the_final_answer() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let mut v = view(Tier::Prefecture, NodePhase::Online);
        v.downstream_offline = false;
        let at = tokyo("2026-11-30T21:31");
        assert_eq!(plan(&cal, &v, at).reason, Reason::WaitingForDownstream);
        v.phase = NodePhase::Draining;
        v.downstream_offline = true;
        let p = plan(&cal, &v, at);
        assert_eq!(
            (p.phase, p.action.clone()),
            (NodePhase::Draining, Action::FinalRequest)
        );
        v.final_answer = FinalAnswer::Failed("connection refused".into());
        let p = plan(&cal, &v, at);
        assert_eq!(
            (p.phase, p.reason, p.replicas),
            (NodePhase::Stopping, Reason::FinalAnswerFailed, Some(0))
        );
        // Answered, but not every update reached the upstream: a stop that says so.
        v.final_answer = FinalAnswer::Held("3 update(s) held for tomorrow".into());
        let p = plan(&cal, &v, at);
        assert_eq!(
            (p.phase, p.reason, p.replicas),
            (NodePhase::Stopping, Reason::UpdatesHeld, Some(0))
        );
        assert!(
            p.message.contains("3 update(s) held for tomorrow"),
            "{}",
            p.message
        );
    }

    #[test]
    fn batches_run_in_order_once_per_operating_date() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let date = jiff::civil::date(2026, 11, 30);
        let mut v = view(Tier::Cs, NodePhase::Stopping);
        let at = tokyo("2026-11-30T21:10");
        assert_eq!(
            plan(&cal, &v, at).action,
            Action::CreateJob {
                batch: "statistics".into(),
                date
            }
        );
        let jobs = [("statistics".to_string(), date, JobState::Succeeded)];
        v.phase = NodePhase::DailyBatch;
        v.jobs = &jobs;
        assert_eq!(
            plan(&cal, &v, at).action,
            Action::CreateJob {
                batch: "backup".into(),
                date
            }
        );
        let failed = [
            ("statistics".to_string(), date, JobState::Succeeded),
            ("backup".to_string(), date, JobState::Failed),
        ];
        v.jobs = &failed;
        assert_eq!(plan(&cal, &v, at).reason, Reason::BatchFailed);
        v.last_batch_date = Some(date);
        v.phase = NodePhase::Offline;
        v.jobs = &[];
        assert_eq!(
            plan(&cal, &v, tokyo("2026-11-30T23:00")).action,
            Action::None
        );
    }

    /// What a status shows of a plan: equal plans write nothing on the next look.
    fn shown(p: &Plan) -> impl PartialEq + std::fmt::Debug {
        (
            p.phase,
            p.reason,
            p.message.clone(),
            p.operating_date,
            p.next,
        )
    }

    #[test]
    fn each_stop_step_is_written_once_the_next_look_plans_the_same() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let date = jiff::civil::date(2026, 11, 30);
        let at = tokyo("2026-11-30T21:10");
        let mut v = view(Tier::Cs, NodePhase::Draining);
        v.final_answer = FinalAnswer::Done;
        v.pods = 1;
        let stopping = plan(&cal, &v, at);
        assert_eq!(
            (stopping.phase, stopping.reason),
            (NodePhase::Stopping, Reason::WaitingForPods)
        );
        v.phase = NodePhase::Stopping;
        v.reason = Some(stopping.reason);
        v.final_answer = FinalAnswer::NotRequested;
        assert_eq!(shown(&plan(&cal, &v, at)), shown(&stopping));

        let jobs = [
            ("statistics".to_string(), date, JobState::Succeeded),
            ("backup".to_string(), date, JobState::Succeeded),
        ];
        v.phase = NodePhase::DailyBatch;
        v.pods = 0;
        v.jobs = &jobs;
        let done = plan(&cal, &v, at);
        assert_eq!(
            (done.phase, done.reason),
            (NodePhase::Offline, Reason::BatchSucceeded)
        );
        v.phase = NodePhase::Offline;
        v.reason = Some(done.reason);
        v.last_batch_date = Some(date);
        v.jobs = &[];
        assert_eq!(
            shown(&plan(&cal, &v, tokyo("2026-11-30T23:50"))),
            shown(&done)
        );
        // The next day it is an ordinary night again.
        assert_eq!(
            plan(&cal, &v, tokyo("2026-12-01T06:00")).reason,
            Reason::OutsideWindow
        );
    }

    #[test]
    fn at_window_open_a_routine_wait_for_a_starting_upstream_is_not_written_until_the_grace_ends() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let mut v = view(Tier::Cs, NodePhase::Offline);
        let start = plan(&cal, &v, tokyo("2026-11-30T06:00")).next.unwrap().0;
        v.upstream = Upstream::Phase(NodePhase::Starting);
        let soon = start + SignedDuration::from_secs(20);
        let p = plan(&cal, &v, soon);
        assert_eq!(
            (p.reason, p.defer_status),
            (Reason::WaitingForUpstream, true)
        );
        assert_eq!(p.wake_at, Some(start + SignedDuration::from_mins(5)));
        // Past the grace, or a failed upstream, or already shown: written.
        let late = start + SignedDuration::from_mins(6);
        assert!(!plan(&cal, &v, late).defer_status);
        v.upstream = Upstream::Phase(NodePhase::Failed);
        assert!(!plan(&cal, &v, soon).defer_status);
        v.upstream = Upstream::Phase(NodePhase::Starting);
        v.reason = Some(Reason::WaitingForUpstream);
        assert!(!plan(&cal, &v, soon).defer_status);
    }

    #[test]
    fn a_missed_batch_runs_once_on_catch_up() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let mut v = view(Tier::National, NodePhase::Offline);
        v.last_batch_date = Some(jiff::civil::date(2026, 11, 26));
        // Saturday morning: Friday's batches were missed.
        let p = plan(&cal, &v, tokyo("2026-11-28T09:00"));
        assert_eq!(
            p.action,
            Action::CreateJob {
                batch: "statistics".into(),
                date: jiff::civil::date(2026, 11, 27)
            }
        );
    }

    #[test]
    fn an_operator_outage_across_nights_is_reported_and_every_missed_date_caught_up() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        // Online since Wednesday 12:00; the operator was away until Friday 09:00.
        let mut v = view(Tier::Cs, NodePhase::Online);
        v.ready_replicas = 1;
        v.phase_since = Some(tokyo("2026-11-25T12:00"));
        v.last_batch_date = Some(jiff::civil::date(2026, 11, 24));
        let p = plan(&cal, &v, tokyo("2026-11-27T09:00"));
        assert_eq!(
            (p.phase, p.reason),
            (NodePhase::Online, Reason::MissedNight)
        );
        assert!(
            p.message
                .starts_with("stayed Online through the window end of 2026-11-25, 2026-11-26:"),
            "{}",
            p.message
        );
        // A node that went Online this morning missed nothing.
        v.phase_since = Some(tokyo("2026-11-27T08:00"));
        assert_eq!(
            plan(&cal, &v, tokyo("2026-11-27T09:00")).reason,
            Reason::Ready
        );
        // After Friday's stop: Wednesday's batches first, then Thursday's, then Friday's.
        v.phase = NodePhase::Stopping;
        let friday_night = tokyo("2026-11-27T21:10");
        let first = |v: &NodeView<'_>, at| match plan(&cal, v, at).action {
            Action::CreateJob { date, .. } => Some(date),
            _ => None,
        };
        assert_eq!(
            first(&v, friday_night),
            Some(jiff::civil::date(2026, 11, 25))
        );
        v.phase = NodePhase::Offline;
        v.last_batch_date = Some(jiff::civil::date(2026, 11, 25));
        assert_eq!(
            first(&v, friday_night),
            Some(jiff::civil::date(2026, 11, 26))
        );
        v.last_batch_date = Some(jiff::civil::date(2026, 11, 26));
        assert_eq!(
            first(&v, friday_night),
            Some(jiff::civil::date(2026, 11, 27))
        );
        v.last_batch_date = Some(jiff::civil::date(2026, 11, 27));
        assert_eq!(first(&v, friday_night), None);
    }

    #[test]
    fn a_catch_up_of_several_nights_stays_in_daily_batch_from_one_date_to_the_next() {
        // Between two missed dates the node is not Offline: the prefecture above would take that
        // for a finished stop and stop while the next date's batches run.
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let (wed, thu, fri) = (
            jiff::civil::date(2026, 11, 25),
            jiff::civil::date(2026, 11, 26),
            jiff::civil::date(2026, 11, 27),
        );
        let friday_night = tokyo("2026-11-27T21:40");
        let mut v = view(Tier::Cs, NodePhase::DailyBatch);
        v.last_batch_date = Some(jiff::civil::date(2026, 11, 24));
        let wednesday_done = [
            ("statistics".to_string(), wed, JobState::Succeeded),
            ("backup".to_string(), wed, JobState::Succeeded),
        ];
        v.jobs = &wednesday_done;
        let p = plan(&cal, &v, friday_night);
        assert_eq!(
            (p.phase, p.reason, &p.action, p.operating_date),
            (
                NodePhase::DailyBatch,
                Reason::BatchRunning,
                &Action::CreateJob {
                    batch: "statistics".into(),
                    date: thu
                },
                Some(thu)
            )
        );
        // Wednesday is recorded as done on the way, so a restart does not run it again.
        assert_eq!(p.batches_done, Some(wed));
        // Thursday's statistics running: still Wednesday recorded, nothing created.
        let thursday_running = [
            ("statistics".to_string(), wed, JobState::Succeeded),
            ("backup".to_string(), wed, JobState::Succeeded),
            ("statistics".to_string(), thu, JobState::Running),
        ];
        v.jobs = &thursday_running;
        let p = plan(&cal, &v, friday_night);
        assert_eq!((p.phase, &p.action), (NodePhase::DailyBatch, &Action::None));
        // Once Wednesday is recorded, Thursday and then Friday; Offline only after the last one.
        v.last_batch_date = Some(thu);
        let all_done = [
            ("statistics".to_string(), fri, JobState::Succeeded),
            ("backup".to_string(), fri, JobState::Succeeded),
        ];
        v.jobs = &all_done;
        let p = plan(&cal, &v, friday_night);
        assert_eq!(
            (p.phase, p.reason, p.batches_done),
            (NodePhase::Offline, Reason::BatchSucceeded, Some(fri))
        );
        // A failed date stops the chain there.
        let thursday_failed = [("statistics".to_string(), thu, JobState::Failed)];
        v.last_batch_date = Some(wed);
        v.jobs = &thursday_failed;
        let p = plan(&cal, &v, friday_night);
        assert_eq!(
            (p.phase, p.reason),
            (NodePhase::Failed, Reason::BatchFailed)
        );
    }

    #[test]
    fn overrides_and_suspend_win_over_the_calendar() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let mut v = view(Tier::National, NodePhase::Offline);
        v.manual_override = Some((OverridePhase::Online, tokyo("2026-11-28T12:00")));
        let p = plan(&cal, &v, tokyo("2026-11-28T10:00"));
        assert_eq!(p.phase, NodePhase::Starting);
        assert_eq!(p.wake_at, Some(tokyo("2026-11-28T12:00")));
        v.suspend = true;
        assert_eq!(plan(&cal, &v, tokyo("2026-11-28T10:00")).replicas, None);
    }

    #[test]
    fn an_override_online_below_keeps_the_upstream_chain_online() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        // 21:40 on a Monday: past the prefecture's window end (21:30), a CS below is pinned
        // Online until 23:00.
        let at = tokyo("2026-11-30T21:40");
        let until = tokyo("2026-11-30T23:00");
        let mut v = view(Tier::Prefecture, NodePhase::Online);
        v.downstream_offline = false;
        assert_eq!(plan(&cal, &v, at).phase, NodePhase::Draining);
        v.pinned_below = Some(until);
        let p = plan(&cal, &v, at);
        assert_eq!((p.phase, p.replicas), (NodePhase::Online, Some(1)));
        assert_eq!(p.wake_at, Some(until));
        assert!(
            p.message
                .contains("by a manual override Online of a node below")
        );
        // Once it expires, the usual stop.
        assert_eq!(
            plan(&cal, &v, tokyo("2026-11-30T23:00")).phase,
            NodePhase::Draining
        );
        // On a Saturday a pinned chain starts too.
        let mut n = view(Tier::National, NodePhase::Offline);
        n.upstream = Upstream::NotNeeded;
        n.pinned_below = Some(tokyo("2026-11-28T12:00"));
        assert_eq!(
            plan(&cal, &n, tokyo("2026-11-28T10:00")).phase,
            NodePhase::Starting
        );
        // The node's own override Offline wins over a pin from below.
        v.manual_override = Some((OverridePhase::Offline, until));
        assert_eq!(plan(&cal, &v, at).phase, NodePhase::Draining);
    }

    #[test]
    fn an_own_online_end_must_nest() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let t = |s| Some(TimeOfDay::parse(s).unwrap());
        assert!(check_online_end(&cal, Tier::Prefecture, t("21:45")).is_ok());
        assert!(
            check_online_end(&cal, Tier::Prefecture, t("22:30"))
                .unwrap_err()
                .contains("after the national window ends")
        );
        assert!(
            check_online_end(&cal, Tier::Prefecture, t("20:00"))
                .unwrap_err()
                .contains("before the CS window ends")
        );
    }
}
