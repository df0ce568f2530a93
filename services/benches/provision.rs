//! Identity queries by resident-record code against a national database of synthetic residents,
//! beside the raw indexed point-select rate of the same database, in one run.
//!
//! `cargo bench -p juki-node --bench provision` (PostgreSQL: JUKINET_TEST_PG_URL, e.g. from
//! `eval "$(scripts/postgres start)"`):
//! 1. Database `juki_bench_provision_<N>` with N residents (default 10,000,000;
//!    JUKINET_PROVISION_N lowers it), migrated by juki-node, loaded server-side with
//!    generate_series in chunks (valid 住民票コード with check digit). It is kept for the next run
//!    (a load of 10 M takes minutes); JUKINET_PROVISION_RELOAD=1 rebuilds it.
//! 2. The floor: pgbench, select-only custom script (`SELECT * FROM residents WHERE
//!    resident_code = …` for a random resident), prepared statements, C clients, D seconds.
//! 3. The release juki-node binary as the national server (plain HTTP; the agency named by the
//!    x-juki-identity header of an open node), C keep-alive client threads posting
//!    `POST /v1/agency/queries` by resident-record code for random residents for D seconds; each
//!    query writes its provision_log row before the answer. Queries/s, p50/p99, and a check that
//!    the log grew by exactly the number of answered queries.
//!
//! Steps 2 and 3 run for each client count C in JUKINET_PROVISION_CLIENTS (comma-separated,
//! default 2,8,16,32,64: pgbench peaks at few clients on two cores, the node answers concurrent
//! queries in batches, so its rate grows with how many are waiting), after a 5 s pgbench warm-up
//! that is not counted. The provision log is emptied first, so runs start alike.
//! D = JUKINET_PROVISION_SECONDS (default 15).
//! Target: at least 50% of the raw rate, as capacities: the best provision rate of the sweep
//! (every query logged) against the best raw rate of the sweep. Each row also shows the ratio
//! at its own client count. Prints PASS/MISS and always exits 0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use juki_node::relay::client;
use juki_node::store::db::{self, DbUrl};

const TARGET: f64 = 0.50;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// The resident-record code of synthetic resident `i` (10 digits and the check digit).
fn code(i: u64) -> String {
    let mut d = [0u8; 10];
    let mut n = i;
    for x in d.iter_mut().rev() {
        *x = (n % 10) as u8;
        n /= 10;
    }
    format!("{i:010}{}", juki_codes::resident_record_check_digit(&d))
}

/// The same check digit in SQL (and in pgbench's expression language below).
const SQL_CODE: &str = "lpad(i::text, 10, '0') || (CASE WHEN r <= 1 THEN 0 ELSE 11 - r END)::text";
const SQL_R: &str = "(5 * (i / 1000000000 % 10) + 4 * (i / 100000000 % 10) + 3 * (i / 10000000 % 10) \
    + 2 * (i / 1000000 % 10) + 7 * (i / 100000 % 10) + 6 * (i / 10000 % 10) + 5 * (i / 1000 % 10) \
    + 4 * (i / 100 % 10) + 3 * (i / 10 % 10) + 2 * (i % 10)) % 11";

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let after = base.find("://").map_or(0, |i| i + 3);
    let prefix = base[after..].find('/').map_or(base, |i| &base[..after + i]);
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

