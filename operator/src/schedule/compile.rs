//! From a `JobScheduleSpec` as written to a [`Schedule`] the decisions can use, refusing what the
//! API server cannot check: dependency cycles, unknown entries, malformed selectors (and, for
//! manifests read without an API server, everything its CEL rules check too). Every error names
//! its field and the rule it breaks.

use std::fmt;

use jiff::SignedDuration;
use juki_calendar::config::{BatchConfig, BatchSchedule};
use juki_calendar::{Calendar, TimeOfDay};
use k8s_openapi::api::core::v1::PodTemplateSpec;

use crate::api::{
    CatchUp, Concurrency, DeadlinePolicy, Dependency, DependencyScope, JobScheduleSpec,
    NodeSelection, Retries, ScheduleEntry, Trigger,
};

/// One mistake in a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError {
    /// The field, e.g. `spec.entries[2].after[0].entry`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every mistake in a spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ScheduleErrors(pub Vec<ScheduleError>);

impl fmt::Display for ScheduleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

/// What a run executes.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// `juki-node batch NAME --date DATE`.
    Batch(String),
    Template(Box<PodTemplateSpec>),
}

/// When a run becomes due, compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    AfterStop,
    At(TimeOfDay),
    BeforeStart(SignedDuration),
}

/// A validated entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub nodes: NodeSelection,
    pub work: Work,
    pub when: When,
    /// The days rule (schedule, weekday, day of month, closed-day policy), as a calendar batch.
    pub days: BatchConfig,
    pub run_on_closed_days: bool,
    /// (index of the entry waited for, whose run).
    pub after: Vec<(usize, DependencyScope)>,
    pub retries: Retries,
    pub timeout: SignedDuration,
    pub concurrency: Concurrency,
    pub deadline: DeadlinePolicy,
    pub catch_up: CatchUp,
    /// Held by people: no new attempt starts.
    pub held: bool,
}

/// A validated schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub entries: Vec<Entry>,
    pub concurrency: Concurrency,
}

const NO_RETRIES: Retries = Retries {
    limit: 0,
    backoff_seconds: 60,
    max_backoff_seconds: 1800,
};

impl Schedule {
    /// Validates a spec; the error lists every mistake with its field.
    pub fn new(spec: &JobScheduleSpec) -> Result<Schedule, ScheduleErrors> {
        let mut errors = Vec::new();
        let names: Vec<&str> = spec.entries.iter().map(|e| e.name.as_str()).collect();
        let mut entries = Vec::new();
        for (i, e) in spec.entries.iter().enumerate() {
            let mut err = |field: &str, message: String| {
                errors.push(ScheduleError {
                    field: format!("spec.entries[{i}]{field}"),
                    message,
                })
            };
            if let Some(first) = names[..i].iter().position(|n| *n == e.name) {
                err(
                    ".name",
                    format!("{:?} is already the name of spec.entries[{first}]", e.name),
                );
            }
            if let Some(entry) = compile_entry(e, &names, &mut err) {
                entries.push(entry);
            }
        }
        check_concurrency(spec.concurrency, "spec.concurrency", &mut errors);
        if errors.is_empty() {
            errors.extend(cycle_errors(&entries));
        }
        if errors.is_empty() {
            Ok(Schedule {
                entries,
                concurrency: spec.concurrency.unwrap_or_default(),
            })
        } else {
            Err(ScheduleErrors(errors))
        }
    }

