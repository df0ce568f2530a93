//! End to end: the real operator binary, with a fast clock, runs a topology of one national
//! server, two prefectures (different online ends) and four CSs on the local control plane. A
//! watcher records every phase change; the order rules are checked on the recording.
//!
//! Each test has its own namespace, calendar and operator process (`--namespace`), so they can
//! run in parallel with the rest of the suite.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use juki_calendar::Calendar;
use juki_operator::api::{JukiNode, NodePhase, OperatingCalendar, ServiceExtension};
use juki_operator::forecast::order_violations;
use juki_operator::topology::TopologyNode;
use juki_tests::cluster::{poll_until, read_repo_file, unique_name};
use juki_tests::operator::{OperatorProcess, Recording, tokyo};
use juki_tests::{TestCluster, require_cluster};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};

/// Clock seconds per real second: a stop wave (about 15 real seconds) stays inside the night.
const FACTOR: u32 = 1200;

/// The example calendar under a unique name, and the example topology in one namespace, all
/// following that calendar.
struct Setup {
    ns: juki_tests::Guard,
    _calendar: juki_tests::Guard,
    calendar_name: String,
    calendar: Calendar,
}

async fn setup(cluster: &TestCluster, calendar_override: Option<&str>) -> Setup {
    cluster.install_crds().await;
    let ns = cluster.namespace().await;
    let calendar_name = unique_name("e2e-cal");
    let mut calendar_yaml = read_repo_file("examples/calendar.yaml")
        .replace("name: japan", &format!("name: {calendar_name}"));
    if let Some(text) = calendar_override {
        calendar_yaml = text.replace("NAME", &calendar_name);
    }
    let calendar_guard = cluster.guard("operatingcalendar", &calendar_name, None);
    cluster
        .apply_yaml(&calendar_yaml, None)
        .await
        .expect("calendar accepted");
    let nodes_yaml: String = read_repo_file("examples/topology.yaml")
        .split("\n---\n")
        .filter(|doc| doc.contains("kind: JukiNode"))
        .map(|doc| {
            // One namespace for the whole topology: drop the per-tier namespaces, references and
            // calendar names; every node follows the test's calendar.
            doc.lines()
                .filter(|l| {
                    !l.trim_start().starts_with("namespace:")
                        && !l.trim_start().starts_with("upstream:")
                        && !l.trim_start().starts_with("calendar:")
                })
                .collect::<Vec<_>>()
                .join("\n")
                .replace("tier:", &format!("calendar: {calendar_name}\n  tier:"))
        })
        .collect::<Vec<_>>()
        .join("\n---\n");
    cluster
        .apply_yaml(&nodes_yaml, Some(&ns.name))
        .await
        .expect("topology accepted");
    let spec: OperatingCalendar = serde_yaml::from_str(&calendar_yaml).unwrap();
    let calendar = Calendar::new(&spec.spec.calendar)
        .unwrap_or_else(|_| Calendar::new(&Default::default()).unwrap());
    Setup {
        ns,
        _calendar: calendar_guard,
        calendar_name,
        calendar,
    }
}

