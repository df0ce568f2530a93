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
//!   whole country, wall time each (target < 2 s);
//! - the series' cost: the whole run again with `--node-health-series=false`, and the operator's
//!   peak memory and CPU of both runs (target: < 10% more with them).
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

/// One run's figures.
struct Run {
    online_s: f64,
    /// Peak memory and CPU from the operator's start until every node is Online and
    /// [`STEADY`] more.
    usage: Usage,
    series: NodeSeries,
    scrape_s: f64,
    /// `kubectl juki status` wall times, sorted, and the lines it printed.
    status_runs: Vec<f64>,
    status_lines: usize,
    /// One more `kubectl juki status --color always`, for the README's picture.
    status_colored: String,
    phases: BTreeMap<String, usize>,
}

/// How long the operator runs on after every node is Online, in the steady state of a day.
const STEADY: Duration = Duration::from_secs(60);

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
    let mut runs = Vec::new();
    // With the per-node health series (the default), then without (--node-health-series=false),
    // each on a namespace of its own.
    for health in [true, false] {
        let name = format!(
            "juki-monitoring-{id}-{}",
            if health { "with" } else { "without" }
        );
        println!(
            "run {}: the per-node health series {}",
            runs.len() + 1,
            if health { "on" } else { "off" }
        );
        let result = measure(
            &client,
            &kubeconfig,
            (&operator, &kubectl_juki),
            (&name, &name),
            &nodes,
            health,
        )
        .await;
        delete_namespace(&client, &name, Duration::from_secs(300)).await;
        let cals: Api<OperatingCalendar> = Api::all(client.clone());
        let _ = cals.delete(&name, &DeleteParams::default()).await;
        runs.push(result?);
    }
    report(&nodes, &runs[0], &runs[1]);
    if cs.is_none() {
        picture(&runs[0].status_colored)?;
    }
    Ok(())
}

/// Where the full-size run draws `kubectl juki status` for the README (headless Chromium).
const PICTURE: &str = "docs/kubectl-juki-status.png";
/// The picture's first lines: the tiers, the prefectures and the faults fit; the CSs' own
/// lines do not.
const PICTURE_LINES: usize = 64;

