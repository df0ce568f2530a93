//! Gather: what one reconcile knows of its node and the world, read from the caches (and, for a
//! node stopping long, its pods from the API server).

use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::Date;
use juki_calendar::{Calendar, TimeOfDay};
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use super::apply::behind_own_writes;
use super::status::final_outcome;
use super::{POD_CHECK_AFTER, pods_now};
use crate::api::{JukiNode, JukiNodeStatus, NodePhase};
use crate::controller::Context;
use crate::controller::view::{
    Topology, extensions, extensions_covering, extensions_file, jobs_of, pods_of,
};
use crate::planner::{FinalAnswer, JobState, NodeView, Reason, check_online_end};
use crate::topology::Resolved;

/// Everything a plan and its application need, as read at the start of the reconcile.
pub(super) struct Facts {
    pub now: Timestamp,
    pub status: JukiNodeStatus,
    pub calendar: Calendar,
    pub calendar_json: serde_json::Value,
    pub extensions_json: serde_json::Value,
    /// An invalid calendar or spec edit the node is planned around (reported, not fatal).
    pub problem: Option<(Reason, String)>,
    pub topology: Arc<Topology>,
    /// The node's index in `topology`.
    pub me: usize,
    pub online_end: Option<TimeOfDay>,
    pub covering: Vec<(Date, Timestamp)>,
    pub held: Option<String>,
    pub delivery_held: Option<String>,
    pub jobs: Vec<(String, Date, JobState)>,
    pub deployment: Option<Arc<Deployment>>,
    pub ready: i32,
    pub pods: i32,
    /// Stopping long enough that its pods were checked on the API server.
    pub pod_check_due: bool,
}

/// What gathering found.
pub(super) enum Gathered {
    Facts(Box<Facts>),
    /// The node cannot be planned: say why and touch nothing else.
    Invalid {
        calendar: Option<Calendar>,
        reason: Reason,
        message: String,
    },
    /// The cached node or Deployment predates this operator's own write: its watch event is on
    /// its way and wakes the node again.
    BehindOwnWrites,
}

pub(super) async fn gather(node: &JukiNode, ctx: &Context, now: Timestamp) -> Gathered {
    let ns = node.namespace().unwrap_or_default();
    let name = node.name_any();
    let status = node.status.clone().unwrap_or_default();
    let invalid = |calendar: Option<&Calendar>, reason, message| Gathered::Invalid {
        calendar: calendar.cloned(),
        reason,
        message,
    };

    // An invalid calendar or own online end does not freeze a node: it keeps planning with the
    // last valid one, and the invalid one is reported (condition SpecValid, a warning Event).
    let (calendar, calendar_json, calendar_problem) =
        match ctx.last_valid.calendar(ctx, &node.spec.calendar) {
            Ok(c) => c,
            Err(message) => return invalid(None, Reason::CalendarUnavailable, message),
        };
    if let Some(message) = plain_http_refusal(node, ctx.settings.allow_plain_http) {
        return invalid(Some(&calendar), Reason::PlainHttpRefused, message);
    }
    let topology = Topology::read(ctx);
    let Some(me) = topology.index_of(&ns, &name) else {
        let message = crate::topology::from_jukinode(node, "default")
            .err()
            .unwrap_or_else(|| "not in the node cache yet".into());
        return invalid(Some(&calendar), Reason::InvalidSpec, message);
    };
    let running = !matches!(
        status.phase.unwrap_or(NodePhase::Offline),
        NodePhase::Offline | NodePhase::Failed
    ) || pods_of(ctx, &ns, &name).0 > 0;
    let current_end = topology.online_ends[me];
    let (online_end, online_end_problem) = match ctx.last_valid.online_end_to_plan_with(
        (&ns, &name),
        current_end,
        check_online_end(&calendar, node.spec.tier, current_end),
        running,
    ) {
        Ok(planned) => planned,
        Err(message) => return invalid(Some(&calendar), Reason::InvalidSpec, message),
    };
    if topology.resolved[me] == Resolved::Invalid {
        let message = crate::topology::upstream_problem(&topology.nodes, me)
            .unwrap_or_else(|| "spec.upstream is invalid".into());
        return invalid(Some(&calendar), Reason::InvalidSpec, message);
    }
    let problem = spec_problem_of(
        calendar_problem,
        online_end_problem,
        topology.upstream_problems[me].clone(),
    );

    let deployment = ctx.deployments.get(&ObjectRef::new(&name).within(&ns));
    if behind_own_writes(node, deployment.as_deref(), ctx) {
        return Gathered::BehindOwnWrites;
    }
    let evaluations = extensions(ctx, &calendar, &topology, now);
    let covering = extensions_covering(&evaluations, me);
    let extensions_json = extensions_file(ctx, &evaluations, &topology, me);
    let ready = deployment
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        .max(pods_of(ctx, &ns, &name).1);
    let pod_check_due = status.phase == Some(NodePhase::Stopping)
        && status
            .phase_since
            .as_ref()
            .is_some_and(|t| now.duration_since(t.0) >= ctx.clock.clock_duration(POD_CHECK_AFTER));
    Gathered::Facts(Box::new(Facts {
        now,
        jobs: jobs_of(ctx, &ns, &name),
        held: ctx.holds.of(&ObjectRef::from_obj(node)),
        delivery_held: ctx.delivery_holds.of(&ObjectRef::from_obj(node)),
        pods: pods_now(ctx, &ns, &name, pod_check_due).await,
        status,
        calendar,
        calendar_json,
        extensions_json,
        problem,
        topology,
        me,
        online_end,
        covering,
        deployment,
        ready,
        pod_check_due,
    }))
}

