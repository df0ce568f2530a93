//! Three tiers with real processes: one national, one prefectural and two CS servers of the
//! built `juki-node` binary on loopback ports. Thousands of updates go to the two CSs while
//! processes are killed with SIGKILL and restarted; afterwards the national server must hold
//! exactly the expected final state and history: nothing lost, nothing duplicated, every
//! resident's history in the order the CS accepted it. Runs on SQLite files and on PostgreSQL.

mod common;

use std::collections::BTreeMap;
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
use juki_node::store::schema::{change_history, residents};
use serde_json::{Value, json};

/// Residents per CS; every resident gets `ROUNDS` updates.
const RESIDENTS: usize = 500;
const ROUNDS: usize = 5;
/// Updates per POST /v1/updates.
const BATCH: usize = 10;
/// SIGKILLs done during the run (at least one per process).
const KILLS: usize = 8;

fn timeout() -> Duration {
    Duration::from_secs(5)
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

fn code_with_check<const N: usize>(first: [u8; N], check: u8) -> String {
    first
        .iter()
        .chain(std::iter::once(&check))
        .map(|d| char::from(b'0' + d))
        .collect()
}

fn municipality(first5: u64) -> String {
    let d = digits::<5>(first5);
    code_with_check(d, juki_codes::municipality_check_digit(&d))
}

fn resident_code(n: u64) -> String {
    let d = digits::<10>(n);
    code_with_check(d, juki_codes::resident_record_check_digit(&d))
}

fn individual_number(n: u64) -> String {
    let d = digits::<11>(n);
    code_with_check(d, juki_codes::individual_number_check_digit(&d))
}

/// A tiny deterministic PRNG (xorshift64*), seeded per run and printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The expected final record of a resident.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Final {
    address: String,
    status: &'static str,
    updates: usize,
}

