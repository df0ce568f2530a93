//! Relay tests, in-process, on SQLite and on PostgreSQL: idempotent apply by (sender, seq), the
//! prefecture's forwarding outbox, the relay task against a real HTTP listener, the online
//! window, the final request / final answer, and /metrics.

mod common;

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{App, HttpServer, test, web};
use common::{Backend, OWN, TestDb};
use diesel::prelude::*;
use juki_calendar::{Calendar, CalendarConfig};
use juki_node::domain::clock::FixedClock;
use juki_node::domain::identity::{NodeIdentity, Role};
use juki_node::http::routes::{self, AppState};
use juki_node::relay::{self, RelayControl, RelaySettings};
use juki_node::store::models::OutboxRow;
use juki_node::store::schema::{change_history, inbox, outbox, residents};
use juki_node::store::{self, Counts};
use serde_json::{Value, json};

const TARO: &str = "12345678903";
const HANAKO: &str = "98765432103";
/// The trace of the existing system's first request.
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn update(code: &str, reason: &str, address: &str) -> Value {
    json!({
        "resident_code": code,
        "name": "山田 太郎",
        "name_kana": "ヤマダ タロウ",
        "birth_date": "1990-04-01",
        "sex": "男",
        "address": address,
        "municipality_code": OWN,
        "reason": reason,
        "change_date": "2024-06-01",
    })
}

fn identity(role: Role) -> NodeIdentity {
    match role {
        Role::Cs => NodeIdentity::cs(OWN).unwrap(),
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
    }
}

fn node(db: &TestDb, role: Role) -> AppState {
    let mut state = db.state();
    state.identity = identity(role);
    state
}

macro_rules! app {
    ($state:expr) => {
        test::init_service(
            App::new()
                .app_data(web::Data::new($state.clone()))
                .configure(routes::configure),
        )
        .await
    };
}

macro_rules! call {
    ($app:expr, $req:expr) => {{
        let resp = test::call_service(&$app, $req.to_request()).await;
        let status = resp.status();
        let bytes = test::read_body(resp).await;
        let body: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)));
        (status, body)
    }};
}

fn counts(state: &AppState) -> Counts {
    store::counts(&mut state.db.pool.get().unwrap()).unwrap()
}

fn outbox_rows(state: &AppState) -> Vec<OutboxRow> {
    outbox::table
        .order(outbox::seq.asc())
        .select(OutboxRow::as_select())
        .load(&mut state.db.pool.get().unwrap())
        .unwrap()
}

fn batch(sender: &str, rows: &[OutboxRow]) -> Value {
    json!({
        "sender": sender,
        "items": rows.iter().map(|r| json!({
            "seq": r.seq,
            "payload": serde_json::from_str::<Value>(&r.payload).unwrap(),
        })).collect::<Vec<_>>(),
    })
}

/// A CS with three accepted updates in its outbox (TARO 転入, 転居; HANAKO 転入).
async fn cs_with_three_updates(db: &TestDb) -> AppState {
    let cs = node(db, Role::Cs);
    let app = app!(cs);
    for (key, body) in [
        ("a", update(TARO, "転入", "千代田1-1")),
        ("b", update(TARO, "転居", "千代田2-2")),
        ("c", update(HANAKO, "転入", "千代田3-3")),
    ] {
        let mut req = test::TestRequest::post()
            .uri("/v1/updates")
            .insert_header(("Idempotency-Key", key))
            .set_json(&body);
        if key == "a" {
            req = req.insert_header(("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01")));
        }
        let (status, body) = call!(app, req);
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    cs
}

