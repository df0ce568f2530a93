//! Hostile input against the wide-area JSON endpoints (`POST /v1/transfers`, `POST
//! /v1/move-ins`, `POST /v1/issuances`, `POST /v1/transfers/{id}/cancel`, `GET /v1/transfers/{id}`, `GET /v1/issuances/{id}`,
//! `GET /v1/mailbox`, and messages relayed through `POST /v1/relay`), generated with proptest: invalid JSON, non-objects, missing fields,
//! wrong types, malformed codes, dates and PINs, overlong and control-character text, deep
//! nesting, hostile ids and query strings. Every answer must be a 4xx with the JSON error body
//! (naming the field where there is one), never a panic or a 5xx, and the database must be
//! unchanged. The same for the provision endpoints (`POST /v1/agency/queries`, `POST
//! /v1/disclosures`) of a national server behind its real middleware, as an agency and as a
//! municipality: no provision-log row for a malformed request. The number of inputs tried is
//! printed (`-- --nocapture`).

mod common;

use actix_web::{App, test, web};
use common::{Backend, TestDb};
use diesel::prelude::*;
use juki_node::domain::identity::{NodeIdentity, Role};
use juki_node::http::routes;
use juki_node::store::db::DbConnection;
use juki_node::store::schema::{
    inbox, issuance_log, issuances, mailbox, outbox, provision_log, residents, transfers,
};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value, json};

const OWN: &str = "131016";
/// Inputs per endpoint and backend.
const CASES: usize = 1000;

fn snapshot(c: &mut DbConnection) -> Vec<i64> {
    vec![
        residents::table.count().get_result(c).unwrap(),
        outbox::table.count().get_result(c).unwrap(),
        transfers::table.count().get_result(c).unwrap(),
        issuances::table.count().get_result(c).unwrap(),
        issuance_log::table.count().get_result(c).unwrap(),
        mailbox::table.count().get_result(c).unwrap(),
        inbox::table.count().get_result(c).unwrap(),
        provision_log::table.count().get_result(c).unwrap(),
    ]
}

/// A string that is not a valid code of `len` digits (wrong length or not digits).
fn bad_code(len: usize) -> BoxedStrategy<String> {
    prop_oneof![
        proptest::string::string_regex(&format!("[0-9]{{0,{}}}", len - 1)).unwrap(),
        proptest::string::string_regex(&format!("[0-9]{{{},40}}", len + 1)).unwrap(),
        proptest::string::string_regex(&format!("[0-9]{{{}}}[a-zA-Z ';-]", len - 1)).unwrap(),
        Just("' OR 1=1 --".to_owned()),
        Just("１３１０１６".to_owned()),
    ]
    .boxed()
}

fn bad_date() -> BoxedStrategy<String> {
    prop_oneof![
        proptest::string::string_regex("[0-9]{4}/[0-9]{2}/[0-9]{2}").unwrap(),
        proptest::string::string_regex("[0-9]{4}-(1[3-9]|00)-[0-9]{2}").unwrap(),
        proptest::string::string_regex("20[0-9]{2}-02-3[01]").unwrap(),
        proptest::string::string_regex(".{0,12}")
            .unwrap()
            .prop_filter("not a date", |s| s.len() != 10),
        Just("2024-06-03T00:00:00Z".to_owned()),
    ]
    .boxed()
}

fn bad_text() -> BoxedStrategy<String> {
    prop_oneof![
        Just(String::new()),
        Just("   ".to_owned()),
        proptest::string::string_regex("[a-zあ-ん]{257,400}").unwrap(),
        proptest::string::string_regex("[a-z]{1,5}[\u{0}-\u{1f}\u{7f}][a-z]{1,5}").unwrap(),
    ]
    .boxed()
}

fn bad_pin() -> BoxedStrategy<String> {
    prop_oneof![
        proptest::string::string_regex("[0-9]{0,3}").unwrap(),
        proptest::string::string_regex("[0-9]{5,12}").unwrap(),
        proptest::string::string_regex("[0-9]{3}[^0-9]").unwrap(),
    ]
    .boxed()
}

/// Any JSON value that is not a string (null counts as missing).
fn not_a_string() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::vec(("[a-z_]{1,8}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
    .boxed()
}

/// A route, a valid body and its fields with the kind of value each takes.
type Endpoint = (&'static str, Value, Vec<(&'static str, Kind)>);

#[derive(Debug, Clone, Copy)]
enum Kind {
    Code(usize),
    Date,
    Text,
    Pin,
}

