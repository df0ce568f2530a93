//! The HTTP API on both databases: filing and reading, the authorisation matrix (every identity
//! × every route), the state machines through HTTP, the append-only history, hostile input, the
//! Alertmanager webhook, search, and the OpenAPI document against the routes.

mod common;

use actix_web::http::StatusCode;
use actix_web::test;
use common::{Backend, TestDb};
use diesel::connection::SimpleConnection;
use serde_json::{Value, json};

use juki_callcenter::http::app;
use juki_callcenter::store::tickets::counts;

macro_rules! setup {
    ($backend:expr) => {{
        let Some(db) = TestDb::new($backend) else {
            return;
        };
        let (state, clock) = db.state().await;
        let app = test::init_service(app(state.clone())).await;
        (db, state, clock, app)
    }};
}

/// Sends a request as `who` (None: no identity); returns (status, JSON body or Null).
macro_rules! call {
    ($app:expr, $method:ident, $who:expr, $path:expr) => {
        call!($app, $method, $who, $path, raw Vec::<u8>::new())
    };
    ($app:expr, $method:ident, $who:expr, $path:expr, $body:expr) => {
        call!($app, $method, $who, $path, raw serde_json::to_vec(&$body).unwrap())
    };
    ($app:expr, $method:ident, $who:expr, $path:expr, raw $bytes:expr) => {{
        let mut req = test::TestRequest::$method().uri($path);
        let who: Option<&str> = $who;
        if let Some(who) = who {
            req = req.insert_header(("x-juki-identity", who));
        }
        let bytes: Vec<u8> = $bytes;
        if !bytes.is_empty() {
            req = req
                .insert_header(("content-type", "application/json"))
                .set_payload(bytes);
        }
        let resp = test::call_service(&$app, req.to_request()).await;
        let status = resp.status();
        let body = test::read_body(resp).await;
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, value)
    }};
}

const STAFF: Option<&str> = Some("callcenter-sato");
const SYSMGMT: Option<&str> = Some("sysmgmt-kato");
const MUNI: Option<&str> = Some("muni-131016");
const OTHER_MUNI: Option<&str> = Some("muni-271004");
const PREF: Option<&str> = Some("pref-13");
const OTHER_PREF: Option<&str> = Some("pref-27");
const ALERTMANAGER: Option<&str> = Some("alertmanager");

fn inquiry(org: &str) -> Value {
    json!({
        "kind": "inquiry",
        "org": org,
        "reporter": "千代田区 住民課 佐藤",
        "channel": "terminal",
        "subject": "CSのオンライン時間外に接続できない",
        "body": "朝7時半に住民記録システムからCSへ接続すると拒否されます。",
        "nodes": ["cs-131016"],
    })
}

fn fault(org: &str) -> Value {
    json!({
        "kind": "fault",
        "org": org,
        "reporter": "千代田区 情報政策課",
        "channel": "phone",
        "subject": "CSが応答しない",
        "body": "9時から照会がタイムアウトします。",
    })
}

