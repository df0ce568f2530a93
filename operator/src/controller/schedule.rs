//! The JobSchedule controller (ジョブスケジューラ): one round over every schedule whenever a
//! schedule, a node or a Job changes, or when the last round asked to look again. A round
//! gathers the world from the caches, calls [`schedule::decide`] and applies what it decided:
//! Jobs created (named by their run key: never twice for a node, entry, day and attempt),
//! attempts past their timeout ended, the status written, Events for runs skipped, failed and
//! late, and the nodes that HoldStart runs keep from starting handed to the node controller.
//!
//! Running, Succeeded and Failed live in the Jobs, so a restarted operator finds them; Pending
//! and Skipped live in memory and are decided again after a restart (a run seen pending before
//! the restart whose deadline passed meanwhile then follows its catch-up rule).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use jiff::Timestamp;
use jiff::civil::Date;
use juki_calendar::Tier;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::{Context, Error};
use crate::api::{JobSchedule, JobScheduleStatus, JukiNode, NodePhase, UnstartedState};
use crate::resources;
use crate::schedule::unstarted::RunName;
use crate::schedule::{
    self, Decisions, RunId, RunKey, RunState, SCHEDULE_LABEL, Schedule, ScheduleNode, SkipReason,
    World,
};

/// Real time a burst of changes (a stop wave) is given to settle before the next round.
const SETTLE: Duration = Duration::from_millis(200);
/// Real wait before a round that failed is tried again.
const RETRY: Duration = Duration::from_secs(5);
/// Runs listed in a status (failures first).
const STATUS_RUNS: usize = 50;

/// What a schedule's rounds remember: runs without a Job, and what was already reported.
#[derive(Default)]
struct Memory {
    /// Pending and Skipped runs.
    unjobbed: HashMap<RunName, RunState>,
    /// Whether `unjobbed` holds what the status kept (the first round of this process reads it).
    seeded: bool,
    /// (run, what) already published as an Event.
    reported: HashSet<(RunName, String)>,
    namespace: String,
    name: String,
}

/// Runs rounds until the process ends; `changes` yields on every change that may matter.
pub(super) async fn run(ctx: Arc<Context>, changes: Vec<BoxStream<'static, ()>>) {
    let notify = Arc::new(tokio::sync::Notify::new());
    let notifier = notify.clone();
    // The shared streams must be drained whatever a round is doing.
    tokio::spawn(futures::stream::select_all(changes).for_each(move |()| {
        notifier.notify_one();
        async {}
    }));
    // The scheduler waits for its own cache alone: without the JobSchedule CRD or the right to
    // list it, the nodes still run (the watcher's errors are logged).
    if ctx.schedules.wait_until_ready().await.is_err() {
        tracing::warn!("the JobSchedule cache stopped before its first list");
        return;
    }
    let mut memories: HashMap<String, Memory> = HashMap::new();
    loop {
        let wait = round(&ctx, &mut memories).await;
        tokio::select! {
            () = notify.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
        tokio::time::sleep(SETTLE).await;
    }
}

/// One look at every schedule; returns how long to wait at most before the next.
async fn round(ctx: &Context, memories: &mut HashMap<String, Memory>) -> Duration {
    let now = ctx.clock.now();
    let objects: Vec<Arc<JukiNode>> = ctx.nodes.state();
    let nodes = schedule_nodes(&objects);
    let jobs = ctx.jobs.state();
    let mut wait = ctx.settings.max_requeue;
    let mut live = HashSet::new();
    for object in ctx.schedules.state() {
        let uid = object.uid().unwrap_or_default();
        live.insert(uid.clone());
        let memory = memories.entry(uid).or_default();
        memory.namespace = object.namespace().unwrap_or_default();
        memory.name = object.name_any();
        match reconcile(ctx, &object, &nodes, &jobs, memory, now).await {
            Ok(Some(at)) => wait = wait.min(ctx.clock.real_until(at)),
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, schedule = %object.name_any(), "JobSchedule round failed; retrying");
                ctx.metrics
                    .reconcile("JobSchedule", 0.0, Some(error.step()));
                wait = wait.min(RETRY);
            }
        }
    }
    memories.retain(|uid, m| {
        let kept = live.contains(uid);
        if !kept {
            ctx.metrics.forget_schedule(&m.namespace, &m.name);
        }
        kept
    });
    ctx.holds.retain(&live);
    wait
}

