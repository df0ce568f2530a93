//! The JukiNode controller: read → plan → apply → write status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use jiff::civil::Date;
use juki_calendar::Calendar;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::batch_slots::Turn;
use super::view::{Topology, extensions, extensions_covering, extensions_file, jobs_of, pods_of};
use super::{Context, Error, FinalExchange, Shared};
use crate::api::{
    FinalAnswerStatus, JukiNode, JukiNodeStatus, LastBatch, NextTransition, NodePhase,
    OperatingCalendar, ServiceExtension,
};
use crate::expected;
use crate::node_client;
use crate::planner::{Action, FinalAnswer, NodeView, Plan, UPDATES_HELD, check_online_end, plan};
use crate::resources::{self, MANAGER, SqliteVolume};
use crate::telemetry::NodeHealth;
use crate::topology::{Resolved, from_jukinode, may_be_neighbours};

/// The shared caches whose changes wake the node controller.
pub(super) struct Triggers {
    pub nodes: Shared<JukiNode>,
    pub calendars: Shared<OperatingCalendar>,
    pub extensions: Shared<ServiceExtension>,
    pub deployments: Shared<Deployment>,
    pub jobs: Shared<Job>,
    pub pods: Shared<Pod>,
    /// Deleted pods (the shared streams announce only applied objects).
    pub pod_deletions: futures::channel::mpsc::UnboundedReceiver<Pod>,
    /// Nodes whose turn for a batch slot has come.
    pub batch_wakes: futures::channel::mpsc::UnboundedReceiver<ObjectRef<JukiNode>>,
    /// Nodes a scheduled run began or ceased to hold at their next start.
    pub hold_wakes: futures::channel::mpsc::UnboundedReceiver<ObjectRef<JukiNode>>,
}

pub(super) async fn run(triggers: Triggers, ctx: Arc<Context>) {
    let Triggers {
        nodes,
        calendars,
        extensions,
        deployments,
        jobs,
        pods,
        pod_deletions,
        batch_wakes,
        hold_wakes,
    } = triggers;
    // A node's neighbours react to its phase changes: its downstream may start, its upstream may
    // stop. The cached topology holds every node already parsed, so this stays cheap at 1,789.
    let mapper_ctx = ctx.clone();
    // A neighbour reads only a node's place in the tree (its spec) and whether it is up or
    // stopped (its phase): a new reason or message is no news to it. Without this, every status
    // write at window open would wake all the nodes below.
    let seen = std::sync::Mutex::new(std::collections::HashMap::<ObjectRef<JukiNode>, _>::new());
    let neighbours = move |changed: Arc<JukiNode>| {
        let status = changed.status.as_ref();
        let phase = status.and_then(|s| s.phase);
        let failed_reason = status
            .filter(|_| phase == Some(NodePhase::Failed))
            .and_then(|s| s.reason.clone());
        let visible = (changed.metadata.generation, phase, failed_reason);
        let previous = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(ObjectRef::from_obj(changed.as_ref()), visible.clone());
        if previous.as_ref() == Some(&visible) {
            return Vec::new();
        }
        let topology = Topology::read(&mapper_ctx);
        let refs = |indices: Vec<usize>| {
            indices
                .into_iter()
                .map(|i| &topology.nodes[i])
                .map(|o| ObjectRef::new(&o.name).within(&o.namespace))
                .collect::<Vec<_>>()
        };
        // A spec change (an override Online pins the chain above) concerns every node above.
        let spec_changed = previous.as_ref().map(|p| p.0) != Some(changed.metadata.generation);
        if let Some(mut known) = topology.neighbours(&changed) {
            if spec_changed
                && let Some(i) = topology.index_of(
                    changed.metadata.namespace.as_deref().unwrap_or_default(),
                    changed.metadata.name.as_deref().unwrap_or_default(),
                )
            {
                known.extend(topology.above(i));
            }
            return refs(known);
        }
        // A node the topology does not know yet (or not with this spec): every node it may
        // concern, by tier and prefecture or by name.
        let Ok((changed, _)) = from_jukinode(&changed, "default") else {
            return Vec::new();
        };
        refs(
            (0..topology.nodes.len())
                .filter(|&i| may_be_neighbours(&topology.nodes[i], &changed))
                .collect(),
        )
    };
    let store = nodes.store.clone();
    let all_nodes = move || {
        store
            .state()
            .iter()
            .map(|n| ObjectRef::from_obj(n.as_ref()))
            .collect::<Vec<_>>()
    };
    let for_extension = {
        let all_nodes = all_nodes.clone();
        move |_: Arc<ServiceExtension>| all_nodes()
    };
    let store = nodes.store.clone();
    // Nodes read a calendar's spec, not the status its own controller writes (at start and at
    // midnight): only a new generation (or a new calendar of that name) wakes the 1,789 nodes that use it.
    let calendar_generations = std::sync::Mutex::new(std::collections::HashMap::new());
    let for_calendar = move |c: Arc<OperatingCalendar>| {
        let name = c.metadata.name.clone().unwrap_or_default();
        let previous = calendar_generations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                name.clone(),
                (c.metadata.uid.clone(), c.metadata.generation),
            );
        if previous.as_ref() == Some(&(c.metadata.uid.clone(), c.metadata.generation)) {
            return Vec::new();
        }
        store
            .state()
            .iter()
            .filter(|n| n.spec.calendar == name)
            .map(|n| ObjectRef::from_obj(n.as_ref()))
            .collect::<Vec<_>>()
    };
    // Pods name their node in a label (they are owned by ReplicaSets, not by the node). A batch
    // Job's pods are left out: their Job's own changes wake the node, and at the stop wave the
    // ~4 changes of each of 3,600 Job pods would be that many more reconciles.
    let for_pod = |p: Arc<Pod>| {
        if p.labels().contains_key(resources::BATCH_LABEL) {
            return None;
        }
        let node = p.labels().get(resources::NODE_LABEL).cloned();
        node.map(|n| ObjectRef::new(&n).within(&p.namespace().unwrap_or_default()))
    };
    Controller::for_shared_stream(nodes.changes.clone(), nodes.store.clone())
        .owns_shared_stream(deployments.changes)
        .owns_shared_stream(jobs.changes)
        .watches_shared_stream(pods.changes, for_pod)
        .reconcile_on(pod_deletions.filter_map(move |p| async move { for_pod(Arc::new(p)) }))
        .reconcile_on(batch_wakes)
        .reconcile_on(hold_wakes)
        .watches_shared_stream(nodes.changes, neighbours)
        .watches_shared_stream(extensions.changes, for_extension)
        .watches_shared_stream(calendars.changes, for_calendar)
        .with_config(controller::Config::default().concurrency(ctx.settings.concurrency))
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile error");
            }
        })
        .await;
}

