//! The alert rules (charts/juki-operator/rules/): the real promtool checks them and runs their
//! unit tests, the real amtool checks the Alertmanager configuration, and every fault the
//! operator reports has an alert that the unit tests see fire and see quiet through a planned
//! night and weekend. promtool and amtool come from `tests/cluster/build.sh`; without them the
//! tool tests skip, or fail with `JUKINET_REQUIRE_CLUSTER=1`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use juki_operator::expected::Fault;
use juki_tests::cluster::{repo_root, require_built};
use serde_yaml::Value;

fn rules_dir() -> PathBuf {
    repo_root().join("charts/juki-operator/rules")
}

fn yaml(file: &str) -> Value {
    let path = rules_dir().join(file);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs a tool in the rules directory; returns (success, stdout + stderr).
fn run(tool: &PathBuf, args: &[&str]) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .current_dir(rules_dir())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", tool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every alerting rule: (alert name, expression, labels).
fn alerts() -> Vec<(String, String, Value)> {
    let rules = yaml("jukinet-alerts.yaml");
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .map(|r| {
            (
                r["alert"].as_str().expect("only alerting rules").to_owned(),
                r["expr"].as_str().expect("expr").to_owned(),
                r["labels"].clone(),
            )
        })
        .collect()
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let Some(promtool) = require_built("promtool") else {
        return;
    };
    let (ok, out) = run(&promtool, &["check", "rules", "jukinet-alerts.yaml"]);
    assert!(ok, "promtool check rules:\n{out}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alerts().len())),
        "{out}"
    );
    let (ok, out) = run(&promtool, &["test", "rules", "jukinet-alerts.test.yaml"]);
    assert!(ok, "promtool test rules:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_fails_a_rule_test_that_does_not_hold() {
    // The unit tests are real: the same rules with an expectation that cannot hold fail.
    let Some(promtool) = require_built("promtool") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("juki-alert-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        rules_dir().join("jukinet-alerts.yaml"),
        dir.join("jukinet-alerts.yaml"),
    )
    .unwrap();
    let wrong = r#"
rule_files: [jukinet-alerts.yaml]
tests:
  - interval: 1m
    input_series:
      - series: 'juki_node_expected_online{namespace="n",node="cs",tier="CS",prefecture="13"}'
        values: '0x30'
    alert_rule_test:
      - eval_time: 20m
        alertname: JukiNodeNotOnline
        exp_alerts:
          - exp_labels: {severity: critical, namespace: n, node: cs, tier: CS, prefecture: "13"}
"#;
    std::fs::write(dir.join("wrong.test.yaml"), wrong).unwrap();
    let out = Command::new(&promtool)
        .args(["test", "rules", "wrong.test.yaml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !out.status.success(),
        "a planned night must not fire JukiNodeNotOnline"
    );
}

#[test]
fn amtool_checks_the_alertmanager_configuration() {
    let Some(amtool) = require_built("amtool") else {
        return;
    };
    let (ok, out) = run(&amtool, &["check-config", "alertmanager.yaml"]);
    assert!(ok, "amtool check-config:\n{out}");
    assert!(out.contains("2 inhibit rules"), "{out}");
}

#[test]
fn a_prefecture_down_inhibits_the_alerts_of_its_own_css_only() {
    let config = yaml("alertmanager.yaml");
    let rules = config["inhibit_rules"]
        .as_sequence()
        .expect("inhibit_rules");
    let strings = |v: &Value| -> Vec<String> {
        v.as_sequence()
            .map(|s| {
                s.iter()
                    .map(|x| x.as_str().unwrap_or_default().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let prefecture = rules
        .iter()
        .find(|r| strings(&r["source_matchers"]).contains(&r#"tier="Prefecture""#.to_owned()))
        .expect("an inhibit rule with a prefecture as its source");
    assert_eq!(
        strings(&prefecture["source_matchers"]),
        [r#"alertname="JukiNodeNotOnline""#, r#"tier="Prefecture""#]
    );
    assert_eq!(strings(&prefecture["target_matchers"]), [r#"tier="CS""#]);
    assert_eq!(strings(&prefecture["equal"]), ["prefecture"]);
    // The source alert carries the labels the matchers and `equal` name.
    let (_, expr, labels) = alerts()
        .into_iter()
        .find(|(name, _, _)| name == "JukiNodeNotOnline")
        .expect("JukiNodeNotOnline");
    assert!(expr.contains("juki_node_fault"), "{expr}");
    assert_eq!(labels["severity"].as_str(), Some("critical"));
}

#[test]
fn every_fault_has_an_alert_and_every_alert_is_tested_firing_and_quiet_at_night() {
    let alerts = alerts();
    for fault in Fault::ALL {
        assert!(
            alerts
                .iter()
                .any(|(_, expr, _)| expr.contains("juki_node_fault")
                    && expr.contains(fault.as_str())),
            "no alert reads juki_node_fault for {fault}"
        );
    }
    for (name, _, labels) in &alerts {
        let severity = labels["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning"].contains(&severity),
            "{name}: severity {severity:?}"
        );
    }
    let tests = yaml("jukinet-alerts.test.yaml");
    let groups = tests["tests"].as_sequence().expect("tests");
    let mut fired = BTreeSet::new();
    let mut quiet_at_night = BTreeSet::new();
    for group in groups {
        let night = group["name"]
            .as_str()
            .is_some_and(|n| n.contains("planned night"));
        for case in group["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap_or_default().to_owned();
            let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
            if expected > 0 {
                fired.insert(name);
            } else if night {
                quiet_at_night.insert(name);
            }
        }
    }
    let names: BTreeSet<String> = alerts.iter().map(|(n, _, _)| n.clone()).collect();
    assert_eq!(
        names.difference(&fired).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "alerts never seen firing in the unit tests"
    );
    assert_eq!(
        names.difference(&quiet_at_night).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "alerts not checked quiet through the planned night and weekend"
    );
}