fn assert_error(body: &Value, tag: &str, field: Option<&str>) {
    assert_eq!(body["error"], tag, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(body["field"].as_str(), field, "{body}");
}

async fn files_and_reads_back_with_history(backend: Backend) {
    let (_db, _state, _clock, app) = setup!(backend);
    let (status, body) = call!(app, post, MUNI, "/v1/tickets", inquiry("131016"));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["id"].as_i64().unwrap();
    assert_eq!(body["state"], "received");
    assert_eq!(body["filed_by"], "muni-131016");
    let (status, t) = call!(app, get, MUNI, &format!("/v1/tickets/{id}"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t["subject"], "CSのオンライン時間外に接続できない");
    assert_eq!(t["history"].as_array().unwrap().len(), 1);
    assert_eq!(t["history"][0]["action"], "file");
    assert_eq!(t["sla"]["status"], "ok");
    let (status, t) = call!(
        app,
        post,
        STAFF,
        &format!("/v1/tickets/{id}/answer"),
        json!({"answer": "CSのオンライン時間は8:00〜21:00です。"})
    );
    assert_eq!(status, StatusCode::OK, "{t}");
    assert_eq!(t["state"], "answered");
    let (_, t) = call!(app, get, MUNI, &format!("/v1/tickets/{id}"));
    let history = t["history"].as_array().unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1]["actor"], "callcenter-sato");
    assert_eq!(
        (
            history[1]["from_state"].as_str(),
            history[1]["to_state"].as_str()
        ),
        (Some("received"), Some("answered"))
    );
    assert_eq!(t["sla"]["status"], "met");
    let (status, list) = call!(
        app,
        get,
        STAFF,
        "/v1/tickets?state=answered&kind=inquiry&org=131016"
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["tickets"].as_array().unwrap().len(), 1);
    let (_, list) = call!(app, get, STAFF, "/v1/tickets?state=closed");
    assert!(list["tickets"].as_array().unwrap().is_empty());
}

