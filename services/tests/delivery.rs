//! File delivery over real sockets: national → prefecture → CS nodes served by the real
//! application, and hand-written upstreams that cut the stream, lie about the content or
//! ignore ranges. Fetch, verify, resume after a cut, refuse a wrong sha256, atomic apply at
//! start (a crash between the steps leaves the old version), idempotence, and bad input.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use clap::Parser;
use common::{Backend, TestDb};
use juki_node::delivery::apply::{ALLOW_LIST, Outcome, Step};
use juki_node::delivery::fetch::{self, content_path};
use juki_node::delivery::{Deliveries, FileName, Sha256};
use juki_node::domain::identity::{NodeIdentity, Role};
use juki_node::error::Error;
use juki_node::http::routes::AppState;
use juki_node::relay::client;
use juki_node::relay::{RelayControl, RelaySettings};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(10);

fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "juki-delivery-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Content that is not all one byte, so an offset error changes the digest.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// A node of `role` with its own database and delivery directory, upstream `upstream`.
struct TestNode {
    state: AppState,
    _db: TestDb,
    dir: PathBuf,
}

impl TestNode {
    fn new(role: Role, upstream: Option<String>) -> TestNode {
        let db = TestDb::new(Backend::Sqlite).unwrap();
        let mut state = db.state();
        state.identity = match role {
            Role::Cs => NodeIdentity::cs("131016").unwrap(),
            Role::Prefecture => NodeIdentity {
                role,
                prefecture: Some(13),
                municipality: None,
            },
            Role::National => NodeIdentity {
                role,
                prefecture: None,
                municipality: None,
            },
        };
        state.relay = Arc::new(RelayControl::new(upstream, None, RelaySettings::default()));
        let dir = temp_dir(role.as_str());
        state.deliveries = Some(Arc::new(Deliveries::open(&dir).unwrap()));
        TestNode {
            state,
            _db: db,
            dir,
        }
    }

