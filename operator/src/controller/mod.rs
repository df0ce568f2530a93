//! The controllers: they read caches, call the pure core (planner, calendar, extension
//! evaluation) and apply the result. One shared [`Context`] holds the caches and settings.

mod batch_slots;
mod by_node;
mod calendar;
mod delivery;
mod extension;
mod holds;
mod node;
mod own_writes;
mod schedule;
mod view;

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::api::{FileDelivery, JobSchedule, JukiNode, OperatingCalendar, ServiceExtension};
use crate::clock::Clock;
use crate::resources::{BATCH_LABEL, MANAGER, SqliteVolume};
use crate::telemetry::Metrics;
use by_node::ByNode;

/// Why a reconcile failed, one variant per failing step; transient API errors are retried with
/// backoff. [`Error::step`] labels the error metric.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Applying or scaling an object the operator owns (ConfigMap, Service, claim, Deployment).
    #[error("applying {what}: {source}")]
    Apply {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// Creating a Job (a batch, a scheduled run) or ending one past its time.
    #[error("{what}: {source}")]
    Job {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// Writing an object's status.
    #[error("writing the status of {what}: {source}")]
    Status {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// The failing step, as the `step` label of `juki_reconcile_errors_total`.
    pub fn step(&self) -> &'static str {
        match self {
            Error::Apply { .. } => "apply",
            Error::Job { .. } => "job",
            Error::Status { .. } => "status",
        }
    }
}

/// How the final request / final answer exchange is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FinalExchange {
    /// Call the node's admin API: through the API server's service proxy, or for a node with
    /// `spec.tls` straight to its Service over HTTPS with the operator's certificate.
    Call,
    /// Record it as skipped (clusters whose pods are not real, e.g. kwok).
    Skip,
}

/// Operator settings from the command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Real time a node may stay Starting before it is Failed.
    pub readiness_timeout: Duration,
    /// Real time the final request may take.
    pub final_timeout: Duration,
    pub final_exchange: FinalExchange,
    pub sqlite_volume: SqliteVolume,
    /// Longest real wait between two looks at a node, whatever the calendar says.
    pub max_requeue: Duration,
    /// Publish an Event for every phase change, not only the notable ones.
    pub transition_events: bool,
    /// Real wait between two looks at a Stopping node: a safety net, as pod deletions wake it.
    pub transition_poll: Duration,
    /// Watch only this namespace (nodes, extensions and what they own); all when unset.
    pub namespace: Option<String>,
    /// The operator's client certificate for the nodes that serve mutual TLS.
    pub node_tls: Option<crate::node_client::OperatorTls>,
    /// Most node reconciles at once (0: no limit).
    pub concurrency: u16,
    /// Most nodes running their batch Jobs at once (0: no limit).
    pub max_batch_nodes: usize,
    /// The Ed25519 public keys (hex, comma-separated) the nodes require delivery signatures
    /// by; None: signatures are not checked.
    pub delivery_keys: Option<String>,
    /// Plan nodes without spec.tls (plain HTTP); refused otherwise.
    pub allow_plain_http: bool,
    /// The collector the nodes' pods export spans to; None: they export none.
    pub otlp_endpoint: Option<String>,
    /// Publish the per-node health series (and wake to update them as time makes faults).
    pub node_health_series: bool,
}

impl Settings {
    /// An Api over the watched namespace (or all).
    pub fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
}