/// Every node the schedules can see, with its object (for the Jobs' owner and pod parts).
fn schedule_nodes(objects: &[Arc<JukiNode>]) -> Vec<(ScheduleNode, Arc<JukiNode>)> {
    objects
        .iter()
        .filter_map(|object| {
            let (topology, online_end) = crate::topology::from_jukinode(object, "default").ok()?;
            let status = object.status.clone().unwrap_or_default();
            let phase = status.phase.unwrap_or(NodePhase::Offline);
            Some((
                ScheduleNode {
                    topology,
                    labels: object.labels().clone(),
                    online_end,
                    phase,
                    stopped: stopped_date(phase, &status),
                },
                object.clone(),
            ))
        })
        .collect()
}

/// The operating date of a node's last stop: the day its final exchange was for, or the day
/// its Offline or DailyBatch phase belongs to.
fn stopped_date(phase: NodePhase, status: &crate::api::JukiNodeStatus) -> Option<Date> {
    let final_day = status
        .final_answer
        .as_ref()
        .and_then(|f| f.date.parse::<Date>().ok());
    let phase_day = status
        .operating_date
        .as_deref()
        .filter(|_| matches!(phase, NodePhase::Offline | NodePhase::DailyBatch))
        .and_then(|d| d.parse::<Date>().ok());
    final_day.max(phase_day)
}