impl Facts {
    /// The planner's view of the node.
    pub fn view<'a>(&'a self, node: &JukiNode, ctx: &Context) -> NodeView<'a> {
        let (topology, me, status) = (&self.topology, self.me, &self.status);
        NodeView {
            tier: node.spec.tier,
            prefecture: topology.nodes[me].prefecture,
            online_end: self.online_end,
            replicas: node.spec.replicas,
            suspend: node.spec.suspend,
            manual_override: node
                .spec
                .manual_override
                .as_ref()
                .map(|o| (o.phase, o.until.0)),
            pinned_below: topology.pinned_below(ctx, me, self.now),
            extensions: &self.covering,
            held: self.held.as_deref(),
            delivery_held: self.delivery_held.as_deref(),
            phase: status.phase.unwrap_or(NodePhase::Offline),
            phase_since: status.phase_since.as_ref().map(|t| t.0),
            reason: status.reason.as_deref().and_then(|r| r.parse().ok()),
            ready_replicas: self.ready,
            pods: self.pods,
            upstream: topology.resolved[me].state(|i| topology.phase(ctx, i)),
            downstream_offline: topology
                .downstream(me)
                .iter()
                .all(|&i| topology.stopped(ctx, i)),
            final_answer: final_answer_of(status),
            jobs: &self.jobs,
            last_batch_date: status.last_batch.as_ref().and_then(|b| b.date.parse().ok()),
            readiness_timeout: ctx.clock.clock_duration(ctx.settings.readiness_timeout),
            waiting_grace: ctx.clock.clock_duration(crate::planner::WAITING_GRACE),
        }
    }

    /// "namespace/name" of the resolved upstream.
    pub fn upstream_name(&self) -> Option<String> {
        match self.topology.resolved[self.me] {
            Resolved::Node(i) => {
                let up = &self.topology.nodes[i];
                Some(format!("{}/{}", up.namespace, up.name))
            }
            _ => None,
        }
    }

    /// The resolved upstream's Service URL, for the node's configuration.
    pub fn upstream_url(&self) -> Option<String> {
        match self.topology.resolved[self.me] {
            Resolved::Node(i) => {
                let up = &self.topology.nodes[i];
                Some(crate::resources::service_url(
                    &up.name,
                    &up.namespace,
                    up.tls,
                ))
            }
            _ => None,
        }
    }
}

/// The one problem a node planned around reports: an invalid calendar, unless its spec has a
/// problem too (an own online end it may not have; an upstream it may not have, added to the
/// others).
pub(super) fn spec_problem_of(
    calendar: Option<String>,
    online_end: Option<String>,
    upstream: Option<String>,
) -> Option<(Reason, String)> {
    let problem = match online_end {
        Some(p) => Some((Reason::InvalidSpec, p)),
        None => calendar.map(|p| (Reason::InvalidCalendar, p)),
    };
    match (problem, upstream) {
        (Some((_, earlier)), Some(p)) => Some((Reason::InvalidSpec, format!("{earlier}; {p}"))),
        (None, Some(p)) => Some((Reason::InvalidSpec, p)),
        (problem, None) => problem,
    }
}

