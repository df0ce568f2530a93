//! Reading the caches into the pure core's inputs: the topology of every node, the calendar of a
//! node, the extensions in force, the observed Deployment, pods and Jobs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use jiff::civil::Date;
use juki_calendar::{Calendar, TimeOfDay};
use k8s_openapi::api::batch::v1::Job;

use super::Context;
use crate::api::{ExtensionPhase, JukiNode, NodePhase};
use crate::planner::JobState;
use crate::resources::{BATCH_LABEL, DATE_LABEL};
use crate::service_extension::{Evaluation, evaluate};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

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
    /// Why a node is planned with the upstream it had (its `status.upstream`) rather than the
    /// invalid one its spec names now.
    pub upstream_problems: Vec<Option<String>>,
    /// (uid, generation) of each node's spec as read.
    versions: Vec<(Option<String>, Option<i64>)>,
    children: Vec<Vec<usize>>,
    index: HashMap<(String, String), usize>,
}

/// Resolves every node; one whose spec now names an invalid upstream (itself, the wrong tier, a
/// cycle) is resolved to the upstream it had ("namespace/name" from its status) when that one is
/// still valid for it, so an edit does not freeze a running node or break the chain above it,
/// with the problem to report. Kept in the status, this survives an operator restart.
fn resolve_keeping_valid_upstreams(
    nodes: &[TopologyNode],
    had: &[Option<String>],
) -> (Vec<Resolved>, Vec<Option<String>>) {
    let mut resolved = resolve(nodes);
    let mut problems = vec![None; nodes.len()];
    let invalid: Vec<usize> = (0..nodes.len())
        .filter(|&i| resolved[i] == Resolved::Invalid)
        .collect();
    if invalid.is_empty() {
        return (resolved, problems);
    }
    let mut planned = nodes.to_vec();
    for &i in &invalid {
        planned[i].upstream = had[i]
            .as_deref()
            .and_then(|u| u.split_once('/'))
            .map(|(ns, name)| (ns.to_string(), name.to_string()));
    }
    let again = resolve(&planned);
    for &i in &invalid {
        if let (Resolved::Node(up), Some((ns, name))) = (again[i], &planned[i].upstream) {
            resolved[i] = Resolved::Node(up);
            let problem = crate::topology::upstream_problem(nodes, i)
                .unwrap_or_else(|| "spec.upstream is invalid".into());
            problems[i] = Some(format!(
                "{problem}; planning with the last valid upstream {ns}/{name}"
            ));
        }
    }
    (resolved, problems)
}

/// The last topology built, and the count of node spec changes it was built after.
#[derive(Debug, Default, Clone)]
pub struct TopologyCache {
    /// Bumped by the node watch, once the store holds the change, whenever a node appears, goes
    /// or gets a new spec generation (status writes do not count).
    epoch: Arc<AtomicU64>,
    built: Arc<Mutex<Option<Built>>>,
}

/// A topology and the epoch it was built at.
type Built = (u64, Arc<Topology>);