async fn topology(cluster: &TestCluster, ns: &str) -> Vec<TopologyNode> {
    let nodes = Api::<JukiNode>::namespaced(cluster.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    nodes
        .items
        .iter()
        .map(|n| juki_operator::topology::from_jukinode(n, ns).unwrap().0)
        .collect()
}

/// Batch Jobs per (node, operating date), and each date's batches.
async fn jobs(cluster: &TestCluster, ns: &str) -> BTreeMap<(String, String), Vec<String>> {
    let jobs = Api::<Job>::namespaced(cluster.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for j in jobs.items {
        let l = j.labels();
        out.entry((
            l["jukinet.io/node"].clone(),
            l["jukinet.io/operating-date"].clone(),
        ))
        .or_default()
        .push(l["jukinet.io/batch"].clone());
    }
    out
}

/// Checks the recording: order rules, every DailyBatch entered from Stopping, and exactly one
/// statistics and one backup Job per node per open day in `open_days`.
async fn assert_day_rules(
    cluster: &TestCluster,
    setup: &Setup,
    recording: &Recording,
    open_days: &[&str],
) {
    let nodes = topology(cluster, &setup.ns.name).await;
    let changes = recording.changes(&nodes);
    let violations = order_violations(&setup.calendar, &nodes, &changes, &[]);
    assert!(
        violations.is_empty(),
        "order violations: {violations:#?}\nrecording: {:#?}",
        recording.events()
    );
    for c in &changes {
        if c.to == NodePhase::DailyBatch {
            assert_eq!(
                c.from,
                NodePhase::Stopping,
                "{} entered DailyBatch from {:?}",
                nodes[c.node].name,
                c.from
            );
        }
        assert_ne!(
            c.to,
            NodePhase::Failed,
            "{} failed: {:#?}",
            nodes[c.node].name,
            recording.events()
        );
    }
    let jobs = jobs(cluster, &setup.ns.name).await;
    // The calendar's daily batches, plus its weekly and monthly ones where their closed-day
    // policy puts them, for the node's tier.
    let mut expected = BTreeMap::new();
    for n in &nodes {
        for d in open_days {
            let date: jiff::civil::Date = d.parse().unwrap();
            let mut names: Vec<String> = setup
                .calendar
                .batch_runs_for(n.tier, date)
                .iter()
                .map(|r| r.batch.name.clone())
                .collect();
            names.sort();
            expected.insert((n.name.clone(), d.replace('-', "")), names);
        }
    }
    let mut got = jobs.clone();
    got.values_mut().for_each(|v| v.sort());
    assert_eq!(
        got, expected,
        "exactly one Job per batch, node and open day (weekly and monthly ones where the calendar puts them)"
    );
    let starts = changes
        .iter()
        .filter(|c| c.to == NodePhase::Starting)
        .count();
    assert_eq!(
        starts,
        nodes.len() * open_days.len(),
        "one start per node per open day: {:#?}",
        recording.events()
    );
}

/// When the transitions happened, on each of `open_days`: every node starts (Starting) at its
/// tier's online start or within 90 minutes after (the time its upstream takes to come up), and
/// leaves Online at its own online end (a prefecture's from the calendar) or within 90 minutes
/// after, never before.
async fn assert_transition_times(
    cluster: &TestCluster,
    setup: &Setup,
    recording: &Recording,
    open_days: &[&str],
) {
    let slack = jiff::SignedDuration::from_mins(90);
    let events = recording.events();
    for n in topology(cluster, &setup.ns.name).await {
        let mine: Vec<(NodePhase, Timestamp)> = events
            .iter()
            .filter(|(name, ..)| *name == n.name)
            .map(|(_, phase, at)| (*phase, *at))
            .collect();
        for day in open_days {
            let date: jiff::civil::Date = day.parse().unwrap();
            let w = setup
                .calendar
                .online_window(n.tier, n.prefecture, date)
                .unwrap_or_else(|| panic!("{day} is not open"));
            let earliest = w.start - jiff::SignedDuration::from_hours(6);
            let start = mine
                .iter()
                .position(|(p, t)| *p == NodePhase::Starting && *t >= earliest && *t < w.end)
                .unwrap_or_else(|| panic!("{} did not start on {day}: {mine:#?}", n.name));
            let started = mine[start].1;
            assert!(
                started >= w.start && started <= w.start + slack,
                "{} started at {started}, its window opens at {}: {mine:#?}",
                n.name,
                w.start
            );
            let left = mine[start..]
                .iter()
                .find(|(p, _)| !matches!(p, NodePhase::Starting | NodePhase::Online))
                .unwrap_or_else(|| panic!("{} did not stop after {day}: {mine:#?}", n.name))
                .1;
            assert!(
                left >= w.end && left <= w.end + slack,
                "{} left Online at {left}, its window ends at {}: {mine:#?}",
                n.name,
                w.end
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_weekday_a_saturday_and_a_holiday_run_in_dependency_order() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let setup = setup(&cluster, None).await;
    let recording = Recording::start(&cluster, &setup.ns.name);
    // Friday 2026-11-20, then the weekend.
    let op = OperatorProcess::start(&cluster, &setup.ns.name, tokyo("2026-11-20T06:30"), FACTOR);
    op.run_until(tokyo("2026-11-21T12:00")).await;
    drop(op);
    // Monday 2026-11-23 is 勤労感謝の日: nothing may start. Tuesday is an ordinary day.
    let op = OperatorProcess::start(&cluster, &setup.ns.name, tokyo("2026-11-23T06:30"), FACTOR);
    op.run_until(tokyo("2026-11-23T23:00")).await;
    let before_tuesday = recording.events().len();
    assert!(
        recording
            .events()
            .iter()
            .all(|(_, phase, at)| *phase != NodePhase::Starting || *at < tokyo("2026-11-22T00:00")),
        "something started on the weekend or the holiday: {:#?}",
        recording.events()
    );
    drop(op);
    assert!(
        before_tuesday >= 7 * 6,
        "Friday ran a whole day: {:#?}",
        recording.events()
    );
    let op = OperatorProcess::start(&cluster, &setup.ns.name, tokyo("2026-11-24T06:30"), FACTOR);
    op.run_until(tokyo("2026-11-25T02:00")).await;
    drop(op);
    assert_day_rules(&cluster, &setup, &recording, &["2026-11-20", "2026-11-24"]).await;
    assert_transition_times(&cluster, &setup, &recording, &["2026-11-20", "2026-11-24"]).await;

    // The tiers ended the day in order: every node Offline with its batches done.
    let nodes = Api::<JukiNode>::namespaced(cluster.client.clone(), &setup.ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    for n in nodes {
        let s = n.status.clone().unwrap();
        assert_eq!(s.phase, Some(NodePhase::Offline), "{}", n.name_any());
        assert_eq!(s.last_batch.unwrap().date, "2026-11-24", "{}", n.name_any());
        let d = Api::<Deployment>::namespaced(cluster.client.clone(), &setup.ns.name)
            .get(&n.name_any())
            .await
            .unwrap();
        assert_eq!(d.spec.unwrap().replicas, Some(0));
        assert_eq!(
            d.metadata.owner_references.unwrap()[0].uid,
            n.meta().uid.clone().unwrap()
        );
    }
    let _ = &setup.calendar_name;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_batch_slot_the_nodes_batch_one_after_another_in_order() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let setup = setup(&cluster, None).await;
    let recording = Recording::start(&cluster, &setup.ns.name);
    // Friday 2026-11-20; the four CSs stop together at window end and must take turns.
    let op = OperatorProcess::start_with(
        &cluster,
        &setup.ns.name,
        tokyo("2026-11-20T06:30"),
        FACTOR,
        "",
        &["--max-batch-nodes", "1"],
    );
    op.run_until(tokyo("2026-11-21T06:00")).await;
    drop(op);
    assert_day_rules(&cluster, &setup, &recording, &["2026-11-20"]).await;

    // Each node's batches, from its first Job's start to its last Job's completion: with one
    // slot no two nodes' spans overlap (the API server's times have one-second resolution).
    let jobs = Api::<Job>::namespaced(cluster.client.clone(), &setup.ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    let mut spans: BTreeMap<String, (Timestamp, Timestamp)> = BTreeMap::new();
    for j in &jobs.items {
        let status = j.status.clone().unwrap_or_default();
        let (Some(start), Some(end)) = (status.start_time.clone(), status.completion_time.clone())
        else {
            panic!("{} did not complete: {status:?}", j.name_any());
        };
        let span = spans
            .entry(j.labels()["jukinet.io/node"].clone())
            .or_insert((start.0, end.0));
        span.0 = span.0.min(start.0);
        span.1 = span.1.max(end.0);
    }
    let mut ordered: Vec<_> = spans.into_iter().collect();
    ordered.sort_by_key(|(_, (start, _))| *start);
    assert_eq!(ordered.len(), 7, "{ordered:#?}");
    for pair in ordered.windows(2) {
        assert!(
            pair[1].1.0 >= pair[0].1.1,
            "{} started its batches before {} had finished: {ordered:#?}",
            pair[1].0,
            pair[0].0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_node_holds_back_the_batches_until_its_pods_go_or_look_stuck() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let setup = setup(&cluster, None).await;
    let ns = setup.ns.name.clone();
    // One batch slot, and a node Stopping counts against it for up to the readiness timeout.
    let op = OperatorProcess::start_with(
        &cluster,
        &ns,
        tokyo("2026-11-20T06:30"),
        FACTOR,
        "",
        &["--max-batch-nodes", "1", "--readiness-timeout", "20"],
    );
    let nodes = Api::<JukiNode>::namespaced(cluster.client.clone(), &ns);
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns);
    let job_count = || {
        let jobs = Api::<Job>::namespaced(cluster.client.clone(), &ns);
        async move { jobs.list(&ListParams::default()).await.unwrap().items.len() }
    };
    let status_of = |n: &'static str| {
        let nodes = nodes.clone();
        async move { nodes.get(n).await.unwrap().status.unwrap_or_default() }
    };
    const STUCK: &str = "cs-131016";
    const OTHERS: [&str; 3] = ["cs-131041", "cs-271004", "cs-272051"];
    let hold_pods = |finalizers: serde_json::Value| {
        let pods = pods.clone();
        async move {
            let selector = format!("jukinet.io/node={STUCK}");
            let list = pods.list(&ListParams::default().labels(&selector)).await;
            let patch = serde_json::json!({"metadata": {"finalizers": finalizers}});
            for p in list.unwrap().items {
                pods.patch(
                    &p.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .unwrap();
            }
        }
    };

    poll_until(
        "the CS to hold Online",
        Duration::from_secs(120),
        || async { status_of(STUCK).await.phase == Some(NodePhase::Online) },
    )
    .await
    .unwrap();
    // Its pod cannot go: it stays Stopping (as pods on a lost Kubernetes node would).
    hold_pods(serde_json::json!(["jukinet.io/e2e-hold"])).await;
    poll_until("the held CS Stopping", Duration::from_secs(120), || async {
        status_of(STUCK).await.phase == Some(NodePhase::Stopping)
    })
    .await
    .unwrap();
    let stopping_since = std::time::Instant::now();
    // While it counts, nobody batches, however long the others have been stopped.
    while stopping_since.elapsed() < Duration::from_secs(12) {
        assert_eq!(
            job_count().await,
            0,
            "a batch Job while a node was Stopping"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for n in OTHERS {
        let s = status_of(n).await;
        assert_eq!(
            (s.phase, s.reason.as_deref()),
            (Some(NodePhase::DailyBatch), Some("BatchQueued")),
            "{n}: {s:?}"
        );
    }
    // Stopping longer than the readiness timeout, it no longer holds the others back.
    poll_until(
        "the other CSs batched",
        Duration::from_secs(120),
        || async {
            let mut done = true;
            for n in OTHERS {
                let s = status_of(n).await;
                done &= s.phase == Some(NodePhase::Offline) && s.last_batch.is_some();
            }
            done
        },
    )
    .await
    .unwrap();
    assert_eq!(status_of(STUCK).await.phase, Some(NodePhase::Stopping));
    // Its pod let go, it runs its own batches.
    hold_pods(serde_json::Value::Null).await;
    poll_until("the held CS batched", Duration::from_secs(120), || async {
        let s = status_of(STUCK).await;
        s.phase == Some(NodePhase::Offline) && s.last_batch.is_some()
    })
    .await
    .unwrap();
    drop(op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_year_end_closure_keeps_everything_offline() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let setup = setup(&cluster, None).await;
    let recording = Recording::start(&cluster, &setup.ns.name);
    // Monday Dec 28 is the last open day; Dec 29 – Jan 3 are closed; Jan 4 opens again. The
    // operator runs the whole way, ten times faster through the closure (restarted where its
    // clock was: it is level-triggered).
    let ns = &setup.ns.name;
    let op = OperatorProcess::start(&cluster, ns, tokyo("2026-12-28T06:30"), FACTOR);
    op.run_until(tokyo("2026-12-29T14:00")).await;
    let at = op.kill().await;
    let op = OperatorProcess::start_with(&cluster, ns, at, FACTOR * 10, "-closure", &[]);
    op.run_until(tokyo("2027-01-03T20:00")).await;
    let at = op.kill().await;
    let op = OperatorProcess::start_with(&cluster, ns, at, FACTOR, "-january", &[]);
    op.run_until(tokyo("2027-01-05T02:00")).await;
    drop(op);
    let during_closure: Vec<_> = recording
        .events()
        .into_iter()
        .filter(|(.., t)| *t >= tokyo("2026-12-29T06:00") && *t < tokyo("2027-01-04T06:00"))
        .collect();
    assert!(
        during_closure.is_empty(),
        "a node changed phase during the closure: {during_closure:#?}"
    );
    assert_day_rules(&cluster, &setup, &recording, &["2026-12-28", "2027-01-04"]).await;
    assert_transition_times(&cluster, &setup, &recording, &["2026-12-28", "2027-01-04"]).await;
    let opcal = Api::<OperatingCalendar>::all(cluster.client.clone())
        .get(&setup.calendar_name)
        .await
        .unwrap();
    let status = opcal.status.unwrap();
    assert_eq!(
        status.conditions[0].status, "True",
        "{:?}",
        status.conditions
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_operator_mid_wave_converges_without_breaking_order() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let setup = setup(&cluster, None).await;
    let recording = Recording::start(&cluster, &setup.ns.name);
    let ns = setup.ns.name.clone();
    let phase_count = |phase: NodePhase| {
        recording
            .events()
            .iter()
            .filter(|(_, p, _)| *p == phase)
            .count()
    };
    let mut op = OperatorProcess::start(&cluster, &ns, tokyo("2026-11-20T06:50"), FACTOR);
    // Kill during the start wave, as soon as the first CS starts; restart where the clock was.
    poll_until("a CS Starting", Duration::from_secs(60), || async {
        recording
            .events()
            .iter()
            .any(|(n, p, _)| n.starts_with("cs-") && *p == NodePhase::Starting)
    })
    .await
    .unwrap();
    let at = op.kill().await;
    op = OperatorProcess::start(&cluster, &ns, at, FACTOR);
    // Kill again during the stop wave, as soon as the first node is in DailyBatch.
    poll_until("a node in DailyBatch", Duration::from_secs(120), || async {
        phase_count(NodePhase::DailyBatch) > 0
    })
    .await
    .unwrap();
    let at = op.kill().await;
    let op = OperatorProcess::start(&cluster, &ns, at, FACTOR);
    op.run_until(tokyo("2026-11-21T03:00")).await;
    drop(op);
    assert_day_rules(&cluster, &setup, &recording, &["2026-11-20"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_extension_keeps_its_chain_up_then_lets_it_stop_in_order() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let setup = setup(&cluster, None).await;
    let ns = setup.ns.name.clone();
    let extension = "apiVersion: jukinet.io/v1alpha1\nkind: ServiceExtension\nmetadata: {name: late-issuance}\nspec:\n  kind: WideAreaIssuance\n  nodes: [{name: cs-131016}]\n  date: \"2026-11-20\"\n  endTime: \"23:30\"\n  coordinatedWith: [\"131041\"]\n";
    cluster
        .apply_yaml(extension, Some(&ns))
        .await
        .expect("extension accepted");
    let recording = Recording::start(&cluster, &ns);
    let op = OperatorProcess::start(&cluster, &ns, tokyo("2026-11-20T20:00"), FACTOR);
    // Nothing was up at 20:00 (the operator just started): the wave starts at once.
    op.run_until(tokyo("2026-11-20T23:20")).await;
    let nodes = Api::<JukiNode>::namespaced(cluster.client.clone(), &ns);
    let phase = |n: &str| {
        let nodes = nodes.clone();
        let n = n.to_string();
        async move { nodes.get(&n).await.unwrap().status.and_then(|s| s.phase) }
    };
    // 23:20: past every normal end; the extended chain is still up, the rest has stopped.
    for n in ["cs-131016", "pref-13", "national"] {
        assert_eq!(
            phase(n).await,
            Some(NodePhase::Online),
            "{n} is kept up by the extension: {:#?}",
            recording.events()
        );
    }
    for n in ["cs-131041", "cs-271004", "cs-272051", "pref-27"] {
        assert_eq!(
            phase(n).await,
            Some(NodePhase::Offline),
            "{n} stopped normally: {:#?}",
            recording.events()
        );
    }
    let ext = Api::<ServiceExtension>::namespaced(cluster.client.clone(), &ns)
        .get("late-issuance")
        .await
        .unwrap();
    assert_eq!(
        ext.status.and_then(|s| s.phase),
        Some(juki_operator::api::ExtensionPhase::Active)
    );
    // The node services see it too (issue 18, case 4): the covered nodes' ConfigMaps list it,
    // with the chain it keeps up, so their relays stay open to 23:30; the others list nothing.
    let config_maps =
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(cluster.client.clone(), &ns);
    for n in ["cs-131016", "pref-13", "national", "cs-131041", "pref-27"] {
        let config = config_maps.get(&format!("{n}-config")).await.unwrap();
        let text = config.data.unwrap()["extensions.json"].clone();
        let listed: serde_json::Value = serde_json::from_str(&text).unwrap();
        if ["cs-131016", "pref-13", "national"].contains(&n) {
            assert_eq!(
                listed,
                serde_json::json!([{
                    "name": format!("{ns}/late-issuance"),
                    "kind": "WideAreaIssuance",
                    "nodes": ["cs-131016", "pref-13", "national"],
                    "date": "2026-11-20",
                    "endTime": "23:30",
                }]),
                "{n}"
            );
        } else {
            assert_eq!(listed, serde_json::json!([]), "{n}");
        }
    }
    op.run_until(tokyo("2026-11-21T05:00")).await;
    drop(op);
    for n in ["cs-131016", "pref-13", "national"] {
        assert_eq!(
            phase(n).await,
            Some(NodePhase::Offline),
            "{n} stopped after the extension: {:#?}",
            recording.events()
        );
    }
    // The chain stopped bottom-up after 23:30.
    let events = recording.events();
    let stop = |n: &str| {
        events
            .iter()
            .find(|(name, p, _)| name == n && *p == NodePhase::Stopping)
            .map(|e| e.2)
            .unwrap()
    };
    assert!(stop("cs-131016") >= tokyo("2026-11-20T23:30"));
    assert!(stop("cs-131016") <= stop("pref-13") && stop("pref-13") <= stop("national"));
    let topo = topology(&cluster, &ns).await;
    assert_eq!(
        order_violations(&setup.calendar, &topo, &recording.changes(&topo), &[]),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_say_why_and_touch_nothing_else() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let setup = setup(&cluster, None).await;
    let ns = setup.ns.name.clone();
    let cal = &setup.calendar_name;
    // A CS in a prefecture without a prefectural node (02), a prefecture closing after national,
    // and a CS following a calendar that does not exist.
    let extra = format!(
        "apiVersion: jukinet.io/v1alpha1\nkind: JukiNode\nmetadata: {{name: cs-022012}}\nspec: {{tier: CS, municipality: \"022012\", calendar: {cal}}}\n---\napiVersion: jukinet.io/v1alpha1\nkind: JukiNode\nmetadata: {{name: pref-01}}\nspec: {{tier: Prefecture, prefecture: \"01\", onlineEnd: \"23:00\", calendar: {cal}}}\n---\napiVersion: jukinet.io/v1alpha1\nkind: JukiNode\nmetadata: {{name: cs-on-missing-calendar}}\nspec: {{tier: CS, municipality: \"131024\", calendar: no-such-calendar}}\n---\napiVersion: jukinet.io/v1alpha1\nkind: JukiNode\nmetadata: {{name: cs-131059}}\nspec: {{tier: CS, municipality: \"131059\", calendar: {cal}, upstream: {{name: national}}}}\n"
    );
    cluster.apply_yaml(&extra, Some(&ns)).await.unwrap();
    // The API server refuses a National node with an upstream and an extension naming a node
    // of another namespace.
    let refused = [
        ("a National node has no spec.upstream", "apiVersion: jukinet.io/v1alpha1\nkind: JukiNode\nmetadata: {name: national-2}\nspec: {tier: National, upstream: {name: pref-13}}\n".to_string()),
        ("an extension names only nodes of its own namespace", "apiVersion: jukinet.io/v1alpha1\nkind: ServiceExtension\nmetadata: {name: cross}\nspec: {kind: LocalProcessing, nodes: [{name: national, namespace: other}], date: \"2026-11-20\", endTime: \"23:30\"}\n".to_string()),
    ];
    for (message, yaml) in refused {
        let err = cluster.apply_yaml(&yaml, Some(&ns)).await.unwrap_err();
        assert!(format!("{err:#}").contains(message), "{err:#}");
    }
    let op = OperatorProcess::start(&cluster, &ns, tokyo("2026-11-20T09:00"), 60);
    let nodes = Api::<JukiNode>::namespaced(cluster.client.clone(), &ns);
    let status_of = |n: &'static str| {
        let nodes = nodes.clone();
        async move { nodes.get(n).await.unwrap().status.unwrap_or_default() }
    };
    poll_until(
        "the invalid nodes report why",
        Duration::from_secs(60),
        || async {
            status_of("pref-01").await.reason.as_deref() == Some("InvalidSpec")
                && status_of("cs-on-missing-calendar").await.reason.as_deref()
                    == Some("CalendarUnavailable")
                && status_of("cs-131059").await.reason.as_deref() == Some("InvalidSpec")
                && status_of("cs-131016").await.phase == Some(NodePhase::Online)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let pref = status_of("pref-01").await;
    assert_eq!(pref.phase, Some(NodePhase::Failed));
    assert!(
        pref.message
            .unwrap()
            .contains("closes after the national window ends")
    );
    let missing = status_of("cs-on-missing-calendar").await;
    assert!(
        missing
            .message
            .unwrap()
            .contains("\"no-such-calendar\" does not exist")
    );
    // A CS naming the national server as its upstream.
    let skipping = status_of("cs-131059").await;
    assert_eq!(skipping.phase, Some(NodePhase::Failed));
    assert!(
        skipping.message.as_deref().unwrap_or_default().ends_with(
            "/national is a National node; the upstream of a CS node must be a Prefecture node"
        ),
        "{skipping:?}"
    );
    let orphan = status_of("cs-022012").await;
    assert_eq!(
        (orphan.phase, orphan.reason.as_deref()),
        (Some(NodePhase::Offline), Some("UpstreamMissing")),
        "{orphan:?}"
    );
    // Nothing was created for the invalid nodes; the valid ones run.
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), &ns);
    assert!(deployments.get_opt("pref-01").await.unwrap().is_none());
    assert!(
        deployments
            .get_opt("cs-on-missing-calendar")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(status_of("national").await.phase, Some(NodePhase::Online));
    // kubectl juki tree shows the tree and what hangs nowhere.
    let tree = std::process::Command::new(juki_tests::operator::binary("kubectl-juki"))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .args(["tree", "-n", &ns])
        .output()
        .unwrap();
    let tree = String::from_utf8(tree.stdout).unwrap();
    assert!(
        tree.starts_with(&format!("{ns}/national  Online")),
        "{tree}"
    );
    assert!(
        tree.contains(&format!("└─ {ns}/pref-27 27  Online")),
        "{tree}"
    );
    assert!(
        tree.contains(&format!(
            "not in the tree:\n  {ns}/cs-022012 022012  Offline UpstreamMissing"
        )),
        "{tree}"
    );
    // Warning Events name the reason.
    let events = cluster
        .kubectl(&[
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "type=Warning",
            "-o",
            "jsonpath={.items[*].reason}",
        ])
        .await;
    for reason in ["InvalidSpec", "CalendarUnavailable", "UpstreamMissing"] {
        assert!(events.contains(reason), "no {reason} Event in {events:?}");
    }
    drop(op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_calendar_reports_every_error_in_its_status() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let bad = "apiVersion: jukinet.io/v1alpha1\nkind: OperatingCalendar\nmetadata: {name: NAME}\nspec:\n  timeZone: Asia/Tokio\n  onlineWindows:\n    prefecture: {start: \"08:30\", end: \"21:30\"}\n";
    let setup = setup(&cluster, Some(bad)).await;
    let op = OperatorProcess::start(&cluster, &setup.ns.name, tokyo("2026-11-20T09:00"), 60);
    let api = Api::<OperatingCalendar>::all(cluster.client.clone());
    poll_until("the calendar status", Duration::from_secs(60), || async {
        api.get(&setup.calendar_name)
            .await
            .unwrap()
            .status
            .is_some_and(|s| !s.conditions.is_empty())
    })
    .await
    .unwrap();
    let status = api.get(&setup.calendar_name).await.unwrap().status.unwrap();
    let valid = &status.conditions[0];
    assert_eq!(
        (
            valid.type_.as_str(),
            valid.status.as_str(),
            valid.reason.as_str()
        ),
        ("Valid", "False", "Invalid")
    );
    assert!(
        valid
            .message
            .contains("timeZone: \"Asia/Tokio\" is not a known IANA time zone"),
        "{}",
        valid.message
    );
    assert!(
        valid
            .message
            .contains("onlineWindows.prefecture.start: 08:30 opens after onlineWindows.cs"),
        "{}",
        valid.message
    );
    // Its nodes wait, saying why, and nothing is scaled.
    poll_until(
        "nodes report the calendar",
        Duration::from_secs(30),
        || async {
            let n = Api::<JukiNode>::namespaced(cluster.client.clone(), &setup.ns.name)
                .get("national")
                .await
                .unwrap();
            n.status.and_then(|s| s.reason).as_deref() == Some("CalendarUnavailable")
        },
    )
    .await
    .unwrap();
    drop(op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_batch_runs_once_on_catch_up_with_an_event() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let setup = setup(&cluster, None).await;
    let ns = setup.ns.name.clone();
    // Thursday runs normally; the operator is then down all Friday and back on Saturday.
    let op = OperatorProcess::start(&cluster, &ns, tokyo("2026-11-19T06:30"), FACTOR);
    op.run_until(tokyo("2026-11-20T03:00")).await;
    drop(op);
    let op = OperatorProcess::start(&cluster, &ns, tokyo("2026-11-21T10:00"), FACTOR);
    op.run_until(tokyo("2026-11-21T16:00")).await;
    drop(op);
    let jobs = jobs(&cluster, &ns).await;
    for node in ["national", "pref-13", "cs-131016"] {
        let friday = jobs
            .get(&(node.to_string(), "20261120".to_string()))
            .cloned()
            .unwrap_or_default();
        assert!(
            friday.contains(&"statistics".to_string()) && friday.contains(&"backup".to_string()),
            "{node}: {jobs:?}"
        );
    }
    assert!(
        !jobs.keys().any(|(_, d)| d == "20261121"),
        "nothing runs for Saturday: {jobs:?}"
    );
    let events = cluster
        .kubectl(&[
            "get",
            "events",
            "-n",
            &ns,
            "-o",
            "jsonpath={.items[*].reason}",
        ])
        .await;
    assert!(events.contains("CatchUpBatch"), "{events}");
    let n = Api::<JukiNode>::namespaced(cluster.client.clone(), &ns)
        .get("national")
        .await
        .unwrap();
    assert_eq!(n.status.unwrap().last_batch.unwrap().date, "2026-11-20");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_takes_over_when_the_leader_dies() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let setup = setup(&cluster, None).await;
    let ns = setup.ns.name.clone();
    let lease = format!("{ns}/juki-operator");
    let recording = Recording::start(&cluster, &ns);
    let start = tokyo("2026-11-20T06:55");
    let a =
        OperatorProcess::start_with(&cluster, &ns, start, 60, "-a", &["--leader-lease", &lease]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b =
        OperatorProcess::start_with(&cluster, &ns, start, 60, "-b", &["--leader-lease", &lease]);
    let leases =
        Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(cluster.client.clone(), &ns);
    let holder = || async {
        leases
            .get_opt("juki-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    };
    let a_id = format!("juki-operator-{}", a.id().unwrap());
    let b_id = format!("juki-operator-{}", b.id().unwrap());
    poll_until(
        "the first replica leads and the national node is Online",
        Duration::from_secs(60),
        || async {
            holder().await.as_deref() == Some(a_id.as_str())
                && recording
                    .events()
                    .iter()
                    .any(|(n, p, _)| n == "national" && *p == NodePhase::Online)
        },
    )
    .await
    .unwrap();
    a.kill().await;
    poll_until(
        "the second replica leads",
        Duration::from_secs(40),
        || async { holder().await.as_deref() == Some(b_id.as_str()) },
    )
    .await
    .unwrap();
    poll_until(
        "the CSs come Online under the new leader",
        Duration::from_secs(120),
        || async {
            recording
                .events()
                .iter()
                .filter(|(n, p, _)| n.starts_with("cs-") && *p == NodePhase::Online)
                .count()
                == 4
        },
    )
    .await
    .unwrap();
    drop(b);
    let nodes = topology(&cluster, &ns).await;
    assert_eq!(
        order_violations(&setup.calendar, &nodes, &recording.changes(&nodes), &[]),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_edit_of_a_live_node_or_its_calendar_freezes_nothing() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let setup = setup(&cluster, None).await;
    let ns = setup.ns.name.clone();
    let op = OperatorProcess::start(&cluster, &ns, tokyo("2026-11-20T09:00"), 60);
    let nodes = Api::<JukiNode>::namespaced(cluster.client.clone(), &ns);
    let status_of = |n: &'static str| {
        let nodes = nodes.clone();
        async move { nodes.get(n).await.unwrap().status.unwrap_or_default() }
    };
    let spec_valid = |s: &juki_operator::api::JukiNodeStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "SpecValid")
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let online = ["national", "pref-13", "cs-131016"];
    poll_until("the chain is Online", Duration::from_secs(90), || async {
        for n in online {
            if status_of(n).await.phase != Some(NodePhase::Online) {
                return false;
            }
        }
        true
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));

    // helm upgrade --set onlineEnd=22:30 on the live prefecture (national ends 22:00).
    nodes
        .patch(
            "pref-13",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"onlineEnd": "22:30"}})),
        )
        .await
        .unwrap();
    poll_until(
        "pref-13 reports its invalid end",
        Duration::from_secs(60),
        || async { spec_valid(&status_of("pref-13").await).is_some_and(|(s, _, _)| s == "False") },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (_, reason, message) = spec_valid(&status_of("pref-13").await).unwrap();
    assert_eq!(reason, "InvalidSpec");
    assert!(
        message.contains("closes after the national window ends")
            && message.ends_with("planning with the last valid end 21:45"),
        "{message}"
    );
    // An upstream edit to a node of the wrong tier (a CS): planned with the upstream it had.
    nodes
        .patch(
            "pref-13",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"upstream": {"name": "cs-131016"}}})),
        )
        .await
        .unwrap();
    let upstream_kept = |m: &str| {
        m.contains("spec.upstream")
            && m.contains(&format!(
                "planning with the last valid upstream {ns}/national"
            ))
    };
    poll_until(
        "pref-13 reports its invalid upstream",
        Duration::from_secs(60),
        || async {
            spec_valid(&status_of("pref-13").await).is_some_and(|(_, _, m)| upstream_kept(&m))
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // An edit of the shared calendar that breaks the nesting (national ends before the
    // prefectures): accepted by the API server, planned around by the operator.
    let calendars = Api::<OperatingCalendar>::all(cluster.client.clone());
    calendars
        .patch(
            &setup.calendar_name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"onlineWindows": {"national": {"start": "07:00", "end": "21:00"}}}})),
        )
        .await
        .unwrap();
    poll_until(
        "national reports the invalid calendar",
        Duration::from_secs(60),
        || async {
            spec_valid(&status_of("national").await)
                .is_some_and(|(s, r, _)| s == "False" && r == "InvalidCalendar")
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // Nothing froze or drained: every node is still Online, its pods up.
    for n in online {
        let s = status_of(n).await;
        assert_eq!(s.phase, Some(NodePhase::Online), "{n}: {s:?}");
    }
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), &ns);
    let replicas = deployments
        .get("pref-13")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.replicas);
    assert!(replicas.is_some_and(|r| r > 0), "{replicas:?}");
    // The calendar's status kept its last valid spec, and an operator restarted during the
    // invalid edit plans with it: nothing fails, nothing drains.
    let kept = calendars
        .get_status(&setup.calendar_name)
        .await
        .unwrap()
        .status
        .and_then(|s| s.last_valid_spec)
        .expect("the calendar's last valid spec in its status");
    assert_eq!(kept.online_windows.national.end, "22:00");
    let at = op.kill().await;
    let op = OperatorProcess::start_with(&cluster, &ns, at, 60, "-restarted", &[]);
    tokio::time::sleep(Duration::from_secs(10)).await;
    for n in online {
        let s = status_of(n).await;
        assert_eq!(
            s.phase,
            Some(NodePhase::Online),
            "{n} after the restart: {s:?}"
        );
    }
    let (status, reason, message) = spec_valid(&status_of("national").await).unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "InvalidCalendar")
    );
    assert!(
        message.ends_with("planning with its last valid spec"),
        "{message}"
    );
    let (_, _, message) = spec_valid(&status_of("pref-13").await).unwrap();
    assert!(upstream_kept(&message), "{message}");
    drop(op);
}

/// Issue 18, case 13: the operator chart grants exactly what the code uses. The operator runs a
/// whole weekday (starts, stops, batch Jobs, status, Events, its Lease) impersonating the chart's
/// ServiceAccount, so a missing verb fails the day; the final request's `services/proxy` is
/// granted in the node namespace only, by the node charts' RoleBinding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_runs_a_whole_day_with_only_the_rbac_of_its_chart() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let setup = setup(&cluster, None).await;
    let op_ns = cluster.namespace().await;
    let release = unique_name("e2e-op");
    let account = format!("{release}-juki-operator");
    let _roles = [
        cluster.guard("clusterrole", &account, None),
        cluster.guard("clusterrole", &format!("{account}-final-request"), None),
        cluster.guard("clusterrolebinding", &account, None),
    ];
    let repo = juki_tests::cluster::repo_root();
    let chart = |name: &str| repo.join("charts").join(name).display().to_string();
    let (ok, _, err) = cluster
        .run(
            "helm",
            &[
                "install",
                &release,
                &chart("juki-operator"),
                "-n",
                &op_ns,
                "--set",
                "replicaCount=0",
            ],
            None,
        )
        .await;
    assert!(ok, "helm install of the operator's RBAC: {err}");
    // The node chart's RoleBinding, rendered for this namespace and this operator release.
    let (ok, binding, err) = cluster
        .run(
            "helm",
            &[
                "template",
                "nodes",
                &chart("juki-national"),
                "-n",
                &setup.ns.name,
                "--show-only",
                "templates/operator-access.yaml",
                "--set",
                &format!("operator.namespace={}", &*op_ns),
                "--set",
                &format!("operator.serviceAccount={account}"),
                "--set",
                &format!("operator.clusterRole={account}-final-request"),
            ],
            None,
        )
        .await;
    assert!(ok, "helm template: {err}");
    cluster
        .apply_yaml(&binding, Some(&setup.ns.name))
        .await
        .expect("the final-request RoleBinding");

    // What the API server's authorizer says of the account.
    let who = format!("system:serviceaccount:{}:{account}", &*op_ns);
    // (`kubectl auth can-i` reads "services/proxy" as a Service named proxy: subresources go in
    // --subresource.)
    let nodes_ns = setup.ns.name.as_str();
    for (verb, resource, subresource, ns, expected) in [
        ("create", "services", "proxy", nodes_ns, "yes"),
        ("create", "services", "proxy", "kube-system", "no"),
        ("create", "services", "proxy", &*op_ns, "no"),
        ("update", "services", "proxy", nodes_ns, "yes"),
        ("get", "configmaps", "", nodes_ns, "yes"),
        ("get", "configmaps", "", "kube-system", "no"),
        (
            "patch",
            "filedeliveries.jukinet.io",
            "status",
            nodes_ns,
            "yes",
        ),
        ("patch", "jukinodes.jukinet.io", "status", nodes_ns, "yes"),
        // A program delivery stages its image on the JukiNode (an annotation).
        ("patch", "jukinodes.jukinet.io", "", nodes_ns, "yes"),
        // A node held for a required delivery is restarted (its pods deleted) to apply it.
        ("delete", "pods", "", nodes_ns, "yes"),
        ("delete", "pods", "", "kube-system", "no"),
        ("update", "jukinodes.jukinet.io", "status", nodes_ns, "no"),
        ("update", "jukinodes.jukinet.io", "", nodes_ns, "no"),
        ("delete", "deployments.apps", "", nodes_ns, "no"),
        ("get", "secrets", "", nodes_ns, "no"),
    ] {
        let sub = format!("--subresource={subresource}");
        let mut args = vec!["auth", "can-i", verb, resource, "-n", ns, "--as", &who];
        if !subresource.is_empty() {
            args.push(&sub);
        }
        let (_, out, _) = cluster.run("kubectl", &args, None).await;
        assert_eq!(
            out.trim(),
            expected,
            "can {who} {verb} {resource} {subresource} in {ns}?"
        );
    }

    let kubeconfig = juki_tests::operator::impersonating_kubeconfig(&cluster, &op_ns, &account);
    let recording = Recording::start(&cluster, &setup.ns.name);
    let lease = format!("{}/juki-operator", &*op_ns);
    let op = OperatorProcess::start_as(
        &kubeconfig,
        &setup.ns.name,
        tokyo("2026-11-20T06:30"),
        FACTOR,
        "-sa",
        &["--leader-lease", &lease],
    );
    op.run_until(tokyo("2026-11-21T06:00")).await;
    drop(op);
    assert_day_rules(&cluster, &setup, &recording, &["2026-11-20"]).await;
    let log = std::fs::read_to_string(
        std::env::temp_dir().join(format!("juki-operator-{}-sa.log", setup.ns.name)),
    )
    .unwrap();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator was refused something: {log}"
    );
}

/// Issue 18, case 3: an OperatingCalendar edit at noon (next year's closed date) reaches every
/// node's ConfigMap, and no Deployment's pod template changes: no pod restarts mid-day. (The node
/// service reads calendar.json again when the kubelet updates the mounted file.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calendar_edit_mid_day_reaches_the_nodes_without_restarting_their_pods() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let setup = setup(&cluster, None).await;
    let op = OperatorProcess::start(&cluster, &setup.ns.name, tokyo("2026-11-20T06:30"), FACTOR);
    op.run_until(tokyo("2026-11-20T12:00")).await;
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), &setup.ns.name);
    let templates = || async {
        let mut by_name = BTreeMap::new();
        for d in deployments.list(&ListParams::default()).await.unwrap() {
            let spec = d.spec.clone().unwrap();
            by_name.insert(d.name_any(), (spec.replicas, spec.template));
        }
        by_name
    };
    let before = templates().await;
    assert_eq!(before.len(), 7, "every node has its Deployment");
    assert!(
        before
            .values()
            .all(|(replicas, _)| replicas.unwrap_or(0) >= 1),
        "every node is up at noon: {before:#?}"
    );

    let calendars: Api<OperatingCalendar> = Api::all(cluster.client.clone());
    calendars
        .patch(
            &setup.calendar_name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"extraClosedDates": [
                {"date": "2027-05-06", "reason": "calendar edit at noon"}
            ]}})),
        )
        .await
        .unwrap();
    let config_maps = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(
        cluster.client.clone(),
        &setup.ns.name,
    );
    poll_until(
        "every node's calendar.json carries the new closed date",
        Duration::from_secs(60),
        || async {
            let listed = config_maps.list(&ListParams::default()).await.unwrap();
            let with_date = listed
                .items
                .iter()
                .filter(|c| {
                    c.data
                        .as_ref()
                        .and_then(|d| d.get("calendar.json"))
                        .is_some_and(|j| j.contains("2027-05-06"))
                })
                .count();
            with_date == 7
        },
    )
    .await
    .unwrap();
    let after = templates().await;
    drop(op);
    let restarted: Vec<&String> = before
        .iter()
        .filter(|(name, template)| after.get(*name) != Some(*template))
        .map(|(name, _)| name)
        .collect();
    assert!(
        restarted.is_empty(),
        "a calendar edit changed the pod template (a restart) of {restarted:?}"
    );
}