/// Draws the top of a coloured `kubectl juki status` as a terminal would, into [`PICTURE`].
fn picture(colored: &str) -> anyhow::Result<()> {
    let lines: Vec<&str> = colored.lines().take(PICTURE_LINES).collect();
    let html = format!(
        "<!doctype html><meta charset=utf-8><style>body{{margin:0;background:#1e1e1e}}\
         pre{{margin:0;padding:12px;color:#d4d4d4;font:14px/1.35 'Noto Sans Mono CJK JP',monospace}}\
         .c1{{font-weight:bold}}.c2{{color:#8a8a8a}}.c31{{color:#f14c4c}}.c32{{color:#23d18b}}\
         .c33{{color:#f5f543}}.c36{{color:#29b8db}}</style><pre>{}</pre>",
        ansi_to_html(&lines.join("\n"))
    );
    let dir = std::env::temp_dir().join(format!("juki-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let page = dir.join("status.html");
    std::fs::write(&page, html)?;
    let out = repo_root().join(PICTURE);
    let height = 24 + lines.len() * 19;
    let status = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--window-size=1100,{height}"))
        .arg(format!("--screenshot={}", out.display()))
        .arg(format!("file://{}", page.display()))
        .stderr(std::process::Stdio::null())
        .status()?;
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(status.success(), "chromium could not draw {PICTURE}");
    println!(
        "\n{PICTURE}: the first {} lines of `kubectl juki status --color always`",
        lines.len()
    );
    Ok(())
}

/// SGR colour codes as spans of class `c<code>`; the text HTML-escaped.
fn ansi_to_html(text: &str) -> String {
    let mut html = String::new();
    let mut open = 0;
    let mut rest = text;
    while let Some(at) = rest.find("\x1b[") {
        html.push_str(&escape(&rest[..at]));
        let after = &rest[at + 2..];
        let Some(end) = after.find('m') else {
            rest = after;
            continue;
        };
        for code in after[..end].split(';') {
            if code == "0" || code.is_empty() {
                html.push_str(&"</span>".repeat(open));
                open = 0;
            } else {
                html.push_str(&format!("<span class=c{code}>"));
                open += 1;
            }
        }
        rest = &after[end + 1..];
    }
    html.push_str(&escape(rest));
    html.push_str(&"</span>".repeat(open));
    html
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

async fn measure(
    client: &Client,
    kubeconfig: &std::path::Path,
    (operator, kubectl_juki): (&std::path::Path, &std::path::Path),
    (ns, calendar): (&str, &str),
    nodes: &[NodeSpec],
    node_health_series: bool,
) -> anyhow::Result<Run> {
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
    let health_flag = format!("--node-health-series={node_health_series}");
    let mut child = spawn_operator(
        operator,
        kubeconfig,
        ns,
        (clock, FACTOR),
        &addr,
        LOG,
        Pods::Fake,
        &[&health_flag],
    )?;
    let started = Instant::now();
    let sampler = PeakSampler::start(child.id().unwrap_or_default());
    let online = wait_until(started, started + Duration::from_secs(900), || {
        let state = store.state();
        state.len() == nodes.len()
            && state
                .iter()
                .all(|n| n.status.as_ref().and_then(|s| s.phase) == Some(NodePhase::Online))
    })
    .await;
    let Some(online_s) = online else {
        let _ = child.kill().await;
        anyhow::bail!("not every node was Online within 900 s (log {LOG})");
    };
    tokio::time::sleep(STEADY).await;
    let usage = sampler.stop();
    let scrape_start = Instant::now();
    let text = scrape_text(&addr).await?;
    let scrape_s = scrape_start.elapsed().as_secs_f64();
    let series = NodeSeries::of(&text);

    let mut status_runs = Vec::new();
    let mut status_lines = 0;
    for _ in 0..STATUS_RUNS {
        let t = Instant::now();
        let out = tokio::process::Command::new(kubectl_juki)
            .env("KUBECONFIG", kubeconfig)
            .args(["status", "-n", ns, "--at", &operator_now(clock, started)])
            .output()
            .await?;
        status_runs.push(t.elapsed().as_secs_f64());
        if !out.status.success() {
            let _ = child.kill().await;
            anyhow::bail!(
                "kubectl juki status failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        status_lines = out.stdout.iter().filter(|b| **b == b'\n').count();
    }
    status_runs.sort_by(f64::total_cmp);
    let colored = tokio::process::Command::new(kubectl_juki)
        .env("KUBECONFIG", kubeconfig)
        .args(["status", "-n", ns, "--color", "always"])
        .args(["--at", &operator_now(clock, started)])
        .output()
        .await?;
    let status_colored = String::from_utf8_lossy(&colored.stdout).into_owned();
    let phases = store
        .state()
        .iter()
        .filter_map(|n| n.status.as_ref()?.phase)
        .fold(BTreeMap::new(), |mut m, p| {
            *m.entry(format!("{p:?}")).or_insert(0) += 1;
            m
        });
    let _ = child.kill().await;
    Ok(Run {
        online_s,
        usage,
        series,
        scrape_s,
        status_runs,
        status_lines,
        status_colored,
        phases,
    })
}

/// The operator's clock now (its fast clock started at `clock` when it was started): what
/// `kubectl juki status --at` judges the nodes at, as the operator does.
fn operator_now(clock: Timestamp, started: Instant) -> String {
    let elapsed = jiff::SignedDuration::try_from(started.elapsed() * FACTOR as u32)
        .unwrap_or(jiff::SignedDuration::ZERO);
    clock.saturating_add(elapsed).unwrap_or(clock).to_string()
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

fn report(nodes: &[NodeSpec], with: &Run, without: &Run) {
    let median = with.status_runs[with.status_runs.len() / 2];
    let mib = |u: &Usage| u.hwm_kib as f64 / 1024.0;
    let more = |a: f64, b: f64| (a / b - 1.0) * 100.0;
    println!();
    println!("## Monitoring benchmark: {} nodes", nodes.len());
    println!();
    println!(
        "kwok's fake pods; the operator with `{}` (clock from {CLOCK}, ×{FACTOR}), run twice: \
         with the per-node health series (the default) and with `--node-health-series=false`; \
         peak memory (VmHWM) and CPU (user + system) from its start until every node is Online \
         and {} s more; phases at the measurement: {:?}",
        Pods::Fake.operator_flags().join(" "),
        STEADY.as_secs(),
        with.phases
    );
    println!();
    println!("| figure | with the series | without |");
    println!("|---|---|---|");
    println!(
        "| operator start until every node is Online | {:.1} s | {:.1} s |",
        with.online_s, without.online_s
    );
    println!(
        "| peak memory | {:.1} MiB | {:.1} MiB |",
        mib(&with.usage),
        mib(&without.usage)
    );
    println!(
        "| CPU | {:.1} s | {:.1} s |",
        with.usage.cpu_s, without.usage.cpu_s
    );
    for (name, count) in &with.series.by_name {
        println!(
            "| `{name}` series | {count} | {} |",
            without.series.by_name.get(name).unwrap_or(&0)
        );
    }
    println!(
        "| per-node series, per node | {:.2} ({} nodes in /metrics) | {:.2} |",
        with.series.per_node(),
        with.series.nodes,
        without.series.per_node()
    );
    println!(
        "| /metrics: all series, size, one scrape | {} series, {:.0} KiB, {:.3} s | {} series, {:.0} KiB, {:.3} s |",
        with.series.all_series,
        with.series.bytes as f64 / 1024.0,
        with.scrape_s,
        without.series.all_series,
        without.series.bytes as f64 / 1024.0,
        without.scrape_s
    );
    println!(
        "| `kubectl juki status -n NS` ({STATUS_RUNS} runs, {} lines): min / median / max | {:.2} / {:.2} / {:.2} s | |",
        with.status_lines,
        with.status_runs[0],
        median,
        with.status_runs[with.status_runs.len() - 1]
    );
    let memory_more = more(mib(&with.usage), mib(&without.usage));
    let cpu_more = more(with.usage.cpu_s, without.usage.cpu_s);
    println!();
    println!("| target | value | verdict |");
    println!("|---|---|---|");
    println!(
        "| the series' extra peak memory < 10% | {memory_more:+.1}% | {} |",
        verdict(memory_more < 10.0)
    );
    println!(
        "| the series' extra CPU < 10% | {cpu_more:+.1}% | {} |",
        verdict(cpu_more < 10.0)
    );
    println!(
        "| `kubectl juki status` < 2 s at {} nodes (median) | {median:.2} s | {} |",
        nodes.len(),
        verdict(median < 2.0)
    );
    println!(
        "| every node in /metrics | {} of {} | {} |",
        with.series.nodes,
        nodes.len(),
        verdict(with.series.nodes == nodes.len())
    );
    println!(
        "| no per-node series without them | {} | {} |",
        without.series.nodes,
        verdict(without.series.nodes == 0)
    );
}
