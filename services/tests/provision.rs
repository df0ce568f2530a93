//! Provision to agencies (本人確認情報の提供) and disclosure (開示), in-process with the node's
//! real middleware (identities by the x-juki-identity header of an open node; the same rules
//! over real mutual TLS are in tests/authz.rs), on SQLite and on PostgreSQL.

mod common;

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{test, web};
use common::{Backend, TestDb};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use juki_node::domain::clock::FixedClock;
use juki_node::domain::identity::{NodeIdentity, Role};
use juki_node::http::routes::AppState;
use juki_node::provision::AllowList;
use juki_node::store::models::ResidentRow;
use juki_node::store::schema::{change_history, provision_log, residents};
use serde_json::{Value, json};

const TARO: &str = "12345678903";
const HANAKO: &str = "98765432103";
const JIRO: &str = "11111111113";
const SABURO: &str = "22222222226";

const ALLOW: &str = r#"{"allow": [
    {"agency": "nenkin", "affair": "pension-benefit", "items": ["name", "birth_date", "address", "change"]},
    {"agency": "passport", "affair": "passport-issue", "items": ["resident_code", "name", "name_kana", "sex", "status"]}
]}"#;

fn resident(code: &str, municipality: &str, name: &str, status: &str) -> ResidentRow {
    ResidentRow {
        resident_code: code.into(),
        individual_number: None,
        name: name.into(),
        name_kana: "ヤマダ タロウ".into(),
        former_surname: None,
        alias: None,
        birth_date: "1990-04-01".into(),
        sex: "male".into(),
        address: format!("{municipality} 1-1"),
        municipality_code: municipality.into(),
        status: status.into(),
        updated_at: common::NOW.into(),
        permanent_domicile: Some("東京都千代田区千代田1番".into()),
        domicile_head: Some("山田 一郎".into()),
    }
}

/// A migrated node of `role` holding four residents (two of Tokyo, one of Sapporo, one of
/// Tokyo who moved out) with a history row each.
fn node(db: &TestDb, identity: NodeIdentity) -> AppState {
    let mut state = db.state();
    state.identity = identity;
    state.clock = Arc::new(FixedClock(common::NOW.parse().unwrap()));
    state.allow = Arc::new(AllowList::parse(ALLOW).unwrap());
    let mut conn = state.db.pool.get().unwrap();
    let rows = [
        resident(TARO, "131016", "山田 太郎", "active"),
        resident(HANAKO, "011002", "佐藤 花子", "active"),
        resident(JIRO, "131016", "山田 太郎", "active"),
        resident(SABURO, "131024", "鈴木 三郎", "moved_out"),
    ];
    for (i, row) in rows.iter().enumerate() {
        diesel::insert_into(residents::table)
            .values(row)
            .execute(&mut conn)
            .unwrap();
        diesel::insert_into(change_history::table)
            .values((
                change_history::id.eq(i as i64 + 1),
                change_history::resident_code.eq(&row.resident_code),
                change_history::reason.eq("move_in"),
                change_history::change_date.eq("2024-05-01"),
                change_history::municipality_code.eq(&row.municipality_code),
                change_history::payload.eq("{}"),
                change_history::recorded_at.eq(common::NOW),
                change_history::source_sender.eq(format!("cs-{}", row.municipality_code)),
                change_history::source_seq.eq(i as i64 + 1),
            ))
            .execute(&mut conn)
            .unwrap();
    }
    // JIRO shares TARO's four items except the address.
    diesel::update(residents::table.find(JIRO))
        .set(residents::address.eq("131016 2-2"))
        .execute(&mut conn)
        .unwrap();
    state
}

fn national() -> NodeIdentity {
    NodeIdentity {
        role: Role::National,
        prefecture: None,
        municipality: None,
    }
}

fn tokyo() -> NodeIdentity {
    NodeIdentity {
        role: Role::Prefecture,
        prefecture: Some(13),
        municipality: None,
    }
}

