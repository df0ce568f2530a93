//! The wide-area services across real processes: one national server, two prefectures (13 and
//! 27) and three CSs (A = 131016 and C = 131024 in Tokyo, B = 271004 in Osaka) of the built
//! `juki-node` binary on loopback ports, on SQLite files and on PostgreSQL.
//!
//! - Wide-area issuance B → A (through pref-27, national, pref-13 and back): the copy without
//!   本籍/筆頭者, a repeat with the same key, refusals (unknown, moved out), logs at both ends.
//! - Four special-procedure moves (A → B across prefectures, A → C inside one, A → B again, and
//!   the first resident back B → A) with
//!   repeated and concurrent requests, a wrong PIN, and processes killed with SIGKILL between
//!   the steps (both prefectures, the national server, the source and the destination), while a
//!   sampler reads the CS databases: a moving resident is never active in zero municipalities,
//!   and after each completed move in exactly one — at the CSs and at the national server.

mod common;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{Backend, TestDb};
use diesel::prelude::*;
use juki_node::relay::client;
use juki_node::store::db::DbUrl;
use juki_node::store::schema::{issuance_log, residents};
use serde_json::{Value, json};

fn timeout() -> Duration {
    Duration::from_secs(30)
}

fn digits<const N: usize>(n: u64) -> [u8; N] {
    let mut out = [0u8; N];
    let mut n = n;
    for d in out.iter_mut().rev() {
        *d = (n % 10) as u8;
        n /= 10;
    }
    out
}

fn with_check<const N: usize>(first: [u8; N], check: u8) -> String {
    first
        .iter()
        .chain(std::iter::once(&check))
        .map(|d| char::from(b'0' + d))
        .collect()
}

fn municipality(first5: u64) -> String {
    let d = digits::<5>(first5);
    with_check(d, juki_codes::municipality_check_digit(&d))
}

fn resident_code(n: u64) -> String {
    let d = digits::<10>(n);
    with_check(d, juki_codes::resident_record_check_digit(&d))
}

fn today() -> String {
    jiff::Timestamp::now()
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(9)))
        .date()
        .to_string()
}

/// One node process, restartable with the same arguments.
struct Node {
    name: String,
    args: Vec<String>,
    url: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn new(
        name: &str,
        role_args: &[&str],
        database: &str,
        upstream: Option<&str>,
        dir: &Path,
    ) -> Node {
        let port = common::free_port();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--database-url".into(),
            database.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(role_args.iter().map(|s| s.to_string()));
        if let Some(u) = upstream {
            args.push("--upstream-url".into());
            args.push(u.into());
        }
        Node {
            name: name.into(),
            args,
            url: format!("http://127.0.0.1:{port}"),
            log: dir.join(format!("{name}.log")),
            child: None,
        }
    }

