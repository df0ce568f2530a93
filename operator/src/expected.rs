//! Monitoring's core: the phase a node should be in now (from the calendar, its own window, the
//! service extensions and overrides, as the planner sees them), beside the phase it is in; the
//! faults are the differences. Pure: the controller exports the result as metrics
//! (`juki_node_expected_online`, `juki_node_phase`, `juki_node_fault`) and the alert rules read
//! them, so the planned nightly and weekend downtime never raises an alert: a node that is down
//! because the calendar, a suspend or an override says so has no fault.

use std::fmt;

use jiff::civil::Date;
use jiff::{SignedDuration, Timestamp};
use juki_calendar::Calendar;

use crate::api::{JukiNodeStatus, NodePhase, OverridePhase};
use crate::planner::{
    NodeView, Reason, active_override, last_ended_window, next_window, window_at,
};

/// The phase a node should be in now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Inside its online window (or kept up by an extension, an override Online, or a pinned
    /// node below): Online. `since` is the window's start, when known.
    Online { since: Option<Timestamp> },
    /// The window of `date` ended at `since`: the node should be draining and stopping, done
    /// by `deadline`.
    StopWave {
        date: Date,
        since: Timestamp,
        deadline: Timestamp,
    },
    /// Stopped; the batches of `date` run, done by `deadline` (before the next online start).
    BatchWindow { date: Date, deadline: Timestamp },
    /// Planned downtime: outside its window, a closed day, or an override Offline.
    Offline,
    /// Suspended: the operator changes nothing, so nothing is expected.
    Unmanaged,
    /// The node's calendar cannot be read: nothing can be expected (see
    /// [`Fault::CalendarUnavailable`]).
    Unknown,
}

impl Expected {
    pub fn is_online(&self) -> bool {
        matches!(self, Expected::Online { .. })
    }

    /// One CamelCase word, for metrics and `kubectl juki status`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Expected::Online { .. } => "Online",
            Expected::StopWave { .. } => "StopWave",
            Expected::BatchWindow { .. } => "BatchWindow",
            Expected::Offline => "Offline",
            Expected::Unmanaged => "Unmanaged",
            Expected::Unknown => "Unknown",
        }
    }
}

/// A difference between what a node should be doing and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// Not Online (or Online with no ready replica) inside its window, past the grace.
    NotOnline,
    /// Online inside its window with fewer ready replicas than asked for.
    Degraded,
    /// Still serving (Starting or Online) past its window's end and the grace: the stop never
    /// began.
    StillUp,
    /// Draining or Stopping past the stop wave's deadline: it would not finish before the next
    /// online start.
    StopLate,
    /// Its daily batches still running at their deadline (the next online start, less the lead).
    BatchLate,
    /// The last daily batch failed.
    BatchFailed,
    /// The final request / final answer exchange of the last stop failed: updates are held
    /// until the next online start.
    FinalAnswerFailed,
    /// The spec cannot be planned (Failed, reason InvalidSpec, or PlainHttpRefused: no TLS
    /// where the operator does not allow plain HTTP).
    InvalidSpec,
    /// The node's OperatingCalendar is missing or invalid.
    CalendarUnavailable,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::NotOnline,
        Fault::Degraded,
        Fault::StillUp,
        Fault::StopLate,
        Fault::BatchLate,
        Fault::BatchFailed,
        Fault::FinalAnswerFailed,
        Fault::InvalidSpec,
        Fault::CalendarUnavailable,
    ];

    /// The `fault` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::NotOnline => "NotOnline",
            Fault::Degraded => "Degraded",
            Fault::StillUp => "StillUp",
            Fault::StopLate => "StopLate",
            Fault::BatchLate => "BatchLate",
            Fault::BatchFailed => "BatchFailed",
            Fault::FinalAnswerFailed => "FinalAnswerFailed",
            Fault::InvalidSpec => "InvalidSpec",
            Fault::CalendarUnavailable => "CalendarUnavailable",
        }
    }

    /// Whether the node does not serve when it should: the faults a prefecture's own alert
    /// stands for, for the CSs below it.
    pub fn is_down(self) -> bool {
        matches!(self, Fault::NotOnline | Fault::Degraded)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One fault and since when it holds (when known).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Finding {
    pub fault: Fault,
    pub since: Option<Timestamp>,
}

/// What the status says of the node beyond the planner's view.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// The operating date of the last batch run, when it failed.
    pub batch_failed: Option<Date>,
    /// The operating date of the last final exchange, when it failed.
    pub final_answer_failed: Option<Date>,
}

