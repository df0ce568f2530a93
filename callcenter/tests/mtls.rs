//! Mutual TLS as in juki-node: the caller is the Common Name of its client certificate (the
//! project CA); no certificate or an unknown name is a 401 on every route but the probes; a
//! certificate of another CA fails the handshake; the identity header of development mode is
//! ignored. Requests go through curl (installed by scripts/install-deps).

mod common;

use std::process::Command;
use std::time::Duration;

use actix_web::HttpServer;
use common::pki::Pki;
use common::{Backend, TestDb};
use juki_callcenter::http::auth::{AuthMode, TlsFiles, remember_peer};
use juki_callcenter::http::{AppState, app};

fn curl(
    port: u16,
    ca: &std::path::Path,
    client: Option<&TlsFiles>,
    extra: &[&str],
    path: &str,
) -> Option<(u16, String)> {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "20",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--cacert",
    ])
    .arg(ca);
    if let Some(c) = client {
        cmd.arg("--cert").arg(&c.cert).arg("--key").arg(&c.key);
    }
    cmd.args(extra)
        .arg(format!("https://127.0.0.1:{port}{path}"));
    let out = cmd.output().expect("run curl");
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n')?;
    Some((code.trim().parse().ok()?, body.to_owned()))
}

#[test]
fn callers_are_their_client_certificates() {
    let dir = std::env::temp_dir().join(format!("juki-cc-mtls-{}", std::process::id()));
    let pki = Pki::new(&dir, "project-ca");
    let server = pki.issue("localhost");
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let url = db.url.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let server_files = server.clone();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let db = TestDb::from_url(url);
            let (cc, _clock) = db.service().await;
            let state = AppState {
                cc,
                auth: AuthMode::Mtls,
            };
            let http = HttpServer::new(move || app(state.clone()))
                .workers(1)
                .on_connect(remember_peer)
                .bind_rustls_0_23(("127.0.0.1", 0), server_files.server_config().unwrap())
                .unwrap();
            tx.send(http.addrs()[0].port()).unwrap();
            http.run().await.unwrap();
            std::mem::forget(db);
        });
    });
    let port = rx.recv_timeout(Duration::from_secs(60)).unwrap();
    let ca = server.ca.clone();
    let staff = pki.issue("callcenter-sato");
    let muni = pki.issue("muni-131016");
    let other = pki.issue("muni-271004");
    let stranger = pki.issue("cs-131016");
    let rogue = Pki::new(&dir, "rogue-ca").issue("callcenter-sato");
    let body = r#"{"kind":"inquiry","org":"131016","reporter":"佐藤","channel":"terminal","subject":"接続できない","body":"朝から接続できません。"}"#;
    let post = [
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data-binary",
        body,
    ];

    // Probes answer anyone; the API needs a known certificate.
    assert_eq!(
        curl(port, &ca, None, &[], "/healthz").map(|r| r.0),
        Some(200)
    );
    let (code, text) = curl(port, &ca, None, &[], "/v1/tickets").unwrap();
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("\"unauthenticated\""));
    // The development header is no identity under TLS.
    let (code, _) = curl(
        port,
        &ca,
        None,
        &["-H", "x-juki-identity: callcenter-sato"],
        "/v1/tickets",
    )
    .unwrap();
    assert_eq!(code, 401);
    let (code, text) = curl(port, &ca, Some(&stranger), &[], "/v1/tickets").unwrap();
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("cs-131016"), "{text}");
    // A certificate of another CA does not get through the handshake.
    assert!(curl(port, &ca, Some(&rogue), &[], "/v1/tickets").is_none());

    let (code, text) = curl(port, &ca, Some(&muni), &post, "/v1/tickets").unwrap();
    assert_eq!(code, 201, "{text}");
    assert!(text.contains("\"filed_by\":\"muni-131016\""), "{text}");
    let id: serde_json::Value = serde_json::from_str(&text).unwrap();
    let id = id["id"].as_i64().unwrap();
    let ticket = format!("/v1/tickets/{id}");
    assert_eq!(curl(port, &ca, Some(&other), &[], &ticket).unwrap().0, 403);
    assert_eq!(
        curl(port, &ca, Some(&other), &post, "/v1/tickets")
            .unwrap()
            .0,
        403
    );
    assert_eq!(curl(port, &ca, Some(&staff), &[], &ticket).unwrap().0, 200);
    let answer = [
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data-binary",
        r#"{"answer":"8時以降に再送してください。"}"#,
    ];
    assert_eq!(
        curl(port, &ca, Some(&muni), &answer, &format!("{ticket}/answer"))
            .unwrap()
            .0,
        403
    );
    assert_eq!(
        curl(
            port,
            &ca,
            Some(&staff),
            &answer,
            &format!("{ticket}/answer")
        )
        .unwrap()
        .0,
        200
    );
    let _ = std::fs::remove_dir_all(&dir);
}