/// The final exchange of the operating date as the status records it: only a Draining node's
/// answer of its own date counts.
pub(super) fn final_answer_of(status: &JukiNodeStatus) -> FinalAnswer {
    match &status.final_answer {
        Some(f)
            if status.phase == Some(NodePhase::Draining)
                && Some(f.date.as_str()) == status.operating_date.as_deref() =>
        {
            match f.outcome.as_str() {
                final_outcome::FAILED => FinalAnswer::Failed(f.message.clone()),
                final_outcome::HELD => FinalAnswer::Held(f.message.clone()),
                _ => FinalAnswer::Done,
            }
        }
        _ => FinalAnswer::NotRequested,
    }
}

/// Why a node is not run at all: it has no spec.tls, so it would serve plain HTTP that
/// authenticates no caller, and the operator was not told that this cluster allows it.
fn plain_http_refusal(node: &JukiNode, allow_plain_http: bool) -> Option<String> {
    (node.spec.tls.is_none() && !allow_plain_http).then(|| {
        "spec.tls is unset: the node would serve plain HTTP, which authenticates no caller \
         (any pod could relay forged updates or read mailboxes); give it a TLS Secret in \
         spec.tls, or start the operator with --allow-plain-http (chart value \
         args.allowPlainHttp) where NetworkPolicies or a test cluster make that safe"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::FinalAnswerStatus;

    fn draining(date: &str, outcome: &str) -> JukiNodeStatus {
        JukiNodeStatus {
            phase: Some(NodePhase::Draining),
            operating_date: Some("2026-12-04".into()),
            final_answer: Some(FinalAnswerStatus {
                date: date.into(),
                outcome: outcome.into(),
                message: "why".into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_spec_problem_outranks_the_calendars_and_upstream_problems_add_up() {
        let some = |s: &str| Some(s.to_string());
        assert_eq!(spec_problem_of(None, None, None), None);
        assert_eq!(
            spec_problem_of(some("calendar"), None, None),
            Some((Reason::InvalidCalendar, "calendar".into()))
        );
        assert_eq!(
            spec_problem_of(some("calendar"), some("end"), None),
            Some((Reason::InvalidSpec, "end".into()))
        );
        assert_eq!(
            spec_problem_of(some("calendar"), None, some("upstream")),
            Some((Reason::InvalidSpec, "calendar; upstream".into()))
        );
        assert_eq!(
            spec_problem_of(None, some("end"), some("upstream")),
            Some((Reason::InvalidSpec, "end; upstream".into()))
        );
        assert_eq!(
            spec_problem_of(None, None, some("upstream")),
            Some((Reason::InvalidSpec, "upstream".into()))
        );
    }

    #[test]
    fn only_a_draining_nodes_answer_of_its_own_date_counts() {
        assert_eq!(
            final_answer_of(&draining("2026-12-04", "Received")),
            FinalAnswer::Done
        );
        assert_eq!(
            final_answer_of(&draining("2026-12-04", "Skipped")),
            FinalAnswer::Done
        );
        assert_eq!(
            final_answer_of(&draining("2026-12-04", "Failed")),
            FinalAnswer::Failed("why".into())
        );
        assert_eq!(
            final_answer_of(&draining("2026-12-04", "Held")),
            FinalAnswer::Held("why".into())
        );
        // Yesterday's answer, or one kept after the node left Draining, is no answer for today.
        assert_eq!(
            final_answer_of(&draining("2026-12-03", "Received")),
            FinalAnswer::NotRequested
        );
        let stopping = JukiNodeStatus {
            phase: Some(NodePhase::Stopping),
            ..draining("2026-12-04", "Received")
        };
        assert_eq!(final_answer_of(&stopping), FinalAnswer::NotRequested);
        assert_eq!(
            final_answer_of(&JukiNodeStatus::default()),
            FinalAnswer::NotRequested
        );
    }

    #[test]
    fn a_node_without_tls_runs_only_where_plain_http_is_allowed() {
        let mut node = JukiNode::new(
            "cs-131016",
            serde_json::from_value(serde_json::json!({"tier": "CS", "municipality": "131016"}))
                .unwrap(),
        );
        let refused = plain_http_refusal(&node, false).expect("refused");
        assert!(refused.contains("spec.tls") && refused.contains("--allow-plain-http"));
        assert_eq!(plain_http_refusal(&node, true), None);
        node.spec.tls = Some(crate::api::NodeTls {
            secret_name: "cs-131016-tls".into(),
        });
        assert_eq!(plain_http_refusal(&node, false), None);
    }
}