fn error_policy(_node: Arc<JukiNode>, error: &Error, ctx: Arc<Context>) -> Requeue {
    tracing::warn!(%error, "JukiNode reconcile failed; retrying");
    ctx.metrics.reconcile("JukiNode", 0.0, false);
    Requeue::requeue(Duration::from_secs(2))
}

async fn reconcile(node: Arc<JukiNode>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&node, &ctx).await;
    if result.is_ok() {
        ctx.metrics
            .reconcile("JukiNode", started.elapsed().as_secs_f64(), true);
    }
    result
}

async fn reconcile_inner(node: &JukiNode, ctx: &Context) -> Result<Requeue, Error> {
    if node.metadata.deletion_timestamp.is_some() {
        ctx.batch_slots.forget(&ObjectRef::from_obj(node));
        return Ok(Requeue::await_change());
    }
    let now = ctx.clock.now();
    let ns = node.namespace().unwrap_or_default();
    let name = node.name_any();
    let status = node.status.clone().unwrap_or_default();

    // An invalid calendar or own online end does not freeze a node: it keeps planning with the
    // last valid one, and the invalid one is reported (condition SpecValid, a warning Event).
    let (calendar, calendar_json, calendar_problem) =
        match ctx.last_valid.calendar(ctx, &node.spec.calendar) {
            Ok(c) => c,
            Err(message) => {
                let reason = "CalendarUnavailable";
                return invalid(node, ctx, &status, None, reason, message, now).await;
            }
        };
    let mut problem = calendar_problem.map(|p| ("InvalidCalendar", p));
    let topology = Topology::read(ctx);
    let Some(me) = topology.index_of(&ns, &name) else {
        let message = crate::topology::from_jukinode(node, "default")
            .err()
            .unwrap_or_else(|| "not in the node cache yet".into());
        return invalid(
            node,
            ctx,
            &status,
            Some(&calendar),
            "InvalidSpec",
            message,
            now,
        )
        .await;
    };
    let running = !matches!(
        status.phase.unwrap_or(NodePhase::Offline),
        NodePhase::Offline | NodePhase::Failed
    ) || pods_of(ctx, &ns, &name).0 > 0;
    let current_end = topology.online_ends[me];
    let online_end = match ctx.last_valid.online_end_to_plan_with(
        (&ns, &name),
        current_end,
        check_online_end(&calendar, node.spec.tier, current_end),
        running,
    ) {
        Ok((end, spec_problem)) => {
            if let Some(p) = spec_problem {
                problem = Some(("InvalidSpec", p));
            }
            end
        }
        Err(message) => {
            let reason = "InvalidSpec";
            return invalid(node, ctx, &status, Some(&calendar), reason, message, now).await;
        }
    };
    if let Some(p) = topology.upstream_problems[me].clone() {
        problem = Some(match problem {
            Some((_, earlier)) => ("InvalidSpec", format!("{earlier}; {p}")),
            None => ("InvalidSpec", p),
        });
    }
    if topology.resolved[me] == Resolved::Invalid {
        let message = crate::topology::upstream_problem(&topology.nodes, me)
            .unwrap_or_else(|| "spec.upstream is invalid".into());
        return invalid(
            node,
            ctx,
            &status,
            Some(&calendar),
            "InvalidSpec",
            message,
            now,
        )
        .await;
    }

    let evaluations = extensions(ctx, &calendar, &topology, now);
    let covering = extensions_covering(&evaluations, me);
    let extensions_json = extensions_file(ctx, &evaluations, &topology, me);
    let jobs = jobs_of(ctx, &ns, &name);
    let deployment = ctx.deployments.get(&ObjectRef::new(&name).within(&ns));
    if behind_own_writes(node, deployment.as_deref(), ctx) {
        // A safety net only: the write's own event comes first.
        return Ok(Requeue::requeue(Duration::from_secs(2)));
    }
    let ready = deployment
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        .max(pods_of(ctx, &ns, &name).1);
    let phase = status.phase.unwrap_or(NodePhase::Offline);
    let operating_date = status
        .operating_date
        .as_deref()
        .and_then(|d| d.parse::<Date>().ok());
    let final_answer = match &status.final_answer {
        Some(f)
            if phase == NodePhase::Draining
                && Some(f.date.as_str()) == status.operating_date.as_deref() =>
        {
            match f.outcome.as_str() {
                "Failed" => FinalAnswer::Failed(f.message.clone()),
                "Held" => FinalAnswer::Held(f.message.clone()),
                _ => FinalAnswer::Done,
            }
        }
        _ => FinalAnswer::NotRequested,
    };
    let pod_check_due = phase == NodePhase::Stopping
        && status
            .phase_since
            .as_ref()
            .is_some_and(|t| now.duration_since(t.0) >= ctx.clock.clock_duration(POD_CHECK_AFTER));
    let held = ctx.holds.of(&ObjectRef::from_obj(node));
    let view = NodeView {
        tier: node.spec.tier,
        prefecture: topology.nodes[me].prefecture,
        online_end,
        replicas: node.spec.replicas,
        suspend: node.spec.suspend,
        manual_override: node
            .spec
            .manual_override
            .as_ref()
            .map(|o| (o.phase, o.until.0)),
        pinned_below: topology.pinned_below(ctx, me, now),
        extensions: &covering,
        held: held.as_deref(),
        phase,
        phase_since: status.phase_since.as_ref().map(|t| t.0),
        reason: status.reason.as_deref(),
        ready_replicas: ready,
        pods: pods_now(ctx, &ns, &name, pod_check_due).await,
        upstream: topology.resolved[me].state(|i| topology.phase(ctx, i)),
        downstream_offline: topology
            .downstream(me)
            .iter()
            .all(|&i| topology.stopped(ctx, i)),
        final_answer,
        jobs: &jobs,
        last_batch_date: status.last_batch.as_ref().and_then(|b| b.date.parse().ok()),
        readiness_timeout: ctx.clock.clock_duration(ctx.settings.readiness_timeout),
        waiting_grace: ctx.clock.clock_duration(crate::planner::WAITING_GRACE),
    };
    let plan = with_batch_slot(ctx, &ObjectRef::from_obj(node), plan(&calendar, &view, now));
    // The Deployment's status lags its pods: with none left, none is ready.
    let ready = if plan.replicas == Some(0) && view.pods == 0 {
        0
    } else {
        ready
    };
    tracing::debug!(node = %format!("{ns}/{name}"), %now, ?phase, planned = ?plan.phase, reason = plan.reason, upstream = ?view.upstream, ready, "planned");

    let upstream_name = match topology.resolved[me] {
        Resolved::Node(i) => Some(format!(
            "{}/{}",
            topology.nodes[i].namespace, topology.nodes[i].name
        )),
        _ => None,
    };
    let upstream_url = match topology.resolved[me] {
        Resolved::Node(i) => Some(resources::service_url(
            &topology.nodes[i].name,
            &topology.nodes[i].namespace,
            topology.nodes[i].tls,
        )),
        _ => None,
    };
    let rctx = resources::Context {
        calendar_json: &calendar_json,
        extensions_json: &extensions_json,
        upstream_url,
        sqlite_volume: ctx.settings.sqlite_volume,
        node_clock: ctx.clock.shared(),
    };
    let scale = async {
        match plan.replicas {
            Some(replicas) => ensure_owned(node, ctx, &rctx, deployment.as_deref(), replicas).await,
            None => Ok(()),
        }
    };
    let status_for = |final_answer| {
        let mut s = next_status(
            node,
            &status,
            &plan,
            &calendar,
            now,
            ready,
            upstream_name.clone(),
            final_answer,
        );
        spec_validity(&mut s, problem.as_ref(), now);
        s
    };
    let write = |new_status| write_if_changed(node, ctx, plan.defer_status, new_status);
    let new_status = match &plan.action {
        // A start or a stop is a replica patch and a status write that need nothing of each
        // other: both at once, one round trip instead of two.
        Action::None => {
            let (scaled, written) =
                tokio::join!(scale, write(status_for(status.final_answer.clone())));
            scaled?;
            written?
        }
        Action::FinalRequest => {
            scale.await?;
            let date = plan
                .operating_date
                .or(operating_date)
                .map(|d| d.to_string())
                .unwrap_or_default();
            let answer = final_exchange(ctx, &ns, &name, node.spec.tls.is_some(), date).await;
            write(status_for(Some(answer))).await?
        }
        Action::CreateJob { batch, date } => {
            scale.await?;
            create_job(node, ctx, &rctx, batch, *date).await?;
            write(status_for(status.final_answer.clone())).await?
        }
    };
    let recheck = show_health(ctx, node, Some(&calendar), &view, &new_status, now);
    // Counted once per recorded outcome: a catch-up records each date on its way, in DailyBatch.
    if new_status.last_batch != status.last_batch {
        for (batch, outcome) in batch_outcomes(&plan, &calendar, node.spec.tier, &jobs) {
            ctx.metrics.batch(node.spec.tier.as_str(), &batch, outcome);
        }
    }
    let warning = matches!(plan.phase, NodePhase::Failed)
        || plan.reason.starts_with("Upstream")
        || plan.reason == "Degraded"
        || plan.reason == "MissedNight"
        || plan.reason == UPDATES_HELD;
    if new_status.phase != status.phase
        && let Some(from) = status.phase
    {
        ctx.metrics.transition(
            node.spec.tier.as_str(),
            &format!("{from:?}"),
            &format!("{:?}", plan.phase),
        );
        let overridden = node
            .spec
            .manual_override
            .as_ref()
            .is_some_and(|o| o.until.0 > now);
        let batches_ran = plan
            .operating_date
            .is_some_and(|d| !calendar.batch_runs_for(node.spec.tier, d).is_empty());
        let notable = notable(plan.reason) && (plan.reason != "BatchSucceeded" || batches_ran);
        if ctx.settings.transition_events || warning || overridden || notable {
            publish(
                node,
                ctx,
                warning,
                plan.reason,
                format!("{from:?} → {:?}: {}", plan.phase, plan.message),
            )
            .await;
        }
    } else if (warning
        || plan.reason == "Suspended"
        || status.reason.as_deref() == Some("Suspended"))
        && status.reason.as_deref() != Some(plan.reason)
    {
        // A new node that cannot start, a new reason for waiting, a suspension or its end:
        // worth one Event too.
        publish(node, ctx, warning, plan.reason, plan.message.clone()).await;
    }
    // An invalid edit planned around: one warning Event per new problem.
    if let Some((reason, message)) = &problem
        && spec_problem(&status) != Some(message.as_str())
    {
        publish(node, ctx, true, reason, message.clone()).await;
    }
    // Catch-up batches (a day missed while the operator was away) are worth their own Event:
    // those started from Offline, and those of a date before the last ended window's.
    if let Action::CreateJob { batch, date } = &plan.action
        && (phase == NodePhase::Offline
            || crate::planner::last_ended_window(&calendar, &view, now)
                .is_some_and(|w| w.date > *date))
    {
        publish(
            node,
            ctx,
            false,
            "CatchUpBatch",
            format!("running missed batch {batch} of {date}"),
        )
        .await;
    }

    // A grace or a deadline of the monitoring passing is an edge too.
    let wake_at = match (plan.wake_at, recheck) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut wait = wake_at
        .map_or(ctx.settings.max_requeue, |at| ctx.clock.real_until(at))
        .min(ctx.settings.max_requeue);
    // Pod deletions wake the node; this look-again is only a safety net for a missed one, and
    // once the pods are checked on the API server, once per check.
    if plan.phase == NodePhase::Stopping {
        wait = wait.min(if pod_check_due {
            POD_CHECK_AFTER
        } else {
            ctx.settings.transition_poll
        });
    }
    Ok(Requeue::requeue(wait.max(Duration::from_millis(20))))
}

