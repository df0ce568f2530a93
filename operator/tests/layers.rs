//! The operator's shape stays: its decisions (the planner, the schedule and delivery cores, the
//! forecast, the node status a plan leads to) are pure modules that import nothing of the
//! controllers, the API client, the async runtime or the process's plumbing. The controllers
//! gather, call them and apply what they decide.

use std::path::{Path, PathBuf};

/// The pure modules, as paths under `src/` (a directory counts with everything in it).
const PURE: &[&str] = &[
    "planner.rs",
    "planner",
    "schedule",
    "delivery_plan.rs",
    "delivery_report.rs",
    "expected.rs",
    "forecast.rs",
    "topology.rs",
    "service_extension.rs",
    "resources.rs",
    "tree.rs",
    "preview.rs",
    "controller/node/status.rs",
    "controller/node/events.rs",
];

/// What a pure module may not use, and why it would not be pure with it.
const FORBIDDEN: &[(&str, &str)] = &[
    ("crate::controller", "the controllers (a layer above)"),
    ("super::apply", "the node controller's API writes"),
    ("super::gather", "the node controller's cache reads"),
    ("kube::Api", "the API client"),
    ("kube::Client", "the API client"),
    ("tokio", "the async runtime"),
    ("crate::node_client", "calls to the nodes"),
    ("crate::telemetry", "the metrics registry"),
    ("crate::http", "the HTTP endpoints"),
    ("crate::leader", "leader election"),
];

/// Pure up to its `publish`: the Events module decides in a pure function and publishes in one
/// async function at its end; only that function may reach the controller's context.
const ALLOWED_IN: &[(&str, &str)] = &[
    ("controller/node/events.rs", "crate::controller"),
    ("controller/node/events.rs", "async fn publish"),
];

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for entry in entries {
            rust_files(&entry, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

/// `file:line: uses X (why)` for each forbidden use in `code` (comments left out).
fn violations(file: &str, code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let line = line.split("//").next().unwrap_or_default();
        let checks = FORBIDDEN
            .iter()
            .copied()
            .chain([("async fn", "async work (I/O)")]);
        for (pattern, why) in checks {
            let allowed = ALLOWED_IN
                .iter()
                .any(|(f, p)| file.ends_with(f) && line.contains(p));
            if line.contains(pattern) && !allowed {
                found.push(format!("{file}:{}: uses {pattern} ({why})", n + 1));
            }
        }
    }
    found
}

#[test]
fn the_decisions_import_nothing_of_the_controllers_or_the_api_client() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for module in PURE {
        let path = src.join(module);
        assert!(path.exists(), "{module} is gone: update PURE");
        rust_files(&path, &mut files);
    }
    let found: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let name = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            violations(&name, &std::fs::read_to_string(f).unwrap())
        })
        .collect();
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_checker_sees_a_controller_import_and_async_work_but_not_comments() {
    let code = "use crate::planner::Plan;\nuse crate::controller::Context;\n// tokio in a comment\nasync fn wait() {}\n";
    assert_eq!(
        violations("planner.rs", code),
        [
            "planner.rs:2: uses crate::controller (the controllers (a layer above))",
            "planner.rs:4: uses async fn (async work (I/O))",
        ]
    );
    // The Events module's one publishing function is allowed.
    let events =
        "use crate::controller::Context;\npub(super) async fn publish() {}\nasync fn other() {}\n";
    assert_eq!(
        violations("controller/node/events.rs", events),
        ["controller/node/events.rs:3: uses async fn (async work (I/O))"]
    );
}