/// A JobSchedule's Jobs as the API server showed them, in order: (Job, "created" |
/// "succeeded" | "failed"), each once.
fn watch_schedule_jobs(
    cluster: &TestCluster,
    ns: &str,
    schedule: &str,
) -> std::sync::Arc<std::sync::Mutex<Vec<(String, &'static str)>>> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let out = seen.clone();
    let api: Api<Job> = Api::namespaced(cluster.client.clone(), ns);
    let config = watcher::Config::default().labels(&format!("jukinet.io/schedule={schedule}"));
    tokio::spawn(async move {
        let mut stream = watcher(api, config)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(job)) = stream.next().await {
            let status = job.status.clone().unwrap_or_default();
            let mut seen = out.lock().unwrap();
            let mut note = |what: &'static str| {
                let item = (job.name_any(), what);
                if !seen.contains(&item) {
                    seen.push(item);
                }
            };
            note("created");
            if status.succeeded.unwrap_or(0) > 0 {
                note("succeeded");
            }
            if status.failed.unwrap_or(0) > 0
                || status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Failed" && c.status == "True")
            {
                note("failed");
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_schedule_runs_in_tree_order_once_per_node_across_a_kill_and_holds_a_late_start() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let setup = setup(&cluster, None).await;
    let ns = setup.ns.name.clone();
    // The CSs' backups, then each prefecture's once its CSs' are done, then the national
    // statistics once both prefectures' are; and on Osaka's server a report whose pod never
    // gets a node: each attempt runs out of time (5 h 10 min), is retried once, and holds Osaka's
    // Friday start until it is given up: it starts once Osaka's batch is done (22:00 to 23:30
    // at this speed), so it is given up between 08:10 and 09:50, after Osaka's window opens.
    let schedule = format!(
        r#"
apiVersion: jukinet.io/v1alpha1
kind: JobSchedule
metadata:
  name: nightly
spec:
  calendar: {calendar}
  entries:
    - name: cs-backup
      batch: backup
      nodes: {{tiers: [CS]}}
    - name: pref-backup
      batch: backup
      nodes: {{tiers: [Prefecture]}}
      after: [{{entry: cs-backup, scope: NodesBelow}}]
    - name: national-stats
      batch: statistics
      nodes: {{tiers: [National]}}
      after: [{{entry: pref-backup, scope: NodesBelow}}]
    - name: stuck-report
      nodes: {{tiers: [Prefecture], prefectures: ["27"]}}
      template:
        spec:
          nodeSelector: {{jukinet.io/nowhere: "true"}}
          containers: [{{name: report, image: registry.invalid/report:1}}]
      timeoutMinutes: 310
      retries: {{limit: 1, backoffSeconds: 60}}
      deadline: HoldStart
---
apiVersion: jukinet.io/v1alpha1
kind: JobSchedule
metadata:
  name: clash
spec:
  calendar: {calendar}
  entries:
    - name: backup
      batch: backup
"#,
        calendar = setup.calendar_name
    );
    cluster
        .apply_yaml(&schedule, Some(&ns))
        .await
        .expect("JobSchedule accepted");
    let seen = watch_schedule_jobs(&cluster, &ns, "nightly");
    let recording = Recording::start(&cluster, &ns);
    let op = OperatorProcess::start(&cluster, &ns, tokyo("2026-11-19T20:30"), FACTOR);
    // Killed as soon as the first run's Job exists, restarted where the clock was.
    poll_until(
        "the first scheduled Job",
        Duration::from_secs(90),
        || async { !seen.lock().unwrap().is_empty() },
    )
    .await
    .unwrap();
    let at = op.kill().await;
    let op = OperatorProcess::start(&cluster, &ns, at, FACTOR);
    op.run_until(tokyo("2026-11-20T10:15")).await;
    drop(op);

    // Exactly once per node, entry and day: one attempt each, two for the report.
    let jobs = Api::<Job>::namespaced(cluster.client.clone(), &ns)
        .list(&ListParams::default().labels("jukinet.io/schedule=nightly"))
        .await
        .unwrap();
    let mut attempts: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
    for j in &jobs.items {
        let l = j.labels();
        attempts
            .entry((
                l["jukinet.io/node"].clone(),
                l["jukinet.io/batch"].clone(),
                l["jukinet.io/operating-date"].clone(),
            ))
            .or_default()
            .push(l["jukinet.io/attempt"].clone());
    }
    let key =
        |node: &str, entry: &str| (node.to_string(), entry.to_string(), "20261119".to_string());
    let mut expected = BTreeMap::new();
    for cs in ["cs-131016", "cs-131041", "cs-271004", "cs-272051"] {
        expected.insert(key(cs, "cs-backup"), vec!["1".to_string()]);
    }
    for pref in ["pref-13", "pref-27"] {
        expected.insert(key(pref, "pref-backup"), vec!["1".to_string()]);
    }
    expected.insert(key("national", "national-stats"), vec!["1".to_string()]);
    expected.insert(key("pref-27", "stuck-report"), vec!["1".into(), "2".into()]);
    attempts.values_mut().for_each(|v| v.sort());
    assert_eq!(
        attempts, expected,
        "one Job per node, entry, day and attempt"
    );

    // Tree order: a prefecture's backup starts after its CSs' succeeded, the national
    // statistics after both prefectures'.
    let seen = seen.lock().unwrap().clone();
    let at = |job: &str, what: &str| {
        seen.iter()
            .position(|(j, w)| j.starts_with(job) && *w == what)
            .unwrap_or_else(|| panic!("{job} never {what}: {seen:#?}"))
    };
    for (pref, code) in [("pref-13", "cs-13"), ("pref-27", "cs-27")] {
        let started = at(&format!("{pref}-pref-backup-"), "created");
        for (job, what) in &seen {
            if job.starts_with(code) && *what == "succeeded" {
                assert!(
                    at(job, "succeeded") < started,
                    "{pref} began before {job} succeeded: {seen:#?}"
                );
            }
        }
        assert!(
            at("national-national-stats-", "created")
                > at(&format!("{pref}-pref-backup-"), "succeeded"),
            "the national statistics began before {pref}'s backup succeeded: {seen:#?}"
        );
    }

    // The late report held Osaka's Friday start; Tokyo started in its window.
    let friday_start = |node: &str| {
        recording
            .events()
            .iter()
            .find(|(n, p, t)| {
                n == node && *p == NodePhase::Starting && *t > tokyo("2026-11-20T06:00")
            })
            .map(|(_, _, t)| *t)
            .unwrap_or_else(|| panic!("{node} did not start on Friday: {:#?}", recording.events()))
    };
    assert!(friday_start("pref-13") < tokyo("2026-11-20T07:45"));
    let osaka = friday_start("pref-27");
    assert!(
        osaka > tokyo("2026-11-20T08:00"),
        "Osaka started at {osaka} while its report ran"
    );
    let nodes = topology(&cluster, &ns).await;
    let violations = order_violations(&setup.calendar, &nodes, &recording.changes(&nodes), &[]);
    assert!(violations.is_empty(), "order violations: {violations:#?}");

    // What people see: the status and the Events.
    let status = Api::<juki_operator::api::JobSchedule>::namespaced(cluster.client.clone(), &ns)
        .get_status("nightly")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        (status.entries, status.running, status.failed),
        (4, 0, 1),
        "{status:#?}"
    );
    let valid = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Valid")
        .unwrap();
    assert_eq!(valid.status, "True", "{valid:?}");
    let failure = &status.runs[0];
    assert_eq!(
        (
            failure.node.as_str(),
            failure.entry.as_str(),
            failure.state.as_str(),
            failure.attempt
        ),
        (
            format!("{ns}/pref-27").as_str(),
            "stuck-report",
            "Failed",
            2
        ),
        "{status:#?}"
    );
    let events = cluster
        .kubectl(&[
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "involvedObject.kind=JobSchedule",
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ])
        .await;
    for reason in ["RunTimedOut", "RunFailed", "RunLate"] {
        assert!(events.contains(reason), "no {reason} Event: {events}");
    }
    assert!(
        events.contains("attempt 2 failed; no retry left"),
        "the given-up run is reported: {events}"
    );
    // An entry named as a calendar batch would make Jobs of the same names: refused.
    let clash = Api::<juki_operator::api::JobSchedule>::namespaced(cluster.client.clone(), &ns)
        .get_status("clash")
        .await
        .unwrap()
        .status
        .unwrap();
    let valid = &clash.conditions[0];
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("False", "Invalid")
    );
    assert!(
        valid.message.contains("spec.entries[0].name")
            && valid.message.contains("the calendar's batches"),
        "{valid:?}"
    );
    let clash_jobs = Api::<Job>::namespaced(cluster.client.clone(), &ns)
        .list(&ListParams::default().labels("jukinet.io/schedule=clash"))
        .await
        .unwrap();
    assert!(clash_jobs.items.is_empty());
    // kubectl juki jobs: the failure first.
    let jobs = std::process::Command::new(juki_tests::operator::binary("kubectl-juki"))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .args(["jobs", "-n", &ns])
        .output()
        .unwrap();
    let jobs = String::from_utf8(jobs.stdout).unwrap();
    assert!(
        jobs.starts_with(&format!(
            "JobSchedule {ns}/clash: 1 entries, 0 running, 0 late, 0 failed; Invalid: "
        )),
        "{jobs}"
    );
    let nightly = jobs
        .split("\n\n")
        .find(|block| block.starts_with(&format!("JobSchedule {ns}/nightly: ")))
        .unwrap_or_else(|| panic!("no nightly block: {jobs}"));
    assert!(
        nightly.starts_with(&format!(
            "JobSchedule {ns}/nightly: 4 entries, 0 running, 0 late, 1 failed; valid\n"
        )),
        "{jobs}"
    );
    let first_run: Vec<&str> = nightly.lines().nth(2).unwrap().split_whitespace().collect();
    assert_eq!(
        first_run[..5],
        [
            format!("{ns}/pref-27").as_str(),
            "stuck-report",
            "2026-11-19",
            "Failed",
            "2"
        ],
        "{jobs}"
    );
    // kubectl juki rerun: a third attempt of the given-up run; a second while it runs is refused.
    let rerun = || {
        std::process::Command::new(juki_tests::operator::binary("kubectl-juki"))
            .env("KUBECONFIG", &cluster.kubeconfig)
            .args(["rerun", "nightly", "-n", &ns, "--node", "pref-27"])
            .args(["--entry", "stuck-report", "--date", "2026-11-19"])
            .output()
            .unwrap()
    };
    let first = rerun();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&first.stdout),
        format!(
            "job.batch/pref-27-stuck-report-20261119-3 created: attempt 3 of stuck-report on {ns}/pref-27 for 2026-11-19\n"
        )
    );
    let third = Api::<Job>::namespaced(cluster.client.clone(), &ns)
        .get("pref-27-stuck-report-20261119-3")
        .await
        .unwrap();
    assert_eq!(third.labels()["jukinet.io/attempt"], "3");
    // kubectl juki hold|release: the entry's hold in the spec, nothing else changed.
    let juki = |args: &[&str]| juki_tests::operator::kubectl_juki(&cluster, args);
    let schedules = Api::<juki_operator::api::JobSchedule>::namespaced(cluster.client.clone(), &ns);
    let holds = || async {
        let s = schedules.get("nightly").await.unwrap();
        s.spec.entries.iter().map(|e| e.hold).collect::<Vec<_>>()
    };
    let (ok, out, _) = juki(&["hold", "nightly", "-n", &ns, "--entry", "national-stats"]);
    assert!(ok);
    assert_eq!(
        out,
        "jobschedule.jukinet.io/nightly entry national-stats held\n"
    );
    assert_eq!(holds().await, [false, false, true, false]);
    let (ok, out, _) = juki(&["release", "nightly", "-n", &ns, "--entry", "national-stats"]);
    assert!(ok);
    assert_eq!(
        out,
        "jobschedule.jukinet.io/nightly entry national-stats released\n"
    );
    assert_eq!(holds().await, [false; 4]);
    let (ok, _, err) = juki(&["hold", "nightly", "-n", &ns, "--entry", "nope"]);
    assert!(!ok);
    assert!(
        err.contains(
            "has no entry \"nope\" (entries: cs-backup, pref-backup, national-stats, stuck-report)"
        ),
        "{err}"
    );
    let second = rerun();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("attempt 3 of stuck-report"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_schedule_week_catches_up_an_outage_by_each_entrys_rule_exactly_once_across_kills() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    // With the calendar's batches: the nodes catch up their own missed nights too, and the order
    // check below holds across it (a CS stays in DailyBatch from one missed date to the next).
    let setup = setup(&cluster, None).await;
    let ns = setup.ns.name.clone();
    // Monday night runs; the operator is away from Tuesday 09:00 to Thursday 09:00 (Tuesday's and
    // Wednesday's runs are missed), is killed again in Thursday's catch-up night, and runs on to
    // Saturday morning. Each entry catches up by its own rule: the CSs' backups every missed day
    // (oldest first, once the node has stopped), the national statistics only Wednesday, the
    // prefectures' reports and the national housekeeping none. Friday also closes the week (a
    // Sunday entry moved to the previous open day); the housekeeping runs on Saturday too.
    let schedule = format!(
        r#"
apiVersion: jukinet.io/v1alpha1
kind: JobSchedule
metadata:
  name: week
spec:
  calendar: {calendar}
  entries:
    - name: cs-backup
      batch: backup
      nodes: {{tiers: [CS]}}
      catchUp: All
    - name: national-stats
      batch: statistics
      nodes: {{tiers: [National]}}
      after: [{{entry: cs-backup, scope: NodesBelow}}]
      catchUp: Once
    - name: pref-report
      nodes: {{tiers: [Prefecture]}}
      trigger: At
      at: "23:00"
      catchUp: Skip
      template:
        spec:
          containers: [{{name: report, image: registry.invalid/report:1}}]
    - name: week-close
      batch: statistics
      nodes: {{tiers: [National]}}
      schedule: Weekly
      weekday: Sunday
      closedDayPolicy: PreviousOpenDay
    - name: housekeeping
      nodes: {{tiers: [National]}}
      trigger: At
      at: "10:30"
      runOnClosedDays: true
      catchUp: Skip
      template:
        spec:
          containers: [{{name: housekeeping, image: registry.invalid/housekeeping:1}}]
"#,
        calendar = setup.calendar_name
    );
    cluster
        .apply_yaml(&schedule, Some(&ns))
        .await
        .expect("JobSchedule accepted");
    let seen = watch_schedule_jobs(&cluster, &ns, "week");
    let recording = Recording::start(&cluster, &ns);
    let op = OperatorProcess::start(&cluster, &ns, tokyo("2026-11-16T20:30"), FACTOR);
    op.run_until(tokyo("2026-11-17T09:00")).await;
    op.kill().await;
    let op = OperatorProcess::start_with(
        &cluster,
        &ns,
        tokyo("2026-11-19T09:00"),
        FACTOR,
        "-thursday",
        &[],
    );
    // Killed once Wednesday's statistics (a catch-up run) exist: the restart must not take
    // Tuesday's, skipped, for a day still to catch up.
    poll_until(
        "Wednesday's national statistics",
        Duration::from_secs(240),
        || async {
            seen.lock()
                .unwrap()
                .iter()
                .any(|(j, _)| j == "national-national-stats-20261118")
        },
    )
    .await
    .unwrap();
    let at = op.kill().await;
    let op = OperatorProcess::start_with(&cluster, &ns, at, FACTOR, "-friday", &[]);
    op.run_until(tokyo("2026-11-21T10:45")).await;
    // Saturday's housekeeping began at 10:30: its end reaches the status a moment later.
    let schedules = Api::<juki_operator::api::JobSchedule>::namespaced(cluster.client.clone(), &ns);
    poll_until("no run running", Duration::from_secs(30), || async {
        let status = schedules.get_status("week").await.unwrap().status;
        status.is_some_and(|s| s.running == 0)
    })
    .await
    .unwrap();
    drop(op);

    let jobs = Api::<Job>::namespaced(cluster.client.clone(), &ns)
        .list(&ListParams::default().labels("jukinet.io/schedule=week"))
        .await
        .unwrap();
    let mut got: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for j in &jobs.items {
        let l = j.labels();
        got.entry((l["jukinet.io/node"].clone(), l["jukinet.io/batch"].clone()))
            .or_default()
            .push(format!(
                "{}-{}",
                l["jukinet.io/operating-date"], l["jukinet.io/attempt"]
            ));
    }
    got.values_mut().for_each(|v| v.sort());
    let days =
        |days: &[&str]| -> Vec<String> { days.iter().map(|d| format!("202611{d}-1")).collect() };
    let mut expected = BTreeMap::new();
    for cs in ["cs-131016", "cs-131041", "cs-271004", "cs-272051"] {
        expected.insert(
            (cs.to_string(), "cs-backup".to_string()),
            days(&["16", "17", "18", "19", "20"]),
        );
    }
    for pref in ["pref-13", "pref-27"] {
        expected.insert(
            (pref.to_string(), "pref-report".to_string()),
            days(&["16", "19", "20"]),
        );
    }
    let national = |entry: &str| ("national".to_string(), entry.to_string());
    expected.insert(national("national-stats"), days(&["16", "18", "19", "20"]));
    expected.insert(national("week-close"), days(&["20"]));
    expected.insert(national("housekeeping"), days(&["19", "20", "21"]));
    assert_eq!(
        got, expected,
        "one Job per node, entry and day: every day of the week but the outage's, which each entry catches up by its rule"
    );

    // Order: each day's national statistics after every CS's backup of that day succeeded; a
    // CS's missed days caught up oldest first, all after Thursday's stop.
    let seen = seen.lock().unwrap().clone();
    let at = |job: &str, what: &str| {
        seen.iter()
            .position(|(j, w)| j == job && *w == what)
            .unwrap_or_else(|| panic!("{job} never {what}: {seen:#?}"))
    };
    for day in ["16", "18", "19", "20"] {
        let stats = at(&format!("national-national-stats-202611{day}"), "created");
        for cs in ["cs-131016", "cs-131041", "cs-271004", "cs-272051"] {
            assert!(
                at(&format!("{cs}-cs-backup-202611{day}"), "succeeded") < stats,
                "the statistics of the {day}th began before {cs}'s backup succeeded: {seen:#?}"
            );
        }
    }
    for cs in ["cs-131016", "cs-131041", "cs-271004", "cs-272051"] {
        let created: Vec<usize> = ["17", "18", "19"]
            .iter()
            .map(|d| at(&format!("{cs}-cs-backup-202611{d}"), "created"))
            .collect();
        assert!(
            created.windows(2).all(|w| w[0] < w[1]),
            "{cs} caught up out of order: {seen:#?}"
        );
    }
    let nodes = topology(&cluster, &ns).await;
    let violations = order_violations(&setup.calendar, &nodes, &recording.changes(&nodes), &[]);
    assert!(violations.is_empty(), "order violations: {violations:#?}");

    // What people see: nothing running or failed, and each skipped day as an Event.
    let status = schedules.get_status("week").await.unwrap().status.unwrap();
    assert_eq!(
        (status.entries, status.running, status.failed),
        (5, 0, 0),
        "{status:#?}"
    );
    let skipped = cluster
        .kubectl(&[
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "involvedObject.kind=JobSchedule,reason=RunSkipped",
            "-o",
            "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
        ])
        .await;
    for (node, entry, day) in [
        ("national", "national-stats", "2026-11-17"),
        ("pref-13", "pref-report", "2026-11-17"),
        ("pref-27", "pref-report", "2026-11-18"),
        ("national", "housekeeping", "2026-11-18"),
    ] {
        assert!(
            skipped.lines().any(|l| l.contains(&format!("{ns}/{node}"))
                && l.contains(entry)
                && l.contains(day)),
            "no RunSkipped Event for {entry} of {day} on {node}: {skipped}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_template_job_runs_in_a_real_container_fails_once_and_succeeds_on_its_retry() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    if !juki_tests::real_node::require_real_node(&cluster).await {
        return;
    }
    let setup = setup(&cluster, None).await;
    let ns = setup.ns.name.clone();
    // A real container on the real node: its first attempt exits 1, its second succeeds, each
    // printing the run's facts from the environment the operator sets.
    let pod_spec = juki_tests::real_node::on_real_node(serde_json::json!({
        "containers": [juki_tests::real_node::busybox(
            "report",
            "echo \"$JUKI_NODE $JUKI_OPERATING_DATE attempt $JUKI_ATTEMPT\"; [ \"$JUKI_ATTEMPT\" -ge 2 ]",
        )],
    }));
    let schedule = serde_json::json!({
        "apiVersion": "jukinet.io/v1alpha1", "kind": "JobSchedule",
        "metadata": {"name": "real"},
        "spec": {"calendar": setup.calendar_name, "entries": [{
            "name": "report", "nodes": {"tiers": ["National"]},
            "template": {"spec": pod_spec},
            "timeoutMinutes": 1440,
            // The shortest backoff: the reconcile that sees attempt 1 failed also starts
            // attempt 2, and must still report the failure.
            "retries": {"limit": 1, "backoffSeconds": 1},
        }]},
    });
    cluster.apply(&schedule, Some(&ns)).await.unwrap();
    // ×60: a real pod's seconds are a clock minute, well inside the attempt's day.
    let op = OperatorProcess::start(&cluster, &ns, tokyo("2026-11-19T21:58"), 60);
    let schedules = Api::<juki_operator::api::JobSchedule>::namespaced(cluster.client.clone(), &ns);
    poll_until(
        "the report's second attempt succeeded",
        Duration::from_secs(240),
        || async {
            let s = schedules.get("real").await.unwrap();
            s.status.is_some_and(|s| {
                s.runs
                    .iter()
                    .any(|r| r.entry == "report" && r.state == "Succeeded" && r.attempt == 2)
            })
        },
    )
    .await
    .unwrap();
    drop(op);
    let jobs = Api::<Job>::namespaced(cluster.client.clone(), &ns);
    let first = jobs.get("national-report-20261119").await.unwrap();
    let second = jobs.get("national-report-20261119-2").await.unwrap();
    assert_eq!(first.status.unwrap().failed, Some(1));
    assert_eq!(second.status.unwrap().succeeded, Some(1));
    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns);
    let pod = pods
        .list(&ListParams::default().labels("job-name=national-report-20261119-2"))
        .await
        .unwrap()
        .items
        .pop()
        .expect("the second attempt's pod");
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some(juki_tests::real_node::NODE_NAME)
    );
    let log = pods
        .logs(&pod.name_any(), &Default::default())
        .await
        .unwrap();
    assert_eq!(log, "national 2026-11-19 attempt 2\n");
    let events = cluster
        .kubectl(&[
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "involvedObject.kind=JobSchedule",
            "-o",
            "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
        ])
        .await;
    assert!(
        events.contains("attempt 1 failed; retrying after the backoff"),
        "no RunFailed Event for attempt 1; the schedule's Events: {events:?}"
    );
}

