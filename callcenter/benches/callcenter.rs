//! The call center's benchmark, in one run (`cargo bench -p juki-callcenter --bench callcenter`):
//!
//! 1. Search: N synthetic past tickets (default 1,000,000; JUKINET_CC_TICKETS) made from the
//!    Japanese seed (its sentences recombined, with other municipalities, nodes and numbers) are
//!    indexed into the service's bigram index (2 writer threads, 1 GB budget, one commit): build
//!    time and index size. Then Q queries (default 2,000; JUKINET_CC_QUERIES: the labelled
//!    queries and fragments of the seed, as staff and as a municipality): p50/p99/max latency.
//!    Targets: p99 < 50 ms, index < 2 GiB.
//! 2. Filing on PostgreSQL (JUKINET_TEST_PG_URL; skipped without it): F tickets (default
//!    2,000; JUKINET_CC_FILINGS) filed through the service (validation, authorisation, ticket
//!    row + history row in one transaction, index update and commit) by C concurrent callers
//!    (JUKINET_CC_CLIENTS, default 4), against the raw rate of the same number of single-row
//!    INSERTs of the ticket row alone with the same concurrency.
//!
//! Prints the figures and PASS/MISS; always exits 0.

use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use jiff::Timestamp;
use juki_calendar::{Calendar, CalendarConfig};
use juki_callcenter::domain::clock::SystemClock;
use juki_callcenter::domain::sla::SlaPolicy;
use juki_callcenter::domain::ticket::{Ticket, TicketInput};
use juki_callcenter::domain::{Caller, Channel, Kind, Scope, State};
use juki_callcenter::search::{SearchIndex, SearchQuery};
use juki_callcenter::store::{Db, DbUrl};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
}

