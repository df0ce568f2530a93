//! The Helm charts (charts/) and the Dockerfiles (docker/).
//!
//! Without a cluster: the chart CRDs equal the generated ones, the ready-made prefecture values
//! are current, every values schema refuses unknown keys, the Dockerfiles copy files that exist
//! and build packages and binaries that exist, and (`helm template` from the cache) the operator
//! chart installs the promtool-tested alert rules file as a PrometheusRule with the Prometheus
//! Operator's API and as a ConfigMap without it.
//!
//! Against the local control plane: `helm lint --strict`, `helm template | kubectl apply
//! --dry-run=server`, installing the operator, the national chart and two prefectures, `helm
//! upgrade` of a prefecture's online end, and `helm uninstall` of a prefecture with the operator
//! running (its nodes go, and so do the Deployments, Services and ConfigMaps the operator made for
//! them, through owner references and the garbage collector).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use juki_operator::api::JukiNode;
use juki_tests::cluster::{poll_until, repo_root, unique_name};
use juki_tests::operator::OperatorProcess;
use juki_tests::{TestCluster, require_cluster};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, ListParams};
use serde_json::Value;

const CHARTS: [&str; 4] = [
    "juki-operator",
    "juki-national",
    "juki-prefecture",
    "juki-callcenter",
];

fn chart(name: &str) -> String {
    repo_root().join("charts").join(name).display().to_string()
}

fn prefecture_values(code: &str) -> PathBuf {
    let dir = repo_root().join("charts/juki-prefecture/values");
    let prefix = format!("{code}-");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .unwrap_or_else(|| panic!("no values file for prefecture {code}"))
}