/// The plan as the batch slots (`--max-batch-nodes`) allow it: a Job the node may not create yet
/// waits its turn. Stopping is told first, so a node leaving it makes room before it asks.
fn with_batch_slot(ctx: &Context, key: &ObjectRef<JukiNode>, plan: Plan) -> Plan {
    let slots = &ctx.batch_slots;
    slots.stopping(key, plan.phase == NodePhase::Stopping);
    match (&plan.action, plan.phase) {
        (Action::CreateJob { .. }, _) => {
            if slots.take(key) != Turn::Go {
                return plan.queued_for_batch();
            }
        }
        // Its Job runs (maybe made before a restart): it holds a slot whatever the count.
        (_, NodePhase::DailyBatch) if plan.reason == "BatchRunning" => slots.hold(key),
        (_, NodePhase::DailyBatch) => {}
        _ => slots.release(key),
    }
    plan
}

/// How long a node may be Stopping before its cached pods are checked on the API server: pods
/// get 30 s to terminate by default, and the check is only a safety net.
const POD_CHECK_AFTER: Duration = Duration::from_secs(30);

/// The node's pods from the cache; when the check is due (Stopping longer than
/// [`POD_CHECK_AFTER`]), those of them the API server still has. A pod cache that missed a
/// deletion (a watch that broke under load and was not yet re-listed) held 208 nodes in Stopping
/// at full size. Each cached pod is read by name: a list by label instead made the API server
/// read every pod of the namespace, for each of 1,741 stopping nodes every poll, and slowed the
/// whole stop wave.
async fn pods_now(ctx: &Context, ns: &str, name: &str, check_due: bool) -> i32 {
    let (cached, _) = pods_of(ctx, ns, name);
    if cached == 0 || !check_due {
        return cached;
    }
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let mut still_there = 0;
    for pod in ctx.pods_by_node.names(ns, name) {
        match api.get_metadata_opt(&pod).await {
            Ok(None) => {}
            Ok(Some(_)) => still_there += 1,
            Err(e) => {
                tracing::debug!(error = %e, "could not read a pod of a stopping node");
                return cached;
            }
        }
    }
    still_there
}