    /// The index of an entry by name.
    pub fn entry(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=20).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

const NAME_RULE: &str = "lowercase letters, digits and '-', starting with a letter, not ending with '-', at most 20 characters";

fn compile_entry(
    e: &ScheduleEntry,
    names: &[&str],
    err: &mut impl FnMut(&str, String),
) -> Option<Entry> {
    let before = std::cell::Cell::new(0usize);
    let mut fail = |field: &str, message: String| {
        before.set(before.get() + 1);
        err(field, message)
    };
    if !valid_name(&e.name) {
        fail(".name", format!("{:?}: {NAME_RULE}", e.name));
    }
    let work = compile_work(e, &mut fail);
    let when = compile_when(e, &mut fail);
    let days = BatchConfig {
        name: e.name.clone(),
        schedule: e.schedule,
        weekday: e.weekday,
        day_of_month: e.day_of_month,
        closed_day_policy: e.closed_day_policy,
        tiers: juki_calendar::Tier::ALL.to_vec(),
    };
    match (e.schedule, e.weekday, e.day_of_month) {
        (BatchSchedule::Weekly, None, _) => fail(".weekday", "a Weekly entry needs weekday".into()),
        (BatchSchedule::Monthly, _, None) => {
            fail(".dayOfMonth", "a Monthly entry needs dayOfMonth".into())
        }
        (_, _, Some(d)) if !(1..=31).contains(&d) => fail(
            ".dayOfMonth",
            format!("{d} is not a day of month (1 to 31)"),
        ),
        _ => {}
    }
    if e.run_on_closed_days && e.trigger != Trigger::At {
        fail(
            ".runOnClosedDays",
            "applies only to trigger At (nodes neither stop nor start on closed days)".into(),
        );
    }
    for (p, code) in e.nodes.prefectures.iter().enumerate() {
        if juki_codes::validate_prefecture_code(&code.0).is_err() {
            fail(
                &format!(".nodes.prefectures[{p}]"),
                format!("{:?} is not a prefecture code (01 to 47)", code.0),
            );
        }
    }
    if let Some(problem) = e
        .nodes
        .selector
        .as_ref()
        .and_then(super::select::selector_problem)
    {
        fail(".nodes.selector", problem);
    }
    let after = compile_after(&e.name, &e.after, names, &mut fail);
    let retries = e.retries.unwrap_or(NO_RETRIES);
    if retries.limit > 10 {
        fail(
            ".retries.limit",
            format!("{} is more than 10 retries", retries.limit),
        );
    }
    if retries.backoff_seconds == 0 || retries.max_backoff_seconds < retries.backoff_seconds {
        fail(
            ".retries",
            "backoffSeconds must be at least 1 and maxBackoffSeconds at least backoffSeconds"
                .into(),
        );
    }
    if !(1..=1440).contains(&e.timeout_minutes) {
        fail(
            ".timeoutMinutes",
            format!("{} is not between 1 and 1440", e.timeout_minutes),
        );
    }
    let mut concurrency_errors = Vec::new();
    check_concurrency(e.concurrency, "", &mut concurrency_errors);
    for c in concurrency_errors {
        fail(&format!(".concurrency{}", c.field), c.message);
    }
    let (Some(work), Some(when), 0) = (work, when, before.get()) else {
        return None;
    };
    Some(Entry {
        name: e.name.clone(),
        nodes: e.nodes.clone(),
        work,
        when,
        days,
        run_on_closed_days: e.run_on_closed_days,
        after,
        retries,
        timeout: SignedDuration::from_mins(i64::from(e.timeout_minutes)),
        concurrency: e.concurrency.unwrap_or_default(),
        deadline: e.deadline,
        catch_up: e.catch_up,
        held: e.hold,
    })
}

fn compile_work(e: &ScheduleEntry, fail: &mut impl FnMut(&str, String)) -> Option<Work> {
    match (&e.batch, &e.template) {
        (Some(_), Some(_)) => {
            fail(
                "",
                "an entry runs exactly one of batch or template, not both".into(),
            );
            None
        }
        (None, None) => {
            fail(
                "",
                "an entry runs exactly one of batch (a juki-node batch) or template (a pod template)"
                    .into(),
            );
            None
        }
        (Some(batch), None) if !valid_name(batch) => {
            fail(".batch", format!("{batch:?}: {NAME_RULE}"));
            None
        }
        (Some(batch), None) => Some(Work::Batch(batch.clone())),
        (None, Some(template)) => {
            let containers = template.spec.as_ref().map_or(0, |s| s.containers.len());
            if containers == 0 {
                fail(
                    ".template.spec.containers",
                    "a pod template needs at least one container".into(),
                );
                return None;
            }
            Some(Work::Template(Box::new(template.clone())))
        }
    }
}

fn compile_when(e: &ScheduleEntry, fail: &mut impl FnMut(&str, String)) -> Option<When> {
    if e.lead_minutes.is_some() && e.trigger != Trigger::BeforeStart {
        fail(".leadMinutes", "applies only to trigger BeforeStart".into());
    }
    match (e.trigger, &e.at) {
        (Trigger::At, None) => {
            fail(
                ".at",
                "trigger At needs a time \"HH:MM\" (00:00 to 29:59)".into(),
            );
            None
        }
        (Trigger::At, Some(at)) => match TimeOfDay::parse(at) {
            Ok(t) => Some(When::At(t)),
            Err(message) => {
                fail(".at", message);
                None
            }
        },
        (_, Some(_)) => {
            fail(".at", "applies only to trigger At".into());
            None
        }
        (Trigger::AfterStop, None) => Some(When::AfterStop),
        (Trigger::BeforeStart, None) => {
            let lead = e.lead_minutes.unwrap_or(60);
            if !(1..=720).contains(&lead) {
                fail(".leadMinutes", format!("{lead} is not between 1 and 720"));
                return None;
            }
            Some(When::BeforeStart(SignedDuration::from_mins(i64::from(
                lead,
            ))))
        }
    }
}

fn compile_after(
    name: &str,
    after: &[Dependency],
    names: &[&str],
    fail: &mut impl FnMut(&str, String),
) -> Vec<(usize, DependencyScope)> {
    let mut out = Vec::new();
    for (j, d) in after.iter().enumerate() {
        match names.iter().position(|n| *n == d.entry) {
            None => fail(
                &format!(".after[{j}].entry"),
                format!(
                    "no entry named {:?} (entries: {})",
                    d.entry,
                    names.join(", ")
                ),
            ),
            Some(_) if d.entry == name && d.scope == DependencyScope::SameNode => fail(
                &format!(".after[{j}]"),
                format!(
                    "{name:?} waits for itself on the same node; to wait for the nodes below, set scope NodesBelow or AllBelow"
                ),
            ),
            Some(k) => out.push((k, d.scope)),
        }
    }
    out
}

fn check_concurrency(c: Option<Concurrency>, field: &str, errors: &mut Vec<ScheduleError>) {
    let Some(c) = c else { return };
    for (name, value) in [("perPrefecture", c.per_prefecture), ("overall", c.overall)] {
        if value == Some(0) {
            errors.push(ScheduleError {
                field: format!("{field}.{name}"),
                message: "must be at least 1 (leave it out for no limit)".into(),
            });
        }
    }
}

/// Cycles of same-node dependencies (the only cycles there can be: a dependency on the nodes
/// below always leads down the tree, which ends).
fn cycle_errors(entries: &[Entry]) -> Vec<ScheduleError> {
    let edges = |i: usize| {
        entries[i]
            .after
            .iter()
            .filter(|(_, scope)| *scope == DependencyScope::SameNode)
            .map(|(k, _)| *k)
    };
    // Depth-first search; state 1 = on the path, 2 = done.
    let mut state = vec![0u8; entries.len()];
    let mut errors = Vec::new();
    fn visit(
        i: usize,
        path: &mut Vec<usize>,
        state: &mut [u8],
        edges: &dyn Fn(usize) -> Vec<usize>,
    ) -> Option<Vec<usize>> {
        state[i] = 1;
        path.push(i);
        for k in edges(i) {
            if state[k] == 1 {
                let start = path.iter().position(|&p| p == k).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(k);
                return Some(cycle);
            }
            if state[k] == 0
                && let Some(cycle) = visit(k, path, state, edges)
            {
                return Some(cycle);
            }
        }
        path.pop();
        state[i] = 2;
        None
    }
    let edges_vec = |i: usize| edges(i).collect::<Vec<_>>();
    for i in 0..entries.len() {
        if state[i] == 0
            && let Some(cycle) = visit(i, &mut Vec::new(), &mut state, &edges_vec)
        {
            let names: Vec<&str> = cycle.iter().map(|&k| entries[k].name.as_str()).collect();
            errors.push(ScheduleError {
                field: format!("spec.entries[{}].after", cycle[0]),
                message: format!(
                    "dependency cycle on the same node: {} (each waits for the next)",
                    names.join(" → ")
                ),
            });
        }
    }
    errors
}

/// The calendar's `batches` as the schedule they have always been: one AfterStop entry per
/// batch, for the tiers it names, each after the one before it on the same node (the configured
/// order), a failure not retried, every missed night run oldest first, lateness reported. Its
/// Jobs keep the names the batches' Jobs have today, so a night begun before the switch is not
/// run twice. An explicit JobSchedule adds to it; it does not replace it.
pub fn implicit_spec(calendar: &Calendar) -> JobScheduleSpec {
    let mut entries: Vec<ScheduleEntry> = Vec::new();
    for batch in calendar.batches() {
        let after = entries
            .last()
            .map(|previous| Dependency {
                entry: previous.name.clone(),
                scope: DependencyScope::SameNode,
            })
            .into_iter()
            .collect();
        entries.push(ScheduleEntry {
            name: batch.name.clone(),
            nodes: NodeSelection {
                namespaces: vec!["*".into()],
                tiers: batch.tiers.clone(),
                ..NodeSelection::default()
            },
            batch: Some(batch.name.clone()),
            template: None,
            trigger: Trigger::AfterStop,
            at: None,
            lead_minutes: None,
            schedule: batch.schedule,
            weekday: batch.weekday,
            day_of_month: batch.day_of_month,
            closed_day_policy: batch.closed_day_policy,
            run_on_closed_days: false,
            after,
            retries: None,
            // The batches have no time limit today: a day is the most a run may take.
            timeout_minutes: 1440,
            concurrency: None,
            deadline: DeadlinePolicy::Alert,
            catch_up: CatchUp::All,
            hold: false,
        });
    }
    JobScheduleSpec {
        calendar: String::new(),
        concurrency: None,
        entries,
    }
}

impl Schedule {
    /// Entries that share a name with an entry of `other` (e.g. the calendar's implicit
    /// schedule): the Jobs of both would have the same names, and one would count as the other's
    /// run. Named `other_name` in the message.
    pub fn name_clashes(&self, other_name: &str, other: &Schedule) -> Vec<ScheduleError> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| other.entry(&e.name).is_some())
            .map(|(i, e)| ScheduleError {
                field: format!("spec.entries[{i}].name"),
                message: format!(
                    "{:?} is also an entry of {other_name}; entry names name the Jobs (<node>-<entry>-<date>), so they must differ across the schedules of a node",
                    e.name
                ),
            })
            .collect()
    }
}
