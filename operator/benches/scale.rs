//! Scale benchmark of the operator on the local control plane (`tests/cluster`).
//!
//! `cargo bench -p juki-operator --bench scale` — one run measures, on the same cluster:
//!
//! 1. the floor, a bare kube client with no other logic: the first pass (every node's ConfigMap,
//!    Service, Deployment at 0 replicas — exactly the ones the operator builds — and a status
//!    write, 96 nodes at once); the 1,789 Deployments scaled up in dependency order (national,
//!    prefectures, CSs, each tier waited until ready) and down in reverse order (waiting for the
//!    pods to go); then each tier's batch Jobs (the operator's, each node's in order, 100 nodes
//!    at once), which with the down wave make the floor of the night;
//! 2. the operator (`target/release/juki-operator`, fast clock ×60, its default concurrency) on
//!    1 national, 47 prefecture and 1,741 CS JukiNodes: its first pass (until every node has a
//!    status, a ConfigMap, a Service and a Deployment), which must be complete before the window
//!    opens (`JUKINET_SCALE_LEAD` real seconds after its start, by default 3× the floor's first
//!    pass + 30 s; the run stops if it is not); the start wave (window open → every node Online),
//!    the stop wave (window end → every node has left Stopping) and the night (→ every node
//!    Offline with the day's batches done), API writes per node per transition, `GET pods` in the
//!    stop wave, peak memory and CPU.
//!
//! It prints a table with PASS/MISS per target and exits 0 whatever the figures; if the cluster is
//! down it prints how to start it and exits 0. `JUKINET_SCALE_CS=N` runs a smaller network (N CSs
//! spread over the prefectures). The operator's log goes to /tmp/scale-operator.log.
//!
//! The pods are kwok's fakes (the operator with `--final-exchange skip --sqlite-volume
//! empty-dir`). `JUKINET_SCALE_REAL=1` runs the mid-size network the real node holds instead
//! (1 national, Tottori and Shimane, 20 CSs; `JUKINET_SCALE_CS` changes the CSs) as real
//! juki-node pods, both in the floor and under the operator, which then runs as in production:
//! `--final-exchange call --sqlite-volume pvc`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use common::*;
use futures::{StreamExt, TryStreamExt, stream};
use jiff::{SignedDuration, Timestamp};
use juki_operator::api::{JukiNode, NodePhase, OperatingCalendar};
use juki_operator::resources;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector;
use kube::{Client, ResourceExt};
use serde_json::json;

/// The operating date of the run (a Friday, not a holiday).
const DATE: &str = "2026-11-20";
/// Window open on the operator's clock.
const OPEN: &str = "2026-11-20T07:00:00+09:00";
/// Fast clock factor: one real second is one simulated minute.
const FACTOR: i64 = 60;
const LOG: &str = "/tmp/scale-operator.log";

/// How many of something were left every 10 s of a wave ("10 s: 1200, 20 s: 800, …"): the
/// shape of a wave, its pace and its tail.
#[derive(Debug, Default)]
struct Progress {
    next: f64,
    samples: Vec<String>,
}

impl Progress {
    fn sample(&mut self, elapsed: f64, left: impl FnOnce() -> String) {
        if elapsed >= self.next {
            self.next += 10.0;
            self.samples.push(format!("{:.0} s: {}", elapsed, left()));
        }
    }
    fn line(&self, what: &str) -> String {
        format!("  {what} left: {}", self.samples.join(", "))
    }
}

// ---------------------------------------------------------------------------------------------
// The floor

#[derive(Debug, Default)]
struct Floor {
    /// First pass: seconds to create every node's objects and write its status.
    first_pass_s: f64,
    /// API writes of the first pass.
    first_pass_writes: usize,
    /// Up wave: seconds from the first scale request until each tier is all ready (cumulative).
    up: BTreeMap<Tier, f64>,
    /// Down wave: seconds from the first scale-down until each tier's pods are gone (cumulative).
    down: BTreeMap<Tier, f64>,
    /// The night's batches: seconds each tier's batch Jobs took, run after the down wave.
    batches: BTreeMap<Tier, f64>,
}

impl Floor {
    fn up_total(&self) -> Option<f64> {
        self.up
            .get(&Tier::National)
            .copied()
            .filter(|_| self.up.len() == 3)?;
        self.up.get(&Tier::Cs).copied()
    }
    fn down_total(&self) -> Option<f64> {
        self.down
            .get(&Tier::Cs)
            .copied()
            .filter(|_| self.down.len() == 3)?;
        self.down.get(&Tier::National).copied()
    }
    /// The night: the down wave and each tier's batches one after the other, as a bare client
    /// would run them (a tier's batches before the tier above stops); None without batches.
    fn night_total(&self) -> Option<f64> {
        (self.batches.len() == 3).then(|| {
            self.down_total()
                .map(|d| d + self.batches.values().sum::<f64>())
        })?
    }
}

/// Nodes a bare client works on at once in the first pass: the operator's default
/// `--concurrency`.
const FIRST_PASS_CONCURRENCY: usize = 96;
/// Nodes a bare client runs batches for at once: the operator's default `--max-batch-nodes`.
const BATCH_NODES: usize = 100;

