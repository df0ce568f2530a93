//! The wide-area endpoints in-process with fixed clocks, on SQLite and PostgreSQL: the move-in's
//! date rules (14 days after the move, 30 days after the planned date), the PIN lock, the
//! move-out refusals, the window-service hours at both ends of a wide-area issuance and an
//! extension from the extensions file. Two CS states (separate databases) exchange their
//! messages through `deliver`, a courier that hands every message of one CS's outbox to the
//! other exactly as the mailbox fetch would — repeatedly, so the handlers' idempotency is
//! exercised on every call.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{App, test, web};
use common::{Backend, TestDb};
use diesel::prelude::*;
use juki_calendar::{Calendar, CalendarConfig};
use juki_node::domain::clock::FixedClock;
use juki_node::domain::identity::NodeIdentity;
use juki_node::http::routes::{self, AppState};
use juki_node::node::Node;
use juki_node::relay::mailbox;
use juki_node::relay::{RelayControl, RelaySettings};
use juki_node::store::db::Db;
use juki_node::store::db::{self, DbConnection};
use juki_node::store::schema::{
    change_history, issuance_log, issuances, outbox, residents, transfers,
};
use juki_node::wide_area::{CsContext, WideArea, pull};
use serde_json::{Value, json};

const A: &str = "131016";
const B: &str = "271004";

/// A migrated CS of `muni` at `now` (UTC), with an optional calendar and extensions file.
fn cs(db: &TestDb, muni: &str, now: &str, calendar: bool, extensions: Option<PathBuf>) -> AppState {
    let pool = db::pool(&db.url, 4);
    db::run_migrations(&mut pool.get().unwrap()).unwrap();
    let mut state = AppState::new(Node::new(
        Db::new(db.url.clone(), pool),
        NodeIdentity::cs(muni).unwrap(),
        Arc::new(FixedClock(now.parse().unwrap())),
    ));
    let calendar = calendar.then(|| Calendar::new(&CalendarConfig::default()).unwrap());
    state.relay = Arc::new(RelayControl::new(None, calendar, RelaySettings::default()));
    state.wide = Arc::new(WideArea {
        extensions,
        ..WideArea::default()
    });
    state
}

fn at(state: &AppState, now: &str) -> AppState {
    let mut state = state.clone();
    state.clock = Arc::new(FixedClock(now.parse().unwrap()));
    state
}

async fn call(state: &AppState, req: test::TestRequest) -> (StatusCode, Value) {
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(state.clone()))
            .configure(routes::configure),
    )
    .await;
    let resp = test::call_service(&app, req.to_request()).await;
    let status = resp.status();
    let bytes = test::read_body(resp).await;
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// An Idempotency-Key per distinct body (FNV-1a), so a repeated body is a repeated request.
fn key_of(body: &Value) -> String {
    let hash = body
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    format!("k-{hash:016x}")
}

async fn post(state: &AppState, uri: &str, body: Value) -> (StatusCode, Value) {
    call(
        state,
        test::TestRequest::post()
            .uri(uri)
            .insert_header(("Idempotency-Key", key_of(&body)))
            .set_json(&body),
    )
    .await
}

fn conn(state: &AppState) -> db::PooledConnection {
    state.db.pool.get().unwrap()
}

/// Hands every message in `from`'s outbox addressed to `to` over to `to` (as a fetch would).
fn deliver(from: &AppState, to: &AppState) {
    let own = to.identity.municipality.clone().unwrap();
    let payloads: Vec<String> = outbox::table
        .order(outbox::seq.asc())
        .select(outbox::payload)
        .load(&mut conn(from))
        .unwrap();
    let mut c = conn(to);
    let cursor = mailbox::cursor(&mut c).unwrap();
    let messages: Vec<(i64, Value)> = payloads
        .iter()
        .map(|p| serde_json::from_str::<Value>(p).unwrap())
        .filter(|e| e["message"]["to"] == json!(own))
        .enumerate()
        .map(|(i, e)| (cursor + 1 + i as i64, e["message"].clone()))
        .collect();
    let Some(last) = messages.last().map(|(id, _)| *id) else {
        return;
    };
    let ctx: CsContext = to.wide.context(&to.node, to.relay.calendar.current(), true);
    pull::apply_fetched(&mut c, &ctx, &messages, last).unwrap();
}