    fn deliveries(&self) -> &Arc<Deliveries> {
        self.state.deliveries.as_ref().unwrap()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves `state` with the real application on a loopback port, in a thread of its own.
struct Served {
    url: String,
    handle: actix_web::dev::ServerHandle,
}

impl Served {
    fn start(state: &AppState) -> Served {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = state.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = actix_web::web::Data::new(state);
                let server =
                    actix_web::HttpServer::new(move || juki_node::http::server::app(data.clone()))
                        .workers(1)
                        .disable_signals()
                        .listen(listener)
                        .unwrap()
                        .run();
                tx.send(server.handle()).unwrap();
                let _ = server.await;
            })
        });
        Served {
            url,
            handle: rx.recv().unwrap(),
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn call(url: &str, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
    let r = client::request(method, &format!("{url}{path}"), body, &[], TIMEOUT)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (r.status, r.json().unwrap_or(Value::Null))
}

fn fetch_at(node_url: &str, sha: &str, file: Option<&str>) -> (u16, Value) {
    let body = json!({"sha256": sha, "file": file}).to_string();
    call(
        node_url,
        "POST",
        "/admin/v1/deliveries/fetch",
        Some(body.as_bytes()),
    )
}

/// The names in a node's `content/` directory.
fn content_files(node: &TestNode) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(node.dir.join("content")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn content_flows_down_the_tree_verified_and_idempotent() {
    let national = TestNode::new(Role::National, None);
    let n = Served::start(&national.state);
    let pref = TestNode::new(Role::Prefecture, Some(n.url.clone()));
    let p = Served::start(&pref.state);
    let cs = TestNode::new(Role::Cs, Some(p.url.clone()));
    let c = Served::start(&cs.state);

    let data = content(300_000);
    let sha = Sha256::of(&data).to_string();
    let upload = format!("/admin/v1/deliveries/content/{sha}");
    // A wrong body for the digest is refused and leaves nothing.
    let (status, answer) = call(&n.url, "PUT", &upload, Some(b"not the content"));
    assert_eq!(
        (status, answer["error"].as_str()),
        (422, Some("digest_mismatch")),
        "{answer}"
    );
    assert!(content_files(&national).is_empty());
    let (status, answer) = call(&n.url, "PUT", &upload, Some(&data));
    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["bytes"], json!(300_000));
    let (status, answer) = call(&n.url, "PUT", &upload, Some(&data));
    assert_eq!((status, &answer["alreadyPresent"]), (200, &json!(true)));

    // A CS cannot get it before its prefecture has it: nothing stored, a clear error.
    let (status, answer) = fetch_at(&c.url, &sha, Some("codes"));
    assert_eq!(
        (status, answer["error"].as_str()),
        (502, Some("upstream_missing")),
        "{answer}"
    );
    assert!(content_files(&cs).is_empty());
    assert!(cs.deliveries().staged().unwrap().is_empty());

    let (status, answer) = fetch_at(&p.url, &sha, None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["bytes"], &answer["alreadyPresent"]),
        (&json!(300_000), &json!(false))
    );
    let (status, answer) = fetch_at(&c.url, &sha, Some("codes"));
    assert_eq!(
        (status, &answer["staged"]),
        (200, &json!("codes")),
        "{answer}"
    );
    assert_eq!(
        std::fs::read(cs.dir.join("content").join(&sha)).unwrap(),
        data
    );
    // Again: a no-op.
    let (status, answer) = fetch_at(&c.url, &sha, Some("codes"));
    assert_eq!((status, &answer["alreadyPresent"]), (200, &json!(true)));
    assert_eq!(content_files(&cs), vec![sha.clone()]);

    // Each tier sent the content once: the national server to the prefecture, the prefecture
    // to its CS (and nothing more for the repeated fetch).
    let served = |node: &TestNode| {
        let text = node.state.metrics.render();
        text.lines()
            .find(|l| l.starts_with("juki_node_delivery_bytes_total{direction=\"served\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(
        (served(&national), served(&pref), served(&cs)),
        (300_000, 300_000, 0)
    );

    let (status, view) = call(&c.url, "GET", "/admin/v1/deliveries", None);
    assert_eq!(status, 200);
    assert_eq!(view["content"], json!([{"sha256": sha, "bytes": 300_000}]));
    assert_eq!(view["staged"], json!([{"file": "codes", "sha256": sha}]));
    assert_eq!(view["files"], json!([]));
}

#[test]
fn the_content_endpoint_answers_ranges_and_bad_input() {
    let pref = TestNode::new(Role::Prefecture, None);
    let data = content(1000);
    let sha = Sha256::of(&data);
    pref.deliveries()
        .content
        .put(&sha, &mut data.as_slice())
        .unwrap();
    let p = Served::start(&pref.state);
    let get = |path: &str, range: Option<&str>| {
        let headers: Vec<(&str, &str)> = range.map(|r| ("Range", r)).into_iter().collect();
        let mut r = client::get_streaming(&format!("{}{path}", p.url), &headers, TIMEOUT).unwrap();
        let mut body = Vec::new();
        r.body.read_to_end(&mut body).unwrap();
        (r.status, r.header("content-range").map(str::to_owned), body)
    };
    let path = content_path(&sha);
    assert_eq!(get(&path, None), (200, None, data.clone()));
    assert_eq!(
        get(&path, Some("bytes=900-")),
        (206, Some("bytes 900-999/1000".into()), data[900..].to_vec())
    );
    assert_eq!(
        get(&path, Some("bytes=10-19")),
        (206, Some("bytes 10-19/1000".into()), data[10..20].to_vec())
    );
    let (status, range, _) = get(&path, Some("bytes=1000-"));
    assert_eq!((status, range.as_deref()), (416, Some("bytes */1000")));

    let unknown = Sha256::of(b"unknown");
    let (status, answer) = call(&p.url, "GET", &content_path(&unknown), None);
    assert_eq!((status, answer["error"].as_str()), (404, Some("not_found")));
    for bad in [
        "xyz",
        "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
    ] {
        let (status, answer) = call(
            &p.url,
            "GET",
            &format!("/v1/deliveries/content/{bad}"),
            None,
        );
        assert_eq!(
            (status, answer["error"].as_str(), answer["field"].as_str()),
            (400, Some("format"), Some("sha256")),
            "{answer}"
        );
    }
    let (status, answer) = fetch_at(&p.url, "abc", None);
    assert_eq!(
        (status, answer["field"].as_str()),
        (400, Some("sha256")),
        "{answer}"
    );
    let (status, answer) = fetch_at(&p.url, sha.as_str(), Some("../etc/passwd"));
    assert_eq!(
        (status, answer["field"].as_str()),
        (400, Some("file")),
        "{answer}"
    );
    // The national server has no upstream to fetch from: it stages only what was uploaded.
    let national = TestNode::new(Role::National, None);
    let n = Served::start(&national.state);
    let (status, answer) = fetch_at(&n.url, sha.as_str(), Some("codes"));
    assert_eq!(
        (status, answer["error"].as_str()),
        (404, Some("not_found")),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("upload it first")
    );
    assert!(national.deliveries().staged().unwrap().is_empty());
    let upload = format!("/admin/v1/deliveries/content/{sha}");
    assert_eq!(call(&n.url, "PUT", &upload, Some(&data)).0, 201);
    let (status, answer) = fetch_at(&n.url, sha.as_str(), Some("codes"));
    assert_eq!(
        (status, &answer["staged"]),
        (200, &json!("codes")),
        "{answer}"
    );
    assert_eq!(
        national.deliveries().staged().unwrap()[0].sha256,
        sha.as_str()
    );
}

fn withdraw_at(node_url: &str, file: &str, sha: &str) -> (u16, Value) {
    let body = json!({ "sha256": sha }).to_string();
    let path = format!("/admin/v1/deliveries/files/{file}/withdraw");
    call(node_url, "POST", &path, Some(body.as_bytes()))
}

/// A halted delivery is taken back wherever it got to: unstaged where only fetched, rolled back
/// where applied, nothing where it never came; asking again changes nothing.
#[test]
fn a_withdrawn_delivery_is_unstaged_or_rolled_back_and_asking_again_is_harmless() {
    let pref = TestNode::new(Role::Prefecture, None);
    let p = Served::start(&pref.state);
    let deliveries = pref.deliveries();
    let good = stage(deliveries, "codes", b"version 1");
    deliveries.apply_staged("t1", &no_check).unwrap();
    let bad = stage(deliveries, "codes", b"version 2, garbled");

    let (status, answer) = withdraw_at(&p.url, "codes", bad.as_str());
    assert_eq!(
        (status, &answer["withdrawn"]),
        (200, &json!("unstaged")),
        "{answer}"
    );
    assert!(deliveries.staged().unwrap().is_empty());
    assert!(deliveries.apply_staged("t2", &no_check).unwrap().is_empty());
    assert_eq!(current(deliveries, "codes").unwrap(), b"version 1");

    // Applied before the halt reached it: the previous version comes back at the next start.
    stage(deliveries, "codes", b"version 2, garbled");
    deliveries.apply_staged("t3", &no_check).unwrap();
    let (status, answer) = withdraw_at(&p.url, "codes", bad.as_str());
    assert_eq!(
        (status, &answer["withdrawn"], &answer["staged"]),
        (200, &json!("rolledBack"), &json!(good.as_str())),
        "{answer}"
    );
    deliveries.apply_staged("t4", &no_check).unwrap();
    assert_eq!(current(deliveries, "codes").unwrap(), b"version 1");
    let (status, answer) = withdraw_at(&p.url, "codes", bad.as_str());
    assert_eq!(
        (status, &answer["withdrawn"]),
        (200, &json!("nothing")),
        "{answer}"
    );
    assert!(deliveries.staged().unwrap().is_empty());

    // A first version has nothing to go back to: withdrawn, the file goes at the next start.
    let first = stage(deliveries, "zip-codes", b"first table");
    deliveries.apply_staged("t5", &no_check).unwrap();
    for _ in 0..2 {
        let (status, answer) = withdraw_at(&p.url, "zip-codes", first.as_str());
        assert_eq!(
            (status, &answer["withdrawn"]),
            (200, &json!("removed")),
            "{answer}"
        );
    }
    assert_eq!(current(deliveries, "zip-codes").unwrap(), b"first table");
    let outcome = deliveries.apply_staged("t6", &no_check).unwrap();
    assert_eq!(
        outcome,
        [Outcome::Removed {
            file: "zip-codes".into()
        }]
    );
    assert_eq!(current(deliveries, "zip-codes"), None);
    assert!(deliveries.staged().unwrap().is_empty());
    assert_eq!(
        deliveries.records().unwrap().len(),
        1,
        "codes is still there"
    );
    let (status, answer) = withdraw_at(&p.url, "zip-codes", first.as_str());
    assert_eq!((status, &answer["withdrawn"]), (200, &json!("nothing")));

    let (status, answer) = withdraw_at(&p.url, "codes", "not-a-digest");
    assert_eq!(
        (status, answer["field"].as_str()),
        (400, Some("sha256")),
        "{answer}"
    );
    let (status, answer) = withdraw_at(&p.url, "Codes", bad.as_str());
    assert_eq!(
        (status, answer["field"].as_str()),
        (400, Some("file")),
        "{answer}"
    );
}

/// What a hand-written upstream does with the n-th request (from 0).
type Script = dyn Fn(usize, &str, &mut TcpStream) + Send + Sync;

/// A raw HTTP upstream on a real socket: reads a request head, hands it to `script`, closes.
/// Returns its URL and the request heads it saw.
fn raw_upstream(script: Arc<Script>) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut head = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            log.lock().unwrap().push(head.clone());
            script(n, &head, &mut stream);
            let _ = stream.flush();
            // Dropped: the connection closes, wherever the script stopped.
        }
    });
    (url, seen)
}

