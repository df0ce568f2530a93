//! Real pods on the local cluster's real node (containerd, runc, the bridge CNI, kube-proxy,
//! CoreDNS, the jukinet-local StorageClass): what the fake kwok pods cannot show.
//!
//! `JUKINET_REAL_NODE=1 bash tests/cluster/up.sh && source tests/cluster/env.sh &&
//!  JUKINET_REQUIRE_CLUSTER=1 JUKINET_REQUIRE_REAL_NODE=1 cargo test -p juki-tests --test real_node`

use std::path::Path;
use std::time::Duration;

use juki_tests::cluster::{poll_until, unique_name, wait_for};
use juki_tests::operator::tokyo;
use juki_tests::real_node::{
    NODE_NAME, busybox, chart_node_values, finished, juki_node_image, merged, node_pods,
    on_real_node, real_juki_node,
};
use juki_tests::require_real_node;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_real_pod_reaches_another_by_service_name_and_the_api_server_proxies_to_it() {
    let Some(cluster) = require_real_node!() else {
        return;
    };
    let ns = cluster.namespace().await;
    let message = format!("served by a real pod in {}", &*ns);
    let web = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": on_real_node(json!({
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532},
            "containers": [merged(
                busybox("web", &format!(
                    "echo '{message}' > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www")),
                json!({
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                    "volumeMounts": [{"name": "www", "mountPath": "/www"}],
                }),
            )],
            "volumes": [{"name": "www", "emptyDir": {}}],
        })),
    });
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    });
    cluster.apply(&web, Some(&ns)).await.unwrap();
    cluster.apply(&service, Some(&ns)).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let ready = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let pod = wait_for(&pods, "web", ready, WAIT).await.unwrap();
    let spec = pod.spec.unwrap();
    let status = pod.status.unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(NODE_NAME));
    let container = &status.container_statuses.unwrap()[0];
    assert!(
        container
            .container_id
            .as_deref()
            .unwrap_or("")
            .starts_with("containerd://"),
        "a real container: {container:?}"
    );
    let ip = status.pod_ip.unwrap_or_default();
    assert!(
        ip.starts_with("10.244.0."),
        "a pod IP from the bridge network, got {ip}"
    );

    // Another pod, by the Service's short name: cluster DNS, then kube-proxy's Service rules.
    // (busybox-static's wget crashes in static glibc's NSS; its nc resolves on its own.)
    let client = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "client"},
        "spec": on_real_node(json!({
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532},
            "containers": [busybox("client", "printf 'GET / HTTP/1.0\\r\\nHost: web\\r\\n\\r\\n' | nc -w 10 web 80")],
        })),
    });
    cluster.apply(&client, Some(&ns)).await.unwrap();
    let (phase, log) = finished(&pods, "client", WAIT).await;
    assert_eq!(phase, "Succeeded", "client: {log}");
    assert!(log.starts_with("HTTP/1.1 200 OK"), "client: {log}");
    assert_eq!(log.lines().last(), Some(message.as_str()), "client: {log}");

    // The path the operator's final request takes: the API server's service proxy.
    let path = format!("/api/v1/namespaces/{}/services/web:80/proxy/", &*ns);
    let request = http::Request::get(path).body(vec![]).unwrap();
    let body = cluster.client.request_text(request).await.unwrap();
    assert_eq!(body.trim(), message);
}

#[tokio::test]
async fn a_claim_binds_on_the_real_node_and_its_data_outlives_the_pod_until_the_claim_goes() {
    let Some(cluster) = require_real_node!() else {
        return;
    };
    let ns = cluster.namespace().await;
    // No storageClassName: the default class (jukinet-local) provisions it.
    let claim = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "16Mi"}}},
    });
    cluster.apply(&claim, Some(&ns)).await.unwrap();
    // Non-root with an fsGroup, as jukinet's pods run: the volume must be writable to them.
    let pod = |name: &str, script: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": on_real_node(json!({
                "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532},
                "containers": [merged(
                    busybox(name, script),
                    json!({"volumeMounts": [{"name": "data", "mountPath": "/data"}]}),
                )],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
            })),
        })
    };
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    cluster
        .apply(&pod("writer", "echo kept > /data/record"), Some(&ns))
        .await
        .unwrap();
    let (phase, log) = finished(&pods, "writer", WAIT).await;
    assert_eq!(phase, "Succeeded", "writer: {log}");
    cluster
        .apply(&pod("reader", "cat /data/record"), Some(&ns))
        .await
        .unwrap();
    let (phase, log) = finished(&pods, "reader", WAIT).await;
    assert_eq!((phase.as_str(), log.trim()), ("Succeeded", "kept"));

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), &ns);
    let volume_name = claims
        .get("data")
        .await
        .unwrap()
        .spec
        .unwrap()
        .volume_name
        .unwrap();
    let volumes: Api<PersistentVolume> = Api::all(cluster.client.clone());
    let volume = volumes.get(&volume_name).await.unwrap().spec.unwrap();
    let dir = volume.local.expect("a local volume").path;
    assert_eq!(
        std::fs::read_to_string(Path::new(&dir).join("record")).unwrap(),
        "kept\n"
    );

    // The claim's deletion (reclaim policy Delete) takes the volume and its directory.
    for name in ["writer", "reader"] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    poll_until("the volume and its directory are gone", WAIT, || async {
        volumes.get_opt(&volume_name).await.unwrap().is_none() && !Path::new(&dir).exists()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_juki_node_image_serves_from_a_claim_as_non_root_and_its_batch_commands_run_on_the_same_data()
 {
    let Some(cluster) = require_real_node!() else {
        return;
    };
    let ns = cluster.namespace().await;
    let claim = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "national-data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}},
    });
    cluster.apply(&claim, Some(&ns)).await.unwrap();
    // The image's own user (65532) and the fsGroup the volume gets, as the operator's pods run.
    let pod = |name: &str, args: &[&str], restart: &str, probe: bool| {
        let mut container = json!({
            "name": "node", "image": juki_node_image(), "imagePullPolicy": "Never",
            "args": args,
            "env": [
                {"name": "JUKI_ROLE", "value": "national"},
                {"name": "DATABASE_URL", "value": "sqlite:///var/lib/juki/juki.db"},
                // As the operator's pods of a node without spec.tls get it.
                {"name": "JUKI_INSECURE_PLAIN_HTTP", "value": "true"},
            ],
            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/juki"}],
        });
        if probe {
            container["readinessProbe"] =
                json!({"httpGet": {"path": "/readyz", "port": 8080}, "periodSeconds": 1});
        }
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": on_real_node(json!({
                "restartPolicy": restart,
                "securityContext": {"runAsNonRoot": true, "fsGroup": 65532},
                "containers": [container],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "national-data"}}],
            })),
        })
    };
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    // The image alone listens on every address of the pod without TLS: it refuses to serve
    // until told that plain HTTP, which authenticates no caller, is meant.
    let mut plain = pod("plain", &["serve"], "Never", false);
    plain["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .pop();
    cluster.apply(&plain, Some(&ns)).await.unwrap();
    let (phase, log) = finished(&pods, "plain", WAIT).await;
    assert_eq!(phase, "Failed", "{log}");
    assert!(
        log.contains("listen 0.0.0.0:8080") && log.contains("--insecure-plain-http"),
        "{log}"
    );
    cluster
        .apply(&pod("national", &["serve"], "Always", true), Some(&ns))
        .await
        .unwrap();
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "national"},
        "spec": {"selector": {"app": "national"}, "ports": [{"port": 8080}]},
    });
    cluster.apply(&service, Some(&ns)).await.unwrap();
    let ready = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    if let Err(e) = wait_for(&pods, "national", ready, WAIT).await {
        let log = pods
            .logs("national", &Default::default())
            .await
            .unwrap_or_default();
        panic!("the national node did not become Ready: {e}\n{log}");
    }
    let path = format!(
        "/api/v1/namespaces/{}/services/national:8080/proxy/healthz",
        &*ns
    );
    let request = http::Request::get(path).body(vec![]).unwrap();
    cluster
        .client
        .request_text(request)
        .await
        .expect("/healthz through the service proxy");

    // The nightly batches run after the node stops: the same claim, the image's `batch` commands.
    pods.delete("national", &DeleteParams::default())
        .await
        .unwrap();
    poll_until("the serving pod is gone", WAIT, || async {
        pods.get_opt("national").await.unwrap().is_none()
    })
    .await
    .unwrap();
    let date = "2026-12-04";
    for (name, args) in [
        ("statistics", vec!["batch", "statistics", "--date", date]),
        ("backup", vec!["batch", "backup", "--date", date]),
    ] {
        cluster
            .apply(&pod(name, &args, "Never", false), Some(&ns))
            .await
            .unwrap();
        let (phase, log) = finished(&pods, name, WAIT).await;
        assert_eq!(phase, "Succeeded", "batch {name}: {log}");
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), &ns);
    let volume_name = claims
        .get("national-data")
        .await
        .unwrap()
        .spec
        .unwrap()
        .volume_name
        .unwrap();
    let volumes: Api<PersistentVolume> = Api::all(cluster.client.clone());
    let dir = volumes
        .get(&volume_name)
        .await
        .unwrap()
        .spec
        .unwrap()
        .local
        .unwrap()
        .path;
    let manifest = std::fs::read_dir(Path::new(&dir).join("backups"))
        .expect("the backup directory on the claim")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .expect("a backup manifest");
    // And it restores: the image's `restore` verifies the checksum and rebuilds the database.
    let manifest_in_pod = format!(
        "/var/lib/juki/backups/{}",
        manifest.file_name().unwrap().to_string_lossy()
    );
    let restore = [
        "restore",
        "--manifest",
        &manifest_in_pod,
        "--database-url",
        "sqlite:///tmp/restored.db",
    ];
    cluster
        .apply(&pod("restore", &restore, "Never", false), Some(&ns))
        .await
        .unwrap();
    let (phase, log) = finished(&pods, "restore", WAIT).await;
    assert_eq!(phase, "Succeeded", "restore: {log}");
}

#[tokio::test]
async fn the_operator_image_runs_two_ready_replicas_from_its_chart_under_its_own_service_account_and_reconciles()
 {
    let Some(cluster) = require_real_node!() else {
        return;
    };
    cluster.install_crds().await;
    let op_ns = cluster.namespace().await;
    let nodes_ns = cluster.namespace().await;
    // --wait: the rollout completes only when both replicas' /readyz answer, the standby's too
    // (a readiness tied to leadership never completes it).
    let sets = ["replicaCount=2".to_string()];
    let (release, _guards) = install_operator_chart(&cluster, &op_ns, &nodes_ns, &sets).await;
    let full = format!("{release}-juki-operator");
    let chart = juki_tests::cluster::repo_root().join("charts/juki-operator");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &op_ns);
    let listed = pods.list(&Default::default()).await.unwrap();
    assert_eq!(listed.items.len(), 2, "two replicas");
    let pod = listed.items.first().expect("the operator's pod");
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(NODE_NAME));
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some(full.as_str()),
        "its own ServiceAccount"
    );
    let status = pod.status.clone().unwrap().container_statuses.unwrap();
    assert!(
        status[0]
            .container_id
            .as_deref()
            .unwrap_or("")
            .starts_with("containerd://")
    );

    // Under that ServiceAccount (its ClusterRole, not the admin's certificate) it reconciles a
    // national node: the node gets a status and its Deployment.
    let calendar = unique_name("real-op-cal");
    let _calendar = cluster.guard("operatingcalendar", &calendar, None);
    let national = juki_tests::cluster::repo_root().join("charts/juki-national");
    let set_calendar = format!("calendar.name={calendar}");
    let (ok, _, err) = cluster
        .run(
            "helm",
            &[
                "install",
                "national",
                &national.display().to_string(),
                "-n",
                &nodes_ns,
                "--set",
                &set_calendar,
            ],
            None,
        )
        .await;
    assert!(ok, "helm install of the national chart: {err}");
    let nodes: Api<juki_operator::api::JukiNode> =
        Api::namespaced(cluster.client.clone(), &nodes_ns);
    let national_reason = || async {
        nodes
            .get_opt("national")
            .await
            .ok()
            .flatten()
            .and_then(|n| n.status)
            .filter(|s| s.phase.is_some())
            .map(|s| s.reason.unwrap_or_default())
    };
    // The chart's default operator runs no plain-HTTP node: the national chart's default (no
    // TLS) is refused, with the way out in the status, and nothing of it is created.
    poll_until(
        "the in-pod operator refuses the plain-HTTP national node",
        WAIT,
        || async { national_reason().await.as_deref() == Some("PlainHttpRefused") },
    )
    .await
    .unwrap();
    let status = nodes.get("national").await.unwrap().status.unwrap();
    assert_eq!(status.phase, Some(juki_operator::api::NodePhase::Failed));
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("args.allowPlainHttp")),
        "{status:?}"
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(cluster.client.clone(), &nodes_ns);
    assert!(deployments.get_opt("national").await.unwrap().is_none());

    // A rolling `helm upgrade` of both replicas completes (the standby is Ready too), and the
    // operator it brings, told that this cluster allows plain HTTP, plans the node.
    let (ok, out, err) = cluster
        .run(
            "helm",
            &[
                "upgrade",
                &release,
                &chart.display().to_string(),
                "-n",
                &op_ns,
                "--reuse-values",
                "--set",
                "args.allowPlainHttp=true",
                "--wait",
                "--timeout",
                "180s",
            ],
            None,
        )
        .await;
    assert!(ok, "helm upgrade of the operator: {err}\n{out}");
    poll_until(
        "the upgraded operator plans the national node",
        WAIT,
        || async {
            national_reason()
                .await
                .is_some_and(|r| r != "PlainHttpRefused")
        },
    )
    .await
    .unwrap();
}

