//! Smoke tests against the real local control plane of `tests/cluster/` (kwok fake nodes): the
//! cluster itself works, and the jukinet CRDs validate, default and print as designed.
//!
//! `bash tests/cluster/up.sh && source tests/cluster/env.sh && JUKINET_REQUIRE_CLUSTER=1 cargo test -p juki-tests`

use std::time::Duration;

use juki_operator::api::{DatabaseKind, JukiNode, OperatingCalendar};
use juki_tests::cluster::{parse_yaml, poll_until, read_repo_file, unique_name, wait_for};
use juki_tests::{TestCluster, require_cluster};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::wait::conditions;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn deployment(name: &str, replicas: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                // kwok fakes the kubelet: nothing is pulled, so the image need not exist.
                "spec": {"containers": [{"name": "main", "image": "registry.invalid/pause:1"}]}
            }
        }
    })
}

fn jukinode(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "jukinet.io/v1alpha1", "kind": "JukiNode", "metadata": {"name": name}, "spec": spec})
}

/// Applies `manifest` into `ns`, expects a rejection, and returns the API server's message.
/// Also checks that nothing was stored under that name.
async fn rejected(cluster: &TestCluster, manifest: &Value, ns: Option<&str>) -> String {
    let name = manifest["metadata"]["name"].as_str().unwrap();
    let err = match cluster.apply(manifest, ns).await {
        Ok(obj) => panic!("{name} was accepted: {obj:?}"),
        Err(kube::Error::Api(status)) => status,
        Err(e) => panic!("{name}: expected an API rejection, got {e}"),
    };
    assert_eq!(err.code, 422, "{name}: expected 422 Invalid, got {err:?}");
    let kind = manifest["kind"].as_str().unwrap().to_lowercase();
    let mut args = vec![
        "get",
        kind.as_str(),
        name,
        "--ignore-not-found",
        "-o",
        "name",
    ];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    assert_eq!(
        cluster.kubectl(&args).await,
        "",
        "{name} must not exist after the rejection"
    );
    err.message
}

#[tokio::test]
async fn deployment_becomes_available_then_scales_to_zero() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let ns = cluster.namespace().await;
    cluster
        .apply(&deployment("web", 2), Some(&ns))
        .await
        .unwrap();

    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), &ns);
    let available = |d: Option<&Deployment>| {
        let Some(status) = d.and_then(|d| d.status.as_ref()) else {
            return false;
        };
        let cond = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Available" && c.status == "True");
        cond && status.ready_replicas == Some(2)
    };
    wait_for(&deployments, "web", available, WAIT)
        .await
        .unwrap();

    let pods = Api::<Pod>::namespaced(cluster.client.clone(), &ns);
    let by_label = ListParams::default().labels("app=web");
    assert_eq!(pods.list(&by_label).await.unwrap().items.len(), 2);

    cluster
        .apply(&deployment("web", 0), Some(&ns))
        .await
        .unwrap();
    poll_until("all pods of web gone", WAIT, || async {
        pods.list(&by_label).await.unwrap().items.is_empty()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn job_completes() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let ns = cluster.namespace().await;
    let job = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "once"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "registry.invalid/pause:1"}]
        }}}
    });
    cluster.apply(&job, Some(&ns)).await.unwrap();
    let jobs = Api::<Job>::namespaced(cluster.client.clone(), &ns);
    let done = wait_for(&jobs, "once", conditions::is_job_completed(), WAIT)
        .await
        .unwrap();
    assert_eq!(done.status.unwrap().succeeded, Some(1));
}