async fn reconcile(
    ctx: &Context,
    object: &JobSchedule,
    all_nodes: &[(ScheduleNode, Arc<JukiNode>)],
    jobs: &[Arc<Job>],
    memory: &mut Memory,
    now: Timestamp,
) -> Result<Option<Timestamp>, Error> {
    let started = std::time::Instant::now();
    let ns = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let uid = object.uid().unwrap_or_default();
    let old = object.status.clone();
    let since = old
        .as_ref()
        .and_then(|s| s.since.clone())
        .unwrap_or(Time(now));
    let mut status = JobScheduleStatus {
        since: Some(since.clone()),
        observed_generation: object.metadata.generation,
        entries: object.spec.entries.len() as i32,
        ..JobScheduleStatus::default()
    };
    let api: Api<JobSchedule> = Api::namespaced(ctx.client.clone(), &ns);
    let compiled = Schedule::new(&object.spec).map_err(|e| e.to_string());
    let calendar = ctx
        .last_valid
        .calendar(ctx, &object.spec.calendar)
        .map_err(|e| format!("spec.calendar: {e}"));
    // The calendar's batches are the nodes' implicit schedule: an entry of the same name would
    // make Jobs of the same names, and one would pass for the other's run.
    let compiled = match (compiled, &calendar) {
        (Ok(s), Ok((c, ..))) => {
            let implicit = Schedule::new(&schedule::implicit_spec(c));
            let clashes = implicit
                .map(|i| s.name_clashes("the calendar's batches", &i))
                .unwrap_or_default();
            if clashes.is_empty() {
                Ok(s)
            } else {
                Err(schedule::ScheduleErrors(clashes).to_string())
            }
        }
        (compiled, _) => compiled,
    };
    let (schedule, calendar, calendar_note) = match (compiled, calendar) {
        (Ok(s), Ok((c, _, note))) => (s, c, note),
        (Err(e), _) | (_, Err(e)) => {
            // Nothing runs and nothing is held on a schedule that cannot be read.
            ctx.holds.set(&uid, HashMap::new());
            // Kept for when it reads again, through a restart too.
            status.unstarted = old
                .as_ref()
                .map(|s| s.unstarted.clone())
                .unwrap_or_default();
            status.conditions = vec![valid(object, old.as_ref(), false, "Invalid", e, now)];
            super::patch_status(&api, &name, old.as_ref(), &status, ctx).await?;
            return Ok(None);
        }
    };

    // Another tenant's nodes are out of reach unless the national server lives here: a
    // nationwide schedule is the national agency's.
    let national_home = all_nodes
        .iter()
        .any(|(n, _)| n.topology.tier == Tier::National && n.topology.namespace == ns);
    let (nodes, objects): (Vec<ScheduleNode>, Vec<Arc<JukiNode>>) = all_nodes
        .iter()
        .filter(|(n, _)| national_home || n.topology.namespace == ns)
        .cloned()
        .unzip();
    let mut warnings: Vec<String> = calendar_note.into_iter().collect();
    if !national_home {
        for (i, entry) in object.spec.entries.iter().enumerate() {
            if entry.nodes.namespaces.iter().any(|n| *n != ns) {
                warnings.push(format!(
                    "spec.entries[{i}].nodes.namespaces: only a schedule in the national server's namespace reaches other namespaces; this one runs on {ns} only"
                ));
            }
        }
    }
    warnings.extend(
        schedule::unknown_node_sets(&schedule, &ns, &nodes)
            .iter()
            .map(ToString::to_string),
    );

    let index: HashMap<(&str, &str), usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| ((n.topology.namespace.as_str(), n.topology.name.as_str()), i))
        .collect();
    let mine = jobs
        .iter()
        .filter(|j| j.labels().get(SCHEDULE_LABEL) == Some(&name))
        .map(|j| j.as_ref());
    let mut records = schedule::runs_from_jobs(&name, &schedule, &nodes, mine);
    // The API server stamps Jobs in real time; a fast clock (tests, the demo) reads them on its
    // own time line, or a failure would wait for its backoff until the real date.
    for state in records.values_mut() {
        if let RunState::Running { started: t, .. } | RunState::Failed { at: t, .. } = state {
            *t = ctx.clock.clock_time_of(*t);
        }
    }
    let name_of = |run: RunId| -> RunName {
        let n = &nodes[run.node].topology;
        let entry = &schedule.entries[run.entry].name;
        (n.namespace.clone(), n.name.clone(), entry.clone(), run.date)
    };
    let oldest = calendar
        .date_of(now)
        .checked_sub(jiff::Span::new().days(schedule::LOOKBACK_DAYS + 1))
        .unwrap_or(Date::MIN);
    if !memory.seeded {
        memory.seeded = true;
        let kept = old
            .as_ref()
            .map(|s| s.unstarted.as_slice())
            .unwrap_or_default();
        for (run, state) in schedule::unstarted::from_status(kept) {
            memory.unjobbed.entry(run).or_insert(state);
        }
    }
    memory.unjobbed.retain(|(.., date), _| *date >= oldest);
    memory.reported.retain(|((.., date), _)| *date >= oldest);
    for ((namespace, node, entry, date), state) in &memory.unjobbed {
        let (Some(&node), Some(entry)) = (
            index.get(&(namespace.as_str(), node.as_str())),
            schedule.entry(entry),
        ) else {
            continue;
        };
        let run = RunId {
            node,
            entry,
            date: *date,
        };
        records.entry(run).or_insert(*state);
    }

    let decisions = schedule::decide(
        World {
            calendar: &calendar,
            schedule: &schedule,
            namespace: &ns,
            nodes: &nodes,
            records: &records,
            since: since.0,
        },
        now,
    );

    // Failures as observed, before this pass's retries replace them in `records`: a retry
    // whose backoff has already passed starts in the same pass that first sees the failure.
    for (run, state) in &records {
        if let RunState::Failed { attempt, .. } = state {
            let entry = &schedule.entries[run.entry];
            let given_up = *attempt > entry.retries.limit;
            let note = if given_up {
                format!("attempt {attempt} failed; no retry left")
            } else {
                format!("attempt {attempt} failed; retrying after the backoff")
            };
            let what = format!("RunFailed/{attempt}");
            let run = name_of(*run);
            if memory.reported.insert((run.clone(), what)) {
                publish(ctx, object, &run, *attempt, "RunFailed", true, note).await;
            }
        }
    }
    for run in &decisions.pending {
        memory.unjobbed.insert(name_of(*run), RunState::Pending);
        records.insert(*run, RunState::Pending);
    }
    for (run, why) in &decisions.skip {
        memory.unjobbed.insert(name_of(*run), RunState::Skipped);
        records.insert(*run, RunState::Skipped);
        let (reason, note) = match why {
            SkipReason::CatchUp => (
                "RunSkipped",
                "a day missed while the operator was away; the entry's catchUp does not run it",
            ),
            SkipReason::DeadlineMissed => {
                ("RunSkipped", "not started by its deadline (deadline Skip)")
            }
        };
        let warning = *why == SkipReason::DeadlineMissed;
        report(
            ctx,
            object,
            memory,
            name_of(*run),
            reason,
            warning,
            note.into(),
        )
        .await;
    }
    for key in &decisions.expire {
        end_attempt(ctx, key).await?;
        let run = (
            key.namespace.clone(),
            key.node.clone(),
            key.entry.clone(),
            key.date,
        );
        let note = format!(
            "{} ran out of its time; it counts as failed",
            key.job_name()
        );
        if memory
            .reported
            .insert((run.clone(), format!("RunTimedOut/{}", key.attempt)))
        {
            publish(ctx, object, &run, key.attempt, "RunTimedOut", true, note).await;
        }
    }
    for start in &decisions.start {
        let entry = &schedule.entries[start.run.entry];
        let node = &objects[start.run.node];
        let deployment = ctx.deployments.get(
            &kube::runtime::reflector::ObjectRef::new(&node.name_any())
                .within(&node.namespace().unwrap_or_default()),
        );
        let node = crate::program::with_image(node, deployment.as_deref(), None, 0);
        let job = schedule::job(&node, &pod_context(ctx), &name, entry, &start.key);
        create_job(ctx, &start.key.namespace, &job).await?;
        records.insert(
            start.run,
            RunState::Running {
                attempt: start.key.attempt,
                started: now,
            },
        );
        memory.unjobbed.remove(&name_of(start.run));
    }
    for late in decisions.late.iter().filter(|l| l.missed) {
        let note = format!(
            "not done by its deadline {} (deadline {:?})",
            late.deadline, late.policy
        );
        report(
            ctx,
            object,
            memory,
            name_of(late.run),
            "RunLate",
            true,
            note,
        )
        .await;
    }
    ctx.holds.set(&uid, holds(&nodes, &schedule, &decisions));

    let summary = schedule::summarize(&schedule, &nodes, &records, &decisions, STATUS_RUNS);
    // What a restart could not tell from missed days: skipped days, and waiting ones past
    // their deadline (the others are judged again as they were).
    let past_deadline: HashSet<RunName> = decisions
        .late
        .iter()
        .filter(|l| l.missed)
        .map(|l| name_of(l.run))
        .collect();
    let unstarted = schedule::unstarted::to_status(memory.unjobbed.iter().filter_map(
        |(run, state)| match state {
            RunState::Skipped => Some((run, UnstartedState::Skipped)),
            RunState::Pending if past_deadline.contains(run) => {
                Some((run, UnstartedState::Waiting))
            }
            _ => None,
        },
    ));
    status = JobScheduleStatus {
        since: status.since,
        observed_generation: status.observed_generation,
        unstarted,
        ..summary
    };
    let (reason, message) = if warnings.is_empty() {
        ("Valid", "the schedule passed validation".to_string())
    } else {
        ("ValidWithWarnings", warnings.join("; "))
    };
    status.conditions = vec![valid(object, old.as_ref(), true, reason, message, now)];
    ctx.metrics.set_schedule_runs(
        &ns,
        &name,
        i64::from(status.running),
        i64::from(status.late),
        i64::from(status.failed),
    );
    super::patch_status(&api, &name, old.as_ref(), &status, ctx).await?;
    ctx.metrics
        .reconcile("JobSchedule", started.elapsed().as_secs_f64(), None);
    Ok(decisions.wake_at)
}