fn resident(code: &str, status_reason: &str) -> Value {
    json!({
        "resident_code": code, "name": "移動 次郎", "name_kana": "イドウ ジロウ",
        "birth_date": "1970-01-01", "sex": "男", "address": "千代田区1-1",
        "municipality_code": A, "reason": status_reason, "change_date": "2024-05-01",
        "permanent_domicile": "本籍 東京都", "domicile_head": "移動 太郎",
    })
}

fn code(n: u64) -> String {
    let mut d = [0u8; 10];
    let mut m = n;
    for x in d.iter_mut().rev() {
        *x = (m % 10) as u8;
        m /= 10;
    }
    let check = juki_codes::resident_record_check_digit(&d);
    d.iter()
        .chain(std::iter::once(&check))
        .map(|x| char::from(b'0' + x))
        .collect()
}

/// Row counts of every table the wide-area endpoints write.
pub fn snapshot(c: &mut DbConnection) -> [i64; 6] {
    [
        residents::table.count().get_result(c).unwrap(),
        outbox::table.count().get_result(c).unwrap(),
        transfers::table.count().get_result(c).unwrap(),
        transfers::table
            .select(diesel::dsl::sum(transfers::pin_failures))
            .first::<Option<i64>>(c)
            .unwrap()
            .unwrap_or(0),
        issuances::table.count().get_result(c).unwrap(),
        issuance_log::table.count().get_result(c).unwrap(),
    ]
}

// 2024-06-03 (Monday) 12:00 in Tokyo.
const NOON: &str = "2024-06-03T03:00:00Z";