/// The residents' records outlive their node: deleting a JukiNode (what `helm uninstall` does)
/// lets the garbage collector take its Deployment, Service and ConfigMap but not its database
/// claim, and a node of the same name finds that claim again; only `whenDeleted: Delete` lets
/// the claim go with the node.
#[tokio::test]
async fn deleting_a_node_keeps_its_residents_claim_unless_deletion_is_asked_for() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let setup = setup(&cluster, None).await;
    let ns = setup.ns.name.as_str();
    let calendar = setup.calendar_name.as_str();
    // The example topology's nodes are not needed here.
    cluster
        .kubectl(&["-n", ns, "delete", "jukinodes", "--all", "--wait=true"])
        .await;
    let node = |name: &str, spec: serde_json::Value| {
        let mut spec = spec;
        spec["calendar"] = serde_json::json!(calendar);
        serde_json::json!({
            "apiVersion": "jukinet.io/v1alpha1", "kind": "JukiNode",
            "metadata": {"name": name}, "spec": spec,
        })
    };
    let kept = node("national", serde_json::json!({"tier": "National"}));
    let dropped = node(
        "pref-13",
        serde_json::json!({"tier": "Prefecture", "prefecture": "13", "upstream": {"name": "national"},
               "database": {"kind": "Sqlite", "sqlite": {"whenDeleted": "Delete"}}}),
    );
    for object in [&kept, &dropped] {
        cluster.apply(object, Some(ns)).await.unwrap();
    }
    // At night: the nodes stay Offline, their objects are made all the same.
    let op = OperatorProcess::start_with(
        &cluster,
        ns,
        tokyo("2026-11-25T02:00"),
        1,
        "-claims",
        &["--sqlite-volume", "pvc"],
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), ns);
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), ns);
    poll_until(
        "both claims and Deployments made",
        Duration::from_secs(120),
        || async {
            let mut found = 0;
            for name in ["national", "pref-13"] {
                found += usize::from(
                    claims
                        .get_opt(&format!("{name}-data"))
                        .await
                        .unwrap()
                        .is_some(),
                );
                found += usize::from(deployments.get_opt(name).await.unwrap().is_some());
            }
            found == 4
        },
    )
    .await
    .unwrap();
    let before = claims.get("national-data").await.unwrap();

    cluster
        .kubectl(&["-n", ns, "delete", "jukinodes", "--all", "--wait=true"])
        .await;
    poll_until(
        "the nodes' Deployments and pref-13's claim collected",
        Duration::from_secs(120),
        || async {
            deployments.get_opt("national").await.unwrap().is_none()
                && deployments.get_opt("pref-13").await.unwrap().is_none()
                && claims
                    .get_opt("pref-13-data")
                    .await
                    .unwrap()
                    .is_none_or(|c| c.metadata.deletion_timestamp.is_some())
        },
    )
    .await
    .unwrap();
    let after = claims
        .get("national-data")
        .await
        .expect("the claim outlived its node");
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert!(after.metadata.deletion_timestamp.is_none());
    assert_eq!(after.metadata.owner_references, None);

    // The node again: the same claim, not a new one.
    cluster.apply(&kept, Some(ns)).await.unwrap();
    poll_until(
        "the national Deployment again",
        Duration::from_secs(120),
        || async { deployments.get_opt("national").await.unwrap().is_some() },
    )
    .await
    .unwrap();
    let again = claims.get("national-data").await.unwrap();
    assert_eq!(again.metadata.uid, before.metadata.uid);
    drop(op);
}