/// Everything a reconcile needs.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    pub recorder: Recorder,
    pub settings: Settings,
    pub nodes: Store<JukiNode>,
    pub calendars: Store<OperatingCalendar>,
    pub extensions: Store<ServiceExtension>,
    pub deployments: Store<Deployment>,
    pub jobs: Store<Job>,
    pub pods: Store<Pod>,
    /// Who is upstream of whom, rebuilt only when the set of nodes or their specs change.
    pub topology: view::TopologyCache,
    /// The names of each node's batch Jobs.
    pub jobs_by_node: Arc<ByNode>,
    /// The names of each node's own pods (batch Job pods left out).
    pub pods_by_node: Arc<ByNode>,
    /// Which nodes may run their batch Jobs now.
    pub batch_slots: Arc<batch_slots::BatchSlots>,
    /// Writes of this operator its caches do not show yet.
    pub own_writes: Arc<own_writes::OwnWrites>,
    /// The last valid calendars and own online ends, planned with while an edit is invalid.
    pub last_valid: Arc<view::LastValid>,
    pub schedules: Store<JobSchedule>,
    /// The nodes whose next start a scheduled run holds back.
    pub holds: Arc<holds::Holds>,
    /// The started nodes a required delivery they have not applied keeps from going Online.
    pub delivery_holds: Arc<holds::Holds>,
    pub deliveries: Store<FileDelivery>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("clock", &self.clock)
            .field("settings", &self.settings)
            .finish()
    }
}

/// A cache of one kind, and the stream of its changes for triggering reconciles. Each change is
/// announced only after the store holds it, so a reconcile it triggers never reads an older copy.
pub(crate) struct Shared<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    pub store: Store<K>,
    pub changes: reflector::ReflectHandle<K>,
}

/// Starts a shared reflector for `api`; `slim` drops what the operator never reads (managed
/// fields, pod specs) so that the whole country fits in little memory. The task runs until the
/// process ends.
fn shared<K>(api: Api<K>, config: watcher::Config, slim: fn(&mut K)) -> Shared<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    shared_with(api, config, slim, None, |_| {})
}

/// As [`shared`], and `index` follows every event before the store does, and `after` sees every
/// event once the store holds it (a deleted object is gone from the store then, and the shared
/// change streams announce only applied objects).
fn shared_with<K>(
    api: Api<K>,
    config: watcher::Config,
    slim: fn(&mut K),
    index: Option<Arc<ByNode>>,
    mut after: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> Shared<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store_shared(8192);
    let changes = writer
        .subscribe()
        .expect("a shared store can be subscribed to");
    let stream = watcher(api, config)
        .default_backoff()
        .modify(move |o: &mut K| {
            o.meta_mut().managed_fields = None;
            slim(o);
        })
        .inspect_ok(move |event| {
            if let Some(index) = &index {
                index.follow(event);
            }
        })
        .reflect_shared(writer)
        .inspect_ok(move |event| after(event))
        .applied_objects();
    tokio::spawn(stream.for_each(|_| async {}));
    Shared { store, changes }
}

/// After a restart, the nodes whose batch Jobs run hold their slots before any other takes one.
fn hold_running_batches(ctx: &Context) {
    for node in ctx.nodes.state() {
        let ns = node.metadata.namespace.as_deref().unwrap_or_default();
        let jobs = view::jobs_of(ctx, ns, &node.name_any());
        if jobs
            .iter()
            .any(|(_, _, s)| *s == crate::planner::JobState::Running)
        {
            ctx.batch_slots
                .hold(&reflector::ObjectRef::from_obj(&*node));
        }
    }
}

