//! The shipped alert rules and Alertmanager configuration at work: a real Prometheus and a real
//! Alertmanager (built by tests/cluster/build.sh from the pinned versions) run beside the real
//! operator binary on a fast clock. Prometheus scrapes the operator's metrics (and, in the link
//! test, the real node pods' own, labelled as the chart's PodMonitor labels them) and evaluates
//! charts/juki-operator/rules/jukinet-alerts.yaml; Alertmanager routes what fires with
//! rules/alertmanager.yaml to a webhook receiver of the test's own (the call center's place).
//!
//! Two things differ from production, both timings: every rule's `for` becomes 5 s and
//! Alertmanager's group waits a second or two, since a fast-clock day lasts minutes. The rules'
//! own `for` values are what `promtool test rules` checks (alert_rules.rs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use juki_operator::api::{JukiNode, NodePhase};
use juki_tests::cluster::{poll_until, read_repo_file, require_built, unique_name};
use juki_tests::operator::{OperatorProcess, tokyo};
use juki_tests::real_node::{
    FullVolume, LinkCut, PodKiller, node_pods, real_juki_node, real_operator,
};
use juki_tests::require_cluster;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A daemon of the test, killed when dropped; its output goes to `log`.
struct Daemon(#[allow(dead_code)] tokio::process::Child);

fn daemon(binary: &Path, args: &[String], log: &Path) -> Daemon {
    let log = std::fs::File::create(log).unwrap();
    let child = tokio::process::Command::new(binary)
        .args(args)
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    Daemon(child)
}

/// Whether GET `url` answers 2xx.
async fn answers(url: &str) -> bool {
    let out = tokio::process::Command::new("curl")
        .args(["-fsS", "-m", "5", "-o", "/dev/null", url])
        .output()
        .await;
    out.is_ok_and(|o| o.status.success())
}

/// GET `url`, as JSON.
async fn get_json(url: &str) -> Result<Value, String> {
    let out = tokio::process::Command::new("curl")
        .args(["-fsS", "-m", "5", url])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// The shipped rules with every `for` at 5 s.
fn rules_with_short_for() -> String {
    let shipped = read_repo_file("charts/juki-operator/rules/jukinet-alerts.yaml");
    let mut shortened = 0;
    let lines: Vec<String> = shipped
        .lines()
        .map(|line| match line.trim_start().strip_prefix("for: ") {
            Some(_) => {
                shortened += 1;
                let indent = &line[..line.len() - line.trim_start().len()];
                format!("{indent}for: 5s")
            }
            None => line.to_owned(),
        })
        .collect();
    assert!(shortened > 5, "the rules have their `for`s: {shortened}");
    lines.join("\n")
}

/// The shipped Alertmanager configuration, its receiver pointed at `webhook` and its group
/// timings in seconds; the inhibitions as shipped.
fn alertmanager_config(webhook: &str) -> String {
    let shipped = read_repo_file("charts/juki-operator/rules/alertmanager.yaml");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&shipped).unwrap();
    let route = &mut config["route"];
    route["group_wait"] = "1s".into();
    route["group_interval"] = "2s".into();
    route["repeat_interval"] = "1h".into();
    config["receivers"][0]["webhook_configs"][0]["url"] = webhook.into();
    assert!(
        config["inhibit_rules"]
            .as_sequence()
            .is_some_and(|r| !r.is_empty())
    );
    serde_yaml::to_string(&config).unwrap()
}

/// One webhook notification: its status and, per alert, (alertname, node, status).
#[derive(Clone, Debug)]
struct Notification {
    status: String,
    alerts: Vec<(String, String, String)>,
    group: BTreeMap<String, String>,
}

/// A webhook receiver on `port` that keeps every notification Alertmanager posts.
fn webhook_receiver(port: u16) -> Arc<Mutex<Vec<Notification>>> {
    let received = Arc::new(Mutex::new(Vec::new()));
    let keep = received.clone();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let keep = keep.clone();
            tokio::spawn(async move {
                let mut bytes = Vec::new();
                let mut buf = [0u8; 8192];
                // Headers, then Content-Length bytes of body.
                let body = loop {
                    let Ok(n) = stream.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    bytes.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    let Some(end) = text.find("\r\n\r\n") else {
                        continue;
                    };
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if bytes.len() >= end + 4 + length {
                        break bytes[end + 4..end + 4 + length].to_vec();
                    }
                };
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
                let Ok(v) = serde_json::from_slice::<Value>(&body) else {
                    return;
                };
                let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
                let alerts = v["alerts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let labels = &a["labels"];
                        (
                            text(&labels["alertname"]),
                            text(&labels["node"]),
                            text(&a["status"]),
                        )
                    })
                    .collect();
                let group = v["groupLabels"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), text(v)))
                    .collect();
                keep.lock().unwrap().push(Notification {
                    status: text(&v["status"]),
                    alerts,
                    group,
                });
            });
        }
    });
    received
}

