//! The controllers: they read caches, call the pure core (planner, calendar, extension
//! evaluation) and apply the result. One shared [`Context`] holds the caches and settings.

mod calendar;
mod extension;
mod node;
mod view;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::api::{JukiNode, OperatingCalendar, ServiceExtension};
use crate::clock::Clock;
use crate::resources::{MANAGER, SqliteVolume};
use crate::telemetry::Metrics;

/// Why a reconcile failed; transient API errors are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading or writing {what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let what = what.into();
        move |source| Error::Api { what, source }
    }
}

/// How the final request / final answer exchange is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FinalExchange {
    /// Call the node's admin API through the API server's service proxy.
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
    /// Real wait between two looks at a node in a phase that waits on observed state.
    pub transition_poll: Duration,
    /// Watch only this namespace (nodes, extensions and what they own); all when unset.
    pub namespace: Option<String>,
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
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("clock", &self.clock)
            .field("settings", &self.settings)
            .finish()
    }
}

/// Starts a reflector for `api` and returns its store; the task runs until the process ends.
fn cache<K>(api: Api<K>, config: watcher::Config) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, config))
        .default_backoff()
        .applied_objects();
    tokio::spawn(stream.for_each(|_| async {}));
    reader
}

/// Runs every controller until the process ends.
pub async fn run(client: Client, clock: Arc<dyn Clock>, metrics: Metrics, settings: Settings) {
    let owned =
        watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGER}"));
    let calendars = cache(
        Api::<OperatingCalendar>::all(client.clone()),
        watcher::Config::default(),
    );
    let extensions = cache(settings.api(&client), watcher::Config::default());
    let deployments = cache(settings.api(&client), owned.clone());
    let jobs = cache(settings.api(&client), owned.clone());
    let pods = cache(settings.api(&client), owned);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        },
    );
    for (name, ready) in [
        ("calendars", calendars.wait_until_ready().await),
        ("extensions", extensions.wait_until_ready().await),
    ] {
        if let Err(e) = ready {
            tracing::warn!(cache = name, error = %e, "cache did not sync");
        }
    }
    let _ = tokio::join!(
        deployments.wait_until_ready(),
        jobs.wait_until_ready(),
        pods.wait_until_ready()
    );

    let node_controller = kube::runtime::Controller::new(
        settings.api::<JukiNode>(&client),
        watcher::Config::default(),
    );
    let ctx = Arc::new(Context {
        client: client.clone(),
        clock,
        metrics,
        recorder,
        settings,
        nodes: node_controller.store(),
        calendars,
        extensions,
        deployments,
        jobs,
        pods,
    });
    tokio::spawn(count_nodes(ctx.clone()));
    tokio::join!(
        node::run(node_controller, ctx.clone()),
        calendar::run(ctx.clone()),
        extension::run(ctx)
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
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
