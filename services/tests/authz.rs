//! Who may do what, over real mutual TLS between real node processes: every identity × every
//! documented endpoint × every tier, against the table of the tree rules written out below
//! (not computed by the code under test); callers without a certificate, with a CN that is no
//! identity, or with a certificate of another CA. Then a chain national → prefecture → two CSs
//! that carries an update up and a wide-area issuance across, all over mTLS, on SQLite and
//! PostgreSQL.

mod common;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::{Backend, TestDb};
use juki_node::http::tls::TlsFiles;
use juki_node::relay::client;
use rustls::ClientConfig;
use serde_json::{Value, json};

const TARO: &str = "12345678903";
const TIMEOUT: Duration = Duration::from_secs(20);

/// One node process serving HTTPS only.
struct Node {
    name: String,
    url: String,
    log: PathBuf,
    child: Child,
}

impl Node {
    fn start(
        name: &str,
        args: &[&str],
        database: &str,
        tls: &TlsFiles,
        dir: &Path,
        probe: &Arc<ClientConfig>,
    ) -> Node {
        let port = common::free_port();
        let log = dir.join(format!("{name}.log"));
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_juki-node"))
            .arg("serve")
            .args(args)
            .args([
                "--database-url",
                database,
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--tls-cert")
            .arg(&tls.cert)
            .arg("--tls-key")
            .arg(&tls.key)
            .arg("--tls-ca")
            .arg(&tls.ca)
            .env_remove("JUKI_CONFIG")
            .env_remove("JUKI_UPSTREAM_URL")
            .env_remove("DATABASE_URL")
            .env("JUKI_RELAY_BACKOFF_MAX_MS", "300")
            .env("JUKI_MAILBOX_WAIT_SECS", "5")
            .env("JUKI_DB_POOL_SIZE", "4")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                out.try_clone()
                    .unwrap_or_else(|_| File::create("/dev/null").unwrap()),
            )
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let mut node = Node {
            name: name.into(),
            url: format!("https://127.0.0.1:{port}"),
            log,
            child,
        };
        let started = Instant::now();
        loop {
            let ready = client::request_with(
                Some(probe),
                "GET",
                &format!("{}/readyz", node.url),
                None,
                &[],
                TIMEOUT,
            );
            if ready.is_ok_and(|r| r.status == 200) {
                return node;
            }
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("{name} exited with {status}:\n{}", node.log_text());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{name} not ready:\n{}",
                node.log_text()
            );
            thread::sleep(Duration::from_millis(25));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn call(
        &self,
        who: &Arc<ClientConfig>,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let body = body.map(|b| b.to_string().into_bytes());
        let r = client::request_with(
            Some(who),
            method,
            &format!("{}{path}", self.url),
            body.as_deref(),
            headers,
            TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{method} {}{path}: {e}", self.name));
        (r.status, r.json().unwrap_or(Value::Null))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client_config(files: &TlsFiles) -> Arc<ClientConfig> {
    Arc::new(files.client_config().unwrap())
}

/// A client that trusts the CA but shows no certificate.
fn anonymous(ca: &Path) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

use rustls::pki_types::pem::PemObject;

const PUBLIC: &[&str] = &["/healthz", "/readyz", "/metrics", "/openapi.json"];
const MUNICIPAL: &[&str] = &[
    "/v1/updates",
    "/v1/residents/{code}",
    "/v1/residents/{code}/history",
    "/v1/transfers",
    "/v1/transfers/{id}",
    "/v1/transfers/{id}/cancel",
    "/v1/move-ins",
    "/v1/issuances",
    "/v1/issuances/{id}",
];

/// The tree rules, written out: may `who` call `route` on `node`?
fn may(node: &str, route: &str, who: &str) -> bool {
    if PUBLIC.contains(&route) {
        return true;
    }
    match route {
        r if MUNICIPAL.contains(&r) => node == "cs-131016" && who == "muni-131016",
        "/v1/relay" | "/v1/mailbox" => match node {
            "pref-13" => who == "cs-131016" || who == "cs-131024",
            "national" => who.starts_with("pref-"),
            _ => false,
        },
        "/v1/deliveries/content/{sha256}" => match node {
            "pref-13" => ["cs-131016", "cs-131024", "operator"].contains(&who),
            "national" => who.starts_with("pref-") || who == "operator",
            _ => who == "operator",
        },
        "/v1/agency/queries" => node != "cs-131016" && who == "agency-nenkin",
        "/v1/disclosures" => match node {
            "national" => who.starts_with("muni-"),
            "pref-13" => who == "muni-131016",
            _ => false,
        },
        r if r.starts_with("/admin/") => who == "operator",
        other => panic!("{other}: a documented route without a rule in this table"),
    }
}

const IDENTITIES: &[&str] = &[
    "national",
    "pref-13",
    "pref-01",
    "cs-131016",
    "cs-131024",
    "cs-011002",
    "muni-131016",
    "muni-011002",
    "agency-nenkin",
    "operator",
];

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("juki-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn database_url(db: &TestDb) -> String {
    match &db.url {
        juki_node::store::db::DbUrl::Sqlite(p) => format!("sqlite://{p}"),
        juki_node::store::db::DbUrl::Postgres(u) => u.clone(),
    }
}

#[test]
fn every_identity_on_every_endpoint_of_every_tier() {
    let dbs: Vec<TestDb> = (0..3)
        .map(|_| TestDb::new(Backend::Sqlite).unwrap())
        .collect();
    let dir = temp_dir("authz-matrix");
    let pki = Pki::new(&dir, "jukinet-ca");
    let clients: BTreeMap<&str, Arc<ClientConfig>> = IDENTITIES
        .iter()
        .map(|id| (*id, client_config(&pki.issue(id))))
        .collect();
    let operator = clients["operator"].clone();
    let national = Node::start(
        "national",
        &["--role", "national"],
        &database_url(&dbs[0]),
        &pki.issue("national"),
        &dir,
        &operator,
    );
    let pref = Node::start(
        "pref-13",
        &["--role", "prefecture", "--prefecture-code", "13"],
        &database_url(&dbs[1]),
        &pki.issue("pref-13"),
        &dir,
        &operator,
    );
    let cs = Node::start(
        "cs-131016",
        &["--role", "cs", "--municipality-code", "131016"],
        &database_url(&dbs[2]),
        &pki.issue("cs-131016"),
        &dir,
        &operator,
    );
    let nodes = [&national, &pref, &cs];

    // Every documented operation, with its path parameters filled in.
    let (_, doc) = cs.call(&operator, "GET", "/openapi.json", None, &[]);
    let mut operations: Vec<(String, String)> = Vec::new();
    for (route, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            operations.push((method.to_uppercase(), route.clone()));
        }
    }
    assert!(operations.len() >= 20, "{operations:?}");
    let concrete = |method: &str, route: &str, who: &str| -> String {
        let path = route
            .replace("{code}", TARO)
            .replace("{id}", "131016-T1")
            // The sha256 of no bytes: the operator's empty PUT stores it.
            .replace(
                "{sha256}",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            )
            .replace("{file}", "codes");
        match (method, route) {
            ("POST", "/admin/v1/final-request") => format!("{path}?timeoutSeconds=1"),
            ("GET", "/v1/mailbox") => format!("{path}?recipient={who}&wait=0"),
            _ => path,
        }
    };

    let junk = client_config(&pki.issue("root"));
    let nobody = anonymous(&pki.dir.join("jukinet-ca.pem"));
    let rogue = client_config(&Pki::new(&dir, "rogue-ca").issue("operator"));
    let (mut checked, mut refusals) = (0usize, BTreeMap::<&str, u64>::new());
    for node in nodes {
        for (method, route) in &operations {
            let body = (method == "POST").then(|| json!({}));
            for who in IDENTITIES {
                let path = concrete(method, route, who);
                let (status, answer) = node.call(
                    &clients[who],
                    method,
                    &path,
                    body.as_ref(),
                    &[("Idempotency-Key", "matrix")],
                );
                if may(&node.name, route, who) {
                    assert!(
                        status != 401 && status != 403 && status < 500,
                        "{who} on {} {method} {path}: {status} {answer}",
                        node.name
                    );
                } else {
                    assert_eq!(
                        (status, answer["error"].as_str()),
                        (403, Some("forbidden")),
                        "{who} on {} {method} {path}: {answer}",
                        node.name
                    );
                    *refusals.entry(node.name.as_str()).or_default() += 1;
                }
                checked += 1;
            }
            let path = concrete(method, route, "nobody");
            for (who, config) in [("no certificate", &nobody), ("CN root", &junk)] {
                let (status, answer) = node.call(config, method, &path, body.as_ref(), &[]);
                if PUBLIC.contains(&route.as_str()) {
                    assert_eq!(status, 200, "{who} on {} {path}: {answer}", node.name);
                } else {
                    assert_eq!(
                        (status, answer["error"].as_str()),
                        (401, Some("unauthenticated")),
                        "{who} on {} {method} {path}: {answer}",
                        node.name
                    );
                    *refusals.entry(node.name.as_str()).or_default() += 1;
                }
                checked += 1;
            }
            if route == "/admin/v1/final-request" {
                // The operator's final request stops relays until resumed.
                let (status, _) = node.call(&operator, "POST", "/admin/v1/resume", None, &[]);
                assert_eq!(status, 200);
            }
            // A certificate of another CA does not even complete the handshake.
            let url = format!("{}{path}", node.url);
            assert!(
                client::request_with(Some(&rogue), method, &url, None, &[], TIMEOUT).is_err(),
                "{url}"
            );
        }
    }
    // Every refusal is counted (and logged) by the node that refused it.
    for node in nodes {
        let (_, _) = node.call(&operator, "GET", "/healthz", None, &[]);
        let metrics = client::request_with(
            Some(&operator),
            "GET",
            &format!("{}/metrics", node.url),
            None,
            &[],
            TIMEOUT,
        )
        .unwrap();
        let text = String::from_utf8(metrics.body).unwrap();
        let counted: u64 = text
            .lines()
            .filter(|l| l.starts_with("juki_node_auth_refusals_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert_eq!(counted, refusals[node.name.as_str()], "{}", node.name);
        let logged = node.log_text().matches("request refused").count() as u64;
        assert_eq!(logged, refusals[node.name.as_str()], "{} log", node.name);
    }
    eprintln!(
        "authz matrix: {checked} requests over mTLS ({} identities + no certificate + a CN that is no identity, {} operations, 3 tiers), refusals {refusals:?}",
        IDENTITIES.len(),
        operations.len()
    );
}

fn chain_over_mtls(backend: Backend) {
    let Some(dbs) = (0..4)
        .map(|_| TestDb::new(backend))
        .collect::<Option<Vec<_>>>()
    else {
        return;
    };
    let dir = temp_dir(&format!("authz-chain-{backend:?}"));
    let pki = Pki::new(&dir, "jukinet-ca");
    let operator = client_config(&pki.issue("operator"));
    let allow = dir.join("allow.json");
    std::fs::write(
        &allow,
        r#"{"allow": [{"agency": "nenkin", "affair": "pension", "items": ["name", "address"]}]}"#,
    )
    .unwrap();
    let allow = allow.display().to_string();
    let national = Node::start(
        "national",
        &["--role", "national", "--allow-list", &allow],
        &database_url(&dbs[0]),
        &pki.issue("national"),
        &dir,
        &operator,
    );
    let pref = Node::start(
        "pref-13",
        &[
            "--role",
            "prefecture",
            "--prefecture-code",
            "13",
            "--upstream-url",
            &national.url,
        ],
        &database_url(&dbs[1]),
        &pki.issue("pref-13"),
        &dir,
        &operator,
    );
    let cs_a = Node::start(
        "cs-131016",
        &[
            "--role",
            "cs",
            "--municipality-code",
            "131016",
            "--upstream-url",
            &pref.url,
        ],
        &database_url(&dbs[2]),
        &pki.issue("cs-131016"),
        &dir,
        &operator,
    );
    let cs_b = Node::start(
        "cs-131024",
        &[
            "--role",
            "cs",
            "--municipality-code",
            "131024",
            "--upstream-url",
            &pref.url,
        ],
        &database_url(&dbs[3]),
        &pki.issue("cs-131024"),
        &dir,
        &operator,
    );

    // The existing system of A registers a resident; the update travels up over mTLS.
    let muni_a = client_config(&pki.issue("muni-131016"));
    let update = json!({"resident_code": TARO, "name": "山田 太郎", "name_kana": "ヤマダ タロウ",
        "birth_date": "1990-04-01", "sex": "男", "address": "千代田1-1", "municipality_code": "131016",
        "reason": "転入", "change_date": "2024-06-01"});
    let (status, body) = cs_a.call(
        &muni_a,
        "POST",
        "/v1/updates",
        Some(&update),
        &[("Idempotency-Key", "u1")],
    );
    assert_eq!(status, 201, "{body}");
    // B's existing system may not post for A's residents, nor at A's CS.
    let muni_b = client_config(&pki.issue("muni-131024"));
    let (status, _) = cs_a.call(
        &muni_b,
        "POST",
        "/v1/updates",
        Some(&update),
        &[("Idempotency-Key", "u2")],
    );
    assert_eq!(status, 403);

    // An agency finds the resident at the national server once the relays have carried it.
    let agency = client_config(&pki.issue("agency-nenkin"));
    let query = json!({"affair": "pension", "reason": "現況確認", "by": {"resident_code": TARO}});
    let started = Instant::now();
    let record = loop {
        let (status, body) =
            national.call(&agency, "POST", "/v1/agency/queries", Some(&query), &[]);
        if status == 200 {
            break body["record"].clone();
        }
        assert_eq!(status, 404, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the update never reached the national server:\n{}\n{}",
            cs_a.log_text(),
            pref.log_text()
        );
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(record, json!({"name": "山田 太郎", "address": "千代田1-1"}));

    // A wide-area issuance at B for A's resident: relayed up and fetched down (mailbox long
    // polls) in both directions, every hop over mTLS.
    let ask =
        json!({"resident_code": TARO, "home_municipality": "131016", "requested_by": "窓口1"});
    let (status, copy) = cs_b.call(
        &muni_b,
        "POST",
        "/v1/issuances?wait=30",
        Some(&ask),
        &[("Idempotency-Key", "iss-1")],
    );
    assert_eq!(
        (status, copy["state"].as_str()),
        (200, Some("issued")),
        "{copy}\n{}",
        pref.log_text()
    );
    assert_eq!(copy["answer"]["copy"]["name"], json!("山田 太郎"));
    // The one refusal is B's post at A; no hop of the chain was refused.
    for (node, refused) in [(&national, 0), (&pref, 0), (&cs_a, 1), (&cs_b, 0)] {
        let text = node.log_text();
        assert_eq!(
            text.matches("request refused").count(),
            refused,
            "{}:\n{text}",
            node.name
        );
    }
}

#[test]
fn sqlite_chain_over_mutual_tls() {
    chain_over_mtls(Backend::Sqlite);
}

#[test]
fn postgres_chain_over_mutual_tls() {
    chain_over_mtls(Backend::Postgres);
}

/// The operator's final request to a node with `spec.tls` (juki-operator's node_client, the
/// client its controller uses) against a real node serving mutual TLS: the operator's
/// certificate gets the final answer; any other identity, a certificate of another CA, or a
/// node certificate from another CA are refused, each with a message saying so.
#[test]
fn the_operator_sends_its_final_request_over_mutual_tls() {
    use juki_operator::node_client::{NodeRoute, OperatorTls, final_request};
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let dir = temp_dir("authz-operator");
    let pki = Pki::new(&dir, "jukinet-ca");
    let identity = |files: TlsFiles| OperatorTls {
        cert: files.cert,
        key: files.key,
        ca: files.ca,
    };
    let operator = identity(pki.issue("operator"));
    let probe = client_config(&pki.issue("operator"));
    let national = Node::start(
        "national",
        &["--role", "national"],
        &database_url(&db),
        &pki.issue("national"),
        &dir,
        &probe,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ask = |who: &OperatorTls| {
        runtime.block_on(async {
            let timeout = Duration::from_secs(10);
            let route = NodeRoute::direct(&national.url, who, timeout).await?;
            final_request(&route, timeout).await
        })
    };

    let answer = ask(&operator).unwrap_or_else(|e| panic!("{e}\n{}", national.log_text()));
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["done"], json!(true), "{answer}");

    let agency = identity(pki.issue("agency-nenkin"));
    let refused = ask(&agency).unwrap_err();
    assert!(
        refused.contains("may not call /admin/v1/final-request"),
        "{refused}"
    );

    let rogue = Pki::new(&dir, "rogue-ca");
    let stranger = identity(rogue.issue("operator"));
    let failed = ask(&stranger).unwrap_err();
    assert!(failed.contains("node unreachable"), "{failed}");
    // The operator trusting only another CA does not accept the node's certificate either.
    let wrong_ca = OperatorTls {
        ca: rogue.dir.join("rogue-ca.pem"),
        ..operator.clone()
    };
    let failed = ask(&wrong_ca).unwrap_err();
    assert!(failed.contains("node unreachable"), "{failed}");
}