fn sentences(text: &str) -> Vec<String> {
    text.split_inclusive('。')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

const ORGS: &[&str] = &[
    "131016", "131041", "271004", "011002", "141003", "231002", "401005", "130001", "270008",
    "012025", "222038", "261009", "041009", "341002", "472018", "151009", "331007", "431001",
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn search_bench(n: u64, queries: u64) {
    let seed = juki_callcenter::seed::tickets();
    let subjects: Vec<&str> = seed.iter().map(|s| s.subject.as_str()).collect();
    let body_sentences: Vec<String> = seed.iter().flat_map(|s| sentences(&s.body)).collect();
    let answer_sentences: Vec<String> = seed.iter().flat_map(|s| sentences(&s.answer)).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let index = SearchIndex::in_ram(2, 1_000_000_000).unwrap();
    let now = Timestamp::now();
    let started = Instant::now();
    let mut chunk = Vec::with_capacity(10_000);
    let mut text_bytes = 0u64;
    for id in 1..=n as i64 {
        let org = rng.pick(ORGS).to_string();
        let body = format!(
            "{}{}(受付番号{})",
            rng.pick(&body_sentences),
            rng.pick(&body_sentences),
            rng.next() % 1_000_000
        );
        let answer = format!(
            "{}{}",
            rng.pick(&answer_sentences),
            rng.pick(&answer_sentences)
        );
        let subject = format!("{} (cs-{org})", rng.pick(&subjects));
        text_bytes += (body.len() + answer.len() + subject.len()) as u64;
        chunk.push(Ticket {
            id,
            kind: if id % 4 == 0 {
                Kind::Fault
            } else {
                Kind::Inquiry
            },
            state: State::Closed,
            org: Some(org),
            reporter: String::new(),
            channel: Channel::Phone,
            subject,
            body,
            category: None,
            nodes: vec![],
            answer: Some(answer),
            recovery: None,
            filed_by: String::new(),
            created_at: now,
            first_answer_at: None,
            updated_at: now,
        });
        if chunk.len() == 10_000 {
            index.stage(&chunk).unwrap();
            chunk.clear();
        }
        if id % 200_000 == 0 {
            eprintln!("  indexed {id} in {:.1} s", started.elapsed().as_secs_f64());
        }
    }
    index.stage(&chunk).unwrap();
    index.commit().unwrap();
    let build = started.elapsed();
    let size = index.size_bytes().unwrap();
    println!(
        "index: {n} tickets ({:.0} MiB of text) built in {:.1} s ({:.0} tickets/s), {:.0} MiB ({} docs)",
        text_bytes as f64 / 1048576.0,
        build.as_secs_f64(),
        n as f64 / build.as_secs_f64(),
        size as f64 / 1048576.0,
        index.len()
    );
    // Queries: the labelled set and random fragments of the seed, alternately as staff (all)
    // and as a municipality (filtered inside the query).
    let labelled: Vec<String> = juki_callcenter::seed::queries()
        .into_iter()
        .map(|q| q.q)
        .collect();
    let mut latencies = Vec::with_capacity(queries as usize);
    let mut returned = 0usize;
    for i in 0..queries {
        let text = if i % 2 == 0 {
            rng.pick(&labelled).clone()
        } else {
            let s = rng.pick(&body_sentences);
            s.chars().take(20).collect()
        };
        let scope = if i % 3 == 0 {
            Scope::Org(rng.pick(ORGS).to_string())
        } else {
            Scope::All
        };
        let q = SearchQuery {
            text,
            scope,
            limit: 10,
            answered_only: i % 5 == 0,
            exclude: None,
        };
        let t = Instant::now();
        returned += index.search(&q).unwrap().len();
        latencies.push(t.elapsed());
    }
    latencies.sort();
    let p99 = percentile(&latencies, 0.99);
    println!(
        "search: {queries} queries (limit 10, highlights), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {:.1} results/query",
        ms(percentile(&latencies, 0.50)),
        ms(p99),
        ms(*latencies.last().unwrap()),
        returned as f64 / queries as f64
    );
    let pass = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!(
        "targets: p99 < 50 ms {}; index < 2 GiB {}",
        pass(ms(p99) < 50.0),
        pass(size < 2 << 30)
    );
}

async fn filing_bench(url: &str, filings: u64, clients: u64) {
    let name = format!("juki_bench_cc_{}", std::process::id());
    let mut admin = PgConnection::establish(url).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let db_url = match url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => unreachable!(),
    };
    let cc = juki_callcenter::cli::call_center(
        Db::new(DbUrl::Postgres(db_url.clone()), clients as u32 + 2),
        Calendar::new(&CalendarConfig::default()).unwrap(),
        SlaPolicy::default(),
        Arc::new(SystemClock),
    )
    .unwrap();
    cc.prepare().await.unwrap();
    let input = |i: u64| TicketInput {
        kind: "inquiry".into(),
        org: "131016".into(),
        reporter: "ベンチ".into(),
        channel: "terminal".into(),
        subject: format!("CSのオンライン時間外に接続できない {i}"),
        body: "朝7時半に住民記録システムからCSへ接続すると拒否されます。障害でしょうか。".into(),
        nodes: vec!["cs-131016".into()],
        category: None,
    };
    // Through the service.
    let started = Instant::now();
    let per = filings / clients;
    let mut tasks = Vec::new();
    for c in 0..clients {
        let cc = cc.clone();
        tasks.push(tokio::spawn(async move {
            let staff = Caller::Staff("bench".into());
            for i in 0..per {
                cc.file(&staff, input(c * per + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let service = (per * clients) as f64 / started.elapsed().as_secs_f64();
    // The raw rate: the ticket row alone, one INSERT per statement, same concurrency.
    let started = Instant::now();
    let mut threads = Vec::new();
    for _ in 0..clients {
        let db_url = db_url.clone();
        threads.push(std::thread::spawn(move || {
            let mut conn = PgConnection::establish(&db_url).unwrap();
            for _ in 0..per {
                conn.batch_execute(
                    "INSERT INTO tickets (kind, state, org_code, reporter, channel, subject, body, nodes, filed_by, created_at, updated_at) \
                     VALUES ('inquiry', 'received', '131016', 'ベンチ', 'terminal', 'CSのオンライン時間外に接続できない', \
                     '朝7時半に住民記録システムからCSへ接続すると拒否されます。', '[\"cs-131016\"]', 'bench', 0, 0)",
                )
                .unwrap();
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    let raw = (per * clients) as f64 / started.elapsed().as_secs_f64();
    println!(
        "filing on PostgreSQL: {} tickets by {clients} callers: service {service:.0} tickets/s (row + history + index commit), raw INSERT {raw:.0} rows/s, ratio {:.2}",
        per * clients,
        service / raw
    );
    drop(cc);
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
}

fn main() {
    let n = env_number("JUKINET_CC_TICKETS", 1_000_000);
    let queries = env_number("JUKINET_CC_QUERIES", 2_000);
    println!("juki-callcenter bench: JUKINET_CC_TICKETS={n} JUKINET_CC_QUERIES={queries}");
    search_bench(n, queries);
    match std::env::var("JUKINET_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        Some(url) => {
            let filings = env_number("JUKINET_CC_FILINGS", 2_000);
            let clients = env_number("JUKINET_CC_CLIENTS", 4).max(1);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(filing_bench(&url, filings, clients));
        }
        None => println!("filing: skipped (JUKINET_TEST_PG_URL is unset)"),
    }
}
