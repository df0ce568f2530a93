//! Running the real operator binary against the local control plane, and recording every phase
//! change of the JukiNodes it manages from the watch stream.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use juki_operator::api::{JukiNode, NodePhase};
use juki_operator::forecast::Change;
use juki_operator::topology::TopologyNode;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use tokio::process::{Child, Command};

use crate::cluster::{TestCluster, repo_root};

/// An instant written as Tokyo wall-clock time (`2026-11-25T07:25`): where the tests start
/// the operator's fast clock.
pub fn tokyo(text: &str) -> Timestamp {
    format!("{text}[Asia/Tokyo]")
        .parse::<jiff::Zoned>()
        .unwrap_or_else(|e| panic!("a Tokyo time {text}: {e}"))
        .timestamp()
}

/// A binary of the juki-operator package (`juki-operator`, `kubectl-juki`), built once per test
/// process (cargo does nothing when it is current).
pub fn binary(name: &'static str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--quiet", "-p", "juki-operator", "--bins"])
            .current_dir(repo_root())
            .status()
            .expect("running cargo build");
        assert!(status.success(), "building juki-operator failed");
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| repo_root().join("target"), PathBuf::from);
    target.join("debug").join(name)
}

/// Runs `kubectl juki ARGS` (the kubectl-juki binary) against `cluster`: whether it succeeded,
/// its stdout and its stderr.
pub fn kubectl_juki(cluster: &TestCluster, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(binary("kubectl-juki"))
        .env("KUBECONFIG", &cluster.kubeconfig)
        .args(args)
        .output()
        .expect("running kubectl-juki");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The juki-operator binary.
pub fn operator_binary() -> PathBuf {
    binary("juki-operator")
}

/// A copy of the cluster's kubeconfig whose every user impersonates ServiceAccount
/// `namespace/name` (with the groups the API server gives a ServiceAccount's token), so a process
/// run with it has that account's RBAC and nothing more.
pub fn impersonating_kubeconfig(cluster: &TestCluster, namespace: &str, name: &str) -> PathBuf {
    let mut config = kube::config::Kubeconfig::read_from(&cluster.kubeconfig).expect("kubeconfig");
    for user in &mut config.auth_infos {
        if let Some(auth) = user.auth_info.as_mut() {
            auth.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
            auth.impersonate_groups = Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ]);
        }
    }
    let path = std::env::temp_dir().join(format!("kubeconfig-as-{namespace}-{name}"));
    std::fs::write(
        &path,
        serde_yaml::to_string(&config).expect("kubeconfig yaml"),
    )
    .expect("writing the kubeconfig");
    path
}

/// The simulated time of a fast clock started at `start` now, `factor` times real time.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    pub start: Timestamp,
    pub started: Instant,
    pub factor: f64,
}

impl SimClock {
    pub fn now(&self) -> Timestamp {
        self.start
            + SignedDuration::from_secs_f64(self.started.elapsed().as_secs_f64() * self.factor)
    }
}

/// A running operator process watching one namespace; killed when dropped.
#[derive(Debug)]
pub struct OperatorProcess {
    child: Child,
    pub clock: SimClock,
}

impl OperatorProcess {
    /// Starts the operator with a fast clock at `start` (×`factor`), watching `namespace`.
    pub fn start(
        cluster: &TestCluster,
        namespace: &str,
        start: Timestamp,
        factor: u32,
    ) -> OperatorProcess {
        OperatorProcess::start_with(cluster, namespace, start, factor, "", &[])
    }

    /// [`start`](Self::start) with extra flags (replacing the defaults they name); `tag` tells the
    /// log files of two operators apart.
    pub fn start_with(
        cluster: &TestCluster,
        namespace: &str,
        start: Timestamp,
        factor: u32,
        tag: &str,
        extra: &[&str],
    ) -> OperatorProcess {
        OperatorProcess::start_as(&cluster.kubeconfig, namespace, start, factor, tag, extra)
    }

