//! File delivery down the tree against a plain parallel download.
//!
//! `cargo bench -p juki-node --bench delivery` starts the `juki-node` binary as one national
//! server, 4 prefectural servers (01, 13, 23, 27) and 40 CSs (10 under each) on loopback ports
//! (plain HTTP), puts a 64 MiB file (`JUKINET_DELIVERY_MIB` changes the size) on the national
//! server (`PUT /admin/v1/deliveries/content/{sha256}`), then asks each prefecture to fetch it
//! (`POST /admin/v1/deliveries/fetch`, staged as file `bench`) and, as soon as a prefecture
//! holds it, its 10 CSs. It measures:
//! - the fetch phase: until all 44 nodes hold the verified file and have staged it;
//! - the apply phase: the 44 nodes restarted, until all are ready with the file applied (the
//!   start re-reads the 64 MiB to check its digest before switching the version);
//! - the national egress: the content bytes the national server sent during the fetch phase
//!   (its `juki_node_delivery_bytes_total{direction="served"}`);
//! - the peak RSS of every node (`VmHWM` of /proc/PID/status), during the fetch and during the
//!   apply, and its growth over the node's RSS when it became ready (what the delivery costs);
//! - the floor: the same 44 × 64 MiB downloaded by 44 parallel plain GETs from one server (the
//!   national node's content endpoint), written to files, nothing verified.
//!
//! Prints a table with PASS/MISS against the targets (egress ≤ 5 × size; peak RSS < 32 MiB)
//! and always exits 0.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use juki_node::delivery::Sha256;
use juki_node::relay::client;
use serde_json::{Value, json};

const PREFECTURES: [u8; 4] = [1, 13, 23, 27];
const CS_PER_PREFECTURE: u32 = 10;
const TIMEOUT: Duration = Duration::from_secs(120);
const MIB: u64 = 1 << 20;