async fn relay_applies_each_seq_once_and_forwards(backend: Backend) {
    let (Some(cs_db), Some(pref_db)) = (TestDb::new(backend), TestDb::new(backend)) else {
        return;
    };
    let cs = cs_with_three_updates(&cs_db).await;
    let rows = outbox_rows(&cs);
    assert_eq!(rows.len(), 3);
    let pref = node(&pref_db, Role::Prefecture);
    let app = app!(pref);
    let post = |body: Value| test::TestRequest::post().uri("/v1/relay").set_json(body);

    let (status, ack) = call!(app, post(batch("cs-131016", &rows[..2])));
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack, json!({"acked": 2, "applied": 2, "duplicates": 0}));
    // A repeated batch is acknowledged without re-applying; an overlapping one applies the rest.
    let (_, ack) = call!(app, post(batch("cs-131016", &rows[..2])));
    assert_eq!(ack, json!({"acked": 2, "applied": 0, "duplicates": 2}));
    let (_, ack) = call!(app, post(batch("cs-131016", &rows[1..])));
    assert_eq!(ack, json!({"acked": 3, "applied": 1, "duplicates": 1}));
    assert_eq!(
        counts(&pref),
        Counts {
            residents: 2,
            history: 3,
            outbox: 3
        }
    );
    let mut conn = pref.db.pool.get().unwrap();
    let address: String = residents::table
        .filter(residents::resident_code.eq(TARO))
        .select(residents::address)
        .first(&mut conn)
        .unwrap();
    assert_eq!(address, "千代田2-2");
    // History keeps the origin (the CS and its seq); the inbox the transport (sender, seq).
    let sources: Vec<(String, i64)> = change_history::table
        .order(change_history::id.asc())
        .select((change_history::source_sender, change_history::source_seq))
        .load(&mut conn)
        .unwrap();
    assert_eq!(
        sources,
        vec![
            ("cs-131016".into(), 1),
            ("cs-131016".into(), 2),
            ("cs-131016".into(), 3)
        ]
    );
    let inbox_rows: i64 = inbox::table.count().get_result(&mut conn).unwrap();
    assert_eq!(inbox_rows, 3);
    // The forwarded outbox carries the CS's envelopes in order, each with the prefecture's
    // span of the same trace.
    let forwarded = outbox_rows(&pref);
    for (cs_row, pref_row) in rows.iter().zip(&forwarded) {
        let mut a: Value = serde_json::from_str(&cs_row.payload).unwrap();
        let mut b: Value = serde_json::from_str(&pref_row.payload).unwrap();
        let (ta, tb) = (a["traceparent"].take(), b["traceparent"].take());
        let (ta, tb) = (ta.as_str().unwrap(), tb.as_str().unwrap());
        assert_eq!(ta[3..35], tb[3..35], "same trace id");
        assert_ne!(ta[36..52], tb[36..52], "a span of its own");
        assert_eq!(a, b);
    }
    assert_eq!(&rows[0].payload.contains(TRACE), &true);
    let traces: Vec<Option<String>> = change_history::table
        .order(change_history::id.asc())
        .select(change_history::trace_id)
        .load(&mut conn)
        .unwrap();
    assert_eq!(traces[0].as_deref(), Some(TRACE));
    assert!(
        traces
            .iter()
            .all(|t| t.as_ref().is_some_and(|t| t.len() == 32))
    );

    // Malformed batches are 400 and write nothing.
    let (status, body) = call!(app, post(json!({"sender": "cs-131016", "items": []})));
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_body"))
    );
    let mut reversed = batch("x", &rows);
    reversed["items"].as_array_mut().unwrap().reverse();
    assert_eq!(call!(app, post(reversed)).0, StatusCode::BAD_REQUEST);
    let (status, body) = call!(
        app,
        post(json!({"sender": "x", "items": [{"seq": 1, "payload": {"nope": 1}}]}))
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["index"], json!(0));
    assert_eq!(counts(&pref).history, 3);

    // A CS takes no relays.
    let cs_app = app!(cs);
    assert_eq!(
        call!(cs_app, post(batch("cs-131016", &rows))).0,
        StatusCode::FORBIDDEN
    );
}