/// The municipality codes listed in a values file.
fn municipalities(values: &Path) -> Vec<String> {
    let v: Value = serde_yaml::from_str(&std::fs::read_to_string(values).unwrap()).unwrap();
    v["municipalities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["code"].as_str().unwrap().to_owned())
        .collect()
}

/// The files of a directory, by name, with their contents.
fn files(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_operator_chart_crds_equal_the_generated_crds() {
    let root = repo_root();
    let chart = files(&root.join("charts/juki-operator/crds"));
    let generated = files(&root.join("crds"));
    assert!(
        chart == generated,
        "charts/juki-operator/crds/ differs from crds/: run `cargo run -p juki-operator --bin crdgen` \
         (chart: {:?}, generated: {:?})",
        chart.iter().map(|f| &f.0).collect::<Vec<_>>(),
        generated.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
}

/// `helm template` of the operator chart with `args`, as (kind, object) pairs; `None` (skipped)
/// without a built helm. No cluster: the capabilities are helm's defaults plus `--api-versions`.
fn template_operator(args: &[&str]) -> Option<Vec<(String, serde_yaml::Value)>> {
    template("juki-operator", "jukinet-system", args)
}

/// The objects `helm template` renders from chart `name` in `namespace`, with their kinds.
fn template(
    name: &str,
    namespace: &str,
    args: &[&str],
) -> Option<Vec<(String, serde_yaml::Value)>> {
    let helm = juki_tests::cluster::require_built("helm")?;
    let out = Command::new(helm)
        .args(["template", "t", &chart(name), "-n", namespace])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    Some(
        serde_yaml::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap())
            .filter(|v: &serde_yaml::Value| !v.is_null())
            .map(|v| (v["kind"].as_str().unwrap_or_default().to_owned(), v))
            .collect(),
    )
}

fn kinds(objects: &[(String, serde_yaml::Value)]) -> Vec<&str> {
    let mut kinds: Vec<&str> = objects.iter().map(|(k, _)| k.as_str()).collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

const MONITORING_KINDS: [&str; 3] = ["PodMonitor", "PrometheusRule", "ServiceMonitor"];

#[test]
fn the_operator_chart_installs_the_tested_alert_rules_as_a_prometheus_rule_with_the_prometheus_operator()
 {
    let Some(objects) = template_operator(&["--api-versions", "monitoring.coreos.com/v1"]) else {
        return;
    };
    let rules_file = repo_root().join("charts/juki-operator/rules/jukinet-alerts.yaml");
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(rules_file).unwrap()).unwrap();
    let find = |kind: &str| {
        objects
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no {kind} in {:?}", kinds(&objects)))
    };
    // The very file promtool tests, not a copy.
    assert_eq!(find("PrometheusRule")["spec"], rules);
    let monitor = find("ServiceMonitor");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"].as_str(), Some("metrics"));
    assert_eq!(endpoint["honorLabels"].as_bool(), Some(true));
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"].as_str(),
        Some("t")
    );
    let pods = find("PodMonitor");
    assert_eq!(
        pods["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as_str(),
        Some("juki-node")
    );
    assert_eq!(
        pods["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["targetLabel"].as_str(),
        Some("node")
    );
    assert!(
        !objects
            .iter()
            .any(|(k, v)| k == "ConfigMap" && v["data"].get("jukinet-alerts.yaml").is_some()),
        "no plain-Prometheus ConfigMap when the Prometheus Operator is there"
    );

    // Each one can be turned off.
    let Some(off) = template_operator(&[
        "--api-versions",
        "monitoring.coreos.com/v1",
        "--set",
        "monitoring.rules.enabled=false",
        "--set",
        "monitoring.serviceMonitor.enabled=false",
        "--set",
        "monitoring.podMonitor.enabled=false",
    ]) else {
        return;
    };
    let found = kinds(&off);
    assert!(
        MONITORING_KINDS.iter().all(|k| !found.contains(k)) && !found.contains(&"ConfigMap"),
        "{found:?}"
    );
}

#[test]
fn the_operator_chart_installs_the_tested_alert_rules_as_a_config_map_for_a_plain_prometheus() {
    let Some(objects) = template_operator(&[]) else {
        return;
    };
    let found = kinds(&objects);
    assert!(
        MONITORING_KINDS.iter().all(|k| !found.contains(k)),
        "no Prometheus Operator kinds without its API: {found:?}"
    );
    let config = objects
        .iter()
        .map(|(_, v)| v)
        .find(|v| v["metadata"]["name"].as_str() == Some("t-juki-operator-monitoring"))
        .unwrap_or_else(|| panic!("no monitoring ConfigMap in {found:?}"));
    let dir = repo_root().join("charts/juki-operator/rules");
    for file in ["jukinet-alerts.yaml", "alertmanager.yaml"] {
        let source = std::fs::read_to_string(dir.join(file)).unwrap();
        assert_eq!(
            config["data"][file].as_str().map(str::trim_end),
            Some(source.trim_end()),
            "{file} in the ConfigMap is the file itself"
        );
    }
    let scrape: serde_yaml::Value =
        serde_yaml::from_str(config["data"]["scrape-configs.yaml"].as_str().unwrap()).unwrap();
    let jobs: Vec<&str> = scrape
        .as_sequence()
        .unwrap()
        .iter()
        .map(|j| j["job_name"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["juki-operator", "juki-node"]);
    assert_eq!(scrape[0]["honor_labels"].as_bool(), Some(true));
    // The promtool unit tests stay out of the chart.
    assert!(
        !config["data"]
            .as_mapping()
            .unwrap()
            .keys()
            .any(|k| k.as_str().is_some_and(|k| k.contains("test"))),
        "{config:?}"
    );
}

/// The operator's container environment, as (name, value) pairs.
fn operator_env(objects: &[(String, serde_yaml::Value)]) -> Vec<(String, String)> {
    let deployment = objects
        .iter()
        .find(|(k, _)| k == "Deployment")
        .map(|(_, v)| v)
        .expect("the operator's Deployment");
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (text("name"), text("value"))
        })
        .collect()
}

#[test]
fn the_operator_chart_exports_spans_only_to_a_configured_plain_http_collector() {
    let Some(default) = template_operator(&[]) else {
        return;
    };
    assert!(
        operator_env(&default)
            .iter()
            .all(|(name, _)| !name.starts_with("OTEL_")),
        "no span leaves by default"
    );
    let endpoint = "http://otel-collector.monitoring:4318";
    let set = template_operator(&[
        "--set",
        &format!("monitoring.traces.otlpEndpoint={endpoint}"),
    ])
    .unwrap();
    assert!(
        operator_env(&set).contains(&("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.into())),
        "{:?}",
        operator_env(&set)
    );
    // The schema refuses what the operator would refuse at its start.
    let helm = juki_tests::cluster::require_built("helm").unwrap();
    let out = Command::new(helm)
        .args(["template", "t", &chart("juki-operator")])
        .args([
            "--set",
            "monitoring.traces.otlpEndpoint=https://collector:4318",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("otlpEndpoint"),
        "{stderr}"
    );
}

/// The NetworkPolicies a chart renders: (name, the pods it selects, the peers it admits).
fn network_policies(
    name: &str,
    namespace: &str,
    args: &[&str],
) -> Option<Vec<(String, serde_yaml::Value, Vec<serde_yaml::Value>)>> {
    let objects = template(name, namespace, args)?;
    Some(
        objects
            .into_iter()
            .filter(|(kind, _)| kind == "NetworkPolicy")
            .map(|(_, p)| {
                let spec = &p["spec"];
                assert_eq!(
                    spec["policyTypes"],
                    serde_yaml::from_str::<serde_yaml::Value>("[Ingress]").unwrap()
                );
                let rules = spec["ingress"].as_sequence().unwrap();
                assert_eq!(rules.len(), 1, "one rule: the node's port");
                assert_eq!(rules[0]["ports"][0]["port"], 8080);
                (
                    p["metadata"]["name"].as_str().unwrap().to_owned(),
                    spec["podSelector"]["matchLabels"].clone(),
                    rules[0]["from"].as_sequence().unwrap().clone(),
                )
            })
            .collect(),
    )
}

fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap()
}

#[test]
fn the_node_charts_admit_to_each_node_only_its_callers_in_the_tree_and_the_operator() {
    let operator = yaml(
        "{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: jukinet-system}}, \
         podSelector: {matchLabels: {app.kubernetes.io/name: juki-operator}}}",
    );
    let tokyo = prefecture_values("13").display().to_string();
    let Some(prefecture) = network_policies("juki-prefecture", "juki-pref-13", &["-f", &tokyo])
    else {
        return;
    };
    let [(server, server_pods, server_from), (cs, cs_pods, cs_from)] = &prefecture[..] else {
        panic!("two policies: {prefecture:?}");
    };
    assert_eq!((server.as_str(), cs.as_str()), ("pref-13", "t-cs"));
    assert_eq!(server_pods, &yaml("{jukinet.io/node: pref-13}"));
    // Its own CSs: this namespace (no namespaceSelector) and this prefecture only.
    let own_cs = yaml(
        "{podSelector: {matchLabels: {app.kubernetes.io/name: juki-node, jukinet.io/tier: CS, \
         jukinet.io/prefecture: '13'}}}",
    );
    assert_eq!(server_from, &vec![own_cs.clone(), operator.clone()]);
    // Nothing calls a CS down the tree: the operator alone.
    assert_eq!(cs_pods, &own_cs["podSelector"]["matchLabels"]);
    assert_eq!(cs_from, &vec![operator.clone()]);

    let national = network_policies(
        "juki-national",
        "juki-national",
        &["--set", "calendar.name=c"],
    )
    .unwrap();
    let [(name, pods, from)] = &national[..] else {
        panic!("one policy: {national:?}");
    };
    assert_eq!(
        (name.as_str(), pods),
        ("national", &yaml("{jukinet.io/node: national}"))
    );
    let prefectures = yaml(
        "{namespaceSelector: {}, podSelector: {matchLabels: {app.kubernetes.io/name: juki-node, \
         jukinet.io/tier: Prefecture}}}",
    );
    assert_eq!(from, &vec![prefectures.clone(), operator.clone()]);

    // The listed peers and the API server's addresses join every node's list; off, none.
    let extra = r#"networkPolicy.extraFrom=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]"#;
    let more = network_policies(
        "juki-national",
        "juki-national",
        &[
            "--set",
            "calendar.name=c",
            "--set-json",
            extra,
            "--set",
            "networkPolicy.apiServerCIDRs={10.0.0.1/32}",
        ],
    )
    .unwrap();
    let monitoring =
        yaml("{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}");
    let api_server = yaml("{ipBlock: {cidr: 10.0.0.1/32}}");
    assert_eq!(
        more[0].2,
        vec![prefectures, operator, api_server, monitoring]
    );
    for (chart, ns, args) in [
        (
            "juki-national",
            "juki-national",
            vec!["--set", "calendar.name=c"],
        ),
        ("juki-prefecture", "juki-pref-13", vec!["-f", &tokyo]),
    ] {
        let off = [&args[..], &["--set", "networkPolicy.enabled=false"]].concat();
        assert!(
            network_policies(chart, ns, &off).unwrap().is_empty(),
            "{chart}"
        );
    }
}

#[test]
fn the_node_charts_give_each_node_its_backups_volume() {
    let Some(objects) = template(
        "juki-prefecture",
        "juki-pref-44",
        &[
            "--set-string",
            "prefecture=44,municipalities[0].code=442011",
            "--set",
            "cs.backups.storageSize=3Gi,cs.backups.whenDeleted=Delete",
        ],
    ) else {
        return;
    };
    let backups = |name: &str| {
        let node = objects
            .iter()
            .find(|(kind, o)| kind == "JukiNode" && o["metadata"]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no JukiNode {name}"));
        node.1["spec"]["backups"].clone()
    };
    assert_eq!(
        backups("pref-44"),
        yaml("{storageSize: '1Gi', whenDeleted: Retain}")
    );
    assert_eq!(
        backups("cs-442011"),
        yaml("{storageSize: '3Gi', whenDeleted: Delete}")
    );
    let national = template(
        "juki-national",
        "juki-national",
        &[
            "--set",
            "calendar.name=c",
            "--set",
            "node.backups.storageClassName=slow",
        ],
    )
    .unwrap();
    let node = national
        .iter()
        .find(|(kind, _)| kind == "JukiNode")
        .unwrap();
    assert_eq!(node.1["spec"]["backups"]["storageClassName"], "slow");
}

#[test]
fn the_prefecture_values_files_are_current() {
    let root = repo_root();
    let csv = root.join("data/municipalities.csv");
    assert!(csv.is_file(), "{} is missing", csv.display());
    let out = std::env::temp_dir().join(unique_name("juki-prefecture-values"));
    let status = Command::new("python3")
        .arg(root.join("scripts/gen-prefecture-values"))
        .arg(&out)
        .arg(&csv)
        .stderr(Stdio::null())
        .status()
        .expect("running python3 scripts/gen-prefecture-values");
    assert!(status.success());
    let fresh = files(&out);
    let _ = std::fs::remove_dir_all(&out);
    let committed = files(&root.join("charts/juki-prefecture/values"));
    assert_eq!(fresh.len(), 47, "one file per prefecture");
    assert!(
        fresh == committed,
        "charts/juki-prefecture/values/ is stale: run scripts/gen-prefecture-values"
    );
    let total: usize = committed
        .iter()
        .map(|(name, _)| {
            municipalities(&root.join("charts/juki-prefecture/values").join(name)).len()
        })
        .sum();
    assert_eq!(total, 1741, "one CS per municipality");
}

/// Every object schema with properties, anywhere in the document, has additionalProperties false
/// (maps say what their values are instead).
fn check_closed(schema: &Value, path: &str, problems: &mut Vec<String>) {
    match schema {
        Value::Object(map) => {
            if map.contains_key("properties")
                && map.get("additionalProperties") != Some(&Value::Bool(false))
            {
                problems.push(path.to_owned());
            }
            if map.get("additionalProperties") == Some(&Value::Bool(true)) {
                problems.push(format!("{path} (additionalProperties: true)"));
            }
            for (k, v) in map {
                check_closed(v, &format!("{path}/{k}"), problems);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                check_closed(v, &format!("{path}/{i}"), problems);
            }
        }
        _ => {}
    }
}

#[test]
fn every_values_schema_refuses_unknown_keys_and_every_value_is_commented() {
    for name in CHARTS {
        let dir = repo_root().join("charts").join(name);
        let schema: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("values.schema.json")).unwrap())
                .unwrap();
        let mut problems = vec![];
        check_closed(&schema, "", &mut problems);
        assert!(
            problems.is_empty(),
            "{name}: schemas without additionalProperties: false: {problems:?}"
        );
        // Every value line of values.yaml is commented: it, or the block it belongs to, has a
        // comment right above it.
        let values = std::fs::read_to_string(dir.join("values.yaml")).unwrap();
        let lines: Vec<&str> = values.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') || t.ends_with(':') {
                continue;
            }
            assert!(
                commented(&lines, i),
                "{name}/values.yaml line {}: `{t}` has no comment",
                i + 1
            );
        }
        assert!(
            dir.join("templates/NOTES.txt").is_file(),
            "{name} has NOTES.txt"
        );
    }
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Whether line `i` or one of its enclosing blocks is directly preceded by a comment line.
fn commented(lines: &[&str], mut i: usize) -> bool {
    loop {
        if i > 0 && lines[i - 1].trim_start().starts_with('#') {
            return true;
        }
        let level = indent(lines[i]);
        let parent = lines[..i].iter().rposition(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && indent(l) < level
        });
        match parent {
            Some(p) if level > 0 => i = p,
            _ => return false,
        }
    }
}

/// `-p PACKAGE --bin BIN` of every `cargo build` in a Dockerfile.
fn cargo_targets(dockerfile: &str) -> Vec<(String, String)> {
    let text = dockerfile.replace("\\\n", " ");
    let mut out = vec![];
    for line in text.lines().filter(|l| l.contains("cargo build")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| {
            words
                .iter()
                .position(|w| *w == flag)
                .map(|i| words[i + 1].to_owned())
                .unwrap_or_else(|| panic!("`{line}` has no {flag}"))
        };
        assert!(
            line.contains("--release") && line.contains("--locked"),
            "`{line}` builds with --release --locked"
        );
        out.push((after("-p"), after("--bin")));
    }
    out
}

#[test]
fn the_dockerfiles_copy_files_that_exist_and_build_real_binaries() {
    let root = repo_root();
    let metadata = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .expect("cargo metadata");
    assert!(metadata.status.success());
    let metadata: Value = serde_json::from_slice(&metadata.stdout).unwrap();
    let has_bin = |package: &str, bin: &str| {
        metadata["packages"].as_array().unwrap().iter().any(|p| {
            p["name"] == package
                && p["targets"].as_array().unwrap().iter().any(|t| {
                    t["name"] == bin && t["kind"].as_array().unwrap().iter().any(|k| k == "bin")
                })
        })
    };
    for (file, bin) in [
        ("docker/operator.Dockerfile", "juki-operator"),
        ("docker/juki-node.Dockerfile", "juki-node"),
        ("docker/callcenter.Dockerfile", "juki-callcenter"),
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let joined = text.replace("\\\n", " ");
        for line in joined.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("COPY ") {
                if rest.starts_with("--from") {
                    continue;
                }
                let words: Vec<&str> = rest.split_whitespace().collect();
                for src in &words[..words.len() - 1] {
                    assert!(
                        root.join(src).exists(),
                        "{file}: COPY source {src} is missing"
                    );
                }
            }
        }
        // cargo resolves the lock file with every workspace member's manifest.
        for member in metadata["workspace_members"].as_array().unwrap() {
            let package = metadata["packages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["id"] == *member)
                .unwrap();
            let manifest = Path::new(package["manifest_path"].as_str().unwrap());
            let dir = manifest
                .parent()
                .unwrap()
                .strip_prefix(&root)
                .unwrap()
                .display()
                .to_string();
            assert!(
                joined
                    .lines()
                    .any(|l| l.trim() == "COPY . ." || l.trim() == format!("COPY {dir} {dir}")),
                "{file}: does not COPY the workspace member {dir}"
            );
            let ignore =
                std::fs::read_to_string(root.join(format!("{file}.dockerignore"))).unwrap();
            assert!(
                !ignore.lines().any(|l| l.trim() == dir),
                "{file}.dockerignore leaves out the workspace member {dir}"
            );
        }
        let targets = cargo_targets(&text);
        assert_eq!(targets.len(), 1, "{file}: one cargo build");
        for (package, b) in &targets {
            assert!(
                has_bin(package, b),
                "{file}: package {package} has no binary {b}"
            );
            assert_eq!(b, bin);
        }
        assert!(
            text.contains(&format!("target/release/{bin}")),
            "{file} copies the release binary"
        );
        // scripts/images builds with bases made here; a registry machine uses the defaults.
        for arg in ["ARG BUILDER_IMAGE=", "ARG RUNTIME_IMAGE="] {
            assert!(
                joined.contains(arg),
                "{file} takes its base image as {arg}…"
            );
        }
        assert!(
            joined.contains("COPY . .") || joined.contains("COPY .cargo .cargo"),
            "{file} builds with the workspace's .cargo/config.toml"
        );
        let stages = joined.lines().filter(|l| l.starts_with("FROM ")).count();
        assert!(stages >= 2, "{file} is multi-stage");
        let user = joined
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("USER "))
            .unwrap_or_else(|| panic!("{file} sets USER"));
        assert!(
            !user.starts_with("root") && !user.starts_with("0"),
            "{file} runs as non-root, not {user}"
        );
        assert!(
            joined.contains("HEALTHCHECK") && joined.contains("/healthz"),
            "{file} has a HEALTHCHECK on /healthz"
        );
    }
}