/// Runs every controller until the process ends.
pub async fn run(client: Client, clock: Arc<dyn Clock>, metrics: Metrics, settings: Settings) {
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let all = watcher::Config::default();
    let topology = view::TopologyCache::default();
    let (batch_wake, batch_wakes) = futures::channel::mpsc::unbounded();
    let batch_slots = Arc::new(batch_slots::BatchSlots::new(
        settings.max_batch_nodes,
        // Pods that take longer to go than pods may take to come up are stuck.
        settings.readiness_timeout,
        batch_wake,
    ));
    let mut follow_topology = topology.follower();
    let slots = batch_slots.clone();
    let node_metrics = metrics.clone();
    let nodes = shared_with(
        settings.api::<JukiNode>(&client),
        all.clone(),
        |_| {},
        None,
        move |event| {
            follow_topology(event);
            // A node deleted without a last reconcile must not keep its batch slot.
            if let watcher::Event::Delete(node) = event {
                slots.forget(&reflector::ObjectRef::from_obj(node));
                // Its monitoring series go with it (an alert on it resolves).
                node_metrics.forget_node(
                    node.metadata.namespace.as_deref().unwrap_or_default(),
                    node.metadata.name.as_deref().unwrap_or_default(),
                );
            }
        },
    );
    let calendars = shared(
        Api::<OperatingCalendar>::all(client.clone()),
        all.clone(),
        |_| {},
    );
    let extensions = shared(
        settings.api::<ServiceExtension>(&client),
        all.clone(),
        |_| {},
    );
    let schedules = shared(settings.api::<JobSchedule>(&client), all.clone(), |_| {});
    let (hold_wake, hold_wakes) = futures::channel::mpsc::unbounded();
    let delivery_holds = Arc::new(holds::Holds::new(hold_wake.clone()));
    let released = delivery_holds.clone();
    // A deleted delivery gets no last reconcile: what it held is released here.
    let deliveries = shared_with(
        settings.api::<FileDelivery>(&client),
        all.clone(),
        |_| {},
        None,
        move |event| {
            if let watcher::Event::Delete(d) = event {
                released.set(&d.uid().unwrap_or_default(), Default::default());
            }
        },
    );
    let deployments = shared(settings.api::<Deployment>(&client), owned.clone(), |d| {
        // The pod template's spec is ours and known; its annotations carry the support hash.
        if let Some(spec) = d.spec.as_mut() {
            spec.template.spec = None;
        }
    });
    let jobs_by_node = Arc::new(ByNode::new(|_| false));
    let jobs = shared_with(
        settings.api::<Job>(&client),
        owned.clone(),
        |j| j.spec = None,
        Some(jobs_by_node.clone()),
        |_| {},
    );
    // A batch Job's pods are not the node's own: they are known through their Job. Those made
    // since batch pods lost the node and managed-by labels are not watched at all; this keeps
    // out the ones an older operator made, which stay until their Job's TTL.
    let pods_by_node = Arc::new(ByNode::new(|labels| labels.contains_key(BATCH_LABEL)));
    let (pod_deleted, pod_deletions) = futures::channel::mpsc::unbounded();
    let pods = shared_with(
        settings.api::<Pod>(&client),
        owned,
        |p| {
            // Only the Ready condition is read: a node is Online when its pods say so, without
            // waiting for the Deployment status, which lags far behind when a whole tier starts.
            p.spec = None;
            if let Some(status) = p.status.as_mut() {
                let ready = status
                    .conditions
                    .take()
                    .into_iter()
                    .flatten()
                    .filter(|c| c.type_ == "Ready")
                    .collect::<Vec<_>>();
                *status = Default::default();
                status.conditions = Some(ready);
            }
        },
        Some(pods_by_node.clone()),
        move |event| {
            if let watcher::Event::Delete(pod) = event {
                let _ = pod_deleted.unbounded_send(pod.clone());
            }
        },
    );
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    // Decide nothing before every cache has its first full list: an empty calendar cache would
    // make every node look invalid for a moment.
    let ready = tokio::join!(
        nodes.store.wait_until_ready(),
        calendars.store.wait_until_ready(),
        extensions.store.wait_until_ready(),
        deployments.store.wait_until_ready(),
        jobs.store.wait_until_ready(),
        pods.store.wait_until_ready()
    );
    let results = [ready.0, ready.1, ready.2, ready.3, ready.4, ready.5];
    if results.iter().any(Result::is_err) {
        tracing::warn!("a cache stopped before its first list");
    }
    let ctx = Arc::new(Context {
        client: client.clone(),
        clock,
        metrics,
        recorder,
        settings,
        nodes: nodes.store.clone(),
        calendars: calendars.store.clone(),
        extensions: extensions.store.clone(),
        deployments: deployments.store.clone(),
        jobs: jobs.store.clone(),
        pods: pods.store.clone(),
        topology,
        jobs_by_node,
        pods_by_node,
        own_writes: Default::default(),
        last_valid: Default::default(),
        batch_slots,
        schedules: schedules.store.clone(),
        holds: Arc::new(holds::Holds::new(hold_wake.clone())),
        delivery_holds,
        deliveries: deliveries.store.clone(),
    });
    hold_running_batches(&ctx);
    tokio::spawn(count_nodes(ctx.clone()));
    // A schedule looks again when a schedule, a node or a Job changes.
    let schedule_changes = vec![
        schedules.changes.map(|_| ()).boxed(),
        nodes.changes.clone().map(|_| ()).boxed(),
        jobs.changes.clone().map(|_| ()).boxed(),
    ];
    let triggers = node::Triggers {
        nodes,
        calendars,
        extensions,
        deployments,
        jobs,
        pods,
        pod_deletions,
        batch_wakes,
        hold_wakes,
    };
    tokio::join!(
        node::run(triggers, ctx.clone()),
        calendar::run(ctx.clone()),
        extension::run(ctx.clone()),
        delivery::run(ctx.clone(), deliveries),
        schedule::run(ctx, schedule_changes)
    );
}