/// The nodes held at their next start, with why.
fn holds(
    nodes: &[ScheduleNode],
    schedule: &Schedule,
    decisions: &Decisions,
) -> HashMap<ObjectRef<JukiNode>, String> {
    let mut out = HashMap::new();
    for (node, run) in &decisions.holds {
        let n = &nodes[*node].topology;
        let entry = &schedule.entries[run.entry].name;
        let on = &nodes[run.node].topology;
        out.entry(ObjectRef::new(&n.name).within(&n.namespace))
            .or_insert_with(|| {
                format!(
                    "held by the scheduled run {entry} of {} on {}/{} (deadline HoldStart): it is not done",
                    run.date, on.namespace, on.name
                )
            });
    }
    out
}

/// What a schedule Job needs of the node's resources: its pod parts only.
fn pod_context(ctx: &Context) -> resources::Context<'static> {
    resources::Context {
        calendar_json: &serde_json::Value::Null,
        extensions_json: &serde_json::Value::Null,
        upstream_url: None,
        node_clock: None,
        delivery_keys: None,
        otlp_endpoint: None,
        sqlite_volume: ctx.settings.sqlite_volume,
    }
}

async fn create_job(ctx: &Context, namespace: &str, job: &Job) -> Result<(), Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    ctx.metrics.api_write("Job");
    match api.create(&PostParams::default(), job).await {
        Ok(_) => Ok(()),
        // Named by its run key: this attempt exists already (made before a restart).
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(Error::Job {
            what: format!("creating Job {namespace}/{}", job.name_any()),
            source,
        }),
    }
}

