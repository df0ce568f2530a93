//! Monitoring benchmark (issue 21) of the operator on the local control plane (`tests/cluster`).
//!
//! `cargo bench -p juki-operator --bench monitoring` — 1 national, 47 prefecture and 1,741 CS
//! JukiNodes (`JUKINET_SCALE_CS=N`: N CSs) on kwok's fake pods, following one OperatingCalendar,
//! and the release operator (`--final-exchange skip --sqlite-volume empty-dir`, its clock at
//! Wednesday 2026-11-25 10:00 at real speed: every window open). Once every node is Online (a
//! day's steady state) it measures:
//!
//! - the per-node series of the operator's `/metrics` (`juki_node_expected_online`,
//!   `juki_node_phase`, `juki_node_fault`): how many per node, and the size and time of a scrape;
//! - `kubectl juki status` (the release `kubectl-juki`, output piped, so plain): 5 runs over the
//!   whole country, wall time each (target < 2 s).
//!
//! It prints a table with PASS/MISS and exits 0 whatever the figures; if the cluster is down it
//! says how to start it and exits 0. The operator's log goes to /tmp/monitoring-operator.log.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use jiff::Timestamp;
use juki_operator::api::{JukiNode, NodePhase, OperatingCalendar};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};

const LOG: &str = "/tmp/monitoring-operator.log";
const CLOCK: &str = "2026-11-25T10:00:00+09:00";
const FACTOR: i64 = 1;
const STATUS_RUNS: usize = 5;

/// The per-node series of one scrape: how many of each name, over how many nodes.
#[derive(Debug, Default)]
struct NodeSeries {
    by_name: BTreeMap<String, usize>,
    nodes: usize,
    all_series: usize,
    bytes: usize,
}

impl NodeSeries {
    fn of(text: &str) -> NodeSeries {
        let mut out = NodeSeries {
            bytes: text.len(),
            ..NodeSeries::default()
        };
        let mut nodes = std::collections::BTreeSet::new();
        for (series, _) in samples(text) {
            out.all_series += 1;
            if let Some(node) = label(series, "node") {
                let name = series.split('{').next().unwrap_or_default();
                *out.by_name.entry(name.to_string()).or_default() += 1;
                nodes.insert((label(series, "namespace").unwrap_or_default(), node));
            }
        }
        out.nodes = nodes.len();
        out
    }

    fn per_node(&self) -> f64 {
        self.by_name.values().sum::<usize>() as f64 / self.nodes.max(1) as f64
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let kubeconfig = kubeconfig_path();
    let Some(client) = connect(&kubeconfig, "monitoring").await else {
        return Ok(());
    };
    let cs = scale_cs()?;
    let nodes = topology(cs, None)?;
    println!(
        "monitoring bench: {} nodes; building the release operator and kubectl-juki…",
        nodes.len()
    );
    let operator = build_operator()?;
    let kubectl_juki = build_release("kubectl-juki")?;
    ensure_crds(&client).await?;
    let id = std::process::id();
    let (ns, calendar) = (
        format!("juki-monitoring-{id}"),
        format!("juki-monitoring-{id}"),
    );
    let result = measure(
        &client,
        &kubeconfig,
        (&operator, &kubectl_juki),
        &ns,
        &calendar,
        &nodes,
    )
    .await;
    delete_namespace(&client, &ns, Duration::from_secs(120)).await;
    let cals: Api<OperatingCalendar> = Api::all(client.clone());
    let _ = cals.delete(&calendar, &DeleteParams::default()).await;
    result
}

async fn measure(
    client: &Client,
    kubeconfig: &std::path::Path,
    (operator, kubectl_juki): (&std::path::Path, &std::path::Path),
    ns: &str,
    calendar: &str,
    nodes: &[NodeSpec],
) -> anyhow::Result<()> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    // The example calendar's windows and batches, under the bench's own name.
    let text = std::fs::read_to_string(repo_root().join("examples/calendar.yaml"))?;
    let mut cal: serde_json::Value = serde_yaml::from_str(&text)?;
    cal["metadata"]["name"] = calendar.into();
    let cals: Api<OperatingCalendar> = Api::all(client.clone());
    cals.patch(calendar, &pp, &Patch::Apply(&cal)).await?;
    create_namespace(client, ns).await?;
    apply_nodes(client, ns, calendar, nodes, Pods::Fake).await?;
    let store = watch_store::<JukiNode>(client, ns).await;