/// Phase changes worth an Event whatever `--transition-events` says: the day's batch outcome and a
/// stop without a final answer. Routine changes (Starting, Online, Draining, …) are in status and
/// the transition metric; as Events they would be some 10,000 a day at full size and a third of
/// the operator's API writes.
fn notable(reason: &str) -> bool {
    matches!(
        reason,
        "BatchSucceeded" | "BatchFailed" | "FinalAnswerFailed" | UPDATES_HELD | "ReadinessTimeout"
    )
}

/// An unusable spec: say why in status and an Event, touch nothing else, wait for a change.
async fn invalid(
    node: &JukiNode,
    ctx: &Context,
    status: &JukiNodeStatus,
    calendar: Option<&Calendar>,
    reason: &'static str,
    message: String,
    now: Timestamp,
) -> Result<Requeue, Error> {
    let mut new_status = status.clone();
    new_status.phase = Some(NodePhase::Failed);
    new_status.reason = Some(reason.into());
    new_status.message = Some(message.clone());
    new_status.observed_generation = node.metadata.generation;
    set_condition(
        &mut new_status.conditions,
        "Ready",
        false,
        reason,
        &message,
        now,
    );
    if status.phase != Some(NodePhase::Failed) {
        new_status.phase_since = Some(Time(now));
    }
    if Some(&new_status) != node.status.as_ref() {
        write_status(node, ctx, &new_status).await?;
        publish(node, ctx, true, reason, message).await;
    }
    let prefecture = prefecture_label(node).parse().ok();
    let view = NodeView {
        suspend: node.spec.suspend,
        ..NodeView::bare(node.spec.tier, prefecture, None)
    };
    show_health(ctx, node, calendar, &view, &new_status, now);
    Ok(Requeue::requeue(ctx.settings.max_requeue))
}