/// Every identity × every route: the status each gets (403s for the rest, 401 without one).
async fn authorisation_matrix(backend: Backend) {
    let (_db, state, _clock, app) = setup!(backend);
    // One inquiry of 131016 (Tokyo), one of 271004 (Osaka).
    let (_, own) = call!(app, post, STAFF, "/v1/tickets", inquiry("131016"));
    let (_, osaka) = call!(app, post, STAFF, "/v1/tickets", inquiry("271004"));
    let own = own["id"].as_i64().unwrap();
    let osaka = osaka["id"].as_i64().unwrap();
    let alert = json!({"version": "4", "groupKey": "g", "status": "firing", "alerts": []});
    let identities = [
        ("none", None),
        ("staff", STAFF),
        ("sysmgmt", SYSMGMT),
        ("muni", MUNI),
        ("other_muni", OTHER_MUNI),
        ("pref", PREF),
        ("other_pref", OTHER_PREF),
        ("alertmanager", ALERTMANAGER),
        ("bogus", Some("cs-131016")),
    ];
    // route → expected status per identity, in the order above.
    use StatusCode as S;
    const U: S = S::UNAUTHORIZED;
    const F: S = S::FORBIDDEN;
    const O: S = S::OK;
    const C: S = S::CREATED;
    let table: Vec<(&str, [S; 9])> = vec![
        ("file 131016", [U, C, C, C, F, F, F, F, U]),
        ("file 130001", [U, C, C, F, F, C, F, F, U]),
        ("list", [U, O, O, O, O, O, O, F, U]),
        ("list org=131016", [U, O, O, O, F, O, F, F, U]),
        ("read own", [U, O, O, O, F, O, F, F, U]),
        ("read osaka", [U, O, O, F, O, F, O, F, U]),
        ("answer", [U, O, O, F, F, F, F, F, U]),
        ("state", [U, S::CONFLICT, S::CONFLICT, F, F, F, F, F, U]),
        ("search", [U, O, O, O, O, O, O, F, U]),
        ("suggest", [U, O, O, O, O, O, O, F, U]),
        ("alerts", [U, O, O, F, F, F, F, O, U]),
        ("metrics", [O, O, O, O, O, O, O, O, O]),
    ];
    for (route, expected) in &table {
        for ((name, who), want) in identities.iter().zip(expected) {
            let (status, body) = match *route {
                "file 131016" => call!(app, post, *who, "/v1/tickets", inquiry("131016")),
                "file 130001" => call!(app, post, *who, "/v1/tickets", inquiry("130001")),
                "list" => call!(app, get, *who, "/v1/tickets"),
                "list org=131016" => call!(app, get, *who, "/v1/tickets?org=131016"),
                "read own" => call!(app, get, *who, &format!("/v1/tickets/{own}")),
                "read osaka" => call!(app, get, *who, &format!("/v1/tickets/{osaka}")),
                "answer" => call!(
                    app,
                    post,
                    *who,
                    &format!("/v1/tickets/{own}/answer"),
                    json!({"answer": "回答"})
                ),
                // A received inquiry cannot be closed: staff get past authz to the 409.
                "state" => call!(
                    app,
                    post,
                    *who,
                    &format!("/v1/tickets/{osaka}/state"),
                    json!({"state": "closed"})
                ),
                "search" => call!(app, get, *who, "/v1/search?q=%E6%8E%A5%E7%B6%9A"),
                "suggest" => call!(app, get, *who, "/v1/suggestions?text=%E6%8E%A5%E7%B6%9A"),
                "alerts" => call!(app, post, *who, "/v1/alerts", alert.clone()),
                "metrics" => call!(app, get, *who, "/metrics"),
                _ => unreachable!(),
            };
            assert_eq!(status, *want, "{route} as {name}: {body}");
            if status == F {
                assert!(
                    body["error"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("forbidden") || e == "staff_only"),
                    "{route} as {name}: {body}"
                );
            }
            if status == U {
                assert_error(&body, "unauthenticated", None);
            }
        }
    }
    // Lists and searches are narrowed to what the caller may read.
    let (_, list) = call!(app, get, OTHER_MUNI, "/v1/tickets");
    assert!(
        list["tickets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["org"] == "271004")
    );
    let (_, list) = call!(app, get, PREF, "/v1/tickets");
    assert!(
        list["tickets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["org"].as_str().unwrap().starts_with("13"))
    );
    let (_, hits) = call!(app, get, OTHER_MUNI, "/v1/search?q=%E6%8E%A5%E7%B6%9A");
    let hits = hits["results"].as_array().unwrap();
    assert!(!hits.is_empty());
    assert!(hits.iter().all(|h| h["ticket_id"] == osaka), "{hits:?}");
    // Every refusal was counted.
    assert!(state.cc.metrics.render().contains(
        "juki_callcenter_auth_refusals_total{route=\"/v1/tickets/{id}\",status=\"403\"}"
    ));
}

async fn illegal_transitions_are_409_and_change_nothing(backend: Backend) {
    let (_db, state, _clock, app) = setup!(backend);
    let (_, t) = call!(app, post, STAFF, "/v1/tickets", fault("131016"));
    let id = t["id"].as_i64().unwrap();
    let path = format!("/v1/tickets/{id}/state");
    let (status, body) = call!(app, post, STAFF, &path, json!({"state": "recovered"}));
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&body, "illegal_transition", Some("state"));
    for (to, extra) in [
        ("isolating", json!({})),
        (
            "recovery_arranged",
            json!({"vendor": "保守ベンダーA", "expected_at": "2026-11-26T06:00:00Z"}),
        ),
        ("recovered", json!({})),
        ("closed", json!({})),
    ] {
        let mut body = json!({"state": to});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, t) = call!(app, post, STAFF, &path, body);
        assert_eq!(status, StatusCode::OK, "{to}: {t}");
        assert_eq!(t["state"], to);
    }
    let before = state.cc.db.read(counts).await.unwrap();
    let (status, body) = call!(
        app,
        post,
        STAFF,
        &format!("/v1/tickets/{id}/answer"),
        json!({"answer": "遅れた回答"})
    );
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&body, "ticket_closed", Some("state"));
    let (status, body) = call!(
        app,
        post,
        STAFF,
        &path,
        json!({"state": "recovery_arranged"})
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "required", Some("vendor"));
    assert_eq!(state.cc.db.read(counts).await.unwrap(), before);
    let (_, t) = call!(app, get, STAFF, &format!("/v1/tickets/{id}"));
    let actions: Vec<&str> = t["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["file", "isolate", "arrange_recovery", "recover", "close"]
    );
    assert_eq!(t["recovery"]["vendor"], "保守ベンダーA");
}

