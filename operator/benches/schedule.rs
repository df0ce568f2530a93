//! Schedule benchmark of the operator on the local control plane (`tests/cluster`).
//!
//! `cargo bench -p juki-operator --bench schedule` — one run measures, on the same cluster, one
//! night of a JobSchedule of three entries on every node (1,789 nodes: ≈5,400 Jobs):
//!
//! - `backup` at a time of day, then `statistics` after the node's backup, then `summary` after
//!   the node's statistics and the statistics of every node below it (a prefecture waits for its
//!   CSs, the national server for the prefectures): the cross-tier order;
//! 1. the floor: the same Jobs (built by `schedule::job`, as the operator builds them) created by a
//!    bare client, each as soon as its dependencies have succeeded;
//! 2. the operator (`target/release/juki-operator`, fast clock ×30, nodes Offline at night): from
//!    the entries' time to every Job succeeded; API writes per Job; peak memory.
//!
//! The trigger is a time of day, not the nodes' stop, so the stop wave (the scale bench's) does
//! not blur the figure. It prints a table with PASS/MISS per target and exits 0 whatever the
//! figures; if the cluster is down it says how to start it and exits 0. `JUKINET_SCALE_CS=N` runs
//! N CSs instead of 1,741. The operator's log goes to /tmp/schedule-operator.log.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use common::*;
use futures::{StreamExt, stream};
use jiff::{SignedDuration, Timestamp};
use juki_operator::api::{JobScheduleSpec, JukiNode, OperatingCalendar};
use juki_operator::resources::{self, SqliteVolume};
use juki_operator::schedule::{RunKey, Schedule};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;

/// The night of the run: Friday 2026-11-20, an open day, before any window opens.
const CLOCK_START: &str = "2026-11-20T00:00:00+09:00";
const DATE: &str = "2026-11-20";
/// Fast clock factor: the online windows (from 06:30) are 13 real minutes away.
const FACTOR: i64 = 30;
const SCHEDULE: &str = "bench";
const LOG: &str = "/tmp/schedule-operator.log";
/// How long a whole night may take before the run is called failed.
const NIGHT_TIMEOUT: Duration = Duration::from_secs(900);

fn calendar_manifest(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "jukinet.io/v1alpha1",
        "kind": "OperatingCalendar",
        "metadata": {"name": name},
        "spec": {"timeZone": "Asia/Tokyo", "batches": []},
    })
}

fn schedule_spec(calendar: &str, at: &str) -> serde_json::Value {
    json!({
        "calendar": calendar,
        "entries": [
            {"name": "backup", "batch": "backup", "trigger": "At", "at": at},
            {"name": "statistics", "batch": "statistics", "trigger": "At", "at": at,
             "after": [{"entry": "backup"}]},
            {"name": "summary", "batch": "statistics", "trigger": "At", "at": at,
             "after": [{"entry": "statistics"}, {"entry": "statistics", "scope": "NodesBelow"}]},
        ],
    })
}

/// The node a node reports to, by name (the tree the `NodesBelow` dependencies follow).
fn upstream(n: &NodeSpec) -> Option<String> {
    match n.tier {
        Tier::National => None,
        Tier::Prefecture => Some("national".into()),
        Tier::Cs => Some(format!("pref-{}", &n.municipality.as_deref()?[..2])),
    }
}

/// Every run of the night as (node, entry index), with the runs each waits for.
fn runs(nodes: &[NodeSpec]) -> BTreeMap<(String, usize), Vec<(String, usize)>> {
    let mut below: HashMap<String, Vec<String>> = HashMap::new();
    for n in nodes {
        if let Some(up) = upstream(n) {
            below.entry(up).or_default().push(n.name.clone());
        }
    }
    let mut out = BTreeMap::new();
    for n in nodes {
        let name = &n.name;
        out.insert((name.clone(), 0), vec![]);
        out.insert((name.clone(), 1), vec![(name.clone(), 0)]);
        let mut summary = vec![(name.clone(), 1)];
        for b in below.get(name).into_iter().flatten() {
            summary.push((b.clone(), 1));
        }
        out.insert((name.clone(), 2), summary);
    }
    out
}

fn succeeded(store: &Store<Job>) -> HashSet<String> {
    store
        .state()
        .iter()
        .filter(|j| j.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0)
        .map(|j| j.name_any())
        .collect()
}