/// Prometheus (scraping `scrape_configs`, evaluating the shipped rules with short `for`s),
/// Alertmanager (the shipped configuration, its receiver the test's own) and that receiver,
/// each on a port of its own; stopped and their directory removed when dropped.
struct Monitoring {
    prometheus: String,
    alertmanager: String,
    received: Arc<Mutex<Vec<Notification>>>,
    dir: PathBuf,
    _daemons: [Daemon; 2],
}

impl Monitoring {
    /// Starts both and returns once both answer `/-/ready`.
    async fn start(prometheus_bin: &Path, alertmanager_bin: &Path, scrape_configs: Value) -> Self {
        let dir = std::env::temp_dir().join(unique_name("alerts-e2e"));
        std::fs::create_dir_all(&dir).unwrap();
        let (prometheus_port, alertmanager_port, hook_port) =
            (free_port(), free_port(), free_port());
        let received = webhook_receiver(hook_port);
        let write = |name: &str, text: String| -> PathBuf {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let am_config = write(
            "alertmanager.yaml",
            alertmanager_config(&format!("http://127.0.0.1:{hook_port}/v1/alerts")),
        );
        write("jukinet-alerts.yaml", rules_with_short_for());
        let prom_config = write(
            "prometheus.yaml",
            json!({
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": ["jukinet-alerts.yaml"],
                "alerting": {"alertmanagers": [{"static_configs": [
                    {"targets": [format!("127.0.0.1:{alertmanager_port}")]}]}]},
                "scrape_configs": scrape_configs,
            })
            .to_string(),
        );
        let dir_arg = |flag: &str, sub: &str| format!("{flag}={}", dir.join(sub).display());
        let alertmanager = daemon(
            alertmanager_bin,
            &[
                format!("--config.file={}", am_config.display()),
                dir_arg("--storage.path", "am-data"),
                format!("--web.listen-address=127.0.0.1:{alertmanager_port}"),
                "--cluster.listen-address=".into(),
            ],
            &dir.join("alertmanager.log"),
        );
        let prometheus = daemon(
            prometheus_bin,
            &[
                format!("--config.file={}", prom_config.display()),
                dir_arg("--storage.tsdb.path", "prom-data"),
                format!("--web.listen-address=127.0.0.1:{prometheus_port}"),
            ],
            &dir.join("prometheus.log"),
        );
        let monitoring = Monitoring {
            prometheus: format!("http://127.0.0.1:{prometheus_port}"),
            alertmanager: format!("http://127.0.0.1:{alertmanager_port}"),
            received,
            dir,
            _daemons: [prometheus, alertmanager],
        };
        // A query before Prometheus listens would fail the test (on a loaded machine it takes
        // seconds to start).
        let ready = poll_until(
            "Prometheus and Alertmanager ready",
            Duration::from_secs(60),
            || async {
                answers(&format!("{}/-/ready", monitoring.prometheus)).await
                    && answers(&format!("{}/-/ready", monitoring.alertmanager)).await
            },
        )
        .await;
        ready.unwrap_or_else(|e| panic!("{e}\n{}", monitoring.logs()));
        monitoring
    }

    /// The two daemons' logs, for a failure's message.
    fn logs(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!(
            "prometheus: {}\nalertmanager: {}",
            read("prometheus.log"),
            read("alertmanager.log")
        )
    }

    /// The notifications received so far.
    fn notifications(&self) -> Vec<Notification> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until the receiver hears `(alertname, node, status)`; on timeout, fails with the
    /// alerts Prometheus holds in `ns` and the phases of `nodes`.
    async fn until_heard(
        &self,
        nodes: &Api<JukiNode>,
        ns: &str,
        (alertname, node, status): (&str, &str, &str),
        timeout: Duration,
    ) {
        let what = format!("{alertname} {status} for {node} at the receiver");
        let heard = poll_until(&what, timeout, || async {
            self.heard(alertname, node, status)
        })
        .await;
        if let Err(e) = heard {
            let now = alerts_now(&self.prometheus, ns).await;
            panic!("{e}: {now:?}\n{:?}", phases(nodes).await);
        }
    }

    /// Whether the receiver has heard `alertname` for `node` with `status` (firing, resolved).
    fn heard(&self, alertname: &str, node: &str, status: &str) -> bool {
        self.notifications().iter().any(|n| {
            n.alerts
                .iter()
                .any(|(name, nd, s)| name == alertname && nd == node && s == status)
        })
    }
}

impl Drop for Monitoring {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The Prometheus and Alertmanager binaries build.sh made, or None when the test skips.
fn monitoring_binaries() -> Option<(PathBuf, PathBuf)> {
    Some((require_built("prometheus")?, require_built("alertmanager")?))
}

/// examples/calendar.yaml applied under a name starting with `prefix`; deleted with the guard.
async fn example_calendar(
    cluster: &juki_tests::TestCluster,
    prefix: &str,
) -> (String, juki_tests::cluster::Guard) {
    let calendar = unique_name(prefix);
    let guard = cluster.guard("operatingcalendar", &calendar, None);
    let calendar_yaml = read_repo_file("examples/calendar.yaml")
        .replace("name: japan", &format!("name: {calendar}"));
    cluster.apply_yaml(&calendar_yaml, None).await.unwrap();
    (calendar, guard)
}

fn node(name: &str, calendar: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["calendar"] = calendar.into();
    json!({"apiVersion": "jukinet.io/v1alpha1", "kind": "JukiNode",
           "metadata": {"name": name}, "spec": spec})
}

/// The alert series of `namespace` Prometheus holds now (pending or firing), as (alertname,
/// node, state).
async fn alerts_now(prometheus: &str, namespace: &str) -> Vec<(String, String, String)> {
    let query = format!("ALERTS{{namespace=\"{namespace}\"}}");
    let v = get_json(&format!(
        "{prometheus}/api/v1/query?query={}",
        url_encoded(&query)
    ))
    .await
    .unwrap_or_else(|e| panic!("querying Prometheus: {e}"));
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let m = &r["metric"];
            let text = |k: &str| m[k].as_str().unwrap_or_default().to_owned();
            (text("alertname"), text("node"), text("alertstate"))
        })
        .collect()
}