    let addr = format!("127.0.0.1:{}", free_port()?);
    let clock: Timestamp = CLOCK.parse()?;
    let mut child = spawn_operator(
        operator,
        kubeconfig,
        ns,
        (clock, FACTOR),
        &addr,
        LOG,
        Pods::Fake,
        &[],
    )?;
    let started = Instant::now();
    let online = wait_until(started, started + Duration::from_secs(900), || {
        let state = store.state();
        state.len() == nodes.len()
            && state
                .iter()
                .all(|n| n.status.as_ref().and_then(|s| s.phase) == Some(NodePhase::Online))
    })
    .await;
    let Some(online) = online else {
        let _ = child.kill().await;
        anyhow::bail!("not every node was Online within 900 s (log {LOG})");
    };
    // The per-node series follow the statuses: one more second for the last ones.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let scrape_start = Instant::now();
    let text = scrape_text(&addr).await?;
    let scrape_s = scrape_start.elapsed().as_secs_f64();
    let series = NodeSeries::of(&text);

    let mut runs = Vec::new();
    let mut lines = 0;
    for _ in 0..STATUS_RUNS {
        let t = Instant::now();
        let out = tokio::process::Command::new(kubectl_juki)
            .env("KUBECONFIG", kubeconfig)
            .args(["status", "-n", ns])
            .output()
            .await?;
        runs.push(t.elapsed().as_secs_f64());
        if !out.status.success() {
            let _ = child.kill().await;
            anyhow::bail!(
                "kubectl juki status failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        lines = out.stdout.iter().filter(|b| **b == b'\n').count();
    }
    let phases = store
        .state()
        .iter()
        .filter_map(|n| n.status.as_ref()?.phase)
        .fold(BTreeMap::new(), |mut m, p| {
            *m.entry(format!("{p:?}")).or_insert(0) += 1;
            m
        });
    let _ = child.kill().await;

    runs.sort_by(f64::total_cmp);
    let median = runs[runs.len() / 2];
    println!();
    println!("## Monitoring benchmark: {} nodes", nodes.len());
    println!();
    println!(
        "kwok's fake pods; the operator with `{}` (clock from {CLOCK}, ×{FACTOR}); phases at the \
         measurement: {phases:?}",
        Pods::Fake.operator_flags().join(" ")
    );
    println!();
    println!("| figure | value |");
    println!("|---|---|");
    println!("| operator start until every node is Online | {online:.1} s |");
    for (name, count) in &series.by_name {
        println!("| `{name}` series | {count} |");
    }
    println!(
        "| per-node series, per node | {:.2} ({} nodes in /metrics) |",
        series.per_node(),
        series.nodes
    );
    println!(
        "| /metrics: all series, size, one scrape | {} series, {:.0} KiB, {:.3} s |",
        series.all_series,
        series.bytes as f64 / 1024.0,
        scrape_s
    );
    println!(
        "| `kubectl juki status -n NS` ({STATUS_RUNS} runs, {lines} lines): min / median / max | {:.2} / {:.2} / {:.2} s |",
        runs[0],
        median,
        runs[runs.len() - 1]
    );
    println!();
    println!("| target | value | verdict |");
    println!("|---|---|---|");
    println!(
        "| `kubectl juki status` < 2 s at {} nodes (median) | {median:.2} s | {} |",
        nodes.len(),
        if median < 2.0 { "PASS" } else { "MISS" }
    );
    println!(
        "| every node in /metrics | {} of {} | {} |",
        series.nodes,
        nodes.len(),
        if series.nodes == nodes.len() {
            "PASS"
        } else {
            "MISS"
        }
    );
    Ok(())
}
