//! The core of scripts/demo, quickly: the charts installed into a test namespace (national and
//! one prefecture with two CSs), then scripts/demo-timeline runs the operator with a fast clock
//! through one Friday's start wave, online hours and stop wave, and its order checks pass.

use juki_tests::cluster::{repo_root, unique_name};
use juki_tests::operator::operator_binary;
use juki_tests::require_cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_timeline_shows_a_whole_day_in_order() {
    let Some(cluster) = require_cluster!() else {
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
    helm(vec![
        "install".into(),
        "juki-national".into(),
        chart("juki-national"),
        "-n".into(),
        ns.name.clone(),
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
            "--gears",
            "2026-12-04T08:30:00+09:00=3600@online,2026-12-04T20:30:00+09:00=1200",
            "--end",
            "2026-12-05T00:30:00+09:00",
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
    assert!(stdout.contains("4 nodes, 24 phase transitions"), "{stdout}");
    assert!(
        stdout.contains("order checks: ") && stdout.contains(" passed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("cs-312011  CS            Offline → Starting"),
        "{stdout}"
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