/// Creates and loads the database unless a complete one is there; returns its URL.
fn prepare(admin_url: &str, n: u64) -> Result<String, String> {
    let name = format!("juki_bench_provision_{n}");
    let url = with_database(admin_url, &name);
    let mut admin = PgConnection::establish(admin_url).map_err(|e| e.to_string())?;
    let reload = std::env::var("JUKINET_PROVISION_RELOAD").as_deref() == Ok("1");
    if !reload && let Ok(mut conn) = PgConnection::establish(&url) {
        let loaded: Result<i64, _> = diesel::sql_query("SELECT n FROM bench_loaded")
            .get_result::<Loaded>(&mut conn)
            .map(|l| l.n);
        if loaded == Ok(n as i64) {
            println!("provision: reusing {name} ({n} residents)");
            return Ok(url);
        }
    }
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .and_then(|()| admin.batch_execute(&format!("CREATE DATABASE {name}")))
        .map_err(|e| e.to_string())?;
    let mut conn = DbUrl::Postgres(url.clone())
        .connect()
        .map_err(|e| e.to_string())?;
    db::run_migrations(&mut conn).map_err(|e| e.to_string())?;
    let juki_node::store::db::DbConnection::Pg(pg) = &mut conn else {
        return Err("not PostgreSQL".into());
    };
    let started = Instant::now();
    let chunk = 1_000_000u64;
    let mut from = 1u64;
    while from <= n {
        let to = (from + chunk - 1).min(n);
        pg.batch_execute(&format!(
            "INSERT INTO residents (resident_code, individual_number, name, name_kana, birth_date, sex, \
             address, municipality_code, status, updated_at) \
             SELECT {SQL_CODE}, NULL, '住民 ' || i, 'ジュウミン', \
               (DATE '1930-01-01' + (i % 30000)::int)::text, CASE WHEN i % 2 = 0 THEN 'male' ELSE 'female' END, \
               '千代田区千代田' || (i % 1000) || '-' || (i % 97), \
               (ARRAY['131016', '011002', '271004', '401005'])[1 + i % 4], 'active', '2026-11-29T00:00:00Z' \
             FROM (SELECT i, {SQL_R} AS r FROM generate_series({from}::bigint, {to}::bigint) AS i) AS s"
        ))
        .map_err(|e| format!("load {from}..{to}: {e}"))?;
        println!(
            "provision: loaded {to} of {n} residents ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
        from = to + 1;
    }
    pg.batch_execute("VACUUM ANALYZE residents")
        .and_then(|()| {
            pg.batch_execute(&format!(
                "CREATE TABLE bench_loaded AS SELECT {n}::bigint AS n"
            ))
        })
        .map_err(|e| e.to_string())?;
    println!(
        "provision: {n} residents loaded in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(url)
}

#[derive(QueryableByName)]
struct Loaded {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// Empties the bench database's provision log, so every run starts alike: a log grown by earlier
/// runs (1.5 M rows each) made each run slower than the last, and its autovacuum ran into the
/// measurements. The append-only guard (a TRUNCATE trigger) is held off inside this transaction
/// only.
fn clear_log(url: &str) -> Result<(), String> {
    let mut conn = PgConnection::establish(url).map_err(|e| e.to_string())?;
    conn.batch_execute(
        "BEGIN; ALTER TABLE provision_log DISABLE TRIGGER USER; TRUNCATE provision_log; \
         ALTER TABLE provision_log ENABLE TRIGGER USER; COMMIT",
    )
    .and_then(|()| conn.batch_execute("VACUUM ANALYZE provision_log"))
    .map_err(|e| format!("clearing the provision log: {e}"))
}

/// Reads the residents table and its primary key into PostgreSQL's shared buffers
/// (contrib's pg_prewarm; without it the pgbench warm-up alone has to do).
fn prewarm(url: &str) {
    let warmed = PgConnection::establish(url)
        .map_err(|e| e.to_string())
        .and_then(|mut conn| {
            conn.batch_execute(
                "CREATE EXTENSION IF NOT EXISTS pg_prewarm; \
                 SELECT pg_prewarm('residents'); SELECT pg_prewarm('residents_pkey')",
            )
            .map_err(|e| e.to_string())
        });
    if let Err(e) = warmed {
        println!("provision: pg_prewarm not used ({e})");
    }
}

fn log_rows(url: &str) -> Result<i64, String> {
    let mut conn = PgConnection::establish(url).map_err(|e| e.to_string())?;
    diesel::sql_query("SELECT count(*) AS n FROM provision_log")
        .get_result::<Loaded>(&mut conn)
        .map(|l| l.n)
        .map_err(|e| e.to_string())
}

fn pgbench() -> Result<std::path::PathBuf, String> {
    if let Ok(p) = std::env::var("JUKI_PGBENCH") {
        return Ok(p.into());
    }
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| format!("pgbench: {e}"))?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin/pgbench")))
        .filter(|p| p.exists())
        .collect();
    dirs.sort();
    dirs.pop()
        .ok_or_else(|| "pgbench not found under /usr/lib/postgresql".into())
}

/// pgbench with a select-only script of random residents: transactions (= queries) per second.
fn raw_rate(url: &str, n: u64, clients: u64, seconds: u64, dir: &Path) -> Result<f64, String> {
    let script = dir.join("select.sql");
    let r = SQL_R.replace('i', ":i");
    std::fs::write(
        &script,
        format!(
            "\\set i random(1, {n})\n\\set r {r}\n\\set cd CASE WHEN :r <= 1 THEN 0 ELSE 11 - :r END\n\
             SELECT * FROM residents WHERE resident_code = lpad(:i::text, 10, '0') || :cd::text;\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    let out = Command::new(pgbench()?)
        .args(["-n", "-M", "prepared", "-j", "2"])
        .args(["-c", &clients.to_string(), "-T", &seconds.to_string()])
        .arg("-f")
        .arg(&script)
        .arg(url)
        .output()
        .map_err(|e| format!("pgbench: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "pgbench: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let failed = text
        .lines()
        .find(|l| l.contains("number of failed transactions"));
    if let Some(l) = failed
        && !l.contains(": 0 ")
    {
        return Err(format!("pgbench: {l}"));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("pgbench: no tps in {text}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One keep-alive POST; returns the status.
fn post(stream: &mut BufReader<TcpStream>, body: &str) -> Result<u16, String> {
    let request = format!(
        "POST /v1/agency/queries HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n\
         x-juki-identity: agency-bench\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut status = 0u16;
    let mut length = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("connection closed".into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if status == 0 {
            status = l
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
        } else if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(status)
}

struct Load {
    answered: u64,
    errors: u64,
    latencies_ms: Vec<f64>,
}

fn load(port: u16, n: u64, clients: u64, seconds: u64) -> Load {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            std::thread::spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (t + 1);
                let mut out = Load { answered: 0, errors: 0, latencies_ms: Vec::new() };
                let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) else {
                    out.errors += 1;
                    return out;
                };
                let _ = stream.set_nodelay(true);
                let mut stream = BufReader::new(stream);
                while Instant::now() < deadline {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let body = format!(
                        r#"{{"affair":"bench","reason":"benchmark","by":{{"resident_code":"{}"}}}}"#,
                        code(1 + x % n)
                    );
                    let started = Instant::now();
                    match post(&mut stream, &body) {
                        Ok(200) => {
                            out.answered += 1;
                            out.latencies_ms.push(started.elapsed().as_secs_f64() * 1000.0);
                        }
                        _ => out.errors += 1,
                    }
                }
                out
            })
        })
        .collect();
    let mut all = Load {
        answered: 0,
        errors: 0,
        latencies_ms: Vec::new(),
    };
    for t in threads {
        if let Ok(l) = t.join() {
            all.answered += l.answered;
            all.errors += l.errors;
            all.latencies_ms.extend(l.latencies_ms);
        }
    }
    all.latencies_ms.sort_by(f64::total_cmp);
    all
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The client counts to measure at (`JUKINET_PROVISION_CLIENTS`, comma-separated).
fn client_counts() -> Vec<u64> {
    let list = std::env::var("JUKINET_PROVISION_CLIENTS").unwrap_or_else(|_| "2,8,16,32,64".into());
    let counts: Vec<u64> = list
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .filter(|&c| c > 0)
        .collect();
    if counts.is_empty() { vec![8] } else { counts }
}

fn run(admin_url: &str) -> Result<(), String> {
    let n = env_number("JUKINET_PROVISION_N", 10_000_000).max(1000);
    let counts = client_counts();
    let seconds = env_number("JUKINET_PROVISION_SECONDS", 15).max(1);
    let dir = std::env::temp_dir().join(format!("juki-bench-provision-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let url = prepare(admin_url, n)?;
    clear_log(&url)?;

    // The first measurement must not pay for a cold cache that the later ones find warm: after
    // a restart, 5 s of pgbench warmed only part of the table (31,600 q/s at 2 clients, against
    // 72,000–79,000 warm), so the table and its key are read into the shared buffers first.
    println!(
        "provision: warming the cache (pg_prewarm, then pgbench select-only, 8 clients, 5 s, not counted) …"
    );
    let _ = std::io::stdout().flush();
    prewarm(&url);
    raw_rate(&url, n, 8, 5, &dir)?;

    let allow = dir.join("allow.json");
    std::fs::write(&allow, r#"{"allow": [{"agency": "bench", "affair": "bench", "items": ["resident_code", "name", "birth_date", "sex", "address"]}]}"#)
        .map_err(|e| e.to_string())?;
    let port = free_port();
    let log = dir.join("national.log");
    let child = Command::new(env!("CARGO_BIN_EXE_juki-node"))
        .args([
            "serve",
            "--role",
            "national",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--database-url", &url])
        .arg("--allow-list")
        .arg(&allow)
        .env_remove("JUKI_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("start juki-node: {e}"))?;
    let _node = Node(child);
    let ready = Instant::now() + Duration::from_secs(60);
    while !client::get(
        &format!("http://127.0.0.1:{port}/readyz"),
        Duration::from_secs(2),
    )
    .is_ok_and(|r| r.status == 200)
    {
        if Instant::now() > ready {
            return Err(format!("juki-node not ready (see {})", log.display()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut table = vec![
        "| residents | clients | raw point-select q/s (pgbench -S-like) | provision q/s | ratio | p50 / p99 ms | errors | log rows written |".to_owned(),
        "|---|---|---|---|---|---|---|---|".to_owned(),
    ];
    let mut notes = Vec::new();
    // (q/s, clients, p99) of the best provision row and (q/s, clients) of the best raw row.
    let mut best_provision = (0.0, 0, 0.0);
    let mut best_raw = (0.0, 0);
    let mut all_logged = true;
    for clients in counts {
        println!("provision: {clients} clients: raw floor (pgbench select-only, {seconds} s) …");
        let _ = std::io::stdout().flush();
        let raw = raw_rate(&url, n, clients, seconds, &dir)?;
        println!("provision: {clients} clients: identity queries (keep-alive, {seconds} s) …");
        let _ = std::io::stdout().flush();
        let before = log_rows(&url)?;
        let started = Instant::now();
        let result = load(port, n, clients, seconds);
        let elapsed = started.elapsed().as_secs_f64();
        let logged = log_rows(&url)? - before;
        let qps = result.answered as f64 / elapsed;
        let ratio = qps / raw;
        let p99 = percentile(&result.latencies_ms, 0.99);
        table.push(format!(
            "| {n} | {clients} | {raw:.0} | {qps:.0} | {:.1}% | {:.2} / {p99:.2} | {} | {logged} (queries {}) |",
            ratio * 100.0,
            percentile(&result.latencies_ms, 0.50),
            result.errors,
            result.answered,
        ));
        if qps > best_provision.0 {
            best_provision = (qps, clients, p99);
        }
        if raw > best_raw.0 {
            best_raw = (raw, clients);
        }
        if logged != result.answered as i64 {
            all_logged = false;
            notes.push(format!(
                "provision: {clients} clients: the log has {logged} new rows for {} answered queries",
                result.answered
            ));
        }
    }
    println!("\n{}", table.join("\n"));
    for note in notes {
        println!("{note}");
    }
    // The target compares capacities: the most the node answered (every query logged) against
    // the most the database's raw point-select gave, each at its own best client count. A row
    // with few clients measures their round trips rather than either side's capacity: each
    // query waits for its log row's commit, and pgbench's reads commit nothing.
    let ratio = best_provision.0 / best_raw.0;
    println!(
        "\ncapacity: provision {:.0} q/s ({} clients, p99 {:.2} ms) against raw {:.0} q/s ({} clients): {:.1}%, log written for every query: {} — target ≥ 50%: {}",
        best_provision.0,
        best_provision.1,
        best_provision.2,
        best_raw.0,
        best_raw.1,
        ratio * 100.0,
        if all_logged { "yes" } else { "NO" },
        if ratio >= TARGET && all_logged {
            "PASS"
        } else {
            "MISS"
        }
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn main() {
    match std::env::var("JUKINET_TEST_PG_URL") {
        Ok(url) if !url.is_empty() => {
            if let Err(e) = run(&url) {
                println!("provision: failed: {e}");
            }
        }
        _ => println!("provision: skipped (JUKINET_TEST_PG_URL is unset)"),
    }
}
