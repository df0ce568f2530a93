//! What the cluster benchmarks share: the local cluster, the network's nodes, the operator
//! binary and what it reports (its metrics, its memory and CPU).
// Each bench uses a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, ResourceExt};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Parallel requests of a bench's own client (creates, applies, scales).
pub const CONCURRENCY: usize = 32;
pub const FIELD_MANAGER: &str = "juki-bench";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    National,
    Prefecture,
    Cs,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::National, Tier::Prefecture, Tier::Cs];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::National => "National",
            Tier::Prefecture => "Prefecture",
            Tier::Cs => "CS",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub name: String,
    pub tier: Tier,
    pub prefecture: Option<String>,
    pub municipality: Option<String>,
}

/// Where a bench's nodes run: kwok's fake pods (the default, for scale), or real juki-node pods
/// on the local cluster's real node (`JUKINET_SCALE_REAL=1`: the production paths, at the size
/// the machine holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pods {
    Fake,
    Real,
}

impl Pods {
    pub fn from_env() -> anyhow::Result<Pods> {
        match std::env::var("JUKINET_SCALE_REAL").as_deref() {
            Err(_) | Ok("" | "0") => Ok(Pods::Fake),
            Ok("1") => Ok(Pods::Real),
            Ok(other) => bail!("JUKINET_SCALE_REAL={other}: expected 0 or 1"),
        }
    }

    /// The operator's flags for these pods (besides `--allow-plain-http`: the bench's nodes
    /// have no TLS).
    pub fn operator_flags(self) -> [&'static str; 4] {
        match self {
            // A fake pod answers no request and mounts nothing.
            Pods::Fake => ["--final-exchange", "skip", "--sqlite-volume", "empty-dir"],
            // Production's: the final request through the API server's service proxy, and
            // SQLite on a claim.
            Pods::Real => ["--final-exchange", "call", "--sqlite-volume", "pvc"],
        }
    }

    pub fn sqlite_volume(self) -> juki_operator::resources::SqliteVolume {
        use juki_operator::resources::SqliteVolume;
        match self {
            Pods::Fake => SqliteVolume::EmptyDir,
            Pods::Real => SqliteVolume::Pvc,
        }
    }

    pub fn describe(self) -> String {
        match self {
            Pods::Fake => "kwok's fake pods".into(),
            Pods::Real => format!("real pods of {} on the real node", juki_node_image()),
        }
    }
}

/// The image `scripts/images --import juki-node` puts on the real node.
pub fn juki_node_image() -> String {
    format!("jukinet/juki-node:{}", env!("CARGO_PKG_VERSION"))
}

impl NodeSpec {
    pub fn manifest(&self, namespace: &str, calendar: &str, pods: Pods) -> serde_json::Value {
        let mut spec = json!({"tier": self.tier.as_str(), "calendar": calendar, "replicas": 1});
        if pods == Pods::Real {
            // The real node is tainted and labelled (tests/cluster/node.sh); 64Mi claims as in
            // scripts/demo-values.
            let key = "jukinet.io/real-node";
            spec["template"] = json!({
                "image": juki_node_image(),
                "nodeSelector": {key: "true"},
                "tolerations": [{"key": key, "operator": "Exists", "effect": "NoSchedule"}],
            });
            spec["database"] = json!({"kind": "Sqlite", "sqlite": {"storageSize": "64Mi"}});
        }
        if let Some(p) = &self.prefecture {
            spec["prefecture"] = json!(p);
        }
        if let Some(m) = &self.municipality {
            spec["municipality"] = json!(m);
        }
        json!({
            "apiVersion": "jukinet.io/v1alpha1",
            "kind": "JukiNode",
            "metadata": {"name": self.name, "namespace": namespace},
            "spec": spec,
        })
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ has a parent")
        .to_path_buf()
}

/// `JUKINET_SCALE_CS`: how many CSs a bench runs (None: its default).
pub fn scale_cs() -> anyhow::Result<Option<usize>> {
    std::env::var("JUKINET_SCALE_CS")
        .ok()
        .map(|v| v.parse::<usize>())
        .transpose()
        .context("JUKINET_SCALE_CS must be a number")
}

/// 1 national, the prefectures (all 47, or `only` those codes) and `cs` of their CSs (all by
/// default, else spread evenly).
pub fn topology(cs: Option<usize>, only: Option<&[&str]>) -> anyhow::Result<Vec<NodeSpec>> {
    let path = std::env::var_os("JUKINET_MUNICIPALITIES").map_or_else(
        || repo_root().join("data/municipalities.csv"),
        PathBuf::from,
    );
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut prefectures = Vec::new();
    let mut all_cs = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        if f.len() < 6 {
            continue;
        }
        let (code, pref, kind) = (f[0], f[1], f[5]);
        if only.is_some_and(|only| !only.contains(&pref)) {
            continue;
        }
        match kind {
            "prefecture" => prefectures.push(pref.to_string()),
            "city" | "designated_city" | "town" | "village" | "special_ward"
                if !("016951"..="017001").contains(&code) =>
            {
                all_cs.push(code.to_string());
            }
            _ => {}
        }
    }
    let n = cs.unwrap_or(all_cs.len()).min(all_cs.len());
    let picked: Vec<&String> = (0..n).map(|i| &all_cs[i * all_cs.len() / n]).collect();
    let mut nodes = vec![NodeSpec {
        name: "national".into(),
        tier: Tier::National,
        prefecture: None,
        municipality: None,
    }];
    nodes.extend(prefectures.iter().map(|p| NodeSpec {
        name: format!("pref-{p}"),
        tier: Tier::Prefecture,
        prefecture: Some(p.clone()),
        municipality: None,
    }));
    nodes.extend(picked.into_iter().map(|m| NodeSpec {
        name: format!("cs-{m}"),
        tier: Tier::Cs,
        prefecture: None,
        municipality: Some(m.clone()),
    }));
    Ok(nodes)
}