fn range_start(head: &str) -> Option<usize> {
    head.lines()
        .find_map(|l| l.strip_prefix("Range: bytes="))
        .and_then(|r| r.trim().trim_end_matches('-').parse().ok())
}

#[test]
fn a_transfer_cut_mid_stream_resumes_where_it_stopped() {
    let data = Arc::new(content(1 << 20));
    let sha = Sha256::of(&data);
    const CUT: usize = 300_000;
    let served = Arc::clone(&data);
    let (url, seen) = raw_upstream(Arc::new(
        move |n: usize, head: &str, stream: &mut TcpStream| {
            let from = range_start(head).unwrap_or(0);
            let total = served.len();
            let status = if from > 0 {
                format!(
                    "206 Partial Content\r\nContent-Range: bytes {from}-{}/{total}",
                    total - 1
                )
            } else {
                "200 OK".to_owned()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n",
                total - from
            );
            // The first transfer dies after CUT bytes; the second sends the rest.
            let end = if n == 0 { CUT } else { total };
            let _ = stream.write_all(&served[from..end]);
        },
    ));
    let node = TestNode::new(Role::Cs, None);
    let deliveries = node.deliveries();
    let e = fetch::fetch(deliveries, &url, &sha, TIMEOUT).unwrap_err();
    assert_eq!(e.tag(), "truncated", "{e}");
    assert!(
        e.to_string()
            .contains(&format!("after {CUT} of {}", data.len())),
        "{e}"
    );
    let part = node.dir.join("content").join(format!("{sha}.part"));
    assert_eq!(std::fs::metadata(&part).unwrap().len(), CUT as u64);
    assert_eq!(deliveries.content.size(&sha), None);

    let fetched = fetch::fetch(deliveries, &url, &sha, TIMEOUT).unwrap();
    assert_eq!(
        (fetched.resumed_from, fetched.bytes),
        (CUT as u64, data.len() as u64)
    );
    assert!(seen.lock().unwrap()[1].contains(&format!("Range: bytes={CUT}-")));
    assert_eq!(std::fs::read(deliveries.content.path(&sha)).unwrap(), *data);
    assert!(!part.exists());
    // Present now: no third request.
    assert!(
        fetch::fetch(deliveries, &url, &sha, TIMEOUT)
            .unwrap()
            .already_present
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn a_cut_through_the_real_node_resumes_from_the_real_node() {
    // A proxy in front of a real prefecture node drops the first transfer after 100 000
    // bytes; the CS's second fetch asks the node itself for the rest.
    let data = content(500_000);
    let sha = Sha256::of(&data);
    let pref = TestNode::new(Role::Prefecture, None);
    pref.deliveries()
        .content
        .put(&sha, &mut data.as_slice())
        .unwrap();
    let p = Served::start(&pref.state);
    let backend = p.url.clone();
    let (proxy, _) = raw_upstream(Arc::new(
        move |n: usize, head: &str, stream: &mut TcpStream| {
            let range: Vec<(&str, String)> = range_start(head)
                .map(|r| ("Range", format!("bytes={r}-")))
                .into_iter()
                .collect();
            let headers: Vec<(&str, &str)> = range.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let path = head.split_whitespace().nth(1).unwrap();
            let mut r =
                client::get_streaming(&format!("{backend}{path}"), &headers, TIMEOUT).unwrap();
            let mut reply = format!("HTTP/1.1 {} X\r\n", r.status);
            for (k, v) in &r.headers {
                reply.push_str(&format!("{k}: {v}\r\n"));
            }
            reply.push_str("\r\n");
            let _ = stream.write_all(reply.as_bytes());
            let limit = if n == 0 { 100_000 } else { u64::MAX };
            let _ = std::io::copy(&mut (&mut r.body).take(limit), stream);
        },
    ));
    let cs = TestNode::new(Role::Cs, None);
    let e = fetch::fetch(cs.deliveries(), &proxy, &sha, TIMEOUT).unwrap_err();
    assert_eq!(e.tag(), "truncated", "{e}");
    let fetched = fetch::fetch(cs.deliveries(), &proxy, &sha, TIMEOUT).unwrap();
    assert_eq!(fetched.resumed_from, 100_000);
    assert_eq!(
        std::fs::read(cs.deliveries().content.path(&sha)).unwrap(),
        data
    );
}

#[test]
fn wrong_content_is_refused_and_nothing_is_kept() {
    let sha = Sha256::of(b"the real allow-list");
    let (url, _) = raw_upstream(Arc::new(|_: usize, _: &str, stream: &mut TcpStream| {
        let body = b"a forged allow-list";
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(body);
    }));
    let node = TestNode::new(Role::Cs, None);
    let e = fetch::fetch(node.deliveries(), &url, &sha, TIMEOUT).unwrap_err();
    assert_eq!(e.tag(), "digest_mismatch", "{e}");
    assert!(e.to_string().contains("refused and removed"), "{e}");
    assert!(
        content_files(&node).is_empty(),
        "{:?}",
        content_files(&node)
    );
    // Nor can it be staged.
    let name = FileName::parse("allow-list").unwrap();
    assert!(matches!(
        node.deliveries().stage(&name, &sha),
        Err(Error::ContentNotFound(_))
    ));
}

#[test]
fn unreachable_and_refusing_upstreams_are_clear_errors() {
    let sha = Sha256::of(b"x");
    let node = TestNode::new(Role::Cs, None);
    let port = common::free_port();
    let e = fetch::fetch(
        node.deliveries(),
        &format!("http://127.0.0.1:{port}"),
        &sha,
        TIMEOUT,
    )
    .unwrap_err();
    assert_eq!(e.tag(), "upstream_unavailable", "{e}");
    let (url, _) = raw_upstream(Arc::new(|_: usize, _: &str, stream: &mut TcpStream| {
        let _ = stream.write_all(b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nboom");
    }));
    let e = fetch::fetch(node.deliveries(), &url, &sha, TIMEOUT).unwrap_err();
    assert_eq!(e.tag(), "upstream_refused", "{e}");
    assert!(e.to_string().contains("500 boom"), "{e}");
    assert!(
        content_files(&node).is_empty(),
        "{:?}",
        content_files(&node)
    );
}

/// Stores `bytes` in the node's content store and stages them as `name`.
fn stage(deliveries: &Deliveries, name: &str, bytes: &[u8]) -> Sha256 {
    let sha = Sha256::of(bytes);
    deliveries.content.put(&sha, &mut &bytes[..]).unwrap();
    deliveries
        .stage(&FileName::parse(name).unwrap(), &sha)
        .unwrap();
    sha
}

fn current(deliveries: &Deliveries, name: &str) -> Option<Vec<u8>> {
    deliveries
        .current_path(&FileName::parse(name).unwrap())
        .unwrap()
        .map(|p| std::fs::read(p).unwrap())
}

fn no_check(_: &FileName, _: &Path) -> Result<(), Error> {
    Ok(())
}

#[test]
fn a_crash_between_the_steps_of_an_apply_leaves_the_old_version() {
    for crash_at in [Step::RecordWritten, Step::Switched] {
        let dir = temp_dir("crash");
        let deliveries = Deliveries::open(&dir).unwrap();
        let v1 = stage(&deliveries, "codes", b"version 1");
        deliveries.apply_staged("t1", &no_check).unwrap();
        let v2 = stage(&deliveries, "codes", b"version 2");
        let crash = |step: Step| {
            if step == crash_at {
                Err(Error::Storage("crash".into()))
            } else {
                Ok(())
            }
        };
        let e = deliveries
            .apply_staged_with("t2", &no_check, &mut { crash })
            .unwrap_err();
        assert_eq!(e.to_string(), "delivery store: crash");
        // A new process opens the directory as the crash left it.
        let deliveries = Deliveries::open(&dir).unwrap();
        let expect_after_crash: &[u8] = match crash_at {
            Step::RecordWritten => b"version 1",
            Step::Switched => b"version 2",
        };
        assert_eq!(
            current(&deliveries, "codes").as_deref(),
            Some(expect_after_crash),
            "{crash_at:?}"
        );
        // The next start finishes the job, and the previous version is still version 1.
        let outcome = deliveries.apply_staged("t3", &no_check).unwrap();
        let done = match crash_at {
            Step::RecordWritten => Outcome::Applied {
                file: "codes".into(),
                sha256: v2.to_string(),
            },
            Step::Switched => Outcome::Unchanged {
                file: "codes".into(),
                sha256: v2.to_string(),
            },
        };
        assert_eq!(outcome, vec![done]);
        let record = deliveries
            .record(&FileName::parse("codes").unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(record.current.sha256, v2.to_string());
        assert_eq!(record.previous.unwrap().sha256, v1.to_string());
        assert!(deliveries.staged().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn rollback_and_refused_files_keep_a_working_version() {
    let dir = temp_dir("rollback");
    let deliveries = Deliveries::open(&dir).unwrap();
    let name = FileName::parse("codes").unwrap();
    assert_eq!(
        deliveries.rollback(&name).unwrap_err().tag(),
        "no_previous_version"
    );
    stage(&deliveries, "codes", b"version 1");
    deliveries.apply_staged("t1", &no_check).unwrap();
    stage(&deliveries, "codes", b"version 2");
    deliveries.apply_staged("t2", &no_check).unwrap();
    assert_eq!(current(&deliveries, "codes").unwrap(), b"version 2");
    deliveries.rollback(&name).unwrap();
    // Staged, not applied, until the next start.
    assert_eq!(current(&deliveries, "codes").unwrap(), b"version 2");
    deliveries.apply_staged("t3", &no_check).unwrap();
    assert_eq!(current(&deliveries, "codes").unwrap(), b"version 1");

    // Content the file's check refuses stays staged as refused; the old version stays.
    let bad = stage(&deliveries, "codes", b"not a code table");
    let refuse = |_: &FileName, path: &Path| -> Result<(), Error> {
        match std::fs::read(path).unwrap().starts_with(b"version") {
            true => Ok(()),
            false => Err(Error::Config("not a code table".into())),
        }
    };
    let outcome = deliveries.apply_staged("t4", &refuse).unwrap();
    assert!(
        matches!(&outcome[..], [Outcome::Refused { reason, .. }] if reason.contains("not a code table"))
    );
    assert_eq!(current(&deliveries, "codes").unwrap(), b"version 1");
    assert_eq!(
        deliveries.staged().unwrap()[0].refused.as_deref(),
        Some("configuration: not a code table")
    );
    // Not tried again at the next start.
    assert!(deliveries.apply_staged("t5", &refuse).unwrap().is_empty());

    // Content changed on disk after the fetch: caught before the apply.
    let v3 = stage(&deliveries, "codes", b"version 3");
    std::fs::write(deliveries.content.path(&v3), b"version 3, altered").unwrap();
    let outcome = deliveries.apply_staged("t6", &refuse).unwrap();
    assert!(
        matches!(&outcome[..], [Outcome::Refused { reason, .. }] if reason.contains("sha256 mismatch")),
        "{outcome:?}"
    );
    assert_eq!(current(&deliveries, "codes").unwrap(), b"version 1");
    let _ = bad;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The real start path (`cli::app::prepare`): a staged allow-list is applied and the provision
/// service uses it; a broken one is refused and the configured list stays in force.
#[actix_web::test]
async fn a_delivered_allow_list_takes_effect_at_the_next_start() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let juki_node::store::db::DbUrl::Sqlite(db_path) = &db.url else {
        unreachable!()
    };
    let dir = temp_dir("start");
    let configured = dir.join("allow.json");
    std::fs::write(
        &configured,
        r#"{"allow": [{"agency": "nenkin", "affair": "pension", "items": ["name"]}]}"#,
    )
    .unwrap();
    let deliveries_dir = dir.join("deliveries");
    let start = || async {
        let cli = juki_node::cli::config::Cli::try_parse_from([
            "juki-node",
            "serve",
            "--role",
            "national",
            "--database-url",
            db_path,
            "--allow-list",
            configured.to_str().unwrap(),
            "--delivery-dir",
            deliveries_dir.to_str().unwrap(),
        ])
        .unwrap();
        let juki_node::cli::config::Command::Serve(args) = cli.command else {
            unreachable!()
        };
        let config = args.node.validate().unwrap();
        let clock = Arc::new(juki_node::domain::clock::FixedClock(
            common::NOW.parse().unwrap(),
        ));
        juki_node::cli::app::prepare(&args, &config, clock)
            .await
            .unwrap()
    };
    let state = start().await;
    assert!(state.allow.items("nenkin", "pension").is_some());
    assert!(state.allow.items("kokuzei", "tax").is_none());

    let deliveries = state.deliveries.clone().unwrap();
    stage(
        &deliveries,
        ALLOW_LIST,
        br#"{"allow": [{"agency": "kokuzei", "affair": "tax", "items": ["name", "address"]}]}"#,
    );
    // Staged while running: nothing changes until the next start.
    assert!(state.allow.items("kokuzei", "tax").is_none());
    let state = start().await;
    assert_eq!(
        state.allow.items("kokuzei", "tax"),
        Some(&["name", "address"][..])
    );
    assert!(state.allow.items("nenkin", "pension").is_none());

    // A broken allow-list is refused at the start; the delivered one before it stays.
    stage(
        &state.deliveries.clone().unwrap(),
        ALLOW_LIST,
        br#"{"allow": "#,
    );
    let state = start().await;
    assert!(state.allow.items("kokuzei", "tax").is_some());
    let staged = state.deliveries.clone().unwrap().staged().unwrap();
    assert!(
        staged[0].refused.as_deref().unwrap().contains("allow-list"),
        "{staged:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_upstream_that_ignores_the_range_starts_the_part_over() {
    let data = Arc::new(content(200_000));
    let sha = Sha256::of(&data);
    let served = Arc::clone(&data);
    let (url, seen) = raw_upstream(Arc::new(
        move |n: usize, _: &str, stream: &mut TcpStream| {
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                served.len()
            );
            let end = if n == 0 { 50_000 } else { served.len() };
            let _ = stream.write_all(&served[..end]);
        },
    ));
    let node = TestNode::new(Role::Cs, None);
    assert_eq!(
        fetch::fetch(node.deliveries(), &url, &sha, TIMEOUT)
            .unwrap_err()
            .tag(),
        "truncated"
    );
    let fetched = fetch::fetch(node.deliveries(), &url, &sha, TIMEOUT).unwrap();
    assert!(seen.lock().unwrap()[1].contains("Range: bytes=50000-"));
    assert_eq!((fetched.resumed_from, fetched.bytes), (0, 200_000));
    assert_eq!(
        std::fs::read(node.deliveries().content.path(&sha)).unwrap(),
        *data
    );
}

#[test]
fn a_complete_part_left_by_a_crash_is_finished_on_the_upstreams_416() {
    let data = content(70_000);
    let sha = Sha256::of(&data);
    let pref = TestNode::new(Role::Prefecture, None);
    pref.deliveries()
        .content
        .put(&sha, &mut data.as_slice())
        .unwrap();
    let p = Served::start(&pref.state);
    let cs = TestNode::new(Role::Cs, None);
    // Every byte arrived, then the node died before the rename.
    std::fs::create_dir_all(cs.dir.join("content")).unwrap();
    std::fs::write(cs.dir.join("content").join(format!("{sha}.part")), &data).unwrap();
    let fetched = fetch::fetch(cs.deliveries(), &p.url, &sha, TIMEOUT).unwrap();
    assert_eq!((fetched.resumed_from, fetched.bytes), (70_000, 70_000));
    assert_eq!(content_files(&cs), vec![sha.to_string()]);
    // A part longer than the content cannot be finished: removed, the next fetch starts over.
    let other = content(1000);
    let sha2 = Sha256::of(&other);
    pref.deliveries()
        .content
        .put(&sha2, &mut other.as_slice())
        .unwrap();
    std::fs::write(cs.dir.join("content").join(format!("{sha2}.part")), &data).unwrap();
    let e = fetch::fetch(cs.deliveries(), &p.url, &sha2, TIMEOUT).unwrap_err();
    assert_eq!(e.tag(), "upstream_refused", "{e}");
    let fetched = fetch::fetch(cs.deliveries(), &p.url, &sha2, TIMEOUT).unwrap();
    assert_eq!((fetched.resumed_from, fetched.bytes), (0, 1000));
}

#[test]
fn nothing_is_fetched_while_the_upstream_is_outside_its_online_window() {
    let data = content(10_000);
    let sha = Sha256::of(&data);
    let pref = TestNode::new(Role::Prefecture, None);
    pref.deliveries()
        .content
        .put(&sha, &mut data.as_slice())
        .unwrap();
    let p = Served::start(&pref.state);
    let mut cs = TestNode::new(Role::Cs, Some(p.url.clone()));
    let calendar = juki_calendar::Calendar::new(&juki_calendar::CalendarConfig::default()).unwrap();
    cs.state.relay = Arc::new(RelayControl::new(
        Some(p.url.clone()),
        Some(calendar),
        RelaySettings::default(),
    ));
    // Sunday 2024-06-02, 12:00 in Tokyo: the prefecture is offline by the calendar.
    cs.state.clock = Arc::new(juki_node::domain::clock::FixedClock(
        "2024-06-02T03:00:00Z".parse().unwrap(),
    ));
    let sunday = Served::start(&cs.state);
    let (status, answer) = fetch_at(&sunday.url, sha.as_str(), Some("codes"));
    assert_eq!(
        (status, answer["error"].as_str()),
        (503, Some("unavailable")),
        "{answer}"
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("online window"),
        "{answer}"
    );
    assert!(content_files(&cs).is_empty());
    // Monday 12:00: fetched.
    cs.state.clock = Arc::new(juki_node::domain::clock::FixedClock(
        common::NOW.parse().unwrap(),
    ));
    let monday = Served::start(&cs.state);
    let (status, answer) = fetch_at(&monday.url, sha.as_str(), Some("codes"));
    assert_eq!(status, 200, "{answer}");
}

/// Runs openssl (the tool the README's signing recipe uses) and returns its stdout.
fn openssl(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or_default())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_node_with_trusted_keys_stages_only_what_one_of_them_signed() {
    // An Ed25519 key made and used by openssl, as an agency would.
    let dir = temp_dir("signing");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("key.pem");
    let key = key.to_str().unwrap();
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", key], None);
    let der = openssl(&["pkey", "-in", key, "-pubout", "-outform", "DER"], None);
    let public = hex(&der[der.len() - 32..]);
    let sign = |file: &str, sha: &str| {
        let message = format!("jukinet-delivery-v1\n{file}\n{sha}");
        let path = dir.join("message");
        std::fs::write(&path, message).unwrap();
        let path = path.to_str().unwrap();
        hex(&openssl(
            &["pkeyutl", "-sign", "-inkey", key, "-rawin", "-in", path],
            None,
        ))
    };

    let national = TestNode::new(Role::National, None);
    let n = Served::start(&national.state);
    let mut pref = TestNode::new(Role::Prefecture, Some(n.url.clone()));
    let keys = juki_node::delivery::DeliveryKeys::parse(&[public]).unwrap();
    let trusting = Deliveries::open(&pref.dir).unwrap().trusting(keys);
    pref.state.deliveries = Some(Arc::new(trusting));
    let p = Served::start(&pref.state);
    let data = content(5000);
    let sha = Sha256::of(&data).to_string();
    let upload = format!("/admin/v1/deliveries/content/{sha}");
    assert_eq!(call(&n.url, "PUT", &upload, Some(&data)).0, 201);

    let fetch = |body: Value| {
        call(
            &p.url,
            "POST",
            "/admin/v1/deliveries/fetch",
            Some(body.to_string().as_bytes()),
        )
    };
    // Unsigned, or signed for another file name: refused before anything is fetched.
    for body in [
        json!({"sha256": sha, "file": "code-table"}),
        json!({"sha256": sha, "file": "code-table", "signature": sign("allow-list", &sha)}),
    ] {
        let (status, answer) = fetch(body);
        assert_eq!(
            (status, answer["error"].as_str(), answer["field"].as_str()),
            (400, Some("bad_signature"), Some("signature")),
            "{answer}"
        );
    }
    assert!(content_files(&pref).is_empty());
    assert!(pref.deliveries().staged().unwrap().is_empty());
    // Signed by the trusted key: fetched, verified and staged.
    let signed =
        json!({"sha256": sha, "file": "code-table", "signature": sign("code-table", &sha)});
    let (status, answer) = fetch(signed);
    assert_eq!(
        (status, &answer["staged"]),
        (200, &json!("code-table")),
        "{answer}"
    );
    assert_eq!(content_files(&pref), vec![sha.clone()]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn delivery_keys_come_from_the_flag_or_the_configuration_file_and_a_bad_one_is_refused() {
    let dir = temp_dir("keys-config");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node.json");
    let key = "ab".repeat(32);
    std::fs::write(
        &file,
        json!({"role": "national", "deliveryKeys": format!("{key}, ")}).to_string(),
    )
    .unwrap();
    let args = |extra: &[&str]| {
        let mut argv = vec!["juki-node", "serve", "--config", file.to_str().unwrap()];
        argv.extend_from_slice(extra);
        let cli = juki_node::cli::config::Cli::try_parse_from(argv).unwrap();
        let juki_node::cli::config::Command::Serve(serve) = cli.command else {
            panic!("serve")
        };
        serve.node.validate()
    };
    let config = args(&[]).unwrap();
    assert_eq!(
        config.delivery_keys,
        juki_node::delivery::DeliveryKeys::parse(&[key]).unwrap()
    );
    let e = args(&["--delivery-keys", "not-a-key"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("delivery keys[0]: \"not-a-key\""), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