impl TopologyCache {
    /// What the node watch calls with each event, after the store has it.
    pub fn follower(&self) -> impl FnMut(&watcher::Event<JukiNode>) + Send + 'static {
        let epoch = self.epoch.clone();
        let mut versions = HashMap::<ObjectRef<JukiNode>, (Option<String>, Option<i64>)>::new();
        move |event| {
            let changed = match event {
                watcher::Event::Apply(n) | watcher::Event::InitApply(n) => {
                    let version = (n.metadata.uid.clone(), n.metadata.generation);
                    versions.insert(ObjectRef::from_obj(n), version.clone()) != Some(version)
                }
                watcher::Event::Delete(n) => {
                    versions.remove(&ObjectRef::from_obj(n));
                    true
                }
                watcher::Event::Init => false,
                // Nodes gone while the watch was down are not announced one by one.
                watcher::Event::InitDone => true,
            };
            if changed {
                epoch.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

impl Topology {
    /// The current topology: rebuilt only when a node was added, removed or changed its spec.
    pub fn read(ctx: &Context) -> Arc<Topology> {
        // The epoch is read before the store: a topology is never kept under an epoch newer
        // than the nodes it was built from.
        let epoch = ctx.topology.epoch.load(Ordering::SeqCst);
        let mut built = ctx.topology.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((e, t)) = built.as_ref()
            && *e == epoch
        {
            return t.clone();
        }
        let topology = Arc::new(Topology::build(&ctx.nodes.state()));
        *built = Some((epoch, topology.clone()));
        topology
    }

    fn build(objects: &[Arc<JukiNode>]) -> Topology {
        let mut sorted: Vec<&Arc<JukiNode>> = objects.iter().collect();
        sorted.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        let (mut nodes, mut online_ends, mut calendars) = (Vec::new(), Vec::new(), Vec::new());
        let (mut versions, mut had) = (Vec::new(), Vec::new());
        for o in sorted {
            if let Ok((n, end)) = from_jukinode(o, "default") {
                nodes.push(n);
                online_ends.push(end);
                calendars.push(o.spec.calendar.clone());
                versions.push((o.metadata.uid.clone(), o.metadata.generation));
                had.push(o.status.as_ref().and_then(|s| s.upstream.clone()));
            }
        }
        let (resolved, upstream_problems) = resolve_keeping_valid_upstreams(&nodes, &had);
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
            upstream_problems,
            versions,
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

    fn object(&self, ctx: &Context, i: usize) -> Option<Arc<JukiNode>> {
        let n = &self.nodes[i];
        ctx.nodes.get(&ObjectRef::new(&n.name).within(&n.namespace))
    }

    /// Node `i`'s phase now (Offline when it has none yet).
    pub fn phase(&self, ctx: &Context, i: usize) -> NodePhase {
        self.object(ctx, i)
            .and_then(|o| o.status.as_ref().and_then(|s| s.phase))
            .unwrap_or(NodePhase::Offline)
    }

    /// The nodes above node `i`, nearest first (its upstream chain).
    pub fn above(&self, i: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = i;
        while let Resolved::Node(up) = self.resolved[at] {
            if up == i || out.contains(&up) {
                break;
            }
            out.push(up);
            at = up;
        }
        out
    }

    /// The latest `until` of an active `override: Online` among the nodes below node `i` (its
    /// whole subtree): node `i` stays Online with them.
    pub fn pinned_below(&self, ctx: &Context, i: usize, now: Timestamp) -> Option<Timestamp> {
        let mut latest = None;
        let mut todo: Vec<usize> = self.children[i].clone();
        let mut seen = vec![false; self.nodes.len()];
        while let Some(k) = todo.pop() {
            if std::mem::replace(&mut seen[k], true) {
                continue;
            }
            if let Some(o) = self
                .object(ctx, k)
                .and_then(|o| o.spec.manual_override.clone())
                && o.phase == crate::api::OverridePhase::Online
                && o.until.0 > now
            {
                latest = latest.max(Some(o.until.0));
            }
            todo.extend_from_slice(&self.children[k]);
        }
        latest
    }

    /// The nodes a phase change of `changed` can matter to: its upstream and the nodes below it.
    /// `None` when the topology does not know this spec of it (new, changed, or unreadable), so
    /// that the caller falls back to a wider guess.
    pub fn neighbours(&self, changed: &JukiNode) -> Option<Vec<usize>> {
        let i = self.index_of(
            changed.metadata.namespace.as_deref().unwrap_or_default(),
            changed.metadata.name.as_deref().unwrap_or_default(),
        )?;
        if self.versions[i] != (changed.metadata.uid.clone(), changed.metadata.generation) {
            return None;
        }
        let mut out = self.children[i].clone();
        if let Resolved::Node(up) = self.resolved[i] {
            out.push(up);
        }
        Some(out)
    }

    /// Whether node `i` runs no replicas ([`counts_as_stopped`]). A node above waits for this
    /// before it stops.
    pub fn stopped(&self, ctx: &Context, i: usize) -> bool {
        let object = self.object(ctx, i);
        let phase = object
            .as_ref()
            .and_then(|o| o.status.as_ref())
            .and_then(|s| s.phase)
            .unwrap_or(NodePhase::Offline);
        let suspended = object.as_ref().is_some_and(|o| o.spec.suspend);
        let n = &self.nodes[i];
        counts_as_stopped(phase, suspended, || pods_of(ctx, &n.namespace, &n.name).0)
    }
}

/// Whether a node in `phase` counts as stopped for the node above it: Offline, or Failed once
/// its pods are gone (whatever the reason: an invalid spec or calendar can fail a node whose
/// pods still serve, and the node above must not stop under them), or suspended: the operator
/// leaves a suspended node as it is, so the chain above never waits for it.
pub fn counts_as_stopped(phase: NodePhase, suspended: bool, pods: impl FnOnce() -> i32) -> bool {
    match phase {
        _ if suspended => true,
        NodePhase::Offline => true,
        NodePhase::Failed => pods() == 0,
        _ => false,
    }
}

/// The last valid calendar of each name and the last valid own online end of each node, so that
/// an invalid edit does not freeze the nodes that follow them: they keep planning with the last
/// valid one and report the invalid one. A calendar's last valid spec is also in its status
/// (`lastValidSpec`), which an operator restarted during an invalid edit plans with; a node's
/// own end is kept in memory only: after a restart, an invalid own end of a running node falls
/// back to the calendar's window.
#[derive(Debug, Default)]
pub struct LastValid {
    calendars: Mutex<HashMap<String, (Calendar, serde_json::Value)>>,
    online_ends: Mutex<HashMap<(String, String), Option<TimeOfDay>>>,
}

/// A calendar to plan with, and why the current one is not it (an invalid edit), if it is not.
pub type PlanningCalendar = (Calendar, serde_json::Value, Option<String>);

impl LastValid {
    /// The calendar `name` as it is, remembered as the last valid one; or, when it is invalid,
    /// the last valid one with the reason. `Err` when it is missing, or invalid with no valid
    /// one known.
    pub fn calendar(&self, ctx: &Context, name: &str) -> Result<PlanningCalendar, String> {
        let current = calendar_of(ctx, name);
        let kept = current.is_err().then(|| {
            ctx.calendars
                .state()
                .into_iter()
                .find(|c| c.metadata.name.as_deref() == Some(name))
                .and_then(|c| c.status.as_ref()?.last_valid_spec.clone())
        });
        self.calendar_from(name, current, kept.flatten().as_ref())
    }

    /// [`LastValid::calendar`] given what [`calendar_of`] said and the last valid spec the
    /// calendar's status kept (read when this process has seen no valid one).
    fn calendar_from(
        &self,
        name: &str,
        current: Result<(Calendar, serde_json::Value), String>,
        kept: Option<&juki_calendar::CalendarConfig>,
    ) -> Result<PlanningCalendar, String> {
        let mut known = self.calendars.lock().unwrap_or_else(|e| e.into_inner());
        if current.is_err()
            && !known.contains_key(name)
            && let Some(config) = kept
            && let Ok(calendar) = Calendar::new(config)
        {
            let spec = crate::api::OperatingCalendarSpec {
                calendar: config.clone(),
            };
            let json = serde_json::to_value(&spec).unwrap_or_default();
            known.insert(name.to_string(), (calendar, json));
        }
        match current {
            Ok((calendar, json)) => {
                known.insert(name.to_string(), (calendar.clone(), json.clone()));
                Ok((calendar, json, None))
            }
            Err(problem) => match known.get(name) {
                Some((calendar, json)) if !problem.ends_with("does not exist") => Ok((
                    calendar.clone(),
                    json.clone(),
                    Some(format!("{problem}; planning with its last valid spec")),
                )),
                _ => Err(problem),
            },
        }
    }

    /// The own online end to plan with, given the check of the current one: the current one
    /// when valid (remembered), else the last valid one, else (a running node, nothing known)
    /// the calendar's window; with the problem to report. `Err` (the node fails, InvalidSpec)
    /// for a node that runs nothing and has no valid end known.
    pub fn online_end_to_plan_with(
        &self,
        (namespace, name): (&str, &str),
        current: Option<TimeOfDay>,
        check: Result<(), String>,
        running: bool,
    ) -> Result<(Option<TimeOfDay>, Option<String>), String> {
        let message = match check {
            Ok(()) => {
                self.valid_online_end(namespace, name, current);
                return Ok((current, None));
            }
            Err(message) => message,
        };
        let end = match self.online_end(namespace, name) {
            Some(last) => last,
            None if running => None,
            None => return Err(message),
        };
        let kept = end.map_or("the calendar's window".to_string(), |e| {
            format!("the last valid end {e}")
        });
        Ok((end, Some(format!("{message}; planning with {kept}"))))
    }

    /// Remembers a node's own online end as valid.
    fn valid_online_end(&self, namespace: &str, name: &str, end: Option<TimeOfDay>) {
        let mut known = self.online_ends.lock().unwrap_or_else(|e| e.into_inner());
        known.insert((namespace.to_string(), name.to_string()), end);
    }

    /// The node's last valid own online end, if one is known.
    fn online_end(&self, namespace: &str, name: &str) -> Option<Option<TimeOfDay>> {
        let known = self.online_ends.lock().unwrap_or_else(|e| e.into_inner());
        known
            .get(&(namespace.to_string(), name.to_string()))
            .copied()
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

/// What node `index`'s service reads as `extensions.json`: every valid extension that keeps it
/// up and has not expired, with the nodes it covers (by JukiNode name), its date and end. The
/// node's relay then stays open to its upstream until the extended end, and a WideAreaIssuance
/// extension opens the issuance hours between the CSs it names.
pub fn extensions_file(
    ctx: &Context,
    evaluations: &[(String, String, Evaluation)],
    topology: &Topology,
    index: usize,
) -> serde_json::Value {
    let specs = ctx.extensions.state();
    let mut rendered: Vec<serde_json::Value> = evaluations
        .iter()
        .filter(|(_, _, e)| e.covers.contains(&index))
        .filter(|(_, _, e)| matches!(e.phase, ExtensionPhase::Pending | ExtensionPhase::Active))
        .filter_map(|(ns, name, e)| {
            let spec = &specs
                .iter()
                .find(|x| {
                    x.metadata.namespace.as_deref() == Some(ns)
                        && x.metadata.name.as_deref() == Some(name)
                })?
                .spec;
            let nodes: Vec<&str> = e
                .covers
                .iter()
                .map(|&i| topology.nodes[i].name.as_str())
                .collect();
            Some(serde_json::json!({
                "name": format!("{ns}/{name}"),
                "kind": spec.kind,
                "nodes": nodes,
                "date": e.date?.to_string(),
                "endTime": spec.end_time,
            }))
        })
        .collect();
    rendered.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    serde_json::Value::Array(rendered)
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
    ctx.jobs_by_node
        .names(namespace, node)
        .iter()
        .filter_map(|name| ctx.jobs.get(&ObjectRef::new(name).within(namespace)))
        .filter_map(|j| {
            let labels = j.metadata.labels.as_ref()?;
            let date = Date::strptime("%Y%m%d", labels.get(DATE_LABEL)?).ok()?;
            Some((labels.get(BATCH_LABEL)?.clone(), date, job_state(&j)))
        })
        .collect()
}

/// Pods of the node's Deployment that still exist (batch Job pods excluded), and how many of
/// them are Ready and not being deleted.
pub fn pods_of(ctx: &Context, namespace: &str, node: &str) -> (i32, i32) {
    let (mut all, mut ready) = (0, 0);
    for name in ctx.pods_by_node.names(namespace, node) {
        let Some(p) = ctx.pods.get(&ObjectRef::new(&name).within(namespace)) else {
            continue;
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{JukiNodeSpec, JukiNodeStatus};
    use serde_json::json;

    fn node(ns: &str, name: &str, spec: serde_json::Value, generation: i64) -> JukiNode {
        let spec: JukiNodeSpec = serde_json::from_value(spec).unwrap();
        let mut n = JukiNode::new(name, spec);
        n.metadata.namespace = Some(ns.into());
        n.metadata.uid = Some(format!("uid-{name}"));
        n.metadata.generation = Some(generation);
        n
    }

    fn country() -> Vec<JukiNode> {
        vec![
            node("nat", "national", json!({"tier": "National"}), 1),
            node(
                "p13",
                "pref-13",
                json!({"tier": "Prefecture", "prefecture": "13"}),
                1,
            ),
            node(
                "p27",
                "pref-27",
                json!({"tier": "Prefecture", "prefecture": "27"}),
                1,
            ),
            node(
                "p13",
                "cs-131016",
                json!({"tier": "CS", "municipality": "131016"}),
                1,
            ),
            node(
                "p13",
                "cs-131041",
                json!({"tier": "CS", "municipality": "131041"}),
                1,
            ),
        ]
    }

    fn names(t: &Topology, indices: Option<Vec<usize>>) -> Option<Vec<&str>> {
        let mut out: Vec<&str> = indices?
            .into_iter()
            .map(|i| t.nodes[i].name.as_str())
            .collect();
        out.sort();
        Some(out)
    }

    #[test]
    fn a_known_node_concerns_its_upstream_and_the_nodes_below_it_only() {
        let nodes: Vec<Arc<JukiNode>> = country().into_iter().map(Arc::new).collect();
        let t = Topology::build(&nodes);
        let by_name = |n: &str| {
            nodes
                .iter()
                .find(|o| o.metadata.name.as_deref() == Some(n))
                .unwrap()
        };
        assert_eq!(
            names(&t, t.neighbours(by_name("pref-13"))),
            Some(vec!["cs-131016", "cs-131041", "national"])
        );
        assert_eq!(
            names(&t, t.neighbours(by_name("cs-131016"))),
            Some(vec!["pref-13"])
        );
        assert_eq!(
            names(&t, t.neighbours(by_name("national"))),
            Some(vec!["pref-13", "pref-27"])
        );
        // A spec the topology was not built from: the caller must look wider.
        let mut changed = (**by_name("cs-131016")).clone();
        changed.metadata.generation = Some(2);
        assert_eq!(t.neighbours(&changed), None);
        let new = node(
            "p27",
            "cs-271004",
            json!({"tier": "CS", "municipality": "271004"}),
            1,
        );
        assert_eq!(t.neighbours(&new), None);
    }

    #[test]
    fn an_invalid_calendar_edit_plans_with_the_last_valid_one() {
        let last = LastValid::default();
        let valid = Calendar::new(&juki_calendar::CalendarConfig::default()).unwrap();
        let bad = || Err("OperatingCalendar \"japan\" is invalid: onlineWindows".to_string());
        // Invalid from the start: nothing to plan with.
        assert!(last.calendar_from("japan", bad(), None).is_err());
        let (_, json, problem) = last
            .calendar_from(
                "japan",
                Ok((valid, json!({"timeZone": "Asia/Tokyo"}))),
                None,
            )
            .unwrap();
        assert_eq!(problem, None);
        let (_, kept, problem) = last.calendar_from("japan", bad(), None).unwrap();
        assert_eq!(kept, json);
        assert!(
            problem
                .unwrap()
                .ends_with("is invalid: onlineWindows; planning with its last valid spec")
        );
        // A deleted calendar is not planned around.
        let gone = Err("OperatingCalendar \"japan\" does not exist".to_string());
        assert!(last.calendar_from("japan", gone, None).is_err());
    }

    #[test]
    fn after_a_restart_an_invalid_calendar_plans_with_the_spec_its_status_kept() {
        let last = LastValid::default();
        let kept = juki_calendar::CalendarConfig::default();
        let bad = || Err("OperatingCalendar \"japan\" is invalid: onlineWindows".to_string());
        let (_, json, problem) = last.calendar_from("japan", bad(), Some(&kept)).unwrap();
        assert_eq!(
            json,
            serde_json::to_value(crate::api::OperatingCalendarSpec { calendar: kept }).unwrap()
        );
        assert!(
            problem
                .unwrap()
                .ends_with("planning with its last valid spec")
        );
        // A kept spec that does not validate either is no plan.
        let broken = juki_calendar::CalendarConfig {
            time_zone: "Nowhere/Else".into(),
            ..Default::default()
        };
        let fresh = LastValid::default();
        assert!(fresh.calendar_from("japan", bad(), Some(&broken)).is_err());
        // A deleted calendar is not planned around, whatever was kept.
        let gone = Err("OperatingCalendar \"japan\" does not exist".to_string());
        assert!(
            fresh
                .calendar_from(
                    "japan",
                    gone,
                    Some(&juki_calendar::CalendarConfig::default())
                )
                .is_err()
        );
    }

    #[test]
    fn an_invalid_own_online_end_plans_with_the_last_valid_one_or_the_calendars_window() {
        let last = LastValid::default();
        let t = |s| Some(TimeOfDay::parse(s).unwrap());
        let bad = || Err("spec.onlineEnd 22:30 closes after the national window ends".to_string());
        let node = ("p13", "pref-13");
        // Never valid, running nothing: the node fails.
        assert!(
            last.online_end_to_plan_with(node, t("22:30"), bad(), false)
                .is_err()
        );
        // Never valid but running (an operator restart): the calendar's window.
        let (end, problem) = last
            .online_end_to_plan_with(node, t("22:30"), bad(), true)
            .unwrap();
        assert_eq!(end, None);
        assert!(
            problem
                .unwrap()
                .ends_with("planning with the calendar's window")
        );
        // Valid once: that end is kept through an invalid edit, running or not.
        assert_eq!(
            last.online_end_to_plan_with(node, t("21:45"), Ok(()), true),
            Ok((t("21:45"), None))
        );
        let (end, problem) = last
            .online_end_to_plan_with(node, t("22:30"), bad(), false)
            .unwrap();
        assert_eq!(end, t("21:45"));
        assert!(
            problem
                .unwrap()
                .ends_with("national window ends; planning with the last valid end 21:45")
        );
    }

    #[test]
    fn a_node_whose_upstream_edit_is_invalid_keeps_the_upstream_it_had() {
        let mut nodes = country();
        // pref-13 now names a CS as its upstream (the wrong tier); its status says national.
        nodes[1] = node(
            "p13",
            "pref-13",
            json!({"tier": "Prefecture", "prefecture": "13",
                   "upstream": {"namespace": "p13", "name": "cs-131016"}}),
            2,
        );
        let without_status: Vec<Arc<JukiNode>> = nodes.iter().cloned().map(Arc::new).collect();
        let t = Topology::build(&without_status);
        let pref = t.index_of("p13", "pref-13").unwrap();
        assert_eq!(
            t.resolved[pref],
            Resolved::Invalid,
            "nothing known: invalid"
        );
        nodes[1].status = Some(JukiNodeStatus {
            upstream: Some("nat/national".into()),
            ..JukiNodeStatus::default()
        });
        let with_status: Vec<Arc<JukiNode>> = nodes.into_iter().map(Arc::new).collect();
        let t = Topology::build(&with_status);
        let national = t.index_of("nat", "national").unwrap();
        assert_eq!(t.resolved[pref], Resolved::Node(national));
        assert!(
            t.children[national].contains(&pref),
            "the chain above keeps it"
        );
        let problem = t.upstream_problems[pref].as_deref().unwrap();
        assert!(
            problem.ends_with("planning with the last valid upstream nat/national"),
            "{problem}"
        );
        assert!(problem.contains("spec.upstream"), "{problem}");
    }

    #[test]
    fn the_nodes_above_a_cs_are_its_prefecture_then_the_national_node() {
        let nodes: Vec<Arc<JukiNode>> = country().into_iter().map(Arc::new).collect();
        let t = Topology::build(&nodes);
        let cs = t.index_of("p13", "cs-131016").unwrap();
        let above: Vec<&str> = t
            .above(cs)
            .into_iter()
            .map(|i| t.nodes[i].name.as_str())
            .collect();
        assert_eq!(above, ["pref-13", "national"]);
        assert!(t.above(t.index_of("nat", "national").unwrap()).is_empty());
    }

    #[test]
    fn a_failed_node_counts_as_stopped_only_when_its_pods_are_gone() {
        assert!(counts_as_stopped(NodePhase::Offline, false, || 1));
        assert!(counts_as_stopped(NodePhase::Failed, false, || 0));
        assert!(!counts_as_stopped(NodePhase::Failed, false, || 2));
        for phase in [
            NodePhase::Starting,
            NodePhase::Online,
            NodePhase::Draining,
            NodePhase::Stopping,
            NodePhase::DailyBatch,
        ] {
            assert!(!counts_as_stopped(phase, false, || 0), "{phase:?}");
        }
    }

    #[test]
    fn a_suspended_node_never_holds_up_the_nodes_above_it() {
        for phase in [
            NodePhase::Starting,
            NodePhase::Online,
            NodePhase::Draining,
            NodePhase::Stopping,
            NodePhase::DailyBatch,
            NodePhase::Failed,
        ] {
            assert!(counts_as_stopped(phase, true, || 2), "{phase:?}");
        }
    }

    #[test]
    fn the_topology_epoch_moves_on_new_changed_and_deleted_specs_not_on_status_writes() {
        let cache = TopologyCache::default();
        let mut follow = cache.follower();
        let epoch = || cache.epoch.load(Ordering::SeqCst);
        let mut cs = node(
            "p13",
            "cs-131016",
            json!({"tier": "CS", "municipality": "131016"}),
            1,
        );
        follow(&watcher::Event::Apply(cs.clone()));
        let after_add = epoch();
        assert!(after_add > 0);
        cs.status = Some(JukiNodeStatus {
            phase: Some(NodePhase::Online),
            ..Default::default()
        });
        follow(&watcher::Event::Apply(cs.clone()));
        assert_eq!(
            epoch(),
            after_add,
            "a status write is not a topology change"
        );
        cs.metadata.generation = Some(2);
        follow(&watcher::Event::Apply(cs.clone()));
        assert_eq!(epoch(), after_add + 1);
        follow(&watcher::Event::Delete(cs.clone()));
        assert_eq!(epoch(), after_add + 2);
        follow(&watcher::Event::<JukiNode>::Init);
        follow(&watcher::Event::<JukiNode>::InitDone);
        assert_eq!(epoch(), after_add + 3, "a relist may have dropped nodes");
    }
}
