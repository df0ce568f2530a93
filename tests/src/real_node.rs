//! Real pods on the local cluster's real node (`JUKINET_REAL_NODE=1 tests/cluster/up.sh`, see
//! `tests/cluster/node.sh`). The node is tainted and labelled `jukinet.io/real-node=true`: a pod
//! runs for real only when its spec carries [`on_real_node`]'s toleration and selector; every
//! other pod stays on the kwok node (fake, for scale).

use std::io::Write as _;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, LogParams};
use serde_json::{Value, json};

use crate::cluster::{TestCluster, repo_root, test_name, unique_name, wait_for};

/// The real node's name (node.sh).
pub const NODE_NAME: &str = "jukinet-node";
/// The label and taint key that send a pod to the real node.
pub const REAL_NODE_KEY: &str = "jukinet.io/real-node";
/// The tests' toolbox image (Debian's busybox-static, made into an image by build.sh).
pub const BUSYBOX_IMAGE: &str = "jukinet.local/busybox:1";

/// Whether the real node is there and Ready. Without it a real-pod test skips, or fails when
/// `JUKINET_REQUIRE_REAL_NODE=1` (scripts/test sets it, so CI cannot pass by skipping).
pub async fn require_real_node(cluster: &TestCluster) -> bool {
    let ready = Api::<Node>::all(cluster.client.clone())
        .get_opt(NODE_NAME)
        .await
        .ok()
        .flatten()
        .and_then(|n| n.status?.conditions)
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if ready {
        return true;
    }
    let why = "no Ready real node (start the cluster with `JUKINET_REAL_NODE=1 bash tests/cluster/up.sh`)";
    if std::env::var("JUKINET_REQUIRE_REAL_NODE").is_ok_and(|v| v == "1") {
        panic!("{why}; JUKINET_REQUIRE_REAL_NODE=1, so this fails instead of skipping");
    }
    let _ = writeln!(std::io::stderr(), "{}: skipped: {why}", test_name());
    false
}

/// `let Some(cluster) = require_real_node!() else { return };` at the top of a real-pod test.
#[macro_export]
macro_rules! require_real_node {
    () => {
        match $crate::cluster::TestCluster::require().await {
            Some(c) if $crate::real_node::require_real_node(&c).await => Some(c),
            _ => None,
        }
    };
}

/// Adds the toleration and node selector that put a pod spec on the real node.
pub fn on_real_node(mut pod_spec: Value) -> Value {
    pod_spec["nodeSelector"] = json!({REAL_NODE_KEY: "true"});
    pod_spec["tolerations"] =
        json!([{"key": REAL_NODE_KEY, "operator": "Exists", "effect": "NoSchedule"}]);
    pod_spec
}

/// Gives an image imported into the real node a second name (`docker.io/…` names, as
/// containerd stores them): a second "version" of an image for program deliveries.
pub fn tag_image(image: &str, new_name: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/cluster/node.sh");
    let out = std::process::Command::new("bash")
        .args([script, "tag", image, new_name])
        .output()
        .expect("run tests/cluster/node.sh");
    assert!(
        out.status.success(),
        "node.sh tag {image} {new_name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A busybox container running `script` with `sh -c`.
pub fn busybox(name: &str, script: &str) -> Value {
    json!({
        "name": name, "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
        "command": ["/bin/busybox", "sh", "-c", script],
    })
}

/// Waits until the pod has finished (Succeeded or Failed) and returns its phase and its log,
/// read from the kubelet through the API server.
pub async fn finished(pods: &Api<Pod>, name: &str, timeout: Duration) -> (String, String) {
    let done = |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.phase.as_deref())
            .is_some_and(|ph| ph == "Succeeded" || ph == "Failed")
    };
    let pod = wait_for(pods, name, done, timeout)
        .await
        .unwrap_or_else(|e| panic!("pod {name} did not finish: {e}"));
    let phase = pod.status.and_then(|s| s.phase).unwrap_or_default();
    let log = pods
        .logs(name, &LogParams::default())
        .await
        .unwrap_or_else(|e| panic!("log of pod {name}: {e}"));
    (phase, log)
}

