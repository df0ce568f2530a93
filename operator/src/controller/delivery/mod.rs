//! The FileDelivery controller: it reads the content (inline or a ConfigMap key) and checks its
//! sha256, gives it to the national server, asks each node of the open wave to fetch it from
//! its upstream (the tree carries it: a prefecture from the national server, a CS from its
//! prefecture), reads back where every Online node is with it, and on a failure takes it back
//! from every node that holds it. The wave logic is the pure `delivery_plan`; this file only
//! observes and acts. A node applies what it fetched at its next start, so a delivery spans at
//! least one night.
//!
//! What a node last said is kept in memory: a node the calendar has stopped cannot be asked,
//! and keeps the state it had (after an operator restart it counts as pending until it is
//! Online again).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::DeleteParams;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};

use super::view::{Topology, pods_of};
use super::{Context, Error, FinalExchange, Shared, node_route};
use crate::api::{
    DeliveryPhase, DeliverySource, FileDelivery, FileDeliveryStatus, FileParts, JukiNode, NodePhase,
};

use crate::delivery_plan::{
    self, NodeState, NodeView, Observed, Plan, Rollout, Target, canaries_of, targets_of,
};
use crate::node_client::{self, Answer};
use crate::planner::Reason;
use crate::topology::TopologyNode;
use juki_calendar::Tier;

mod program;

/// Real wait between two looks at a delivery that is under way.
const ACTIVE_REQUEUE: Duration = Duration::from_secs(3);
/// How long one call to a node may take (a fetch streams the whole file).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a node may take to say where it is (a node going Online waits for it).
const VIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// Most node calls at once.
const CALLS_AT_ONCE: usize = 8;

/// What the nodes last said about one delivery (by the delivery's uid).
#[derive(Debug, Default)]
struct Seen {
    /// The file, content and rollback the states are about: an edit of them starts over.
    version: (String, String, bool),
    states: BTreeMap<String, NodeState>,
    /// Nodes that confirmed a withdrawal after a halt.
    withdrawn: BTreeSet<String>,
    /// The national server holds the content (it keeps it: asked or given once is enough).
    source_holds: bool,
    /// Held nodes restarted to apply what they fetched while held (once each).
    restarted: BTreeSet<String>,
}

struct Deliveries {
    ctx: Arc<Context>,
    seen: Mutex<HashMap<String, Seen>>,
    /// The deliveries that exist: what was seen of a deleted one is forgotten.
    objects: Store<FileDelivery>,
}

pub(super) async fn run(ctx: Arc<Context>, deliveries: Shared<FileDelivery>) {
    let controller = Controller::for_shared_stream(deliveries.changes, deliveries.store.clone());
    let state = Arc::new(Deliveries {
        ctx,
        seen: Mutex::default(),
        objects: deliveries.store,
    });
    controller
        .run(
            reconcile,
            |_, error, _| {
                tracing::warn!(%error, "FileDelivery reconcile failed; retrying");
                Requeue::requeue(Duration::from_secs(5))
            },
            state,
        )
        .for_each(|_| async {})
        .await;
}

/// Why the delivery cannot be planned at all: the status shows it and nothing is sent.
struct Refused {
    phase: DeliveryPhase,
    reason: &'static str,
    message: String,
}

impl Refused {
    /// Bad input: the delivery fails until its spec is fixed.
    fn invalid(reason: &'static str, message: String) -> Refused {
        Refused {
            phase: DeliveryPhase::Failed,
            reason,
            message,
        }
    }

    /// Something that may come (a ConfigMap, node calls): the delivery waits.
    fn waiting(reason: &'static str, message: String) -> Refused {
        Refused {
            phase: DeliveryPhase::Pending,
            reason,
            message,
        }
    }
}