/// A Helm release uninstalled (blocking) when dropped, even while a failed test unwinds.
struct Release {
    helm: PathBuf,
    kubeconfig: PathBuf,
    name: String,
    namespace: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = Command::new(&self.helm)
            .env("KUBECONFIG", &self.kubeconfig)
            .args([
                "uninstall",
                &self.name,
                "-n",
                &self.namespace,
                "--ignore-not-found",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

async fn helm(cluster: &TestCluster, args: &[&str]) -> String {
    let (ok, out, err) = cluster.run("helm", args, None).await;
    assert!(ok, "helm {} failed: {err}\n{out}", args.join(" "));
    out
}

async fn install(
    cluster: &TestCluster,
    name: &str,
    chart_name: &str,
    namespace: &str,
    extra: &[&str],
) -> Release {
    let release = Release {
        helm: cluster.tool("helm"),
        kubeconfig: cluster.kubeconfig.clone(),
        name: name.to_owned(),
        namespace: namespace.to_owned(),
    };
    let chart = chart(chart_name);
    let mut args = vec!["install", name, &chart, "-n", namespace];
    args.extend_from_slice(extra);
    helm(cluster, &args).await;
    release
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chart_lints_strictly_and_its_templates_pass_server_dry_run() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace().await;
    let tokyo = prefecture_values("13").display().to_string();
    for (name, extra) in [
        ("juki-operator", vec!["--include-crds"]),
        (
            "juki-national",
            vec!["--set", "calendar.name=dry-run-calendar"],
        ),
        ("juki-prefecture", vec!["-f", &tokyo]),
        // With mutual TLS: the Secret mounts and spec.tls pass the API server's checks too.
        (
            "juki-operator",
            vec!["--set", "nodeTls.secretName=juki-operator-tls"],
        ),
        (
            "juki-national",
            vec![
                "--set",
                "calendar.name=dry-run-calendar",
                "--set",
                "tls.enabled=true",
            ],
        ),
        (
            "juki-prefecture",
            vec!["-f", &tokyo, "--set", "tls.enabled=true"],
        ),
        (
            "juki-callcenter",
            vec!["--set", "tls.secretName=juki-callcenter-tls"],
        ),
        (
            "juki-callcenter",
            vec![
                "--set",
                "devMode=true",
                "--set",
                "database.urlSecret=callcenter-pg",
                "--set",
                "calendarSpec.timeZone=Asia/Tokyo",
            ],
        ),
    ] {
        let chart = chart(name);
        let mut lint = vec!["lint", "--strict", &chart];
        if name == "juki-prefecture" {
            lint.extend(["-f", &tokyo]);
        }
        let out = helm(&cluster, &lint).await;
        assert!(out.contains("0 chart(s) failed"), "{out}");
        let mut template = vec!["template", "t", &chart, "-n", &ns.name];
        template.extend(extra.iter().copied());
        let manifests = helm(&cluster, &template).await;
        let (ok, out, err) = cluster
            .run(
                "kubectl",
                &[
                    "apply",
                    "--server-side",
                    "--dry-run=server",
                    "--field-manager=juki-tests",
                    "--force-conflicts",
                    "-f",
                    "-",
                ],
                Some(&manifests),
            )
            .await;
        assert!(ok, "{name}: server dry-run failed: {err}");
        assert!(err.trim().is_empty(), "{name}: warnings: {err}");
        assert!(out.contains("serverside-applied (server dry run)"), "{out}");
        // Unknown keys are refused by the schema.
        let (ok, _, err) = cluster
            .run(
                "helm",
                &["template", "t", &chart, "--set", "notAValue=1"],
                None,
            )
            .await;
        assert!(!ok && err.contains("notAValue"), "{name}: {err}");
    }
}

/// One RBAC rule: (apiGroups, resources, verbs).
type Rule = (Vec<String>, Vec<String>, Vec<String>);

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Rule {
    let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    (owned(groups), owned(resources), owned(verbs))
}

/// The rules of a (Cluster)Role as the API server stored them.
async fn rules_of(cluster: &TestCluster, kind: &str, name: &str, ns: Option<&str>) -> Vec<Rule> {
    let mut args = vec!["get", kind, name, "-o", "json"];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    let role: Value = serde_json::from_str(&cluster.kubectl(&args).await).unwrap();
    let list = |r: &Value, key: &str| -> Vec<String> {
        r[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (list(r, "apiGroups"), list(r, "resources"), list(r, "verbs")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_national_and_two_prefectures_install_and_a_prefecture_upgrades() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    cluster.install_crds().await;
    // The operator release: its pods are fake under kwok; check the objects.
    let op_ns = cluster.namespace().await;
    let op_release = unique_name("jt-op");
    let op = install(&cluster, &op_release, "juki-operator", &op_ns, &[]).await;
    let full = format!("{op_release}-juki-operator");
    let dep: Value = serde_json::from_str(
        &cluster
            .kubectl(&["-n", &op_ns, "get", "deployment", &full, "-o", "json"])
            .await,
    )
    .unwrap();
    assert_eq!(dep["spec"]["replicas"], 2);
    let container = &dep["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.contains(&format!("--leader-lease={}/juki-operator", op_ns.name).as_str()),
        "{args:?}"
    );
    // A default install runs no node as plain HTTP.
    assert!(!args.contains(&"--allow-plain-http"), "{args:?}");
    assert_eq!(
        container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    // Least privilege, compared rule by rule: exactly the verbs the operator's code uses (the
    // operator e2e test runs a whole day impersonating this account). The final request's
    // services/proxy is in a ClusterRole of its own, bound per node namespace only.
    assert_eq!(
        rules_of(&cluster, "clusterrole", &full, None).await,
        vec![
            rule(
                &["jukinet.io"],
                &[
                    "jukinodes",
                    "operatingcalendars",
                    "serviceextensions",
                    "jobschedules",
                    "filedeliveries"
                ],
                &["list", "watch"]
            ),
            rule(
                &["jukinet.io"],
                &[
                    "jukinodes/status",
                    "operatingcalendars/status",
                    "serviceextensions/status",
                    "jobschedules/status",
                    "filedeliveries/status"
                ],
                &["patch"]
            ),
            rule(&["jukinet.io"], &["jukinodes"], &["patch"]),
            rule(
                &["apps"],
                &["deployments"],
                &["list", "watch", "create", "patch"]
            ),
            rule(
                &[""],
                &["services", "configmaps", "persistentvolumeclaims"],
                &["create", "patch"]
            ),
            rule(&["batch"], &["jobs"], &["list", "watch", "create", "patch"]),
            rule(&[""], &["pods"], &["get", "list", "watch"]),
            rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
        ]
    );
    assert_eq!(
        rules_of(
            &cluster,
            "clusterrole",
            &format!("{full}-final-request"),
            None
        )
        .await,
        vec![
            rule(&[""], &["services/proxy"], &["get", "create", "update"]),
            rule(&[""], &["configmaps"], &["get"]),
            rule(&[""], &["pods"], &["delete"])
        ]
    );
    assert_eq!(
        rules_of(&cluster, "role", &format!("{full}-leader"), Some(&op_ns)).await,
        vec![rule(
            &["coordination.k8s.io"],
            &["leases"],
            &["get", "create", "update"]
        )]
    );
    cluster
        .kubectl(&[
            "-n",
            &op_ns,
            "get",
            &format!("serviceaccount/{full}"),
            &format!("service/{full}-metrics"),
            &format!("role/{full}-leader"),
            &format!("rolebinding/{full}-leader"),
            &format!("clusterrolebinding/{full}"),
        ])
        .await;

    // The national chart (a unique calendar name: it is cluster-scoped) and two prefectures.
    let nat_ns = cluster.namespace().await;
    let calendar = unique_name("charts-cal");
    let _calendar_guard = cluster.guard("operatingcalendar", &calendar, None);
    let _national = install(
        &cluster,
        "juki-national",
        "juki-national",
        &nat_ns,
        &["--set", &format!("calendar.name={calendar}")],
    )
    .await;
    // By default the node chart lets the operator of the documented install (release
    // juki-operator in jukinet-system) send the final request here, and nowhere else.
    let binding: Value = serde_json::from_str(
        &cluster
            .kubectl(&[
                "-n",
                &nat_ns,
                "get",
                "rolebinding",
                "juki-national-operator-final-request",
                "-o",
                "json",
            ])
            .await,
    )
    .unwrap();
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole");
    assert_eq!(binding["roleRef"]["name"], "juki-operator-final-request");
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "juki-operator", "namespace": "jukinet-system"}])
    );
    let mut expected = 1;
    let mut prefectures = vec![];
    for code in ["13", "27"] {
        let ns = cluster.namespace().await;
        let values = prefecture_values(code);
        expected += 1 + municipalities(&values).len();
        let release = install(
            &cluster,
            &format!("juki-pref-{code}"),
            "juki-prefecture",
            &ns,
            &[
                "-f",
                &values.display().to_string(),
                "--set",
                &format!(
                    "calendar={calendar},national.name=national,national.namespace={}",
                    nat_ns.name
                ),
            ],
        )
        .await;
        prefectures.push((code, ns, release));
    }
    let mut count = 0;
    for ns in std::iter::once(&nat_ns.name).chain(prefectures.iter().map(|p| &p.1.name)) {
        let nodes = Api::<JukiNode>::namespaced(cluster.client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap();
        for n in &nodes.items {
            assert_eq!(n.spec.calendar, calendar);
        }
        count += nodes.items.len();
    }
    assert_eq!(count, expected, "1 national + 2 prefectures + their CSs");
    assert_eq!(expected, 1 + 2 + 62 + 43);

    // A CS points at its prefecture, the prefecture at the national node.
    let (_, tokyo_ns, _) = &prefectures[0];
    let pref: JukiNode = Api::namespaced(cluster.client.clone(), tokyo_ns)
        .get("pref-13")
        .await
        .unwrap();
    let up = pref.spec.upstream.clone().unwrap();
    assert_eq!(
        (up.name.as_str(), up.namespace.as_deref()),
        ("national", Some(nat_ns.name.as_str()))
    );
    let cs: JukiNode = Api::namespaced(cluster.client.clone(), tokyo_ns)
        .get("cs-131016")
        .await
        .unwrap();
    assert_eq!(cs.spec.upstream.unwrap().name, "pref-13");
    assert_eq!(pref.spec.online_end, None);

    // helm upgrade changes the prefecture's online end.
    helm(
        &cluster,
        &[
            "upgrade",
            "juki-pref-13",
            &chart("juki-prefecture"),
            "-n",
            tokyo_ns,
            "--reuse-values",
            "--set",
            "onlineEnd=21:45",
        ],
    )
    .await;
    let pref: JukiNode = Api::namespaced(cluster.client.clone(), tokyo_ns)
        .get("pref-13")
        .await
        .unwrap();
    assert_eq!(pref.spec.online_end.as_deref(), Some("21:45"));
    let osaka: JukiNode = Api::namespaced(cluster.client.clone(), &prefectures[1].1)
        .get("pref-27")
        .await
        .unwrap();
    assert_eq!(osaka.spec.online_end, None, "other prefectures unchanged");
    drop(op);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uninstalling_a_prefecture_removes_its_nodes_and_what_the_operator_made_for_them() {
    let Some(cluster) = require_cluster!() else {
        return;
    };
    cluster.install_crds().await;
    // One namespace: the operator process watches one namespace holding a whole topology.
    let ns = cluster.namespace().await;
    let calendar = unique_name("charts-cal");
    let _calendar_guard = cluster.guard("operatingcalendar", &calendar, None);
    let _national = install(
        &cluster,
        "juki-national",
        "juki-national",
        &ns,
        &["--set", &format!("calendar.name={calendar}")],
    )
    .await;
    // Tottori, trimmed to its first three municipalities.
    let codes: Vec<String> = municipalities(&prefecture_values("31"))
        .into_iter()
        .take(3)
        .collect();
    let mut set = vec![format!("calendar={calendar}"), "prefecture=31".to_owned()];
    for (i, c) in codes.iter().enumerate() {
        set.push(format!("municipalities[{i}].code={c}"));
    }
    let set = set.join(",");
    let pref = install(
        &cluster,
        "juki-pref-31",
        "juki-prefecture",
        &ns,
        &["--set-string", &set],
    )
    .await;
    // A weekday morning: everything starts, so the operator makes every node's objects.
    let start: jiff::Timestamp = "2026-12-01T10:00:00+09:00".parse().unwrap();
    let _op = OperatorProcess::start(&cluster, &ns, start, 1);
    let deployments = Api::<Deployment>::namespaced(cluster.client.clone(), &ns);
    let services = Api::<Service>::namespaced(cluster.client.clone(), &ns);
    let config_maps = Api::<ConfigMap>::namespaced(cluster.client.clone(), &ns);
    let prefecture_objects = ListParams::default().labels("jukinet.io/tier in (Prefecture,CS)");
    let count = |lp: ListParams| {
        let (d, s, c) = (deployments.clone(), services.clone(), config_maps.clone());
        async move {
            (
                d.list(&lp).await.unwrap().items.len(),
                s.list(&lp).await.unwrap().items.len(),
                c.list(&lp).await.unwrap().items.len(),
            )
        }
    };
    let made = 1 + codes.len();
    poll_until(
        "the operator made the prefecture's objects",
        Duration::from_secs(90),
        || {
            let c = count(prefecture_objects.clone());
            async move { c.await == (made, made, made) }
        },
    )
    .await
    .unwrap();

    drop(pref); // helm uninstall
    let nodes = Api::<JukiNode>::namespaced(cluster.client.clone(), &ns);
    poll_until(
        "the prefecture's JukiNodes are gone",
        Duration::from_secs(30),
        || {
            let nodes = nodes.clone();
            async move {
                nodes
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .len()
                    == 1
            }
        },
    )
    .await
    .unwrap();
    poll_until(
        "the garbage collector removed their Deployments, Services and ConfigMaps",
        Duration::from_secs(60),
        || {
            let c = count(prefecture_objects.clone());
            async move { c.await == (0, 0, 0) }
        },
    )
    .await
    .unwrap();
    let national = count(ListParams::default().labels("jukinet.io/tier=National")).await;
    assert_eq!(national, (1, 1, 1), "the national node's objects stay");
}