/// `base` with the fields of `extra` added (both JSON objects).
pub fn merged(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    if let (Some(b), serde_json::Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// The node service image built by `scripts/images` (imported into the real node by scripts/test).
pub fn juki_node_image() -> String {
    format!("jukinet/juki-node:{}", env!("CARGO_PKG_VERSION"))
}

/// A JukiNode on the real node running the juki-node image, its SQLite on a 64Mi claim;
/// `spec` adds the tier and its fields.
pub fn real_juki_node(name: &str, calendar: &str, spec: serde_json::Value) -> serde_json::Value {
    let placement = on_real_node(json!({}));
    let spec = merged(
        json!({
            "calendar": calendar, "replicas": 1,
            "template": {
                "image": juki_node_image(),
                "nodeSelector": placement["nodeSelector"],
                "tolerations": placement["tolerations"],
            },
            "database": {"kind": "Sqlite", "sqlite": {"storageSize": "64Mi"}},
        }),
        spec,
    );
    json!({
        "apiVersion": "jukinet.io/v1alpha1", "kind": "JukiNode",
        "metadata": {"name": name}, "spec": spec,
    })
}

/// The operator as production runs it against real pods (the final request through the
/// service proxy, SQLite and backups on claims, a 300 s readiness timeout), on a clock from
/// `start` at `factor`, with `extra` flags.
pub fn real_operator(
    cluster: &TestCluster,
    namespace: &str,
    start: jiff::Timestamp,
    factor: u32,
    tag: &str,
    extra: &[&str],
) -> crate::operator::OperatorProcess {
    let mut args = vec![
        "--final-exchange",
        "call",
        "--sqlite-volume",
        "pvc",
        "--readiness-timeout",
        "300",
    ];
    args.extend_from_slice(extra);
    crate::operator::OperatorProcess::start_with(cluster, namespace, start, factor, tag, &args)
}

/// The real node's network namespace (node.sh): its pod bridge, kube-proxy's rules.
pub const NODE_NETNS: &str = "/run/netns/jukinet-node";

/// A broken link between two pods on the real node: a rule first in the FORWARD chain of the
/// node's network namespace drops what pod IP `from` sends to pod IP `to` (a Service's address
/// is already translated to the pod's there). Deleted when dropped, so a failing test leaves no
/// rule behind.
#[derive(Debug)]
pub struct LinkCut {
    rule: Vec<String>,
}

impl LinkCut {
    pub fn new(from: &str, to: &str) -> LinkCut {
        let rule: Vec<String> = ["FORWARD", "-s", from, "-d", to, "-j", "DROP"]
            .map(String::from)
            .to_vec();
        node_iptables("-I", &rule).unwrap_or_else(|e| panic!("cutting the link: {e}"));
        LinkCut { rule }
    }
}

impl Drop for LinkCut {
    fn drop(&mut self) {
        // No panic here: this may run while a failed test unwinds.
        if let Err(e) = node_iptables("-D", &self.rule) {
            let _ = writeln!(std::io::stderr(), "mending the link: {e}");
        }
    }
}

/// `iptables ACTION RULE…` in the real node's network namespace.
fn node_iptables(action: &str, rule: &[String]) -> Result<(), String> {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={NODE_NETNS}"))
        .arg("iptables")
        .arg(action)
        .args(rule)
        .output()
        .map_err(|e| format!("running nsenter: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {action} {rule:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A pod that keeps dying: every 200 ms its processes named `comm` (its containers' main
/// processes, not the sandbox: the pod keeps its IP) get SIGKILL, as a crash or an OOM kill
/// would, so the kubelet restarts them into CrashLoopBackOff. Stops killing when dropped.
#[derive(Debug)]
pub struct PodKiller {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<usize>>,
}

impl PodKiller {
    pub fn start(pod_uid: &str, comm: &str) -> PodKiller {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (uid, comm, flag) = (pod_uid.to_string(), comm.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut killed = 0;
            while !flag.load(Ordering::Relaxed) {
                killed += kill_pod_processes(&uid, &comm);
                std::thread::sleep(Duration::from_millis(200));
            }
            killed
        });
        PodKiller {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops killing; how many processes it killed.
    pub fn stop(mut self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for PodKiller {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// SIGKILLs the processes named `comm` in pod `pod_uid`'s cgroups (the kubelet's cgroupfs
/// driver names them `pod<uid>`); how many.
fn kill_pod_processes(pod_uid: &str, comm: &str) -> usize {
    let mark = format!("/pod{pod_uid}/");
    let mut killed = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let read =
            |f: &str| std::fs::read_to_string(format!("/proc/{pid}/{f}")).unwrap_or_default();
        if read("comm").trim() == comm && read("cgroup").contains(&mark) {
            let status = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            killed += usize::from(status.is_ok_and(|s| s.success()));
        }
    }
    killed
}

/// Where the real node's provisioner makes each volume: `pvc-<claim uid>` under this
/// (tests/cluster/node.sh's VOLUME_ROOT, tests/cluster/node/local-volumes).
pub const VOLUME_ROOT: &str = "/var/lib/jukinet/local-volumes";

/// A full disk under a claim: a 4 KiB tmpfs mounted where the provisioner will put (or has
/// put) the claim's volume, so whatever writes more there fails with ENOSPC. Unmounted when
/// dropped (the provisioner's directory is left as it was).
#[derive(Debug)]
pub struct FullVolume {
    path: std::path::PathBuf,
}

impl FullVolume {
    pub fn mount(claim_uid: &str) -> FullVolume {
        let path = std::path::Path::new(VOLUME_ROOT).join(format!("pvc-{claim_uid}"));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4k", "jukinet-full-volume"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a full volume at {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        FullVolume { path }
    }
}

impl Drop for FullVolume {
    fn drop(&mut self) {
        // Lazy: a pod may still hold it; no panic while a failed test unwinds.
        let out = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .output();
        if !out.is_ok_and(|o| o.status.success()) {
            let _ = writeln!(std::io::stderr(), "unmounting {}", self.path.display());
        }
    }
}

/// The pods of JukiNode `node` in `namespace` that are not being deleted.
pub async fn node_pods(cluster: &TestCluster, namespace: &str, node: &str) -> Vec<Pod> {
    let selector = format!("{}={node}", juki_operator::resources::NODE_LABEL);
    Api::<Pod>::namespaced(cluster.client.clone(), namespace)
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .unwrap_or_else(|e| panic!("listing the pods of {node}: {e}"))
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The chart values scripts/demo installs its real pods with (scripts/demo-values, on the real
/// node): `(national, prefecture)`, the files for `helm install -f`.
pub fn demo_values() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(unique_name("demo-values"));
    let out = std::process::Command::new(repo_root().join("scripts/demo-values"))
        .arg(&dir)
        .output()
        .expect("run scripts/demo-values");
    assert!(
        out.status.success(),
        "scripts/demo-values: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir.join("national.json"), dir.join("prefecture.json"))
}

/// One node's chart values from [`demo_values`] (juki-national's `node`, the same object as
/// juki-prefecture's `prefectureNode` and `cs`), to build other installs on.
pub fn chart_node_values() -> Value {
    let (national, _) = demo_values();
    let text = std::fs::read_to_string(&national).unwrap();
    let values: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", national.display()));
    values["node"].clone()
}
