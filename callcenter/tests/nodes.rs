//! The node context against a real Kubernetes API server (tests/cluster/up.sh; skipped without
//! one unless JUKINET_REQUIRE_CLUSTER=1): a JukiNode with a status and a batch Job of it, read
//! for a ticket that names the node.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{Backend, TestDb};
use juki_callcenter::domain::Caller;
use juki_callcenter::domain::ticket::TicketInput;
use juki_callcenter::nodes::NodeSource;

fn kubectl(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn cluster_available() -> bool {
    let up = std::env::var("KUBECONFIG").is_ok() && kubectl(&["get", "--raw", "/readyz"], None).0;
    if !up {
        if std::env::var("JUKINET_REQUIRE_CLUSTER").as_deref() == Ok("1") {
            panic!(
                "JUKINET_REQUIRE_CLUSTER=1 but no control plane answers (bash tests/cluster/up.sh)"
            );
        }
        eprintln!("skipped: no control plane running (start one with `bash tests/cluster/up.sh`)");
    }
    up
}

/// Deletes the namespace when dropped.
struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "namespace", &self.0, "--wait=false"], None);
    }
}

#[actix_web::test]
async fn a_ticket_shows_its_nodes_phase_timeline_batch_jobs_and_deliveries() {
    if !cluster_available() {
        return;
    }
    for kind in ["jukinodes", "filedeliveries"] {
        let crd = format!(
            "{}/../crds/{kind}.jukinet.io.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        let (ok, out) = kubectl(
            &["apply", "--server-side", "--force-conflicts", "-f", &crd],
            None,
        );
        assert!(ok, "{out}");
        let (ok, out) = kubectl(
            &[
                "wait",
                "--for=condition=Established",
                &format!("crd/{kind}.jukinet.io"),
                "--timeout=60s",
            ],
            None,
        );
        assert!(ok, "{out}");
    }
    let id = std::process::id();
    let ns = Namespace(format!("cc-nodes-{id}"));
    let node = format!("cs-cc-{id}");
    assert!(kubectl(&["create", "namespace", &ns.0], None).0);
    let manifest = format!(
        "apiVersion: jukinet.io/v1alpha1\nkind: JukiNode\nmetadata:\n  name: {node}\n  namespace: {ns}\nspec:\n  tier: CS\n  municipality: \"131016\"\n---\n\
         apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {node}-backup-20261125\n  namespace: {ns}\n  labels:\n    jukinet.io/node: {node}\n    jukinet.io/batch: backup\n    jukinet.io/operating-date: \"20261125\"\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: backup\n          image: jukinet/juki-node:0.1.0\n",
        ns = ns.0
    );
    let (ok, out) = kubectl(&["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "{out}");
    let sha = "a".repeat(64);
    let status = format!(
        r#"{{"status":{{"phase":"DailyBatch","reason":"BatchRunning","message":"batch backup runs","phaseSince":"2026-11-25T12:00:05Z","operatingDate":"2026-11-25","conditions":[{{"type":"Ready","status":"False","reason":"DailyBatch","message":"batches running","lastTransitionTime":"2026-11-25T12:00:05Z"}}],"deliveredFiles":[{{"file":"code-table","sha256":"{sha}","appliedAt":"2026-11-25T08:00:01+09:00"}}]}}}}"#
    );
    let (ok, out) = kubectl(
        &[
            "patch",
            "jukinode",
            &node,
            "-n",
            &ns.0,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ],
        None,
    );
    assert!(ok, "{out}");
    // The operator's Events about it (an older and a newer), and a delivery that failed on it.
    let event = |name: &str, kind: &str, reason: &str, note: &str, at: &str| {
        format!(
            "apiVersion: v1\nkind: Event\nmetadata:\n  name: {node}.{name}\n  namespace: {ns}\ninvolvedObject:\n  apiVersion: jukinet.io/v1alpha1\n  kind: JukiNode\n  name: {node}\n  namespace: {ns}\ntype: {kind}\nreason: {reason}\nmessage: \"{note}\"\nfirstTimestamp: \"{at}\"\nlastTimestamp: \"{at}\"\ncount: 1\nsource:\n  component: juki-operator\n---\n",
            ns = ns.0
        )
    };
    let manifest = [
        event("a", "Warning", "MissedNight", "stayed Online through 21:00", "2026-11-24T12:00:00Z"),
        event("b", "Normal", "BatchSucceeded", "DailyBatch → Offline: statistics, backup", "2026-11-25T12:30:00Z"),
        format!(
            "apiVersion: jukinet.io/v1alpha1\nkind: FileDelivery\nmetadata:\n  name: allow-{id}\n  namespace: {ns}\nspec:\n  file: allow-list\n  sha256: \"{sha}\"\n  source: {{inline: x}}\n",
            ns = ns.0
        ),
    ]
    .concat();
    let (ok, out) = kubectl(&["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "{out}");
    let failed = format!(
        r#"{{"status":{{"phase":"Failed","failures":[{{"node":"{ns}/{node}","phase":"Failed","message":"refused at its start: allow-list line 1"}}]}}}}"#,
        ns = ns.0
    );
    let (ok, out) = kubectl(
        &[
            "patch",
            "filedelivery",
            &format!("allow-{id}"),
            "-n",
            &ns.0,
            "--subresource=status",
            "--type=merge",
            "-p",
            &failed,
        ],
        None,
    );
    assert!(ok, "{out}");

    let db = TestDb::new(Backend::Sqlite).unwrap();
    let (mut cc, _clock) = db.service().await;
    cc.nodes = Some(
        NodeSource::infer()
            .await
            .expect("kube client from KUBECONFIG"),
    );
    let staff = Caller::Staff("sato".into());
    let t = cc
        .file(
            &staff,
            TicketInput {
                kind: "fault".into(),
                org: "131016".into(),
                reporter: "千代田区".into(),
                channel: "phone".into(),
                subject: "夜にCSへ接続できない".into(),
                body: "21時過ぎに接続できません。".into(),
                nodes: vec![node.clone(), "cs-nowhere".into()],
                category: None,
            },
        )
        .await
        .unwrap();
    let (_, contexts) = cc.context(&staff, t.id).await.unwrap();
    let ctx = contexts.iter().find(|c| c.node == node).unwrap();
    assert!(ctx.found);
    assert_eq!(ctx.namespace.as_deref(), Some(ns.0.as_str()));
    assert_eq!(ctx.tier.as_deref(), Some("CS"));
    assert_eq!(ctx.phase.as_deref(), Some("DailyBatch"));
    assert_eq!(ctx.operating_date.as_deref(), Some("2026-11-25"));
    assert_eq!(ctx.conditions[0]["reason"], "DailyBatch");
    assert_eq!(ctx.jobs.len(), 1);
    assert_eq!(ctx.jobs[0].batch.as_deref(), Some("backup"));
    assert_eq!(ctx.jobs[0].operating_date.as_deref(), Some("20261125"));
    assert_eq!(
        (ctx.reason.as_deref(), ctx.message.as_deref()),
        (Some("BatchRunning"), Some("batch backup runs"))
    );
    let timeline: Vec<(&str, &str)> = ctx
        .events
        .iter()
        .map(|e| (e.kind.as_str(), e.reason.as_str()))
        .collect();
    assert_eq!(
        timeline,
        [("Normal", "BatchSucceeded"), ("Warning", "MissedNight")],
        "newest first"
    );
    assert_eq!(ctx.delivered_files[0]["file"], "code-table");
    assert_eq!(ctx.delivered_files[0]["sha256"], sha.as_str());
    assert_eq!(ctx.deliveries.len(), 1, "{:?}", ctx.deliveries);
    let d = &ctx.deliveries[0];
    assert_eq!(
        (d.delivery.clone(), d.state.as_str(), d.message.as_deref()),
        (
            format!("{}/allow-{id}", ns.0),
            "Failed",
            Some("refused at its start: allow-list line 1")
        )
    );
    let missing = contexts.iter().find(|c| c.node == "cs-nowhere").unwrap();
    assert!(!missing.found && missing.jobs.is_empty());
    // The context is read like the ticket: another municipality gets a 403.
    let other = Caller::Municipality("271004".into());
    let e = cc.context(&other, t.id).await.unwrap_err();
    assert_eq!(e.tag(), "forbidden_org");
}