/// The daily batches of the bench's calendar, in the order a node runs them; none with
/// `JUKINET_SCALE_BATCHES=0` (the stop wave without the load of the batch Jobs, which the
/// floor's stop wave does not have).
fn batches() -> &'static [&'static str] {
    if std::env::var("JUKINET_SCALE_BATCHES").as_deref() == Ok("0") {
        &[]
    } else {
        &["statistics", "backup"]
    }
}

/// The floor's first pass: everything the operator's first pass writes for each node (its
/// ConfigMap, Service and Deployment at 0 replicas, with real pods its claims, then its status),
/// created by a bare client in that order, [`FIRST_PASS_CONCURRENCY`] nodes at once. Returns the
/// number of writes.
async fn first_pass_floor(
    client: &Client,
    ns: &str,
    nodes: &[JukiNode],
    ctx: &resources::Context<'_>,
    pods: Pods,
) -> anyhow::Result<usize> {
    let post = PostParams::default();
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let statuses: Api<JukiNode> = Api::namespaced(client.clone(), ns);
    let status = json!({"status": {
        "phase": "Offline",
        "reason": "WindowClosed",
        "phaseSince": Timestamp::now().to_string(),
        "nextTransition": {"at": OPEN.parse::<Timestamp>()?.to_string(), "phase": "Starting"},
    }});
    let writes = stream::iter(nodes)
        .map(|node| {
            let (post, status) = (&post, &status);
            let (configs, services, claims, deployments, statuses) =
                (&configs, &services, &claims, &deployments, &statuses);
            async move {
                let mut writes = 0;
                configs
                    .create(post, &resources::config_map(node, ctx))
                    .await?;
                services.create(post, &resources::service(node)).await?;
                if pods == Pods::Real {
                    claims.create(post, &resources::data_claim(node)).await?;
                    claims.create(post, &resources::backups_claim(node)).await?;
                    writes += 2;
                }
                deployments
                    .create(post, &resources::deployment(node, ctx, 0))
                    .await?;
                let name = node.name_any();
                statuses
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await?;
                anyhow::Ok(writes + 4)
            }
        })
        .buffer_unordered(FIRST_PASS_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(writes.iter().sum())
}

/// The floor's batches of one tier: each node's batch Jobs (the ones the operator makes) one
/// after the other, each waited until it succeeded, [`BATCH_NODES`] nodes at once.
async fn floor_batches(
    client: &Client,
    ns: &str,
    nodes: &[&JukiNode],
    ctx: &resources::Context<'_>,
    jobs: &reflector::Store<Job>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    let date: jiff::civil::Date = DATE.parse()?;
    let deadline = Instant::now() + timeout;
    stream::iter(nodes)
        .map(|node| {
            let api = &api;
            async move {
                for batch in batches() {
                    let job = resources::batch_job(node, ctx, batch, date);
                    let name = job.name_any();
                    api.create(&PostParams::default(), &job).await?;
                    let key = reflector::ObjectRef::new(&name).within(ns);
                    let done = wait_until(Instant::now(), deadline, || {
                        jobs.get(&key)
                            .and_then(|j| j.status.as_ref()?.succeeded)
                            .is_some_and(|n| n >= 1)
                    })
                    .await;
                    if done.is_none() {
                        bail!("floor: Job {name} did not succeed within {timeout:?}");
                    }
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(BATCH_NODES)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

async fn scale_all(api: &Api<Deployment>, names: &[String], replicas: i32) -> anyhow::Result<()> {
    let patch = json!({"spec": {"replicas": replicas}});
    stream::iter(names)
        .map(|n| {
            let patch = &patch;
            async move {
                api.patch(n, &PatchParams::default(), &Patch::Merge(patch))
                    .await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

async fn floor(
    client: &Client,
    ns: &str,
    nodes: &[NodeSpec],
    pods: Pods,
    calendar_json: &serde_json::Value,
    timeout: Duration,
) -> anyhow::Result<Floor> {
    create_namespace(client, ns).await?;
    let ctx = resources::Context {
        calendar_json,
        extensions_json: &json!([]),
        upstream_url: None,
        node_clock: None,
        delivery_keys: None,
        otlp_endpoint: None,
        sqlite_volume: pods.sqlite_volume(),
    };
    // The same JukiNodes (no operator watches this namespace): the first pass writes their
    // status as the operator's does.
    apply_nodes(client, ns, "unused", nodes, pods).await?;
    let juki_nodes = nodes
        .iter()
        .map(|n| serde_json::from_value(n.manifest(ns, "unused", pods)))
        .collect::<Result<Vec<JukiNode>, _>>()?;
    let mut out = Floor::default();
    let created = Instant::now();
    out.first_pass_writes = first_pass_floor(client, ns, &juki_nodes, &ctx, pods).await?;
    out.first_pass_s = created.elapsed().as_secs_f64();
    println!(
        "  floor: first pass (every node's ConfigMap, Service, Deployment at 0 replicas{} and status, \
         {FIRST_PASS_CONCURRENCY} nodes at once): {} writes in {:.1} s",
        if pods == Pods::Real { ", claims" } else { "" },
        out.first_pass_writes,
        out.first_pass_s
    );
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let tier_of: HashMap<String, Tier> = nodes.iter().map(|n| (n.name.clone(), n.tier)).collect();
    let by_tier = |t: Tier| -> Vec<String> {
        nodes
            .iter()
            .filter(|n| n.tier == t)
            .map(|n| n.name.clone())
            .collect()
    };
    let deps = watch_store::<Deployment>(client, ns).await;
    let pods = watch_store::<Pod>(client, ns).await;
    let tier_ready = |t: Tier, want: usize| {
        let state = deps.state();
        let ready = state
            .iter()
            .filter(|d| tier_of.get(&d.name_any()) == Some(&t))
            .filter(|d| {
                d.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0)
                    >= 1
            })
            .count();
        ready == want
    };
    let tier_pods = |t: Tier| {
        pods.state()
            .iter()
            .filter(|p| {
                p.labels()
                    .get(resources::NODE_LABEL)
                    .and_then(|n| tier_of.get(n))
                    == Some(&t)
            })
            .count()
    };

    // Let the deployment controller catch up with the creations (ReplicaSets at 0) first, so the
    // up wave measures scaling, not the creation backlog.
    let settled = wait_until(created, created + timeout, || {
        let state = deps.state();
        state.len() == nodes.len()
            && state.iter().all(|d| {
                d.status.as_ref().and_then(|s| s.observed_generation) == d.metadata.generation
            })
    })
    .await;
    println!(
        "  floor: deployment controller caught up at {}",
        fmt_s(settled)
    );

    let start = Instant::now();
    let cpu = cluster_cpu();
    let requests = api_requests(client).await;
    for t in Tier::ALL {
        let names = by_tier(t);
        scale_all(&api, &names, 1).await?;
        match wait_until(start, start + timeout, || tier_ready(t, names.len())).await {
            Some(s) => out.up.insert(t, s),
            None => bail!("floor: {} not ready within {timeout:?}", t.as_str()),
        };
        println!("  floor up: {} ready at {:.1} s", t.as_str(), out.up[&t]);
    }
    println!("{}", cpu_line("floor start wave", &cpu));
    println!(
        "{}",
        requests_line(client, "floor start wave", &requests).await
    );
    let start = Instant::now();
    let cpu = cluster_cpu();
    let requests = api_requests(client).await;
    for t in Tier::ALL.into_iter().rev() {
        scale_all(&api, &by_tier(t), 0).await?;
        let mut progress = Progress::default();
        let gone = wait_until(start, start + timeout, || {
            progress.sample(start.elapsed().as_secs_f64(), || tier_pods(t).to_string());
            tier_pods(t) == 0
        })
        .await;
        if t == Tier::Cs {
            println!("{}", progress.line("floor down: CS pods"));
        }
        match gone {
            Some(s) => out.down.insert(t, s),
            None => bail!("floor: {} pods not gone within {timeout:?}", t.as_str()),
        };
        println!(
            "  floor down: {} pods gone at {:.1} s",
            t.as_str(),
            out.down[&t]
        );
    }
    println!("{}", cpu_line("floor stop wave", &cpu));
    println!(
        "{}",
        requests_line(client, "floor stop wave", &requests).await
    );
    if batches().is_empty() {
        return Ok(out);
    }
    // The night's batches, tier by tier from the bottom, after the down wave: the same Jobs in
    // the same order as the operator's; summed with the down wave, a floor for the whole night.
    let jobs = watch_store::<Job>(client, ns).await;
    for t in Tier::ALL.into_iter().rev() {
        let tier: Vec<&JukiNode> = juki_nodes
            .iter()
            .filter(|n| tier_of.get(&n.name_any()) == Some(&t))
            .collect();
        let start = Instant::now();
        floor_batches(client, ns, &tier, &ctx, &jobs, timeout).await?;
        out.batches.insert(t, start.elapsed().as_secs_f64());
        println!(
            "  floor batches: {} ({} Jobs, {BATCH_NODES} nodes at once) done in {:.1} s",
            t.as_str(),
            tier.len() * batches().len(),
            out.batches[&t]
        );
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The operator

/// CPU seconds so far of each control-plane process (from the cluster's pid files), to show
/// where a wave's time goes.
fn cluster_cpu() -> BTreeMap<String, f64> {
    let pids = kubeconfig_path().with_file_name("pids");
    let Ok(dir) = std::fs::read_dir(pids) else {
        return BTreeMap::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let name = e
                .file_name()
                .to_string_lossy()
                .strip_suffix(".pid")?
                .to_string();
            let pid = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((name, usage(pid)?.cpu_s))
        })
        .collect()
}

/// One line of control-plane CPU spent since `before`.
fn cpu_line(what: &str, before: &BTreeMap<String, f64>) -> String {
    let now = cluster_cpu();
    let parts: Vec<String> = now
        .iter()
        .map(|(k, v)| format!("{k} {:.1}", v - before.get(k).copied().unwrap_or(0.0)))
        .collect();
    format!("  control-plane CPU s, {what}: {}", parts.join(", "))
}

/// The API server's requests so far, per "VERB resource[/subresource]" (from its /metrics).
async fn api_requests(client: &Client) -> BTreeMap<String, f64> {
    let Ok(request) = http::Request::get("/metrics").body(Vec::new()) else {
        return BTreeMap::new();
    };
    let Ok(text) = client.request_text(request).await else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (series, v) in samples(&text) {
        if !series.starts_with("apiserver_request_total{") {
            continue;
        }
        let verb = label(series, "verb").unwrap_or("?");
        let resource = label(series, "resource").unwrap_or("?");
        let key = match label(series, "subresource") {
            Some(sub) if !sub.is_empty() => format!("{verb} {resource}/{sub}"),
            _ => format!("{verb} {resource}"),
        };
        *out.entry(key).or_insert(0.0) += v;
    }
    out
}

/// The most frequent API requests since `before`, the heaviest first.
async fn requests_line(client: &Client, what: &str, before: &BTreeMap<String, f64>) -> String {
    requests_text(what, before, &api_requests(client).await)
}

/// One line of the API requests between `before` and `now`, the heaviest first.
fn requests_text(
    what: &str,
    before: &BTreeMap<String, f64>,
    now: &BTreeMap<String, f64>,
) -> String {
    let mut delta: Vec<(String, f64)> = now
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d >= 1.0)
        .collect();
    delta.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = delta.iter().map(|(_, d)| d).sum();
    let top: Vec<String> = delta
        .iter()
        .take(12)
        .map(|(k, d)| format!("{k} {d:.0}"))
        .collect();
    format!(
        "  API requests, {what}: {total:.0} in all; {}",
        top.join(", ")
    )
}

#[derive(Debug, Default)]
struct OperatorRun {
    apply_s: f64,
    /// The first pass: from the operator's start until every node has a status and its
    /// ConfigMap, Service and Deployment.
    initial_pass_s: Option<f64>,
    /// API writes between the first pass's end and the window's opening (none expected).
    settle_writes: Scrape,
    window_s: i64,
    lead_s: i64,
    /// Start wave: seconds from window open until each tier is all Online.
    up: BTreeMap<Tier, f64>,
    /// Stop wave: seconds from window end until each tier has all left Stopping.
    left_stopping: BTreeMap<Tier, f64>,
    /// Stop wave: seconds from window end until each tier is all Offline with batches done.
    down: BTreeMap<Tier, f64>,
    start_writes: Scrape,
    idle_writes: Scrape,
    stop_writes: Scrape,
    initial_writes: Scrape,
    peak: Usage,
    cpu_start_wave: f64,
    cpu_stop_wave: f64,
    /// `GET pods` the API server answered in the stop wave (per-node reads, not the watch).
    stop_pod_gets: f64,
    failed_seen: usize,
    nodes: usize,
}

impl OperatorRun {
    fn up_total(&self) -> Option<f64> {
        (self.up.len() == 3).then(|| self.up.values().copied().fold(0.0, f64::max))
    }
    fn down_total(&self) -> Option<f64> {
        (self.down.len() == 3).then(|| self.down[&Tier::National])
    }
    /// The stop wave less the batch time on the critical path: for each tier, the time from the
    /// moment it could start stopping (window end for CSs; the tier below all done for the
    /// others) until it has all left Stopping.
    fn down_without_batches(&self) -> Option<f64> {
        if self.left_stopping.len() < 3 || self.down.len() < 3 {
            return None;
        }
        let cs = self.left_stopping[&Tier::Cs];
        let pref = (self.left_stopping[&Tier::Prefecture] - self.down[&Tier::Cs]).max(0.0);
        let nat = (self.left_stopping[&Tier::National] - self.down[&Tier::Prefecture]).max(0.0);
        Some(cs + pref + nat)
    }
}

fn phase_of(n: &JukiNode) -> Option<NodePhase> {
    n.status.as_ref().and_then(|s| s.phase)
}

fn batches_done(n: &JukiNode) -> bool {
    phase_of(n) == Some(NodePhase::Offline)
        && n.status
            .as_ref()
            .and_then(|s| s.last_batch.as_ref())
            .is_some_and(|b| b.date == DATE)
}

/// The bench's calendar spec: one window for all three tiers from `open` (HH:MM) for
/// `window_s` minutes (real seconds at ×60), so the start wave is pure dependency order and the
/// stop wave starts at one instant; the daily [`batches`].
fn calendar_spec(open: (i64, i64), window_s: i64) -> serde_json::Value {
    let minutes = open.0 * 60 + open.1 + window_s;
    let window = json!({
        "start": format!("{:02}:{:02}", open.0, open.1),
        "end": format!("{:02}:{:02}", minutes / 60, minutes % 60),
    });
    let batches: Vec<_> = batches()
        .iter()
        .map(|b| json!({"name": b, "schedule": "Daily"}))
        .collect();
    json!({
        "timeZone": "Asia/Tokyo",
        "onlineWindows": {"national": window, "prefecture": window, "cs": window},
        "windowService": window,
        "batches": batches,
    })
}

/// Whether every node of `nodes` has a status, and a ConfigMap, a Service and a Deployment
/// labelled with its name exist in `ns`: the operator's first pass is complete.
async fn first_pass_complete(
    client: &Client,
    ns: &str,
    store: &reflector::Store<JukiNode>,
    nodes: &[NodeSpec],
) -> bool {
    let state = store.state();
    if state.len() < nodes.len() || state.iter().any(|n| phase_of(n).is_none()) {
        return false;
    }
    let (configs, services, deployments) = tokio::join!(
        labelled::<ConfigMap>(client, ns),
        labelled::<Service>(client, ns),
        labelled::<Deployment>(client, ns),
    );
    [configs, services, deployments]
        .iter()
        .all(|have| nodes.iter().all(|n| have.contains(&n.name)))
}

/// The node names on the objects of kind `K` in `ns` (their node label; a metadata list).
async fn labelled<K>(client: &Client, ns: &str) -> std::collections::HashSet<String>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let lp = ListParams::default().labels(resources::NODE_LABEL);
    let Ok(list) = Api::<K>::namespaced(client.clone(), ns)
        .list_metadata(&lp)
        .await
    else {
        return Default::default();
    };
    list.items
        .into_iter()
        .filter_map(|o| o.metadata.labels?.remove(resources::NODE_LABEL))
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn operator(
    client: &Client,
    kubeconfig: &Path,
    binary: &Path,
    ns: &str,
    calendar: &str,
    nodes: &[NodeSpec],
    pods: Pods,
    window_s: i64,
    lead_s: i64,
) -> anyhow::Result<OperatorRun> {
    let mut out = OperatorRun {
        window_s,
        lead_s,
        nodes: nodes.len(),
        ..OperatorRun::default()
    };
    let open: Timestamp = OPEN.parse()?;
    let cals: Api<OperatingCalendar> = Api::all(client.clone());
    let cal = json!({
        "apiVersion": "jukinet.io/v1alpha1",
        "kind": "OperatingCalendar",
        "metadata": {"name": calendar},
        "spec": calendar_spec((7, 0), window_s),
    });
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    cals.patch(calendar, &pp, &Patch::Apply(&cal)).await?;
    create_namespace(client, ns).await?;
    let applied = Instant::now();
    apply_nodes(client, ns, calendar, nodes, pods).await?;
    out.apply_s = applied.elapsed().as_secs_f64();
    println!(
        "  operator: applied {} JukiNodes (server-side apply, {CONCURRENCY} in flight) in {:.1} s",
        nodes.len(),
        out.apply_s
    );
    let store = watch_store::<JukiNode>(client, ns).await;
    let tier_of: HashMap<String, Tier> = nodes.iter().map(|n| (n.name.clone(), n.tier)).collect();
    let count = |t: Tier| nodes.iter().filter(|n| n.tier == t).count();
    let all = |t: Tier, f: &dyn Fn(&JukiNode) -> bool| {
        let state = store.state();
        state
            .iter()
            .filter(|n| tier_of.get(&n.name_any()) == Some(&t))
            .filter(|n| f(n))
            .count()
            == count(t)
    };

    // One operator from `lead_s` real seconds before the window: its first pass must be complete
    // (every node with a status and its objects) before the window opens, or the start wave
    // would measure the first pass too; the run stops if it is not.
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut child = spawn_operator(
        binary,
        kubeconfig,
        ns,
        (open - SignedDuration::from_secs(lead_s * FACTOR), FACTOR),
        &addr,
        LOG,
        pods,
        &["--readiness-timeout", "3600"],
    )?;
    let started = Instant::now();
    let pid = child.id().context("operator pid")?;
    let open_at = started + Duration::from_secs(lead_s as u64);
    let end_at = open_at + Duration::from_secs(window_s as u64);

    let peak = PeakSampler::start(pid);

    let result: anyhow::Result<()> = async {
        let requests0 = api_requests(client).await;
        while Instant::now() < open_at {
            if first_pass_complete(client, ns, &store, nodes).await {
                out.initial_pass_s = Some(started.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        out.initial_writes = scrape(&addr).await?;
        println!(
            "{}",
            requests_line(client, "operator first pass", &requests0).await
        );
        let Some(first_pass) = out.initial_pass_s else {
            bail!(
                "the operator's first pass was not complete {lead_s} s after its start, when the \
                 window opened: give it more time with JUKINET_SCALE_LEAD"
            );
        };
        println!(
            "  operator: first pass complete in {first_pass:.1} s; the window opens at {lead_s} s"
        );
        tokio::time::sleep_until(open_at.into()).await;
        let m0 = scrape(&addr).await?;
        out.settle_writes = m0.minus(&out.initial_writes);
        let cpu0 = usage(pid).map_or(0.0, |u| u.cpu_s);
        let plane0 = cluster_cpu();
        let requests0 = api_requests(client).await;
        println!("  operator: window open; start wave…");

        // Start wave.
        let mut failed = std::collections::HashSet::new();
        loop {
            for n in store.state().iter() {
                if phase_of(n) == Some(NodePhase::Failed) {
                    failed.insert(n.name_any());
                }
            }
            for t in Tier::ALL {
                if !out.up.contains_key(&t) && all(t, &|n| phase_of(n) == Some(NodePhase::Online)) {
                    let s = open_at.elapsed().as_secs_f64();
                    println!("  operator up: {} all Online at {s:.1} s", t.as_str());
                    out.up.insert(t, s);
                }
            }
            if out.up.len() == 3 || Instant::now() >= end_at {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let m1 = scrape(&addr).await?;
        out.start_writes = m1.minus(&m0);
        out.cpu_start_wave = usage(pid).map_or(0.0, |u| u.cpu_s) - cpu0;
        println!("{}", cpu_line("operator start wave", &plane0));
        println!(
            "{}",
            requests_line(client, "operator start wave", &requests0).await
        );
        if out.up.len() < 3 {
            println!("  operator: start wave NOT complete at window end");
        }

        // Online until the window ends.
        tokio::time::sleep_until(end_at.into()).await;
        let m2 = scrape(&addr).await?;
        out.idle_writes = m2.minus(&m1);
        let cpu2 = usage(pid).map_or(0.0, |u| u.cpu_s);
        let plane2 = cluster_cpu();
        let requests2 = api_requests(client).await;
        println!("  operator: window end; stop wave…");

        // Stop wave.
        let deadline = end_at + Duration::from_secs(1800);
        let mut scaled_down = BTreeMap::new();
        let mut cs_progress = Progress::default();
        loop {
            if !out.left_stopping.contains_key(&Tier::Cs) {
                cs_progress.sample(end_at.elapsed().as_secs_f64(), || {
                    let state = store.state();
                    let cs = || {
                        state
                            .iter()
                            .filter(|n| tier_of.get(&n.name_any()) == Some(&Tier::Cs))
                    };
                    let stopping = cs()
                        .filter(|n| {
                            !matches!(
                                phase_of(n),
                                Some(NodePhase::DailyBatch | NodePhase::Offline)
                            )
                        })
                        .count();
                    let batching = cs()
                        .filter(|n| {
                            n.status.as_ref().and_then(|s| s.reason.as_deref())
                                == Some("BatchRunning")
                        })
                        .count();
                    format!("{stopping} ({batching} batching)")
                });
            }
            for n in store.state().iter() {
                if phase_of(n) == Some(NodePhase::Failed) {
                    failed.insert(n.name_any());
                }
            }
            for t in Tier::ALL {
                // When the operator had scaled the whole tier down (how much of the wave is its
                // own pace rather than the cluster's).
                if !scaled_down.contains_key(&t)
                    && all(t, &|n| {
                        matches!(
                            phase_of(n),
                            Some(NodePhase::Stopping | NodePhase::DailyBatch | NodePhase::Offline)
                        )
                    })
                {
                    let s = end_at.elapsed().as_secs_f64();
                    println!(
                        "  operator down: {} all scaled to 0 at {s:.1} s",
                        t.as_str()
                    );
                    scaled_down.insert(t, s);
                }
                if !out.left_stopping.contains_key(&t)
                    && all(t, &|n| {
                        matches!(
                            phase_of(n),
                            Some(NodePhase::DailyBatch | NodePhase::Offline)
                        )
                    })
                {
                    let s = end_at.elapsed().as_secs_f64();
                    println!(
                        "  operator down: {} all left Stopping at {s:.1} s",
                        t.as_str()
                    );
                    out.left_stopping.insert(t, s);
                    if t == Tier::Cs {
                        println!(
                            "{}",
                            cs_progress.line("operator down: CSs not yet out of Stopping")
                        );
                        let what = "operator stop wave until the CSs left Stopping";
                        println!("{}", requests_line(client, what, &requests2).await);
                    }
                }
                if !out.down.contains_key(&t) && all(t, &batches_done) {
                    let s = end_at.elapsed().as_secs_f64();
                    println!(
                        "  operator down: {} all Offline, batches done, at {s:.1} s",
                        t.as_str()
                    );
                    out.down.insert(t, s);
                }
            }
            if out.down.len() == 3 || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let m3 = scrape(&addr).await?;
        out.stop_writes = m3.minus(&m2);
        out.cpu_stop_wave = usage(pid).map_or(0.0, |u| u.cpu_s) - cpu2;
        println!("{}", cpu_line("operator stop wave", &plane2));
        let requests3 = api_requests(client).await;
        println!(
            "{}",
            requests_text("operator stop wave", &requests2, &requests3)
        );
        let pod_gets = |r: &BTreeMap<String, f64>| r.get("GET pods").copied().unwrap_or(0.0);
        out.stop_pod_gets = pod_gets(&requests3) - pod_gets(&requests2);
        out.failed_seen = failed.len();
        Ok(())
    }
    .await;
    out.peak = peak.stop();
    let _ = child.kill().await;
    result.map(|()| out)
}

// ---------------------------------------------------------------------------------------------
// The report

fn fmt_s(v: Option<f64>) -> String {
    v.map_or("—".into(), |s| format!("{s:.1} s"))
}

fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "n/a",
    }
}

fn report(floor: &Floor, op: &OperatorRun, nodes: &[NodeSpec], pods: Pods) {
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let n = op.nodes as f64;
    // Nominal transitions per node: up Offline→Starting→Online; down Online→Draining→Stopping→
    // DailyBatch→Offline.
    let per_up = op.start_writes.writes / (n * 2.0);
    let per_down = op.stop_writes.writes / (n * 4.0);
    let up_ratio = ratio(op.up_total(), floor.up_total());
    let down_ratio = ratio(op.down_without_batches(), floor.down_total());
    let night_ratio = ratio(op.down_total(), floor.night_total());
    let first_ratio = ratio(op.initial_pass_s, Some(floor.first_pass_s));
    let mib = op.peak.hwm_kib as f64 / 1024.0;
    let times = |r: Option<f64>| r.map_or("—".into(), |r| format!("{r:.2}×"));

    println!();
    let count = |t: Tier| nodes.iter().filter(|n| n.tier == t).count();
    println!(
        "## Scale benchmark: {} nodes (1 national, {} prefectures, {} CSs)",
        op.nodes,
        count(Tier::Prefecture),
        count(Tier::Cs)
    );
    println!();
    println!(
        "{}; the operator with `{}` (fast clock ×{FACTOR})",
        pods.describe(),
        pods.operator_flags().join(" ")
    );
    println!();
    println!(
        "Defaults of both: {FIRST_PASS_CONCURRENCY} nodes at once in the first pass (the operator's \
         --concurrency), {BATCH_NODES} nodes batching at once (--max-batch-nodes); batches per node: {}.",
        if batches().is_empty() {
            "none (JUKINET_SCALE_BATCHES=0)".to_string()
        } else {
            batches().join(", ")
        }
    );
    println!();
    println!("| figure | floor | operator | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| **first pass** (every node's objects and status) | {:.1} s, {} writes | {}, {} writes | {} |",
        floor.first_pass_s,
        floor.first_pass_writes,
        fmt_s(op.initial_pass_s),
        op.initial_writes.writes,
        times(first_ratio)
    );
    for t in Tier::ALL {
        println!(
            "| start wave: {} all ready/Online | {} | {} | |",
            t.as_str(),
            fmt_s(floor.up.get(&t).copied()),
            fmt_s(op.up.get(&t).copied())
        );
    }
    println!(
        "| **start wave** | {} | {} | {} |",
        fmt_s(floor.up_total()),
        fmt_s(op.up_total()),
        times(up_ratio)
    );
    for t in Tier::ALL.into_iter().rev() {
        println!(
            "| stop wave: {} pods gone / left Stopping / Offline+batches | {} | {} / {} | |",
            t.as_str(),
            fmt_s(floor.down.get(&t).copied()),
            fmt_s(op.left_stopping.get(&t).copied()),
            fmt_s(op.down.get(&t).copied())
        );
    }
    println!(
        "| **stop wave without batches** (critical path less batch time) | {} | {} | {} |",
        fmt_s(floor.down_total()),
        fmt_s(op.down_without_batches()),
        times(down_ratio)
    );
    for t in Tier::ALL.into_iter().rev() {
        println!(
            "| night: {} batches (floor: after the down wave) | {} | | |",
            t.as_str(),
            fmt_s(floor.batches.get(&t).copied()),
        );
    }
    println!(
        "| **the night** (window end → every node Offline with its batches; floor: down wave + batches) | {} | {} | {} |",
        fmt_s(floor.night_total()),
        fmt_s(op.down_total()),
        times(night_ratio)
    );
    println!();
    println!("| operator | value |");
    println!("|---|---|");
    println!("| apply of the JukiNodes | {:.1} s |", op.apply_s);
    println!(
        "| window opened (real seconds after the start) | {} s |",
        op.lead_s
    );
    println!(
        "| API writes after the first pass, before the window | {} |",
        op.settle_writes.writes
    );
    println!(
        "| `GET pods` in the stop wave (per-node reads) | {:.0} |",
        op.stop_pod_gets
    );
    println!("| window (real seconds at ×{FACTOR}) | {} s |", op.window_s);
    let kinds = |s: &Scrape| {
        s.writes_by_kind
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "| API writes before the window (first pass) | {} ({}) |",
        op.initial_writes.writes,
        kinds(&op.initial_writes)
    );
    println!(
        "| API writes, start wave | {} ({}); {} transitions counted; {:.2} per node per transition |",
        op.start_writes.writes,
        kinds(&op.start_writes),
        op.start_writes.transitions,
        per_up
    );
    println!(
        "| API writes while Online (idle) | {} ({}) |",
        op.idle_writes.writes,
        kinds(&op.idle_writes)
    );
    println!(
        "| API writes, stop wave | {} ({}); {} transitions counted; {:.2} per node per transition |",
        op.stop_writes.writes,
        kinds(&op.stop_writes),
        op.stop_writes.transitions,
        per_down
    );
    println!(
        "| reconciles (start / idle / stop wave) | {} / {} / {} |",
        op.start_writes.reconciles, op.idle_writes.reconciles, op.stop_writes.reconciles
    );
    println!(
        "| reconcile errors (start / idle / stop wave) | {} / {} / {} |",
        op.start_writes.reconcile_errors,
        op.idle_writes.reconcile_errors,
        op.stop_writes.reconcile_errors
    );
    println!("| nodes seen Failed | {} |", op.failed_seen);
    println!("| peak memory (VmHWM) | {mib:.1} MiB |");
    println!(
        "| CPU (user+system): start wave / stop wave / whole run | {:.1} s / {:.1} s / {:.1} s |",
        op.cpu_start_wave, op.cpu_stop_wave, op.peak.cpu_s
    );
    println!();
    println!("| target | value | verdict |");
    println!("|---|---|---|");
    let row = |target: &str, value: String, ok: Option<bool>| {
        println!("| {target} | {value} | {} |", verdict(ok));
    };
    let ratios = [
        ("first pass", "a bare client", first_ratio, 1.2),
        ("start wave", "floor", up_ratio, 1.05),
        (
            "stop wave (left Stopping, without batches)",
            "floor",
            down_ratio,
            1.1,
        ),
        ("the night with batches", "floor", night_ratio, 1.5),
    ];
    for (what, against, ratio, limit) in ratios {
        row(
            &format!("{what} ≤ {limit}× {against}"),
            times(ratio),
            ratio.map(|r| r <= limit),
        );
    }
    row(
        "≤ 2 API writes per node per transition, start wave",
        format!("{per_up:.2}"),
        Some(per_up <= 2.0),
    );
    row(
        "≤ 2 API writes per node per transition, stop wave",
        format!("{per_down:.2}"),
        Some(per_down <= 2.0),
    );
    row(
        "no per-node reads of pods in the stop wave",
        format!("{:.0} GET pods", op.stop_pod_gets),
        Some(op.stop_pod_gets < 1.0),
    );
    row(
        "peak memory ≤ 64 MiB",
        format!("{mib:.1} MiB"),
        Some(mib <= 64.0),
    );
}

fn log_summary() {
    let Ok(text) = std::fs::read_to_string(LOG) else {
        return;
    };
    let errors = text.lines().filter(|l| l.contains("ERROR")).count();
    let warns = text.lines().filter(|l| l.contains("WARN")).count();
    println!();
    println!(
        "operator log {LOG}: {} lines, {errors} ERROR, {warns} WARN",
        text.lines().count()
    );
    for l in text
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .take(5)
    {
        println!("  {l}");
    }
}

/// Real pods need the local cluster's real node, Ready, and the juki-node image on it.
async fn require_real_node(client: &Client) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let real = api
        .list(&ListParams::default().labels("jukinet.io/real-node=true"))
        .await?;
    let ready = real.items.iter().any(|n| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    });
    // The kubelet lists the images it holds in the node's status (as `docker.io/…`).
    let image = juki_node_image();
    let has_image = real.items.iter().any(|n| {
        n.status
            .as_ref()
            .and_then(|s| s.images.as_ref())
            .is_some_and(|i| {
                i.iter()
                    .flat_map(|i| i.names.iter().flatten())
                    .any(|n| n.ends_with(&image))
            })
    });
    if !ready || !has_image {
        bail!(
            "JUKINET_SCALE_REAL=1 needs the real node (found: {}) with {image} on it (found: {has_image}): \
             JUKINET_REAL_NODE=1 bash tests/cluster/up.sh, then scripts/images --import juki-node",
            if ready { "Ready" } else { "none Ready" }
        );
    }
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let kubeconfig = kubeconfig_path();
    let Some(client) = connect(&kubeconfig, "scale").await else {
        return Ok(());
    };
    let cs = scale_cs()?;
    let pods = Pods::from_env()?;
    let nodes = match pods {
        Pods::Fake => topology(cs, None)?,
        // What the real node holds: 23 juki-node pods (plus their batch Jobs).
        Pods::Real => topology(Some(cs.unwrap_or(20)), Some(&["31", "32"]))?,
    };
    println!(
        "scale bench: {} nodes, {}; building the release operator…",
        nodes.len(),
        pods.describe()
    );
    if pods == Pods::Real {
        require_real_node(&client).await?;
    }
    let binary = build_operator()?;
    ensure_crds(&client).await?;

    let id = std::process::id();
    let floor_ns = format!("juki-scale-floor-{id}");
    let op_ns = format!("juki-scale-op-{id}");
    let calendar = format!("juki-scale-bench-{id}");
    let timeout = Duration::from_secs(1800);

    println!("floor (namespace {floor_ns}):");
    // The floor's ConfigMaps carry a calendar like the operator's (its size is what counts).
    let calendar_json = calendar_spec((7, 0), 600);
    let floor_result = floor(&client, &floor_ns, &nodes, pods, &calendar_json, timeout).await;
    delete_namespace(&client, &floor_ns, Duration::from_secs(300)).await;
    let floor_result = floor_result?;

    // The window: long enough for the start wave with room to spare (at least 3× the floor).
    let window_s = std::env::var("JUKINET_SCALE_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| ((floor_result.up_total().unwrap_or(60.0) * 3.0) as i64 + 60).max(120))
        .min(15 * 60);
    // Time before the window for the operator's first pass: 3× the floor's first pass and 30 s
    // more, which scales with the machine (the run stops if the first pass is not done).
    let lead_s = std::env::var("JUKINET_SCALE_LEAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or((floor_result.first_pass_s * 3.0) as i64 + 30);
    println!("operator (namespace {op_ns}, calendar {calendar}, log {LOG}):");
    let op = operator(
        &client,
        &kubeconfig,
        &binary,
        &op_ns,
        &calendar,
        &nodes,
        pods,
        window_s,
        lead_s,
    )
    .await;
    delete_namespace(&client, &op_ns, Duration::from_secs(120)).await;
    let cals: Api<OperatingCalendar> = Api::all(client.clone());
    let _ = cals.delete(&calendar, &DeleteParams::default()).await;
    let op = op?;
    report(&floor_result, &op, &nodes, pods);
    log_summary();
    Ok(())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run()) {
        eprintln!("scale bench failed: {e:#}");
        std::process::exit(1);
    }
}
