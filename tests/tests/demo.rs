//! The core of scripts/demo, quickly: the charts installed into a test namespace (national and
//! one prefecture with two CSs, as real pods on the real node, as the demo installs them), then
//! scripts/demo-timeline runs the operator with a fast clock through one Friday's start wave,
//! online hours (updates posted at the CSs reach the national server) and stop wave with the
//! real final exchange and batch containers, and its order checks pass.

use std::collections::BTreeSet;

use juki_tests::cluster::{repo_root, unique_name};
use juki_tests::operator::operator_binary;
use juki_tests::real_node::demo_values;
use juki_tests::require_real_node;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_timeline_shows_a_whole_day_in_order() {
    let Some(cluster) = require_real_node!() else {
        return;
    };
    cluster.install_crds().await;
    let ns = cluster.namespace().await;
    let calendar = unique_name("demo-cal");
    let _calendar_guard = cluster.guard("operatingcalendar", &calendar, None);
    let chart = |name: &str| repo_root().join("charts").join(name).display().to_string();
    let helm = |args: Vec<String>| {
        let cluster = cluster.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (ok, out, err) = cluster.run("helm", &args, None).await;
            assert!(ok, "helm {args:?}: {err}{out}");
        }
    };
    // The node values scripts/demo gives the charts for real pods.
    let (national_values, pref_values) = demo_values();
    let (national_values, pref_values) = (
        national_values.display().to_string(),
        pref_values.display().to_string(),
    );
    helm(vec![
        "install".into(),
        "juki-national".into(),
        chart("juki-national"),
        "-n".into(),
        ns.name.clone(),
        "-f".into(),
        national_values,
        "--set".into(),
        format!("calendar.name={calendar}"),
    ])
    .await;
    helm(vec![
        "install".into(),
        "juki-pref-31".into(),
        chart("juki-prefecture"),
        "-n".into(),
        ns.name.clone(),
        "-f".into(),
        pref_values,
        "--set-string".into(),
        format!(
            "prefecture=31,calendar={calendar},national.namespace={},municipalities[0].code=312011,municipalities[1].code=312029",
            ns.name
        ),
    ])
    .await;

    let operator = operator_binary();
    let log = std::env::temp_dir().join(format!("juki-operator-{}.log", ns.name));
    let out = tokio::process::Command::new("python3")
        .arg(repo_root().join("scripts/demo-timeline"))
        .args(["--namespace", &ns.name, "--operator"])
        .arg(&operator)
        .arg("--kubectl")
        .arg(cluster.tool("kubectl"))
        .args([
            "--start",
            "2026-12-04T06:55:00+09:00",
            "--factor",
            "1200",
            "--real-pods",
            "--updates",
            "2",
            "--gears",
            "2026-12-05T00:30:00+09:00=3600@offline",
            // Until Saturday evening: at ×1200 the real batch containers of a loaded machine
            // can end Saturday's stop wave late in the morning (CI once saw the national batch
            // still running at 12:00); once every node is Offline the clock goes ×3600.
            "--end",
            "2026-12-05T20:00:00+09:00",
            "--log",
        ])
        .arg(&log)
        .env("KUBECONFIG", &cluster.kubeconfig)
        .kill_on_drop(true)
        .output()
        .await
        .expect("running scripts/demo-timeline");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo-timeline failed:\n{stdout}\n{stderr}"
    );
    // 4 nodes × 6 transitions (Starting, Online, Draining, Stopping, DailyBatch, Offline).
    assert!(
        stdout.contains("4 nodes, 24 phase transitions"),
        "not every node went Offline after its batches by the end of the run:\n{stdout}"
    );
    assert!(
        stdout.contains("order checks: ") && stdout.contains(" passed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cs-312011  CS            Offline → Starting"),
        "{stdout}"
    );
    // The updates reached the national server while the tree was Online, and the real batch
    // containers counted them that night: one recorded at each CS, both relayed up by the
    // prefecture, both recorded at the national server; every node's backup has bytes.
    assert!(
        stdout.contains("posted 2 updates (転入) at 2 CSs: cs-312011, cs-312029")
            && stdout.contains("national applied all 2"),
        "{stdout}"
    );
    let result = |node: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{node} ")) && l.contains("statistics"))
            .unwrap_or_else(|| panic!("no batch result for {node}: {stdout}"))
            .to_owned()
    };
    assert!(
        result("national").contains("statistics 2026-12-04: updates recorded 2, relayed up 0"),
        "{stdout}"
    );
    assert!(
        result("pref-31").contains("updates recorded 2, relayed up 2, held 0"),
        "{stdout}"
    );
    for cs in ["cs-312011", "cs-312029"] {
        assert!(
            result(cs).contains("updates recorded 1, relayed up 1, held 0"),
            "{stdout}"
        );
    }
    for node in ["national", "pref-31", "cs-312011", "cs-312029"] {
        let line = result(node);
        let bytes = line
            .split("backup: ")
            .nth(1)
            .and_then(|b| b.split(' ').next())
            .and_then(|b| b.parse::<u64>().ok());
        assert!(bytes.is_some_and(|b| b > 0), "{node}: {line}");
    }
    // The README's excerpt of the demo is what a run prints: each phase change it shows (tier,
    // from, to) is one this run printed too, and each reason is one this run gave (which reason
    // a change has can depend on timing: a prefecture's CSs still batching or not at its end).
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let excerpt = readme
        .split("## The demo")
        .nth(1)
        .and_then(|s| s.split("```\n").nth(1))
        .expect("README: the demo's excerpt");
    let shown = transitions(excerpt);
    assert!(shown.len() >= 8, "{excerpt}");
    let printed = transitions(&stdout);
    let changes = |t: &BTreeSet<Transition>| -> BTreeSet<(String, String, String)> {
        t.iter()
            .map(|(tier, from, to, _)| (tier.clone(), from.clone(), to.clone()))
            .collect()
    };
    let reasons = |t: &BTreeSet<Transition>| -> BTreeSet<String> {
        t.iter().map(|(.., reason)| reason.clone()).collect()
    };
    let missing: Vec<_> = changes(&shown)
        .difference(&changes(&printed))
        .cloned()
        .collect();
    let unknown: Vec<_> = reasons(&shown)
        .difference(&reasons(&printed))
        .cloned()
        .collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "the README shows changes this run did not print: {missing:?}, reasons it did not give: {unknown:?}\n{stdout}"
    );
    let (ok, _, _) = cluster
        .run(
            "helm",
            &["uninstall", "juki-pref-31", "juki-national", "-n", &ns.name],
            None,
        )
        .await;
    assert!(ok);
}

/// (tier, from, to, reason).
type Transition = (String, String, String, String);

/// The transition of each timeline line: `Fri 12-04 07:00  national  National  Offline →
/// Starting  WindowOpen`.
fn transitions(text: &str) -> BTreeSet<Transition> {
    text.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let arrow = words.iter().position(|w| *w == "→")?;
            let word = |i: usize| words.get(i).map(|w| (*w).to_string());
            Some((
                word(arrow.checked_sub(2)?)?,
                word(arrow - 1)?,
                word(arrow + 1)?,
                word(arrow + 2)?,
            ))
        })
        .collect()
}
