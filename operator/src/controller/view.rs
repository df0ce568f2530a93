//! Reading the caches into the pure core's inputs: the topology of every node, the calendar of a
//! node, the extensions in force, the observed Deployment, pods and Jobs.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use jiff::civil::Date;
use juki_calendar::{Calendar, TimeOfDay};
use k8s_openapi::api::batch::v1::Job;

use super::Context;
use crate::api::{JukiNode, NodePhase};
use crate::planner::JobState;
use crate::resources::{BATCH_LABEL, DATE_LABEL, NODE_LABEL};
use crate::service_extension::{Evaluation, evaluate};
use kube::runtime::reflector::ObjectRef;

use crate::topology::{Resolved, TopologyNode, from_jukinode, resolve};

/// Every JukiNode with a readable spec, resolved. Phases are not kept here: they are read live
/// from the node cache, so a cached topology never hides a neighbour's newer phase.
#[derive(Debug)]
pub struct Topology {
    pub nodes: Vec<TopologyNode>,
    pub online_ends: Vec<Option<TimeOfDay>>,
    /// `spec.calendar` of each node.
    pub calendars: Vec<String>,
    pub resolved: Vec<Resolved>,
    children: Vec<Vec<usize>>,
    index: HashMap<(String, String), usize>,
}

/// The last topology built, with the fingerprint of the node specs it was built from.
#[derive(Debug, Default, Clone)]
pub struct TopologyCache(Arc<Mutex<Option<Fingerprinted>>>);

/// A topology and the fingerprint of the node specs it was built from.
type Fingerprinted = (u64, Arc<Topology>);

/// A fingerprint of which nodes exist and at which spec generation; order-independent.
fn fingerprint(objects: &[Arc<JukiNode>]) -> u64 {
    objects.iter().fold(objects.len() as u64, |acc, o| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            &o.metadata.namespace,
            &o.metadata.name,
            &o.metadata.uid,
            o.metadata.generation,
        )
            .hash(&mut h);
        acc.wrapping_add(h.finish())
    })
}

impl Topology {
    /// The current topology: rebuilt only when a node was added, removed or changed its spec.
    pub fn read(ctx: &Context) -> Arc<Topology> {
        let objects = ctx.nodes.state();
        let print = fingerprint(&objects);
        let mut cache = ctx.topology.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((p, t)) = cache.as_ref()
            && *p == print
        {
            return t.clone();
        }
        let topology = Arc::new(Topology::build(&objects));
        *cache = Some((print, topology.clone()));
        topology
    }

    fn build(objects: &[Arc<JukiNode>]) -> Topology {
        let mut sorted: Vec<&Arc<JukiNode>> = objects.iter().collect();
        sorted.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let (mut nodes, mut online_ends, mut calendars) = (Vec::new(), Vec::new(), Vec::new());
        for o in sorted {
            if let Ok((n, end)) = from_jukinode(o, "default") {
                nodes.push(n);
                online_ends.push(end);
                calendars.push(o.spec.calendar.clone());
            }
        }
        let resolved = resolve(&nodes);
        let mut children = vec![Vec::new(); nodes.len()];
        for (i, r) in resolved.iter().enumerate() {
            if let Resolved::Node(up) = r {
                children[*up].push(i);
            }
        }
        let index = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| ((n.namespace.clone(), n.name.clone()), i))
            .collect();
        Topology {
            nodes,
            online_ends,
            calendars,
            resolved,
            children,
            index,
        }
    }

    pub fn index_of(&self, namespace: &str, name: &str) -> Option<usize> {
        self.index
            .get(&(namespace.to_string(), name.to_string()))
            .copied()
    }

    /// The nodes whose upstream is node `i`.
    pub fn downstream(&self, i: usize) -> &[usize] {
        &self.children[i]
    }

    fn status(&self, ctx: &Context, i: usize) -> Option<crate::api::JukiNodeStatus> {
        let n = &self.nodes[i];
        ctx.nodes
            .get(&ObjectRef::new(&n.name).within(&n.namespace))
            .and_then(|o| o.status.clone())
    }

    /// Node `i`'s phase now (Offline when it has none yet).
    pub fn phase(&self, ctx: &Context, i: usize) -> NodePhase {
        self.status(ctx, i)
            .and_then(|s| s.phase)
            .unwrap_or(NodePhase::Offline)
    }

    /// Whether node `i` runs no replicas: Offline, or Failed for a reason that scaled it to zero
    /// or never let it start. A node above waits for this before it stops.
    pub fn stopped(&self, ctx: &Context, i: usize) -> bool {
        let status = self.status(ctx, i);
        match status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or(NodePhase::Offline)
        {
            NodePhase::Offline => true,
            NodePhase::Failed => matches!(
                status.as_ref().and_then(|s| s.reason.as_deref()),
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

/// Pods of the node's Deployment that still exist (batch Job pods excluded), and how many of
/// them are Ready and not being deleted.
pub fn pods_of(ctx: &Context, namespace: &str, node: &str) -> (i32, i32) {
    let (mut all, mut ready) = (0, 0);
    for p in ctx.pods.state() {
        let mine = p.metadata.namespace.as_deref() == Some(namespace)
            && p.metadata.labels.as_ref().is_some_and(|l| {
                l.get(NODE_LABEL).is_some_and(|n| n == node) && !l.contains_key(BATCH_LABEL)
            });
        if !mine {
            continue;
        }
        all += 1;
        let is_ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if is_ready && p.metadata.deletion_timestamp.is_none() {
            ready += 1;
        }
    }
    (all, ready)
}