/// The `prefecture` label of a node: "01".."47", empty for the national node. Read from the
/// spec as written, so an invalid node is labelled too.
fn prefecture_label(node: &JukiNode) -> String {
    let spec = &node.spec;
    spec.prefecture
        .clone()
        .or_else(|| {
            spec.municipality
                .as_ref()
                .and_then(|m| m.get(..2))
                .map(str::to_string)
        })
        .unwrap_or_default()
}

/// How long a stop wave may take in real time before it is late (see [`expected::Thresholds`]).
const STOP_BUDGET: Duration = Duration::from_secs(60 * 60);

/// Shows on `/metrics` what the node should be doing and its faults, given the status just
/// decided (`view` gives the window-shaping facts; its phase and batch facts are taken from
/// `status`). Returns when a fault may appear with time alone.
fn show_health(
    ctx: &Context,
    node: &JukiNode,
    calendar: Option<&Calendar>,
    view: &NodeView<'_>,
    status: &JukiNodeStatus,
    now: Timestamp,
) -> Option<Timestamp> {
    let observed = expected::Observed::of(status);
    let view = expected::with_status(view, status);
    let thresholds = expected::Thresholds {
        grace: ctx
            .clock
            .clock_duration(ctx.settings.readiness_timeout + crate::planner::WAITING_GRACE),
        stop_budget: ctx.clock.clock_duration(STOP_BUDGET),
        ..expected::Thresholds::default()
    };
    let assessment = expected::assess(calendar, &view, &observed, &thresholds, now);
    ctx.metrics.set_node_health(NodeHealth {
        namespace: node.namespace().unwrap_or_default(),
        node: node.name_any(),
        tier: node.spec.tier.as_str().into(),
        prefecture: prefecture_label(node),
        expected_online: assessment.expected.is_online(),
        phase: format!("{:?}", view.phase),
        faults: assessment
            .faults
            .iter()
            .map(|f| f.fault.as_str().to_string())
            .collect(),
    });
    assessment.recheck_at
}

#[allow(clippy::too_many_arguments)]
fn next_status(
    node: &JukiNode,
    old: &JukiNodeStatus,
    plan: &Plan,
    calendar: &Calendar,
    now: Timestamp,
    ready: i32,
    upstream: Option<String>,
    final_answer: Option<FinalAnswerStatus>,
) -> JukiNodeStatus {
    let mut s = old.clone();
    let changed = s.phase != Some(plan.phase);
    s.phase = Some(plan.phase);
    s.reason = Some(plan.reason.into());
    s.message = Some(plan.message.clone());
    s.observed_generation = node.metadata.generation;
    s.ready_replicas = ready;
    s.upstream = upstream;
    s.next_transition = plan.next.map(|(at, phase)| NextTransition {
        at: Time(at),
        phase,
    });
    if changed {
        s.phase_since = Some(Time(now));
    }
    if plan.operating_date.is_some() {
        s.operating_date = plan.operating_date.map(|d| d.to_string());
    }
    s.final_answer = final_answer;
    if let Some((date, outcome)) = recorded_batch(plan) {
        let batches = calendar
            .batch_runs_for(node.spec.tier, date)
            .iter()
            .map(|r| r.batch.name.clone())
            .collect();
        s.last_batch = Some(LastBatch {
            date: date.to_string(),
            outcome: outcome.into(),
            batches,
        });
    }
    // Ready: Online with every replica ready (Degraded is Online without them).
    let online = plan.phase == NodePhase::Online && ready >= node.spec.replicas;
    set_condition(
        &mut s.conditions,
        "Ready",
        online,
        plan.reason,
        &plan.message,
        now,
    );
    let in_window = matches!(plan.phase, NodePhase::Starting | NodePhase::Online)
        || plan.reason == "WaitingForUpstream";
    set_condition(
        &mut s.conditions,
        "InWindow",
        in_window,
        if in_window {
            "WindowOpen"
        } else {
            "OutsideWindow"
        },
        "",
        now,
    );
    let upstream_ok = !matches!(
        plan.reason,
        "UpstreamMissing" | "UpstreamAmbiguous" | "WaitingForUpstream"
    );
    let up_reason = if upstream_ok {
        "UpstreamResolved"
    } else {
        plan.reason
    };
    set_condition(
        &mut s.conditions,
        "UpstreamReady",
        upstream_ok,
        up_reason,
        if upstream_ok { "" } else { &plan.message },
        now,
    );
    if let Some(last) = &s.last_batch {
        let ok = last.outcome == "Succeeded";
        set_condition(
            &mut s.conditions,
            "BatchSucceeded",
            ok,
            if ok { "BatchSucceeded" } else { "BatchFailed" },
            &format!("batches of {}", last.date),
            now,
        );
    }
    s
}