/// The operator chart installed as a new release into `op_ns`, its pods on the real node from
/// the imported image, watching `watch`, with more `--set` values (a comma inside a value
/// escaped as `\,`); waits (`--wait`) until every replica's /readyz answers, the standby's
/// too, and fails with the pods' logs otherwise. The guards delete what the chart makes
/// outside the namespace.
async fn install_operator_chart(
    cluster: &juki_tests::cluster::TestCluster,
    op_ns: &str,
    watch: &str,
    sets: &[String],
) -> (String, Vec<juki_tests::Guard>) {
    let release = unique_name("jt-op");
    let full = format!("{release}-juki-operator");
    let guards = vec![
        cluster.guard("clusterrole", &full, None),
        cluster.guard("clusterrole", &format!("{full}-final-request"), None),
        cluster.guard("clusterrolebinding", &full, None),
    ];
    let chart = juki_tests::cluster::repo_root().join("charts/juki-operator");
    let tolerations =
        r#"tolerations=[{"key":"jukinet.io/real-node","operator":"Exists","effect":"NoSchedule"}]"#;
    let watch = format!("args.watchNamespace={watch}");
    let mut args: Vec<String> = [
        "install",
        &release,
        &chart.display().to_string(),
        "-n",
        op_ns,
        "--set",
        "image.pullPolicy=Never",
        "--set-string",
        "nodeSelector.jukinet\\.io/real-node=true",
        "--set-json",
        tolerations,
        "--set",
        &watch,
        "--wait",
        "--timeout",
        "180s",
    ]
    .map(str::to_owned)
    .to_vec();
    for set in sets {
        args.extend(["--set".to_owned(), set.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (ok, out, err) = cluster.run("helm", &args, None).await;
    if !ok {
        let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), op_ns);
        let mut logs = String::new();
        for p in pods.list(&Default::default()).await.unwrap().items {
            let name = p.metadata.name.unwrap_or_default();
            logs += &pods
                .logs(&name, &Default::default())
                .await
                .unwrap_or_default();
        }
        panic!("helm install of the operator failed: {err}\n{out}\n{logs}");
    }
    (release, guards)
}

/// The operator on a fast clock from `start` with the production defaults: a real final
/// exchange (and node calls), claims for SQLite.
fn real_operator(
    cluster: &juki_tests::cluster::TestCluster,
    ns: &str,
    start: &str,
    factor: u32,
    tag: &str,
) -> juki_tests::operator::OperatorProcess {
    real_operator_with(cluster, ns, start, factor, tag, &[])
}

/// As [`real_operator`], with more flags.
fn real_operator_with(
    cluster: &juki_tests::cluster::TestCluster,
    ns: &str,
    start: &str,
    factor: u32,
    tag: &str,
    extra: &[&str],
) -> juki_tests::operator::OperatorProcess {
    juki_tests::real_node::real_operator(cluster, ns, tokyo(start), factor, tag, extra)
}

/// Waits until JukiNode `name` is Online.
async fn until_online(nodes: &Api<juki_operator::api::JukiNode>, name: &str) -> Result<(), String> {
    poll_until(&format!("{name} Online"), WAIT, || async {
        nodes
            .get_status(name)
            .await
            .ok()
            .and_then(|n| n.status)
            .is_some_and(|s| s.phase == Some(juki_operator::api::NodePhase::Online))
    })
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

#[tokio::test]
async fn the_operator_runs_a_national_node_as_real_pods_through_its_final_exchange_and_fridays_batches_under_the_restricted_standard()
 {
    use juki_operator::api::{JukiNode, NodePhase};
    use juki_tests::operator::Recording;
    use k8s_openapi::api::batch::v1::Job;

    let Some(cluster) = require_real_node!() else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace().await;
    // The namespace enforces the "restricted" Pod Security Standard: a pod without the
    // operator's securityContext is refused there.
    cluster
        .kubectl(&[
            "label",
            "namespace",
            &ns,
            "pod-security.kubernetes.io/enforce=restricted",
        ])
        .await;
    let plain = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain"},
        "spec": on_real_node(json!({"containers": [busybox("plain", "true")]})),
    });
    let refused = cluster.apply(&plain, Some(&ns)).await.unwrap_err();
    assert!(
        refused.to_string().contains("violates PodSecurity"),
        "{refused}"
    );

    let calendar = unique_name("real-day");
    let _calendar = cluster.guard("operatingcalendar", &calendar, None);
    cluster
        .apply_yaml(
            &juki_tests::cluster::read_repo_file("examples/calendar.yaml")
                .replace("name: japan", &format!("name: {calendar}")),
            None,
        )
        .await
        .expect("calendar accepted");
    let national = real_juki_node("national", &calendar, json!({"tier": "National"}));
    cluster.apply(&national, Some(&ns)).await.unwrap();
    let recording = Recording::start(&cluster, &ns);
    // Friday evening, ×20: the window closes at 22:00 (90 s from the start), then the real final
    // exchange through the API server's service proxy, the pods' stop and Friday's three batches
    // as real Jobs on the node's claim. The production defaults: a real final exchange, claims.
    let op = real_operator(&cluster, &ns, "2026-11-27T21:30", 20, "-real");
    let nodes: Api<JukiNode> = Api::namespaced(cluster.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let serving = until_online(&nodes, "national").await;
    let listed = pods.list(&Default::default()).await.unwrap();
    serving.unwrap_or_else(|e| panic!("{e}: pods {:?}", listed.items));
    let pod = listed.items.first().expect("the node's pod");
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some(NODE_NAME)
    );
    let done = poll_until(
        "Friday's batches done",
        Duration::from_secs(300),
        || async {
            nodes
                .get_status("national")
                .await
                .ok()
                .and_then(|n| n.status)
                .and_then(|s| s.last_batch)
                .is_some_and(|b| b.date == "2026-11-27")
        },
    )
    .await;
    let status = nodes.get_status("national").await.unwrap().status.unwrap();
    done.unwrap_or_else(|e| panic!("{e}: {status:?}"));
    drop(op);

    use NodePhase::*;
    let mut phases: Vec<NodePhase> = recording
        .events()
        .into_iter()
        .map(|(_, phase, _)| phase)
        .collect();
    // Before its first look the node may show Offline.
    let before = phases.iter().take_while(|p| **p == Offline).count();
    phases.drain(..before);
    assert_eq!(
        phases,
        [Starting, Online, Draining, Stopping, DailyBatch, Offline],
        "{status:?}"
    );
    let answer = status.final_answer.clone().expect("a final answer");
    assert_eq!(
        (answer.date.as_str(), answer.outcome.as_str()),
        ("2026-11-27", "Received"),
        "the real node service answered the final request: {answer:?}"
    );
    let last = status.last_batch.clone().unwrap();
    assert_eq!(
        (last.outcome.as_str(), last.batches.clone()),
        (
            "Succeeded",
            vec![
                "statistics".to_string(),
                "backup".to_string(),
                "weekly-report".to_string()
            ]
        )
    );
    let jobs: Api<Job> = Api::namespaced(cluster.client.clone(), &ns);
    let mut names: Vec<String> = jobs
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|j| j.status.as_ref().and_then(|s| s.succeeded) == Some(1))
        .filter_map(|j| j.metadata.name.clone())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "national-backup-20261127",
            "national-statistics-20261127",
            "national-weekly-report-20261127"
        ]
    );
    // The backup is on the node's backups claim, not beside the database, and restores from
    // there (its sha256 and row counts checked) into a database that is not the node's.
    let script = "set -e
        ls /backups
        test ! -e /data/backups
        manifest=$(ls /backups/*.manifest.json)
        juki-node restore --manifest \"$manifest\" --database-url sqlite:///tmp/restored.db
        echo restored-ok";
    let restore = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "restore"},
        "spec": on_real_node(json!({
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": true, "fsGroup": 65532,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "restore", "image": juki_node_image(), "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", script],
                "securityContext": {"allowPrivilegeEscalation": false,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [
                    {"name": "backups", "mountPath": "/backups", "readOnly": true},
                    {"name": "data", "mountPath": "/data", "readOnly": true},
                ],
            }],
            "volumes": [
                {"name": "backups", "persistentVolumeClaim": {"claimName": "national-backups"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "national-data"}},
            ],
        })),
    });
    cluster.apply(&restore, Some(&ns)).await.unwrap();
    let (phase, log) = finished(&pods, "restore", WAIT).await;
    assert_eq!(phase, "Succeeded", "{log}");
    assert!(
        log.contains(".manifest.json") && log.trim_end().ends_with("restored-ok"),
        "{log}"
    );
    for p in pods.list(&Default::default()).await.unwrap().items {
        assert_eq!(
            p.spec.as_ref().unwrap().node_name.as_deref(),
            Some(NODE_NAME),
            "{:?}",
            p.metadata.name
        );
    }
}

async fn delivery_status(
    deliveries: &Api<juki_operator::api::FileDelivery>,
    name: &str,
) -> juki_operator::api::FileDeliveryStatus {
    deliveries
        .get_status(name)
        .await
        .ok()
        .and_then(|d| d.status)
        .unwrap_or_default()
}

/// GET `path` of node `name`'s admin API through the API server's service proxy.
async fn node_admin(
    cluster: &juki_tests::cluster::TestCluster,
    ns: &str,
    name: &str,
    path: &str,
) -> serde_json::Value {
    serde_json::from_str(&node_text(cluster, ns, name, path).await).unwrap()
}

/// GET `path` of node `name` through the API server's service proxy, as text.
async fn node_text(
    cluster: &juki_tests::cluster::TestCluster,
    ns: &str,
    name: &str,
    path: &str,
) -> String {
    let uri = format!("/api/v1/namespaces/{ns}/services/{name}:8080/proxy{path}");
    let request = http::Request::get(uri).body(Vec::new()).unwrap();
    cluster
        .client
        .request_text(request)
        .await
        .unwrap_or_else(|e| panic!("GET {path} of {ns}/{name}: {e}"))
}

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// File delivery across a real tree (national, Tokyo with one CS, Osaka) on a fast-clock night:
/// a code table reaches every node down the tree (each prefecture from the national server, the
/// CS from its prefecture), is staged while the nodes are online, and is applied when the
/// calendar starts them the next morning; a garbled allow-list fails at its canary prefecture's
/// start, halts, and never reaches Osaka; content whose sha256 is wrong is sent nowhere. The
/// same day, updates posted at the CS pod are relayed to the national pod by DNS and Services.
#[tokio::test]
async fn the_operator_delivers_a_file_down_a_real_tree_overnight_and_halts_a_garbled_one_at_its_canary()
 {
    use juki_operator::api::{DeliveryPhase, FileDelivery, JukiNode, NodePhase};

    let Some(cluster) = require_real_node!() else {
        return;
    };
    cluster.install_crds().await;
    let ns_guard = cluster.namespace().await;
    let ns = ns_guard.name.clone();
    let (calendar, _calendar) = own_nights_only_calendar(&cluster, "real-delivery").await;
    let node = |name: &str, spec: serde_json::Value| real_juki_node(name, &calendar, spec);
    for object in [
        node("national", json!({"tier": "National"})),
        node(
            "pref-13",
            json!({"tier": "Prefecture", "prefecture": "13", "upstream": {"name": "national"}}),
        ),
        node(
            "pref-27",
            json!({"tier": "Prefecture", "prefecture": "27", "upstream": {"name": "national"}}),
        ),
        node(
            "cs-131016",
            json!({"tier": "CS", "municipality": "131016", "upstream": {"name": "pref-13"}}),
        ),
    ] {
        cluster.apply(&object, Some(&ns)).await.unwrap();
    }

    // 2 MiB: more than a ConfigMap holds.
    let big: Vec<u8> = (0..2u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
    let big_sha = sha256_hex(&big);
    let big_file = std::env::temp_dir().join(format!("juki-big-{}.bin", std::process::id()));
    std::fs::write(&big_file, &big).unwrap();
    let codes = "13,東京都\n27,大阪府\n";
    // An allow-list garbled in transit: an item no node knows.
    let garbled = r#"{"allow": [{"agency": "nenkin", "affair": "pension", "items": ["name", "\u001a\u001a"]}]}"#;
    let delivery = |name: &str, file: &str, text: &str, sha: &str, canaries: serde_json::Value| {
        json!({
            "apiVersion": "jukinet.io/v1alpha1", "kind": "FileDelivery",
            "metadata": {"name": name},
            "spec": {"file": file, "source": {"inline": text}, "sha256": sha, "canaries": canaries},
        })
    };
    for object in [
        json!({
            "apiVersion": "jukinet.io/v1alpha1", "kind": "FileDelivery",
            "metadata": {"name": "big"},
            "spec": {"file": "big-table", "source": {"upload": {}}, "sha256": big_sha,
                     "canaries": {"count": 2}},
        }),
        delivery(
            "codes",
            "code-table",
            codes,
            &sha256_hex(codes.as_bytes()),
            json!({"count": 2}),
        ),
        delivery(
            "allow-list",
            "allow-list",
            garbled,
            &sha256_hex(garbled.as_bytes()),
            json!({"prefectures": ["13"]}),
        ),
        delivery(
            "wrong",
            "wrong",
            "the real content",
            &sha256_hex(b"other content"),
            json!({}),
        ),
    ] {
        cluster.apply(&object, Some(&ns)).await.unwrap();
    }
    // Bad input the API server lets through: each a clear status, nothing sent.
    let bad_input = |name: &str, spec: serde_json::Value| {
        let mut base =
            json!({"file": "codes-x", "sha256": sha256_hex(b"x"), "source": {"inline": "x"}});
        base.as_object_mut()
            .unwrap()
            .extend(spec.as_object().unwrap().clone());
        json!({
            "apiVersion": "jukinet.io/v1alpha1", "kind": "FileDelivery",
            "metadata": {"name": name}, "spec": base,
        })
    };
    for object in [
        bad_input(
            "no-map",
            json!({"source": {"configMap": {"name": "absent", "key": "table.csv"}}}),
        ),
        bad_input("pref-48", json!({"targets": {"prefectures": ["13", "48"]}})),
        bad_input("nobody", json!({"targets": {"prefectures": ["01"]}})),
    ] {
        cluster.apply(&object, Some(&ns)).await.unwrap();
    }

    // Wednesday 07:00, ×300: the CS's window closes at 21:00 (168 s), the night is 11 hours
    // (132 s), Thursday's start applies what was staged.
    let op = real_operator(&cluster, &ns, "2026-11-25T07:00", 300, "-delivery");
    let deliveries: Api<FileDelivery> = Api::namespaced(cluster.client.clone(), &ns);
    let nodes: Api<JukiNode> = Api::namespaced(cluster.client.clone(), &ns);
    let status_of = |name: &'static str| delivery_status(&deliveries, name);
    // kubectl juki, as a person runs it.
    let juki = |args: &[&str]| {
        let (ok, out, err) = juki_tests::operator::kubectl_juki(&cluster, args);
        assert!(ok, "kubectl juki {args:?}: {err}");
        out
    };

    // Wrong content is refused before anything is sent.
    poll_until("the wrong delivery Failed", WAIT, || async {
        status_of("wrong").await.phase == Some(DeliveryPhase::Failed)
    })
    .await
    .unwrap();
    let wrong = status_of("wrong").await;
    let message = wrong.message.clone().unwrap_or_default();
    assert!(
        message.starts_with("spec.sha256: ") && message.contains("nothing was sent"),
        "{wrong:?}"
    );
    for (name, phase, message) in [
        (
            "no-map",
            "Pending",
            "spec.source.configMap: ConfigMap NS/absent does not exist; the delivery waits for it",
        ),
        (
            "pref-48",
            "Failed",
            "spec.targets.prefectures[1]: \"48\" is not a prefecture code (\"01\"–\"47\")",
        ),
        (
            "nobody",
            "Failed",
            "the delivery names no node: its targets match nothing",
        ),
    ] {
        let looked = poll_until(name, WAIT, || async {
            delivery_status(&deliveries, name).await.phase.is_some()
        })
        .await;
        let got = delivery_status(&deliveries, name).await;
        looked.unwrap_or_else(|e| panic!("{e}: {got:?}"));
        assert_eq!(
            (got.phase.map(DeliveryPhase::as_str), got.message.as_deref()),
            (Some(phase), Some(message.replace("NS", &ns).as_str())),
            "{name}"
        );
    }

    // A file too big for a ConfigMap waits for its upload to the national server.
    poll_until("the big delivery looked at", WAIT, || async {
        status_of("big").await.phase.is_some()
    })
    .await
    .unwrap();
    let big = status_of("big").await;
    assert_eq!(big.phase, Some(DeliveryPhase::Pending), "{big:?}");
    until_online(&nodes, "national").await.unwrap();
    let uploaded = juki(&["delivery", "upload", big_file.to_str().unwrap(), "-n", &ns]);
    assert_eq!(
        uploaded,
        format!(
            "uploaded {} (2097152 bytes) to {ns}/national\nsha256: {big_sha}\n",
            big_file.display()
        )
    );

    // Wednesday: every node Online, then the deliveries staged in their first wave.
    let staged = poll_until(
        "the code table and the big file fetched by all three, the allow-list by the Tokyo canary wave",
        Duration::from_secs(240),
        || async {
            let (c, a) = (status_of("codes").await, status_of("allow-list").await);
            c.fetched == 3 && a.fetched == 2 && status_of("big").await.fetched == 3
        },
    )
    .await;
    let (c, a) = (status_of("codes").await, status_of("allow-list").await);
    let b = status_of("big").await;
    staged.unwrap_or_else(|e| panic!("{e}: codes {c:?}, allow-list {a:?}, big {b:?}"));
    assert_eq!((c.applied, a.applied, a.pending), (0, 0, 1), "{a:?}");
    assert_eq!(a.phase, Some(DeliveryPhase::Delivering));

    // The same day, resident updates posted at the CS pod reach the national pod through the
    // prefecture, by cluster DNS and Services, on the operator's clock.
    for (key, code, reason, address) in [
        ("a", "12345678903", "転入", "千代田1-1"),
        ("b", "12345678903", "転居", "千代田2-2"),
        ("c", "98765432103", "転入", "千代田3-3"),
    ] {
        let body = json!([{
            "resident_code": code, "name": "山田 太郎", "name_kana": "ヤマダ タロウ",
            "birth_date": "1990-04-01", "sex": "男", "address": address,
            "municipality_code": "131016", "reason": reason, "change_date": "2026-11-25",
        }]);
        let uri = format!("/api/v1/namespaces/{ns}/services/cs-131016:8080/proxy/v1/updates");
        let request = http::Request::post(uri)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .header("x-juki-identity", "muni-131016")
            .body(body.to_string().into_bytes())
            .unwrap();
        cluster
            .client
            .request_text(request)
            .await
            .unwrap_or_else(|e| panic!("POST /v1/updates {key} at the CS: {e}"));
    }
    let applied = "juki_node_updates_total{stage=\"applied\"} 3";
    let arrived = poll_until(
        "the updates applied at the national server",
        WAIT,
        || async {
            node_text(&cluster, &ns, "national", "/metrics")
                .await
                .lines()
                .any(|l| l == applied)
        },
    )
    .await;
    let relay = node_admin(&cluster, &ns, "cs-131016", "/admin/v1/relay").await;
    arrived.unwrap_or_else(|e| panic!("{e}: the CS's relay {relay}"));
    let relay = node_admin(&cluster, &ns, "pref-13", "/admin/v1/relay").await;
    assert_eq!(relay["outbox"]["pending"], 0, "{relay}");

    let cs = node_admin(&cluster, &ns, "cs-131016", "/admin/v1/deliveries").await;
    let code_sha = sha256_hex(codes.as_bytes());
    assert!(
        cs["staged"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["file"] == "code-table" && s["sha256"] == code_sha.as_str()),
        "{cs}"
    );
    assert_eq!(
        cs["files"],
        json!([]),
        "nothing applied before the next start: {cs}"
    );

    // Wednesday night, every prefecture stopped: a notice Osaka must have before it serves
    // again. Thursday it starts without it, is held from going Online, fetches it while held
    // and is restarted to apply it.
    let osaka_stopped = poll_until(
        "Osaka stopped for the night",
        Duration::from_secs(240),
        || async {
            let status = nodes
                .get_status("pref-27")
                .await
                .ok()
                .and_then(|n| n.status);
            status.and_then(|s| s.phase) == Some(NodePhase::Offline)
        },
    )
    .await;
    osaka_stopped.unwrap();
    let notice = "2026-11-26から窓口の受付時間を変更します\n";
    let notice_sha = sha256_hex(notice.as_bytes());
    cluster
        .apply(
            &json!({
                "apiVersion": "jukinet.io/v1alpha1", "kind": "FileDelivery",
                "metadata": {"name": "notice"},
                "spec": {"file": "notice", "source": {"inline": notice}, "sha256": notice_sha,
                         "targets": {"prefectures": ["27"]}, "requiredBefore": "NextOnlineStart"},
            }),
            Some(&ns),
        )
        .await
        .unwrap();

    // Thursday morning: the nodes start, apply the code table and the big file, refuse the
    // garbled list. Each node reports its applied files on its own; wait for all of them.
    let done = poll_until(
        "the code table and the big file Delivered and the allow-list halted",
        Duration::from_secs(420),
        || async {
            let a = status_of("allow-list").await;
            status_of("codes").await.phase == Some(DeliveryPhase::Delivered)
                && a.phase == Some(DeliveryPhase::Failed)
                && a.failed == 2
                && status_of("notice").await.phase == Some(DeliveryPhase::Delivered)
                && status_of("big").await.phase == Some(DeliveryPhase::Delivered)
        },
    )
    .await;
    let (c, a) = (status_of("codes").await, status_of("allow-list").await);
    let (n, big) = (status_of("notice").await, status_of("big").await);
    let osaka = nodes.get_status("pref-27").await.unwrap().status;
    done.unwrap_or_else(|e| {
        panic!("{e}: codes {c:?}, allow-list {a:?}, notice {n:?}, big {big:?}, Osaka {osaka:?}")
    });
    assert_eq!((n.targets, n.applied), (1, 1), "{n:?}");
    assert_eq!((c.targets, c.applied, c.failed), (3, 3, 0), "{c:?}");
    assert_eq!(c.prefectures["13"], "2/2");
    assert_eq!(c.prefectures["27"], "1/1");
    assert_eq!((a.failed, a.applied), (2, 0), "{a:?}");
    let mut failed: Vec<String> = a.failures.iter().map(|f| f.node.clone()).collect();
    failed.sort();
    assert_eq!(failed, [format!("{ns}/cs-131016"), format!("{ns}/pref-13")]);
    for f in &a.failures {
        let why = f.message.as_deref().unwrap_or_default();
        assert!(
            why.contains("refused at its start") && why.contains("allow-list"),
            "{f:?}"
        );
    }

    // The code table is the CS's current version; Osaka never got the garbled list.
    let cs = node_admin(&cluster, &ns, "cs-131016", "/admin/v1/deliveries").await;
    assert!(
        cs["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["file"] == "code-table" && f["current"]["sha256"] == code_sha.as_str()),
        "{cs}"
    );
    let osaka = node_admin(&cluster, &ns, "pref-27", "/admin/v1/deliveries").await;
    let garbled_sha = sha256_hex(garbled.as_bytes());
    assert!(
        !osaka.to_string().contains(&garbled_sha),
        "the halted delivery reached Osaka: {osaka}"
    );
    assert!(
        osaka["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["file"] == "big-table" && f["current"]["sha256"] == big_sha.as_str()),
        "{osaka}"
    );
    assert_eq!(
        (big.phase, big.applied),
        (Some(DeliveryPhase::Delivered), 3),
        "{big:?}"
    );
    for name in ["national", "pref-13", "pref-27", "cs-131016"] {
        let phase = nodes
            .get_status(name)
            .await
            .unwrap()
            .status
            .and_then(|s| s.phase);
        assert_eq!(phase, Some(NodePhase::Online), "{name}");
    }
    let events = cluster
        .kubectl(&["-n", &ns, "get", "events.events.k8s.io", "-o", "json"])
        .await;
    assert!(
        events.contains("DeliveryFailed") && events.contains("DeliveryDelivered"),
        "{events}"
    );
    // Osaka was held by the notice, and restarted to apply it.
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let reasons_about = |name: &str| -> Vec<String> {
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["regarding"]["name"] == name)
            .map(|e| {
                format!(
                    "{} {}",
                    e["reason"].as_str().unwrap_or(""),
                    e["note"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let osaka_events = reasons_about("pref-27");
    let held = format!(
        "DeliveryNotApplied delivery {ns}/notice is required before this start and is not fetched yet"
    );
    assert!(osaka_events.contains(&held), "{osaka_events:#?}");
    let notice_events = reasons_about("notice");
    assert!(
        notice_events
            .iter()
            .any(|e| e.starts_with(&format!("RestartedToApply {ns}/pref-27 fetched notice"))),
        "{notice_events:#?}"
    );
    let osaka = node_admin(&cluster, &ns, "pref-27", "/admin/v1/deliveries").await;
    assert!(
        osaka["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["file"] == "notice" && f["current"]["sha256"] == notice_sha.as_str()),
        "{osaka}"
    );
    // Its JukiNode status lists the versions it applied, as it said when it went Online.
    let delivered: Vec<(String, String)> = nodes
        .get_status("pref-27")
        .await
        .unwrap()
        .status
        .unwrap_or_default()
        .delivered_files
        .into_iter()
        .map(|f| (f.file, f.sha256))
        .collect();
    assert_eq!(
        delivered,
        [
            ("big-table".to_string(), big_sha.clone()),
            ("code-table".to_string(), code_sha.clone()),
            ("notice".to_string(), notice_sha.clone()),
        ],
        "pref-27's status.deliveredFiles"
    );

    // kubectl juki delivery: the halted one as a person reads it; a pause lands in the spec.
    let report = juki(&["delivery", "status", "allow-list", "-n", &ns]);
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(
        lines[..4],
        [
            format!(
                "FileDelivery {ns}/allow-list: allow-list (sha256 {}…) Failed",
                &garbled_sha[..12]
            )
            .as_str(),
            "wave 2/3: 3 targets, 0 applied, 0 fetched, 1 pending, 2 failed",
            "prefectures (applied/targets): 13 0/2, 2 failed; 27 0/1",
            "failed:",
        ],
        "{report}"
    );
    assert_eq!(
        juki(&["delivery", "pause", "codes", "-n", &ns]),
        "filedelivery.jukinet.io/codes paused\n"
    );
    assert!(deliveries.get("codes").await.unwrap().spec.paused);
    // A rollback takes the code table back from every node: its first version, so each node
    // removes it at its next start.
    assert_eq!(
        juki(&["delivery", "rollback", "codes", "-n", &ns]),
        "filedelivery.jukinet.io/codes rolled back\n"
    );
    let rolled = poll_until("the code table rolled back everywhere", WAIT, || async {
        let c = status_of("codes").await;
        c.phase == Some(DeliveryPhase::RolledBack) && c.withdrawing.is_empty()
    })
    .await;
    let c = status_of("codes").await;
    rolled.unwrap_or_else(|e| panic!("{e}: {c:?}"));
    for name in ["pref-13", "pref-27", "cs-131016"] {
        let view = node_admin(&cluster, &ns, name, "/admin/v1/deliveries").await;
        let code_table: Vec<&serde_json::Value> = view["staged"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["file"] == "code-table")
            .collect();
        assert_eq!(
            code_table,
            [&json!({"file": "code-table", "sha256": "", "remove": true})],
            "{name}: {view}"
        );
    }
    drop(op);
    let _ = std::fs::remove_file(&big_file);
}

/// The call center from its chart as a real pod under its own ServiceAccount: a ticket naming a
/// node shows the node's phase, why and its Events, read with the chart's read-only ClusterRole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_center_chart_runs_a_real_pod_that_shows_a_tickets_node_under_its_own_service_account()
 {
    let Some(cluster) = require_real_node!() else {
        return;
    };
    cluster.install_crds().await;
    let ns_guard = cluster.namespace().await;
    let ns = ns_guard.name.clone();
    let release = unique_name("jt-cc");
    let role = format!("{ns}-{release}-node-context");
    let _role = cluster.guard("clusterrole", &role, None);
    let _binding = cluster.guard("clusterrolebinding", &role, None);
    let chart = juki_tests::cluster::repo_root().join("charts/juki-callcenter");
    let tolerations =
        r#"tolerations=[{"key":"jukinet.io/real-node","operator":"Exists","effect":"NoSchedule"}]"#;
    let (ok, out, err) = cluster
        .run(
            "helm",
            &[
                "install",
                &release,
                &chart.display().to_string(),
                "-n",
                &ns,
                "--set",
                "devMode=true",
                "--set-string",
                "nodeSelector.jukinet\\.io/real-node=true",
                "--set-json",
                tolerations,
                "--wait",
                "--timeout",
                "180s",
            ],
            None,
        )
        .await;
    assert!(ok, "helm install of the call center: {err}\n{out}");
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let listed = pods.list(&Default::default()).await.unwrap();
    let pod = listed.items.first().expect("the call center's pod");
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(NODE_NAME));
    assert_eq!(spec.service_account_name.as_deref(), Some(release.as_str()));

    // A CS held from going Online by a delivery, with the operator's Event about it. (The call
    // center finds a node by name in any namespace: a municipality no other test uses.)
    cluster
        .apply(
            &json!({
                "apiVersion": "jukinet.io/v1alpha1", "kind": "JukiNode",
                "metadata": {"name": "cs-011002"},
                "spec": {"tier": "CS", "municipality": "011002"},
            }),
            Some(&ns),
        )
        .await
        .unwrap();
    let held = "delivery juki-national/notice is required before this start and is not fetched yet";
    let status =
        json!({"status": {"phase": "Starting", "reason": "DeliveryNotApplied", "message": held}});
    cluster
        .kubectl(&[
            "patch",
            "jukinode",
            "cs-011002",
            "-n",
            &ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status.to_string(),
        ])
        .await;
    cluster
        .apply(
            &json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "cs-011002.held"},
                "involvedObject": {"apiVersion": "jukinet.io/v1alpha1", "kind": "JukiNode",
                                   "name": "cs-011002", "namespace": ns},
                "type": "Warning", "reason": "DeliveryNotApplied", "message": held,
                "firstTimestamp": "2026-11-26T07:30:10Z", "lastTimestamp": "2026-11-26T07:30:10Z",
                "count": 1, "source": {"component": "juki-operator"},
            }),
            Some(&ns),
        )
        .await
        .unwrap();

    // A fault filed through the Service, as the terminal would, then its node context.
    let base = format!("/api/v1/namespaces/{ns}/services/{release}:8443/proxy");
    let ticket = json!({
        "kind": "fault", "org": "011002", "reporter": "札幌市 情報システム課", "channel": "phone",
        "subject": "朝からCSが業務を開始しない", "body": "8時を過ぎてもCSがオンラインになりません。",
        "nodes": ["cs-011002"],
    });
    let request = http::Request::post(format!("{base}/v1/tickets"))
        .header("content-type", "application/json")
        .header("x-juki-identity", "callcenter-sato")
        .body(ticket.to_string().into_bytes())
        .unwrap();
    let filed = cluster
        .client
        .request_text(request)
        .await
        .unwrap_or_else(|e| panic!("POST /v1/tickets: {e}"));
    let filed: serde_json::Value = serde_json::from_str(&filed).unwrap();
    let id = filed["id"].as_i64().expect("a ticket id");
    let request = http::Request::get(format!("{base}/v1/tickets/{id}/context"))
        .header("x-juki-identity", "callcenter-sato")
        .body(Vec::new())
        .unwrap();
    let context = cluster
        .client
        .request_text(request)
        .await
        .unwrap_or_else(|e| panic!("GET the context: {e}"));
    let context: serde_json::Value = serde_json::from_str(&context).unwrap();
    let node = &context["nodes"][0];
    assert_eq!(node["found"], true, "{context}");
    assert_eq!(
        (
            node["phase"].as_str(),
            node["reason"].as_str(),
            node["message"].as_str()
        ),
        (Some("Starting"), Some("DeliveryNotApplied"), Some(held)),
        "{context}"
    );
    assert_eq!(
        node["events"][0]["reason"], "DeliveryNotApplied",
        "{context}"
    );
    drop(ns_guard);
}

/// Signed deliveries on real pods: given `--delivery-keys`, the operator renders the key into
/// every node's configuration, passes `spec.signature` with each fetch, and a node stages only
/// what the key signed; an unsigned or forged delivery fails at its first node, nothing staged.
#[tokio::test]
async fn nodes_given_a_delivery_key_stage_only_deliveries_it_signed() {
    use juki_operator::api::{DeliveryPhase, FileDelivery};
    use ring::signature::{Ed25519KeyPair, KeyPair};

    let Some(cluster) = require_real_node!() else {
        return;
    };
    cluster.install_crds().await;
    let ns_guard = cluster.namespace().await;
    let ns = ns_guard.name.clone();
    let calendar = unique_name("real-signed");
    let _calendar = cluster.guard("operatingcalendar", &calendar, None);
    cluster
        .apply(
            &json!({
                "apiVersion": "jukinet.io/v1alpha1", "kind": "OperatingCalendar",
                "metadata": {"name": calendar},
                "spec": {"timeZone": "Asia/Tokyo", "batches": []},
            }),
            None,
        )
        .await
        .expect("calendar accepted");
    for object in [
        real_juki_node("national", &calendar, json!({"tier": "National"})),
        real_juki_node(
            "pref-13",
            &calendar,
            json!({"tier": "Prefecture", "prefecture": "13", "upstream": {"name": "national"}}),
        ),
    ] {
        cluster.apply(&object, Some(&ns)).await.unwrap();
    }
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    let key_pair = || {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    };
    let (agency, forger) = (key_pair(), key_pair());
    let sign = |key: &Ed25519KeyPair, file: &str, sha: &str| {
        hex(key
            .sign(format!("jukinet-delivery-v1\n{file}\n{sha}").as_bytes())
            .as_ref())
    };
    let text = "13,東京都\n";
    let sha = sha256_hex(text.as_bytes());
    let delivery = |name: &str, file: &str, signature: Option<String>| {
        let mut spec = json!({"file": file, "source": {"inline": text}, "sha256": sha});
        if let Some(s) = signature {
            spec["signature"] = json!(s);
        }
        json!({"apiVersion": "jukinet.io/v1alpha1", "kind": "FileDelivery",
               "metadata": {"name": name}, "spec": spec})
    };
    for object in [
        delivery(
            "signed",
            "code-table",
            Some(sign(&agency, "code-table", &sha)),
        ),
        delivery("unsigned", "notice", None),
        delivery(
            "forged",
            "allow-list",
            Some(sign(&forger, "allow-list", &sha)),
        ),
    ] {
        cluster.apply(&object, Some(&ns)).await.unwrap();
    }
    let key = hex(agency.public_key().as_ref());
    let _op = real_operator_with(
        &cluster,
        &ns,
        "2026-11-25T07:00",
        300,
        "-signed",
        &["--delivery-keys", &key],
    );
    let deliveries: Api<FileDelivery> = Api::namespaced(cluster.client.clone(), &ns);
    let settled = poll_until(
        "the signed delivery staged, the others failed",
        Duration::from_secs(240),
        || async {
            let s = delivery_status(&deliveries, "signed").await;
            let u = delivery_status(&deliveries, "unsigned").await;
            let f = delivery_status(&deliveries, "forged").await;
            s.fetched == 1
                && u.phase == Some(DeliveryPhase::Failed)
                && f.phase == Some(DeliveryPhase::Failed)
        },
    )
    .await;
    let statuses = [
        delivery_status(&deliveries, "signed").await,
        delivery_status(&deliveries, "unsigned").await,
        delivery_status(&deliveries, "forged").await,
    ];
    settled.unwrap_or_else(|e| panic!("{e}: {statuses:#?}"));
    for (status, why) in [
        (&statuses[1], "this node stages only signed deliveries"),
        (&statuses[2], "is not by a trusted key"),
    ] {
        let failure = &status.failures[0];
        assert_eq!(failure.node, format!("{ns}/pref-13"), "{status:?}");
        let message = failure.message.clone().unwrap_or_default();
        assert!(message.contains(why), "{message}");
    }
    // The node holds and stages only the signed file.
    let view = node_admin(&cluster, &ns, "pref-13", "/admin/v1/deliveries").await;
    assert_eq!(
        view["staged"],
        json!([{"file": "code-table", "sha256": sha}]),
        "{view}"
    );
    drop(ns_guard);
}

/// The example calendar's windows without batches, so that a night only stops and starts.
fn nights_only_calendar(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "jukinet.io/v1alpha1", "kind": "OperatingCalendar",
        "metadata": {"name": name},
        "spec": {
            "timeZone": "Asia/Tokyo", "closedWeekdays": ["Saturday", "Sunday"],
            "nationalHolidays": true,
            "onlineWindows": {
                "national": {"start": "07:00", "end": "22:00"},
                "prefecture": {"start": "07:30", "end": "21:30"},
                "cs": {"start": "08:00", "end": "21:00"},
            },
            "batches": [],
        },
    })
}

/// A nights-only calendar of the test's own (a unique name), applied; its guard deletes it.
async fn own_nights_only_calendar(
    cluster: &juki_tests::cluster::TestCluster,
    tag: &str,
) -> (String, juki_tests::Guard) {
    let calendar = unique_name(tag);
    let guard = cluster.guard("operatingcalendar", &calendar, None);
    cluster
        .apply(&nights_only_calendar(&calendar), None)
        .await
        .expect("calendar accepted");
    (calendar, guard)
}

/// The national server, prefecture `pref` and the CS of `municipality` below it, as (name,
/// spec without the calendar) in start order.
fn small_tree(pref: &str, municipality: &str) -> [(String, serde_json::Value); 3] {
    let pref_name = format!("pref-{pref}");
    [
        ("national".to_string(), json!({"tier": "National"})),
        (
            pref_name.clone(),
            json!({"tier": "Prefecture", "prefecture": pref, "upstream": {"name": "national"}}),
        ),
        (
            format!("cs-{municipality}"),
            json!({"tier": "CS", "municipality": municipality, "upstream": {"name": pref_name}}),
        ),
    ]
}

/// The image the pod template of node `name`'s Deployment runs, and those of its running pods.
async fn node_images(
    cluster: &juki_tests::cluster::TestCluster,
    ns: &str,
    name: &str,
) -> (String, Vec<String>) {
    use k8s_openapi::api::apps::v1::Deployment;
    let image_of = |spec: Option<&k8s_openapi::api::core::v1::PodSpec>| {
        spec.and_then(|s| s.containers.first()?.image.clone())
            .unwrap_or_default()
    };
    let deployment = Api::<Deployment>::namespaced(cluster.client.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Deployment {name}: {e}"));
    let template = image_of(
        deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref()),
    );
    let running = node_pods(cluster, ns, name)
        .await
        .iter()
        .map(|p| image_of(p.spec.as_ref()))
        .collect();
    (template, running)
}

/// The program staged on JukiNode `name` (its `jukinet.io/program` annotation).
async fn staged_program(
    nodes: &Api<juki_operator::api::JukiNode>,
    name: &str,
) -> Option<juki_operator::program::StagedProgram> {
    let node = nodes.get(name).await.unwrap();
    let text = node
        .metadata
        .annotations?
        .get(juki_operator::program::PROGRAM_ANNOTATION)?
        .clone();
    Some(serde_json::from_str(&text).unwrap())
}

/// Program delivery across a real tree on a fast clock: a new juki-node version (the image
/// under a second name) is staged on Tokyo's prefecture and CS while they serve, taken only at
/// Thursday's start, then staged on Osaka, which keeps its old image all Thursday and takes the
/// new one on Friday; a broken version (an image that cannot be pulled) fails at Kanagawa's
/// start, halts, and Kanagawa returns to its previous image at once; a rollback asked on Friday
/// stages the old image for the next start without touching the running pods.
#[tokio::test]
async fn a_program_reaches_a_real_tree_wave_by_wave_only_at_starts_and_a_broken_one_halts_and_rolls_back()
 {
    use juki_operator::api::{DeliveryPhase, FileDelivery, JukiNode, NodePhase};

    let Some(cluster) = require_real_node!() else {
        return;
    };
    cluster.install_crds().await;
    let ns_guard = cluster.namespace().await;
    let ns = ns_guard.name.clone();
    let old = juki_node_image();
    let new = old.replace(env!("CARGO_PKG_VERSION"), "next");
    juki_tests::real_node::tag_image(&format!("docker.io/{old}"), &format!("docker.io/{new}"));
    let broken = old.replace(env!("CARGO_PKG_VERSION"), "missing");

    let (calendar, _calendar) = own_nights_only_calendar(&cluster, "real-program").await;
    let node = |name: &str, spec: serde_json::Value| real_juki_node(name, &calendar, spec);
    let prefecture = |code: &str| {
        node(
            &format!("pref-{code}"),
            json!({"tier": "Prefecture", "prefecture": code, "upstream": {"name": "national"}}),
        )
    };
    for object in [
        node("national", json!({"tier": "National"})),
        prefecture("13"),
        prefecture("14"),
        prefecture("27"),
        node(
            "cs-131016",
            json!({"tier": "CS", "municipality": "131016", "upstream": {"name": "pref-13"}}),
        ),
    ] {
        cluster.apply(&object, Some(&ns)).await.unwrap();
    }

    // Wednesday 15:00, ×500 (an hour is 7.2 s): the nodes start with their own image.
    let _op = juki_tests::operator::OperatorProcess::start_with(
        &cluster,
        &ns,
        tokyo("2026-11-25T15:00"),
        500,
        "-program",
        &[
            "--final-exchange",
            "call",
            "--sqlite-volume",
            "pvc",
            "--readiness-timeout",
            "45",
        ],
    );
    let deliveries: Api<FileDelivery> = Api::namespaced(cluster.client.clone(), &ns);
    let nodes: Api<JukiNode> = Api::namespaced(cluster.client.clone(), &ns);
    let status_of = |name: &'static str| delivery_status(&deliveries, name);
    let juki = |args: &[&str]| {
        let (ok, out, err) = juki_tests::operator::kubectl_juki(&cluster, args);
        assert!(ok, "kubectl juki {args:?}: {err}");
        out
    };
    for name in ["pref-13", "pref-14", "pref-27", "cs-131016"] {
        until_online(&nodes, name).await.unwrap();
    }
    let program = |name: &str, image: &str, prefectures: serde_json::Value, canaries| {
        json!({
            "apiVersion": "jukinet.io/v1alpha1", "kind": "FileDelivery",
            "metadata": {"name": name},
            "spec": {"program": {"image": image}, "targets": {"prefectures": prefectures},
                     "canaries": canaries},
        })
    };
    for object in [
        program(
            "upgrade",
            &new,
            json!(["13", "27"]),
            json!({"prefectures": ["13"]}),
        ),
        program("broken", &broken, json!(["14"]), json!({})),
    ] {
        cluster.apply(&object, Some(&ns)).await.unwrap();
    }

    // Wednesday afternoon: the canary wave (Tokyo's prefecture and CS) is staged, and keeps
    // serving with its own image.
    let staged = poll_until("the upgrade staged on Tokyo", WAIT, || async {
        status_of("upgrade").await.fetched == 2 && status_of("broken").await.fetched == 1
    })
    .await;
    let upgrade = status_of("upgrade").await;
    staged.unwrap_or_else(|e| panic!("{e}: {upgrade:?}"));
    assert_eq!((upgrade.pending, upgrade.applied), (1, 0), "{upgrade:?}");
    let tokyo_staged = staged_program(&nodes, "pref-13").await.unwrap();
    assert_eq!(
        (tokyo_staged.image.as_str(), tokyo_staged.previous.as_str()),
        (new.as_str(), old.as_str())
    );
    assert_eq!(staged_program(&nodes, "pref-27").await, None);
    for name in ["pref-13", "cs-131016", "pref-14"] {
        let (template, pods) = node_images(&cluster, &ns, name).await;
        assert_eq!(
            (template.as_str(), pods),
            (old.as_str(), vec![old.clone()]),
            "{name} keeps its image while it serves"
        );
    }

    // Thursday: Tokyo starts with the new version; then Osaka is staged and keeps serving with
    // the old one all day.
    let thursday = poll_until(
        "Tokyo's wave applied and Osaka staged",
        Duration::from_secs(300),
        || async {
            let u = status_of("upgrade").await;
            u.applied == 2 && u.fetched == 1
        },
    )
    .await;
    let upgrade = status_of("upgrade").await;
    thursday.unwrap_or_else(|e| panic!("{e}: {upgrade:?}"));
    for name in ["pref-13", "cs-131016"] {
        let (template, pods) = node_images(&cluster, &ns, name).await;
        assert_eq!(
            (template.as_str(), pods),
            (new.as_str(), vec![new.clone()]),
            "{name}"
        );
    }
    let osaka = nodes.get_status("pref-27").await.unwrap().status.unwrap();
    assert_eq!(osaka.phase, Some(NodePhase::Online), "{osaka:?}");
    assert_eq!(
        node_images(&cluster, &ns, "pref-27").await,
        (old.clone(), vec![old.clone()]),
        "Osaka, staged while Online, keeps its image until its next start"
    );

    // Kanagawa took the broken version at Thursday's start: it never became ready, so the
    // delivery halted and Kanagawa went back to its previous image at once.
    let halted = poll_until(
        "the broken program halted",
        Duration::from_secs(240),
        || async { status_of("broken").await.phase == Some(DeliveryPhase::Failed) },
    )
    .await;
    let failed = status_of("broken").await;
    halted.unwrap_or_else(|e| panic!("{e}: {failed:?}"));
    assert_eq!(failed.failed, 1, "{failed:?}");
    let why = failed.failures[0].message.clone().unwrap_or_default();
    assert!(
        failed.failures[0].node.ends_with("/pref-14") && why.contains("readiness timeout"),
        "{failed:?}"
    );
    let back = staged_program(&nodes, "pref-14").await.unwrap();
    assert_eq!((back.image.as_str(), back.withdrawn), (old.as_str(), true));
    until_online(&nodes, "pref-14").await.unwrap();
    let (template, _) = node_images(&cluster, &ns, "pref-14").await;
    assert_eq!(template, old, "Kanagawa back on its previous image");

    // Friday: Osaka starts with it; the upgrade is delivered.
    let delivered = poll_until(
        "the upgrade delivered",
        Duration::from_secs(300),
        || async { status_of("upgrade").await.phase == Some(DeliveryPhase::Delivered) },
    )
    .await;
    let upgrade = status_of("upgrade").await;
    delivered.unwrap_or_else(|e| panic!("{e}: {upgrade:?}"));
    assert_eq!((upgrade.applied, upgrade.targets), (3, 3));
    until_online(&nodes, "pref-27").await.unwrap();
    assert_eq!(
        node_images(&cluster, &ns, "pref-27").await,
        (new.clone(), vec![new.clone()])
    );
    let osaka = nodes.get_status("pref-27").await.unwrap().status.unwrap();
    assert_eq!(
        osaka.image.as_deref(),
        Some(new.as_str()),
        "its own status says so"
    );
    let report = juki(&["delivery", "status", "upgrade", "-n", &ns]);
    assert!(
        report.contains(&format!("program {new} Delivered")),
        "{report}"
    );

    // A rollback asked on Friday once all three serve: the old image is staged back for the
    // next start, and the running pods are left alone. (A node still starting when it is asked
    // takes the old image at that start.)
    for name in ["pref-13", "cs-131016"] {
        until_online(&nodes, name).await.unwrap();
    }
    juki(&["delivery", "rollback", "upgrade", "-n", &ns]);
    let rolled = poll_until("the upgrade rolled back", WAIT, || async {
        status_of("upgrade").await.phase == Some(DeliveryPhase::RolledBack)
    })
    .await;
    let upgrade = status_of("upgrade").await;
    rolled.unwrap_or_else(|e| panic!("{e}: {upgrade:?}"));
    assert!(upgrade.withdrawing.is_empty(), "{upgrade:?}");
    for name in ["pref-13", "cs-131016", "pref-27"] {
        let staged = staged_program(&nodes, name).await.unwrap();
        assert_eq!(
            (staged.image.as_str(), staged.withdrawn),
            (old.as_str(), true),
            "{name}"
        );
        let (template, _) = node_images(&cluster, &ns, name).await;
        assert_eq!(
            template, new,
            "{name} runs the new version until its next start"
        );
    }
}

/// POSTs one resident update at CS `cs` (municipality `code`) through the API server's service
/// proxy, as the municipality's system would.
async fn post_update(
    cluster: &juki_tests::cluster::TestCluster,
    ns: &str,
    cs: (&str, &str),
    key: &str,
    resident: &str,
) {
    post_update_in_trace(cluster, ns, cs, (key, resident), None).await;
}

/// As [`post_update`], inside the caller's trace when given a `traceparent`.
async fn post_update_in_trace(
    cluster: &juki_tests::cluster::TestCluster,
    ns: &str,
    (cs, code): (&str, &str),
    (key, resident): (&str, &str),
    traceparent: Option<&str>,
) {
    let body = json!([{
        "resident_code": resident, "name": "山田 花子", "name_kana": "ヤマダ ハナコ",
        "birth_date": "1985-06-01", "sex": "女", "address": format!("{key}番地"),
        "municipality_code": code, "reason": "転入", "change_date": "2026-11-25",
    }]);
    let uri = format!("/api/v1/namespaces/{ns}/services/{cs}:8080/proxy/v1/updates");
    let mut request = http::Request::post(uri)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .header("x-juki-identity", format!("muni-{code}"));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let request = request.body(body.to_string().into_bytes()).unwrap();
    cluster
        .client
        .request_text(request)
        .await
        .unwrap_or_else(|e| panic!("POST /v1/updates {key} at {cs}: {e}"));
}

/// Spans leave the processes: given `--otlp-endpoint`, the operator exports a span per reconcile
/// and hands the endpoint to the pods it runs; an update posted at the CS pod inside the
/// municipality's trace is one trace in a real OpenTelemetry Collector, from the CS pod through
/// the prefecture's to the national pod, each span the child of the one before.
#[tokio::test]
async fn one_update_is_one_trace_from_the_cs_pod_through_the_prefecture_to_the_national_pod_in_a_real_collector()
 {
    use juki_tests::collector::{Collector, ExportedSpan};

    let Some(cluster) = require_real_node!() else {
        return;
    };
    let Some(otelcol) = juki_tests::cluster::require_built("otelcol") else {
        return;
    };
    cluster.install_crds().await;
    let ns_guard = cluster.namespace().await;
    let ns = ns_guard.name.clone();
    let collector = Collector::start(&otelcol).await;
    let (calendar, _calendar) = own_nights_only_calendar(&cluster, "real-traces").await;
    // Saga and its capital's CS: names no other real-pod test has.
    for (name, spec) in small_tree("41", "412015") {
        let node = real_juki_node(&name, &calendar, spec);
        cluster.apply(&node, Some(&ns)).await.unwrap();
    }
    let endpoint = collector.endpoint();
    let _op = real_operator_with(
        &cluster,
        &ns,
        "2026-11-25T10:00",
        1,
        "-traces",
        &["--otlp-endpoint", &endpoint],
    );
    let nodes: Api<juki_operator::api::JukiNode> = Api::namespaced(cluster.client.clone(), &ns);
    for name in ["national", "pref-41", "cs-412015"] {
        until_online(&nodes, name).await.unwrap();
    }

    // The municipality's system sends the update inside a trace of its own.
    let (trace_id, caller_span) = ("5a1e2c3d4b5f60718293a4b5c6d7e8f9", "0123456789abcdef");
    let traceparent = format!("00-{trace_id}-{caller_span}-01");
    post_update_in_trace(
        &cluster,
        &ns,
        ("cs-412015", "412015"),
        ("traced", "12345678903"),
        Some(&traceparent),
    )
    .await;

    let of_trace = || -> Vec<ExportedSpan> {
        collector
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    };
    let exported = poll_until("the update's spans of all three tiers", WAIT, || async {
        of_trace().len() >= 3
    })
    .await;
    exported.unwrap_or_else(|e| panic!("{e}: {:#?}\n{}", of_trace(), collector.log()));
    let trace = of_trace();
    let at = |node: &str| -> &ExportedSpan {
        let found: Vec<&ExportedSpan> = trace
            .iter()
            .filter(|s| s.resource.get("juki.node").map(String::as_str) == Some(node))
            .collect();
        assert_eq!(found.len(), 1, "one span of {node}: {trace:#?}");
        found[0]
    };
    let (cs, pref, national) = (at("cs-412015"), at("pref-41"), at("national"));
    assert_eq!(trace.len(), 3, "{trace:#?}");
    for (span, tier) in [(cs, "cs"), (pref, "prefecture"), (national, "national")] {
        assert_eq!(span.service, "juki-node", "{span:?}");
        assert_eq!(span.resource["juki.tier"], tier, "{span:?}");
        assert_eq!(span.status, 0, "{span:?}");
    }
    assert_eq!((cs.name.as_str(), cs.kind), ("record update", 2), "{cs:?}");
    assert_eq!(
        cs.parent_span_id, caller_span,
        "under the caller's span: {cs:?}"
    );
    assert_eq!(cs.attributes["juki.municipality"], "412015", "{cs:?}");
    for (span, parent) in [(pref, cs), (national, pref)] {
        assert_eq!(
            (span.name.as_str(), span.kind),
            ("apply relayed update", 5),
            "{span:?}"
        );
        assert_eq!(
            span.parent_span_id, parent.span_id,
            "{span:?} under {parent:?}"
        );
    }
    assert_eq!(pref.attributes["juki.sender"], "cs-412015", "{pref:?}");
    assert_eq!(
        national.attributes["juki.sender"], "cs-412015",
        "the origin: {national:?}"
    );

    // A reconcile is a span of the operator's, naming its node.
    let reconciles: Vec<ExportedSpan> = collector
        .spans()
        .into_iter()
        .filter(|s| s.service == "juki-operator" && s.name == "reconcile JukiNode")
        .collect();
    for node in ["national", "pref-41", "cs-412015"] {
        assert!(
            reconciles
                .iter()
                .any(
                    |s| s.attributes.get("juki.node").map(String::as_str) == Some(node)
                        && s.attributes.get("k8s.namespace.name") == Some(&ns)
                        && s.parent_span_id.is_empty()
                        && s.trace_id.len() == 32
                ),
            "a reconcile span of {node}: {reconciles:#?}"
        );
    }
    drop(ns_guard);
}

/// The stop of a real prefecture whose upstream is unreachable: its node service answers the
/// final request `done: false` with the updates it holds, and the operator records that answer
/// (outcome Held, the node's reason and count) and warns, instead of taking any 2xx as received.
#[tokio::test]
async fn a_real_prefecture_cut_off_from_the_national_server_answers_done_false_and_the_operator_says_what_is_held()
 {
    use juki_operator::api::{JukiNode, NodePhase};
    use k8s_openapi::api::apps::v1::Deployment;

    let Some(cluster) = require_real_node!() else {
        return;
    };
    cluster.install_crds().await;
    let ns_guard = cluster.namespace().await;
    let ns = ns_guard.name.clone();
    let (calendar, _calendar) = own_nights_only_calendar(&cluster, "real-held").await;
    // Fukuoka, and Kitakyushu's CS: names no other real-pod test has.
    for (name, spec) in small_tree("40", "401005") {
        let node = real_juki_node(&name, &calendar, spec);
        cluster.apply(&node, Some(&ns)).await.unwrap();
    }
    // Wednesday 20:00, ×20: the CS stops at 21:00 (180 s), the prefecture at 21:30 (+90 s).
    let _op = real_operator(&cluster, &ns, "2026-11-25T20:00", 20, "-held");
    let nodes: Api<JukiNode> = Api::namespaced(cluster.client.clone(), &ns);
    for name in ["national", "pref-40", "cs-401005"] {
        until_online(&nodes, name).await.unwrap();
    }
    let cs = ("cs-401005", "401005");
    post_update(&cluster, &ns, cs, "first", "12345678903").await;
    let first_arrived = poll_until("the first update at the national server", WAIT, || async {
        node_text(&cluster, &ns, "national", "/metrics")
            .await
            .lines()
            .any(|l| l == "juki_node_updates_total{stage=\"applied\"} 1")
    })
    .await;
    let relay = node_admin(&cluster, &ns, "pref-40", "/admin/v1/relay").await;
    first_arrived.unwrap_or_else(|e| panic!("{e}: the prefecture's relay {relay}"));

    // The national server goes away mid-day: suspended (the operator leaves it be), its pods
    // scaled away by hand. The second update reaches the prefecture and waits in its outbox.
    let patch = json!({"spec": {"suspend": true}});
    nodes
        .patch(
            "national",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    poll_until("the national node suspended", WAIT, || async {
        nodes
            .get_status("national")
            .await
            .ok()
            .and_then(|n| n.status)
            .and_then(|s| s.reason)
            .as_deref()
            == Some("Suspended")
    })
    .await
    .unwrap();
    cluster
        .kubectl(&["-n", &ns, "scale", "deployment", "national", "--replicas=0"])
        .await;
    let deployments: Api<Deployment> = Api::namespaced(cluster.client.clone(), &ns);
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    poll_until("the national pods gone", WAIT, || async {
        let listed = pods
            .list(&kube::api::ListParams::default().labels("jukinet.io/node=national"))
            .await
            .unwrap();
        listed.items.is_empty()
    })
    .await
    .unwrap();
    post_update(&cluster, &ns, cs, "second", "98765432103").await;
    poll_until("the second update held at the prefecture", WAIT, || async {
        node_admin(&cluster, &ns, "pref-40", "/admin/v1/relay").await["outbox"]["pending"] == 1
    })
    .await
    .unwrap();

    // 21:00 the CS stops (its upstream is there: done), 21:30 the prefecture: its final answer
    // is not done, and says what it holds.
    let answered = poll_until(
        "the prefecture's final answer",
        Duration::from_secs(300),
        || async {
            nodes
                .get_status("pref-40")
                .await
                .ok()
                .and_then(|n| n.status)
                .and_then(|s| s.final_answer)
                .is_some_and(|a| a.date == "2026-11-25")
        },
    )
    .await;
    let status = nodes.get_status("pref-40").await.unwrap().status.unwrap();
    answered.unwrap_or_else(|e| panic!("{e}: {status:?}"));
    let answer = status.final_answer.clone().unwrap();
    assert_eq!(answer.outcome, "Held", "{answer:?}");
    assert!(
        answer
            .message
            .contains("1 update(s) held for tomorrow (confirmed seq 1 of 2)"),
        "{answer:?}"
    );
    let cs_answer = nodes
        .get_status("cs-401005")
        .await
        .unwrap()
        .status
        .and_then(|s| s.final_answer)
        .unwrap();
    assert_eq!(cs_answer.outcome, "Received", "{cs_answer:?}");
    // The stop goes on: the prefecture leaves Draining, and the held update waits on its claim.
    poll_until("the prefecture stopped", WAIT, || async {
        nodes
            .get_status("pref-40")
            .await
            .ok()
            .and_then(|n| n.status)
            .and_then(|s| s.phase)
            .is_some_and(|p| matches!(p, NodePhase::Stopping | NodePhase::Offline))
    })
    .await
    .unwrap();
    let events: serde_json::Value = serde_json::from_str(
        &cluster
            .kubectl(&["-n", &ns, "get", "events.events.k8s.io", "-o", "json"])
            .await,
    )
    .unwrap();
    let warnings: Vec<String> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["regarding"]["name"] == "pref-40" && e["type"] == "Warning")
        .map(|e| {
            format!(
                "{} {}",
                e["reason"].as_str().unwrap_or(""),
                e["note"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("UpdatesHeld ") && w.contains("1 update(s) held")),
        "{warnings:#?}"
    );
    assert!(deployments.get_opt("pref-40").await.unwrap().is_some());
}

/// GET `path` of node `name` that serves HTTPS, through the API server's service proxy (public
/// routes only: the proxy shows no client certificate).
async fn tls_node_text(
    cluster: &juki_tests::cluster::TestCluster,
    ns: &str,
    name: &str,
    path: &str,
) -> String {
    let uri = format!("/api/v1/namespaces/{ns}/services/https:{name}:8080/proxy{path}");
    let request = http::Request::get(uri).body(Vec::new()).unwrap();
    cluster
        .client
        .request_text(request)
        .await
        .unwrap_or_else(|e| panic!("GET {path} of {ns}/{name} over HTTPS: {e}"))
}

/// A node chart (`juki-national` or `juki-prefecture`) installed as release `release` into
/// `ns` with `values` (JSON is YAML), as a platform team would.
async fn install_node_chart(
    cluster: &juki_tests::cluster::TestCluster,
    release: &str,
    chart: &str,
    ns: &str,
    values: &serde_json::Value,
) {
    let file = std::env::temp_dir().join(format!("{}-{release}.json", unique_name("values")));
    std::fs::write(&file, values.to_string()).unwrap();
    let chart = juki_tests::cluster::repo_root().join("charts").join(chart);
    let (chart, path) = (chart.display().to_string(), file.display().to_string());
    let args = ["install", release, &chart, "-n", ns, "-f", &path];
    let (ok, out, err) = cluster.run("helm", &args, None).await;
    let _ = std::fs::remove_file(&file);
    assert!(ok, "helm install {release}: {err}\n{out}");
}

/// How the NetworkPolicies of `namespace` see each pod there, by the name in its
/// `label` (the node's name, the operator's app name, ...).
async fn endpoints(
    cluster: &juki_tests::cluster::TestCluster,
    namespace: &str,
    label: &str,
) -> std::collections::BTreeMap<String, juki_tests::network_policy::Endpoint> {
    use k8s_openapi::api::core::v1::Namespace;
    let ns = Api::<Namespace>::all(cluster.client.clone())
        .get(namespace)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), namespace);
    let listed = pods.list(&Default::default()).await.unwrap().items;
    listed
        .into_iter()
        .filter_map(|pod| {
            let labels = pod.metadata.labels.unwrap_or_default();
            let endpoint = juki_tests::network_policy::Endpoint {
                namespace: namespace.to_owned(),
                labels: labels.clone(),
                namespace_labels: ns.metadata.labels.clone().unwrap_or_default(),
            };
            Some((labels.get(label)?.clone(), endpoint))
        })
        .collect()
}

/// The safe default install from the charts, for real: the operator from its chart with default
/// values (plain HTTP not allowed) and its own certificate; the national server and a
/// prefecture with two CSs from the `juki-national` and `juki-prefecture` charts with
/// `tls.enabled`, their certificates in Secrets. HTTPS probes pass; updates posted at each CS
/// with the municipality's client certificate are relayed pod to pod over mutual TLS up to the
/// national server; callers without a certificate or without TLS are turned away; the operator's
/// final requests go straight to the nodes with its client certificate; and the charts'
/// NetworkPolicies, read against the real pods' labels, admit each node's callers in the tree
/// and nobody else.
#[tokio::test]
async fn a_tree_installed_from_the_node_charts_serves_mutual_tls_between_real_pods_under_the_chart_default_operator()
 {
    use juki_operator::api::JukiNode;
    use juki_tests::network_policy::{Endpoint, admits};
    use k8s_openapi::api::networking::v1::NetworkPolicy;

    let Some(cluster) = require_real_node!() else {
        return;
    };
    cluster.install_crds().await;
    let op_ns = cluster.namespace().await;
    let ns_guard = cluster.namespace().await;
    let ns = ns_guard.name.clone();
    let calendar = unique_name("real-tls");
    let _calendar = cluster.guard("operatingcalendar", &calendar, None);

    // Kagoshima and two of its cities: names no other real-pod test has.
    let (city, town) = ("462012", "462039");
    let css = [format!("cs-{city}"), format!("cs-{town}")];
    let pki = juki_tests::pki::Pki::new("tls-tree");
    for name in ["national", "pref-46", &css[0], &css[1]] {
        let dns = vec![format!("{name}.{ns}.svc")];
        let secret = pki.secret(&format!("{name}-tls"), name, &dns);
        cluster.apply(&secret, Some(&ns)).await.unwrap();
    }
    for code in [city, town] {
        let muni = pki.secret(&format!("muni-{code}"), &format!("muni-{code}"), &[]);
        cluster.apply(&muni, Some(&ns)).await.unwrap();
    }
    let operator_tls = pki.secret("juki-operator-tls", "operator", &[]);
    cluster.apply(&operator_tls, Some(&op_ns)).await.unwrap();

    // The operator's chart, its defaults but the placement, the namespace and a fast clock:
    // Wednesday 19:30, ×20, so the CSs stop at 21:00 (270 s: the tree starts and the updates
    // are posted well before, even on a loaded machine) and the prefecture at 21:30.
    let sets = [
        "replicaCount=1".to_string(),
        format!("args.clock=fast:{}\\,x20", tokyo("2026-11-25T19:30")),
        "nodeTls.secretName=juki-operator-tls".to_string(),
    ];
    let (release, _operator) = install_operator_chart(&cluster, &op_ns, &ns, &sets).await;

    // The node charts with mutual TLS, pointed at that operator release, their pods on the
    // real node; the municipalities' systems are the NetworkPolicies' extra peers.
    let operator_sa = format!("{release}-juki-operator");
    let node = chart_node_values();
    let common = json!({
        "tls": {"enabled": true},
        "operator": {"namespace": op_ns.name, "serviceAccount": operator_sa,
                     "clusterRole": format!("{operator_sa}-final-request")},
    });
    let national = json!({"calendar": {"name": calendar, "spec": {"batches": []}}, "node": node});
    install_node_chart(
        &cluster,
        "juki-national",
        "juki-national",
        &ns,
        &merged(common.clone(), national),
    )
    .await;
    let municipal_system = json!({"jukinet.io/test-role": "municipal-system"});
    let kagoshima = json!({
        "prefecture": "46", "calendar": calendar, "national": {"namespace": ns},
        "prefectureNode": node, "cs": node,
        "municipalities": [
            {"code": city, "name": "鹿児島市", "kana": "かごしまし"},
            {"code": town, "name": "鹿屋市", "kana": "かのやし"},
        ],
        "networkPolicy": {"extraFrom": [{"podSelector": {"matchLabels": municipal_system}}]},
    });
    install_node_chart(
        &cluster,
        "juki-pref-46",
        "juki-prefecture",
        &ns,
        &merged(common, kagoshima),
    )
    .await;

    // Online only once the HTTPS readiness probes pass.
    let nodes: Api<JukiNode> = Api::namespaced(cluster.client.clone(), &ns);
    for name in ["national", "pref-46", &css[0], &css[1]] {
        if let Err(e) = until_online(&nodes, name).await {
            let status = nodes.get_status(name).await.ok().and_then(|n| n.status);
            panic!("{e}: {status:?}");
        }
    }

    // From a pod: each municipality's system posts an update at its CS with its certificate; a
    // caller without one is refused at the prefecture, and plain HTTP gets no answer at all.
    let update = |code: &str, resident: &str, name: &str, kana: &str| {
        json!([{
            "resident_code": resident, "name": name, "name_kana": kana,
            "birth_date": "1970-01-23", "sex": "女", "address": "山下町11-1",
            "municipality_code": code, "reason": "転入", "change_date": "2026-11-25",
        }])
    };
    let script = format!(
        "post() {{
           curl -fsS --retry 10 --retry-connrefused --retry-delay 1 \
             --cert /tls/$1/tls.crt --key /tls/$1/tls.key --cacert /tls/$1/ca.crt \
             -H 'content-type: application/json' -H \"idempotency-key: tls-$1\" \
             --data-binary \"$2\" https://cs-$1.{ns}.svc:8080/v1/updates || exit 1
           echo
         }}
         post {city} \"$BODY_CITY\"
         post {town} \"$BODY_TOWN\"
         code=$(curl -s -o /dev/null -w '%{{http_code}}' --cacert /tls/{city}/ca.crt -X POST \
           -H 'content-type: application/json' -d '{{}}' https://pref-46.{ns}.svc:8080/v1/relay)
         echo \"anonymous=$code\"
         curl -s -m 5 -o /dev/null http://pref-46.{ns}.svc:8080/healthz
         echo \"plain=$?\""
    );
    let mount =
        |code: &str| json!({"name": code, "mountPath": format!("/tls/{code}"), "readOnly": true});
    let volume =
        |code: &str| json!({"name": code, "secret": {"secretName": format!("muni-{code}")}});
    let client = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "muni-client", "labels": municipal_system},
        "spec": on_real_node(json!({
            "restartPolicy": "Never",
            "containers": [{
                "name": "client", "image": juki_node_image(), "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", script],
                "env": [
                    {"name": "BODY_CITY", "value": update(city, "12345678903", "西郷 隆子", "サイゴウ タカコ").to_string()},
                    {"name": "BODY_TOWN", "value": update(town, "23456789013", "大山 巌子", "オオヤマ イワコ").to_string()},
                ],
                "volumeMounts": [mount(city), mount(town)],
            }],
            "volumes": [volume(city), volume(town)],
        })),
    });
    cluster.apply(&client, Some(&ns)).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let (phase, log) = finished(&pods, "muni-client", WAIT).await;
    let cs = nodes.get_status(&css[0]).await.unwrap().status;
    assert_eq!(phase, "Succeeded", "{log}\nthe CS: {cs:?}");
    assert_eq!(
        log.matches("\"results\"").count(),
        2,
        "both CSs took their update: {log}"
    );
    assert!(log.contains("anonymous=401"), "{log}");
    // A plain request to a TLS port gets no HTTP answer (curl exits non-zero).
    assert!(!log.contains("plain=0"), "{log}");

    // Relayed CS → prefecture → national over mutual TLS between the pods.
    let applied = "juki_node_updates_total{stage=\"applied\"} 2";
    let arrived = poll_until(
        "both updates applied at the national server",
        WAIT,
        || async {
            tls_node_text(&cluster, &ns, "national", "/metrics")
                .await
                .lines()
                .any(|l| l == applied)
        },
    )
    .await;
    let pref = tls_node_text(&cluster, &ns, "pref-46", "/metrics").await;
    arrived.unwrap_or_else(|e| panic!("{e}: the prefecture's metrics {pref}"));

    // The charts' NetworkPolicies against the labels of the real pods: each node admits its
    // callers in the tree, the operator and the listed peers; a stranger, a CS of another
    // prefecture and a CS calling its sibling are not admitted.
    let policies: Vec<NetworkPolicy> = Api::namespaced(cluster.client.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let in_tree = endpoints(&cluster, &ns, "jukinet.io/node").await;
    let operator =
        endpoints(&cluster, &op_ns, "app.kubernetes.io/name").await["juki-operator"].clone();
    let client = endpoints(&cluster, &ns, "jukinet.io/test-role").await["municipal-system"].clone();
    let stranger = Endpoint {
        labels: [("app".to_string(), "stranger".to_string())].into(),
        ..client.clone()
    };
    let mut other_prefecture = in_tree[&css[0]].clone();
    other_prefecture
        .labels
        .insert("jukinet.io/prefecture".into(), "40".into());
    let pod = |name: &str| {
        in_tree
            .get(name)
            .unwrap_or_else(|| panic!("no pod of {name}: {in_tree:?}"))
    };
    let expected = [
        ("national", pod("pref-46"), true),
        ("national", &operator, true),
        ("national", pod(&css[0]), false),
        ("national", &client, false),
        ("national", &stranger, false),
        ("pref-46", pod(&css[0]), true),
        ("pref-46", pod(&css[1]), true),
        ("pref-46", &operator, true),
        ("pref-46", &client, true),
        ("pref-46", &other_prefecture, false),
        ("pref-46", &stranger, false),
        (&css[0], &client, true),
        (&css[0], &operator, true),
        (&css[0], pod("pref-46"), false),
        (&css[0], pod(&css[1]), false),
        (&css[0], &stranger, false),
    ];
    for (target, source, admitted) in expected {
        assert_eq!(
            admits(&policies, pod(target), source, 8080),
            admitted,
            "{target} admits {:?}: {policies:?}",
            source.labels
        );
    }

    // The operator's final requests, straight to the nodes with its certificate.
    for name in [&css[0], &css[1], "pref-46"] {
        let answered = poll_until(
            &format!("{name}'s final answer"),
            Duration::from_secs(300),
            || async {
                nodes
                    .get_status(name)
                    .await
                    .ok()
                    .and_then(|n| n.status)
                    .and_then(|s| s.final_answer)
                    .is_some_and(|a| a.date == "2026-11-25")
            },
        )
        .await;
        let status = nodes.get_status(name).await.unwrap().status.unwrap();
        answered.unwrap_or_else(|e| panic!("{e}: {status:?}"));
        let answer = status.final_answer.unwrap();
        assert_eq!(answer.outcome, "Received", "{name}: {answer:?}");
    }
}

/// A national node on PostgreSQL, the database in a pod of its own and its URL in a Secret,
/// with two replicas: both serve one database (their migrations run one at a time), Friday
/// night's backup Job dumps it with the image's pg_dump onto the node's backups claim, and the
/// dump restores from that claim into another database.
#[tokio::test]
async fn a_node_on_postgresql_serves_from_two_replicas_and_its_backup_job_dumps_to_its_own_claim() {
    use juki_operator::api::JukiNode;

    let Some(cluster) = require_real_node!() else {
        return;
    };
    cluster.install_crds().await;
    let ns_guard = cluster.namespace().await;
    let ns = ns_guard.name.clone();
    let postgres = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pg", "labels": {"app": "pg"}},
        "spec": on_real_node(json!({
            "containers": [{
                "name": "postgres",
                "image": format!("jukinet/test-postgres:{}", env!("CARGO_PKG_VERSION")),
                "imagePullPolicy": "Never",
                "env": [{"name": "POSTGRES_PASSWORD", "value": "juki-secret"}],
                "readinessProbe": {"exec": {"command": ["pg_isready", "-h", "127.0.0.1"]},
                                   "periodSeconds": 1},
                "volumeMounts": [{"name": "pgdata", "mountPath": "/var/lib/pg"}],
            }],
            "volumes": [{"name": "pgdata", "emptyDir": {}}],
        })),
    });
    let service = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "pg"},
        "spec": {"selector": {"app": "pg"}, "ports": [{"port": 5432}]},
    });
    let url = format!("postgres://postgres:juki-secret@pg.{ns}.svc:5432/postgres");
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "national-db"},
        "stringData": {"url": url},
    });
    for object in [postgres, service, secret] {
        cluster.apply(&object, Some(&ns)).await.unwrap();
    }
    let calendar = unique_name("real-pg");
    let _calendar = cluster.guard("operatingcalendar", &calendar, None);
    cluster
        .apply_yaml(
            &juki_tests::cluster::read_repo_file("examples/calendar.yaml")
                .replace("name: japan", &format!("name: {calendar}")),
            None,
        )
        .await
        .expect("calendar accepted");
    let spec = json!({
        "tier": "National", "replicas": 2,
        "database": {"kind": "Postgres", "postgres": {"urlSecretRef": {"name": "national-db", "key": "url"}}},
    });
    let national = real_juki_node("national", &calendar, spec);
    cluster.apply(&national, Some(&ns)).await.unwrap();

    // Friday 21:30, ×20: the window closes at 22:00 (90 s), then Friday's three batches.
    let _op = real_operator(&cluster, &ns, "2026-11-27T21:30", 20, "-pg");
    let nodes: Api<JukiNode> = Api::namespaced(cluster.client.clone(), &ns);
    let serving = until_online(&nodes, "national").await;
    let status = nodes.get_status("national").await.unwrap().status;
    serving.unwrap_or_else(|e| panic!("{e}: {status:?}"));
    // Online means every replica ready: both on the one database.
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(cluster.client.clone(), &ns);
    let ready = deployments.get("national").await.unwrap().status.unwrap();
    assert_eq!(ready.ready_replicas, Some(2), "{ready:?}");

    let done = poll_until(
        "Friday's batches done",
        Duration::from_secs(300),
        || async {
            nodes
                .get_status("national")
                .await
                .ok()
                .and_then(|n| n.status)
                .and_then(|s| s.last_batch)
                .is_some_and(|b| b.date == "2026-11-27")
        },
    )
    .await;
    let status = nodes.get_status("national").await.unwrap().status.unwrap();
    done.unwrap_or_else(|e| panic!("{e}: {status:?}"));
    let last = status.last_batch.unwrap();
    assert_eq!(last.outcome, "Succeeded", "{last:?}");

    // The dump is on the backups claim and restores into a fresh database of the same server.
    let script = format!(
        "set -e
         manifest=$(ls /backups/*.manifest.json)
         grep -q '\"postgres-pg_dump\"' \"$manifest\"
         createdb -h pg.{ns}.svc -U postgres restored
         juki-node restore --manifest \"$manifest\" \
           --database-url postgres://postgres:juki-secret@pg.{ns}.svc:5432/restored
         echo restored-ok"
    );
    let restore = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "restore"},
        "spec": on_real_node(json!({
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": true, "fsGroup": 65532},
            "containers": [{
                "name": "restore", "image": juki_node_image(), "imagePullPolicy": "Never",
                "command": ["/bin/sh", "-c", script],
                "env": [{"name": "PGPASSWORD", "value": "juki-secret"}],
                "volumeMounts": [{"name": "backups", "mountPath": "/backups", "readOnly": true}],
            }],
            "volumes": [
                {"name": "backups", "persistentVolumeClaim": {"claimName": "national-backups"}},
            ],
        })),
    });
    cluster.apply(&restore, Some(&ns)).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &ns);
    let (phase, log) = finished(&pods, "restore", WAIT).await;
    assert_eq!(phase, "Succeeded", "{log}");
    assert!(log.trim_end().ends_with("restored-ok"), "{log}");
}

/// The operator from its chart as two real pods under leader election: the leader pod is
/// killed in the middle of a start wave, the standby takes the Lease over, and the wave goes on
/// in dependency order (a node Online only after its upstream) until the whole tree serves.
#[tokio::test]
async fn killing_the_leader_pod_mid_wave_hands_the_wave_to_the_standby_in_order() {
    use juki_operator::api::{JukiNode, NodePhase};
    use k8s_openapi::api::coordination::v1::Lease;

    let Some(cluster) = require_real_node!() else {
        return;
    };
    cluster.install_crds().await;
    let op_ns = cluster.namespace().await;
    let ns_guard = cluster.namespace().await;
    let ns = ns_guard.name.clone();
    let (calendar, _calendar) = own_nights_only_calendar(&cluster, "real-leader").await;
    // Oita and its city's CS: names no other real-pod test has.
    let tree = small_tree("44", "442011");
    for (name, spec) in &tree {
        let node = real_juki_node(name, &calendar, spec.clone());
        cluster.apply(&node, Some(&ns)).await.unwrap();
    }
    let recording = juki_tests::operator::Recording::start(&cluster, &ns);

    // Wednesday 06:50, ×30: the national server starts at 07:00 (20 s), the prefecture at
    // 07:30 (+60 s), the CS at 08:00 (+60 s).
    let sets = [
        format!("args.clock=fast:{}\\,x30", tokyo("2026-11-25T06:50")),
        "args.allowPlainHttp=true".to_string(),
    ];
    let _operator = install_operator_chart(&cluster, &op_ns, &ns, &sets).await;

    // Mid-wave: the national server serves, the prefecture does not yet.
    let nodes: Api<JukiNode> = Api::namespaced(cluster.client.clone(), &ns);
    until_online(&nodes, "national").await.unwrap();
    let leases: Api<Lease> = Api::namespaced(cluster.client.clone(), &op_ns);
    let holder = || async {
        leases
            .get_opt("juki-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    };
    let leader = holder().await.expect("a leader holds the Lease");
    let pref = nodes.get_status("pref-44").await.unwrap().status;
    assert_ne!(
        pref.and_then(|s| s.phase),
        Some(NodePhase::Online),
        "the kill is to come before the prefecture serves"
    );
    cluster
        .kubectl(&[
            "-n",
            &op_ns,
            "delete",
            "pod",
            &leader,
            "--grace-period=0",
            "--force",
        ])
        .await;

    // Another pod leads on: the standby, or the killed pod's replacement if it wins the race
    // for the expired Lease (its fast clock then runs behind; the order holds either way).
    let took_over = poll_until("the standby holds the Lease", WAIT, || async {
        holder().await.is_some_and(|h| h != leader)
    })
    .await;
    let now = holder().await;
    took_over.unwrap_or_else(|e| panic!("{e}: holder {now:?}, killed {leader}"));
    for (name, _) in &tree {
        if let Err(e) = until_online(&nodes, name).await {
            let status = nodes.get_status(name).await.ok().and_then(|n| n.status);
            panic!("{e}: {status:?}");
        }
    }
    // In order: each node first Online after its upstream.
    let events = recording.events();
    let first_online = |name: &str| {
        events
            .iter()
            .position(|(n, p, _)| n == name && *p == NodePhase::Online)
            .unwrap_or_else(|| panic!("{name} never Online: {events:#?}"))
    };
    assert!(
        first_online("national") < first_online("pref-44")
            && first_online("pref-44") < first_online("cs-442011"),
        "{events:#?}"
    );
}