async fn national_applies_without_forwarding(backend: Backend) {
    let (Some(cs_db), Some(nat_db)) = (TestDb::new(backend), TestDb::new(backend)) else {
        return;
    };
    let cs = cs_with_three_updates(&cs_db).await;
    let national = node(&nat_db, Role::National);
    let app = app!(national);
    let (status, ack) = call!(
        app,
        test::TestRequest::post()
            .uri("/v1/relay")
            .set_json(batch("pref-13", &outbox_rows(&cs)))
    );
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["applied"], json!(3));
    assert_eq!(
        counts(&national),
        Counts {
            residents: 2,
            history: 3,
            outbox: 0
        }
    );
    // Nothing to flush: the final answer is immediate.
    let (_, answer) = call!(
        app,
        test::TestRequest::post().uri("/admin/v1/final-request")
    );
    assert_eq!(answer["done"], json!(true), "{answer}");
}

/// Serves `state` on a loopback port; returns its base URL and the server handle.
fn serve(state: &AppState) -> (String, actix_web::dev::ServerHandle) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let data = web::Data::new(state.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .configure(routes::configure)
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    (url, handle)
}

fn with_upstream(
    mut state: AppState,
    upstream: Option<String>,
    calendar: Option<Calendar>,
) -> AppState {
    state.relay = Arc::new(RelayControl::new(
        upstream,
        calendar,
        RelaySettings {
            batch: 2,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_millis(200),
            idle_poll: Duration::from_millis(50),
            ..RelaySettings::default()
        },
    ));
    state
}