/// Applies `nodes` into `ns` following `calendar` (server-side apply, [`CONCURRENCY`] in
/// flight).
pub async fn apply_nodes(
    client: &Client,
    ns: &str,
    calendar: &str,
    nodes: &[NodeSpec],
    pods: Pods,
) -> anyhow::Result<()> {
    let api: Api<juki_operator::api::JukiNode> = Api::namespaced(client.clone(), ns);
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    futures::stream::iter(nodes)
        .map(|n| {
            let (api, pp) = (&api, &pp);
            async move {
                let manifest = n.manifest(ns, calendar, pods);
                api.patch(&n.name, pp, &Patch::Apply(manifest)).await
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok(())
}

pub fn kubeconfig_path() -> PathBuf {
    if let Some(p) = std::env::var_os("KUBECONFIG") {
        return PathBuf::from(p);
    }
    let state = std::env::var_os("JUKINET_CLUSTER_STATE").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/jukinet/cluster-state")
        },
        PathBuf::from,
    );
    state.join("admin.kubeconfig")
}

/// A client of the local cluster, or None (with a note) when it is not up.
pub async fn connect(kubeconfig: &Path, bench: &str) -> Option<Client> {
    let how = "start it with `bash tests/cluster/up.sh` (then `source tests/cluster/env.sh`) and \
               run the bench again";
    let Ok(kc) = Kubeconfig::read_from(kubeconfig) else {
        println!(
            "{bench} bench: no kubeconfig at {}; the local cluster is not up: {how}",
            kubeconfig.display()
        );
        return None;
    };
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .ok()?;
    let client = Client::try_from(config).ok()?;
    let req = http::Request::get("/readyz").body(Vec::new()).ok()?;
    match tokio::time::timeout(Duration::from_secs(5), client.request_text(req)).await {
        Ok(Ok(body)) if body.trim() == "ok" => Some(client),
        _ => {
            println!(
                "{bench} bench: the cluster at {} is not ready: {how}",
                kubeconfig.display()
            );
            None
        }
    }
}

pub async fn ensure_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut missing = false;
    for name in [
        "jukinodes.jukinet.io",
        "operatingcalendars.jukinet.io",
        "jobschedules.jukinet.io",
    ] {
        missing |= api.get_opt(name).await?.is_none();
    }
    if !missing {
        return Ok(());
    }
    for entry in std::fs::read_dir(repo_root().join("crds"))? {
        let path = entry?.path();
        let crd: CustomResourceDefinition = serde_yaml::from_str(&std::fs::read_to_string(&path)?)?;
        api.patch(
            &crd.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}

pub async fn create_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    api.create(&PostParams::default(), &ns).await?;
    Ok(())
}

/// Deletes a namespace and waits (up to `wait`) until it is gone.
pub async fn delete_namespace(client: &Client, name: &str, wait: Duration) {
    let api: Api<Namespace> = Api::all(client.clone());
    let _ = api.delete(name, &DeleteParams::background()).await;
    let until = Instant::now() + wait;
    while Instant::now() < until {
        if matches!(api.get_opt(name).await, Ok(None)) {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("  (namespace {name} still terminating after {wait:?}; left to the cluster)");
}

/// A store of `K` in `namespace`, kept current by a watch, ready when returned.
pub async fn watch_store<K>(client: &Client, namespace: &str) -> Store<K>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let (store, writer) = reflector::store::<K>();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    let _ = store.wait_until_ready().await;
    store
}

/// The (series, value) samples of a Prometheus text exposition.
pub fn samples(text: &str) -> impl Iterator<Item = (&str, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(series, value)| Some((series, value.trim().parse::<f64>().ok()?)))
}

/// The value of label `name` in a series (`metric{a="1",b="2"}`).
pub fn label<'a>(series: &'a str, name: &str) -> Option<&'a str> {
    let labels = series.split_once('{')?.1.strip_suffix('}')?;
    labels.split(',').find_map(|kv| {
        kv.strip_prefix(name)?
            .strip_prefix("=\"")?
            .strip_suffix('"')
    })
}

