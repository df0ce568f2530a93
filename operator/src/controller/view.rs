//! Reading the caches into the pure core's inputs: the topology of every node, the calendar of a
//! node, the extensions in force, the observed Deployment, pods and Jobs.

use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::Date;
use juki_calendar::{Calendar, TimeOfDay};
use k8s_openapi::api::batch::v1::Job;

use super::Context;
use crate::api::{JukiNode, NodePhase};
use crate::planner::JobState;
use crate::resources::{BATCH_LABEL, DATE_LABEL, NODE_LABEL};
use crate::service_extension::{Evaluation, evaluate};
use crate::topology::{Resolved, TopologyNode, from_jukinode, resolve};

/// Every JukiNode with a readable spec, resolved.
#[derive(Debug)]
pub struct Topology {
    pub objects: Vec<Arc<JukiNode>>,
    pub nodes: Vec<TopologyNode>,
    pub online_ends: Vec<Option<TimeOfDay>>,
    pub resolved: Vec<Resolved>,
}

impl Topology {
    pub fn read(ctx: &Context) -> Topology {
        let mut objects = ctx.nodes.state();
        objects.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let mut kept = Vec::new();
        let mut nodes = Vec::new();
        let mut online_ends = Vec::new();
        for o in objects {
            if let Ok((n, end)) = from_jukinode(&o, "default") {
                kept.push(o);
                nodes.push(n);
                online_ends.push(end);
            }
        }
        let resolved = resolve(&nodes);
        Topology {
            objects: kept,
            nodes,
            online_ends,
            resolved,
        }
    }

    pub fn index_of(&self, namespace: &str, name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.namespace == namespace && n.name == name)
    }

    pub fn phase(&self, i: usize) -> NodePhase {
        self.objects[i]
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(NodePhase::Offline)
    }

    /// Whether node `i` runs no replicas: Offline, or Failed for a reason that scaled it to zero
    /// or never let it start. A node above waits for this before it stops.
    pub fn stopped(&self, i: usize) -> bool {
        let status = self.objects[i].status.as_ref();
        match status.and_then(|s| s.phase).unwrap_or(NodePhase::Offline) {
            NodePhase::Offline => true,
            NodePhase::Failed => matches!(
                status.and_then(|s| s.reason.as_deref()),
                Some("InvalidSpec" | "CalendarUnavailable" | "BatchFailed")
            ),
            _ => false,
        }
    }
}

/// The calendar a node follows, or why it cannot be used.
pub fn calendar_of(ctx: &Context, name: &str) -> Result<(Calendar, serde_json::Value), String> {
    let object = ctx
        .calendars
        .state()
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some(name))
        .ok_or_else(|| format!("OperatingCalendar {name:?} does not exist"))?;
    let calendar = Calendar::new(&object.spec.calendar)
        .map_err(|e| format!("OperatingCalendar {name:?} is invalid: {e}"))?;
    Ok((
        calendar,
        serde_json::to_value(&object.spec).unwrap_or_default(),
    ))
}

/// Every ServiceExtension evaluated against a calendar: (namespace, name, evaluation).
pub fn extensions(
    ctx: &Context,
    calendar: &Calendar,
    topology: &Topology,
    now: Timestamp,
) -> Vec<(String, String, Evaluation)> {
    ctx.extensions
        .state()
        .iter()
        .map(|e| {
            let ns = e.metadata.namespace.clone().unwrap_or_default();
            let eval = evaluate(
                &e.spec,
                &ns,
                calendar,
                &topology.nodes,
                &topology.resolved,
                &topology.online_ends,
                now,
            );
            (ns, e.metadata.name.clone().unwrap_or_default(), eval)
        })
        .collect()
}

/// The (date, end) of every valid extension that covers node `index`.
pub fn extensions_covering(
    evaluations: &[(String, String, Evaluation)],
    index: usize,
) -> Vec<(Date, Timestamp)> {
    evaluations
        .iter()
        .filter(|(_, _, e)| e.covers.contains(&index))
        .filter_map(|(_, _, e)| Some((e.date?, e.end?)))
        .collect()
}

fn job_state(job: &Job) -> JobState {
    let status = job.status.as_ref();
    if status.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        return JobState::Succeeded;
    }
    let failed = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"));
    if failed {
        JobState::Failed
    } else {
        JobState::Running
    }
}

/// The node's batch Jobs: (batch, operating date, state).
pub fn jobs_of(ctx: &Context, namespace: &str, node: &str) -> Vec<(String, Date, JobState)> {
    ctx.jobs
        .state()
        .iter()
        .filter(|j| j.metadata.namespace.as_deref() == Some(namespace))
        .filter_map(|j| {
            let labels = j.metadata.labels.as_ref()?;
            if labels.get(NODE_LABEL)? != node {
                return None;
            }
            let date = Date::strptime("%Y%m%d", labels.get(DATE_LABEL)?).ok()?;
            Some((labels.get(BATCH_LABEL)?.clone(), date, job_state(j)))
        })
        .collect()
}

/// Pods of the node's Deployment that still exist (batch Job pods excluded).
pub fn pods_of(ctx: &Context, namespace: &str, node: &str) -> i32 {
    let count = ctx
        .pods
        .state()
        .iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(namespace))
        .filter(|p| {
            p.metadata.labels.as_ref().is_some_and(|l| {
                l.get(NODE_LABEL).is_some_and(|n| n == node) && !l.contains_key(BATCH_LABEL)
            })
        })
        .count();
    i32::try_from(count).unwrap_or(i32::MAX)
}