    /// [`start_with`](Self::start_with) with another kubeconfig, e.g. one from
    /// [`impersonating_kubeconfig`].
    pub fn start_as(
        kubeconfig: &Path,
        namespace: &str,
        start: Timestamp,
        factor: u32,
        tag: &str,
        extra: &[&str],
    ) -> OperatorProcess {
        let log = std::fs::File::create(
            std::env::temp_dir().join(format!("juki-operator-{namespace}{tag}.log")),
        )
        .expect("operator log");
        let clock = format!("fast:{start},x{factor}");
        let defaults = [
            ("--clock", clock.as_str()),
            ("--namespace", namespace),
            ("--metrics-addr", "127.0.0.1:0"),
            ("--final-exchange", "skip"),
            ("--sqlite-volume", "empty-dir"),
            ("--readiness-timeout", "60"),
        ];
        // A flag in `extra` replaces its default (the operator takes each flag once).
        let defaults = defaults
            .into_iter()
            .filter(|(flag, _)| !extra.contains(flag))
            .flat_map(|(flag, value)| [flag, value]);
        let child = Command::new(operator_binary())
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .args(defaults)
            // The test nodes are plain HTTP unless a test gives them spec.tls.
            .arg("--allow-plain-http")
            .args(extra)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .expect("starting juki-operator");
        OperatorProcess {
            child,
            clock: SimClock {
                start,
                started: Instant::now(),
                factor: f64::from(factor),
            },
        }
    }

    /// The process id (its default leader identity is `juki-operator-<pid>`).
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub async fn kill(mut self) -> Timestamp {
        let _ = self.child.kill().await;
        self.clock.now()
    }

    /// Waits until the simulated clock reaches `at`.
    pub async fn run_until(&self, at: Timestamp) {
        let ahead = at.duration_since(self.clock.now()).as_secs_f64() / self.clock.factor;
        if ahead > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(ahead)).await;
        }
    }
}

/// Every phase change of the JukiNodes of a namespace, in the order the API server wrote them.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    inner: Arc<Mutex<Vec<(String, NodePhase, Timestamp)>>>,
}

impl Recording {
    /// Starts watching; the watch ends when the test's runtime does.
    pub fn start(cluster: &TestCluster, namespace: &str) -> Recording {
        let recording = Recording::default();
        let inner = recording.inner.clone();
        let api: Api<JukiNode> = Api::namespaced(cluster.client.clone(), namespace);
        tokio::spawn(async move {
            let mut last: std::collections::HashMap<String, NodePhase> =
                std::collections::HashMap::new();
            let mut stream = watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
                .boxed();
            while let Some(Ok(node)) = stream.next().await {
                let Some(status) = &node.status else { continue };
                let (Some(phase), Some(since)) = (status.phase, status.phase_since.as_ref()) else {
                    continue;
                };
                let name = node.name_any();
                if last.get(&name) != Some(&phase) {
                    last.insert(name.clone(), phase);
                    inner.lock().unwrap().push((name, phase, since.0));
                }
            }
        });
        recording
    }

    /// (node, phase, operator-clock time) in write order.
    pub fn events(&self) -> Vec<(String, NodePhase, Timestamp)> {
        self.inner.lock().unwrap().clone()
    }

    /// The events as the order checker's changes, against a topology (nodes start Offline).
    pub fn changes(&self, nodes: &[TopologyNode]) -> Vec<Change> {
        let mut phase: Vec<NodePhase> = vec![NodePhase::Offline; nodes.len()];
        let mut out = Vec::new();
        for (seq, (name, to, at)) in self.events().into_iter().enumerate() {
            let Some(i) = nodes.iter().position(|n| n.name == name) else {
                continue;
            };
            if phase[i] != to {
                out.push(Change {
                    seq,
                    at,
                    node: i,
                    from: phase[i],
                    to,
                    reason: None,
                });
                phase[i] = to;
            }
        }
        out
    }
}