impl Observed {
    /// What a node's status says of its last batch and its last final exchange.
    pub fn of(status: &JukiNodeStatus) -> Observed {
        let failed_date = |outcome: &str, date: &str| {
            (outcome == "Failed")
                .then(|| date.parse::<Date>().ok())
                .flatten()
        };
        Observed {
            batch_failed: status
                .last_batch
                .as_ref()
                .and_then(|b| failed_date(&b.outcome, &b.date)),
            final_answer_failed: status
                .final_answer
                .as_ref()
                .and_then(|f| failed_date(&f.outcome, &f.date)),
        }
    }
}

/// `view` with the phase, reason, ready replicas and last batch of `status`: what the node is
/// in, as written (a view gathered for planning holds the state before the plan).
pub fn with_status<'a>(view: &NodeView<'a>, status: &'a JukiNodeStatus) -> NodeView<'a> {
    NodeView {
        phase: status.phase.unwrap_or(NodePhase::Offline),
        phase_since: status.phase_since.as_ref().map(|t| t.0),
        reason: status.reason.as_deref().and_then(|r| r.parse().ok()),
        ready_replicas: status.ready_replicas,
        last_batch_date: status.last_batch.as_ref().and_then(|b| b.date.parse().ok()),
        ..view.clone()
    }
}

/// How long things may take before they are faults, in clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// After the window opens (or the node enters a wrong phase), how long it may take to be
    /// Online, or to begin its stop after the window ends: the tiers above start first.
    pub grace: SignedDuration,
    /// How long a stop wave (Draining, Stopping) may take after the window's end.
    pub stop_budget: SignedDuration,
    /// Stop waves and batches must be done this long before the next online start.
    pub lead: SignedDuration,
}

/// The operator's defaults: grace = `--readiness-timeout` (5 min) + the planner's waiting grace
/// (5 min), a one-hour stop budget, done 30 minutes before the next start.
impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            grace: SignedDuration::from_mins(10),
            stop_budget: SignedDuration::from_hours(1),
            lead: SignedDuration::from_mins(30),
        }
    }
}

/// The expected phase, the faults now, and when to look again because a fault may appear then
/// without anything else changing (a grace or a deadline passing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub expected: Expected,
    pub faults: Vec<Finding>,
    pub recheck_at: Option<Timestamp>,
}

impl Assessment {
    pub fn has(&self, fault: Fault) -> bool {
        self.faults.iter().any(|f| f.fault == fault)
    }
}