macro_rules! setup {
    ($backend:expr, $identity:expr) => {{
        let Some(db) = TestDb::new($backend) else {
            return;
        };
        let state = node(&db, $identity);
        let app =
            test::init_service(juki_node::http::server::app(web::Data::new(state.clone()))).await;
        (db, state, app)
    }};
}

/// POSTs `body` to `uri` as `identity` (None: no identity); returns (status, JSON).
macro_rules! post_as {
    ($app:expr, $uri:expr, $identity:expr, $body:expr) => {{
        let mut req = test::TestRequest::post().uri($uri).set_json(&$body);
        if let Some(id) = $identity {
            req = req.insert_header(("x-juki-identity", id));
        }
        let resp = test::call_service(&$app, req.to_request()).await;
        let status = resp.status();
        let bytes = test::read_body(resp).await;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, body)
    }};
}

fn by_code(affair: &str, code: &str) -> Value {
    json!({"affair": affair, "reason": "現況確認", "by": {"resident_code": code}})
}

fn by_four(affair: &str, address: &str) -> Value {
    json!({"affair": affair, "reason": "現況確認", "by": {
        "name": "山田 太郎", "birth_date": "1990-04-01", "sex": "男", "address": address}})
}

type LogRow = (String, String, Option<String>, String, String, String);

/// The provision log: (recipient, affair, resident, items, outcome, detail), in id order.
fn log(state: &AppState) -> Vec<LogRow> {
    provision_log::table
        .order(provision_log::id)
        .select((
            provision_log::recipient,
            provision_log::affair,
            provision_log::resident_code,
            provision_log::items,
            provision_log::outcome,
            provision_log::detail,
        ))
        .load(&mut state.db.pool.get().unwrap())
        .unwrap()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort_unstable();
    k
}

