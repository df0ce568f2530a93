//! The JukiNode controller. Each reconcile is a pipeline: [`gather`] what is known of the node
//! and its neighbours, [`plan`] (pure, in `crate::planner`), [`apply`] the plan and write the
//! status it leads to ([`status`], pure), then [`report`] it in metrics and Events ([`events`]).

mod apply;
mod events;
mod gather;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use juki_calendar::Calendar;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{self, Action as Requeue, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tracing::Instrument;

use super::batch_slots::Turn;
use super::view::{Topology, pods_of};
use super::{Context, Error, Shared};
use crate::api::{JukiNode, JukiNodeStatus, NodePhase, OperatingCalendar, ServiceExtension};
use crate::expected;
use crate::planner::{Action, NodeView, Plan, Reason, plan};
use crate::resources;
use crate::telemetry::NodeHealth;
use crate::topology::{from_jukinode, may_be_neighbours};
use apply::{NODE_KIND, apply, write_status};
use gather::{Facts, Gathered, gather};
use status::{batch_outcomes, invalid_status, spec_problem};

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

fn error_policy(node: Arc<JukiNode>, error: &Error, _ctx: Arc<Context>) -> Requeue {
    let node = node_name(&node);
    tracing::warn!(%node, %error, step = error.step(), "JukiNode reconcile failed; retrying");
    Requeue::requeue(Duration::from_secs(2))
}

/// One reconcile, in a span that names the node and a trace id of its own, so that every log
/// line of it (and of the calls it makes) can be told from the other nodes' interleaved ones;
/// the same ids are the exported span's (with `--otlp-endpoint`).
async fn reconcile(node: Arc<JukiNode>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let trace_id = random_hex::<16>();
    let span = tracing::info_span!(
        "reconcile",
        node = %node_name(&node),
        trace_id = %trace_id,
    );
    let mut exported =
        juki_telemetry::Span::start("reconcile JukiNode", &trace_id, &random_hex::<8>())
            .attr("k8s.namespace.name", node.namespace().unwrap_or_default())
            .attr("juki.node", node.name_any());
    let result = reconcile_node(&node, &ctx).instrument(span).await;
    let seconds = started.elapsed().as_secs_f64();
    let failed_step = result.as_ref().err().map(Error::step);
    ctx.metrics.reconcile(NODE_KIND, seconds, failed_step);
    if let Err(error) = &result {
        exported = exported.attr("juki.step", error.step());
        exported.fail(error.to_string());
    }
    exported.end();
    result
}

/// "namespace/name", as logs show a node.
fn node_name(node: &JukiNode) -> String {
    format!(
        "{}/{}",
        node.namespace().unwrap_or_default(),
        node.name_any()
    )
}

/// gather → plan → apply → report → when to look again.
async fn reconcile_node(node: &JukiNode, ctx: &Context) -> Result<Requeue, Error> {
    if node.metadata.deletion_timestamp.is_some() {
        ctx.batch_slots.forget(&ObjectRef::from_obj(node));
        return Ok(Requeue::await_change());
    }
    let now = ctx.clock.now();
    let facts = match gather(node, ctx, now).await {
        Gathered::Facts(facts) => facts,
        Gathered::Invalid {
            calendar,
            reason,
            message,
        } => return invalid(node, ctx, calendar.as_ref(), reason, message, now).await,
        // A safety net only: the write's own event comes first.
        Gathered::BehindOwnWrites => return Ok(Requeue::requeue(Duration::from_secs(2))),
    };
    let view = facts.view(node, ctx);
    let plan = with_batch_slot(
        ctx,
        &ObjectRef::from_obj(node),
        plan(&facts.calendar, &view, now),
    );
    tracing::debug!(%now, phase = ?view.phase, planned = ?plan.phase, reason = %plan.reason, upstream = ?view.upstream, "planned");
    let new_status = apply(node, ctx, &facts, &plan).await?;
    let recheck = report(node, ctx, &facts, &view, &plan, &new_status).await;
    let wake_in = plan
        .wake_at
        .into_iter()
        .chain(recheck)
        .min()
        .map(|at| ctx.clock.real_until(at));
    let settings = &ctx.settings;
    let polls = (settings.max_requeue, settings.transition_poll);
    Ok(Requeue::requeue(requeue_after(
        wake_in,
        plan.phase,
        facts.pod_check_due,
        polls,
    )))
}

/// Reports what the reconcile did: the node's health on `/metrics`, the batch and transition
/// metrics, and the Events it is worth. Returns when a fault may appear with time alone.
async fn report(
    node: &JukiNode,
    ctx: &Context,
    facts: &Facts,
    view: &NodeView<'_>,
    plan: &Plan,
    new_status: &JukiNodeStatus,
) -> Option<Timestamp> {
    let (status, calendar, now) = (&facts.status, &facts.calendar, facts.now);
    let tier = node.spec.tier;
    let recheck = show_health(ctx, node, Some(calendar), view, new_status, now);
    // Counted once per recorded outcome: a catch-up records each date on its way, in DailyBatch.
    if new_status.last_batch != status.last_batch {
        for (batch, outcome) in batch_outcomes(plan, calendar, tier, &facts.jobs) {
            ctx.metrics.batch(tier.as_str(), &batch, outcome.as_str());
        }
    }
    if let Some(from) = status.phase
        && from != plan.phase
    {
        let (from, to) = (format!("{from:?}"), format!("{:?}", plan.phase));
        ctx.metrics.transition(tier.as_str(), &from, &to);
    }
    // Catch-up batches (a day missed while the operator was away): those started from Offline,
    // and those of a date before the last ended window's.
    let catch_up = match &plan.action {
        Action::CreateJob { date, .. } => {
            view.phase == NodePhase::Offline
                || crate::planner::last_ended_window(calendar, view, now)
                    .is_some_and(|w| w.date > *date)
        }
        _ => false,
    };
    let outcome = events::Outcome {
        old_phase: status.phase,
        old_reason: status.reason.as_deref(),
        old_problem: spec_problem(status),
        plan,
        problem: facts.problem.as_ref(),
        overridden: node
            .spec
            .manual_override
            .as_ref()
            .is_some_and(|o| o.until.0 > now),
        batches_ran: plan
            .operating_date
            .is_some_and(|d| !calendar.batch_runs_for(tier, d).is_empty()),
        catch_up,
        transition_events: ctx.settings.transition_events,
    };
    for event in events::events_for(&outcome) {
        events::publish(node, ctx, event).await;
    }
    recheck
}

/// How long until the node is looked at again without news: at the next edge (a window, an
/// override's expiry, a monitoring grace), at most `--max-requeue`; a Stopping node sooner, as
/// a safety net for a missed pod deletion (once the pods are checked on the API server, once
/// per check). `polls` are `--max-requeue` and `--transition-poll`.
fn requeue_after(
    wake_in: Option<Duration>,
    phase: NodePhase,
    pod_check_due: bool,
    (max_requeue, transition_poll): (Duration, Duration),
) -> Duration {
    let mut wait = wake_in.map_or(max_requeue, |w| w.min(max_requeue));
    if phase == NodePhase::Stopping {
        wait = wait.min(if pod_check_due {
            POD_CHECK_AFTER
        } else {
            transition_poll
        });
    }
    wait.max(MIN_REQUEUE)
}

/// The shortest look-again: a wake at the current instant does not spin.
const MIN_REQUEUE: Duration = Duration::from_millis(20);

/// N random bytes in hex: 16 make a W3C trace id, 8 a span id.
fn random_hex<const N: usize>() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    // The system's randomness does not fail on the platforms the operator runs on; an all-zero
    // id (invalid by the W3C rule) would only mark the one reconcile.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        (_, NodePhase::DailyBatch) if plan.reason == Reason::BatchRunning => slots.hold(key),
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

/// An unusable spec: say why in status and an Event, touch nothing else, wait for a change.
async fn invalid(
    node: &JukiNode,
    ctx: &Context,
    calendar: Option<&Calendar>,
    reason: Reason,
    message: String,
    now: Timestamp,
) -> Result<Requeue, Error> {
    let old = node.status.clone().unwrap_or_default();
    let new_status = invalid_status(node, &old, reason, &message, now);
    if Some(&new_status) != node.status.as_ref() {
        write_status(node, ctx, &new_status).await?;
        let event = events::NodeEvent {
            warning: true,
            reason: reason.as_str(),
            note: message,
        };
        events::publish(node, ctx, event).await;
    }
    let prefecture = prefecture_label(node).parse().ok();
    let view = NodeView {
        suspend: node.spec.suspend,
        ..NodeView::bare(node.spec.tier, prefecture, None)
    };
    show_health(ctx, node, calendar, &view, &new_status, now);
    Ok(Requeue::requeue(ctx.settings.max_requeue))
}

/// The `prefecture` label of a node: "01".."47", empty for the national node.
fn prefecture_label(node: &JukiNode) -> String {
    node.spec.prefecture_code().unwrap_or_default().to_string()
}

/// How long a stop wave may take in real time before it is late (see [`expected::Thresholds`]).
const STOP_BUDGET: Duration = Duration::from_secs(60 * 60);

/// Shows on `/metrics` what the node should be doing and its faults, given the status just
/// decided (`view` gives the window-shaping facts; its phase and batch facts are taken from
/// `status`). Returns when a fault may appear with time alone. Nothing with
/// `--node-health-series=false`.
fn show_health(
    ctx: &Context,
    node: &JukiNode,
    calendar: Option<&Calendar>,
    view: &NodeView<'_>,
    status: &JukiNodeStatus,
    now: Timestamp,
) -> Option<Timestamp> {
    if !ctx.settings.node_health_series {
        return None;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_looks_again_at_its_next_edge_within_the_longest_wait_sooner_while_stopping() {
        let secs = Duration::from_secs;
        let polls = (secs(300), secs(2));
        let at = |wake, phase, due| requeue_after(wake, phase, due, polls);
        assert_eq!(at(Some(secs(40)), NodePhase::Online, false), secs(40));
        assert_eq!(at(Some(secs(4000)), NodePhase::Online, false), secs(300));
        assert_eq!(at(None, NodePhase::Offline, false), secs(300));
        // A wake now does not spin.
        assert_eq!(
            at(Some(Duration::ZERO), NodePhase::Starting, false),
            MIN_REQUEUE
        );
        assert_eq!(at(None, NodePhase::Stopping, false), secs(2));
        assert_eq!(at(Some(secs(1)), NodePhase::Stopping, false), secs(1));
        // Once the pods are checked on the API server: once per check, not every poll.
        let checks = (secs(300), secs(60));
        assert_eq!(
            requeue_after(None, NodePhase::Stopping, true, checks),
            POD_CHECK_AFTER
        );
    }

    #[test]
    fn each_reconcile_has_a_trace_id_of_its_own() {
        let (a, b) = (random_hex::<16>(), random_hex::<16>());
        assert_eq!(random_hex::<8>().len(), 16);
        for id in [&a, &b] {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
        assert_ne!(a, b);
    }
}