/// One hostile body built from a valid one: a whole-body attack or one field broken (a field
/// `a.b` is `b` inside the object `a`).
fn hostile(valid: Value, fields: Vec<(&'static str, Kind)>) -> BoxedStrategy<Vec<u8>> {
    let raw = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        "[\\[\\]{}\",:0-9a-z ]{0,60}".prop_map(String::into_bytes),
        not_a_string().prop_map(|v| v.to_string().into_bytes()),
        (1usize..400).prop_map(|n| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes()),
        (1usize..200)
            .prop_map(|n| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n)).into_bytes()),
        Just(b"{\"resident_code\": \"1234".to_vec()),
    ];
    let obj = valid.as_object().cloned().unwrap_or_default();
    let n = fields.len();
    let valid_text = valid.to_string();
    let truncated = (1..valid_text.len()).prop_map(move |i| valid_text.as_bytes()[..i].to_vec());
    let broken = (
        0..n,
        0..4u8,
        not_a_string(),
        bad_code(11),
        bad_date(),
        bad_text(),
        bad_pin(),
    )
        .prop_map(move |(i, how, other, code, date, text, pin)| {
            let (path, kind) = fields[i];
            let mut top = obj.clone();
            let (o, field) = match path.split_once('.') {
                Some((outer, inner)) => (
                    top.get_mut(outer)
                        .and_then(Value::as_object_mut)
                        .expect("a nested field's object"),
                    inner,
                ),
                None => (&mut top, path),
            };
            match how {
                0 => {
                    o.remove(field);
                }
                1 => {
                    o.insert(field.into(), other);
                }
                _ => {
                    let bad = match kind {
                        Kind::Code(11) => code,
                        Kind::Code(len) => code.chars().take(len.saturating_sub(1)).collect(),
                        Kind::Date => date,
                        Kind::Text => text,
                        Kind::Pin => pin,
                    };
                    o.insert(field.into(), Value::from(bad));
                }
            }
            // A few extra keys never make an invalid body valid.
            top.insert("__proto__".into(), json!({"admin": true}));
            Value::Object(top).to_string().into_bytes()
        });
    prop_oneof![1 => raw, 1 => truncated, 3 => broken].boxed()
}

