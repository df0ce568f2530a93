//! End-to-end throughput of the relay chain against the raw insert rate of the same database.
//!
//! `cargo bench -p juki-node --bench throughput` starts the release `juki-node` binary as one
//! national, one prefectural (13) and two CS servers (131016, 131024) on loopback ports, no
//! calendar (the upstream is always open), and posts N updates (default 100,000; half at each
//! CS; `JUKINET_THROUGHPUT_N` lowers it) of new residents — 出生 and 転入, valid resident codes
//! and individual numbers — in batches of 100 per `POST /v1/updates` with an Idempotency-Key,
//! from two client threads per CS. It measures the latency of each request, and the time until
//! the national server has applied all N (its `juki_node_updates_total{stage="applied"}`).
//!
//! The floor: the same N resident rows and N history rows inserted directly with diesel into a
//! fresh database of the same backend (same connection settings), in transactions of 100
//! updates, with multi-row INSERTs.
//!
//! It runs on SQLite (files in a temp directory) and on PostgreSQL when JUKINET_TEST_PG_URL is
//! set (fresh databases, dropped afterwards), prints a table with PASS/MISS against the target
//! (end-to-end ≥ 30% of the raw rate) and always exits 0.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use juki_node::relay::client;
use juki_node::store::db::{self, DbConnection, DbUrl};
use juki_node::store::models::{HistoryRow, ResidentRow};
use juki_node::store::schema::{change_history, residents};
use serde_json::{Value, json};

/// Updates per POST (and per transaction of the raw floor).
const BATCH: usize = 100;
/// Client threads per CS.
const THREADS_PER_CS: usize = 2;
/// The target: end-to-end at least this share of the raw insert rate.
const TARGET: f64 = 0.30;
const CS_CODES: [u64; 2] = [13101, 13102];

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

fn individual_number(n: u64) -> String {
    let d = digits::<11>(n);
    with_check(d, juki_codes::individual_number_check_digit(&d))
}