/// The date and outcome a plan records in `status.lastBatch`: a failed batch's date, else the
/// date whose batches it records as done (also on the way through a catch-up).
fn recorded_batch(plan: &Plan) -> Option<(Date, &'static str)> {
    match (plan.reason, plan.operating_date, plan.batches_done) {
        ("BatchFailed", Some(date), _) => Some((date, "Failed")),
        (_, _, Some(date)) => Some((date, "Succeeded")),
        _ => None,
    }
}

/// The batches whose outcome a plan records (see [`recorded_batch`]), by name: the failed one,
/// or every batch of the date done; none for any other plan.
fn batch_outcomes(
    plan: &Plan,
    calendar: &Calendar,
    tier: juki_calendar::Tier,
    jobs: &[(String, Date, crate::planner::JobState)],
) -> Vec<(String, &'static str)> {
    match recorded_batch(plan) {
        Some((date, "Failed")) => jobs
            .iter()
            .filter(|(_, d, s)| *d == date && *s == crate::planner::JobState::Failed)
            .map(|(name, _, _)| (name.clone(), "Failed"))
            .collect(),
        Some((date, outcome)) => calendar
            .batch_runs_for(tier, date)
            .iter()
            .map(|r| (r.batch.name.clone(), outcome))
            .collect(),
        None => Vec::new(),
    }
}

/// Sets the SpecValid condition: False with the reason and message of an invalid calendar or
/// spec the node is planned around; True again once it is valid.
fn spec_validity(s: &mut JukiNodeStatus, problem: Option<&(&str, String)>, now: Timestamp) {
    match problem {
        Some((reason, message)) => {
            set_condition(&mut s.conditions, "SpecValid", false, reason, message, now);
        }
        // Shown once there was a problem; no condition (and no write) for the nodes never invalid.
        None if s.conditions.iter().any(|c| c.type_ == "SpecValid") => {
            set_condition(&mut s.conditions, "SpecValid", true, "Valid", "", now);
        }
        None => {}
    }
}

/// The message of a False SpecValid condition.
fn spec_problem(s: &JukiNodeStatus) -> Option<&str> {
    s.conditions
        .iter()
        .find(|c| c.type_ == "SpecValid" && c.status == "False")
        .map(|c| c.message.as_str())
}

/// The top-level status fields that differ, for the debug log of why a status is written.
fn changed_fields(old: Option<&JukiNodeStatus>, new: &JukiNodeStatus) -> Vec<String> {
    let old = serde_json::to_value(old).unwrap_or_default();
    let new = serde_json::to_value(new).unwrap_or_default();
    let empty = serde_json::Map::new();
    let (o, n) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    n.keys()
        .chain(o.keys())
        .filter(|k| o.get(*k) != n.get(*k))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Sets a condition; lastTransitionTime changes only when the status does.
fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let status = if ok { "True" } else { "False" }.to_string();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status;
            c.reason = reason.into();
            c.message = message.into();
        }
        None => conditions.push(Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(now),
            observed_generation: None,
        }),
    }
}

/// Writes `new_status` unless the plan defers it or it is what the node already has; returns it.
async fn write_if_changed(
    node: &JukiNode,
    ctx: &Context,
    defer: bool,
    new_status: JukiNodeStatus,
) -> Result<JukiNodeStatus, Error> {
    if !defer && Some(&new_status) != node.status.as_ref() {
        tracing::debug!(node = %ObjectRef::from_obj(node), changed = ?changed_fields(node.status.as_ref(), &new_status), "status write");
        write_status(node, ctx, &new_status).await?;
    }
    Ok(new_status)
}

async fn write_status(
    node: &JukiNode,
    ctx: &Context,
    status: &JukiNodeStatus,
) -> Result<(), Error> {
    let ns = node.namespace().unwrap_or_default();
    let name = node.name_any();
    let api: Api<JukiNode> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(after) = super::patch_status(&api, &name, node.status.as_ref(), status, ctx).await?
    {
        let before = node.metadata.resource_version.as_deref();
        ctx.own_writes
            .wrote(NODE_KIND, &ns, &name, before, Some(after.as_str()));
    }
    Ok(())
}

const NODE_KIND: &str = "JukiNode";
const DEPLOYMENT_KIND: &str = "Deployment";

/// Whether the cached node or its Deployment predates a write of this operator: its watch event
/// is on its way and wakes the node again, so planning from the old copy now would plan (and
/// write) the same transition twice.
fn behind_own_writes(node: &JukiNode, deployment: Option<&Deployment>, ctx: &Context) -> bool {
    let ns = node.namespace().unwrap_or_default();
    let name = node.name_any();
    let node_rv = node.metadata.resource_version.as_deref();
    let deployment_rv = deployment.and_then(|d| d.metadata.resource_version.as_deref());
    ctx.own_writes.is_stale(NODE_KIND, &ns, &name, node_rv)
        || ctx
            .own_writes
            .is_stale(DEPLOYMENT_KIND, &ns, &name, deployment_rv)
}