#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub writes: f64,
    pub writes_by_kind: BTreeMap<String, f64>,
    pub transitions: f64,
    pub reconciles: f64,
    pub reconcile_errors: f64,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let mut s = Scrape::default();
        for (series, v) in samples(text) {
            let name = series.split('{').next().unwrap_or("");
            match name {
                "juki_api_writes_total" => {
                    s.writes += v;
                    let kind = label(series, "kind").unwrap_or("?");
                    *s.writes_by_kind.entry(kind.to_string()).or_default() += v;
                }
                "juki_phase_transitions_total" => s.transitions += v,
                "juki_reconciles_total" => s.reconciles += v,
                "juki_reconcile_errors_total" => s.reconcile_errors += v,
                _ => {}
            }
        }
        s
    }

    pub fn minus(&self, before: &Scrape) -> Scrape {
        let mut by_kind = self.writes_by_kind.clone();
        for (k, v) in &before.writes_by_kind {
            *by_kind.entry(k.clone()).or_default() -= v;
        }
        by_kind.retain(|_, v| *v != 0.0);
        Scrape {
            writes: self.writes - before.writes,
            writes_by_kind: by_kind,
            transitions: self.transitions - before.transitions,
            reconciles: self.reconciles - before.reconciles,
            reconcile_errors: self.reconcile_errors - before.reconcile_errors,
        }
    }
}

pub async fn scrape(addr: &str) -> anyhow::Result<Scrape> {
    Ok(Scrape::parse(&scrape_text(addr).await?))
}

/// The operator's `/metrics` text.
pub async fn scrape_text(addr: &str) -> anyhow::Result<String> {
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut buf = Vec::new();
    conn.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no HTTP header end in /metrics answer")?;
    if !head.contains(" 200 ") {
        bail!("/metrics answered {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// Peak memory and CPU of a process, from /proc.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub hwm_kib: u64,
    pub cpu_s: f64,
}

pub fn usage(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces): state is field 3; utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(Usage {
        hwm_kib,
        cpu_s: ticks / 100.0,
    })
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn build_operator() -> anyhow::Result<PathBuf> {
    build_release("juki-operator")
}

/// Builds binary `bin` of juki-operator with the release profile; its path.
pub fn build_release(bin: &str) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "juki-operator"])
        .args(["--bin", bin])
        .current_dir(repo_root())
        .status()?;
    if !status.success() {
        bail!("building the release {bin} failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from);
    Ok(target.join("release").join(bin))
}

/// Polls `done` every 100 ms until it holds (Some(elapsed since `from`)) or `until` passes (None).
pub async fn wait_until(
    from: Instant,
    until: Instant,
    mut done: impl FnMut() -> bool,
) -> Option<f64> {
    loop {
        if done() {
            return Some(from.elapsed().as_secs_f64());
        }
        if Instant::now() >= until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Peak memory and CPU of a process, sampled every second (VmHWM is itself a peak).
pub struct PeakSampler {
    pid: u32,
    peak: Arc<Mutex<Usage>>,
    task: tokio::task::JoinHandle<()>,
}

impl PeakSampler {
    pub fn start(pid: u32) -> PeakSampler {
        let peak = Arc::new(Mutex::new(Usage::default()));
        let task = {
            let peak = peak.clone();
            tokio::spawn(async move {
                loop {
                    Self::sample(pid, &peak);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        PeakSampler { pid, peak, task }
    }

    fn sample(pid: u32, peak: &Mutex<Usage>) {
        if let Some(u) = usage(pid) {
            let mut p = peak.lock().unwrap();
            p.hwm_kib = p.hwm_kib.max(u.hwm_kib);
            p.cpu_s = p.cpu_s.max(u.cpu_s);
        }
    }

    /// The peak so far, with a last sample.
    pub fn stop(self) -> Usage {
        Self::sample(self.pid, &self.peak);
        self.task.abort();
        *self.peak.lock().unwrap()
    }
}

/// Starts the release operator on `namespace` with a fast clock from `clock` at `factor`, its
/// metrics on `metrics_addr`, the settings of `pods` and `extra` flags; its output goes to `log`.
#[allow(clippy::too_many_arguments)]
pub fn spawn_operator(
    binary: &Path,
    kubeconfig: &Path,
    namespace: &str,
    (clock, factor): (jiff::Timestamp, i64),
    metrics_addr: &str,
    log: &str,
    pods: Pods,
    extra: &[&str],
) -> anyhow::Result<tokio::process::Child> {
    let log = std::fs::File::create(log)?;
    let rust_log =
        std::env::var("JUKINET_SCALE_RUST_LOG").unwrap_or_else(|_| "info,kube=warn".into());
    let clock = format!("fast:{clock},x{factor}");
    Ok(tokio::process::Command::new(binary)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", rust_log)
        .args(["--clock", &clock, "--namespace", namespace])
        .args(["--metrics-addr", metrics_addr, "--allow-plain-http"])
        .args(pods.operator_flags())
        .args(extra)
        .stdout(std::process::Stdio::from(log.try_clone()?))
        .stderr(std::process::Stdio::from(log))
        .kill_on_drop(true)
        .spawn()?)
}