/// The updates of one CS in acceptance order, and the expected final state.
fn workload(muni: &str, base: u64, rng: &mut Rng) -> (Vec<Value>, BTreeMap<String, Final>) {
    let mut updates = Vec::new();
    let mut expected = BTreeMap::new();
    let codes: Vec<String> = (0..RESIDENTS as u64)
        .map(|i| resident_code(base + i))
        .collect();
    for round in 0..ROUNDS {
        for (i, code) in codes.iter().enumerate() {
            let address = format!("{muni} 丁目{round}-{i}");
            let (reason, status) = match round {
                0 => ("転入", "active"),
                r if r == ROUNDS - 1 => match rng.below(4) {
                    0 => ("転出", "moved_out"),
                    1 => ("死亡", "deceased"),
                    _ => ("転居", "active"),
                },
                _ => ("転居", "active"),
            };
            let number = (i % 2 == 0).then(|| individual_number(base * 10 + i as u64));
            updates.push(json!({
                "resident_code": code,
                "individual_number": number,
                "name": format!("住民 {i}"),
                "name_kana": "ジュウミン",
                "birth_date": "1980-01-31",
                "sex": if i % 2 == 0 { "女" } else { "男" },
                "address": address,
                "municipality_code": muni,
                "reason": reason,
                "change_date": "2024-06-01",
            }));
            let entry = expected.entry(code.clone()).or_insert(Final {
                address: String::new(),
                status: "active",
                updates: 0,
            });
            entry.address = address;
            entry.status = status;
            entry.updates += 1;
        }
    }
    (updates, expected)
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
        let mut args: Vec<String> = ["serve", "--database-url", database, "--listen"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(format!("127.0.0.1:{port}"));
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
            .env_remove("JUKI_UPSTREAM_URL")
            .env_remove("DATABASE_URL")
            .env("JUKI_RELAY_BACKOFF_MAX_MS", "400")
            .env("JUKI_LINK_PROBE_SECS", "1")
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
        while client::get(&format!("{}/readyz", self.url), timeout())
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

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The value of the first `/metrics` line that starts with `prefix`.
    fn metric(&self, prefix: &str) -> Option<f64> {
        let r = client::get(&format!("{}/metrics", self.url), timeout()).ok()?;
        String::from_utf8_lossy(&r.body)
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Waits (up to 15 s) until the metric starting with `prefix` reads `want`.
    fn wait_for_metric(&self, prefix: &str, want: f64) {
        let started = Instant::now();
        while self.metric(prefix) != Some(want) {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{}: {prefix} is {:?}, not {want}",
                self.name,
                self.metric(prefix)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn relay_status(&self) -> Option<Value> {
        let r = client::get(&format!("{}/admin/v1/relay", self.url), timeout()).ok()?;
        (r.status == 200).then(|| r.json().ok()).flatten()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Posts `updates` to a CS in batches, retrying a batch (same Idempotency-Key) until it is
/// accepted; a 4xx answer is a bug.
fn send_all(
    url: String,
    tag: String,
    updates: Vec<Value>,
    stop: Arc<AtomicBool>,
    retries: Arc<AtomicU64>,
) {
    for (n, chunk) in updates.chunks(BATCH).enumerate() {
        let key = format!("{tag}-{n}");
        let body = serde_json::to_vec(chunk).unwrap();
        loop {
            assert!(!stop.load(Ordering::SeqCst), "stopped");
            match client::post_json(
                &format!("{url}/v1/updates"),
                &body,
                &[("Idempotency-Key", &key)],
                timeout(),
            ) {
                Ok(r) if r.status == 201 => break,
                Ok(r) if r.status < 500 => {
                    panic!("{key}: {} {}", r.status, String::from_utf8_lossy(&r.body))
                }
                _ => {
                    retries.fetch_add(1, Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
}

fn database_url(db: &TestDb) -> String {
    match &db.url {
        DbUrl::Sqlite(path) => format!("sqlite://{path}"),
        DbUrl::Postgres(url) => url.clone(),
    }
}

fn three_tier_under_kills(backend: Backend) {
    let dbs: Vec<TestDb> = match (0..4)
        .map(|_| TestDb::new(backend))
        .collect::<Option<Vec<_>>>()
    {
        Some(dbs) => dbs,
        None => return,
    };
    let dir = std::env::temp_dir().join(format!(
        "juki-three-tier-{}-{}",
        std::process::id(),
        match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("three-tier: seed {seed}, logs in {}", dir.display());
    let mut rng = Rng(seed);
    let started = Instant::now();

    let muni_a = municipality(13101);
    let muni_b = municipality(13102);
    let mut national = Node::new(
        "national",
        &["--role", "national"],
        &database_url(&dbs[0]),
        None,
        &dir,
    );
    national.start();
    let mut pref = Node::new(
        "pref-13",
        &["--role", "prefecture", "--prefecture-code", "13"],
        &database_url(&dbs[1]),
        Some(&national.url.clone()),
        &dir,
    );
    pref.start();
    let mut cs_a = Node::new(
        "cs-a",
        &["--role", "cs", "--municipality-code", &muni_a],
        &database_url(&dbs[2]),
        Some(&pref.url.clone()),
        &dir,
    );
    cs_a.start();
    let mut cs_b = Node::new(
        "cs-b",
        &["--role", "cs", "--municipality-code", &muni_b],
        &database_url(&dbs[3]),
        Some(&pref.url.clone()),
        &dir,
    );
    cs_b.start();

    let (updates_a, mut expected) = workload(&muni_a, 1_000_000, &mut rng);
    let (updates_b, expected_b) = workload(&muni_b, 2_000_000, &mut rng);
    expected.extend(expected_b);
    let total = updates_a.len() + updates_b.len();

    let stop = Arc::new(AtomicBool::new(false));
    let retries = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = [
        (cs_a.url.clone(), "a", updates_a),
        (cs_b.url.clone(), "b", updates_b),
    ]
    .into_iter()
    .map(|(url, tag, updates)| {
        let (stop, retries) = (stop.clone(), retries.clone());
        let tag = tag.to_string();
        thread::spawn(move || send_all(url, tag, updates, stop, retries))
    })
    .collect();

    // Kill every process at least once (in a random order), then random ones.
    let mut order: Vec<usize> = vec![0, 1, 2, 3];
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    while order.len() < KILLS {
        order.push(rng.below(4) as usize);
    }
    let mut kills = Vec::new();
    for victim in order {
        thread::sleep(Duration::from_millis(150 + rng.below(350)));
        let node = match victim {
            0 => &mut national,
            1 => &mut pref,
            2 => &mut cs_a,
            _ => &mut cs_b,
        };
        node.kill();
        kills.push(node.name.clone());
        thread::sleep(Duration::from_millis(rng.below(300)));
        node.start();
    }
    for s in senders {
        if s.join().is_err() {
            stop.store(true, Ordering::SeqCst);
            panic!("a sender failed");
        }
    }
    let sent_at = started.elapsed();

    // Wait until every outbox is empty and the national server has every history row.
    let national_db = dbs[0].url.connect().unwrap();
    let mut national_db = national_db;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pending: Vec<i64> = [&cs_a, &cs_b, &pref]
            .iter()
            .map(|n| {
                n.relay_status()
                    .and_then(|s| s["outbox"]["pending"].as_i64())
                    .unwrap_or(-1)
            })
            .collect();
        let history: i64 = change_history::table
            .count()
            .get_result(&mut national_db)
            .unwrap();
        if pending.iter().all(|p| *p == 0) && history >= total as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not drained: pending {pending:?}, national history {history}/{total}\n{}\n{}\n{}",
            cs_a.log_tail(),
            pref.log_tail(),
            national.log_tail()
        );
        thread::sleep(Duration::from_millis(100));
    }

    // Exactly the expected history: one row per update, each origin (sender, seq) once.
    let rows: Vec<(String, String, i64, Option<String>)> = change_history::table
        .order(change_history::id.asc())
        .select((
            change_history::resident_code,
            change_history::source_sender,
            change_history::source_seq,
            change_history::trace_id,
        ))
        .load(&mut national_db)
        .unwrap();
    assert_eq!(rows.len(), total, "history rows at the national server");
    let mut per_resident: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    let mut origins = std::collections::BTreeSet::new();
    let mut traces = std::collections::BTreeSet::new();
    for (code, sender, seq, trace) in &rows {
        // Every update started its own trace at the CS and kept it up to the national server.
        assert!(
            traces.insert(trace.clone().expect("trace id")),
            "shared trace"
        );
        assert!(
            origins.insert((sender.clone(), *seq)),
            "duplicate {sender}/{seq}"
        );
        per_resident.entry(code).or_default().push(*seq);
    }
    for (code, seqs) in &per_resident {
        assert_eq!(seqs.len(), expected[*code].updates, "history of {code}");
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "order of {code}: {seqs:?}"
        );
    }
    // Exactly the expected final state.
    let records: Vec<(String, String, String)> = residents::table
        .select((
            residents::resident_code,
            residents::address,
            residents::status,
        ))
        .load(&mut national_db)
        .unwrap();
    assert_eq!(records.len(), expected.len());
    for (code, address, status) in records {
        let want = &expected[&code];
        assert_eq!(
            (address.as_str(), status.as_str()),
            (want.address.as_str(), want.status),
            "{code}"
        );
    }
    eprintln!(
        "three-tier ({backend:?}): {total} updates, {} residents, kills {kills:?}, {} client retries, sent in {:.1}s, applied at national in {:.1}s",
        expected.len(),
        retries.load(Ordering::Relaxed),
        sent_at.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    // The CSs' probes of their prefecture: up, and down once it is killed; a relay confirmed.
    let link = format!(
        "juki_node_link_up{{upstream=\"{}\"}}",
        pref.url.trim_start_matches("http://")
    );
    cs_a.wait_for_metric(&link, 1.0);
    assert!(
        cs_a.metric("juki_node_last_relay_success_timestamp_seconds")
            .is_some_and(|t| t > 1.7e9),
        "a confirmed relay has a wall-clock timestamp"
    );
    pref.kill();
    cs_a.wait_for_metric(&link, 0.0);
    cs_b.wait_for_metric(&link, 0.0);
    drop((cs_a, cs_b, pref, national));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sqlite_three_tier_under_kills() {
    three_tier_under_kills(Backend::Sqlite);
}

#[test]
fn postgres_three_tier_under_kills() {
    three_tier_under_kills(Backend::Postgres);
}