struct Node {
    name: String,
    args: Vec<String>,
    url: String,
    child: Child,
    log: PathBuf,
    /// VmHWM when the node became ready, in KiB.
    ready_kib: u64,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A valid municipality code of prefecture `p` (number `n` there).
fn municipality(p: u8, n: u32) -> String {
    let first = format!("{p:02}{:03}", 100 + n);
    let digits: [u8; 5] = std::array::from_fn(|i| first.as_bytes()[i] - b'0');
    format!("{first}{}", juki_codes::municipality_check_digit(&digits))
}

impl Node {
    fn spawn(name: &str, args: Vec<String>, dir: &Path) -> Node {
        let port = free_port();
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_juki-node"))
            .arg("serve")
            .args(&args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--database-url")
            .arg(dir.join(format!("{name}.db")))
            .arg("--delivery-dir")
            .arg(dir.join(name))
            .env_remove("JUKI_CONFIG")
            .env_remove("DATABASE_URL")
            .env_remove("JUKI_UPSTREAM_URL")
            .env("JUKI_DB_POOL_SIZE", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Node {
            name: name.into(),
            args,
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
            ready_kib: 0,
        }
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            let ready = client::get(&format!("{}/readyz", self.url), TIMEOUT);
            if ready.is_ok_and(|r| r.status == 200) {
                self.ready_kib = self.peak_rss_kib();
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited with {status}:\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(started.elapsed() < TIMEOUT, "{} not ready", self.name);
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn proc_field(&self, file: &str, key: &str) -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{}/{file}", self.child.id()))
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Peak resident set size, in KiB.
    fn peak_rss_kib(&self) -> u64 {
        self.proc_field("status", "VmHWM:")
    }

    /// Growth of the peak RSS since the node was ready, in KiB.
    fn growth_kib(&self) -> u64 {
        self.peak_rss_kib().saturating_sub(self.ready_kib)
    }

    /// Content bytes the node has served to the tier below.
    fn served(&self) -> u64 {
        let r = client::get(&format!("{}/metrics", self.url), TIMEOUT).unwrap();
        String::from_utf8_lossy(&r.body)
            .lines()
            .find(|l| l.starts_with("juki_node_delivery_bytes_total{direction=\"served\""))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

fn post_fetch(url: &str, sha: &Sha256) -> Value {
    let body = json!({"sha256": sha.as_str(), "file": "bench"}).to_string();
    let r = client::post_json(
        &format!("{url}/admin/v1/deliveries/fetch"),
        body.as_bytes(),
        &[],
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{url}: {}", String::from_utf8_lossy(&r.body));
    r.json().unwrap()
}

fn content(size: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Starts every node, national first, and waits until they are ready.
fn start_tree(dir: &Path) -> (Node, Vec<Node>, Vec<Vec<Node>>) {
    let mut national = Node::spawn("national", vec!["--role".into(), "national".into()], dir);
    national.wait_ready();
    let mut prefectures: Vec<Node> = PREFECTURES
        .iter()
        .map(|p| {
            let args = vec![
                "--role".into(),
                "prefecture".into(),
                "--prefecture-code".into(),
                format!("{p:02}"),
                "--upstream-url".into(),
                national.url.clone(),
            ];
            Node::spawn(&format!("pref-{p:02}"), args, dir)
        })
        .collect();
    prefectures.iter_mut().for_each(Node::wait_ready);
    let mut css: Vec<Vec<Node>> = PREFECTURES
        .iter()
        .zip(&prefectures)
        .map(|(p, pref)| {
            (0..CS_PER_PREFECTURE)
                .map(|n| {
                    let m = municipality(*p, n);
                    let args = vec![
                        "--role".into(),
                        "cs".into(),
                        "--municipality-code".into(),
                        m.clone(),
                        "--upstream-url".into(),
                        pref.url.clone(),
                    ];
                    Node::spawn(&format!("cs-{m}"), args, dir)
                })
                .collect()
        })
        .collect();
    css.iter_mut().flatten().for_each(Node::wait_ready);
    (national, prefectures, css)
}

/// Each prefecture fetches, then its CSs in parallel; returns when all 44 hold the file.
fn fetch_down(prefectures: &[Node], css: &[Vec<Node>], sha: &Sha256) {
    thread::scope(|s| {
        for (pref, children) in prefectures.iter().zip(css) {
            s.spawn(move || {
                post_fetch(&pref.url, sha);
                thread::scope(|s| {
                    for cs in children {
                        s.spawn(move || post_fetch(&cs.url, sha));
                    }
                });
            });
        }
    });
}

/// Restarts `node` with the same arguments (the staged file is applied at the start).
fn restart(node: &mut Node, dir: &Path) {
    node.stop();
    let args = node.args.clone();
    *node = Node::spawn(&node.name.clone(), args, dir);
}

fn applied(node: &Node, sha: &Sha256) -> bool {
    let r = client::get(&format!("{}/admin/v1/deliveries", node.url), TIMEOUT).unwrap();
    let view = r.json().unwrap();
    view["files"].as_array().is_some_and(|f| {
        f.iter()
            .any(|r| r["current"]["sha256"] == json!(sha.as_str()))
    })
}

/// 44 parallel plain GETs of the content from the national node, each written to a file.
fn floor(national: &Node, sha: &Sha256, dir: &Path, clients: usize) -> Duration {
    let url = format!("{}/v1/deliveries/content/{sha}", national.url);
    let started = Instant::now();
    thread::scope(|s| {
        for i in 0..clients {
            let (url, path) = (&url, dir.join(format!("floor-{i}")));
            s.spawn(move || {
                let mut r = client::get_streaming(url, &[], TIMEOUT).unwrap();
                let mut file = std::fs::File::create(&path).unwrap();
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = r.body.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    file.write_all(&buf[..n]).unwrap();
                }
                file.sync_all().unwrap();
            });
        }
    });
    started.elapsed()
}

/// What one run measured (RSS in KiB, per lower node: the prefectures first).
struct Figures {
    mib: u64,
    prefectures: usize,
    count: usize,
    fetch_phase: Duration,
    apply_phase: Duration,
    all_applied: bool,
    floor_time: Duration,
    egress_ratio: f64,
    egress_mib: f64,
    national_rss: u64,
    national_growth: u64,
    fetch_rss: Vec<u64>,
    fetch_growth: Vec<u64>,
    apply_rss: Vec<u64>,
}

fn report(f: &Figures) {
    let max_mib = |v: &[u64]| v.iter().copied().max().unwrap_or(0) as f64 / 1024.0;
    let p = f.prefectures;
    let peak = max_mib(&f.fetch_rss)
        .max(max_mib(&f.apply_rss))
        .max(f.national_rss as f64 / 1024.0);
    let secs = Duration::as_secs_f64;
    println!(
        "delivery bench: {} MiB, 1 national → {p} prefectures → {} CSs (juki-node processes, loopback, plain HTTP)",
        f.mib,
        f.count - p
    );
    println!(
        "  fetch phase (all {} hold it, verified, staged): {:>7.2} s",
        f.count,
        secs(&f.fetch_phase)
    );
    println!(
        "  apply phase (restart, digest re-check, switch):  {:>7.2} s  all applied: {}",
        secs(&f.apply_phase),
        f.all_applied
    );
    println!(
        "  until all applied:                              {:>7.2} s",
        secs(&(f.fetch_phase + f.apply_phase))
    );
    println!(
        "  floor, {} parallel plain GETs from one server:  {:>7.2} s  (fetch phase / floor {:.2})",
        f.count,
        secs(&f.floor_time),
        secs(&f.fetch_phase) / secs(&f.floor_time)
    );
    println!(
        "  national egress (content served, fetch phase): {:.1} MiB = {:.2} × size  target ≤ 5 × size: {}",
        f.egress_mib,
        f.egress_ratio,
        pass(f.egress_ratio <= 5.0)
    );
    println!(
        "  peak RSS (VmHWM): national {:.1} MiB, prefectures ≤ {:.1} MiB, CSs ≤ {:.1} MiB (fetch), ≤ {:.1} MiB (apply)  target < 32 MiB: {}",
        f.national_rss as f64 / 1024.0,
        max_mib(&f.fetch_rss[..p]),
        max_mib(&f.fetch_rss[p..]),
        max_mib(&f.apply_rss),
        pass(peak < 32.0)
    );
    println!(
        "  growth over the RSS at ready: national {:.1} MiB (upload + 4 transfers), prefectures ≤ {:.1} MiB, CSs ≤ {:.1} MiB",
        f.national_growth as f64 / 1024.0,
        max_mib(&f.fetch_growth[..p]),
        max_mib(&f.fetch_growth[p..])
    );
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

fn main() {
    let mib: u64 = std::env::var("JUKINET_DELIVERY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let size = mib * MIB;
    let dir = std::env::temp_dir().join(format!("juki-delivery-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let data = content(size);
    let sha = Sha256::of(&data);
    let (national, mut prefectures, mut css) = start_tree(&dir);
    let r = client::request(
        "PUT",
        &format!("{}/admin/v1/deliveries/content/{sha}", national.url),
        Some(&data),
        &[],
        TIMEOUT,
    )
    .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    drop(data);

    let served_before = national.served();
    let started = Instant::now();
    fetch_down(&prefectures, &css, &sha);
    let fetch_phase = started.elapsed();
    let egress = national.served() - served_before;
    let lower = || prefectures.iter().chain(css.iter().flatten());
    let fetch_rss: Vec<u64> = lower().map(Node::peak_rss_kib).collect();
    let fetch_growth: Vec<u64> = lower().map(Node::growth_kib).collect();
    let (national_rss, national_growth) = (national.peak_rss_kib(), national.growth_kib());

    let started = Instant::now();
    for node in prefectures.iter_mut().chain(css.iter_mut().flatten()) {
        restart(node, &dir);
    }
    for node in prefectures.iter_mut().chain(css.iter_mut().flatten()) {
        node.wait_ready();
    }
    let apply_phase = started.elapsed();
    let lower = || prefectures.iter().chain(css.iter().flatten());
    let all_applied = lower().all(|n| applied(n, &sha));
    let apply_rss: Vec<u64> = lower().map(Node::peak_rss_kib).collect();

    let count = prefectures.len() + css.iter().map(Vec::len).sum::<usize>();
    let floor_time = floor(&national, &sha, &dir, count);
    report(&Figures {
        mib,
        prefectures: prefectures.len(),
        count,
        fetch_phase,
        apply_phase,
        all_applied,
        floor_time,
        egress_ratio: egress as f64 / size as f64,
        egress_mib: egress as f64 / MIB as f64,
        national_rss,
        national_growth,
        fetch_rss,
        fetch_growth,
        apply_rss,
    });
    drop((national, prefectures, css));
    let _ = std::fs::remove_dir_all(&dir);
}