async fn history_is_append_only(backend: Backend) {
    let (_db, state, _clock, app) = setup!(backend);
    call!(app, post, STAFF, "/v1/tickets", inquiry("131016"));
    for sql in [
        "UPDATE ticket_history SET actor = 'x'",
        "DELETE FROM ticket_history",
    ] {
        let result = state
            .cc
            .db
            .write(move |c| c.batch_execute(sql).map_err(juki_callcenter::Error::from))
            .await;
        assert!(result.is_err(), "{sql} was allowed");
    }
    assert_eq!(state.cc.db.read(counts).await.unwrap().1, 1);
}

async fn hostile_input_is_4xx_and_stores_nothing(backend: Backend) {
    let (_db, state, _clock, app) = setup!(backend);
    let cases: Vec<(Vec<u8>, StatusCode, &str, Option<&str>)> = vec![
        (
            serde_json::to_vec(&inquiry("131017")).unwrap(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_org_code",
            Some("org"),
        ),
        (
            vec![b'{', 0xff, 0xfe, b'}'],
            StatusCode::BAD_REQUEST,
            "invalid_body",
            None,
        ),
        (
            b"{\"kind\": \"inquiry\", \"org\": \"13101\xe3\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            None,
        ),
        (
            vec![b' '; 2 << 20],
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            None,
        ),
        (
            b"[]".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
            None,
        ),
        (
            {
                let mut v = inquiry("131016");
                v["extra"] = json!(1);
                serde_json::to_vec(&v).unwrap()
            },
            StatusCode::BAD_REQUEST,
            "invalid_body",
            None,
        ),
        (
            {
                let mut v = inquiry("131016");
                v["subject"] = json!("あ".repeat(201));
                serde_json::to_vec(&v).unwrap()
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_long",
            Some("subject"),
        ),
        (
            {
                let mut v = inquiry("131016");
                v["body"] = json!("x".repeat(20_001));
                serde_json::to_vec(&v).unwrap()
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "too_long",
            Some("body"),
        ),
        (
            {
                let mut v = inquiry("131016");
                v["nodes"] = json!(["../etc"]);
                serde_json::to_vec(&v).unwrap()
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_node",
            Some("nodes"),
        ),
        (
            {
                let mut v = inquiry("131016");
                v["channel"] = json!("alert");
                serde_json::to_vec(&v).unwrap()
            },
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_channel",
            Some("channel"),
        ),
    ];
    for (bytes, want, tag, field) in cases {
        let (status, body) = call!(app, post, STAFF, "/v1/tickets", raw bytes);
        assert_eq!(status, want, "{body}");
        assert_error(&body, tag, field);
    }
    let (status, body) = call!(app, get, STAFF, "/v1/tickets/abc");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found", None);
    let (status, _) = call!(app, get, STAFF, "/v1/tickets/99999999999999999999");
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = call!(app, get, STAFF, "/v1/tickets?limit=100000");
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "out_of_range", Some("limit"));
    let (status, body) = call!(app, get, STAFF, "/v1/tickets?state=nope");
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "invalid_state", Some("state"));
    let (status, _) = call!(app, get, STAFF, "/v1/search");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = call!(
        app,
        get,
        STAFF,
        &format!("/v1/search?q={}", "a".repeat(2001))
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = call!(
        app,
        post,
        Some("muni-999999"),
        "/v1/tickets",
        inquiry("131016")
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&body, "unauthenticated", None);
    let (status, body) = call!(
        app,
        post,
        STAFF,
        "/v1/alerts",
        json!({"version": "3", "alerts": []})
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "unsupported_version", Some("version"));
    let (status, body) = call!(
        app,
        post,
        STAFF,
        "/v1/alerts",
        json!({"version": "4", "alerts": [{"status": "firing", "startsAt": "yesterday", "fingerprint": "abc"}]})
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "invalid_time", Some("alerts.startsAt"));
    // Not declared as JSON (what a cross-site form could send): refused.
    let req = test::TestRequest::post()
        .uri("/v1/tickets")
        .insert_header(("x-juki-identity", "callcenter-sato"))
        .insert_header(("content-type", "text/plain"))
        .set_payload(serde_json::to_vec(&inquiry("131016")).unwrap())
        .to_request();
    let resp = test::call_service(&app, req).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // A UI form posted from another site: refused before anything is read.
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let req = test::TestRequest::post()
            .uri("/ui/tickets")
            .insert_header(("x-juki-identity", "callcenter-sato"))
            .insert_header(("host", "callcenter.example"))
            .insert_header((name, value))
            .set_form([
                ("kind", "inquiry"),
                ("org", "131016"),
                ("reporter", "r"),
                ("channel", "phone"),
                ("subject", "s"),
                ("body", "b"),
            ])
            .to_request();
        let resp = test::call_service(&app, req).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{name}: {value}");
    }
    assert_eq!(state.cc.db.read(counts).await.unwrap(), (0, 0, 0));
    assert_eq!(state.cc.index.len(), 0);
}

fn notification(status: &str, alerts: &[(&str, &str, &str, &str)]) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}:{alertname=\"CSDown\"}",
        "status": status,
        "receiver": "callcenter",
        "groupLabels": {"alertname": "CSDown"},
        "commonLabels": {"alertname": "CSDown", "severity": "critical"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts.iter().map(|(fp, node, st, starts)| json!({
            "status": st,
            "labels": {"alertname": "CSDown", "node": node},
            "annotations": {"summary": format!("{node} が応答しません")},
            "startsAt": starts,
            "endsAt": if *st == "resolved" { "2026-11-26T02:00:00Z" } else { "0001-01-01T00:00:00Z" },
            "fingerprint": fp,
        })).collect::<Vec<_>>(),
    })
}