fn plus(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(if d.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// Collects the findings and the earliest future instant one of them may start to hold.
struct Findings {
    now: Timestamp,
    faults: Vec<Finding>,
    recheck_at: Option<Timestamp>,
}

impl Findings {
    /// `fault` holds from `from` on: now if `from` has passed, else look again then.
    fn from(&mut self, fault: Fault, from: Timestamp, since: Option<Timestamp>) {
        if self.now >= from {
            self.now_holds(fault, since);
        } else {
            self.recheck_at = Some(self.recheck_at.map_or(from, |r| r.min(from)));
        }
    }

    fn now_holds(&mut self, fault: Fault, since: Option<Timestamp>) {
        if !self.faults.iter().any(|f| f.fault == fault) {
            self.faults.push(Finding { fault, since });
        }
    }
}

/// What `node` should be doing at `now` and how what it does differs. `calendar` is `None` when
/// the node's calendar cannot be read: that is itself the fault.
pub fn assess(
    calendar: Option<&Calendar>,
    node: &NodeView<'_>,
    observed: &Observed,
    thresholds: &Thresholds,
    now: Timestamp,
) -> Assessment {
    let mut found = Findings {
        now,
        faults: Vec::new(),
        recheck_at: None,
    };
    let expected = match calendar {
        _ if node.suspend => Expected::Unmanaged,
        None => {
            found.now_holds(Fault::CalendarUnavailable, node.phase_since);
            Expected::Unknown
        }
        Some(calendar) => {
            let expected = expected_phase(calendar, node, thresholds, now);
            compare(calendar, node, observed, thresholds, expected, &mut found);
            expected
        }
    };
    if !node.suspend && node.phase == NodePhase::Failed {
        match node.reason {
            Some(Reason::InvalidSpec | Reason::PlainHttpRefused) => {
                found.now_holds(Fault::InvalidSpec, node.phase_since);
            }
            Some(Reason::CalendarUnavailable) => {
                found.now_holds(Fault::CalendarUnavailable, node.phase_since);
            }
            _ => {}
        }
    }
    found.faults.sort_by_key(|f| f.fault);
    Assessment {
        expected,
        faults: found.faults,
        recheck_at: found.recheck_at,
    }
}

/// The expected phase, by the clock and the calendar alone (and whether the night's batches
/// already ran).
fn expected_phase(
    calendar: &Calendar,
    node: &NodeView<'_>,
    thresholds: &Thresholds,
    now: Timestamp,
) -> Expected {
    let window = window_at(calendar, node, now);
    match active_override(node, now).0 {
        Some((OverridePhase::Online, _)) => {
            return Expected::Online {
                since: window.map(|w| w.start),
            };
        }
        Some((OverridePhase::Offline, _)) => return Expected::Offline,
        None => {}
    }
    if let Some(w) = window {
        return Expected::Online {
            since: Some(w.start),
        };
    }
    let Some(ended) = last_ended_window(calendar, node, now) else {
        return Expected::Offline;
    };
    // Without a next window (a calendar with no open day ahead) nothing can be late.
    let next_start = next_window(calendar, node, now).map(|w| plus(w.start, -thresholds.lead));
    let stop_deadline = next_start.map_or(plus(ended.end, thresholds.stop_budget), |n| {
        n.min(plus(ended.end, thresholds.stop_budget))
    });
    let batches_done = node.last_batch_date.is_some_and(|d| d >= ended.date);
    if batches_done {
        Expected::Offline
    } else if now < stop_deadline {
        Expected::StopWave {
            date: ended.date,
            since: ended.end,
            deadline: stop_deadline,
        }
    } else if !calendar.batch_runs_for(node.tier, ended.date).is_empty() {
        Expected::BatchWindow {
            date: ended.date,
            deadline: next_start.unwrap_or(Timestamp::MAX),
        }
    } else {
        Expected::Offline
    }
}

/// The faults of a node in `node.phase` when `expected` says what it should be in.
fn compare(
    calendar: &Calendar,
    node: &NodeView<'_>,
    observed: &Observed,
    thresholds: &Thresholds,
    expected: Expected,
    found: &mut Findings,
) {
    use NodePhase::*;
    let now = found.now;
    let phase = node.phase;
    let since_phase = node.phase_since;
    // A fault caused by being in the wrong phase holds from the later of the moment the
    // expectation began and the moment the node entered its phase.
    let later = |a: Option<Timestamp>| match (a, since_phase) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let next_start = || next_window(calendar, node, now).map(|w| plus(w.start, -thresholds.lead));
    match expected {
        Expected::Online { since } => {
            let since = later(since).unwrap_or(now);
            let serving = phase == Online && node.ready_replicas > 0;
            if phase == Online && !serving {
                // It started and served, and its pods are dead: down now, whatever the start
                // grace (the alert's `for` rides out a restart). Since when is not in the
                // status.
                found.now_holds(Fault::NotOnline, None);
            } else if !serving {
                found.from(Fault::NotOnline, plus(since, thresholds.grace), Some(since));
            } else if node.ready_replicas < node.replicas {
                found.now_holds(Fault::Degraded, since_phase);
            }
            // Still stopping or running last night's batches when the window opens: late too.
            // (A stop that began inside the window, under an upstream going down, is not.)
            let late = match phase {
                Draining | Stopping => Some(Fault::StopLate),
                DailyBatch => Some(Fault::BatchLate),
                _ => None,
            };
            if let (Some(fault), Some(w)) = (late, window_at(calendar, node, now))
                && since_phase.is_some_and(|s| s < w.start)
            {
                let deadline = plus(w.start, -thresholds.lead);
                found.from(fault, deadline, Some(deadline));
            }
        }
        Expected::StopWave { .. } | Expected::BatchWindow { .. } | Expected::Offline => {
            let ended = last_ended_window(calendar, node, now);
            match phase {
                Starting | Online => {
                    let since = later(ended.map(|w| w.end)).unwrap_or(now);
                    found.from(Fault::StillUp, plus(since, thresholds.grace), Some(since));
                }
                Draining | Stopping => {
                    let deadline = match (ended, next_start()) {
                        (Some(w), next) => {
                            let budget = plus(w.end, thresholds.stop_budget);
                            next.map_or(budget, |n| n.min(budget))
                        }
                        (None, _) => plus(since_phase.unwrap_or(now), thresholds.stop_budget),
                    };
                    found.from(Fault::StopLate, deadline, Some(deadline));
                }
                DailyBatch => {
                    if let Some(deadline) = next_start() {
                        found.from(Fault::BatchLate, deadline, Some(deadline));
                    }
                }
                Offline | Failed => {}
            }
            // The held updates go at the next online start: a fault until then.
            if let (Some(failed), Some(w)) = (observed.final_answer_failed, ended)
                && failed == w.date
            {
                found.now_holds(Fault::FinalAnswerFailed, Some(w.end));
            }
        }
        Expected::Unmanaged | Expected::Unknown => {}
    }
    // Until a later batch run succeeds.
    if observed.batch_failed.is_some() {
        let since = (phase == Failed && node.reason == Some(Reason::BatchFailed))
            .then_some(since_phase)
            .flatten();
        found.now_holds(Fault::BatchFailed, since);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use juki_calendar::config::PrefectureOnlineEnd;
    use juki_calendar::{CalendarConfig, Tier, TimeOfDay};
    use proptest::prelude::*;

    fn tokyo(text: &str) -> Timestamp {
        format!("{text}[Asia/Tokyo]")
            .parse::<jiff::Zoned>()
            .unwrap()
            .timestamp()
    }

    fn calendar() -> Calendar {
        Calendar::new(&CalendarConfig::default()).unwrap()
    }

    /// A node of `tier` in `phase` since `since`, every replica ready when Online.
    fn node(tier: Tier, phase: NodePhase, since: &str) -> NodeView<'static> {
        let prefecture = (tier != Tier::National).then_some(13);
        NodeView {
            phase,
            phase_since: Some(tokyo(since)),
            ready_replicas: i32::from(phase == NodePhase::Online),
            last_batch_date: Some(jiff::civil::date(2026, 11, 29)),
            ..NodeView::bare(tier, prefecture, None)
        }
    }

    fn faults_at(cal: &Calendar, n: &NodeView<'_>, at: &str) -> Vec<Fault> {
        faults_with(cal, n, &Observed::default(), at)
    }

    fn faults_with(cal: &Calendar, n: &NodeView<'_>, o: &Observed, at: &str) -> Vec<Fault> {
        assess(Some(cal), n, o, &Thresholds::default(), tokyo(at))
            .faults
            .iter()
            .map(|f| f.fault)
            .collect()
    }

    fn expected_at(cal: &Calendar, n: &NodeView<'_>, at: &str) -> &'static str {
        assess(
            Some(cal),
            n,
            &Observed::default(),
            &Thresholds::default(),
            tokyo(at),
        )
        .expected
        .as_str()
    }

    #[test]
    fn every_tier_is_expected_online_in_its_own_window_only() {
        let cal = calendar();
        // Monday 2026-11-30: national 07:00–22:00, prefecture 07:30–21:30, CS 08:00–21:00.
        for (tier, start, end) in [
            (Tier::National, "07:00", "22:00"),
            (Tier::Prefecture, "07:30", "21:30"),
            (Tier::Cs, "08:00", "21:00"),
        ] {
            let n = node(tier, NodePhase::Offline, "2026-11-27T23:00");
            let before = format!("2026-11-30T{start}");
            let at_start = tokyo(&before);
            let just_before = (at_start - SignedDuration::from_mins(1))
                .to_zoned(jiff::tz::TimeZone::get("Asia/Tokyo").unwrap())
                .strftime("%Y-%m-%dT%H:%M")
                .to_string();
            assert_eq!(expected_at(&cal, &n, &just_before), "Offline", "{tier:?}");
            assert_eq!(expected_at(&cal, &n, &before), "Online", "{tier:?}");
            let n = node(tier, NodePhase::Online, "2026-11-30T09:00");
            assert_eq!(
                expected_at(&cal, &n, &format!("2026-11-30T{end}")),
                "StopWave",
                "{tier:?}"
            );
        }
    }

    #[test]
    fn an_offline_node_in_its_window_is_a_fault_after_the_grace_only() {
        let cal = calendar();
        let n = node(Tier::Cs, NodePhase::Offline, "2026-11-27T23:00");
        assert_eq!(faults_at(&cal, &n, "2026-11-30T08:09"), []);
        let a = assess(
            Some(&cal),
            &n,
            &Observed::default(),
            &Thresholds::default(),
            tokyo("2026-11-30T08:09"),
        );
        assert_eq!(a.recheck_at, Some(tokyo("2026-11-30T08:10")));
        let a = assess(
            Some(&cal),
            &n,
            &Observed::default(),
            &Thresholds::default(),
            tokyo("2026-11-30T08:10"),
        );
        assert_eq!(
            a.faults,
            [Finding {
                fault: Fault::NotOnline,
                since: Some(tokyo("2026-11-30T08:00"))
            }]
        );
        // Starting late (08:12) gets its own grace from then; Failed too.
        let n = node(Tier::Cs, NodePhase::Starting, "2026-11-30T08:12");
        assert_eq!(faults_at(&cal, &n, "2026-11-30T08:21"), []);
        assert_eq!(faults_at(&cal, &n, "2026-11-30T08:22"), [Fault::NotOnline]);
        let n = node(Tier::Cs, NodePhase::Failed, "2026-11-30T10:00");
        assert_eq!(faults_at(&cal, &n, "2026-11-30T10:10"), [Fault::NotOnline]);
        // Online with all replicas: nothing; with some: Degraded; with none: not Online.
        let mut n = node(Tier::Cs, NodePhase::Online, "2026-11-30T08:05");
        assert_eq!(faults_at(&cal, &n, "2026-11-30T12:00"), []);
        n.replicas = 2;
        assert_eq!(faults_at(&cal, &n, "2026-11-30T12:00"), [Fault::Degraded]);
        n.ready_replicas = 0;
        assert_eq!(faults_at(&cal, &n, "2026-11-30T12:00"), [Fault::NotOnline]);
        // Online since 10:00 and its pods dead at 10:03: down now, with no start grace (it
        // started; the alert's `for` rides out a restart).
        let mut n = node(Tier::Cs, NodePhase::Online, "2026-11-30T10:00");
        n.ready_replicas = 0;
        assert_eq!(faults_at(&cal, &n, "2026-11-30T10:03"), [Fault::NotOnline]);
    }

    #[test]
    fn planned_nights_weekends_holidays_and_the_year_end_are_never_faults() {
        let cal = calendar();
        for tier in Tier::ALL {
            for at in [
                "2026-11-30T23:30", // Monday night, batches done
                "2026-12-01T05:00", // before the start
                "2026-11-28T12:00", // Saturday
                "2026-11-23T12:00", // Labour Thanksgiving Day (a Monday)
                "2026-12-31T12:00", // year-end closure
                "2027-01-02T12:00",
            ] {
                let mut n = node(tier, NodePhase::Offline, "2026-11-20T23:00");
                n.last_batch_date = Some(cal.date_of(tokyo(at)));
                assert_eq!(faults_at(&cal, &n, at), [], "{tier:?} at {at}");
                assert!(!expected_at(&cal, &n, at).starts_with("Online"));
            }
        }
    }

    #[test]
    fn a_prefectures_own_end_moves_its_expected_online_end() {
        let config = CalendarConfig {
            prefecture_online_ends: vec![PrefectureOnlineEnd {
                prefecture: "13".into(),
                online_end: "21:45".into(),
            }],
            ..CalendarConfig::default()
        };
        let cal = Calendar::new(&config).unwrap();
        let n = node(Tier::Prefecture, NodePhase::Online, "2026-11-30T07:35");
        assert_eq!(expected_at(&cal, &n, "2026-11-30T21:40"), "Online");
        assert_eq!(expected_at(&cal, &n, "2026-11-30T21:45"), "StopWave");
        // Another prefecture keeps the calendar's 21:30.
        let mut other = n.clone();
        other.prefecture = Some(27);
        assert_eq!(expected_at(&cal, &other, "2026-11-30T21:40"), "StopWave");
        // A node's own online end (spec.onlineEnd) wins.
        let mut own = n.clone();
        own.online_end = Some(TimeOfDay::parse("21:35").unwrap());
        assert_eq!(expected_at(&cal, &own, "2026-11-30T21:40"), "StopWave");
        // Still Online at 21:50 with a 21:45 end: within the grace; at 21:55, still up.
        assert_eq!(faults_at(&cal, &n, "2026-11-30T21:54"), []);
        assert_eq!(faults_at(&cal, &n, "2026-11-30T21:55"), [Fault::StillUp]);
    }

    #[test]
    fn an_extension_keeps_the_node_expected_online_past_its_end() {
        let cal = calendar();
        let ext = [(jiff::civil::date(2026, 11, 30), tokyo("2026-11-30T23:00"))];
        let mut n = node(Tier::Cs, NodePhase::Online, "2026-11-30T08:05");
        n.extensions = &ext;
        assert_eq!(expected_at(&cal, &n, "2026-11-30T22:00"), "Online");
        assert_eq!(faults_at(&cal, &n, "2026-11-30T22:30"), []);
        // Stopped at its usual 21:00 although extended: a fault.
        let mut down = node(Tier::Cs, NodePhase::Offline, "2026-11-30T21:05");
        down.extensions = &ext;
        assert_eq!(
            faults_at(&cal, &down, "2026-11-30T22:00"),
            [Fault::NotOnline]
        );
        // After the extension's end the usual stop is expected.
        assert_eq!(expected_at(&cal, &n, "2026-11-30T23:00"), "StopWave");
    }

    #[test]
    fn overrides_and_suspend_say_what_is_expected() {
        let cal = calendar();
        // Saturday, override Online until 12:00.
        let mut n = node(Tier::National, NodePhase::Offline, "2026-11-28T10:00");
        n.manual_override = Some((OverridePhase::Online, tokyo("2026-11-28T12:00")));
        assert_eq!(expected_at(&cal, &n, "2026-11-28T10:05"), "Online");
        assert_eq!(faults_at(&cal, &n, "2026-11-28T10:05"), []);
        assert_eq!(faults_at(&cal, &n, "2026-11-28T10:10"), [Fault::NotOnline]);
        assert_eq!(expected_at(&cal, &n, "2026-11-28T12:00"), "Offline");
        // A CS pinned Online keeps its prefecture expected Online.
        let mut p = node(Tier::Prefecture, NodePhase::Online, "2026-11-28T10:00");
        p.pinned_below = Some(tokyo("2026-11-28T12:00"));
        assert_eq!(expected_at(&cal, &p, "2026-11-28T11:00"), "Online");
        assert_eq!(faults_at(&cal, &p, "2026-11-28T11:00"), []);
        // Override Offline in the window: maintenance, not a fault.
        let mut m = node(Tier::Cs, NodePhase::Offline, "2026-11-30T09:00");
        m.manual_override = Some((OverridePhase::Offline, tokyo("2026-11-30T15:00")));
        assert_eq!(expected_at(&cal, &m, "2026-11-30T10:00"), "Offline");
        assert_eq!(faults_at(&cal, &m, "2026-11-30T10:00"), []);
        // Suspended: nothing expected, nothing wrong.
        let mut s = node(Tier::Cs, NodePhase::Offline, "2026-11-30T07:00");
        s.suspend = true;
        let a = assess(
            Some(&cal),
            &s,
            &Observed::default(),
            &Thresholds::default(),
            tokyo("2026-11-30T12:00"),
        );
        assert_eq!((a.expected, a.faults), (Expected::Unmanaged, vec![]));
    }

    #[test]
    fn a_stop_wave_or_a_batch_that_would_not_finish_before_the_next_start_is_late() {
        let cal = calendar();
        // The CS window of Monday ended at 21:00; the stop may take an hour.
        let mut n = node(Tier::Cs, NodePhase::Draining, "2026-11-30T21:00");
        assert_eq!(expected_at(&cal, &n, "2026-11-30T21:30"), "StopWave");
        assert_eq!(faults_at(&cal, &n, "2026-11-30T21:59"), []);
        assert_eq!(faults_at(&cal, &n, "2026-11-30T22:00"), [Fault::StopLate]);
        n.phase = NodePhase::Stopping;
        assert_eq!(faults_at(&cal, &n, "2026-11-30T22:00"), [Fault::StopLate]);
        // Batches: expected between the stop and the next start, late 30 min before it.
        n.phase = NodePhase::DailyBatch;
        assert_eq!(expected_at(&cal, &n, "2026-11-30T23:00"), "BatchWindow");
        assert_eq!(faults_at(&cal, &n, "2026-12-01T07:29"), []);
        assert_eq!(faults_at(&cal, &n, "2026-12-01T07:30"), [Fault::BatchLate]);
        // Into the window: still late, and not Online after the grace.
        assert_eq!(faults_at(&cal, &n, "2026-12-01T08:05"), [Fault::BatchLate]);
        assert_eq!(
            faults_at(&cal, &n, "2026-12-01T08:10"),
            [Fault::NotOnline, Fault::BatchLate]
        );
        // Draining at noon because the prefecture above went down: not Online, but no stop
        // of last night running late.
        let mut mid = node(Tier::Cs, NodePhase::Draining, "2026-11-30T12:00");
        mid.last_batch_date = Some(jiff::civil::date(2026, 11, 27));
        assert_eq!(
            faults_at(&cal, &mid, "2026-11-30T12:30"),
            [Fault::NotOnline]
        );
        // Friday's batches may run all weekend (till Monday 07:30).
        let mut f = node(Tier::Cs, NodePhase::DailyBatch, "2026-11-27T21:10");
        f.last_batch_date = Some(jiff::civil::date(2026, 11, 26));
        assert_eq!(faults_at(&cal, &f, "2026-11-29T12:00"), []);
        assert_eq!(faults_at(&cal, &f, "2026-11-30T07:30"), [Fault::BatchLate]);
        // Still Online past the end and the grace: the stop never began.
        let up = node(Tier::Cs, NodePhase::Online, "2026-11-30T08:05");
        assert_eq!(faults_at(&cal, &up, "2026-11-30T21:09"), []);
        assert_eq!(faults_at(&cal, &up, "2026-11-30T21:10"), [Fault::StillUp]);
        // Up on a Saturday with no override: still up, whatever its reason.
        let sat = node(Tier::National, NodePhase::Online, "2026-11-28T09:00");
        assert_eq!(faults_at(&cal, &sat, "2026-11-28T09:30"), [Fault::StillUp]);
    }

    #[test]
    fn failed_batches_final_answers_and_specs_are_faults() {
        let cal = calendar();
        let mut n = node(Tier::Cs, NodePhase::Failed, "2026-11-30T21:20");
        n.reason = Some(Reason::BatchFailed);
        let failed = Observed {
            batch_failed: Some(jiff::civil::date(2026, 11, 30)),
            final_answer_failed: None,
        };
        let a = assess(
            Some(&cal),
            &n,
            &failed,
            &Thresholds::default(),
            tokyo("2026-11-30T23:00"),
        );
        assert_eq!(
            a.faults,
            [Finding {
                fault: Fault::BatchFailed,
                since: Some(tokyo("2026-11-30T21:20"))
            }]
        );
        // The final exchange of the night failed: a fault until the next window opens.
        let fa = Observed {
            batch_failed: None,
            final_answer_failed: Some(jiff::civil::date(2026, 11, 30)),
        };
        let off = node(Tier::Cs, NodePhase::Offline, "2026-11-30T21:20");
        assert_eq!(
            faults_with(&cal, &off, &fa, "2026-11-30T23:00"),
            [Fault::FinalAnswerFailed]
        );
        let on = node(Tier::Cs, NodePhase::Online, "2026-12-01T08:02");
        assert_eq!(faults_with(&cal, &on, &fa, "2026-12-01T09:00"), []);
        // An invalid spec.
        let mut bad = node(Tier::Cs, NodePhase::Failed, "2026-11-30T03:00");
        bad.reason = Some(Reason::InvalidSpec);
        assert_eq!(
            faults_at(&cal, &bad, "2026-11-30T05:00"),
            [Fault::InvalidSpec]
        );
        // A plain-HTTP node the operator refuses to run cannot be planned either.
        bad.reason = Some(Reason::PlainHttpRefused);
        assert_eq!(
            faults_at(&cal, &bad, "2026-11-30T05:00"),
            [Fault::InvalidSpec]
        );
    }

    #[test]
    fn no_calendar_is_a_fault_not_a_panic() {
        let n = node(Tier::Cs, NodePhase::Failed, "2026-11-30T03:00");
        let a = assess(
            None,
            &n,
            &Observed::default(),
            &Thresholds::default(),
            tokyo("2026-11-30T12:00"),
        );
        assert_eq!(a.expected, Expected::Unknown);
        assert_eq!(
            a.faults,
            [Finding {
                fault: Fault::CalendarUnavailable,
                since: Some(tokyo("2026-11-30T03:00"))
            }]
        );
    }

    fn any_phase() -> impl Strategy<Value = NodePhase> {
        use NodePhase::*;
        prop::sample::select(vec![
            Offline, Starting, Online, Draining, Stopping, DailyBatch, Failed,
        ])
    }

    proptest! {
        /// Whatever the node does, the calendar's closed days and nights are never a "down"
        /// fault; and nothing panics, at any instant jiff can hold.
        #[test]
        fn a_node_the_calendar_says_is_closed_is_never_down(
            tier in prop::sample::select(Tier::ALL.to_vec()),
            prefecture in 1u8..=47,
            phase in any_phase(),
            ready in 0i32..3,
            replicas in 1i32..3,
            seconds in -377_705_116_800i64..253_402_207_200,
            since_offset in -1_000_000i64..1_000_000,
            last_batch_back in prop::option::of(0i32..20),
        ) {
            let cal = calendar();
            let now = Timestamp::from_second(seconds).unwrap();
            let mut n = NodeView::bare(tier, (tier != Tier::National).then_some(prefecture), None);
            n.phase = phase;
            n.ready_replicas = ready;
            n.replicas = replicas;
            n.phase_since = now.checked_add(SignedDuration::from_secs(since_offset)).ok();
            n.last_batch_date = last_batch_back
                .and_then(|b| cal.date_of(now).checked_sub(jiff::Span::new().days(b)).ok());
            let a = assess(Some(&cal), &n, &Observed::default(), &Thresholds::default(), now);
            if !cal.in_online_window(tier, n.prefecture, now) {
                prop_assert!(!a.expected.is_online());
                prop_assert!(a.faults.iter().all(|f| !f.fault.is_down()), "{:?}", a);
            }
            prop_assert!(a.recheck_at.is_none_or(|r| r > now));
            let none = assess(None, &n, &Observed::default(), &Thresholds::default(), now);
            prop_assert!(none.has(Fault::CalendarUnavailable));
        }
    }
}