/// Keeps the `juki_nodes{tier,phase}` gauge current from the node cache.
async fn count_nodes(ctx: Arc<Context>) {
    loop {
        let mut counts: std::collections::BTreeMap<(String, String), u64> = Default::default();
        for n in ctx.nodes.state() {
            let phase = n
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .map_or("Unknown".to_string(), |p| format!("{p:?}"));
            *counts
                .entry((n.spec.tier.as_str().to_string(), phase))
                .or_default() += 1;
        }
        let rows: Vec<(String, String, u64)> =
            counts.into_iter().map(|((t, p), c)| (t, p, c)).collect();
        ctx.metrics.set_nodes(&rows);
        // Nodes deleted while the watch was down are not announced one by one.
        ctx.metrics.retain_nodes(&|ns, name| {
            ctx.nodes
                .get(&reflector::ObjectRef::new(name).within(ns))
                .is_some()
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// How the operator reaches the admin API of node `ns/name`: through the API server's service
/// proxy, or, for a node that serves mutual TLS (`spec.tls`), straight to its Service with the
/// operator's own certificate (the proxy cannot present one).
pub(super) async fn node_route(
    ctx: &Context,
    ns: &str,
    name: &str,
    tls: bool,
) -> Result<crate::node_client::NodeRoute, String> {
    use crate::node_client::NodeRoute;
    match (tls, &ctx.settings.node_tls) {
        (false, _) => Ok(NodeRoute::proxy(
            &ctx.client,
            ns,
            name,
            crate::resources::PORT,
        )),
        (true, Some(identity)) => {
            let url = crate::resources::service_url(name, ns, true);
            NodeRoute::direct(&url, identity, ctx.settings.final_timeout).await
        }
        (true, None) => Err(format!(
            "{ns}/{name} serves mutual TLS (spec.tls): the operator needs its own \
             certificate (--node-tls-cert, --node-tls-key, --node-tls-ca; CN operator)"
        )),
    }
}

/// Writes a status as a merge patch of what changed since `old` (the cached status); fields that
/// became empty are removed. Writes nothing when the two are equal. Returns the object's new
/// resourceVersion when it wrote.
pub(super) async fn patch_status<K, S>(
    api: &Api<K>,
    name: &str,
    old: Option<&S>,
    new: &S,
    ctx: &Context,
) -> Result<Option<String>, Error>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    S: serde::Serialize,
{
    let old = serde_json::to_value(old).unwrap_or_default();
    let new = serde_json::to_value(new).unwrap_or_default();
    let Some(patch) = crate::merge_patch::diff(&old, &new) else {
        return Ok(None);
    };
    let kind = K::kind(&());
    ctx.metrics.api_write(&format!("{kind}Status"));
    api.patch_status(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({ "status": patch })),
    )
    .await
    .map_err(|source| Error::Status {
        what: format!("{kind} {name}"),
        source,
    })
    .map(|written| written.meta().resource_version.clone())
}