async fn alert_webhook_dedups_resolves_and_never_reopens(backend: Backend) {
    let (_db, state, _clock, app) = setup!(backend);
    let t0 = "2026-11-26T00:50:00Z";
    let firing = notification(
        "firing",
        &[
            ("aaa1", "cs-131016", "firing", t0),
            ("bbb2", "cs-131041", "firing", t0),
        ],
    );
    let (status, out) = call!(app, post, ALERTMANAGER, "/v1/alerts", firing.clone());
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(
        out["opened"].as_array().unwrap().len(),
        1,
        "one ticket per group: {out}"
    );
    let id = out["opened"][0].as_i64().unwrap();
    // The same notification again (Alertmanager's repeat_interval, or a retried delivery).
    let (_, out) = call!(app, post, ALERTMANAGER, "/v1/alerts", firing.clone());
    assert_eq!(
        out,
        json!({"opened": [], "attached": 0, "duplicates": 2, "resolved": 0})
    );
    let (_, t) = call!(app, get, STAFF, &format!("/v1/tickets/{id}"));
    assert_eq!(t["kind"], "fault");
    assert_eq!(t["channel"], "alert");
    assert_eq!(t["nodes"], json!(["cs-131016", "cs-131041"]));
    assert_eq!(t["org"], Value::Null, "two municipalities: no single org");
    // A new alert of the group joins; one resolves.
    let more = notification(
        "firing",
        &[
            ("aaa1", "cs-131016", "resolved", t0),
            ("bbb2", "cs-131041", "firing", t0),
        ],
    );
    let (_, out) = call!(app, post, ALERTMANAGER, "/v1/alerts", more.clone());
    assert_eq!(
        out,
        json!({"opened": [], "attached": 0, "duplicates": 1, "resolved": 1})
    );
    let (_, out) = call!(app, post, ALERTMANAGER, "/v1/alerts", more);
    assert_eq!(
        out,
        json!({"opened": [], "attached": 0, "duplicates": 2, "resolved": 0})
    );
    // Staff close the ticket; then the other alert resolves: noted, still closed.
    for s in ["isolating"] {
        call!(
            app,
            post,
            STAFF,
            &format!("/v1/tickets/{id}/state"),
            json!({"state": s})
        );
    }
    call!(
        app,
        post,
        STAFF,
        &format!("/v1/tickets/{id}/state"),
        json!({"state": "recovery_arranged", "vendor": "v", "expected_at": "2026-11-26T05:00:00Z"})
    );
    call!(
        app,
        post,
        STAFF,
        &format!("/v1/tickets/{id}/state"),
        json!({"state": "recovered"})
    );
    let (status, _) = call!(
        app,
        post,
        STAFF,
        &format!("/v1/tickets/{id}/state"),
        json!({"state": "closed"})
    );
    assert_eq!(status, StatusCode::OK);
    let resolved = notification(
        "resolved",
        &[
            ("aaa1", "cs-131016", "resolved", t0),
            ("bbb2", "cs-131041", "resolved", t0),
        ],
    );
    let (_, out) = call!(app, post, ALERTMANAGER, "/v1/alerts", resolved.clone());
    assert_eq!(
        out,
        json!({"opened": [], "attached": 0, "duplicates": 1, "resolved": 1})
    );
    // A replay of an old firing after the close: nothing, the ticket stays closed.
    let (_, out) = call!(app, post, ALERTMANAGER, "/v1/alerts", firing);
    assert_eq!(out["opened"], json!([]));
    let (_, t) = call!(app, get, STAFF, &format!("/v1/tickets/{id}"));
    assert_eq!(t["state"], "closed");
    let actions: Vec<&str> = t["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "alert_resolved").count(),
        2,
        "{actions:?}"
    );
    // A new firing of the same fingerprint after the close opens a new ticket.
    let again = notification(
        "firing",
        &[("aaa1", "cs-131016", "firing", "2026-11-26T03:00:00Z")],
    );
    let (_, out) = call!(app, post, ALERTMANAGER, "/v1/alerts", again.clone());
    let new_id = out["opened"][0].as_i64().unwrap();
    assert_ne!(new_id, id);
    let (_, t) = call!(app, get, STAFF, &format!("/v1/tickets/{new_id}"));
    assert_eq!(t["org"], "131016");
    // While it is open, a later firing of the same fingerprint joins it.
    let later = notification(
        "firing",
        &[("aaa1", "cs-131016", "firing", "2026-11-26T04:00:00Z")],
    );
    let (_, out) = call!(app, post, ALERTMANAGER, "/v1/alerts", later);
    assert_eq!(
        out,
        json!({"opened": [], "attached": 1, "duplicates": 0, "resolved": 0})
    );
    assert_eq!(state.cc.db.read(counts).await.unwrap().0, 2);
    assert!(
        state
            .cc
            .metrics
            .render()
            .contains("juki_callcenter_alerts_total{outcome=\"duplicate\"}")
    );
}