#[tokio::test]
async fn crds_established_and_examples_accepted_with_defaults() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace().await;

    // The calendar is cluster-scoped: a unique name keeps parallel runs apart.
    let mut calendar = parse_yaml(&read_repo_file("examples/calendar.yaml"))
        .unwrap()
        .remove(0);
    let cal_name = unique_name("jt-japan");
    calendar["metadata"]["name"] = json!(cal_name);
    let _cal_guard = cluster.guard("operatingcalendar", &cal_name, None);
    cluster.apply(&calendar, None).await.unwrap();
    let cal = Api::<OperatingCalendar>::all(cluster.client.clone())
        .get(&cal_name)
        .await
        .unwrap();
    assert_eq!(cal.spec.calendar.time_zone, "Asia/Tokyo");

    // The JukiNodes go into this test's namespace, not the file's (and its Namespaces are skipped).
    let mut applied = 0;
    for mut doc in parse_yaml(&read_repo_file("examples/topology.yaml")).unwrap() {
        if doc["kind"] == "Namespace" {
            continue;
        }
        doc["metadata"].as_object_mut().unwrap().remove("namespace");
        cluster.apply(&doc, Some(&ns)).await.unwrap();
        applied += 1;
    }
    assert_eq!(applied, 7);

    let nodes = Api::<JukiNode>::namespaced(cluster.client.clone(), &ns);
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        7
    );
    // The schema defaults are filled in by the API server, and the typed client reads them back.
    let cs = nodes.get("cs-131016").await.unwrap();
    assert_eq!(cs.spec.municipality.as_deref(), Some("131016"));
    assert_eq!(cs.spec.calendar, "japan");
    assert_eq!(cs.spec.replicas, 1);
    assert_eq!(cs.spec.database.kind, DatabaseKind::Sqlite);
    assert_eq!(nodes.get("national").await.unwrap().spec.replicas, 1);
}

#[tokio::test]
async fn bad_check_digit_is_rejected() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace().await;
    let yaml = read_repo_file("examples/invalid/jukinode-bad-check-digit.yaml");
    let manifest = parse_yaml(&yaml).unwrap().remove(0);
    let msg = rejected(&cluster, &manifest, Some(&ns)).await;
    assert!(
        msg.contains("municipality code 131017: check digit is 7, expected 6"),
        "{msg}"
    );

    // What a user sees from `kubectl apply`: the same message, and a failing exit code.
    let (ok, _, stderr) = cluster
        .run(
            "kubectl",
            &["apply", "--server-side", "-n", &ns, "-f", "-"],
            Some(&yaml),
        )
        .await;
    assert!(
        !ok && stderr.contains("check digit is 7, expected 6"),
        "{stderr}"
    );
}

/// The API server's CEL rule itself, for every official code: each is accepted (server-side dry
/// run), and the same code with a wrong check digit is refused naming both digits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_accepts_every_official_code_and_refuses_each_with_a_wrong_check_digit() {
    use futures::StreamExt;
    let Some(cluster) = require_cluster!() else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace().await;
    let api: Api<JukiNode> = Api::namespaced(cluster.client.clone(), &ns.name);
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    let node = |code: &str| -> JukiNode {
        serde_json::from_value(json!({
            "apiVersion": "jukinet.io/v1alpha1",
            "kind": "JukiNode",
            "metadata": {"name": format!("cs-{code}")},
            "spec": {"tier": "CS", "municipality": code},
        }))
        .unwrap()
    };
    let csv = read_repo_file("data/municipalities.csv");
    let codes: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert!(codes.len() > 1900, "{} codes", codes.len());
    let problems: Vec<String> = futures::stream::iter(codes.iter().map(|&code| {
        let (api, dry_run) = (&api, &dry_run);
        async move {
            let mut problems = Vec::new();
            if let Err(e) = api.create(dry_run, &node(code)).await {
                problems.push(format!("{code} refused: {e}"));
            }
            let right = code.as_bytes()[5] - b'0';
            let wrong = (right + 1) % 10;
            let bad = format!("{}{wrong}", &code[..5]);
            let expected =
                format!("municipality code {bad}: check digit is {wrong}, expected {right}");
            match api.create(dry_run, &node(&bad)).await {
                Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains(&expected) => {}
                other => problems.push(format!("{bad}: expected \"{expected}\", got {other:?}")),
            }
            problems
        }
    }))
    .buffer_unordered(8)
    .concat()
    .await;
    assert!(
        problems.is_empty(),
        "{} problems: {problems:#?}",
        problems.len()
    );
}