async fn fuzz(backend: Backend) {
    let (Some(cs_db), Some(pref_db)) = (TestDb::new(backend), TestDb::new(backend)) else {
        return;
    };
    let cs = cs_db.state();
    let pref = {
        let mut s = pref_db.state();
        s.identity = NodeIdentity {
            role: Role::Prefecture,
            prefecture: Some(13),
            municipality: None,
        };
        s
    };
    let app_cs = test::init_service(
        App::new()
            .app_data(web::Data::new(cs.clone()))
            .configure(routes::configure),
    )
    .await;
    let app_pref = test::init_service(
        App::new()
            .app_data(web::Data::new(pref.clone()))
            .configure(routes::configure),
    )
    .await;
    // One resident, so the valid bodies name someone real.
    let taro = "12345678903";
    let seed = json!({"resident_code": taro, "name": "山田 太郎", "name_kana": "ヤマダ タロウ",
        "birth_date": "1990-04-01", "sex": "男", "address": "千代田1-1", "municipality_code": OWN,
        "reason": "転入", "change_date": "2024-06-01"});
    let r = test::call_service(
        &app_cs,
        test::TestRequest::post()
            .uri("/v1/updates")
            .insert_header(("Idempotency-Key", "seed"))
            .set_json(&seed)
            .to_request(),
    )
    .await;
    assert_eq!(r.status(), 201);
    let before_cs = snapshot(&mut cs.db.pool.get().unwrap());
    let before_pref = snapshot(&mut pref.db.pool.get().unwrap());

    let endpoints: Vec<Endpoint> = vec![
        (
            "/v1/transfers",
            json!({"resident_code": taro, "destination_municipality": "271004",
                   "planned_date": "2024-06-10", "planned_address": "大阪市1-1", "pin": "1234"}),
            vec![
                ("resident_code", Kind::Code(11)),
                ("destination_municipality", Kind::Code(6)),
                ("planned_date", Kind::Date),
                ("planned_address", Kind::Text),
                ("pin", Kind::Pin),
            ],
        ),
        (
            "/v1/move-ins",
            json!({"resident_code": taro, "pin": "1234", "move_date": "2024-06-01", "address": "x"}),
            vec![
                ("resident_code", Kind::Code(11)),
                ("pin", Kind::Pin),
                ("move_date", Kind::Date),
                ("address", Kind::Text),
            ],
        ),
        (
            "/v1/issuances?wait=0",
            // Home = this CS: a body that parses is still refused (own_municipality) before
            // anything is written; the fields before it are checked first.
            json!({"resident_code": taro, "home_municipality": OWN, "requested_by": "窓口"}),
            vec![
                ("resident_code", Kind::Code(11)),
                ("home_municipality", Kind::Code(6)),
                ("requested_by", Kind::Text),
            ],
        ),
    ];
    let mut runner = TestRunner::new(Config {
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        ..Config::default()
    });
    let mut tried = 0usize;
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for (uri, valid, fields) in endpoints {
        let strategy = hostile(valid, fields);
        for _ in 0..CASES {
            let body = strategy.new_tree(&mut runner).unwrap().current();
            let resp = test::call_service(
                &app_cs,
                test::TestRequest::post()
                    .uri(uri)
                    .insert_header(("content-type", "application/json"))
                    .insert_header(("Idempotency-Key", "fuzz"))
                    .set_payload(body.clone())
                    .to_request(),
            )
            .await;
            let status = resp.status().as_u16();
            let bytes = test::read_body(resp).await;
            let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            assert!(
                (400..500).contains(&status),
                "{uri} {status} {json} for {:?}",
                String::from_utf8_lossy(&body)
            );
            assert!(
                json["error"].is_string() && json["message"].is_string(),
                "{json}"
            );
            *by_status.entry(status).or_default() += 1;
            tried += 1;
        }
    }
    // Hostile messages relayed to a prefecture: each breaks the message (id, kind, codes) or
    // the envelope (both an update and a message, or neither).
    let valid_message = json!({"message_id": "move_out_info:131016-T1", "kind": "move_out_info",
        "from": OWN, "to": "271004", "body": {}});
    let broken_message = (
        0..6u8,
        not_a_string(),
        bad_code(6),
        "[a-z_]{1,20}",
        129usize..300,
    )
        .prop_map(move |(how, other, code, kind, long)| {
            let mut m = valid_message.clone();
            let mut envelope = json!({"sender": "cs-131016", "seq": 1});
            match how {
                0 => {
                    m["message_id"] = if long % 2 == 0 {
                        json!("")
                    } else {
                        json!("m".repeat(long))
                    }
                }
                1 => m[["message_id", "kind", "from", "to"][long % 4]] = other,
                2 => m["kind"] = json!(format!("{kind}_x")),
                3 => m["from"] = json!(code),
                4 => m["to"] = json!(code),
                _ => {
                    envelope["update"] = json!({"resident_code": "12345678903"});
                    if long % 2 == 0 {
                        m = Value::Null;
                    }
                }
            }
            if !m.is_null() {
                envelope["message"] = m;
            }
            json!({"sender": "cs-131016", "items": [{"seq": 1, "payload": envelope}]})
        });
    for _ in 0..CASES {
        let body = broken_message.new_tree(&mut runner).unwrap().current();
        let resp = test::call_service(
            &app_pref,
            test::TestRequest::post()
                .uri("/v1/relay")
                .set_json(&body)
                .to_request(),
        )
        .await;
        let status = resp.status().as_u16();
        let bytes = test::read_body(resp).await;
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(
            (400..500).contains(&status),
            "/v1/relay {status} {json} for {body}"
        );
        assert!(json["error"].is_string(), "{json}");
        *by_status.entry(status).or_default() += 1;
        tried += 1;
    }
    // Hostile ids and mailbox queries.
    let ids = proptest::string::string_regex("[ -~あ{}%/]{0,80}").unwrap();
    let queries = (
        proptest::string::string_regex("[ -~]{0,40}").unwrap(),
        any::<i64>(),
        any::<u64>(),
        0..4u8,
    );
    for _ in 0..CASES {
        let id = ids.new_tree(&mut runner).unwrap().current();
        let encoded: String = id
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'-' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        for base in ["/v1/transfers/", "/v1/issuances/"] {
            let resp = test::call_service(
                &app_cs,
                test::TestRequest::get()
                    .uri(&format!("{base}{encoded}"))
                    .to_request(),
            )
            .await;
            let status = resp.status().as_u16();
            assert!((400..500).contains(&status), "{base}{encoded}: {status}");
            *by_status.entry(status).or_default() += 1;
            tried += 1;
        }
        let resp = test::call_service(
            &app_cs,
            test::TestRequest::post()
                .uri(&format!("/v1/transfers/{encoded}/cancel"))
                .to_request(),
        )
        .await;
        let status = resp.status().as_u16();
        assert!((400..500).contains(&status), "cancel {encoded}: {status}");
        *by_status.entry(status).or_default() += 1;
        tried += 1;
        let (recipient, after, wait, shape) = queries.new_tree(&mut runner).unwrap().current();
        let recipient: String = recipient.bytes().map(|b| format!("%{b:02X}")).collect();
        let query = match shape {
            0 => format!("recipient={recipient}&after={after}&wait={}", wait % 2),
            1 => format!("after={after}"),
            2 => format!("recipient={recipient}&after=x{after}&wait=-{wait}"),
            _ => format!("recipient=cs-131016&after={}&wait=0", after.min(-1)),
        };
        let resp = test::call_service(
            &app_pref,
            test::TestRequest::get()
                .uri(&format!("/v1/mailbox?{query}"))
                .to_request(),
        )
        .await;
        let status = resp.status().as_u16();
        assert!(
            (400..500).contains(&status),
            "/v1/mailbox?{query}: {status}"
        );
        *by_status.entry(status).or_default() += 1;
        tried += 1;
    }
    assert_eq!(
        snapshot(&mut cs.db.pool.get().unwrap()),
        before_cs,
        "the CS database changed"
    );
    assert_eq!(
        snapshot(&mut pref.db.pool.get().unwrap()),
        before_pref,
        "the prefecture database changed"
    );
    eprintln!(
        "wide-area fuzz ({backend:?}): {tried} hostile inputs, answers by status {by_status:?}"
    );
}