/// The k-th update of CS `cs` (0 or 1): a new resident, by 出生 or 転入.
fn update(cs: usize, k: usize) -> Value {
    let n = (cs as u64 + 1) * 10_000_000 + k as u64;
    let birth = k.is_multiple_of(2);
    let (birth_date, change_date) = if birth {
        let d = format!("2024-05-{:02}", k % 28 + 1);
        (d.clone(), d)
    } else {
        (
            format!("{}-{:02}-{:02}", 1950 + k % 60, k % 12 + 1, k % 28 + 1),
            "2024-06-01".to_owned(),
        )
    };
    json!({
        "resident_code": resident_code(n),
        "individual_number": individual_number(n),
        "name": format!("住基 太郎{k}"),
        "name_kana": format!("ジュウキ タロウ{k}"),
        "birth_date": birth_date,
        "sex": if k.is_multiple_of(3) { "女" } else { "男" },
        "address": format!("東京都千代田区千代田{}-{}", k % 9 + 1, k),
        "municipality_code": municipality(CS_CODES[cs]),
        "reason": if birth { "出生" } else { "転入" },
        "change_date": change_date,
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A running `juki-node serve`; killed on drop.
struct Node {
    child: Child,
    port: u16,
}

impl Node {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// CPU seconds (user + system) the process used so far (Linux `/proc`; 0 elsewhere).
    fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
            .sum();
        ticks / 100.0
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(args: &[&str], database: &str, log: &Path) -> Result<Node, String> {
    let port = free_port();
    let stderr = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let child = Command::new(env!("CARGO_BIN_EXE_juki-node"))
        .arg("serve")
        .args(args)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", database])
        .env_remove("JUKI_CONFIG")
        .env_remove("DATABASE_URL")
        .env_remove("JUKI_DATABASE_URL")
        .env_remove("JUKI_CALENDAR")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("start juki-node: {e}"))?;
    let node = Node { child, port };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client::get(&format!("{}/readyz", node.url()), Duration::from_secs(2))
            && r.status == 200
        {
            return Ok(node);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{args:?} not ready after 60 s (see {})",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The national server's applied count.
fn applied(national: &Node) -> Option<u64> {
    let r = client::get(
        &format!("{}/metrics", national.url()),
        Duration::from_secs(10),
    )
    .ok()?;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    Some(
        text.lines()
            .find(|l| l.starts_with("juki_node_updates_total{stage=\"applied\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64),
    )
}

/// Where the five databases of one run live, and how they are removed.
enum Databases {
    Sqlite(PathBuf),
    Postgres { admin: String, names: Vec<String> },
}

impl Databases {
    fn create(backend: &str) -> Result<(Databases, Vec<String>), String> {
        let roles = ["national", "pref", "cs1", "cs2", "raw", "raw2"];
        match backend {
            "sqlite" => {
                let dir =
                    std::env::temp_dir().join(format!("juki-throughput-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                let urls = roles
                    .iter()
                    .map(|r| dir.join(format!("{r}.db")).to_string_lossy().into_owned())
                    .collect();
                Ok((Databases::Sqlite(dir), urls))
            }
            _ => {
                let admin = std::env::var("JUKINET_TEST_PG_URL").map_err(|e| e.to_string())?;
                let mut conn = PgConnection::establish(&admin).map_err(|e| e.to_string())?;
                let mut names = Vec::new();
                let mut urls = Vec::new();
                for r in roles {
                    let name = format!("jtp_{}_{r}", std::process::id());
                    conn.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .and_then(|()| conn.batch_execute(&format!("CREATE DATABASE {name}")))
                        .map_err(|e| format!("create {name}: {e}"))?;
                    urls.push(with_database(&admin, &name));
                    names.push(name);
                }
                Ok((Databases::Postgres { admin, names }, urls))
            }
        }
    }

    /// Where the nodes' logs go: `JUKINET_THROUGHPUT_LOGS` if set (kept), else beside the
    /// databases (removed).
    fn log_dir(&self) -> PathBuf {
        if let Some(dir) = std::env::var_os("JUKINET_THROUGHPUT_LOGS") {
            let dir = PathBuf::from(dir);
            let _ = std::fs::create_dir_all(&dir);
            return dir;
        }
        match self {
            Databases::Sqlite(dir) => dir.clone(),
            Databases::Postgres { .. } => std::env::temp_dir(),
        }
    }
}

impl Drop for Databases {
    fn drop(&mut self) {
        match self {
            Databases::Sqlite(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Databases::Postgres { admin, names } => {
                if let Ok(mut conn) = PgConnection::establish(admin) {
                    for name in names {
                        let _ = conn
                            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                    }
                }
            }
        }
    }
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let prefix = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

/// The figures of one backend.
struct Figures {
    backend: &'static str,
    n: usize,
    e2e_seconds: f64,
    ingest_seconds: f64,
    raw_seconds: f64,
    request_ms: Vec<f64>,
    errors: usize,
    /// CPU time of each node process.
    cpu: String,
    raw_note: String,
    complete: bool,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn run(backend: &'static str, n: usize) -> Result<Figures, String> {
    let (databases, urls) = Databases::create(backend)?;
    let logs = databases.log_dir();
    let log = |role: &str| logs.join(format!("{backend}-{role}.log"));
    let per_cs = n / 2;
    // The request bodies, built before the clock starts.
    let bodies: Vec<Vec<Vec<u8>>> = (0..2)
        .map(|cs| {
            (0..per_cs)
                .collect::<Vec<_>>()
                .chunks(BATCH)
                .map(|ks| {
                    serde_json::to_vec(&Value::Array(ks.iter().map(|&k| update(cs, k)).collect()))
                        .unwrap_or_default()
                })
                .collect()
        })
        .collect();

    let national = start(&["--role", "national"], &urls[0], &log("national"))?;
    let pref = start(
        &[
            "--role",
            "prefecture",
            "--prefecture-code",
            "13",
            "--upstream-url",
            &national.url(),
        ],
        &urls[1],
        &log("pref"),
    )?;
    let mut css = Vec::new();
    for (i, code) in CS_CODES.iter().enumerate() {
        css.push(start(
            &[
                "--role",
                "cs",
                "--municipality-code",
                &municipality(*code),
                "--upstream-url",
                &pref.url(),
            ],
            &urls[2 + i],
            &log(&format!("cs{}", i + 1)),
        )?);
    }

    let bodies = Arc::new(bodies);
    let started = Instant::now();
    let mut clients = Vec::new();
    for (cs, node) in css.iter().enumerate() {
        for t in 0..THREADS_PER_CS {
            let url = format!("{}/v1/updates", node.url());
            let bodies = bodies.clone();
            clients.push(std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut errors = 0;
                for (j, body) in bodies[cs]
                    .iter()
                    .enumerate()
                    .skip(t)
                    .step_by(THREADS_PER_CS)
                {
                    let key = format!("bench-{cs}-{j}");
                    for _attempt in 0..20 {
                        let sent = Instant::now();
                        match client::post_json(
                            &url,
                            body,
                            &[("Idempotency-Key", &key)],
                            Duration::from_secs(60),
                        ) {
                            Ok(r) if r.status == 201 => {
                                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                                break;
                            }
                            Ok(r) => {
                                errors += 1;
                                eprintln!(
                                    "throughput: batch {cs}/{j}: {} {}",
                                    r.status,
                                    String::from_utf8_lossy(&r.body)
                                );
                                if r.status < 500 {
                                    break;
                                }
                            }
                            Err(e) => {
                                errors += 1;
                                eprintln!("throughput: batch {cs}/{j}: {e}");
                                std::thread::sleep(Duration::from_millis(100));
                            }
                        }
                    }
                }
                (latencies, errors)
            }));
        }
    }
    let mut request_ms = Vec::new();
    let mut errors = 0;
    for c in clients {
        let (l, e) = c
            .join()
            .map_err(|_| "a client thread panicked".to_owned())?;
        request_ms.extend(l);
        errors += e;
    }
    let ingest_seconds = started.elapsed().as_secs_f64();
    let applied_at_ingest_end = applied(&national).unwrap_or(0);
    let total = (per_cs * 2) as u64;
    let deadline = Instant::now() + Duration::from_secs(60 + total / 200);
    let mut complete = false;
    let mut last_report = Instant::now();
    loop {
        let done = applied(&national).unwrap_or(0);
        if done >= total {
            complete = true;
            break;
        }
        if Instant::now() > deadline {
            eprintln!(
                "throughput: {backend}: national applied {done} of {total} before the deadline"
            );
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!("throughput: {backend}: national applied {done} of {total}");
            last_report = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let e2e_seconds = started.elapsed().as_secs_f64();
    let cpu = format!(
        "national had applied {applied_at_ingest_end} when the ingestion ended; CPU seconds: national {:.1}, prefecture {:.1}, CS {:.1} + {:.1}",
        national.cpu_seconds(),
        pref.cpu_seconds(),
        css[0].cpu_seconds(),
        css[1].cpu_seconds()
    );
    drop(css);
    drop(pref);
    drop(national);

    let (raw_seconds, raw_note) = raw_floor([&urls[4], &urls[5]], per_cs)?;
    request_ms.sort_by(f64::total_cmp);
    Ok(Figures {
        backend,
        n: per_cs * 2,
        e2e_seconds,
        ingest_seconds,
        raw_seconds,
        request_ms,
        errors,
        complete,
        cpu,
        raw_note,
    })
}

type Batches = Vec<(Vec<ResidentRow>, Vec<HistoryRow>)>;

/// Inserts the same rows (a resident and a history row per update) straight into fresh
/// migrated databases, BATCH updates per transaction, once with multi-row INSERTs and once row
/// by row (diesel's cached prepared statement); returns the faster time (the floor is the best
/// the database does) and both figures.
fn raw_floor(urls: [&str; 2], per_cs: usize) -> Result<(f64, String), String> {
    let batches = raw_rows(per_cs);
    let multi = raw_insert(urls[0], &batches, true)?;
    let single = raw_insert(urls[1], &batches, false)?;
    let n = (per_cs * 2) as f64;
    Ok((
        multi.min(single),
        format!(
            "raw insert: multi-row {:.0} upd/s, row by row {:.0} upd/s (the faster is the floor)",
            n / multi,
            n / single
        ),
    ))
}

fn raw_rows(per_cs: usize) -> Batches {
    let now = jiff::Timestamp::now().to_string();
    let mut batches: Batches = Vec::new();
    let mut id = 0i64;
    for cs in 0..2 {
        for ks in (0..per_cs).collect::<Vec<_>>().chunks(BATCH) {
            let mut rs = Vec::new();
            let mut hs = Vec::new();
            for &k in ks {
                id += 1;
                let u = update(cs, k);
                let s = |f: &str| u[f].as_str().unwrap_or_default().to_owned();
                rs.push(ResidentRow {
                    resident_code: s("resident_code"),
                    individual_number: Some(s("individual_number")),
                    name: s("name"),
                    name_kana: s("name_kana"),
                    former_surname: None,
                    alias: None,
                    birth_date: s("birth_date"),
                    sex: if k.is_multiple_of(3) { "2" } else { "1" }.to_owned(),
                    address: s("address"),
                    municipality_code: s("municipality_code"),
                    status: "active".to_owned(),
                    updated_at: now.clone(),
                    permanent_domicile: None,
                    domicile_head: None,
                });
                hs.push(HistoryRow {
                    id,
                    resident_code: s("resident_code"),
                    reason: if k.is_multiple_of(2) {
                        "birth"
                    } else {
                        "move_in"
                    }
                    .to_owned(),
                    change_date: s("change_date"),
                    municipality_code: s("municipality_code"),
                    payload: u.to_string(),
                    recorded_at: now.clone(),
                    source_sender: format!("cs-{}", s("municipality_code")),
                    source_seq: k as i64 + 1,
                    trace_id: Some(format!("{:032x}", id)),
                });
            }
            batches.push((rs, hs));
        }
    }
    batches
}

fn raw_insert(url: &str, batches: &Batches, multi_row: bool) -> Result<f64, String> {
    let url = DbUrl::parse(url).map_err(|e| e.to_string())?;
    let mut conn = url.connect().map_err(|e| e.to_string())?;
    db::run_migrations(&mut conn).map_err(|e| e.to_string())?;
    // Multi-row INSERTs need the concrete connection (the MultiConnection has no batch insert).
    macro_rules! insert_all {
        ($c:expr) => {{
            let started = Instant::now();
            for (rs, hs) in batches {
                $c.transaction(|c| {
                    if multi_row {
                        diesel::insert_into(residents::table)
                            .values(rs)
                            .execute(c)?;
                        diesel::insert_into(change_history::table)
                            .values(hs)
                            .execute(c)?;
                    } else {
                        for (r, h) in rs.iter().zip(hs) {
                            diesel::insert_into(residents::table).values(r).execute(c)?;
                            diesel::insert_into(change_history::table)
                                .values(h)
                                .execute(c)?;
                        }
                    }
                    Ok::<_, diesel::result::Error>(())
                })
                .map_err(|e| format!("raw insert: {e}"))?;
            }
            started
        }};
    }
    let started = match &mut conn {
        DbConnection::Sqlite(c) => insert_all!(c),
        DbConnection::Pg(c) => insert_all!(c),
    };
    Ok(started.elapsed().as_secs_f64())
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    let n = std::env::var("JUKINET_THROUGHPUT_N")
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse::<usize>().ok())
        .unwrap_or(100_000)
        .max(2 * BATCH);
    let n = n / (2 * BATCH) * (2 * BATCH);
    println!(
        "throughput: {n} updates ({} per CS, {BATCH} per request, {THREADS_PER_CS} client threads per CS), national ← prefecture 13 ← 2 CSs, no calendar",
        n / 2
    );
    let mut results = Vec::new();
    let mut notes = Vec::new();
    for backend in ["sqlite", "postgres"] {
        if backend == "postgres"
            && std::env::var("JUKINET_TEST_PG_URL")
                .map(|u| u.is_empty())
                .unwrap_or(true)
        {
            notes.push("postgres: skipped (JUKINET_TEST_PG_URL is unset)".to_owned());
            continue;
        }
        println!("throughput: running {backend} …");
        let _ = std::io::stdout().flush();
        match run(backend, n) {
            Ok(f) => results.push(f),
            Err(e) => notes.push(format!("{backend}: failed: {e}")),
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n| backend | updates | end-to-end upd/s | ingest upd/s | raw insert upd/s (rows/s) | ratio | request p50 / p99 ms | per update p50 / p99 ms | errors | target ≥ 30% |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|");
    for f in &results {
        let e2e = f.n as f64 / f.e2e_seconds;
        let ingest = f.n as f64 / f.ingest_seconds;
        let raw = f.n as f64 / f.raw_seconds;
        let ratio = e2e / raw;
        let (p50, p99) = (
            percentile(&f.request_ms, 0.50),
            percentile(&f.request_ms, 0.99),
        );
        let verdict = if !f.complete {
            "MISS (incomplete)"
        } else if ratio >= TARGET {
            "PASS"
        } else {
            "MISS"
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} ({:.1} s) | {:.0} ({:.1} s) | {:.0} ({:.0}) | {:.1}% | {:.1} / {:.1} | {:.2} / {:.2} | {} | {} |",
            f.backend,
            f.n,
            e2e,
            f.e2e_seconds,
            ingest,
            f.ingest_seconds,
            raw,
            raw * 2.0,
            ratio * 100.0,
            p50,
            p99,
            p50 / BATCH as f64,
            p99 / BATCH as f64,
            f.errors,
            verdict
        );
    }
    for f in &results {
        let _ = writeln!(out, "{}: {}; {}", f.backend, f.cpu, f.raw_note);
    }
    for note in notes {
        let _ = writeln!(out, "{note}");
    }
    println!("{out}");
}