async fn move_in_date_rules(backend: Backend) {
    let (Some(db_a), Some(db_b)) = (TestDb::new(backend), TestDb::new(backend)) else {
        return;
    };
    let a = cs(&db_a, A, NOON, false, None);
    let b = cs(&db_b, B, NOON, false, None);
    let codes: Vec<String> = (0..5).map(|i| code(5_000_000 + i)).collect();
    for (i, c) in codes.iter().enumerate() {
        let (s, body) = post(&a, "/v1/updates", resident(c, "転入")).await;
        assert_eq!(s, StatusCode::CREATED, "{i} {body}");
    }
    for c in &codes {
        let (s, body) = post(
            &a,
            "/v1/transfers",
            json!({"resident_code": c, "destination_municipality": B, "planned_date": "2024-06-03",
                   "planned_address": "大阪市北区1-1", "pin": "2468"}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{body}");
    }
    deliver(&a, &b);
    deliver(&a, &b); // again: no-op
    assert_eq!(
        snapshot(&mut conn(&b))[2],
        5,
        "one destination row per transfer"
    );
    let before = snapshot(&mut conn(&b));

    let move_in =
        |c: &str, pin: &str, date: &str| json!({"resident_code": c, "pin": pin, "move_date": date});
    // 17 days later: a move 15 days ago is too late, one 14 days ago is in time.
    let b17 = at(&b, "2024-06-20T03:00:00Z");
    let (s, e) = post(
        &b17,
        "/v1/move-ins",
        move_in(&codes[0], "2468", "2024-06-05"),
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str(), e["field"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("move_in_deadline"),
            Some("move_date")
        ),
        "{e}"
    );
    let (s, e) = post(
        &b17,
        "/v1/move-ins",
        move_in(&codes[0], "2468", "2024-06-21"),
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("future_date")),
        "{e}"
    );
    assert_eq!(snapshot(&mut conn(&b)), before, "refusals change nothing");
    let (s, e) = post(
        &b17,
        "/v1/move-ins",
        move_in(&codes[0], "2468", "2024-06-06"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    assert_eq!(e["state"], "moved_in");
    // 31 days after the planned date: refused even for a move 2 days ago.
    let b31 = at(&b, "2024-07-04T03:00:00Z");
    let (s, e) = post(
        &b31,
        "/v1/move-ins",
        move_in(&codes[1], "2468", "2024-07-02"),
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str(), e["field"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("planned_date_deadline"),
            Some("planned_date")
        ),
        "{e}"
    );
    // The 30th day is in time.
    let b30 = at(&b, "2024-07-03T03:00:00Z");
    let (s, e) = post(
        &b30,
        "/v1/move-ins",
        move_in(&codes[1], "2468", "2024-07-02"),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    // Three wrong PINs lock the transfer; the right one is refused afterwards.
    for tries_left in [2, 1, 0] {
        let (s, e) = post(&b, "/v1/move-ins", move_in(&codes[2], "1111", "2024-06-03")).await;
        assert_eq!(
            (s, e["error"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("pin_mismatch")),
            "{e}"
        );
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains(&format!("{tries_left} tries left")),
            "{e}"
        );
    }
    let (s, e) = post(&b, "/v1/move-ins", move_in(&codes[2], "2468", "2024-06-03")).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::CONFLICT, Some("pin_locked")),
        "{e}"
    );
    // No move-out information for a resident of nowhere.
    let (s, e) = post(
        &b,
        "/v1/move-ins",
        move_in(&code(5_999_999), "2468", "2024-06-03"),
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::CONFLICT, Some("no_move_out_information")),
        "{e}"
    );

    // The notices reach A: the two moved residents are moved out at A (with 転出 in the outbox),
    // the others are still active there.
    deliver(&b, &a);
    deliver(&b, &a);
    let (s, t) = call(
        &a,
        test::TestRequest::get().uri(&format!("/v1/transfers/{A}-T1")),
    )
    .await;
    assert_eq!(
        (s, t["state"].as_str()),
        (StatusCode::OK, Some("completed")),
        "{t}"
    );
    let statuses: Vec<(String, String)> = residents::table
        .order(residents::resident_code.asc())
        .select((residents::resident_code, residents::status))
        .load(&mut conn(&a))
        .unwrap();
    let moved: Vec<&str> = statuses
        .iter()
        .filter(|(_, s)| s == "moved_out")
        .map(|(c, _)| c.as_str())
        .collect();
    assert_eq!(moved, vec![codes[0].as_str(), codes[1].as_str()]);
    // B holds the domicile (it registers the person), its copy for others does not.
    let (s, r) = call(
        &b,
        test::TestRequest::get().uri(&format!("/v1/residents/{}", codes[0])),
    )
    .await;
    assert_eq!(
        (
            s,
            r["permanent_domicile"].as_str(),
            r["municipality_code"].as_str()
        ),
        (StatusCode::OK, Some("本籍 東京都"), Some(B))
    );
    assert_eq!(r["address"], "大阪市北区1-1");
    assert_eq!(r["status"], "active");
}

async fn move_out_refusals(backend: Backend) {
    let Some(db_a) = TestDb::new(backend) else {
        return;
    };
    let a = cs(&db_a, A, NOON, true, None);
    let alive = code(6_000_001);
    let dead = code(6_000_002);
    post(&a, "/v1/updates", resident(&alive, "転入")).await;
    post(&a, "/v1/updates", resident(&dead, "転入")).await;
    let mut death = resident(&dead, "死亡");
    death["change_date"] = json!("2024-05-02");
    assert_eq!(post(&a, "/v1/updates", death).await.0, StatusCode::CREATED);
    let before = snapshot(&mut conn(&a));
    let out = |c: &str| json!({"resident_code": c, "destination_municipality": B, "planned_date": "2024-06-03", "planned_address": "大阪", "pin": "1234"});
    let (s, e) = post(&a, "/v1/transfers", out(&code(6_000_003))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{e}");
    let (s, e) = post(&a, "/v1/transfers", out(&dead)).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::CONFLICT, Some("resident_deceased"))
    );
    // 18:30 in Tokyo: outside the window-service hours.
    let evening = at(&a, "2024-06-03T09:30:00Z");
    let (s, e) = post(&evening, "/v1/transfers", out(&alive)).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::CONFLICT, Some("outside_window_service")),
        "{e}"
    );
    let (s, e) = post(
        &evening,
        "/v1/move-ins",
        json!({"resident_code": alive, "pin": "1234", "move_date": "2024-06-03"}),
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::CONFLICT, Some("outside_window_service")),
        "{e}"
    );
    assert_eq!(snapshot(&mut conn(&a)), before);
    // Two move-outs of the same resident to different destinations at the same time: one is
    // filed, the other refused (a resident never moves to two places).
    let to_c = {
        let mut v = out(&alive);
        v["destination_municipality"] = json!("131024");
        v
    };
    let first = actix_web::rt::spawn({
        let a = a.clone();
        let body = out(&alive);
        async move { post(&a, "/v1/transfers", body).await.0 }
    });
    let second = actix_web::rt::spawn({
        let a = a.clone();
        async move { post(&a, "/v1/transfers", to_c).await.0 }
    });
    let mut answers = vec![first.await.unwrap(), second.await.unwrap()];
    answers.sort();
    assert_eq!(answers, [StatusCode::CREATED, StatusCode::CONFLICT]);
    assert_eq!(snapshot(&mut conn(&a))[2], 1, "one transfer");
    let (s, _) = call(&a, test::TestRequest::get().uri("/v1/transfers/nope-T9")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

async fn issuance_hours_at_both_ends(backend: Backend) {
    let (Some(db_h), Some(db_x)) = (TestDb::new(backend), TestDb::new(backend)) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!(
        "juki-ext-{}-{backend:?}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ext = dir.join("extensions.json");
    // 18:30 in Tokyo, outside the hours.
    const EVENING: &str = "2024-06-03T09:30:00Z";
    let home = cs(&db_h, A, NOON, true, Some(ext.clone()));
    let issuing = cs(&db_x, B, NOON, true, Some(ext.clone()));
    let alive = code(7_000_001);
    let dead = code(7_000_002);
    post(&home, "/v1/updates", resident(&alive, "転入")).await;
    post(&home, "/v1/updates", resident(&dead, "転入")).await;
    let mut death = resident(&dead, "死亡");
    death["change_date"] = json!("2024-05-02");
    post(&home, "/v1/updates", death).await;

    let ask = |c: &str| json!({"resident_code": c, "home_municipality": A});
    // Inside the hours at both ends: sent (202 until the answer arrives), issued after the
    // round trip; the copy has no 本籍 / 筆頭者.
    let (s, v) = post(&issuing, "/v1/issuances?wait=0", ask(&alive)).await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::ACCEPTED, Some("requested")),
        "{v}"
    );
    let id = v["issuance_id"].as_str().unwrap().to_owned();
    deliver(&issuing, &home);
    deliver(&home, &issuing);
    deliver(&home, &issuing);
    let (s, v) = call(
        &issuing,
        test::TestRequest::get().uri(&format!("/v1/issuances/{id}")),
    )
    .await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("issued")),
        "{v}"
    );
    assert!(
        !v.to_string().contains("本籍") && !v.to_string().contains("移動 太郎"),
        "{v}"
    );
    let (s, v) = post(&issuing, "/v1/issuances?wait=0", ask(&alive)).await;
    assert_eq!(
        (s, v["answer"]["copy"]["name"].as_str()),
        (StatusCode::OK, Some("移動 次郎")),
        "replayed: {v}"
    );
    // Deceased: refused by the home CS.
    let (s, v) = post(&issuing, "/v1/issuances?wait=0", ask(&dead)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let dead_id = v["issuance_id"].as_str().unwrap().to_owned();
    deliver(&issuing, &home);
    deliver(&home, &issuing);
    let (_, v) = call(
        &issuing,
        test::TestRequest::get().uri(&format!("/v1/issuances/{dead_id}")),
    )
    .await;
    assert_eq!(
        (v["state"].as_str(), v["answer"]["error"].as_str()),
        (Some("refused"), Some("resident_deceased")),
        "{v}"
    );

    // Evening without an extension: refused at the issuing end (logged there, nothing sent).
    let x_evening = at(&issuing, EVENING);
    let mut later = ask(&alive);
    later["requested_by"] = json!("evening");
    let outbox_before = snapshot(&mut conn(&issuing))[1];
    let (s, e) = post(&x_evening, "/v1/issuances?wait=0", later.clone()).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::CONFLICT, Some("outside_window_service")),
        "{e}"
    );
    assert_eq!(snapshot(&mut conn(&issuing))[1], outbox_before);
    // An extension naming both nodes opens both ends until 20:00.
    std::fs::write(&ext, format!(r#"[{{"kind": "WideAreaIssuance", "nodes": ["cs-{A}", "cs-{B}"], "date": "2024-06-03", "endTime": "20:00"}}]"#)).unwrap();
    let (s, v) = post(&x_evening, "/v1/issuances?wait=0", later.clone()).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let ext_id = v["issuance_id"].as_str().unwrap().to_owned();
    // … but the home end decides by its own clock and the extension in force there: a home
    // without the extension refuses.
    std::fs::write(&ext, format!(r#"[{{"kind": "WideAreaIssuance", "nodes": ["cs-{B}", "cs-011002"], "date": "2024-06-03", "endTime": "20:00"}}]"#)).unwrap();
    deliver(&x_evening, &at(&home, EVENING));
    deliver(&at(&home, EVENING), &x_evening);
    let (_, v) = call(
        &issuing,
        test::TestRequest::get().uri(&format!("/v1/issuances/{ext_id}")),
    )
    .await;
    assert_eq!(
        (v["state"].as_str(), v["answer"]["error"].as_str()),
        (Some("refused"), Some("outside_window_service")),
        "{v}"
    );
    // With the extension at both ends: issued in the evening.
    std::fs::write(&ext, format!(r#"[{{"kind": "WideAreaIssuance", "nodes": ["{A}", "cs-{B}"], "date": "2024-06-03", "endTime": "20:00"}}]"#)).unwrap();
    later["requested_by"] = json!("evening 2");
    let (s, v) = post(&x_evening, "/v1/issuances?wait=0", later).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let ok_id = v["issuance_id"].as_str().unwrap().to_owned();
    deliver(&x_evening, &at(&home, EVENING));
    deliver(&at(&home, EVENING), &x_evening);
    let (_, v) = call(
        &issuing,
        test::TestRequest::get().uri(&format!("/v1/issuances/{ok_id}")),
    )
    .await;
    assert_eq!(v["state"].as_str(), Some("issued"), "{v}");
    // Logged at both ends: every decision at home, request and answer at the issuing end.
    let home_log: Vec<String> = issuance_log::table
        .order(issuance_log::id.asc())
        .select(issuance_log::outcome)
        .load(&mut conn(&home))
        .unwrap();
    assert_eq!(
        home_log,
        [
            "issued",
            "refused:resident_deceased",
            "refused:outside_window_service",
            "issued"
        ]
    );
    let x_log: Vec<String> = issuance_log::table
        .order(issuance_log::id.asc())
        .select(issuance_log::outcome)
        .load(&mut conn(&issuing))
        .unwrap();
    assert_eq!(
        x_log,
        [
            "requested",
            "issued",
            "requested",
            "refused:resident_deceased",
            "refused:outside_window_service",
            "requested",
            "refused:outside_window_service",
            "requested",
            "issued"
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// 転出取消: a cancelled move-out cannot be moved in at B and leaves the resident at A; a
/// cancellation that crosses a move-in does not undo it (the notice completes the move at A), so
/// the resident is active in exactly one municipality either way.
async fn cancellation(backend: Backend) {
    let (Some(db_a), Some(db_b)) = (TestDb::new(backend), TestDb::new(backend)) else {
        return;
    };
    let a = cs(&db_a, A, NOON, false, None);
    let b = cs(&db_b, B, NOON, false, None);
    let stays = code(9_000_001);
    let goes = code(9_000_002);
    for c in [&stays, &goes] {
        assert_eq!(
            post(&a, "/v1/updates", resident(c, "転入")).await.0,
            StatusCode::CREATED
        );
    }
    let out = |c: &str| {
        json!({"resident_code": c, "destination_municipality": B,
        "planned_date": "2024-06-03", "planned_address": "大阪", "pin": "1357"})
    };
    let (_, t1) = post(&a, "/v1/transfers", out(&stays)).await;
    let (_, t2) = post(&a, "/v1/transfers", out(&goes)).await;
    let (id1, id2) = (
        t1["transfer_id"].as_str().unwrap(),
        t2["transfer_id"].as_str().unwrap(),
    );
    deliver(&a, &b);
    let cancel = |id: &str| test::TestRequest::post().uri(&format!("/v1/transfers/{id}/cancel"));
    // The first is cancelled before the move-in: B refuses the move-in.
    let (s, v) = call(&a, cancel(id1)).await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{v}"
    );
    let (s, v) = call(&a, cancel(id1)).await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "repeat: {v}"
    );
    deliver(&a, &b);
    let (_, v) = call(
        &b,
        test::TestRequest::get().uri(&format!("/v1/transfers/{id1}")),
    )
    .await;
    assert_eq!(v["state"], "cancelled");
    let move_in = |c: &str| json!({"resident_code": c, "pin": "1357", "move_date": "2024-06-03"});
    let (s, e) = post(&b, "/v1/move-ins", move_in(&stays)).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::CONFLICT, Some("transfer_cancelled")),
        "{e}"
    );
    // The second moves in at B; A's cancellation crosses the notice.
    let (s, _) = post(&b, "/v1/move-ins", move_in(&goes)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = call(&a, cancel(id2)).await;
    assert_eq!(
        (s, v["state"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    deliver(&a, &b);
    deliver(&b, &a);
    let (_, v) = call(
        &a,
        test::TestRequest::get().uri(&format!("/v1/transfers/{id2}")),
    )
    .await;
    assert_eq!(v["state"], "completed", "{v}");
    assert!(
        v["note"].as_str().unwrap().contains("the move stands"),
        "{v}"
    );
    let (_, v) = call(
        &b,
        test::TestRequest::get().uri(&format!("/v1/transfers/{id2}")),
    )
    .await;
    assert_eq!(v["state"], "moved_in", "{v}");
    let (s, e) = call(&a, cancel(id2)).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::CONFLICT, Some("already_completed"))
    );
    // Exactly one active record each: `stays` at A, `goes` at B.
    for (c, at_a, at_b) in [(&stays, 1, 0), (&goes, 0, 1)] {
        let count = |state: &AppState| {
            residents::table
                .filter(residents::resident_code.eq(c))
                .filter(residents::status.eq("active"))
                .count()
                .get_result::<i64>(&mut conn(state))
                .unwrap()
        };
        assert_eq!((count(&a), count(&b)), (at_a, at_b), "{c}");
    }
    // A new move-out after the cancellation files a new transfer.
    let (s, v) = post(&a, "/v1/transfers", out(&stays)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id3 = v["transfer_id"].as_str().unwrap().to_owned();
    assert_ne!(id3, id1);
    deliver(&a, &b);
    // A move-out 31 days past its planned date lapses when the next one is filed.
    let lapsing = code(9_000_003);
    assert_eq!(
        post(&a, "/v1/updates", resident(&lapsing, "転入")).await.0,
        StatusCode::CREATED
    );
    let (s, old) = post(&a, "/v1/transfers", out(&lapsing)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, e) = post(
        &a,
        "/v1/transfers",
        json!({"resident_code": lapsing,
        "destination_municipality": "131024", "planned_date": "2024-06-03",
        "planned_address": "文京", "pin": "1357"}),
    )
    .await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::CONFLICT, Some("transfer_in_progress"))
    );
    let a_later = at(&a, "2024-07-04T03:00:00Z");
    let (s, new) = post(
        &a_later,
        "/v1/transfers",
        json!({"resident_code": lapsing,
        "destination_municipality": "131024", "planned_date": "2024-07-05",
        "planned_address": "文京", "pin": "1357"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{new}");
    let old_id = old["transfer_id"].as_str().unwrap();
    let (_, v) = call(
        &a,
        test::TestRequest::get().uri(&format!("/v1/transfers/{old_id}")),
    )
    .await;
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(v["note"].as_str().unwrap().starts_with("expired"), "{v}");
    // The lapsed request repeated now is refused for its planned date (never answered with the
    // lapsed transfer).
    let (s, again) = post(
        &at(&a, "2024-07-04T03:00:00Z"),
        "/v1/transfers",
        out(&lapsing),
    )
    .await;
    assert_eq!(
        (s, again["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("planned_date_past")),
        "{again}"
    );

    // The existing system records a 死亡 meanwhile: the pending move-out is cancelled at both
    // ends and B refuses the move-in.
    let mut death = resident(&stays, "死亡");
    death["change_date"] = json!("2024-06-02");
    assert_eq!(post(&a, "/v1/updates", death).await.0, StatusCode::CREATED);
    let (_, v) = call(
        &a,
        test::TestRequest::get().uri(&format!("/v1/transfers/{id3}")),
    )
    .await;
    assert_eq!(v["state"], "cancelled", "{v}");
    assert!(v["note"].as_str().unwrap().contains("死亡"), "{v}");
    deliver(&a, &b);
    let (s, e) = post(&b, "/v1/move-ins", move_in(&stays)).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (StatusCode::CONFLICT, Some("transfer_cancelled")),
        "{e}"
    );
}

/// One move is traceable: the move-out information carries the move-out request's trace; the
/// 転入 at B, the move-in notice and A's confirmed 転出 carry the move-in request's trace; an
/// issuance answer carries the request's trace.
async fn traces_follow_the_messages(backend: Backend) {
    let (Some(db_a), Some(db_b)) = (TestDb::new(backend), TestDb::new(backend)) else {
        return;
    };
    let a = cs(&db_a, A, NOON, false, None);
    let b = cs(&db_b, B, NOON, false, None);
    let who = code(9_100_001);
    post(&a, "/v1/updates", resident(&who, "転入")).await;
    let t1 = "4bf92f3577b34da6a3ce929d0e0e4736";
    let t2 = "0af7651916cd43dd8448eb211c80319c";
    let t3 = "a3ce929d0e0e47364bf92f3577b34da6";
    let header = |t: &str| ("traceparent", format!("00-{t}-00f067aa0ba902b7-01"));
    let last_envelope = |state: &AppState| -> Value {
        let p: String = outbox::table
            .order(outbox::seq.desc())
            .select(outbox::payload)
            .first(&mut conn(state))
            .unwrap();
        serde_json::from_str(&p).unwrap()
    };
    let (s, t) = call(
        &a,
        test::TestRequest::post()
            .uri("/v1/transfers")
            .insert_header(header(t1))
            .set_json(json!({"resident_code": who, "destination_municipality": B,
                "planned_date": "2024-06-03", "planned_address": "大阪", "pin": "1234"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let info = last_envelope(&a);
    assert!(info["traceparent"].as_str().unwrap().contains(t1), "{info}");
    assert_eq!(info["traceparent"], info["message"]["traceparent"]);
    deliver(&a, &b);
    let (s, _) = call(
        &b,
        test::TestRequest::post()
            .uri("/v1/move-ins")
            .insert_header(header(t2))
            .set_json(json!({"resident_code": who, "pin": "1234", "move_date": "2024-06-03"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(
        last_envelope(&b)["traceparent"]
            .as_str()
            .unwrap()
            .contains(t2)
    );
    deliver(&b, &a);
    let traces = |state: &AppState| -> Vec<(String, Option<String>)> {
        change_history::table
            .order(change_history::id.asc())
            .select((change_history::reason, change_history::trace_id))
            .load(&mut conn(state))
            .unwrap()
    };
    assert_eq!(traces(&b), [("move_in".to_owned(), Some(t2.to_owned()))]);
    assert_eq!(
        traces(&a).last().unwrap(),
        &("move_out".to_owned(), Some(t2.to_owned()))
    );

    // Issuance: A (issuing) asks B (now the home) in trace t3.
    let (s, _) = call(
        &a,
        test::TestRequest::post()
            .uri("/v1/issuances?wait=0")
            .insert_header(header(t3))
            .insert_header(("Idempotency-Key", "traced"))
            .set_json(json!({"resident_code": who, "home_municipality": B})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    deliver(&a, &b);
    let answer = last_envelope(&b);
    assert_eq!(answer["message"]["kind"], "issuance_answer");
    assert!(
        answer["traceparent"].as_str().unwrap().contains(t3),
        "{answer}"
    );
}

/// A prefecture's mailbox: the child's `after` acknowledges, and delivered messages are
/// deleted once older than the retention (seven days).
async fn delivered_messages_expire(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let mut pref = cs(&db, A, NOON, false, None);
    pref.identity = NodeIdentity {
        role: juki_node::domain::identity::Role::Prefecture,
        prefecture: Some(13),
        municipality: None,
    };
    let message = |seq: i64| {
        json!({"seq": seq, "payload": {"sender": "cs-131024", "seq": seq,
        "message": {"message_id": format!("issuance_request:131024-I{seq}"),
            "kind": "issuance_request", "from": "131024", "to": A,
            "body": {"issuance_id": format!("131024-I{seq}"), "resident_code": code(1)}}}})
    };
    let relay = json!({"sender": "cs-131024", "items": [message(1), message(2)]});
    let (s, _) = call(
        &pref,
        test::TestRequest::post().uri("/v1/relay").set_json(&relay),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let fetch = |state: &AppState, after: i64| {
        let state = state.clone();
        async move {
            call(
                &state,
                test::TestRequest::get()
                    .uri(&format!("/v1/mailbox?recipient=cs-{A}&after={after}")),
            )
            .await
        }
    };
    let (s, v) = fetch(&pref, 0).await;
    assert_eq!(
        (s, v["messages"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(2)),
        "{v}"
    );
    let (_, v) = fetch(&pref, 1).await;
    assert_eq!(v["messages"][0]["id"], 2, "after acknowledges: {v}");
    let rows = |state: &AppState| -> i64 {
        juki_node::store::schema::mailbox::table
            .count()
            .get_result(&mut conn(state))
            .unwrap()
    };
    assert_eq!(rows(&pref), 2, "kept for now");
    let later = at(&pref, "2024-06-11T03:00:00Z");
    let (_, v) = fetch(&later, 2).await;
    assert_eq!(v["messages"], json!([]));
    assert_eq!(
        rows(&later),
        1,
        "the first, delivered eight days ago, is deleted"
    );
    let (s, v) = call(&later, test::TestRequest::get().uri("/admin/v1/relay")).await;
    assert_eq!(
        (s, &v["mailbox"]["undelivered"]),
        (StatusCode::OK, &json!(0))
    );
}

/// The downward delivery only runs while the upstream is in its online window: a CS whose
/// clock is on a Sunday does not fetch its message from the (real, listening) prefecture; on
/// Monday at noon it fetches it, answers it, and acknowledges it with its next poll.
async fn fetch_waits_for_the_upstream_window(backend: Backend) {
    let (Some(db_pref), Some(db_cs)) = (TestDb::new(backend), TestDb::new(backend)) else {
        return;
    };
    let mut pref = cs(&db_pref, A, NOON, false, None);
    pref.identity = NodeIdentity {
        role: juki_node::domain::identity::Role::Prefecture,
        prefecture: Some(13),
        municipality: None,
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let data = web::Data::new(pref.clone());
    let server = actix_web::HttpServer::new(move || {
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
    // A request from CS 131024 for a resident of 131016, relayed to the prefecture.
    let relay = json!({"sender": "cs-131024", "items": [{"seq": 1, "payload": {
        "sender": "cs-131024", "seq": 1, "message": {
            "message_id": "issuance_request:131024-I1", "kind": "issuance_request",
            "from": "131024", "to": A,
            "body": {"issuance_id": "131024-I1", "resident_code": code(8_000_001)}}}}]});
    let (s, ack) = call(
        &pref,
        test::TestRequest::post().uri("/v1/relay").set_json(&relay),
    )
    .await;
    assert_eq!(
        (s, ack["applied"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{ack}"
    );
    let undelivered = || {
        juki_node::store::schema::mailbox::table
            .filter(juki_node::store::schema::mailbox::delivered_at.is_null())
            .count()
            .get_result::<i64>(&mut conn(&pref))
            .unwrap()
    };
    assert_eq!(undelivered(), 1);

    let with_upstream = |state: AppState| {
        let mut state = state;
        state.relay = Arc::new(RelayControl::new(
            Some(url.clone()),
            Some(Calendar::new(&CalendarConfig::default()).unwrap()),
            RelaySettings::default(),
        ));
        state
    };
    // Sunday 2024-06-02, noon in Tokyo: the prefecture is offline by the calendar.
    let sunday = with_upstream(cs(&db_cs, A, "2024-06-02T03:00:00Z", false, None));
    let task = actix_web::rt::spawn(pull::run(
        sunday.node.clone(),
        sunday.relay.clone(),
        sunday.wide.clone(),
        20,
    ));
    actix_web::rt::time::sleep(std::time::Duration::from_millis(1500)).await;
    task.abort();
    assert_eq!(
        snapshot(&mut conn(&sunday))[4],
        0,
        "nothing fetched on Sunday"
    );
    assert_eq!(mailbox::cursor(&mut conn(&sunday)).unwrap(), 0);

    let monday = at(&sunday, NOON);
    let task = actix_web::rt::spawn(pull::run(
        monday.node.clone(),
        monday.relay.clone(),
        monday.wide.clone(),
        20,
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while undelivered() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "not fetched and acknowledged"
        );
        actix_web::rt::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    task.abort();
    let (s, v) = call(
        &monday,
        test::TestRequest::get().uri("/v1/issuances/131024-I1"),
    )
    .await;
    assert_eq!(
        (s, v["side"].as_str(), v["answer"]["error"].as_str()),
        (StatusCode::OK, Some("home"), Some("unknown_resident")),
        "{v}"
    );
    assert_eq!(mailbox::cursor(&mut conn(&monday)).unwrap(), 1);
    handle.stop(false).await;
}

common::on_both_backends!(
    move_in_date_rules,
    move_out_refusals,
    issuance_hours_at_both_ends,
    fetch_waits_for_the_upstream_window,
    cancellation,
    traces_follow_the_messages,
    delivered_messages_expire,
);