async fn wait_for_empty_outbox(state: &AppState) -> relay::OutboxStatus {
    for _ in 0..200 {
        let s = state.db.read(relay::outbox_status).await.unwrap();
        if s.pending == 0 {
            return s;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the outbox did not drain: {:?}", state.relay.last_error());
}

async fn relay_task_delivers_through_the_prefecture(backend: Backend) {
    let (Some(cs_db), Some(pref_db), Some(nat_db)) = (
        TestDb::new(backend),
        TestDb::new(backend),
        TestDb::new(backend),
    ) else {
        return;
    };
    let national = node(&nat_db, Role::National);
    let (nat_url, nat_server) = serve(&national);
    let pref = with_upstream(node(&pref_db, Role::Prefecture), Some(nat_url), None);
    let (pref_url, pref_server) = serve(&pref);
    // The CS starts relaying before its upstream answers: it retries with backoff.
    let cs = with_upstream(
        cs_with_three_updates(&cs_db).await,
        Some("http://127.0.0.1:9".into()),
        None,
    );
    let cs_task = actix_web::rt::spawn(relay::run(cs.node.clone(), cs.relay.clone()));
    actix_web::rt::time::sleep(Duration::from_millis(150)).await;
    assert!(cs.relay.last_error().is_some());
    cs_task.abort();
    let cs = with_upstream(cs, Some(pref_url), None);
    let cs_task = actix_web::rt::spawn(relay::run(cs.node.clone(), cs.relay.clone()));
    let pref_task = actix_web::rt::spawn(relay::run(pref.node.clone(), pref.relay.clone()));

    let s = wait_for_empty_outbox(&cs).await;
    assert_eq!((s.last_seq, s.confirmed_seq), (3, 3));
    let s = wait_for_empty_outbox(&pref).await;
    assert_eq!((s.last_seq, s.confirmed_seq), (3, 3));
    assert_eq!(
        counts(&national),
        Counts {
            residents: 2,
            history: 3,
            outbox: 0
        }
    );
    // One update is one trace from the CS to the national server.
    let trace_ids = |state: &AppState| -> Vec<(String, i64, Option<String>)> {
        change_history::table
            .order((change_history::source_sender, change_history::source_seq))
            .select((
                change_history::source_sender,
                change_history::source_seq,
                change_history::trace_id,
            ))
            .load(&mut state.db.pool.get().unwrap())
            .unwrap()
    };
    let at_cs = trace_ids(&cs);
    assert_eq!(at_cs[0].2.as_deref(), Some(TRACE));
    assert_ne!(
        at_cs[1].2, at_cs[2].2,
        "updates without a traceparent start their own"
    );
    assert_eq!(trace_ids(&pref), at_cs);
    assert_eq!(trace_ids(&national), at_cs);

    // The final answer of a drained CS is immediate; relays into the prefecture stop while its
    // own final request is in progress and resume afterwards.
    let cs_app = app!(cs);
    let (_, answer) = call!(
        cs_app,
        test::TestRequest::post().uri("/admin/v1/final-request")
    );
    assert_eq!(
        answer,
        json!({"done": true, "lastSeq": 3, "confirmedSeq": 3, "heldForTomorrow": 0})
    );
    let pref_app = app!(pref);
    let (_, answer) = call!(
        pref_app,
        test::TestRequest::post().uri("/admin/v1/final-request")
    );
    assert_eq!(answer["done"], json!(true), "{answer}");
    let (status, body) = call!(
        pref_app,
        test::TestRequest::post()
            .uri("/v1/relay")
            .set_json(batch("cs-131016", &outbox_rows(&cs)))
    );
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], json!("final_request_in_progress"));
    assert_eq!(
        call!(pref_app, test::TestRequest::post().uri("/admin/v1/resume")).0,
        StatusCode::OK
    );
    let (status, body) = call!(
        pref_app,
        test::TestRequest::post()
            .uri("/v1/relay")
            .set_json(batch("cs-131016", &outbox_rows(&cs)))
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duplicates"], json!(3));

    // Metrics.
    let resp = test::call_service(
        &cs_app,
        test::TestRequest::get().uri("/metrics").to_request(),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
    for needle in [
        "juki_node_updates_total{stage=\"accepted\"} 3",
        "juki_node_updates_total{stage=\"relayed\"} 3",
        "juki_node_outbox_depth 0",
        "juki_node_relay_duration_seconds_count{result=\"ok\"}",
        "juki_node_relay_duration_seconds_count{result=\"error\"}",
    ] {
        assert!(text.contains(needle), "{needle} missing in\n{text}");
    }
    let resp = test::call_service(
        &pref_app,
        test::TestRequest::get().uri("/metrics").to_request(),
    )
    .await;
    let text = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
    assert!(
        text.contains("juki_node_updates_total{stage=\"applied\"} 3"),
        "{text}"
    );

    cs_task.abort();
    pref_task.abort();
    nat_server.stop(false).await;
    pref_server.stop(false).await;
}

async fn updates_are_held_outside_the_upstream_window(backend: Backend) {
    let Some(cs_db) = TestDb::new(backend) else {
        return;
    };
    // Saturday 2024-06-08, 12:00 in Tokyo: the default calendar is closed on weekends.
    let calendar = Calendar::new(&CalendarConfig::default()).unwrap();
    let mut cs = with_upstream(
        cs_with_three_updates(&cs_db).await,
        Some("http://127.0.0.1:9".into()),
        Some(calendar.clone()),
    );
    cs.clock = Arc::new(FixedClock("2024-06-08T03:00:00Z".parse().unwrap()));
    assert!(!cs.relay.upstream_open(&cs.identity, cs.clock.now()));
    let task = actix_web::rt::spawn(relay::run(cs.node.clone(), cs.relay.clone()));
    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    let app = app!(cs);
    let (_, answer) = call!(
        app,
        test::TestRequest::post().uri("/admin/v1/final-request")
    );
    assert_eq!(answer["done"], json!(false), "{answer}");
    assert_eq!(answer["heldForTomorrow"], json!(3));
    assert_eq!(answer["lastSeq"], json!(3));
    assert_eq!(answer["confirmedSeq"], json!(0));
    assert!(answer["reason"].as_str().unwrap().contains("online window"));
    let resp =
        test::call_service(&app, test::TestRequest::get().uri("/metrics").to_request()).await;
    let text = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
    assert!(text.contains("juki_node_updates_held 3"), "{text}");
    assert!(text.contains("juki_node_outbox_depth 3"), "{text}");
    task.abort();

    // Monday 12:00 is inside the window; an unreachable upstream times the final request out.
    cs.clock = Arc::new(FixedClock("2024-06-10T03:00:00Z".parse().unwrap()));
    assert!(cs.relay.upstream_open(&cs.identity, cs.clock.now()));
    let task = actix_web::rt::spawn(relay::run(cs.node.clone(), cs.relay.clone()));
    let app = app!(cs);
    let (_, answer) = call!(
        app,
        test::TestRequest::post().uri("/admin/v1/final-request?timeoutSeconds=1")
    );
    assert_eq!(answer["done"], json!(false), "{answer}");
    assert_eq!(answer["heldForTomorrow"], json!(3));
    assert!(
        answer["reason"].as_str().unwrap().contains("127.0.0.1:9"),
        "{answer}"
    );
    task.abort();
}

/// Issue 18, case 4: an extension in force that covers this node (the operator renders it into
/// `extensions.json`) keeps the relay open past the upstream's window until the extended end,
/// so the night's final request relays instead of holding everything for tomorrow.
async fn an_extension_in_force_keeps_the_relay_open_past_the_window(backend: Backend) {
    let Some(cs_db) = TestDb::new(backend) else {
        return;
    };
    // Friday 2024-06-07, 22:00 in Tokyo: the prefecture's window (07:30–21:30) is over.
    let calendar = Calendar::new(&CalendarConfig::default()).unwrap();
    let mut cs = with_upstream(
        cs_with_three_updates(&cs_db).await,
        Some("http://127.0.0.1:9".into()),
        Some(calendar),
    );
    cs.clock = Arc::new(FixedClock("2024-06-07T13:00:00Z".parse().unwrap()));
    assert!(!cs.relay.upstream_open(&cs.identity, cs.clock.now()));

    let dir = std::env::temp_dir().join(format!("juki-ext-{}-{backend:?}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("extensions.json");
    let extension = |date: &str| {
        json!([{"name": "ns/late-counter", "kind": "LocalProcessing",
                "nodes": ["cs-131016", "pref-13", "national"], "date": date, "endTime": "23:00"}])
        .to_string()
    };
    std::fs::write(&file, extension("2024-06-07")).unwrap();
    Arc::get_mut(&mut cs.relay).unwrap().extensions = Some(file.clone());
    assert!(cs.relay.upstream_open(&cs.identity, cs.clock.now()));
    let task = actix_web::rt::spawn(relay::run(cs.node.clone(), cs.relay.clone()));
    let app = app!(cs);
    let (_, answer) = call!(
        app,
        test::TestRequest::post().uri("/admin/v1/final-request?timeoutSeconds=1")
    );
    // It tried the upstream (unreachable here) instead of holding for the window.
    assert!(
        answer["reason"].as_str().unwrap().contains("127.0.0.1:9"),
        "{answer}"
    );
    task.abort();

    // At the extended end, a day later, or with a broken file: the plain window again.
    let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
    assert!(
        !cs.relay
            .upstream_open(&cs.identity, at("2024-06-07T14:00:00Z"))
    );
    std::fs::write(&file, extension("2024-06-06")).unwrap();
    assert!(!cs.relay.upstream_open(&cs.identity, cs.clock.now()));
    std::fs::write(&file, "[{").unwrap();
    assert!(!cs.relay.upstream_open(&cs.identity, cs.clock.now()));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every operation in /openapi.json is served (no `no route` 404), and every route is documented.
#[actix_web::test]
async fn openapi_describes_every_route() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let state = node(&db, Role::Prefecture);
    let app = app!(state);
    let (status, doc) = call!(app, test::TestRequest::get().uri("/openapi.json"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], json!("3.1.0"));
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations += 1;
            let uri = path
                .replace("{code}", TARO)
                .replace("{sha256}", &"0".repeat(64))
                .replace("{file}", "codes");
            let req = match method.as_str() {
                "get" => test::TestRequest::get(),
                "post" => test::TestRequest::post(),
                "put" => test::TestRequest::put(),
                other => panic!("unexpected method {other}"),
            }
            .uri(&format!("{uri}?timeoutSeconds=0"));
            let (status, body) = call!(app, req);
            let unrouted = status == StatusCode::NOT_FOUND
                && body["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("no route"));
            assert!(!unrouted, "{method} {path} is documented but not routed");
        }
    }
    // The routes registered in routes::configure.
    assert_eq!(operations, 26);
}

/// An item the upstream refuses (a 4xx naming it) holds the outbox in order, loudly: an error
/// in `GET /admin/v1/relay` (`lastError`, `rejected` with the seq), a metric; once the cause is
/// fixed delivery resumes without anything lost or skipped.
async fn a_rejected_item_holds_the_outbox_visibly(backend: Backend) {
    let (Some(cs_db), Some(pref_db)) = (TestDb::new(backend), TestDb::new(backend)) else {
        return;
    };
    let pref = node(&pref_db, Role::Prefecture);
    let (pref_url, pref_server) = serve(&pref);
    let cs = with_upstream(cs_with_three_updates(&cs_db).await, Some(pref_url), None);
    let original = outbox_rows(&cs)[1].payload.clone();
    let set_payload = |payload: &str| {
        diesel::update(outbox::table.filter(outbox::seq.eq(2)))
            .set(outbox::payload.eq(payload))
            .execute(&mut cs.db.pool.get().unwrap())
            .unwrap();
    };
    set_payload(r#"{"sender": "cs-131016", "seq": 2, "update": {"resident_code": "x"}}"#);
    let cs_task = actix_web::rt::spawn(relay::run(cs.node.clone(), cs.relay.clone()));
    let mut rejection = None;
    for _ in 0..100 {
        rejection = cs.relay.rejection();
        if rejection.is_some() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    let rejection = rejection.expect("the refusal is recorded");
    assert_eq!(
        (rejection.status, rejection.error.as_str(), rejection.seq),
        (400, "invalid_body", Some(2))
    );
    assert_eq!((rejection.first_seq, rejection.last_seq), (1, 2));
    // Retried (not skipped): the refused batch stays, and nothing after it overtakes it.
    actix_web::rt::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(counts(&pref).history, 0);
    let cs_app = app!(cs);
    let (_, status) = call!(cs_app, test::TestRequest::get().uri("/admin/v1/relay"));
    assert_eq!(status["outbox"]["pending"], json!(3), "{status}");
    assert_eq!(status["rejected"]["seq"], json!(2), "{status}");
    assert_eq!(status["rejected"]["status"], json!(400), "{status}");
    let last_error = status["lastError"].as_str().unwrap();
    assert!(
        last_error.contains("rejected") && last_error.contains("for seq 2"),
        "{last_error}"
    );
    let resp = test::call_service(
        &cs_app,
        test::TestRequest::get().uri("/metrics").to_request(),
    )
    .await;
    let text = String::from_utf8(test::read_body(resp).await.to_vec()).unwrap();
    let rejected: u64 = text
        .lines()
        .find(|l| l.starts_with("juki_node_relay_rejected_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no rejected counter in\n{text}"));
    assert!(rejected >= 2, "retried: {rejected}");

    // Fixed: everything is delivered, in order, and the state clears.
    set_payload(&original);
    cs.relay.wake();
    let s = wait_for_empty_outbox(&cs).await;
    assert_eq!((s.last_seq, s.confirmed_seq), (3, 3));
    assert_eq!(counts(&pref).history, 3);
    let (_, status) = call!(cs_app, test::TestRequest::get().uri("/admin/v1/relay"));
    assert_eq!(status["rejected"], Value::Null, "{status}");
    assert_eq!(status["lastError"], Value::Null, "{status}");
    cs_task.abort();
    pref_server.stop(false).await;
}

common::on_both_backends!(
    relay_applies_each_seq_once_and_forwards,
    national_applies_without_forwarding,
    relay_task_delivers_through_the_prefecture,
    updates_are_held_outside_the_upstream_window,
    an_extension_in_force_keeps_the_relay_open_past_the_window,
    a_rejected_item_holds_the_outbox_visibly,
);

/// The value of the one series of `/metrics` whose line starts with `prefix`.
fn sample(state: &AppState, prefix: &str) -> Option<f64> {
    state
        .metrics
        .render()
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[actix_web::test]
async fn the_link_probe_reports_the_upstream_up_then_down_with_its_round_trip() {
    let (Some(pref_db), Some(cs_db)) = (TestDb::new(Backend::Sqlite), TestDb::new(Backend::Sqlite))
    else {
        return;
    };
    let pref = node(&pref_db, Role::Prefecture);
    let (pref_url, pref_server) = serve(&pref);
    let mut cs = with_upstream(node(&cs_db, Role::Cs), Some(pref_url.clone()), None);
    Arc::get_mut(&mut cs.relay).unwrap().settings.probe_interval = Duration::from_millis(50);
    let authority = pref_url.trim_start_matches("http://");
    let up = format!("juki_node_link_up{{upstream=\"{authority}\"}}");
    let rtt = format!("juki_node_link_rtt_seconds{{upstream=\"{authority}\"}}");
    let probing = actix_web::rt::spawn(relay::probe::run(cs.node.clone(), cs.relay.clone()));
    let wait_for = |want: f64| {
        let (cs, up) = (&cs, &up);
        async move {
            for _ in 0..100 {
                if sample(cs, up) == Some(want) {
                    return;
                }
                actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("{up} never became {want}:\n{}", cs.metrics.render());
        }
    };
    wait_for(1.0).await;
    let seconds = sample(&cs, &rtt).expect("a round trip once the link answered");
    assert!(seconds > 0.0 && seconds < 5.0, "{seconds}");
    // The prefecture goes away: the next probe finds the link down, the last round trip stays.
    pref_server.stop(true).await;
    wait_for(0.0).await;
    assert_eq!(sample(&cs, &rtt), Some(seconds));
    probing.abort();

    // No relay confirmed yet: no timestamp. Confirmed batches: the time of the last one (the
    // node's clock), also after a restart with nothing left to send.
    let last_relay = "juki_node_last_relay_success_timestamp_seconds";
    assert_eq!(sample(&cs, last_relay), None);
    let (pref_url, pref_server) = serve(&pref);
    let cs = with_upstream(cs_with_three_updates(&cs_db).await, Some(pref_url), None);
    let relaying = actix_web::rt::spawn(relay::run(cs.node.clone(), cs.relay.clone()));
    wait_for_empty_outbox(&cs).await;
    relaying.abort();
    pref_server.stop(true).await;
    let now = cs.node.clock.now().as_millisecond() as f64 / 1000.0;
    assert_eq!(sample(&cs, last_relay), Some(now));
    let restarted = with_upstream(
        node(&cs_db, Role::Cs),
        Some("http://127.0.0.1:9".into()),
        None,
    );
    assert_eq!(sample(&restarted, last_relay), None);
    let relaying =
        actix_web::rt::spawn(relay::run(restarted.node.clone(), restarted.relay.clone()));
    for _ in 0..100 {
        if sample(&restarted, last_relay).is_some() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    relaying.abort();
    assert_eq!(sample(&restarted, last_relay), Some(now));
}

#[actix_web::test]
async fn the_national_server_probes_nothing() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let national = with_upstream(node(&db, Role::National), None, None);
    // Returns at once: there is no upstream to probe.
    actix_web::rt::time::timeout(
        Duration::from_secs(5),
        relay::probe::run(national.node.clone(), national.relay.clone()),
    )
    .await
    .expect("the probe of a node without an upstream ends at once");
    assert!(!national.metrics.render().contains("juki_node_link_up"));
}