async fn publish(node: &JukiNode, ctx: &Context, warning: bool, reason: &str, note: String) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    ctx.metrics.api_write("Event");
    if let Err(e) = ctx.recorder.publish(&event, &node.object_ref(&())).await {
        tracing::debug!(error = %e, "could not publish an Event");
    }
}

/// Server-side applies an object when it is missing or its content hash changed.
async fn apply_if_changed<K>(
    api: &Api<K>,
    object: &mut K,
    observed_hash: Option<&str>,
    kind: &str,
    ctx: &Context,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let hash = content_hash(object);
    if observed_hash == Some(hash.as_str()) {
        return Ok(());
    }
    apply_with_hash(api, object, hash, kind, ctx).await?;
    Ok(())
}

/// Server-side applies an object, recording `hash` in its content-hash annotation.
async fn apply_with_hash<K>(
    api: &Api<K>,
    object: &mut K,
    hash: String,
    kind: &str,
    ctx: &Context,
) -> Result<K, Error>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    object
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(HASH_ANNOTATION.into(), hash);
    let name = object.meta().name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(&*object).unwrap_or_default();
    value["apiVersion"] = json!(K::api_version(&()));
    value["kind"] = json!(K::kind(&()));
    ctx.metrics.api_write(kind);
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(value),
    )
    .await
    .map_err(Error::api(format!("{kind} {name}")))
}

const HASH_ANNOTATION: &str = "jukinet.io/content-hash";

fn content_hash<K: serde::Serialize>(object: &K) -> String {
    let text = serde_json::to_string(object).unwrap_or_default();
    let hash = text.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    format!("{hash:016x}")
}

fn observed_hash<K: Resource>(object: Option<&K>) -> Option<String> {
    object
        .and_then(|o| o.meta().annotations.as_ref())
        .and_then(|a| a.get(HASH_ANNOTATION).cloned())
}

/// The ConfigMap, Service (and data claim) exist and are current; the Deployment has `replicas`.
async fn ensure_owned(
    node: &JukiNode,
    ctx: &Context,
    rctx: &resources::Context<'_>,
    deployment: Option<&Deployment>,
    replicas: i32,
) -> Result<(), Error> {
    let ns = node.namespace().unwrap_or_default();
    // The config and the Service change rarely: their hash rides on the Deployment so that a
    // steady-state reconcile writes nothing.
    let mut config = resources::config_map(node, rctx);
    let mut service = resources::service(node);
    let claim = rctx.sqlite_volume == SqliteVolume::Pvc;
    let support_hash = content_hash(&(&config, &service, claim));
    // Only what the pods read once at start rolls them (node.json, the data claim). The calendar
    // does not: an OperatingCalendar edit must not restart every node mid-day, and the node
    // service reads calendar.json again when the kubelet updates the mounted ConfigMap.
    let node_json = config.data.as_ref().and_then(|d| d.get("node.json"));
    let restart_hash = content_hash(&(node_json, claim));
    let observed_support = deployment
        .and_then(|d| d.metadata.annotations.as_ref())
        .and_then(|a| a.get(SUPPORT_ANNOTATION).cloned());
    if observed_support.as_deref() != Some(support_hash.as_str()) {
        apply_if_changed(
            &Api::<ConfigMap>::namespaced(ctx.client.clone(), &ns),
            &mut config,
            None,
            "ConfigMap",
            ctx,
        )
        .await?;
        apply_if_changed(
            &Api::<Service>::namespaced(ctx.client.clone(), &ns),
            &mut service,
            None,
            "Service",
            ctx,
        )
        .await?;
        if rctx.sqlite_volume == SqliteVolume::Pvc
            && node.spec.database.kind == crate::api::DatabaseKind::Sqlite
        {
            let mut claim = resources::data_claim(node);
            apply_if_changed(
                &Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &ns),
                &mut claim,
                None,
                "PersistentVolumeClaim",
                ctx,
            )
            .await?;
        }
    }
    let mut desired = resources::deployment(node, rctx, replicas);
    if let Some(template) = desired.spec.as_mut().map(|s| &mut s.template) {
        template
            .metadata
            .get_or_insert_with(Default::default)
            .annotations
            .get_or_insert_with(Default::default)
            .insert(RESTART_ANNOTATION.into(), restart_hash);
    }
    desired
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(SUPPORT_ANNOTATION.into(), support_hash);
    let api = Api::<Deployment>::namespaced(ctx.client.clone(), &ns);
    // The hash leaves the replicas out: a start or a stop changes only them, and a patch of
    // spec.replicas is a much lighter write than applying the whole Deployment again.
    if let Some(spec) = desired.spec.as_mut() {
        spec.replicas = None;
    }
    let observed_replicas = deployment
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas);
    if observed_hash(deployment).as_deref() == Some(content_hash(&desired).as_str()) {
        if observed_replicas == Some(replicas) {
            return Ok(());
        }
        let name = node.name_any();
        ctx.metrics.api_write(DEPLOYMENT_KIND);
        let patched = api
            .patch(
                &name,
                &PatchParams {
                    field_manager: Some(MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
            )
            .await
            .map_err(Error::api(format!("Deployment {name}")))?;
        deployment_written(ctx, &ns, deployment, &patched);
        return Ok(());
    }
    let hash = content_hash(&desired);
    if let Some(spec) = desired.spec.as_mut() {
        spec.replicas = Some(replicas);
    }
    let applied = apply_with_hash(&api, &mut desired, hash, DEPLOYMENT_KIND, ctx).await?;
    deployment_written(ctx, &ns, deployment, &applied);
    Ok(())
}

fn deployment_written(ctx: &Context, ns: &str, before: Option<&Deployment>, after: &Deployment) {
    ctx.own_writes.wrote(
        DEPLOYMENT_KIND,
        ns,
        &after.name_any(),
        before.and_then(|d| d.metadata.resource_version.as_deref()),
        after.metadata.resource_version.as_deref(),
    );
}

/// On the Deployment: the hash of its ConfigMap, Service and claim as last applied.
const SUPPORT_ANNOTATION: &str = "jukinet.io/support-hash";
/// On the pod template: the hash of what the pods read once at start; a change rolls them.
const RESTART_ANNOTATION: &str = "jukinet.io/restart-hash";

async fn create_job(
    node: &JukiNode,
    ctx: &Context,
    rctx: &resources::Context<'_>,
    batch: &str,
    date: Date,
) -> Result<(), Error> {
    let job = resources::batch_job(node, rctx, batch, date);
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &node.namespace().unwrap_or_default());
    ctx.metrics.api_write("Job");
    match api.create(&PostParams::default(), &job).await {
        // Named after node, batch and date: it already ran (or runs) today.
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(Error::Api {
            what: format!("Job {}", job.metadata.name.unwrap_or_default()),
            source: e,
        }),
    }
}