async fn reconcile(object: Arc<FileDelivery>, state: Arc<Deliveries>) -> Result<Requeue, Error> {
    let ctx = &state.ctx;
    let ns = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let api: Api<FileDelivery> = Api::namespaced(ctx.client.clone(), &ns);
    let old = object.status.clone();
    let (status, wait) = match prepare(&object, ctx).await {
        Err(refused) => {
            // A delivery that cannot go on holds nobody.
            ctx.delivery_holds
                .set(&object.uid().unwrap_or_default(), HashMap::new());
            (
                refused_status(&object, &refused, ctx.clock.now()),
                ctx.settings.max_requeue,
            )
        }
        Ok((carried, rollout_base, topology)) => {
            let status = match carried {
                Carried::File(parts, content) => {
                    deliver(&object, &state, parts, content, rollout_base, &topology).await
                }
                Carried::Program(image) => {
                    program::deliver(&object, ctx, image, rollout_base, &topology).await
                }
            };
            let done = match status.phase {
                Some(DeliveryPhase::Delivered) => true,
                Some(DeliveryPhase::Failed | DeliveryPhase::RolledBack) => {
                    status.withdrawing.is_empty()
                }
                _ => false,
            };
            let wait = if done {
                ctx.settings.max_requeue
            } else {
                ACTIVE_REQUEUE.min(ctx.settings.max_requeue)
            };
            (status, wait)
        }
    };
    let before = old.as_ref().and_then(|s| s.phase);
    if status.phase != before {
        announce(&object, ctx, &status).await;
    }
    super::patch_status(&api, &name, old.as_ref(), &status, ctx).await?;
    Ok(Requeue::requeue(wait))
}

/// What a delivery carries, ready to deliver.
enum Carried<'a> {
    /// A file and its content (None: uploaded to the national server).
    File(FileParts<'a>, Option<Vec<u8>>),
    Program(&'a str),
}

/// The targets, and the content checked against `spec.sha256` (or the program).
async fn prepare<'a>(
    object: &'a FileDelivery,
    ctx: &Context,
) -> Result<(Carried<'a>, Rollout, Arc<Topology>), Refused> {
    let spec = &object.spec;
    let topology = Topology::read(ctx);
    let targets = targets_of(&spec.targets, &topology.nodes)
        .map_err(|e| Refused::invalid("InvalidTargets", e.to_string()))?;
    let canaries = canaries_of(&spec.canaries)
        .map_err(|e| Refused::invalid("InvalidCanaries", e.to_string()))?;
    let required = spec
        .required_before
        .as_deref()
        .map(delivery_plan::required_before)
        .transpose()
        .map_err(|e| Refused::invalid("InvalidRequiredBefore", e.to_string()))?;
    let rollout = Rollout {
        targets,
        observed: BTreeMap::new(),
        canaries,
        paused: spec.paused,
        source_holds: false,
        rolled_back: spec.rollback,
        required,
    };
    delivery_plan::validate(&rollout)
        .map_err(|e| Refused::invalid("InvalidTargets", e.to_string()))?;
    if let Some(program) = &spec.program {
        return Ok((Carried::Program(&program.image), rollout, topology));
    }
    let parts = spec.file_parts().ok_or_else(|| {
        Refused::invalid(
            "InvalidSpec",
            "spec: a delivery is either a program (spec.program) or a file (spec.file, spec.source and spec.sha256)".into(),
        )
    })?;
    let content = read_source(object, parts.source, ctx).await?;
    let actual = content.as_deref().map(sha256_hex);
    if let (Some(content), Some(actual)) = (&content, actual)
        && actual != parts.sha256
    {
        return Err(Refused::invalid(
            "Sha256Mismatch",
            format!(
                "spec.sha256: the content ({} bytes) has sha256 {actual}, not {}; nothing was sent to any node",
                content.len(),
                parts.sha256
            ),
        ));
    }
    if ctx.settings.final_exchange == FinalExchange::Skip {
        return Err(Refused::waiting(
            "NodeCallsOff",
            "the operator does not call node services (--final-exchange=skip): nothing is delivered"
                .into(),
        ));
    }
    Ok((Carried::File(parts, content), rollout, topology))
}