async fn search_finds_answers_in_japanese_variants(backend: Backend) {
    let (_db, _state, _clock, app) = setup!(backend);
    let (_, t) = call!(
        app,
        post,
        STAFF,
        "/v1/tickets",
        json!({
            "kind": "inquiry", "org": "131016", "reporter": "佐藤", "channel": "phone",
            "subject": "サーバ証明書の期限切れ", "body": "中継がTLSエラーで失敗する。",
        })
    );
    let id = t["id"].as_i64().unwrap();
    call!(
        app,
        post,
        STAFF,
        &format!("/v1/tickets/{id}/answer"),
        json!({"answer": "プロジェクトCAで証明書を再発行してください。"})
    );
    for q in ["ｻｰﾊﾞ証明書", "さーば証明書", "証明書の再発行", "ＴＬＳ"] {
        let (status, body) = call!(
            app,
            get,
            MUNI,
            &format!("/v1/search?q={}&limit=5", urlencode(q))
        );
        assert_eq!(status, StatusCode::OK);
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), 1, "{q}: {body}");
        let hit = &results[0];
        assert_eq!(hit["ticket_id"], id);
        assert!(hit["score"].as_f64().unwrap() > 0.0);
        assert_eq!(
            hit["answer"],
            "プロジェクトCAで証明書を再発行してください。"
        );
        let h = hit["highlights"].to_string();
        assert!(h.contains("<b>"), "{q}: {h}");
    }
    let (_, body) = call!(
        app,
        get,
        STAFF,
        &format!("/v1/suggestions?text={}", urlencode("証明書の期限が切れた"))
    );
    assert_eq!(body["results"][0]["ticket_id"], id);
    let (_, body) = call!(
        app,
        get,
        STAFF,
        &format!(
            "/v1/suggestions?text={}&exclude={id}",
            urlencode("証明書の期限が切れた")
        )
    );
    assert!(body["results"].as_array().unwrap().is_empty());
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn openapi_lists_exactly_the_api_routes(backend: Backend) {
    let (_db, _state, _clock, app) = setup!(backend);
    let (status, doc) = call!(app, get, None, "/openapi.json");
    assert_eq!(status, StatusCode::OK);
    let mut documented: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    documented.sort();
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/http/mod.rs")).unwrap();
    let mut routes: Vec<String> = source
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l.strip_prefix(".route(\"")?;
            let (path, rest) = rest.split_once('"')?;
            let method = rest.split("web::").nth(1)?.split('(').next()?;
            Some(format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    routes.sort();
    assert_eq!(documented, routes);
}

/// Filed Thursday 10:00 (Tokyo) with a 4 business-hour target: flagged at 13:30, breached at
/// 14:00; filed Friday 16:30, the weekend does not count.
async fn service_levels_count_business_hours_only(backend: Backend) {
    let (_db, _state, clock, app) = setup!(backend);
    let (_, t) = call!(app, post, STAFF, "/v1/tickets", inquiry("131016"));
    let id = t["id"].as_i64().unwrap();
    let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
    let sla = |t: &Value| {
        (
            t["sla"]["status"].as_str().unwrap().to_owned(),
            t["sla"]["remaining_seconds"].as_i64(),
        )
    };
    clock.set(at("2026-11-26T04:30:00Z"));
    let (_, t) = call!(app, get, STAFF, &format!("/v1/tickets/{id}"));
    assert_eq!(sla(&t), ("near".into(), Some(1800)));
    assert_eq!(t["sla"]["due_at"], "2026-11-26T05:00:00Z");
    clock.set(at("2026-11-26T05:00:00Z"));
    let (_, list) = call!(app, get, STAFF, "/v1/tickets");
    assert_eq!(list["tickets"][0]["sla"]["status"], "breached");
    clock.set(at("2026-11-27T07:30:00Z"));
    let (_, t) = call!(app, post, STAFF, "/v1/tickets", inquiry("131016"));
    let friday = t["id"].as_i64().unwrap();
    clock.set(at("2026-11-30T00:30:00Z"));
    let (_, t) = call!(app, get, STAFF, &format!("/v1/tickets/{friday}"));
    // 30 min on Friday, 30 min on Monday morning.
    assert_eq!(sla(&t), ("ok".into(), Some(3 * 3600)));
}

async fn migrations_revert_cleanly(backend: Backend) {
    let (_db, state, _clock, _app) = setup!(backend);
    let reverted = state
        .cc
        .db
        .write(juki_callcenter::store::db::revert_all_migrations)
        .await
        .unwrap();
    assert_eq!(reverted.len(), 1);
    let applied = state
        .cc
        .db
        .write(juki_callcenter::store::db::run_migrations)
        .await
        .unwrap();
    assert_eq!(applied.len(), 1);
}

on_both_backends!(
    files_and_reads_back_with_history,
    authorisation_matrix,
    illegal_transitions_are_409_and_change_nothing,
    history_is_append_only,
    hostile_input_is_4xx_and_stores_nothing,
    alert_webhook_dedups_resolves_and_never_reopens,
    search_finds_answers_in_japanese_variants,
    openapi_lists_exactly_the_api_routes,
    migrations_revert_cleanly,
    service_levels_count_business_hours_only,
);