/// Ends an attempt past its timeout on the operator's clock: the Job controller fails it
/// (DeadlineExceeded) and the Job stays as the record of the failed attempt.
async fn end_attempt(ctx: &Context, key: &RunKey) -> Result<(), Error> {
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &key.namespace);
    ctx.metrics.api_write("Job");
    let patch = serde_json::json!({"spec": {"activeDeadlineSeconds": 1}});
    match api
        .patch(
            &key.job_name(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(source) => Err(Error::Job {
            what: format!("ending Job {}/{}", key.namespace, key.job_name()),
            source,
        }),
    }
}

/// Publishes an Event about a run once.
async fn report(
    ctx: &Context,
    object: &JobSchedule,
    memory: &mut Memory,
    run: RunName,
    reason: &str,
    warning: bool,
    note: String,
) {
    if memory.reported.insert((run.clone(), reason.to_string())) {
        publish(ctx, object, &run, 1, reason, warning, note).await;
    }
}

/// An Event on the schedule about one attempt of a run. Its related object is the attempt's Job
/// (by the name it has or would have): Events about different runs are kept apart, where the
/// recorder would fold them into the first one's series and lose their messages.
async fn publish(
    ctx: &Context,
    object: &JobSchedule,
    run: &RunName,
    attempt: u32,
    reason: &str,
    warning: bool,
    note: String,
) {
    let (namespace, node, entry, date) = run;
    let job = ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        namespace: Some(namespace.clone()),
        name: Some(schedule::job_name(node, entry, *date, attempt)),
        ..ObjectReference::default()
    };
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(format!("{namespace}/{node} {entry} of {date}: {note}")),
        action: "Schedule".into(),
        secondary: Some(job),
    };
    ctx.metrics.api_write("Event");
    if let Err(e) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        tracing::debug!(error = %e, "could not publish an Event");
    }
}

/// The Valid condition, keeping its transition time while its status holds.
fn valid(
    object: &JobSchedule,
    old: Option<&JobScheduleStatus>,
    ok: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) -> Condition {
    let word = if ok { "True" } else { "False" };
    let previous = old.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Valid"));
    Condition {
        type_: "Valid".into(),
        status: word.into(),
        reason: reason.into(),
        message,
        last_transition_time: match previous {
            Some(c) if c.status == word => c.last_transition_time.clone(),
            _ => Time(now),
        },
        observed_generation: object.metadata.generation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FinalAnswerStatus, JukiNodeStatus};

    #[test]
    fn a_node_stopped_on_the_day_of_its_final_exchange_or_of_its_offline_phase() {
        let mut status = JukiNodeStatus {
            operating_date: Some("2026-11-27".into()),
            ..JukiNodeStatus::default()
        };
        let day = |d: &str| d.parse::<Date>().ok();
        assert_eq!(stopped_date(NodePhase::Offline, &status), day("2026-11-27"));
        assert_eq!(
            stopped_date(NodePhase::DailyBatch, &status),
            day("2026-11-27")
        );
        // Online again: that day's date is the window's, not a stop.
        assert_eq!(stopped_date(NodePhase::Online, &status), None);
        status.final_answer = Some(FinalAnswerStatus {
            date: "2026-11-30".into(),
            outcome: "Received".into(),
            message: String::new(),
        });
        assert_eq!(
            stopped_date(NodePhase::Stopping, &status),
            day("2026-11-30")
        );
    }
}