    fn start(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_juki-node"))
            .args(&self.args)
            .env_remove("JUKI_CONFIG")
            .env_remove("JUKI_CALENDAR")
            .env_remove("JUKI_EXTENSIONS")
            .env_remove("JUKI_UPSTREAM_URL")
            .env_remove("DATABASE_URL")
            .env("JUKI_RELAY_BACKOFF_MAX_MS", "300")
            .env("JUKI_MAILBOX_WAIT_SECS", "5")
            .env("JUKI_DB_POOL_SIZE", "4")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                log.try_clone()
                    .unwrap_or_else(|_| File::create("/dev/null").unwrap()),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.name));
        self.child = Some(child);
        let started = Instant::now();
        while client::get(&format!("{}/readyz", self.url), Duration::from_secs(5))
            .map(|r| r.status != 200)
            .unwrap_or(true)
        {
            if let Some(Some(status)) = self.child.as_mut().map(|c| c.try_wait().unwrap()) {
                panic!("{} exited with {status}:\n{}", self.name, self.log_tail());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{} not ready:\n{}",
                self.name,
                self.log_tail()
            );
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGKILL, then wait for the process to be gone.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    fn restart_after(&mut self, pause: Duration) {
        self.kill();
        thread::sleep(pause);
        self.start();
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn post(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
        let r = client::post_json(
            &format!("{}{path}", self.url),
            body.to_string().as_bytes(),
            headers,
            timeout(),
        )
        .unwrap_or_else(|e| panic!("POST {}{path}: {e}", self.name));
        (r.status, r.json().unwrap_or(Value::Null))
    }

    fn pending(&self) -> i64 {
        client::get(&format!("{}/admin/v1/relay", self.url), timeout())
            .ok()
            .and_then(|r| r.json().ok())
            .and_then(|s| s["outbox"]["pending"].as_i64())
            .unwrap_or(-1)
    }
}

impl Node {
    /// Messages kept for the nodes below and not acknowledged yet.
    fn undelivered(&self) -> i64 {
        client::get(&format!("{}/admin/v1/relay", self.url), timeout())
            .ok()
            .and_then(|r| r.json().ok())
            .and_then(|s| s["mailbox"]["undelivered"].as_i64())
            .unwrap_or(-1)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Moving residents of the soak stage.
const SOAK: usize = 24;

/// POSTs until the node answers below 500 (it may be down or restarting); a repeat is the same
/// request, so a retry after a lost answer gets the same transfer.
fn post_until_answered(url: &str, path: &str, body: &Value, retries: &AtomicU64) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match client::post_json(
            &format!("{url}{path}"),
            body.to_string().as_bytes(),
            &[],
            Duration::from_secs(10),
        ) {
            Ok(r) if r.status < 500 => {
                let v = r.json().unwrap_or(Value::Null);
                assert!(r.status < 400, "{path}: {} {v}", r.status);
                return (r.status, v);
            }
            _ => {
                retries.fetch_add(1, Ordering::Relaxed);
                assert!(Instant::now() < deadline, "{url}{path} never answered");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Waits (through restarts) until the transfer has `state` at the node of `url`.
fn wait_state(url: &str, id: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = client::get(&format!("{url}/v1/transfers/{id}"), Duration::from_secs(10))
            .ok()
            .filter(|r| r.status == 200)
            .and_then(|r| r.json().ok())
            .and_then(|v| v["state"].as_str().map(str::to_owned));
        if now.as_deref() == Some(state) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} never reached {state} at {url}: {now:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

fn database_url(db: &TestDb) -> String {
    match &db.url {
        DbUrl::Sqlite(path) => format!("sqlite://{path}"),
        DbUrl::Postgres(url) => url.clone(),
    }
}

/// Polls `f` until it returns Some, for up to 60 s.
fn eventually<T>(what: &str, nodes: &[&Node], mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            let tails: Vec<String> = nodes
                .iter()
                .map(|n| format!("--- {}\n{}", n.name, n.log_tail()))
                .collect();
            panic!("timed out waiting for {what}\n{}", tails.join("\n"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn transfer_state(node: &Node, id: &str) -> Option<String> {
    let r = client::get(&format!("{}/v1/transfers/{id}", node.url), timeout()).ok()?;
    (r.status == 200)
        .then(|| r.json().ok()?["state"].as_str().map(str::to_owned))
        .flatten()
}

/// Active rows of `code` at a CS database.
fn active(conn: &mut juki_node::store::db::DbConnection, code: &str) -> Option<i64> {
    residents::table
        .filter(residents::resident_code.eq(code))
        .filter(residents::status.eq("active"))
        .count()
        .get_result(conn)
        .ok()
}

fn wide_area_flows(backend: Backend) {
    let Some(dbs) = (0..6)
        .map(|_| TestDb::new(backend))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    let dir =
        std::env::temp_dir().join(format!("juki-wide-area-{}-{backend:?}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("wide-area: logs in {}", dir.display());
    let started = Instant::now();
    let (a, c, b) = (
        municipality(13101),
        municipality(13102),
        municipality(27100),
    );

    let mut national = Node::new(
        "national",
        &["--role", "national"],
        &database_url(&dbs[0]),
        None,
        &dir,
    );
    national.start();
    let mut pref13 = Node::new(
        "pref-13",
        &["--role", "prefecture", "--prefecture-code", "13"],
        &database_url(&dbs[1]),
        Some(&national.url.clone()),
        &dir,
    );
    pref13.start();
    let mut pref27 = Node::new(
        "pref-27",
        &["--role", "prefecture", "--prefecture-code", "27"],
        &database_url(&dbs[2]),
        Some(&national.url.clone()),
        &dir,
    );
    pref27.start();
    let mut cs_a = Node::new(
        "cs-a",
        &["--role", "cs", "--municipality-code", &a],
        &database_url(&dbs[3]),
        Some(&pref13.url.clone()),
        &dir,
    );
    cs_a.start();
    let mut cs_c = Node::new(
        "cs-c",
        &["--role", "cs", "--municipality-code", &c],
        &database_url(&dbs[4]),
        Some(&pref13.url.clone()),
        &dir,
    );
    cs_c.start();
    let mut cs_b = Node::new(
        "cs-b",
        &["--role", "cs", "--municipality-code", &b],
        &database_url(&dbs[5]),
        Some(&pref27.url.clone()),
        &dir,
    );
    cs_b.start();

    // Four residents of A, with 本籍 and 筆頭者.
    let codes: Vec<String> = (0..4 + SOAK as u64)
        .map(|i| resident_code(3_000_000 + i))
        .collect();
    let seed: Vec<Value> = codes
        .iter()
        .enumerate()
        .map(|(i, code)| {
            json!({
                "resident_code": code, "name": format!("転居 花子{i}"), "name_kana": "テンキョ ハナコ",
                "birth_date": "1985-05-05", "sex": "女", "address": format!("千代田区{i}-1"),
                "municipality_code": a, "reason": "転入", "change_date": today(),
                "permanent_domicile": "本籍地 京都府京都市上京区", "domicile_head": "筆頭 一郎",
            })
        })
        .collect();
    let (status, body) = cs_a.post("/v1/updates", &json!(seed), &[("Idempotency-Key", "seed")]);
    assert_eq!(status, 201, "{body}");

    // Wide-area issuance at B for a resident of A.
    let ask = json!({"resident_code": codes[0], "home_municipality": a, "requested_by": "窓口1"});
    let (status, copy) = cs_b.post(
        "/v1/issuances?wait=30",
        &ask,
        &[("Idempotency-Key", "iss-1")],
    );
    assert_eq!(status, 200, "{copy}");
    assert_eq!(copy["state"], "issued");
    assert_eq!(copy["answer"]["copy"]["name"], "転居 花子0");
    let text = copy.to_string();
    assert!(
        !text.contains("本籍地") && !text.contains("筆頭") && !text.contains("domicile"),
        "{text}"
    );
    let issuance_id = copy["issuance_id"].as_str().unwrap().to_owned();
    let (status, again) = cs_b.post(
        "/v1/issuances?wait=30",
        &ask,
        &[("Idempotency-Key", "iss-1")],
    );
    assert_eq!((status, &again["issuance_id"]), (200, &copy["issuance_id"]));
    let unknown = json!({"resident_code": resident_code(4_444_444), "home_municipality": a});
    let (status, refusal) = cs_b.post(
        "/v1/issuances?wait=30",
        &unknown,
        &[("Idempotency-Key", "iss-2")],
    );
    assert_eq!(
        (status, refusal["error"].as_str()),
        (404, Some("unknown_resident")),
        "{refusal}"
    );
    // Logged at both ends.
    for db in [&dbs[3], &dbs[5]] {
        let mut conn = db.url.connect().unwrap();
        let outcomes: Vec<String> = issuance_log::table
            .filter(issuance_log::issuance_id.eq(&issuance_id))
            .select(issuance_log::outcome)
            .load(&mut conn)
            .unwrap();
        assert!(outcomes.contains(&"issued".to_owned()), "{outcomes:?}");
    }
    // … and as a log line at both ends.
    for node in [&cs_a, &cs_b] {
        let log = std::fs::read_to_string(&node.log).unwrap();
        assert!(
            log.lines()
                .any(|l| l.contains("wide-area issuance") && l.contains(&issuance_id)),
            "{}: no log line for {issuance_id}",
            node.name
        );
    }
    let issued_at = started.elapsed();

    // The sampler: the moving residents are never active in zero CSs (the source is read
    // before the destinations, so a move between the reads cannot look like a gap).
    let stop = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(AtomicU64::new(0));
    // Per moving resident, the order the CS databases (A, B, C) are read in: its current
    // source first.
    let orders = Arc::new(std::sync::Mutex::new(vec![vec![0usize, 1, 2]; 3 + SOAK]));
    let sampler = {
        let urls: Vec<DbUrl> = [&dbs[3], &dbs[5], &dbs[4]]
            .iter()
            .map(|d| d.url.clone())
            .collect();
        let moving: Vec<String> = codes[..3].iter().chain(&codes[4..]).cloned().collect();
        let (stop, samples, orders) = (stop.clone(), samples.clone(), orders.clone());
        thread::spawn(move || {
            let mut conns: Vec<_> = urls.iter().map(|u| u.connect().unwrap()).collect();
            while !stop.load(Ordering::SeqCst) {
                for (k, code) in moving.iter().enumerate() {
                    let order = orders.lock().unwrap()[k].clone();
                    let counts: Vec<Option<i64>> =
                        order.iter().map(|&i| active(&mut conns[i], code)).collect();
                    if counts.iter().all(Option::is_some) {
                        let total: i64 = counts.iter().flatten().sum();
                        assert!(total >= 1, "{code} active nowhere: {counts:?}");
                        samples.fetch_add(1, Ordering::Relaxed);
                    }
                }
                thread::sleep(Duration::from_millis(5));
            }
        })
    };

    // Move 1: A → B across prefectures, with repeats, a wrong PIN and concurrent move-ins.
    let move_out = |code: &str, to: &str| {
        json!({"resident_code": code, "destination_municipality": to, "planned_date": today(),
               "planned_address": format!("{to} 新住所 1-2-3"), "pin": "4321"})
    };
    let (status, t1) = cs_a.post("/v1/transfers", &move_out(&codes[0], &b), &[]);
    assert_eq!(status, 201, "{t1}");
    assert_eq!(t1["state"], "move_out_filed");
    let id1 = t1["transfer_id"].as_str().unwrap().to_owned();
    let (status, again) = cs_a.post("/v1/transfers", &move_out(&codes[0], &b), &[]);
    assert_eq!((status, &again["transfer_id"]), (200, &t1["transfer_id"]));
    let mut other = move_out(&codes[0], &b);
    other["planned_address"] = json!("別の住所");
    let (status, conflict) = cs_a.post("/v1/transfers", &other, &[]);
    assert_eq!(
        (status, conflict["error"].as_str()),
        (409, Some("transfer_in_progress"))
    );
    eventually(
        "move-out information at B",
        &[&cs_a, &pref13, &national, &pref27, &cs_b],
        || (transfer_state(&cs_b, &id1)? == "received").then_some(()),
    );
    let move_in =
        |code: &str, pin: &str| json!({"resident_code": code, "pin": pin, "move_date": today()});
    let (status, wrong) = cs_b.post("/v1/move-ins", &move_in(&codes[0], "0000"), &[]);
    assert_eq!(
        (status, wrong["error"].as_str(), wrong["field"].as_str()),
        (422, Some("pin_mismatch"), Some("pin"))
    );
    let answers: Vec<(u16, Value)> = thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| cs_b.post("/v1/move-ins", &move_in(&codes[0], "4321"), &[])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        answers.iter().filter(|(s, _)| *s == 201).count(),
        1,
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .all(|(s, v)| (*s == 201 || *s == 200) && v["transfer_id"] == json!(id1)),
        "{answers:?}"
    );
    eventually(
        "A completes move 1",
        &[&cs_a, &pref13, &national, &pref27, &cs_b],
        || (transfer_state(&cs_a, &id1)? == "completed").then_some(()),
    );
    assert_eq!(transfer_state(&cs_b, &id1).as_deref(), Some("moved_in"));
    let metrics = client::get(&format!("{}/metrics", cs_b.url), timeout()).unwrap();
    let metrics = String::from_utf8_lossy(&metrics.body);
    for needle in [
        "juki_node_wide_area_total{event=\"moved_in\"} 1",
        "juki_node_wide_area_total{event=\"message_move_out_info\"} 1",
    ] {
        assert!(metrics.contains(needle), "{needle} missing in\n{metrics}");
    }
    let (status, replay) = cs_b.post("/v1/move-ins", &move_in(&codes[0], "4321"), &[]);
    assert_eq!((status, &replay["state"]), (200, &json!("moved_in")));
    // Moved out of A: no copy from A any more; B issues one now.
    let ask_a = json!({"resident_code": codes[0], "home_municipality": a});
    let (status, refusal) = cs_c.post(
        "/v1/issuances?wait=30",
        &ask_a,
        &[("Idempotency-Key", "iss-3")],
    );
    assert_eq!(
        (status, refusal["error"].as_str()),
        (409, Some("resident_moved_out")),
        "{refusal}"
    );
    let ask_b = json!({"resident_code": codes[0], "home_municipality": b});
    let (status, copy_b) = cs_c.post(
        "/v1/issuances?wait=30",
        &ask_b,
        &[("Idempotency-Key", "iss-4")],
    );
    assert_eq!(
        (status, &copy_b["answer"]["copy"]["municipality_code"]),
        (200, &json!(b)),
        "{copy_b}"
    );

    // Move 2: A → C inside prefecture 13; the prefecture is killed after the move-out and the
    // source after the move-in.
    let (status, t2) = cs_a.post("/v1/transfers", &move_out(&codes[1], &c), &[]);
    assert_eq!(status, 201, "{t2}");
    let id2 = t2["transfer_id"].as_str().unwrap().to_owned();
    pref13.restart_after(Duration::from_millis(200));
    eventually(
        "move-out information at C",
        &[&cs_a, &pref13, &cs_c],
        || (transfer_state(&cs_c, &id2)? == "received").then_some(()),
    );
    let (status, m2) = cs_c.post("/v1/move-ins", &move_in(&codes[1], "4321"), &[]);
    assert_eq!(status, 201, "{m2}");
    cs_a.restart_after(Duration::from_millis(100));
    cs_c.restart_after(Duration::from_millis(100));
    eventually("A completes move 2", &[&cs_a, &pref13, &cs_c], || {
        (transfer_state(&cs_a, &id2)? == "completed").then_some(())
    });

    // Move 3: A → B again across prefectures with the national server, the destination and
    // both prefectures killed between the steps.
    let (status, t3) = cs_a.post("/v1/transfers", &move_out(&codes[2], &b), &[]);
    assert_eq!(status, 201, "{t3}");
    let id3 = t3["transfer_id"].as_str().unwrap().to_owned();
    national.restart_after(Duration::from_millis(300));
    cs_b.restart_after(Duration::from_millis(100));
    eventually(
        "move-out information at B",
        &[&cs_a, &pref13, &national, &pref27, &cs_b],
        || (transfer_state(&cs_b, &id3)? == "received").then_some(()),
    );
    let (status, m3) = cs_b.post("/v1/move-ins", &move_in(&codes[2], "4321"), &[]);
    assert_eq!(status, 201, "{m3}");
    pref27.restart_after(Duration::from_millis(100));
    pref13.restart_after(Duration::from_millis(100));
    national.restart_after(Duration::from_millis(100));
    eventually(
        "A completes move 3",
        &[&cs_a, &pref13, &national, &pref27, &cs_b],
        || (transfer_state(&cs_a, &id3)? == "completed").then_some(()),
    );

    // Move 4: the first resident moves back B → A. Four identical move-outs at once file one
    // transfer; the national server is killed after the move-out, B's prefecture after the
    // move-in. (The sampler now reads B, the source, first.)
    orders.lock().unwrap()[0] = vec![1, 0, 2];
    let back = move_out(&codes[0], &a);
    let filed: Vec<(u16, Value)> = thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| cs_b.post("/v1/transfers", &back, &[])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        filed.iter().filter(|(s, _)| *s == 201).count(),
        1,
        "{filed:?}"
    );
    let id4 = filed[0].1["transfer_id"].as_str().unwrap().to_owned();
    assert!(
        filed.iter().all(|(_, v)| v["transfer_id"] == json!(id4)),
        "{filed:?}"
    );
    national.restart_after(Duration::from_millis(200));
    eventually(
        "move-out information back at A",
        &[&cs_b, &pref27, &national, &pref13, &cs_a],
        || (transfer_state(&cs_a, &id4)? == "received").then_some(()),
    );
    let (status, m4) = cs_a.post("/v1/move-ins", &move_in(&codes[0], "4321"), &[]);
    assert_eq!(status, 201, "{m4}");
    pref27.restart_after(Duration::from_millis(100));
    eventually(
        "B completes move 4",
        &[&cs_b, &pref27, &national, &pref13, &cs_a],
        || (transfer_state(&cs_b, &id4)? == "completed").then_some(()),
    );

    // The soak: SOAK residents of A move at once, half to B and half to C, each driven by its
    // own client that retries every step (same request) across failures, while random nodes
    // are killed with SIGKILL and restarted mid-flow.
    let soak_started = Instant::now();
    let done = AtomicBool::new(false);
    let kills = AtomicU64::new(0);
    let retries = AtomicU64::new(0);
    let soak_ids: Vec<String> = thread::scope(|s| {
        let clients: Vec<_> = codes[4..]
            .iter()
            .enumerate()
            .map(|(i, code)| {
                let dest = if i % 2 == 0 {
                    (&b, &cs_b.url)
                } else {
                    (&c, &cs_c.url)
                };
                let (a_url, dest_url, retries) = (cs_a.url.clone(), dest.1.clone(), &retries);
                let body = move_out(code, dest.0);
                let code = code.clone();
                s.spawn(move || {
                    // Staggered, so the kills fall on every step of some move.
                    thread::sleep(Duration::from_millis(150 * i as u64));
                    let (_, t) = post_until_answered(&a_url, "/v1/transfers", &body, retries);
                    let id = t["transfer_id"].as_str().expect("transfer id").to_owned();
                    wait_state(&dest_url, &id, "received");
                    let (status, m) = post_until_answered(
                        &dest_url,
                        "/v1/move-ins",
                        &json!({"resident_code": code, "pin": "4321", "move_date": today()}),
                        retries,
                    );
                    assert!(status == 201 || status == 200, "{status} {m}");
                    wait_state(&a_url, &id, "completed");
                    id
                })
            })
            .collect();
        let killer = s.spawn(|| {
            let nodes = [
                &mut national,
                &mut pref13,
                &mut pref27,
                &mut cs_a,
                &mut cs_b,
                &mut cs_c,
            ];
            let mut rng = soak_started.elapsed().as_nanos() as u64 | 1;
            while !done.load(Ordering::SeqCst) && kills.load(Ordering::Relaxed) < 20 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                thread::sleep(Duration::from_millis(100 + rng % 300));
                let victim = (rng >> 20) as usize % nodes.len();
                nodes[victim].restart_after(Duration::from_millis(rng % 150));
                kills.fetch_add(1, Ordering::Relaxed);
            }
        });
        let ids = clients.into_iter().map(|c| c.join().unwrap()).collect();
        done.store(true, Ordering::SeqCst);
        killer.join().unwrap();
        ids
    });
    assert_eq!(soak_ids.len(), SOAK);
    let soak_time = soak_started.elapsed();

    // Every outbox drained; the national server has each moved resident active at the
    // destination (A's late 転出 did not overwrite it).
    eventually(
        "outboxes drained and mailboxes acknowledged",
        &[&cs_a, &cs_b, &cs_c, &pref13, &pref27],
        || {
            let outboxes = [&cs_a, &cs_b, &cs_c, &pref13, &pref27]
                .iter()
                .all(|n| n.pending() == 0);
            let mailboxes = [&pref13, &pref27, &national]
                .iter()
                .all(|n| n.undelivered() == 0);
            (outboxes && mailboxes).then_some(())
        },
    );
    stop.store(true, Ordering::SeqCst);
    sampler.join().expect("a resident was active nowhere");
    let mut expected = vec![
        (&codes[0], &a),
        (&codes[1], &c),
        (&codes[2], &b),
        (&codes[3], &a),
    ];
    for (i, code) in codes[4..].iter().enumerate() {
        expected.push((code, if i % 2 == 0 { &b } else { &c }));
    }
    let mut cs_conns: Vec<_> = [&dbs[3], &dbs[5], &dbs[4]]
        .iter()
        .map(|d| d.url.connect().unwrap())
        .collect();
    let mut national_db = dbs[0].url.connect().unwrap();
    for (code, muni) in expected {
        let total: i64 = cs_conns.iter_mut().map(|c| active(c, code).unwrap()).sum();
        assert_eq!(total, 1, "{code} active in exactly one CS");
        let (m, s): (String, String) = residents::table
            .filter(residents::resident_code.eq(code))
            .select((residents::municipality_code, residents::status))
            .first(&mut national_db)
            .unwrap();
        assert_eq!(
            (m.as_str(), s.as_str()),
            (muni.as_str(), "active"),
            "{code} at national"
        );
    }
    eprintln!(
        "wide-area ({backend:?}): issuance round trips in {:.1}s, 4 moves with 10 kills; soak: {SOAK} concurrent moves in {:.1}s with {} random kills and {} client retries; {} invariant samples, total {:.1}s",
        issued_at.as_secs_f64(),
        soak_time.as_secs_f64(),
        kills.load(Ordering::Relaxed),
        retries.load(Ordering::Relaxed),
        samples.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    drop((cs_a, cs_b, cs_c, pref13, pref27, national));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sqlite_wide_area_flows_across_processes() {
    wide_area_flows(Backend::Sqlite);
}

#[test]
fn postgres_wide_area_flows_across_processes() {
    wide_area_flows(Backend::Postgres);
}
