//! Structured logs of the real binary: JSON lines on stderr with `JUKI_LOG_JSON=1` (startup,
//! relay batches with their trace id, final request), human-readable lines by default, and
//! stdout left to the batch commands' JSON.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use juki_node::relay::client;
use serde_json::{Value, json};

fn temp_db(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "juki-logs-{name}-{}-{}.db",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ))
}

/// A `juki-node serve` process whose stderr lines arrive on a channel; killed on drop.
struct Node {
    child: Child,
    lines: Receiver<String>,
    /// Every line read so far.
    seen: Vec<String>,
    db: std::path::PathBuf,
    port: u16,
}

impl Node {
    fn start(args: &[&str], name: &str, json_env: Option<&str>) -> Node {
        let port = common::free_port();
        let db = temp_db(name);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_juki-node"));
        cmd.arg("serve")
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--database-url", db.to_str().unwrap()])
            .env_remove("JUKI_CONFIG")
            .env_remove("DATABASE_URL")
            .env_remove("JUKI_DATABASE_URL")
            .env_remove("JUKI_LOG_JSON")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(v) = json_env {
            cmd.env("JUKI_LOG_JSON", v);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Node {
            child,
            lines,
            seen: Vec::new(),
            db,
            port,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Waits (up to 20 s) for a stderr line satisfying `pred`.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line {what}; stderr so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits for the JSON log line whose message is `message`.
    fn wait_json(&mut self, message: &str) -> Value {
        let line = self.wait_for(message, |l| {
            serde_json::from_str::<Value>(l).is_ok_and(|v| v["fields"]["message"] == message)
        });
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.db.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

const CS: &[&str] = &["--role", "cs", "--municipality-code", "131016"];

#[test]
fn serve_logs_json_lines_with_startup_relay_and_final_request() {
    let mut national = Node::start(&["--role", "national"], "national", Some("1"));
    let startup = national.wait_json("juki-node serving");
    // Every line so far is a JSON object with the fmt layer's shape.
    for line in &national.seen {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
        assert!(
            v["target"].as_str().unwrap().starts_with("juki_node"),
            "{line}"
        );
        assert!(v["fields"]["message"].is_string(), "{line}");
        assert!(v["timestamp"].is_string(), "{line}");
    }
    assert_eq!(startup["level"], json!("INFO"));
    let fields = &startup["fields"];
    assert_eq!(fields["role"], json!("national"));
    assert_eq!(fields["name"], json!("national"));
    assert_eq!(
        fields["listen"],
        json!(format!("127.0.0.1:{}", national.port))
    );
    assert_eq!(fields["database"], json!("sqlite"));
    assert_eq!(fields["migrations_applied"], json!(5));

    let upstream = national.url();
    let mut cs_args = CS.to_vec();
    cs_args.extend(["--upstream-url", &upstream]);
    let mut cs = Node::start(&cs_args, "cs", Some("true"));
    let startup = cs.wait_json("juki-node serving");
    assert_eq!(startup["fields"]["role"], json!("cs"));
    assert_eq!(startup["fields"]["name"], json!("cs-131016"));

    // One update in a known trace: the relay line carries its trace id.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let today = jiff::Zoned::now()
        .with_time_zone(jiff::tz::TimeZone::fixed(jiff::tz::offset(9)))
        .date()
        .to_string();
    let update = json!({
        "resident_code": "12345678903",
        "name": "山田 太郎",
        "name_kana": "ヤマダ タロウ",
        "birth_date": "1990-04-01",
        "sex": "男",
        "address": "千代田1-1",
        "municipality_code": "131016",
        "reason": "転入",
        "change_date": today,
    });
    let body = serde_json::to_vec(&update).unwrap();
    let mut posted = None;
    for _ in 0..100 {
        match client::post_json(
            &format!("{}/v1/updates", cs.url()),
            &body,
            &[("Idempotency-Key", "k1"), ("traceparent", &traceparent)],
            Duration::from_secs(5),
        ) {
            Ok(r) => {
                posted = Some(r.status);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    assert_eq!(posted, Some(201));
    // The batch's facts are on its span, once; the line adds what it alone says.
    let delivered = cs.wait_json("relay batch delivered");
    let batch = &delivered["span"];
    assert_eq!(batch["name"], json!("relay_batch"));
    assert_eq!(batch["trace_id"], json!(trace_id));
    assert_eq!(batch["sender"], json!("cs-131016"));
    assert_eq!(
        (batch["first_seq"].clone(), batch["last_seq"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(batch["count"], json!(1));
    assert!(delivered["fields"]["duration_ms"].as_f64().is_some());
    assert_eq!(delivered["fields"]["acked"], json!(1));

    // The final request logs its start and its end.
    let answer = client::post_json(
        &format!("{}/admin/v1/final-request?timeoutSeconds=5", cs.url()),
        b"",
        &[],
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(answer.json().unwrap()["done"], json!(true));
    cs.wait_json("final request: relays from below stop, flushing the outbox");
    cs.wait_json("final request done: the upstream confirmed every update");

    // With the upstream gone, failed relays are warnings with their backoff and trace id.
    drop(national);
    let update = json!({"reason": "転居", "address": "千代田2-2"});
    let mut moved = serde_json::from_value::<serde_json::Map<String, Value>>(json!({
        "resident_code": "12345678903", "name": "山田 太郎", "name_kana": "ヤマダ タロウ",
        "birth_date": "1990-04-01", "sex": "男", "municipality_code": "131016",
        "change_date": today,
    }))
    .unwrap();
    moved.extend(update.as_object().unwrap().clone());
    client::post_json(
        &format!("{}/admin/v1/resume", cs.url()),
        b"",
        &[],
        Duration::from_secs(5),
    )
    .unwrap();
    let r = client::post_json(
        &format!("{}/v1/updates", cs.url()),
        &serde_json::to_vec(&moved).unwrap(),
        &[("Idempotency-Key", "k2"), ("traceparent", &traceparent)],
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 201);
    let failed = cs.wait_json("relay batch failed; retrying after backoff");
    assert_eq!(failed["level"], json!("WARN"));
    assert_eq!(failed["span"]["trace_id"], json!(trace_id));
    assert!(failed["fields"]["backoff_ms"].as_u64().is_some());
    assert!(failed["fields"]["error"].is_string());
}

#[test]
fn logs_are_human_readable_by_default_and_stay_off_stdout() {
    let db = temp_db("batch");
    let run = |extra: &[&str], json_env: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_juki-node"));
        cmd.args(["batch", "statistics", "--date", "2024-06-03"])
            .args(["--database-url", db.to_str().unwrap()])
            .args(extra)
            .env_remove("JUKI_CONFIG")
            .env_remove("DATABASE_URL")
            .env_remove("JUKI_LOG_JSON")
            .env_remove("RUST_LOG");
        if let Some(v) = json_env {
            cmd.env("JUKI_LOG_JSON", v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // stdout is the job's JSON alone.
        let stats: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(stats["date"], json!("2024-06-03"));
        String::from_utf8(out.stderr).unwrap()
    };
    let plain = run(&[], None);
    let line = plain
        .lines()
        .find(|l| l.contains("batch statistics done"))
        .unwrap_or_else(|| panic!("{plain}"));
    assert!(
        line.contains("INFO") && line.contains("job=\"statistics\""),
        "{line}"
    );
    assert!(serde_json::from_str::<Value>(line).is_err());
    assert!(!run(&[], Some("0")).trim_start().starts_with('{'));

    for (extra, env) in [(&["--log-json"][..], None), (&[][..], Some("1"))] {
        let json_logs = run(extra, env);
        let done = json_logs
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .find(|v| v["fields"]["message"] == "batch statistics done")
            .unwrap_or_else(|| panic!("{json_logs}"));
        assert_eq!(done["fields"]["job"], json!("statistics"));
        assert_eq!(done["fields"]["database"], json!("sqlite"));
        assert_eq!(done["fields"]["held"], json!(0));
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}