/// The floor: the operator's Jobs, each created by a bare client once its dependencies have
/// succeeded. Returns the seconds from the first create to the last success.
async fn floor(client: &Client, ns: &str, nodes: &[NodeSpec]) -> anyhow::Result<f64> {
    create_namespace(client, ns).await?;
    let spec: JobScheduleSpec = serde_json::from_value(schedule_spec("unused", "01:00"))?;
    let schedule = Schedule::new(&spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    let date: jiff::civil::Date = DATE.parse()?;
    let ctx = resources::Context {
        calendar_json: &serde_json::Value::Null,
        extensions_json: &serde_json::Value::Null,
        upstream_url: None,
        node_clock: None,
        delivery_keys: None,
        otlp_endpoint: None,
        sqlite_volume: SqliteVolume::EmptyDir,
    };
    let mut jobs: HashMap<(String, usize), Job> = HashMap::new();
    for n in nodes {
        let node: JukiNode = serde_json::from_value(n.manifest(ns, "unused", Pods::Fake))?;
        for (i, entry) in schedule.entries.iter().enumerate() {
            let key = RunKey {
                namespace: ns.into(),
                node: n.name.clone(),
                entry: entry.name.clone(),
                date,
                attempt: 1,
            };
            let job = juki_operator::schedule::job(&node, &ctx, SCHEDULE, entry, &key);
            jobs.insert((n.name.clone(), i), job);
        }
    }
    let deps = runs(nodes);
    let store = watch_store::<Job>(client, ns).await;
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    let name = |run: &(String, usize)| jobs[run].name_any();
    let mut created: HashSet<(String, usize)> = HashSet::new();
    let start = Instant::now();
    loop {
        let done = succeeded(&store);
        if done.len() == jobs.len() {
            return Ok(start.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            start.elapsed() < NIGHT_TIMEOUT,
            "floor: {} of {} Jobs succeeded after {NIGHT_TIMEOUT:?}",
            done.len(),
            jobs.len()
        );
        let made: Vec<(String, usize)> = deps
            .iter()
            .filter(|(run, _)| !created.contains(*run))
            .filter(|(_, waits)| waits.iter().all(|w| done.contains(&name(w))))
            .map(|(run, _)| run.clone())
            .collect();
        let ready = made.iter().map(|run| &jobs[run]);
        stream::iter(ready)
            .map(|job| {
                let api = &api;
                async move { api.create(&PostParams::default(), job).await }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        created.extend(made);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug, Default)]
struct OperatorRun {
    initial_pass_s: f64,
    night_s: f64,
    first_job_s: f64,
    jobs: usize,
    writes: Scrape,
    peak: Usage,
}

async fn operator(
    client: &Client,
    kubeconfig: &Path,
    binary: &Path,
    ns: &str,
    calendar: &str,
    nodes: &[NodeSpec],
) -> anyhow::Result<OperatorRun> {
    let mut out = OperatorRun::default();
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let cals: Api<OperatingCalendar> = Api::all(client.clone());
    cals.patch(calendar, &pp, &Patch::Apply(calendar_manifest(calendar)))
        .await?;
    create_namespace(client, ns).await?;
    apply_nodes(client, ns, calendar, nodes, Pods::Fake).await?;
    let node_store = watch_store::<JukiNode>(client, ns).await;
    let job_store = watch_store::<Job>(client, ns).await;

    let clock_start: Timestamp = CLOCK_START.parse()?;
    let addr = format!("127.0.0.1:{}", free_port()?);
    let mut child = spawn_operator(
        binary,
        kubeconfig,
        ns,
        (clock_start, FACTOR),
        &addr,
        LOG,
        Pods::Fake,
        &[],
    )?;
    let started = Instant::now();
    let pid = child.id().context("operator pid")?;
    let peak = PeakSampler::start(pid);
    let result: anyhow::Result<()> = async {
        // The operator's first pass: every node has a phase.
        out.initial_pass_s = wait_until(started, started + Duration::from_secs(600), || {
            node_store.state().len() == nodes.len()
                && node_store
                    .state()
                    .iter()
                    .all(|n| n.status.as_ref().is_some_and(|s| s.phase.is_some()))
        })
        .await
        .context("the operator's first pass over the nodes took over 600 s")?;
        // The entries' time: a whole minute two to three clock minutes ahead.
        let clock_now = clock_start
            + SignedDuration::from_secs_f64(started.elapsed().as_secs_f64() * FACTOR as f64);
        let ahead = (clock_now + SignedDuration::from_mins(3))
            .to_zoned(jiff::tz::TimeZone::get("Asia/Tokyo")?);
        let at_time = ahead.time();
        let at = format!("{:02}:{:02}", at_time.hour(), at_time.minute());
        let trigger = ahead
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()?
            .timestamp();
        let trigger_real = started
            + Duration::from_secs_f64(
                trigger.duration_since(clock_start).as_secs_f64() / FACTOR as f64,
            );
        anyhow::ensure!(
            at_time.hour() < 6,
            "the first pass ran into the morning ({at})"
        );
        let before = scrape(&addr).await?;
        let schedules: Api<juki_operator::api::JobSchedule> = Api::namespaced(client.clone(), ns);
        let manifest = json!({
            "apiVersion": "jukinet.io/v1alpha1", "kind": "JobSchedule",
            "metadata": {"name": SCHEDULE},
            "spec": schedule_spec(calendar, &at),
        });
        schedules
            .patch(SCHEDULE, &pp, &Patch::Apply(manifest))
            .await?;
        let expected = nodes.len() * 3;
        out.first_job_s = wait_until(trigger_real, trigger_real + NIGHT_TIMEOUT, || {
            !job_store.state().is_empty()
        })
        .await
        .context("no Job within the night")?;
        out.night_s = wait_until(trigger_real, trigger_real + NIGHT_TIMEOUT, || {
            succeeded(&job_store).len() == expected
        })
        .await
        .with_context(|| {
            format!(
                "{} of {expected} Jobs succeeded after {NIGHT_TIMEOUT:?}",
                succeeded(&job_store).len()
            )
        })?;
        out.jobs = job_store.state().len();
        out.writes = scrape(&addr).await?.minus(&before);
        Ok(())
    }
    .await;
    out.peak = peak.stop();
    let _ = child.kill().await;
    result.map(|()| out)
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let kubeconfig = kubeconfig_path();
    let Some(client) = connect(&kubeconfig, "schedule").await else {
        return Ok(());
    };
    ensure_crds(&client).await?;
    let cs = scale_cs()?;
    let nodes = topology(cs, None)?;
    println!("schedule bench: {} nodes, 3 entries each", nodes.len());
    let binary = build_operator()?;
    let suffix = std::process::id();
    let floor_ns = format!("juki-sched-floor-{suffix}");
    let op_ns = format!("juki-sched-op-{suffix}");
    let calendar = format!("juki-sched-bench-{suffix}");

    let floor_s = floor(&client, &floor_ns, &nodes).await;
    delete_namespace(&client, &floor_ns, Duration::from_secs(300)).await;
    let floor_s = floor_s?;
    println!("  floor: {} Jobs in {floor_s:.1} s", nodes.len() * 3);

    let run = operator(&client, &kubeconfig, &binary, &op_ns, &calendar, &nodes).await;
    delete_namespace(&client, &op_ns, Duration::from_secs(300)).await;
    let cals: Api<OperatingCalendar> = Api::all(client.clone());
    let _ = cals.delete(&calendar, &DeleteParams::default()).await;
    let run = run?;
    let ratio = run.night_s / floor_s;
    let per_job = run.writes.writes / run.jobs.max(1) as f64;
    let mib = run.peak.hwm_kib as f64 / 1024.0;
    println!(
        "  operator: first pass {:.1} s; first Job {:.1} s after the entries' time; {} Jobs done {:.1} s after it",
        run.initial_pass_s, run.first_job_s, run.jobs, run.night_s
    );
    println!(
        "  operator API writes in the night: {} ({:?}); reconcile errors {}",
        run.writes.writes, run.writes.writes_by_kind, run.writes.reconcile_errors
    );
    println!();
    println!("| measure | figure | target | |");
    println!("|---|---|---|---|");
    println!(
        "| night (entries' time → last Job done) | {:.1} s vs floor {floor_s:.1} s = {ratio:.2}× | ≤ 1.5× | {} |",
        run.night_s,
        verdict(ratio <= 1.5)
    );
    println!(
        "| API writes per Job | {per_job:.2} | ≤ 3 | {} |",
        verdict(per_job <= 3.0)
    );
    println!(
        "| operator peak memory (VmHWM) | {mib:.1} MiB | < 150 MiB | {} |",
        verdict(mib < 150.0)
    );
    println!("| operator CPU | {:.1} s | | |", run.peak.cpu_s);
    Ok(())
}
