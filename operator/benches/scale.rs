//! Scale benchmark of the operator on the local control plane (`tests/cluster`).
//!
//! `cargo bench -p juki-operator --bench scale` — one run measures, on the same cluster:
//!
//! 1. the floor: 1,789 Deployments (exactly the ones the operator builds, 1 replica each) scaled
//!    up in dependency order (national, prefectures, CSs, each tier waited until ready) and down in
//!    reverse order (waiting for the pods to go), by a minimal client with no other logic;
//! 2. the operator (`target/release/juki-operator`, fast clock ×60) on 1 national, 47 prefecture
//!    and 1,741 CS JukiNodes: the start wave (window open → every node Online), the stop wave
//!    (window end → every node Offline with the day's batches done), API writes per node per
//!    transition, peak memory and CPU.
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
use k8s_openapi::api::core::v1::{ConfigMap, Node, PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
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
    /// Up wave: seconds from the first scale request until each tier is all ready (cumulative).
    up: BTreeMap<Tier, f64>,
    /// Down wave: seconds from the first scale-down until each tier's pods are gone (cumulative).
    down: BTreeMap<Tier, f64>,
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
    pods_kind: Pods,
    timeout: Duration,
) -> anyhow::Result<Floor> {
    create_namespace(client, ns).await?;
    let calendar_json = json!({});
    let ctx = resources::Context {
        calendar_json: &calendar_json,
        extensions_json: &json!([]),
        upstream_url: None,
        node_clock: None,
        delivery_keys: None,
        otlp_endpoint: None,
        sqlite_volume: pods_kind.sqlite_volume(),
    };
    let mut deployments = Vec::new();
    let mut services = Vec::new();
    let mut claims = Vec::new();
    let mut configs = Vec::new();
    for n in nodes {
        let node: JukiNode = serde_json::from_value(n.manifest(ns, "unused", pods_kind))?;
        deployments.push(resources::deployment(&node, &ctx, 0));
        services.push(resources::service(&node));
        if pods_kind == Pods::Real {
            configs.push(resources::config_map(&node, &ctx));
            claims.push(resources::data_claim(&node));
        }
    }
    // A real pod mounts its node's configuration and its database's claim: made before the
    // clock starts (the claims bind when their first pod is scheduled, in the up wave, as
    // under the operator).
    let claim_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let config_api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let post = PostParams::default();
    stream::iter(&claims)
        .map(|c| claim_api.create(&post, c))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    stream::iter(&configs)
        .map(|c| config_api.create(&post, c))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let created = Instant::now();
    stream::iter(&deployments)
        .map(|d| api.create(&post, d))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    // The same Deployments behind the same Services: each pod that comes or goes updates its
    // Service's endpoints whoever scales it, so that work is part of the floor too.
    let service_api: Api<Service> = Api::namespaced(client.clone(), ns);
    stream::iter(&services)
        .map(|s| service_api.create(&post, s))
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    println!(
        "  floor: created {} Deployments (replicas 0) and their Services in {:.1} s",
        deployments.len(),
        created.elapsed().as_secs_f64()
    );
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
        state.len() == deployments.len()
            && state.iter().all(|d| {
                d.status.as_ref().and_then(|s| s.observed_generation) == d.metadata.generation
            })
    })
    .await;
    println!(
        "  floor: deployment controller caught up at {}",
        fmt_s(settled)
    );

    let mut out = Floor::default();
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
    let now = api_requests(client).await;
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
    initial_pass_s: Option<f64>,
    window_s: i64,
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
        nodes: nodes.len(),
        ..OperatorRun::default()
    };
    // All tiers share one window, so the start wave is pure dependency order and the stop wave
    // starts at one instant; at ×60 the window lasts `window_s` real seconds.
    let end = format!("{:02}:{:02}", 7 + window_s / 60, window_s % 60);
    let window = json!({"start": "07:00", "end": end});
    // JUKINET_SCALE_BATCHES=0: a calendar without daily batches, to see the stop wave without the
    // load of the batch Jobs (which the floor does not have).
    let batches = if std::env::var("JUKINET_SCALE_BATCHES").as_deref() == Ok("0") {
        json!([])
    } else {
        json!([
            {"name": "statistics", "schedule": "Daily"},
            {"name": "backup", "schedule": "Daily"},
        ])
    };
    let cal = json!({
        "apiVersion": "jukinet.io/v1alpha1",
        "kind": "OperatingCalendar",
        "metadata": {"name": calendar},
        "spec": {
            "timeZone": "Asia/Tokyo",
            "onlineWindows": {"national": window, "prefecture": window, "cs": window},
            "windowService": window,
            "batches": batches,
        },
    });
    let cals: Api<OperatingCalendar> = Api::all(client.clone());
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

    let open: Timestamp = OPEN.parse()?;
    let clock_start = open - SignedDuration::from_secs(lead_s * FACTOR);
    let port = free_port()?;
    let addr = format!("127.0.0.1:{port}");
    let mut child = spawn_operator(
        binary,
        kubeconfig,
        ns,
        (clock_start, FACTOR),
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
        // Before the window opens: every node gets a status (the operator's first pass).
        out.initial_pass_s = wait_until(started, open_at, || {
            let state = store.state();
            state.len() == nodes.len() && state.iter().all(|n| phase_of(n).is_some())
        })
        .await;
        tokio::time::sleep_until(open_at.into()).await;
        let m0 = scrape(&addr).await?;
        out.initial_writes = m0.clone();
        let cpu0 = usage(pid).map_or(0.0, |u| u.cpu_s);
        let plane0 = cluster_cpu();
        let requests0 = api_requests(client).await;
        println!(
            "  operator: window open (first pass {}); start wave…",
            out.initial_pass_s
                .map_or("not done before open".into(), |s| format!("{s:.1} s"))
        );

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
        println!(
            "{}",
            requests_line(client, "operator stop wave", &requests2).await
        );
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
    let full_ratio = ratio(op.down_total(), floor.down_total());
    let mib = op.peak.hwm_kib as f64 / 1024.0;

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
    println!("| figure | floor | operator | ratio |");
    println!("|---|---|---|---|");
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
        up_ratio.map_or("—".into(), |r| format!("{r:.2}×"))
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
        down_ratio.map_or("—".into(), |r| format!("{r:.2}×"))
    );
    println!(
        "| stop wave with batches (2 Jobs per node) | {} | {} | {} |",
        fmt_s(floor.down_total()),
        fmt_s(op.down_total()),
        full_ratio.map_or("—".into(), |r| format!("{r:.2}×"))
    );
    println!();
    println!("| operator | value |");
    println!("|---|---|");
    println!("| apply of the JukiNodes | {:.1} s |", op.apply_s);
    println!(
        "| first pass (every node has a status) | {} |",
        fmt_s(op.initial_pass_s)
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
    println!(
        "| start wave ≤ 1.5× floor | {} | {} |",
        up_ratio.map_or("—".into(), |r| format!("{r:.2}×")),
        verdict(up_ratio.map(|r| r <= 1.5))
    );
    println!(
        "| stop wave (without batches) ≤ 1.5× floor | {} | {} |",
        down_ratio.map_or("—".into(), |r| format!("{r:.2}×")),
        verdict(down_ratio.map(|r| r <= 1.5))
    );
    println!(
        "| ≤ 4 API writes per node per transition, start wave | {per_up:.2} | {} |",
        verdict(Some(per_up <= 4.0))
    );
    println!(
        "| ≤ 4 API writes per node per transition, stop wave | {per_down:.2} | {} |",
        verdict(Some(per_down <= 4.0))
    );
    println!(
        "| peak memory < 150 MiB | {mib:.1} MiB | {} |",
        verdict(Some(mib < 150.0))
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
    let lead_s: i64 = std::env::var("JUKINET_SCALE_LEAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
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
    let floor_result = floor(&client, &floor_ns, &nodes, pods, timeout).await;
    delete_namespace(&client, &floor_ns, Duration::from_secs(300)).await;
    let floor_result = floor_result?;

    // The window: long enough for the start wave with room to spare (at least 3× the floor).
    let window_s = std::env::var("JUKINET_SCALE_WINDOW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| ((floor_result.up_total().unwrap_or(60.0) * 3.0) as i64 + 60).max(120))
        .min(15 * 60);
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