/// The value of an instant query that gives one number, if any.
async fn scalar(prometheus: &str, query: &str) -> Option<f64> {
    let v = get_json(&format!(
        "{prometheus}/api/v1/query?query={}",
        url_encoded(query)
    ))
    .await
    .ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn phases(nodes: &Api<JukiNode>) -> Vec<(String, Option<NodePhase>, Option<String>)> {
    let listed = nodes.list(&Default::default()).await.unwrap().items;
    listed
        .into_iter()
        .map(|n| {
            let s = n.status.unwrap_or_default();
            (n.metadata.name.unwrap_or_default(), s.phase, s.reason)
        })
        .collect()
}

/// Tottori and two of its CSs in `ns`, following `calendar`; `pref_template` is the
/// prefecture's pod template.
async fn tottori(
    cluster: &juki_tests::TestCluster,
    ns: &str,
    calendar: &str,
    pref_template: Value,
) {
    let tree = [
        node("national", calendar, json!({"tier": "National"})),
        node(
            "pref-31",
            calendar,
            json!({"tier": "Prefecture", "prefecture": "31",
                   "upstream": {"name": "national"}, "template": pref_template}),
        ),
        node(
            "cs-312011",
            calendar,
            json!({"tier": "CS", "municipality": "312011"}),
        ),
        node(
            "cs-312029",
            calendar,
            json!({"tier": "CS", "municipality": "312029"}),
        ),
    ];
    for n in &tree {
        cluster.apply(n, Some(ns)).await.unwrap();
    }
}

/// Two trees side by side, each with its own operator, scraped by one Prometheus:
///
/// - a prefecture whose pods never start inside its window: the prefecture's alert fires and
///   reaches the webhook, its CSs' alerts fire in Prometheus but stay inhibited (one
///   notification, not one per CS), and all of it resolves once the prefecture starts;
/// - a Friday evening through the stop waves, the night's batches and the closed Saturday
///   morning: planned downtime, which raises no alert at all, pending or firing.
///
/// The operator's grace before NotOnline is its readiness timeout plus 5 real minutes whatever
/// the clock's speed, so the first tree takes about six minutes; the second runs meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefecture_down_in_its_window_alerts_once_for_its_tree_and_planned_downtime_alerts_nothing()
 {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    let Some((prometheus_bin, alertmanager_bin)) = monitoring_binaries() else {
        return;
    };
    cluster.install_crds().await;
    let (down_ns, planned_ns) = (cluster.namespace().await, cluster.namespace().await);
    let (calendar, _calendar) = example_calendar(&cluster, "alerts-cal").await;
    // The prefecture of the first tree asks for a node no one has.
    let nowhere = json!({"nodeSelector": {"jukinet.io/nowhere": "true"}});
    tottori(&cluster, &down_ns, &calendar, nowhere).await;
    tottori(&cluster, &planned_ns, &calendar, json!({})).await;

    let (down_op_port, planned_op_port) = (free_port(), free_port());
    let operators = [down_op_port, planned_op_port].map(|p| format!("127.0.0.1:{p}"));
    let monitoring = Monitoring::start(
        &prometheus_bin,
        &alertmanager_bin,
        json!([{
            "job_name": "juki-operator", "honor_labels": true,
            "static_configs": [{"targets": operators}],
        }]),
    )
    .await;
    let (prometheus, alertmanager) = (&monitoring.prometheus, &monitoring.alertmanager);
    let received = &monitoring.received;
    let logs = || monitoring.logs();

    // The first tree: Wednesday 07:25, ×60. The national server starts at once, the prefecture
    // at 07:30 (its pods never get a node), the CSs wait for it from 08:00.
    let down_nodes: Api<JukiNode> = Api::namespaced(cluster.client.clone(), &down_ns);
    let down_tree = async {
        let args = ["--metrics-addr", &operators[0], "--readiness-timeout", "5"];
        let _operator = OperatorProcess::start_with(
            &cluster,
            &down_ns,
            tokyo("2026-11-25T07:25"),
            60,
            "-down",
            &args,
        );
        let ns = down_ns.name.as_str();
        // The CSs' alerts fire in Prometheus...
        let cs_firing = poll_until(
            "the CSs' NotOnline alerts firing",
            Duration::from_secs(600),
            || async {
                let now = alerts_now(prometheus, ns).await;
                ["cs-312011", "cs-312029"].iter().all(|cs| {
                    now.iter().any(|(name, node, state)| {
                        name == "JukiNodeNotOnline" && node == cs && state == "firing"
                    })
                })
            },
        )
        .await;
        if let Err(e) = cs_firing {
            let now = alerts_now(prometheus, ns).await;
            let faults =
                get_json(&format!("{prometheus}/api/v1/query?query=juki_node_fault")).await;
            let phases = phases(&down_nodes).await;
            panic!(
                "{e}: {now:?}\nfaults {faults:?}\nnodes {phases:?}\n{}",
                logs()
            );
        }
        // ...and the prefecture's reached the receiver, alone.
        let pref_notified = poll_until(
            "the prefecture's alert at the receiver",
            Duration::from_secs(60),
            || async {
                received.lock().unwrap().iter().any(|n| {
                    n.status == "firing"
                        && n.alerts
                            .iter()
                            .any(|(name, node, _)| name == "JukiNodeNotOnline" && node == "pref-31")
                })
            },
        )
        .await;
        let got = monitoring.notifications();
        pref_notified.unwrap_or_else(|e| panic!("{e}: {got:?}\n{}", logs()));
        // Several group intervals later, still no word of a CS: Alertmanager holds them inhibited.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let got = monitoring.notifications();
        assert!(
            got.iter()
                .flat_map(|n| &n.alerts)
                .all(|(_, node, _)| !node.starts_with("cs-")),
            "a CS alert got through while its prefecture was down: {got:?}"
        );
        let pref_group = got
            .iter()
            .find(|n| n.alerts.iter().any(|(_, node, _)| node == "pref-31"))
            .unwrap();
        assert_eq!(
            pref_group.group.get("prefecture").map(String::as_str),
            Some("31"),
            "{got:?}"
        );
        let inhibited = get_json(&format!(
            "{alertmanager}/api/v2/alerts?inhibited=true&active=false"
        ))
        .await
        .unwrap();
        let inhibited_cs: Vec<&str> = inhibited
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["labels"]["namespace"] == ns)
            .filter(|a| {
                a["status"]["inhibitedBy"]
                    .as_array()
                    .is_some_and(|b| !b.is_empty())
            })
            .filter_map(|a| a["labels"]["node"].as_str())
            .collect();
        assert!(
            inhibited_cs.contains(&"cs-312011") && inhibited_cs.contains(&"cs-312029"),
            "{inhibited}"
        );

        // The prefecture's pods get a node: it comes Online, its CSs follow, and the receiver
        // hears that the prefecture's alert resolved.
        let patch = json!({"spec": {"template": {"nodeSelector": null}}});
        down_nodes
            .patch("pref-31", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        let resolved = poll_until(
            "the prefecture's alert resolved at the receiver",
            Duration::from_secs(120),
            || async {
                received.lock().unwrap().iter().any(|n| {
                    n.alerts.iter().any(|(name, node, status)| {
                        name == "JukiNodeNotOnline" && node == "pref-31" && status == "resolved"
                    })
                })
            },
        )
        .await;
        let got = monitoring.notifications();
        resolved.unwrap_or_else(|e| panic!("{e}: {got:?}\n{}", logs()));
        let all_online = poll_until(
            "the tree Online and no alert left",
            Duration::from_secs(120),
            || async {
                phases(&down_nodes)
                    .await
                    .iter()
                    .all(|(_, p, _)| *p == Some(NodePhase::Online))
                    && alerts_now(prometheus, ns).await.is_empty()
            },
        )
        .await;
        let now = alerts_now(prometheus, ns).await;
        let phases = phases(&down_nodes).await;
        all_online.unwrap_or_else(|e| panic!("{e}: {now:?} {phases:?}"));
    };

    // The second tree: Friday 20:30 to Saturday 08:30, ×120 (six minutes). It starts, stops
    // in waves (CSs 21:00, prefecture 21:30, national 22:00), runs the night's batches, and
    // stays down through the hours a weekday's windows would have opened.
    let planned_nodes: Api<JukiNode> = Api::namespaced(cluster.client.clone(), &planned_ns);
    let planned_downtime = async {
        let args = ["--metrics-addr", &operators[1]];
        let operator = OperatorProcess::start_with(
            &cluster,
            &planned_ns,
            tokyo("2026-11-27T20:30"),
            120,
            "-planned",
            &args,
        );
        let ns = planned_ns.name.as_str();
        let expected_online = format!("sum(juki_node_expected_online{{namespace=\"{ns}\"}})");
        let mut seen = Vec::new();
        let mut expected_seen = Vec::new();
        while operator.clock.now() < tokyo("2026-11-28T08:30") {
            seen.extend(alerts_now(prometheus, ns).await);
            expected_seen.extend(scalar(prometheus, &expected_online).await);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        seen.sort();
        seen.dedup();
        assert!(seen.is_empty(), "alerts during planned downtime: {seen:?}");
        // Watched the whole time: the four nodes expected up in the evening (the operator
        // assesses them one by one, so the first samples may count fewer), none in the end.
        assert!(expected_seen.contains(&4.0), "{expected_seen:?}");
        assert_eq!(expected_seen.last(), Some(&0.0), "{expected_seen:?}");
        for (name, phase, _) in phases(&planned_nodes).await {
            assert_eq!(phase, Some(NodePhase::Offline), "{name}");
        }
        let batches = planned_nodes.list(&Default::default()).await.unwrap().items;
        for n in batches {
            let last = n.status.and_then(|s| s.last_batch).map(|b| b.date);
            assert_eq!(
                last.as_deref(),
                Some("2026-11-27"),
                "{:?} ran its batches",
                n.metadata.name
            );
        }
    };
    tokio::join!(down_tree, planned_downtime);
}

/// Asserts that Prometheus holds exactly one `alertname` series in `ns`, with `labels` and
/// `prefecture`.
async fn assert_only_alert(
    prometheus: &str,
    ns: &str,
    alertname: &str,
    labels: &[(&str, &str)],
    prefecture: &str,
) {
    let q = format!("ALERTS{{namespace=\"{ns}\",alertname=\"{alertname}\"}}");
    let alert = query(prometheus, &q).await;
    assert_eq!(alert.len(), 1, "{alert:?}");
    for (key, value) in labels.iter().chain(&[("prefecture", prefecture)]) {
        assert_eq!(
            alert[0]["metric"][key].as_str(),
            Some(*value),
            "{key}: {alert:?}"
        );
    }
}

/// The result vector of an instant query.
async fn query(prometheus: &str, query: &str) -> Vec<Value> {
    let v = get_json(&format!(
        "{prometheus}/api/v1/query?query={}",
        url_encoded(query)
    ))
    .await
    .unwrap_or_else(|e| panic!("querying Prometheus for {query}: {e}"));
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// National, prefecture `pref` and its CS `municipality` in `ns` as real pods on the real node
/// (SQLite and backups on claims); their names, top down.
async fn real_tree(
    cluster: &juki_tests::TestCluster,
    ns: &str,
    calendar: &str,
    pref: &str,
    municipality: &str,
) -> [String; 3] {
    let names = [
        "national".to_string(),
        format!("pref-{pref}"),
        format!("cs-{municipality}"),
    ];
    let specs = [
        json!({"tier": "National"}),
        json!({"tier": "Prefecture", "prefecture": pref, "upstream": {"name": names[0]}}),
        json!({"tier": "CS", "municipality": municipality, "upstream": {"name": names[1]}}),
    ];
    for (name, spec) in names.iter().zip(specs) {
        let node = real_juki_node(name, calendar, spec);
        cluster.apply(&node, Some(ns)).await.unwrap();
    }
    names
}

/// A real tree on the real node, its pods scraped as the chart's PodMonitor scrapes them:
/// 1. the network between the CS and its prefecture is cut while both pods run. What fires is
///    the link, named with its upstream, and nothing about either node; mending it resolves
///    the alert at the receiver;
/// 2. the CS's pod then keeps dying in its window: the CS's own alert, not the link's nor the
///    nodes' above it, and resolved when the pod may live again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_and_a_dying_cs_pod_alert_as_what_they_are_and_resolve_when_mended() {
    let Some(cluster) = juki_tests::require_real_node!() else {
        return;
    };
    let Some((prometheus_bin, alertmanager_bin)) = monitoring_binaries() else {
        return;
    };
    cluster.install_crds().await;
    let ns_guard = cluster.namespace().await;
    let ns = ns_guard.name.as_str();
    let (calendar, _calendar) = example_calendar(&cluster, "link-cal").await;
    // Shimane and Matsue's CS.
    let tree = real_tree(&cluster, ns, &calendar, "32", "322016").await;
    let (pref, cs) = (tree[1].as_str(), tree[2].as_str());
    // Wednesday 10:00 at the speed of real time: inside every window for the whole test.
    let operator_addr = format!("127.0.0.1:{}", free_port());
    let flags = ["--metrics-addr", &operator_addr];
    let _operator = real_operator(&cluster, ns, tokyo("2026-11-25T10:00"), 1, "-link", &flags);
    let nodes: Api<JukiNode> = Api::namespaced(cluster.client.clone(), ns);
    let online = poll_until("the tree Online", Duration::from_secs(240), || async {
        let now = phases(&nodes).await;
        now.len() == 3 && now.iter().all(|(_, p, _)| *p == Some(NodePhase::Online))
    })
    .await;
    let now = phases(&nodes).await;
    online.unwrap_or_else(|e| panic!("{e}: {now:?}"));

    // Each node's pod IP, labelled as the PodMonitor labels it.
    let mut ips = BTreeMap::new();
    for name in &tree {
        let ip = node_pods(&cluster, ns, name)
            .await
            .iter()
            .find_map(|p| p.status.as_ref()?.pod_ip.clone())
            .unwrap_or_else(|| panic!("no pod IP for {name}"));
        ips.insert(name.as_str(), ip);
    }
    let pod_targets: Vec<Value> = ips
        .iter()
        .map(|(name, ip)| {
            json!({"targets": [format!("{ip}:{}", juki_operator::resources::PORT)],
                   "labels": {"namespace": ns, "node": name}})
        })
        .collect();
    let monitoring = Monitoring::start(
        &prometheus_bin,
        &alertmanager_bin,
        json!([
            {"job_name": "juki-operator", "honor_labels": true,
             "static_configs": [{"targets": [operator_addr]}]},
            {"job_name": "juki-node", "static_configs": pod_targets},
        ]),
    )
    .await;
    let prometheus = monitoring.prometheus.as_str();
    let link_up = |node: &str| {
        let q = format!("juki_node_link_up{{namespace=\"{ns}\",node=\"{node}\"}}");
        async move { scalar(prometheus, &q).await }
    };
    let both_up = poll_until(
        "both links up in Prometheus",
        Duration::from_secs(120),
        || async { link_up(cs).await == Some(1.0) && link_up(pref).await == Some(1.0) },
    )
    .await;
    both_up.unwrap_or_else(|e| panic!("{e}\n{}", monitoring.logs()));
    let before = alerts_now(prometheus, ns).await;
    assert!(before.is_empty(), "alerts before the cut: {before:?}");

    // The cut: the CS's packets to the prefecture's pod go nowhere.
    let cut = LinkCut::new(&ips[cs], &ips[pref]);
    let fired = poll_until(
        "JukiLinkDown firing for the CS",
        Duration::from_secs(120),
        || async {
            alerts_now(prometheus, ns)
                .await
                .iter()
                .any(|(name, node, state)| {
                    name == "JukiLinkDown" && node == cs && state == "firing"
                })
        },
    )
    .await;
    if let Err(e) = fired {
        let now = alerts_now(prometheus, ns).await;
        let links = query(prometheus, "juki_node_link_up").await;
        let expected = query(prometheus, "juki_node_expected_online").await;
        panic!("{e}: {now:?}\nlinks {links:?}\nexpected {expected:?}\n{ips:?}");
    }
    let notified = poll_until(
        "the link's alert at the receiver",
        Duration::from_secs(60),
        || async {
            monitoring.notifications().iter().any(|n| {
                n.status == "firing"
                    && n.alerts
                        .iter()
                        .any(|(name, node, _)| name == "JukiLinkDown" && node == cs)
            })
        },
    )
    .await;
    notified.unwrap_or_else(|e| panic!("{e}: {:?}", monitoring.notifications()));
    // The alert names the link's far end; nothing else fires: both nodes are up and Online,
    // and the prefecture's own link to the national server is fine.
    let link_alert = query(
        prometheus,
        &format!("ALERTS{{namespace=\"{ns}\",alertname=\"JukiLinkDown\"}}"),
    )
    .await;
    let upstream = link_alert[0]["metric"]["upstream"]
        .as_str()
        .unwrap_or_default();
    assert!(upstream.starts_with(&format!("{pref}.")), "{link_alert:?}");
    assert_eq!(
        link_alert[0]["metric"]["prefecture"].as_str(),
        Some("32"),
        "{link_alert:?}"
    );
    let others: Vec<_> = alerts_now(prometheus, ns)
        .await
        .into_iter()
        .filter(|(name, node, _)| !(name == "JukiLinkDown" && node == cs))
        .collect();
    assert!(
        others.is_empty(),
        "a link fault is not a node fault: {others:?}"
    );
    assert_eq!(link_up(pref).await, Some(1.0));
    for (name, phase, _) in phases(&nodes).await {
        assert_eq!(phase, Some(NodePhase::Online), "{name} during the cut");
    }

    // Mended: the next probe answers, and the receiver hears the alert resolved.
    drop(cut);
    let resolved = poll_until(
        "the link's alert resolved at the receiver",
        Duration::from_secs(120),
        || async {
            monitoring.notifications().iter().any(|n| {
                n.alerts.iter().any(|(name, node, status)| {
                    name == "JukiLinkDown" && node == cs && status == "resolved"
                })
            })
        },
    )
    .await;
    resolved.unwrap_or_else(|e| panic!("{e}: {:?}", monitoring.notifications()));
    assert_eq!(link_up(cs).await, Some(1.0));

    // Then the CS's pod dies in its window, again and again (its process killed: the kubelet
    // restarts it into CrashLoopBackOff): no ready replica while the calendar says Online. The
    // CS's own JukiNodeNotOnline reaches the receiver with its tier and prefecture, and nothing
    // about the nodes above it; once the pod may live, it comes back and the alert resolves.
    let pod = node_pods(&cluster, ns, cs).await.into_iter().next();
    let uid = pod.and_then(|p| p.metadata.uid).expect("the CS's pod");
    let killer = PodKiller::start(&uid, "juki-node");
    monitoring
        .until_heard(
            &nodes,
            ns,
            ("JukiNodeNotOnline", cs, "firing"),
            Duration::from_secs(120),
        )
        .await;
    let cs_labels = [("node", cs), ("tier", "CS"), ("severity", "critical")];
    assert_only_alert(prometheus, ns, "JukiNodeNotOnline", &cs_labels, "32").await;
    let above: Vec<_> = alerts_now(prometheus, ns)
        .await
        .into_iter()
        .filter(|(_, node, _)| node != cs)
        .collect();
    assert!(above.is_empty(), "the nodes above serve on: {above:?}");
    let killed = killer.stop();
    assert!(
        killed >= 1,
        "no juki-node process of pod {uid} was found to kill"
    );
    monitoring
        .until_heard(
            &nodes,
            ns,
            ("JukiNodeNotOnline", cs, "resolved"),
            Duration::from_secs(240),
        )
        .await;
    for (name, phase, _) in phases(&nodes).await {
        assert_eq!(
            phase,
            Some(NodePhase::Online),
            "{name} after the CS came back"
        );
    }
}

/// A real tree whose CS's backup volume is full (a 4 KiB tmpfs where the provisioner puts it):
/// on Wednesday night the CS's real backup Job fails, and JukiBatchFailed reaches the receiver
/// with the CS's labels; the volume mended, Thursday night's backup succeeds and the receiver
/// hears the alert resolved. At ×600 a day lasts 144 real seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_failing_on_a_full_volume_alerts_for_its_node_until_a_night_succeeds() {
    let Some(cluster) = juki_tests::require_real_node!() else {
        return;
    };
    let Some((prometheus_bin, alertmanager_bin)) = monitoring_binaries() else {
        return;
    };
    cluster.install_crds().await;
    let ns_guard = cluster.namespace().await;
    let ns = ns_guard.name.as_str();
    let (calendar, _calendar) = example_calendar(&cluster, "batch-cal").await;
    // Tottori and Tottori city's CS.
    let [_, _, cs] = &real_tree(&cluster, ns, &calendar, "31", "312011").await;
    let cs = cs.as_str();
    let operator_addr = format!("127.0.0.1:{}", free_port());
    let flags = ["--metrics-addr", &operator_addr];
    // Wednesday 14:00: the CSs' window ends at 21:00, 42 real seconds later.
    let _operator = real_operator(
        &cluster,
        ns,
        tokyo("2026-11-25T14:00"),
        600,
        "-batch",
        &flags,
    );
    let monitoring = Monitoring::start(
        &prometheus_bin,
        &alertmanager_bin,
        json!([{"job_name": "juki-operator", "honor_labels": true,
                "static_configs": [{"targets": [operator_addr]}]}]),
    )
    .await;
    let prometheus = monitoring.prometheus.as_str();

    // The operator makes the CS's backups claim with the node; the provisioner makes its
    // volume when the first backup Job is scheduled, on the full disk.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.client.clone(), ns);
    let claim_name = format!("{cs}-backups");
    let claim = poll_until(
        "the CS's backups claim",
        Duration::from_secs(60),
        || async { claims.get_opt(&claim_name).await.ok().flatten().is_some() },
    )
    .await;
    claim.unwrap_or_else(|e| panic!("{e}"));
    let claim = claims.get(&claim_name).await.unwrap();
    let full = FullVolume::mount(claim.metadata.uid.as_deref().unwrap());

    let nodes: Api<JukiNode> = Api::namespaced(cluster.client.clone(), ns);
    monitoring
        .until_heard(
            &nodes,
            ns,
            ("JukiBatchFailed", cs, "firing"),
            Duration::from_secs(240),
        )
        .await;
    let cs_labels = [("node", cs), ("tier", "CS"), ("severity", "critical")];
    assert_only_alert(prometheus, ns, "JukiBatchFailed", &cs_labels, "31").await;
    let last_batch = |n: JukiNode| {
        let b = n.status.and_then(|s| s.last_batch);
        b.map(|b| (b.date, b.outcome))
    };
    assert_eq!(
        last_batch(nodes.get(cs).await.unwrap()),
        Some(("2026-11-25".into(), "Failed".into()))
    );

    // Mended: Thursday night's backup goes to the claim's own directory again.
    drop(full);
    monitoring
        .until_heard(
            &nodes,
            ns,
            ("JukiBatchFailed", cs, "resolved"),
            Duration::from_secs(360),
        )
        .await;
    assert_eq!(
        last_batch(nodes.get(cs).await.unwrap()),
        Some(("2026-11-26".into(), "Succeeded".into()))
    );
}