#[tokio::test]
async fn cs_without_municipality_is_rejected() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace().await;
    let yaml = read_repo_file("examples/invalid/jukinode-cs-without-municipality.yaml");
    let msg = rejected(&cluster, &parse_yaml(&yaml).unwrap().remove(0), Some(&ns)).await;
    assert!(msg.contains("a CS node needs spec.municipality"), "{msg}");
}

#[tokio::test]
async fn more_than_one_replica_needs_postgres_not_the_one_sqlite_file() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace().await;
    // SQLite, said or by default: one file on one volume, one writer.
    for (name, database) in [
        ("sqlite-default", None),
        ("sqlite-said", Some(json!({"kind": "Sqlite"}))),
    ] {
        let mut spec = json!({"tier": "National", "replicas": 2});
        if let Some(d) = database {
            spec["database"] = d;
        }
        let msg = rejected(&cluster, &jukinode(name, spec), Some(&ns)).await;
        assert!(
            msg.contains("spec.replicas: more than 1 replica needs spec.database.kind Postgres"),
            "{name}: {msg}"
        );
    }
    let postgres =
        json!({"kind": "Postgres", "postgres": {"urlSecretRef": {"name": "pg", "key": "url"}}});
    for (name, spec) in [
        (
            "postgres-two",
            json!({"tier": "National", "replicas": 2, "database": postgres}),
        ),
        ("sqlite-one", json!({"tier": "National", "replicas": 1})),
    ] {
        cluster
            .apply(&jukinode(name, spec), Some(&ns))
            .await
            .unwrap_or_else(|e| panic!("{name} refused: {e}"));
    }
}

#[tokio::test]
async fn a_delivery_is_a_file_or_a_program_and_only_a_file_is_signed_or_required() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace().await;
    let delivery = |name: &str, spec: serde_json::Value| {
        json!({
            "apiVersion": "jukinet.io/v1alpha1", "kind": "FileDelivery",
            "metadata": {"name": name}, "spec": spec,
        })
    };
    let sha = "a".repeat(64);
    let file = json!({"file": "code-table", "source": {"inline": "13,東京都"}, "sha256": sha});
    let program = json!({"image": "juki-node:1.1"});
    for (name, spec, says) in [
        (
            "both",
            json!({"file": "code-table", "source": {"inline": "x"}, "sha256": sha, "program": program}),
            "spec: a delivery is either a program (spec.program, alone) or a file",
        ),
        (
            "neither",
            json!({"targets": {"prefectures": ["13"]}}),
            "spec: a delivery is either a program (spec.program, alone) or a file",
        ),
        (
            "file-without-sha",
            json!({"file": "code-table", "source": {"inline": "x"}}),
            "spec: a delivery is either a program (spec.program, alone) or a file",
        ),
        (
            "required-program",
            json!({"program": program, "requiredBefore": "NextOnlineStart"}),
            "spec.program: signature and requiredBefore apply to files only",
        ),
        (
            "no-image",
            json!({"program": {"image": "juki node"}}),
            "spec.program.image",
        ),
    ] {
        let msg = rejected(&cluster, &delivery(name, spec), Some(&ns)).await;
        assert!(msg.contains(says), "{name}: {msg}");
    }
    for (name, spec) in [("file", file), ("program", json!({"program": program}))] {
        cluster
            .apply(&delivery(name, spec), Some(&ns))
            .await
            .unwrap_or_else(|e| panic!("{name} refused: {e}"));
    }
}

#[tokio::test]
async fn tier_is_immutable() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace().await;
    cluster
        .apply(
            &jukinode("n", json!({"tier": "CS", "municipality": "131016"})),
            Some(&ns),
        )
        .await
        .unwrap();

    let change = jukinode("n", json!({"tier": "Prefecture", "prefecture": "13"}));
    let err = match cluster.apply(&change, Some(&ns)).await {
        Err(kube::Error::Api(status)) => status,
        other => panic!("changing the tier must be refused, got {other:?}"),
    };
    assert!(
        err.message.contains("spec.tier is immutable"),
        "{}",
        err.message
    );
    let stored = Api::<JukiNode>::namespaced(cluster.client.clone(), &ns)
        .get("n")
        .await
        .unwrap();
    assert_eq!(
        stored.spec.municipality.as_deref(),
        Some("131016"),
        "the node must be unchanged"
    );
}