/// The final request / final answer exchange with the node service's admin API.
async fn final_exchange(
    ctx: &Context,
    ns: &str,
    name: &str,
    tls: bool,
    date: String,
) -> FinalAnswerStatus {
    if ctx.settings.final_exchange == FinalExchange::Skip {
        return FinalAnswerStatus {
            date,
            outcome: "Skipped".into(),
            message: "final exchange skipped (--final-exchange=skip)".into(),
        };
    }
    let timeout = ctx.settings.final_timeout;
    let answer = match super::node_route(ctx, ns, name, tls).await {
        Ok(route) => node_client::final_request(&route, timeout).await,
        Err(message) => Err(message),
    };
    match answer.map(|body| node_client::judge_final_answer(&body)) {
        Ok(node_client::FinalOutcome::Received(message)) => FinalAnswerStatus {
            date,
            outcome: "Received".into(),
            message,
        },
        Ok(node_client::FinalOutcome::Held(message)) => FinalAnswerStatus {
            date,
            outcome: "Held".into(),
            message,
        },
        Err(message) => FinalAnswerStatus {
            date,
            outcome: "Failed".into(),
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use juki_calendar::CalendarConfig;

    fn ready_condition(ready: i32, reason: &'static str) -> (String, String) {
        let spec = serde_json::from_value(json!({
            "tier": "CS", "municipality": "131016", "replicas": 2
        }))
        .unwrap();
        let node = JukiNode::new("cs-131016", spec);
        let calendar = Calendar::new(&CalendarConfig::default()).unwrap();
        let plan = Plan {
            phase: NodePhase::Online,
            reason,
            message: String::new(),
            replicas: Some(2),
            action: Action::None,
            operating_date: None,
            batches_done: None,
            wake_at: None,
            next: None,
            defer_status: false,
        };
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let s = next_status(
            &node,
            &JukiNodeStatus::default(),
            &plan,
            &calendar,
            now,
            ready,
            None,
            None,
        );
        let c = s.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        (c.status.clone(), c.reason.clone())
    }

    #[test]
    fn batch_metrics_name_each_batch_not_daily() {
        use crate::planner::JobState;
        let calendar = Calendar::new(&CalendarConfig::default()).unwrap();
        let date = jiff::civil::date(2026, 11, 30);
        let mut plan = Plan {
            phase: NodePhase::Offline,
            reason: "BatchSucceeded",
            message: String::new(),
            replicas: Some(0),
            action: Action::None,
            operating_date: Some(date),
            batches_done: Some(date),
            wake_at: None,
            next: None,
            defer_status: false,
        };
        let tier = juki_calendar::Tier::Cs;
        let all_succeeded = [
            ("statistics".to_string(), "Succeeded"),
            ("backup".to_string(), "Succeeded"),
        ];
        assert_eq!(batch_outcomes(&plan, &calendar, tier, &[]), all_succeeded);
        // On the way through a catch-up: the date done, while the next date's batch runs.
        plan.phase = NodePhase::DailyBatch;
        plan.reason = "BatchRunning";
        plan.operating_date = date.tomorrow().ok();
        assert_eq!(batch_outcomes(&plan, &calendar, tier, &[]), all_succeeded);
        plan.operating_date = Some(date);
        plan.reason = "BatchFailed";
        let jobs = [
            ("statistics".to_string(), date, JobState::Succeeded),
            ("backup".to_string(), date, JobState::Failed),
        ];
        assert_eq!(
            batch_outcomes(&plan, &calendar, tier, &jobs),
            [("backup".to_string(), "Failed")]
        );
        plan.reason = "Ready";
        plan.batches_done = None;
        assert!(batch_outcomes(&plan, &calendar, tier, &jobs).is_empty());
    }

    #[test]
    fn ready_means_online_with_every_replica_ready() {
        assert_eq!(ready_condition(2, "Ready"), ("True".into(), "Ready".into()));
        assert_eq!(
            ready_condition(0, "Degraded"),
            ("False".into(), "Degraded".into())
        );
        assert_eq!(
            ready_condition(1, "Degraded"),
            ("False".into(), "Degraded".into())
        );
    }
}