async fn an_agency_gets_only_the_items_of_its_affair_and_every_query_is_logged(backend: Backend) {
    let (_db, state, app) = setup!(backend, national());
    let nenkin = Some("agency-nenkin");

    let (status, body) = post_as!(
        app,
        "/v1/agency/queries",
        nenkin,
        by_code("pension-benefit", TARO)
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        keys(&body["record"]),
        ["address", "birth_date", "change", "name"]
    );
    assert_eq!(body["record"]["name"], json!("山田 太郎"));
    assert_eq!(
        body["record"]["change"],
        json!({"reason": "転入", "date": "2024-05-01"})
    );
    let first_id = body["provision_id"].as_str().unwrap().to_owned();

    // Another affair of another agency: other items; 本籍 and the individual number never.
    let (status, body) = post_as!(
        app,
        "/v1/agency/queries",
        Some("agency-passport"),
        by_code("passport-issue", TARO)
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        keys(&body["record"]),
        ["name", "name_kana", "resident_code", "sex", "status"]
    );
    assert!(!body.to_string().contains("千代田1番"), "{body}");

    // By the four items: exactly one match.
    let (status, body) = post_as!(
        app,
        "/v1/agency/queries",
        nenkin,
        by_four("pension-benefit", "131016 2-2")
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["record"]["address"], json!("131016 2-2"));

    // Not found, an affair not on the allow-list, an agency asking for another's affair.
    let (status, body) = post_as!(
        app,
        "/v1/agency/queries",
        nenkin,
        by_code("pension-benefit", "33333333339")
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found")),
        "{body}"
    );
    let (status, body) = post_as!(app, "/v1/agency/queries", nenkin, by_code("tax", TARO));
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("affair_not_allowed")),
        "{body}"
    );
    let (status, _) = post_as!(
        app,
        "/v1/agency/queries",
        nenkin,
        by_code("passport-issue", TARO)
    );
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Not an agency (refused by the tree rules), no identity at all: refused and logged too.
    let (status, body) = post_as!(
        app,
        "/v1/agency/queries",
        Some("muni-131016"),
        by_code("pension-benefit", TARO)
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("forbidden")),
        "{body}"
    );
    let (status, body) = post_as!(
        app,
        "/v1/agency/queries",
        None::<&str>,
        by_code("pension-benefit", TARO)
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthenticated")),
        "{body}"
    );

    // Probes answer whatever identity a caller claims.
    let probe = test::TestRequest::get()
        .uri("/healthz")
        .insert_header(("x-juki-identity", "nobody-at-all"))
        .to_request();
    assert_eq!(
        test::call_service(&app, probe).await.status(),
        StatusCode::OK
    );

    // A malformed query is a 4xx naming the field and writes nothing.
    let (status, body) = post_as!(
        app,
        "/v1/agency/queries",
        nenkin,
        json!({"affair": "pension-benefit", "by": {"resident_code": TARO}})
    );
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("reason")),
        "{body}"
    );

    let rows = log(&state);
    let summary: Vec<(&str, &str, Option<&str>, &str, &str)> = rows
        .iter()
        .map(|r| {
            (
                r.0.as_str(),
                r.1.as_str(),
                r.2.as_deref(),
                r.4.as_str(),
                r.5.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("nenkin", "pension-benefit", Some(TARO), "provided", ""),
            ("passport", "passport-issue", Some(TARO), "provided", ""),
            ("nenkin", "pension-benefit", Some(JIRO), "provided", ""),
            (
                "nenkin",
                "pension-benefit",
                Some("33333333339"),
                "not_found",
                ""
            ),
            ("nenkin", "tax", Some(TARO), "refused", "affair_not_allowed"),
            (
                "nenkin",
                "passport-issue",
                Some(TARO),
                "refused",
                "affair_not_allowed"
            ),
            ("muni-131016", "", None, "refused", "forbidden"),
            ("anonymous", "", None, "refused", "unauthenticated"),
        ]
    );
    assert_eq!(rows[0].3, r#"["name","birth_date","address","change"]"#);
    let ids: Vec<String> = provision_log::table
        .order(provision_log::id)
        .select(provision_log::id)
        .load(&mut state.db.pool.get().unwrap())
        .unwrap();
    assert_eq!(ids[0], first_id);
    let metrics = state.metrics.render();
    assert!(
        metrics.contains("juki_node_provisions_total{outcome=\"provided\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "juki_node_auth_refusals_total{route=\"/v1/agency/queries\",status=\"403\"} 1"
        ),
        "{metrics}"
    );
}

async fn four_items_matching_two_residents_are_refused_as_ambiguous(backend: Backend) {
    let (_db, state, app) = setup!(backend, national());
    // JIRO moves to TARO's address: the four items now name both.
    diesel::update(residents::table.find(JIRO))
        .set(residents::address.eq("131016 1-1"))
        .execute(&mut state.db.pool.get().unwrap())
        .unwrap();
    let (status, body) = post_as!(
        app,
        "/v1/agency/queries",
        Some("agency-nenkin"),
        by_four("pension-benefit", "131016 1-1")
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::CONFLICT, Some("ambiguous_match")),
        "{body}"
    );
    assert!(
        !body.to_string().contains(TARO),
        "an ambiguous answer names no one: {body}"
    );
    let rows = log(&state);
    assert_eq!(
        (rows.len(), rows[0].4.as_str(), rows[0].5.as_str()),
        (1, "refused", "ambiguous_match")
    );
}

async fn a_prefecture_answers_only_for_its_own_residents(backend: Backend) {
    let (_db, _state, app) = setup!(backend, tokyo());
    let nenkin = Some("agency-nenkin");
    let (status, body) = post_as!(
        app,
        "/v1/agency/queries",
        nenkin,
        by_code("pension-benefit", TARO)
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    // Sapporo's resident is not Tokyo's; a resident who moved out is no longer Tokyo's.
    for code in [HANAKO, SABURO] {
        let (status, body) = post_as!(
            app,
            "/v1/agency/queries",
            nenkin,
            by_code("pension-benefit", code)
        );
        assert_eq!(status, StatusCode::NOT_FOUND, "{code}: {body}");
    }
    // Disclosure at Tokyo's server: asked at a Tokyo municipality only.
    let (status, _) = post_as!(
        app,
        "/v1/disclosures",
        Some("muni-131016"),
        json!({"resident_code": TARO})
    );
    assert_eq!(status, StatusCode::OK);
    let (status, body) = post_as!(
        app,
        "/v1/disclosures",
        Some("muni-011002"),
        json!({"resident_code": TARO})
    );
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

/// The desk answers the queries waiting together in one batch (one lookup for all the codes):
/// each still gets its own answer and its own log row, in order.
async fn a_batch_of_queries_gets_each_its_own_answer_and_log_row(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let state = node(&db, national());
    let asked = |agency: &str, query: Value| juki_node::provision::Asked {
        agency: agency.to_owned(),
        query: juki_node::provision::parse_query(&query).unwrap(),
        at: common::NOW.parse().unwrap(),
    };
    let unknown = "33333333339";
    let batch = [
        asked("nenkin", by_code("pension-benefit", TARO)),
        asked("passport", by_code("passport-issue", HANAKO)),
        asked("nenkin", by_code("pension-benefit", unknown)),
        asked("passport", by_code("pension-benefit", TARO)),
        asked("nenkin", by_four("pension-benefit", "131016 1-1")),
        asked("passport", by_code("passport-issue", TARO)),
    ];
    let mut conn = state.db.pool.get().unwrap();
    let answers =
        juki_node::provision::query_batch(&mut conn, &state.identity, &state.allow, &batch)
            .unwrap();
    let summary: Vec<(Option<String>, &str, Option<String>, &str)> = answers
        .iter()
        .map(|(answer, row)| {
            let got = answer.as_ref().ok().map(|a| {
                let record = &a["record"];
                record["name"].as_str().unwrap_or("?").to_owned()
            });
            (
                got,
                row.outcome.as_str(),
                row.resident_code.clone(),
                row.recipient.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                Some("山田 太郎".into()),
                "provided",
                Some(TARO.into()),
                "nenkin"
            ),
            (
                Some("佐藤 花子".into()),
                "provided",
                Some(HANAKO.into()),
                "passport"
            ),
            (None, "not_found", Some(unknown.into()), "nenkin"),
            (None, "refused", Some(TARO.into()), "passport"),
            (
                Some("山田 太郎".into()),
                "provided",
                Some(TARO.into()),
                "nenkin"
            ),
            (
                Some("山田 太郎".into()),
                "provided",
                Some(TARO.into()),
                "passport"
            ),
        ]
    );
    // Only the allowed items, per affair; each answer names its own log row.
    let (first, first_row) = &answers[0];
    let first = first.as_ref().unwrap();
    assert_eq!(
        keys(&first["record"]),
        ["address", "birth_date", "change", "name"]
    );
    assert_eq!(first["provision_id"], json!(first_row.id));
    let (last, _) = &answers[5];
    assert_eq!(
        keys(&last.as_ref().unwrap()["record"]),
        ["name", "name_kana", "resident_code", "sex", "status"]
    );
    let ids: std::collections::HashSet<&str> =
        answers.iter().map(|(_, row)| row.id.as_str()).collect();
    assert_eq!(ids.len(), batch.len(), "every query has its own log id");
    // Answered here, committed by the desk: nothing is in the log yet.
    assert!(log(&state).is_empty());
}

async fn a_cs_answers_no_agency(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let mut state = db.state();
    state.allow = Arc::new(AllowList::parse(ALLOW).unwrap());
    let app = test::init_service(juki_node::http::server::app(web::Data::new(state.clone()))).await;
    let (status, body) = post_as!(
        app,
        "/v1/agency/queries",
        Some("agency-nenkin"),
        by_code("pension-benefit", TARO)
    );
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, body) = post_as!(
        app,
        "/v1/agency/queries",
        None::<&str>,
        by_code("pension-benefit", TARO)
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("wrong_role")),
        "{body}"
    );
}

async fn a_disclosure_lists_the_provisions_about_the_resident_only(backend: Backend) {
    let (_db, state, app) = setup!(backend, national());
    let nenkin = Some("agency-nenkin");
    for code in [TARO, TARO, HANAKO] {
        let (status, _) = post_as!(
            app,
            "/v1/agency/queries",
            nenkin,
            by_code("pension-benefit", code)
        );
        assert_eq!(status, StatusCode::OK);
    }
    let (status, body) = post_as!(
        app,
        "/v1/disclosures",
        Some("muni-131016"),
        json!({"resident_code": TARO})
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["record"]["resident_code"], json!(TARO));
    assert!(
        !body.to_string().contains("千代田1番"),
        "本籍 is never disclosed here: {body}"
    );
    let provisions = body["provisions"].as_array().unwrap();
    assert_eq!(provisions.len(), 2, "{body}");
    assert!(provisions.iter().all(|p| p["recipient"] == json!("nenkin")
        && p["items"] == json!(["name", "birth_date", "address", "change"])));
    // The disclosure itself is logged, and shows up in the next one.
    let rows = log(&state);
    assert_eq!(rows.last().unwrap().4, "disclosed");
    let (_, again) = post_as!(
        app,
        "/v1/disclosures",
        Some("muni-131016"),
        json!({"resident_code": TARO})
    );
    assert_eq!(again["provisions"].as_array().unwrap().len(), 3);
    // Only the resident's own municipality asks (issue 18, case 14): another municipality's
    // counter is refused with a 403, and the refusal is in the provision log.
    let before = log(&state).len();
    let (status, body) = post_as!(
        app,
        "/v1/disclosures",
        Some("muni-011002"),
        json!({"resident_code": TARO})
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("not_own_resident")),
        "{body}"
    );
    assert!(!body.to_string().contains("山田"), "{body}");
    let rows = log(&state);
    assert_eq!(rows.len(), before + 1);
    assert_eq!(
        (
            rows.last().unwrap().0.as_str(),
            rows.last().unwrap().4.as_str(),
            rows.last().unwrap().5.as_str()
        ),
        ("resident via muni-011002", "refused", "not_own_resident")
    );
    // Only a municipality asks; bad input names the field and writes nothing.
    let before = log(&state).len();
    let (status, _) = post_as!(
        app,
        "/v1/disclosures",
        Some("agency-nenkin"),
        json!({"resident_code": TARO})
    );
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = post_as!(
        app,
        "/v1/disclosures",
        Some("muni-131016"),
        json!({"resident_code": "12345678900"})
    );
    assert_eq!(
        (status, body["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("resident_code")),
        "{body}"
    );
    let (status, _) = post_as!(
        app,
        "/v1/disclosures",
        Some("muni-131016"),
        json!({"resident_code": TARO, "x": 1})
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(log(&state).len(), before);
}

async fn the_provision_log_is_append_only(backend: Backend) {
    let (_db, state, app) = setup!(backend, national());
    let (status, _) = post_as!(
        app,
        "/v1/agency/queries",
        Some("agency-nenkin"),
        by_code("pension-benefit", TARO)
    );
    assert_eq!(status, StatusCode::OK);
    let before = log(&state);
    let mut conn = state.db.pool.get().unwrap();
    let update = diesel::update(provision_log::table)
        .set(provision_log::outcome.eq("nothing"))
        .execute(&mut conn);
    assert!(update.is_err(), "UPDATE must be refused");
    let delete = diesel::delete(provision_log::table).execute(&mut conn);
    assert!(delete.is_err(), "DELETE must be refused");
    if backend == Backend::Postgres {
        assert!(
            conn.batch_execute("TRUNCATE provision_log").is_err(),
            "TRUNCATE must be refused"
        );
    }
    // Migrating again (a restart) keeps the guard and the rows.
    juki_node::store::db::run_migrations(&mut conn).unwrap();
    assert!(
        diesel::delete(provision_log::table)
            .execute(&mut conn)
            .is_err()
    );
    drop(conn);
    assert_eq!(log(&state), before);
}

common::on_both_backends!(
    an_agency_gets_only_the_items_of_its_affair_and_every_query_is_logged,
    a_batch_of_queries_gets_each_its_own_answer_and_log_row,
    four_items_matching_two_residents_are_refused_as_ambiguous,
    a_prefecture_answers_only_for_its_own_residents,
    a_cs_answers_no_agency,
    a_disclosure_lists_the_provisions_about_the_resident_only,
    the_provision_log_is_append_only,
);