#[actix_web::test]
async fn sqlite_hostile_input_is_refused_without_change() {
    fuzz(Backend::Sqlite).await;
}

#[actix_web::test]
async fn postgres_hostile_input_is_refused_without_change() {
    fuzz(Backend::Postgres).await;
}

type Fields = Vec<(&'static str, Kind)>;

/// Hostile bodies for the provision endpoints, sent with a valid identity.
async fn provision_fuzz(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let mut national = db.state();
    national.identity = NodeIdentity {
        role: Role::National,
        prefecture: None,
        municipality: None,
    };
    national.allow = std::sync::Arc::new(
        juki_node::provision::AllowList::parse(
            r#"{"allow": [{"agency": "nenkin", "affair": "pension", "items": ["name"]}]}"#,
        )
        .unwrap(),
    );
    let app = test::init_service(juki_node::http::server::app(web::Data::new(
        national.clone(),
    )))
    .await;
    let before = snapshot(&mut national.db.pool.get().unwrap());
    let taro = "12345678903";
    // (route, identity, a valid body, its fields)
    let endpoints: Vec<(&str, &str, Value, Fields)> = vec![
        (
            "/v1/agency/queries",
            "agency-nenkin",
            json!({"affair": "pension", "reason": "現況確認", "by": {"resident_code": taro}}),
            vec![
                ("affair", Kind::Text),
                ("reason", Kind::Text),
                ("by.resident_code", Kind::Code(11)),
            ],
        ),
        (
            "/v1/agency/queries",
            "agency-nenkin",
            json!({"affair": "pension", "reason": "現況確認", "by": {"name": "山田 太郎",
                "birth_date": "1990-04-01", "sex": "男", "address": "千代田1-1"}}),
            vec![
                ("by.name", Kind::Text),
                ("by.birth_date", Kind::Date),
                ("by.address", Kind::Text),
                ("by.sex", Kind::Pin),
            ],
        ),
        (
            "/v1/disclosures",
            "muni-131016",
            json!({"resident_code": taro}),
            vec![("resident_code", Kind::Code(11))],
        ),
    ];
    let mut runner = TestRunner::new(Config {
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        ..Config::default()
    });
    let (mut tried, mut by_status) = (0usize, std::collections::BTreeMap::<u16, usize>::new());
    for (uri, identity, valid, fields) in endpoints {
        let strategy = hostile(valid, fields);
        for _ in 0..CASES {
            let body = strategy.new_tree(&mut runner).unwrap().current();
            let resp = test::call_service(
                &app,
                test::TestRequest::post()
                    .uri(uri)
                    .insert_header(("content-type", "application/json"))
                    .insert_header(("x-juki-identity", identity))
                    .set_payload(body.clone())
                    .to_request(),
            )
            .await;
            let status = resp.status().as_u16();
            let bytes = test::read_body(resp).await;
            let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            assert!(
                (400..500).contains(&status) && json["error"].is_string(),
                "{uri} {status} {json} for {:?}",
                String::from_utf8_lossy(&body)
            );
            *by_status.entry(status).or_default() += 1;
            tried += 1;
        }
    }
    assert_eq!(
        snapshot(&mut national.db.pool.get().unwrap()),
        before,
        "the national database changed"
    );
    eprintln!(
        "provision fuzz ({backend:?}): {tried} hostile inputs, answers by status {by_status:?}"
    );
}

#[actix_web::test]
async fn sqlite_hostile_provision_input_is_refused_without_change() {
    provision_fuzz(Backend::Sqlite).await;
}

#[actix_web::test]
async fn postgres_hostile_provision_input_is_refused_without_change() {
    provision_fuzz(Backend::Postgres).await;
}