#[tokio::test]
async fn prefecture_48_is_rejected() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace().await;
    let node = jukinode("pref-48", json!({"tier": "Prefecture", "prefecture": "48"}));
    let msg = rejected(&cluster, &node, Some(&ns)).await;
    assert!(
        msg.contains("spec.prefecture") && msg.contains("should match"),
        "{msg}"
    );
}

#[tokio::test]
async fn calendar_with_malformed_time_is_rejected() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    cluster.install_crds().await;
    let name = unique_name("jt-bad-time");
    let _guard = cluster.guard("operatingcalendar", &name, None); // in case it is wrongly accepted
    let calendar = json!({
        "apiVersion": "jukinet.io/v1alpha1", "kind": "OperatingCalendar",
        "metadata": {"name": name},
        "spec": {"timeZone": "Asia/Tokyo", "windowService": {"start": "8:00", "end": "17:00"}}
    });
    let msg = rejected(&cluster, &calendar, None).await;
    assert!(
        msg.contains("spec.windowService.start") && msg.contains("should match"),
        "{msg}"
    );
}

#[tokio::test]
async fn helm_version_is_pinned() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let (ok, out, err) = cluster.run("helm", &["version", "--short"], None).await;
    assert!(ok, "helm version failed: {err}");
    assert!(out.trim().starts_with("v3.19.5"), "{out}");
}

#[tokio::test]
async fn kubectl_get_shows_printer_columns() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace().await;
    cluster
        .apply(
            &jukinode("cs-131016", json!({"tier": "CS", "municipality": "131016"})),
            Some(&ns),
        )
        .await
        .unwrap();
    cluster
        .apply(
            &jukinode("pref-13", json!({"tier": "Prefecture", "prefecture": "13"})),
            Some(&ns),
        )
        .await
        .unwrap();

    // Plural, short name and category must all reach the JukiNodes.
    for resource in ["jukinodes", "jn", "juki"] {
        let out = cluster.kubectl(&["get", resource, "-n", &ns]).await;
        let table = columns(&out);
        assert_eq!(
            table[0][..5],
            ["NAME", "TIER", "PREF", "MUNI", "PHASE"],
            "{resource}:\n{out}"
        );
        // The category prints kind-qualified names (jukinode.jukinet.io/cs-131016).
        let row = |name: &str| {
            table
                .iter()
                .find(|r| r[0].ends_with(name))
                .map(|r| r[1..5].join("|"))
        };
        assert_eq!(row("cs-131016").as_deref(), Some("CS||131016|"), "{out}");
        assert_eq!(row("pref-13").as_deref(), Some("Prefecture|13||"), "{out}");
    }
}

/// Splits kubectl's table output at the header's column starts (empty cells are blank, so
/// splitting on whitespace would shift them).
fn columns(out: &str) -> Vec<Vec<String>> {
    let header = out.lines().next().unwrap_or_default();
    let mut starts: Vec<usize> = header
        .match_indices(|c: char| c != ' ')
        .filter(|(i, _)| *i == 0 || header.as_bytes()[i - 1] == b' ')
        .map(|(i, _)| i)
        .collect();
    starts.push(usize::MAX);
    let cell = |line: &str, a: usize, b: usize| {
        line.get(a..b.min(line.len()))
            .unwrap_or("")
            .trim()
            .to_owned()
    };
    out.lines()
        .map(|l| starts.windows(2).map(|w| cell(l, w[0], w[1])).collect())
        .collect()
}

#[tokio::test]
async fn kubectl_explain_shows_field_docs() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    cluster.install_crds().await;
    // Right after a CRD is (re)established its OpenAPI can lag a moment behind: retry briefly.
    let mut out = String::new();
    for _ in 0..60 {
        let (ok, stdout, _) = cluster
            .run("kubectl", &["explain", "jukinode.spec.municipality"], None)
            .await;
        out = stdout;
        if ok && out.contains("Local government code") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(out.contains("Local government code"), "{out}");
    assert!(out.contains("FIELD: municipality <string>"), "{out}");
}