/// The file's bytes from `spec.source`; None for content uploaded to the national server.
async fn read_source(
    object: &FileDelivery,
    source: &DeliverySource,
    ctx: &Context,
) -> Result<Option<Vec<u8>>, Refused> {
    if let Some(text) = &source.inline {
        return Ok(Some(text.as_bytes().to_vec()));
    }
    let Some(reference) = &source.config_map else {
        return match source.upload {
            Some(_) => Ok(None),
            None => Err(Refused::invalid(
                "InvalidSource",
                "spec.source needs exactly one of configMap, inline or upload".into(),
            )),
        };
    };
    let ns = object.namespace().unwrap_or_default();
    let missing = |what: String| {
        Refused::waiting(
            "SourceMissing",
            format!("spec.source.configMap: {what}; the delivery waits for it"),
        )
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
    let map = config_maps
        .get_opt(&reference.name)
        .await
        .map_err(|e| missing(format!("reading ConfigMap {ns}/{}: {e}", reference.name)))?
        .ok_or_else(|| missing(format!("ConfigMap {ns}/{} does not exist", reference.name)))?;
    let text = map.data.as_ref().and_then(|d| d.get(&reference.key));
    let binary = map.binary_data.as_ref().and_then(|d| d.get(&reference.key));
    match (text, binary) {
        (Some(text), _) => Ok(Some(text.as_bytes().to_vec())),
        (None, Some(bytes)) => Ok(Some(bytes.0.clone())),
        (None, None) => Err(missing(format!(
            "ConfigMap {ns}/{} has no key {:?}",
            reference.name, reference.key
        ))),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// One pass: observe, act on the plan, and the status that results.
async fn deliver(
    object: &FileDelivery,
    state: &Deliveries,
    parts: FileParts<'_>,
    content: Option<Vec<u8>>,
    mut rollout: Rollout,
    topology: &Topology,
) -> FileDeliveryStatus {
    let ctx = &state.ctx;
    let uid = object.uid().unwrap_or_default();
    let (file, sha) = (parts.file.to_owned(), parts.sha256.to_owned());
    let mut known = remembered(
        state,
        &uid,
        (file.clone(), sha.clone(), object.spec.rollback),
    );
    let mut problems = Vec::new();

    // Ask every node that can answer and has not applied it yet where it is.
    let Reachable { online, held } = reachable(ctx, topology);
    let askable: BTreeSet<String> = online.union(&held).cloned().collect();
    let national = topology.nodes.iter().find(|n| n.tier == Tier::National);
    let targets: HashSet<&str> = rollout.targets.iter().map(|t| t.name.as_str()).collect();
    let asked: Vec<TopologyNode> = topology
        .nodes
        .iter()
        .filter(|n| {
            let name = key(n);
            let source = n.tier == Tier::National && !known.source_holds;
            // An applied node changes only at a start, or when a rollback is asked for.
            let settled =
                known.states.get(&name) == Some(&NodeState::Applied) && !object.spec.rollback;
            askable.contains(&name) && (source || (targets.contains(name.as_str()) && !settled))
        })
        .cloned()
        .collect();
    let views = at_most(CALLS_AT_ONCE, asked.into_iter().map(|n| view_of(ctx, n))).await;
    // Nodes whose state this pass heard from them (not remembered from before their start).
    let mut heard = BTreeSet::new();
    for (node, view) in views {
        match view {
            Ok(view) => {
                if national.is_some_and(|n| key(n) == node) && view.holds(&sha) {
                    known.source_holds = true;
                }
                if targets.contains(node.as_str()) {
                    known.states.insert(node.clone(), view.state(&file, &sha));
                    heard.insert(node);
                }
            }
            Err(e) => problems.push(format!("{node}: {e}")),
        }
    }

    // The national server is the source: it is given the content while it is Online.
    if let Some(n) = national.filter(|n| online.contains(&key(n)))
        && !known.source_holds
    {
        let given = match content {
            Some(content) => upload(ctx, n, &sha, content).await,
            None => Err(format!(
                "spec.source.upload: the national server does not hold {sha} yet; upload it with \
                 kubectl juki delivery upload FILE -n {}",
                n.namespace
            )),
        };
        match given {
            Ok(()) => known.source_holds = true,
            Err(e) => problems.push(format!("{}: {e}", key(n))),
        }
    }
    rollout.source_holds = known.source_holds;
    rollout.observed = observed(&rollout.targets, &known.states, &online, &askable);
    let plan = delivery_plan::plan(&rollout).unwrap_or_default();

    if !plan.roll_back.is_empty() {
        withdraw(
            ctx,
            topology,
            &plan,
            &askable,
            &file,
            &sha,
            &mut known,
            &mut problems,
        )
        .await;
    } else if !plan.fetch.is_empty() {
        fetch(
            ctx,
            topology,
            &plan,
            parts,
            object.spec.signature.as_deref(),
            &mut known,
            &mut problems,
        )
        .await;
        heard.extend(plan.fetch.iter().cloned());
        rollout.observed = observed(&rollout.targets, &known.states, &online, &askable);
    }
    let plan = delivery_plan::plan(&rollout).unwrap_or_default();
    let object_name = format!(
        "{}/{}",
        object.namespace().unwrap_or_default(),
        object.name_any()
    );
    let holds = delivery_plan::held_nodes(&object_name, &rollout, &plan, ctx.clock.now());
    // A held node that fetched it while held applies it only at a start: it is restarted.
    let to_restart: Vec<String> = holds
        .iter()
        .map(|(node, _)| node)
        .filter(|n| held.contains(*n) && heard.contains(*n) && !known.restarted.contains(*n))
        .filter(|n| known.states.get(*n) == Some(&NodeState::Fetched))
        .cloned()
        .collect();
    for node in to_restart {
        match restart(ctx, object, &node).await {
            Ok(()) => {
                known.restarted.insert(node);
            }
            Err(e) => problems.push(format!("{node}: restart to apply: {e}")),
        }
    }
    ctx.delivery_holds.set(
        &uid,
        holds
            .into_iter()
            .map(|(node, why)| (node_ref(&node), why))
            .collect(),
    );
    let mut status = delivery_plan::status_of(&delivery_plan::summarize(&rollout, &plan), &plan);
    if plan.halted_in.is_some() || rollout.rolled_back {
        status.withdrawing = plan
            .roll_back
            .iter()
            .filter(|n| !known.withdrawn.contains(*n))
            .cloned()
            .collect();
    }
    status.message = problems.first().cloned();
    status.conditions = conditions(object, &status, &plan, ctx.clock.now());
    status.observed_generation = object.metadata.generation;
    remember(state, &uid, known);
    status
}

fn key(n: &TopologyNode) -> String {
    format!("{}/{}", n.namespace, n.name)
}

/// The nodes that can be asked now.
struct Reachable {
    /// Phase Online: their pods run and are Ready.
    online: BTreeSet<String>,
    /// Started and held back by a required delivery: their pods run, and fetch while held.
    held: BTreeSet<String>,
}

fn reachable(ctx: &Context, topology: &Topology) -> Reachable {
    let held_reason = Some(Reason::DeliveryNotApplied.as_str());
    let mut phases: HashMap<(String, String), (NodePhase, bool)> = HashMap::new();
    for n in ctx.nodes.state() {
        let Some(status) = n.status.as_ref() else {
            continue;
        };
        let Some(phase) = status.phase else { continue };
        let held = phase == NodePhase::Starting && status.reason.as_deref() == held_reason;
        phases.insert(
            (n.namespace().unwrap_or_default(), n.name_any()),
            (phase, held),
        );
    }
    let mut reachable = Reachable {
        online: BTreeSet::new(),
        held: BTreeSet::new(),
    };
    for n in &topology.nodes {
        match phases.get(&(n.namespace.clone(), n.name.clone())) {
            Some((NodePhase::Online, _)) => reachable.online.insert(key(n)),
            Some((_, true)) => reachable.held.insert(key(n)),
            _ => false,
        };
    }
    reachable
}

/// `namespace/name` as a JukiNode reference.
fn node_ref(node: &str) -> ObjectRef<JukiNode> {
    let (ns, name) = node.split_once('/').unwrap_or(("", node));
    ObjectRef::new(name).within(ns)
}

/// Deletes a held node's pods once they are all ready: its Deployment makes new ones, which
/// apply what is staged as they start.
async fn restart(ctx: &Context, object: &FileDelivery, node: &str) -> Result<(), String> {
    let (ns, name) = node.split_once('/').unwrap_or(("", node));
    let (all, ready) = pods_of(ctx, ns, name);
    if all == 0 || ready < all {
        return Err(format!(
            "{ready} of {all} pods ready; restarted once they all are"
        ));
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    for pod in ctx.pods_by_node.names(ns, name) {
        ctx.metrics.api_write("Pod");
        match pods.delete(&pod, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(format!("deleting pod {ns}/{pod}: {e}")),
        }
    }
    tracing::info!(%node, delivery = %object.name_any(), "restarting a held node to apply a delivery");
    let note = format!(
        "{node} fetched {} while held from going Online; its pods were restarted to apply it",
        object.spec.what()
    );
    publish(ctx, object, false, "RestartedToApply".into(), note).await;
    Ok(())
}

fn observed(
    targets: &[Target],
    states: &BTreeMap<String, NodeState>,
    online: &BTreeSet<String>,
    askable: &BTreeSet<String>,
) -> BTreeMap<String, Observed> {
    targets
        .iter()
        .map(|t| {
            let state = states.get(&t.name).cloned().unwrap_or(NodeState::Pending);
            let o = Observed {
                state,
                online: askable.contains(&t.name),
                // Online is the node's readiness seen through its pods.
                ready: online.contains(&t.name),
                upstream_accepts: true,
            };
            (t.name.clone(), o)
        })
        .collect()
}

fn remembered(state: &Deliveries, uid: &str, version: (String, String, bool)) -> Seen {
    let mut seen = state.seen.lock().unwrap_or_else(|e| e.into_inner());
    let known = seen.remove(uid).unwrap_or_default();
    if known.version == version {
        known
    } else {
        Seen {
            version,
            ..Seen::default()
        }
    }
}

fn remember(state: &Deliveries, uid: &str, known: Seen) {
    let live: HashSet<String> = state
        .objects
        .state()
        .iter()
        .filter_map(|d| d.uid())
        .collect();
    let mut seen = state.seen.lock().unwrap_or_else(|e| e.into_inner());
    seen.retain(|uid, _| live.contains(uid));
    seen.insert(uid.to_owned(), known);
}

async fn call(
    ctx: &Context,
    node: &TopologyNode,
    method: http::Method,
    path: &str,
    body: Vec<u8>,
    json: bool,
    timeout: Duration,
) -> Result<Answer, String> {
    let route = node_route(ctx, &node.namespace, &node.name, node.tls).await?;
    node_client::call(&route, method, path, body, json, timeout).await
}

/// Runs `calls`, at most `n` at once (the futures are made first: a stream of borrowing
/// closures is not `Send` for every lifetime).
async fn at_most<F: std::future::Future>(
    n: usize,
    calls: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let calls: Vec<F> = calls.collect();
    futures::stream::iter(calls)
        .buffer_unordered(n)
        .collect()
        .await
}

/// What the node says of its deliveries (`GET /admin/v1/deliveries`), by `namespace/name`.
pub(super) async fn view_of(
    ctx: &Context,
    node: TopologyNode,
) -> (String, Result<NodeView, String>) {
    let node = &node;
    let answer = call(
        ctx,
        node,
        http::Method::GET,
        "/admin/v1/deliveries",
        vec![],
        true,
        VIEW_TIMEOUT,
    )
    .await;
    let view = answer.and_then(|a| {
        if !a.ok() {
            return Err(format!("answered {}: {}", a.status, a.excerpt(200)));
        }
        serde_json::from_slice(&a.body).map_err(|e| format!("unreadable answer: {e}"))
    });
    (key(node), view)
}

async fn upload(
    ctx: &Context,
    node: &TopologyNode,
    sha: &str,
    content: Vec<u8>,
) -> Result<(), String> {
    let path = format!("/admin/v1/deliveries/content/{sha}");
    let answer = call(
        ctx,
        node,
        http::Method::PUT,
        &path,
        content,
        false,
        CALL_TIMEOUT,
    )
    .await?;
    if answer.ok() {
        tracing::info!(node = %key(node), sha256 = sha, "delivery content given to the source");
        Ok(())
    } else {
        Err(format!(
            "upload: answered {}: {}",
            answer.status,
            answer.excerpt(200)
        ))
    }
}

/// The topology's nodes named as the plan names them (`namespace/name`).
fn nodes_of(topology: &Topology, names: &[String]) -> Vec<TopologyNode> {
    let wanted: HashSet<&str> = names.iter().map(String::as_str).collect();
    topology
        .nodes
        .iter()
        .filter(|n| wanted.contains(key(n).as_str()))
        .cloned()
        .collect()
}

/// Asks the nodes the plan lets fetch: each fetches from its upstream and stages the file.
async fn fetch(
    ctx: &Context,
    topology: &Topology,
    plan: &Plan,
    parts: FileParts<'_>,
    signature: Option<&str>,
    known: &mut Seen,
    problems: &mut Vec<String>,
) {
    let (file, sha) = (parts.file, parts.sha256);
    let body = serde_json::json!({"sha256": sha, "file": file, "signature": signature}).to_string();
    let asks = nodes_of(topology, &plan.fetch).into_iter().map(|node| {
        let body = body.clone().into_bytes();
        async move {
            let path = "/admin/v1/deliveries/fetch";
            let answer = call(
                ctx,
                &node,
                http::Method::POST,
                path,
                body,
                true,
                CALL_TIMEOUT,
            )
            .await;
            (key(&node), answer)
        }
    });
    let answers = at_most(CALLS_AT_ONCE, asks).await;
    for (node, answer) in answers {
        match fetched(&answer) {
            Some(state) => {
                tracing::info!(%node, state = ?state.phase(), file, "delivery fetched");
                known.states.insert(node, state);
            }
            None => {
                let why = match &answer {
                    Ok(a) => format!("answered {}: {}", a.status, a.excerpt(200)),
                    Err(e) => e.clone(),
                };
                problems.push(format!("{node}: fetch: {why}"));
            }
        }
    }
}

/// What a fetch answer says of the node: staged, refused content (a failure of the delivery),
/// or nothing (an upstream not ready, a node unreachable: asked again on the next pass).
fn fetched(answer: &Result<Answer, String>) -> Option<NodeState> {
    let answer = answer.as_ref().ok()?;
    if answer.ok() {
        return Some(NodeState::Fetched);
    }
    match answer.error_tag().as_deref() {
        Some("digest_mismatch" | "bad_signature") => Some(NodeState::Failed(format!(
            "fetch refused: {}",
            answer.excerpt(300)
        ))),
        _ => None,
    }
}

/// Takes the delivery back from every node the plan names that can be asked now.
#[allow(clippy::too_many_arguments)]
async fn withdraw(
    ctx: &Context,
    topology: &Topology,
    plan: &Plan,
    online: &BTreeSet<String>,
    file: &str,
    sha: &str,
    known: &mut Seen,
    problems: &mut Vec<String>,
) {
    let body = serde_json::json!({ "sha256": sha }).to_string();
    let path = format!("/admin/v1/deliveries/files/{file}/withdraw");
    let due: Vec<String> = plan
        .roll_back
        .iter()
        .filter(|n| online.contains(*n) && !known.withdrawn.contains(*n))
        .cloned()
        .collect();
    let asks = nodes_of(topology, &due).into_iter().map(|node| {
        let (body, path) = (body.clone().into_bytes(), path.clone());
        async move {
            let answer = call(
                ctx,
                &node,
                http::Method::POST,
                &path,
                body,
                true,
                CALL_TIMEOUT,
            )
            .await;
            (key(&node), answer)
        }
    });
    let answers = at_most(CALLS_AT_ONCE, asks).await;
    for (node, answer) in answers {
        match answer {
            Ok(a) if a.ok() => {
                tracing::info!(%node, file, answer = %a.excerpt(200), "delivery withdrawn");
                known.withdrawn.insert(node);
            }
            Ok(a) => problems.push(format!(
                "{node}: withdraw: answered {}: {}",
                a.status,
                a.excerpt(200)
            )),
            Err(e) => problems.push(format!("{node}: withdraw: {e}")),
        }
    }
}

fn condition(
    now: jiff::Timestamp,
    object: &FileDelivery,
    type_: &str,
    on: bool,
    reason: &str,
    message: String,
) -> Condition {
    let old = object
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
    let status = if on { "True" } else { "False" };
    let since = match old {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(now),
    };
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: object.metadata.generation,
    }
}

fn conditions(
    object: &FileDelivery,
    status: &FileDeliveryStatus,
    plan: &Plan,
    now: jiff::Timestamp,
) -> Vec<Condition> {
    let delivered = status.phase == Some(DeliveryPhase::Delivered);
    let halted = plan.halted_in.is_some();
    let (reason, message) = match (delivered, halted, object.spec.paused) {
        _ if object.spec.rollback => (
            "RolledBack",
            format!(
                "spec.rollback: taken back from every node ({} not reached yet)",
                status.withdrawing.len()
            ),
        ),
        (true, _, _) => ("Applied", format!("{} nodes applied it", status.applied)),
        (_, true, _) => (
            "Halted",
            format!(
                "{} node(s) failed: nothing more is fetched and it is taken back",
                status.failed
            ),
        ),
        (_, _, true) => ("Paused", "spec.paused: nothing new is fetched".into()),
        _ => (
            "InProgress",
            format!(
                "wave {}: {} applied, {} fetched, {} pending",
                status.wave.as_deref().unwrap_or("-"),
                status.applied,
                status.fetched,
                status.pending
            ),
        ),
    };
    vec![
        condition(now, object, "Delivered", delivered, reason, message.clone()),
        condition(now, object, "Halted", halted, reason, message),
    ]
}

fn refused_status(
    object: &FileDelivery,
    refused: &Refused,
    now: jiff::Timestamp,
) -> FileDeliveryStatus {
    let failed = refused.phase == DeliveryPhase::Failed;
    FileDeliveryStatus {
        phase: Some(refused.phase),
        message: Some(refused.message.clone()),
        conditions: vec![
            condition(
                now,
                object,
                "Delivered",
                false,
                refused.reason,
                refused.message.clone(),
            ),
            condition(
                now,
                object,
                "Halted",
                failed,
                refused.reason,
                refused.message.clone(),
            ),
        ],
        observed_generation: object.metadata.generation,
        ..FileDeliveryStatus::default()
    }
}

/// An Event when the phase changes: a person sees the delivery start, end or halt.
async fn announce(object: &FileDelivery, ctx: &Context, status: &FileDeliveryStatus) {
    let Some(phase) = status.phase else { return };
    let warning = phase == DeliveryPhase::Failed;
    let phase = phase.as_str();
    let note = match &status.message {
        Some(m) if warning => format!("{phase}: {m}"),
        _ => format!(
            "{phase}: {} of {} nodes applied, {} failed",
            status.applied, status.targets, status.failed
        ),
    };
    publish(ctx, object, warning, format!("Delivery{phase}"), note).await;
}

/// Publishes an Event about the delivery (a failure to publish is only logged).
async fn publish(
    ctx: &Context,
    object: &FileDelivery,
    warning: bool,
    reason: String,
    note: String,
) {
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason,
        note: Some(note.chars().take(1000).collect()),
        action: "Deliver".into(),
        secondary: None,
    };
    ctx.metrics.api_write("Event");
    if let Err(e) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        tracing::debug!(error = %e, "could not publish an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Result<Answer, String> {
        Ok(Answer {
            status,
            body: body.as_bytes().to_vec(),
        })
    }

    #[test]
    fn only_refused_or_unsigned_content_fails_a_node_other_errors_are_asked_again() {
        assert_eq!(
            fetched(&answer(200, r#"{"staged": "codes"}"#)),
            Some(NodeState::Fetched)
        );
        let refused = fetched(&answer(
            502,
            r#"{"error": "digest_mismatch", "message": "the content's sha256 is 00…"}"#,
        ));
        assert!(matches!(refused, Some(NodeState::Failed(m)) if m.contains("digest_mismatch")));
        // A node that needs a signature by a trusted key refuses it: the delivery fails there.
        let unsigned = fetched(&answer(
            400,
            r#"{"error": "bad_signature", "field": "signature", "message": "this node stages only signed deliveries"}"#,
        ));
        assert!(
            matches!(&unsigned, Some(NodeState::Failed(m)) if m.contains("only signed deliveries")),
            "{unsigned:?}"
        );
        for transient in [
            answer(
                503,
                r#"{"error": "unavailable", "message": "outside its online window"}"#,
            ),
            answer(502, r#"{"error": "upstream_missing"}"#),
            answer(503, "<html>service unavailable</html>"),
            Err("node unreachable: connection refused".into()),
        ] {
            assert_eq!(fetched(&transient), None, "{transient:?}");
        }
    }

    #[test]
    fn the_digest_is_lowercase_hex() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
