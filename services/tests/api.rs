//! API tests, in-process (actix test utilities), on SQLite and on PostgreSQL.
//! Every scenario runs twice: `sqlite::<name>` and `postgres::<name>`.

mod common;

use actix_web::http::StatusCode;
use actix_web::{App, test, web};
use common::{Backend, OWN, TestDb};
use diesel::prelude::*;
use juki_node::http::routes::{self, AppState};
use juki_node::store::db;
use juki_node::store::schema::outbox;
use juki_node::store::{self, Counts};
use serde_json::{Value, json};

/// Valid resident-record codes (check digit by the assumed mod-11 rule).
const TARO: &str = "12345678903";
const HANAKO: &str = "98765432103";

fn update(code: &str, reason: &str) -> Value {
    json!({
        "resident_code": code,
        "individual_number": null,
        "name": "山田 太郎",
        "name_kana": "ヤマダ タロウ",
        "birth_date": "1990-04-01",
        "sex": "男",
        "address": "東京都千代田区千代田1-1",
        "municipality_code": OWN,
        "reason": reason,
        "change_date": "2024-06-01",
    })
}

fn with(mut v: Value, field: &str, value: Value) -> Value {
    v[field] = value;
    v
}

/// Sets up the database and the app, or returns from the test when the backend is skipped.
macro_rules! setup {
    ($backend:expr) => {{
        let Some(db) = TestDb::new($backend) else {
            return;
        };
        let state = db.state();
        let app = test::init_service(
            App::new()
                .app_data(web::Data::new(state.clone()))
                .configure(routes::configure),
        )
        .await;
        (db, state, app)
    }};
}

/// Sends a request; returns (status, JSON body, Idempotent-Replayed header present).
macro_rules! send {
    ($app:expr, $req:expr) => {{
        let resp = test::call_service(&$app, $req.to_request()).await;
        let status = resp.status();
        let replayed = resp.headers().contains_key("Idempotent-Replayed");
        let bytes = test::read_body(resp).await;
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes)))
        };
        (status, body, replayed)
    }};
}

macro_rules! post {
    ($app:expr, $key:expr, $body:expr) => {
        send!(
            $app,
            test::TestRequest::post()
                .uri("/v1/updates")
                .insert_header(("Idempotency-Key", $key))
                .set_json(&$body)
        )
    };
}

macro_rules! get {
    ($app:expr, $uri:expr) => {
        send!($app, test::TestRequest::get().uri($uri))
    };
}

fn counts(state: &AppState) -> Counts {
    store::counts(&mut state.db.pool.get().unwrap()).unwrap()
}

const NOTHING: Counts = Counts {
    residents: 0,
    history: 0,
    outbox: 0,
};

fn assert_error(body: &Value, tag: &str, field: Option<&str>) {
    assert_eq!(body["error"], json!(tag), "{body}");
    assert_eq!(body["field"], json!(field), "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

async fn accepted_update_writes_record_history_and_outbox(backend: Backend) {
    let (_db, state, app) = setup!(backend);
    let (status, body, replayed) = post!(app, "k1", update(TARO, "転入"));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(!replayed);
    assert_eq!(body["resident_code"], json!(TARO));
    assert_eq!(body["reason"], json!("転入"));
    assert_eq!(body["status"], json!("active"));
    assert_eq!(body["outbox_seq"], json!(1));
    assert_eq!(
        counts(&state),
        Counts {
            residents: 1,
            history: 1,
            outbox: 1
        }
    );

    let (status, resident, _) = get!(app, &format!("/v1/residents/{TARO}"));
    assert_eq!(status, StatusCode::OK, "{resident}");
    assert_eq!(resident["name"], json!("山田 太郎"));
    assert_eq!(resident["sex"], json!("男"));
    assert_eq!(resident["status"], json!("active"));
    assert_eq!(resident["birth_date"], json!("1990-04-01"));

    let (status, history, _) = get!(app, &format!("/v1/residents/{TARO}/history"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history["history"][0]["reason"], json!("転入"));
    assert_eq!(history["history"][0]["sender"], json!("cs-131016"));
    assert_eq!(history["history"][0]["seq"], json!(1));

    let payload: String = outbox::table
        .select(outbox::payload)
        .first(&mut state.db.pool.get().unwrap())
        .unwrap();
    let payload: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(payload["sender"], json!("cs-131016"));
    assert_eq!(payload["seq"], json!(1));
    assert_eq!(payload["update"]["resident_code"], json!(TARO));

    // A relocation updates the record and appends history and outbox rows.
    let moved = with(
        update(TARO, "転居"),
        "address",
        json!("東京都千代田区丸の内1-1"),
    );
    let (status, body, _) = post!(app, "k2", moved);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["outbox_seq"], json!(2));
    assert_eq!(
        counts(&state),
        Counts {
            residents: 1,
            history: 2,
            outbox: 2
        }
    );
    let (_, resident, _) = get!(app, &format!("/v1/residents/{TARO}"));
    assert_eq!(resident["address"], json!("東京都千代田区丸の内1-1"));
}

async fn bad_check_digit_names_resident_code(backend: Backend) {
    let (_db, state, app) = setup!(backend);
    let (status, body, _) = post!(app, "k", update("12345678904", "転入"));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "check_digit", Some("resident_code"));
    let (status, body, _) = post!(
        app,
        "k2",
        with(
            update(TARO, "転入"),
            "individual_number",
            json!("123456789019")
        )
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "check_digit", Some("individual_number"));
    assert_eq!(counts(&state), NOTHING);
}

async fn other_municipality_is_refused(backend: Backend) {
    let (_db, state, app) = setup!(backend);
    let (status, body, _) = post!(
        app,
        "k",
        with(update(TARO, "転入"), "municipality_code", json!("011002"))
    );
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_error(&body, "foreign_municipality", Some("municipality_code"));
    let (status, body, _) = post!(
        app,
        "k2",
        with(update(TARO, "転入"), "municipality_code", json!("011003"))
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "check_digit", Some("municipality_code"));
    assert_eq!(counts(&state), NOTHING);
}

async fn relocation_of_unknown_resident_conflicts(backend: Backend) {
    let (_db, state, app) = setup!(backend);
    let (status, body, _) = post!(app, "k", update(TARO, "転居"));
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&body, "unknown_resident", Some("reason"));
    assert_eq!(counts(&state), NOTHING);
    let (status, _, _) = get!(app, &format!("/v1/residents/{TARO}"));
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn nothing_is_accepted_after_death(backend: Backend) {
    let (_db, state, app) = setup!(backend);
    assert_eq!(post!(app, "a", update(TARO, "転入")).0, StatusCode::CREATED);
    let (status, body, _) = post!(app, "b", update(TARO, "死亡"));
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], json!("deceased"));
    for (key, reason) in [
        ("c", "転居"),
        ("d", "職権修正"),
        ("e", "転入"),
        ("f", "死亡"),
    ] {
        let (status, body, _) = post!(app, key, update(TARO, reason));
        assert_eq!(status, StatusCode::CONFLICT, "{reason}: {body}");
        assert_error(&body, "resident_deceased", Some("resident_code"));
    }
    assert_eq!(
        counts(&state),
        Counts {
            residents: 1,
            history: 2,
            outbox: 2
        }
    );
    let (_, resident, _) = get!(app, &format!("/v1/residents/{TARO}"));
    assert_eq!(resident["status"], json!("deceased"));
}

async fn moved_out_resident_may_move_in_again(backend: Backend) {
    let (_db, state, app) = setup!(backend);
    assert_eq!(post!(app, "a", update(TARO, "転入")).0, StatusCode::CREATED);
    assert_eq!(
        post!(app, "b", update(TARO, "転入")).0,
        StatusCode::CONFLICT
    );
    assert_eq!(post!(app, "c", update(TARO, "転出")).0, StatusCode::CREATED);
    let (status, body, _) = post!(app, "d", update(TARO, "転居"));
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&body, "not_active", Some("reason"));
    assert_eq!(post!(app, "e", update(TARO, "転入")).0, StatusCode::CREATED);
    assert_eq!(
        counts(&state),
        Counts {
            residents: 1,
            history: 3,
            outbox: 3
        }
    );
}

async fn same_idempotency_key_replays_the_first_result(backend: Backend) {
    let (_db, state, app) = setup!(backend);
    let first = post!(app, "retry-me", update(TARO, "転入"));
    let second = post!(app, "retry-me", update(TARO, "転入"));
    assert_eq!(first.0, StatusCode::CREATED);
    assert_eq!((first.0, &first.1), (second.0, &second.1));
    assert!(
        !first.2 && second.2,
        "the replay carries Idempotent-Replayed"
    );
    assert_eq!(
        counts(&state),
        Counts {
            residents: 1,
            history: 1,
            outbox: 1
        }
    );

    // The same key with another request is refused and writes nothing.
    let (status, body, _) = post!(app, "retry-me", update(TARO, "転居"));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "idempotency_key_reused", Some("Idempotency-Key"));
    assert_eq!(
        counts(&state),
        Counts {
            residents: 1,
            history: 1,
            outbox: 1
        }
    );
}

async fn batch_with_one_bad_item_writes_nothing(backend: Backend) {
    let (_db, state, app) = setup!(backend);
    let batch = json!([
        update(TARO, "転入"),
        update(HANAKO, "転入"),
        update("98765432107", "転入")
    ]);
    let (status, body, _) = post!(app, "batch-1", batch);
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "check_digit", Some("resident_code"));
    assert_eq!(body["index"], json!(2));
    assert_eq!(counts(&state), NOTHING);

    // A state conflict late in the batch rolls back the earlier items too.
    let batch = json!([update(TARO, "転入"), update(HANAKO, "転居")]);
    let (status, body, _) = post!(app, "batch-2", batch);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["index"], json!(1));
    assert_eq!(counts(&state), NOTHING);

    // Items apply in order: a later item sees the earlier ones.
    let batch = json!([
        update(TARO, "転入"),
        update(HANAKO, "転入"),
        update(TARO, "転居")
    ]);
    let (status, body, _) = post!(app, "batch-3", batch);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let seqs: Vec<i64> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outbox_seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(
        counts(&state),
        Counts {
            residents: 2,
            history: 3,
            outbox: 3
        }
    );
}

async fn future_dates_are_refused(backend: Backend) {
    let (_db, state, app) = setup!(backend);
    // The test clock's today is 2024-06-03 (Asia/Tokyo).
    let (status, body, _) = post!(
        app,
        "k",
        with(update(TARO, "転入"), "change_date", json!("2024-06-04"))
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "future_date", Some("change_date"));
    let (status, body, _) = post!(
        app,
        "k2",
        with(update(TARO, "転入"), "birth_date", json!("2023-02-29"))
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "invalid_date", Some("birth_date"));
    let (status, _, _) = post!(
        app,
        "k3",
        with(update(TARO, "転入"), "change_date", json!("2024-06-03"))
    );
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        counts(&state),
        Counts {
            residents: 1,
            history: 1,
            outbox: 1
        }
    );
}

async fn bad_input_is_4xx_never_5xx(backend: Backend) {
    let (_db, state, app) = setup!(backend);
    let no_key = test::TestRequest::post()
        .uri("/v1/updates")
        .set_json(update(TARO, "転入"));
    let (status, body, _) = send!(app, no_key);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "missing_idempotency_key", Some("Idempotency-Key"));

    let bad_json = test::TestRequest::post()
        .uri("/v1/updates")
        .insert_header(("Idempotency-Key", "j"))
        .insert_header(("Content-Type", "application/json"))
        .set_payload("{not json");
    let (status, body, _) = send!(app, bad_json);
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&body, "invalid_body", None);

    for (key, body) in [
        ("a", json!(42)),
        ("b", json!([])),
        ("c", json!([1])),
        ("d", json!({})),
    ] {
        let (status, resp, _) = post!(app, key, body);
        assert!(status.is_client_error(), "{body} → {status} {resp}");
    }
    let (status, body, _) = post!(
        app,
        "e",
        with(update(TARO, "転入"), "reason", json!("引越し"))
    );
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "unknown_reason", Some("reason"));
    let (status, body, _) = post!(app, "f", with(update(TARO, "転入"), "name", json!(7)));
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "wrong_type", Some("name"));

    let (status, body, _) = get!(app, "/v1/nothing-here");
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found", None);

    let (status, body, _) = get!(app, "/v1/residents/123");
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_error(&body, "format", Some("resident_code"));
    assert_eq!(counts(&state), NOTHING);
}

async fn individual_number_belongs_to_one_resident(backend: Backend) {
    let (_db, state, app) = setup!(backend);
    let first = with(
        update(TARO, "転入"),
        "individual_number",
        json!("123456789018"),
    );
    assert_eq!(post!(app, "a", first).0, StatusCode::CREATED);
    let second = with(
        update(HANAKO, "転入"),
        "individual_number",
        json!("123456789018"),
    );
    let (status, body, _) = post!(app, "b", second);
    assert_eq!(status, StatusCode::CONFLICT);
    assert_error(&body, "individual_number_in_use", Some("individual_number"));
    assert_eq!(
        counts(&state),
        Counts {
            residents: 1,
            history: 1,
            outbox: 1
        }
    );
}

fn number(first11: &str) -> String {
    let d: Vec<u8> = first11.bytes().map(|b| b - b'0').collect();
    let d: [u8; 11] = d.try_into().unwrap();
    format!("{first11}{}", juki_codes::individual_number_check_digit(&d))
}

fn resident(first10: &str) -> String {
    let d: Vec<u8> = first10.bytes().map(|b| b - b'0').collect();
    let d: [u8; 10] = d.try_into().unwrap();
    format!("{first10}{}", juki_codes::resident_record_check_digit(&d))
}

/// The items of one batch see each other: the state rules and the individual-number check run
/// against the records as changed by the earlier items (the rows are written in bulk).
async fn items_of_a_batch_see_each_other(backend: Backend) {
    let (_db, state, app) = setup!(backend);
    let (n1, n2, n3) = (
        number("11112222333"),
        number("44445555666"),
        number("77778888999"),
    );
    let taro = |reason: &str, address: &str, n: &str| {
        with(
            with(update(TARO, reason), "address", json!(address)),
            "individual_number",
            json!(n),
        )
    };
    let batch = json!([
        taro("転入", "一番町1", &n1),
        taro("転居", "二番町2", &n1),
        taro("転出", "二番町2", &n1),
        taro("転入", "三番町3", &n1),
    ]);
    let (status, body, _) = post!(app, "one-resident", batch);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, record, _) = get!(app, &format!("/v1/residents/{TARO}"));
    assert_eq!(record["address"], json!("三番町3"));
    assert_eq!(record["status"], json!("active"));
    let (_, history, _) = get!(app, &format!("/v1/residents/{TARO}/history"));
    let reasons: Vec<&str> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["転入", "転居", "転出", "転入"]);

    // Taro holds n1 in the database.
    let hanako = |n: &str| with(update(HANAKO, "転入"), "individual_number", json!(n));
    let (status, body, _) = post!(app, "taken", json!([hanako(&n1)]));
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["index"], json!(0));
    // Released earlier in the same batch, it may be taken by a later item.
    let batch = json!([taro("職権修正", "三番町3", &n2), hanako(&n1)]);
    let (status, body, _) = post!(app, "released", batch);
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (_, record, _) = get!(app, &format!("/v1/residents/{HANAKO}"));
    assert_eq!(record["individual_number"], json!(n1));
    // Taken earlier in the same batch by a new resident, it is refused to a later one.
    let before = counts(&state);
    let batch = json!([
        with(
            update(&resident("1111111111"), "転入"),
            "individual_number",
            json!(n3)
        ),
        with(
            update(&resident("2222222222"), "転入"),
            "individual_number",
            json!(n3)
        ),
    ]);
    let (status, body, _) = post!(app, "twice", batch);
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_error(&body, "individual_number_in_use", Some("individual_number"));
    assert_eq!(body["index"], json!(1));
    assert_eq!(counts(&state), before);
    assert_eq!(
        before,
        Counts {
            residents: 2,
            history: 6,
            outbox: 6
        }
    );
}

/// The migrations in services/migrations (init, outbox_pending, history_trace, wide_area,
/// provision).
const MIGRATION_COUNT: usize = 5;

async fn health_readiness_and_migrations_revert_cleanly(backend: Backend) {
    let (_db, state, app) = setup!(backend);
    assert_eq!(get!(app, "/healthz").0, StatusCode::OK);
    assert_eq!(get!(app, "/readyz").0, StatusCode::OK);
    assert_eq!(post!(app, "a", update(TARO, "転入")).0, StatusCode::CREATED);

    let mut conn = state.db.pool.get().unwrap();
    let reverted = db::revert_all_migrations(&mut conn).unwrap();
    assert_eq!(reverted.len(), MIGRATION_COUNT);
    assert!(db::has_pending_migrations(&mut conn).unwrap());
    assert!(
        store::counts(&mut conn).is_err(),
        "tables are gone after down.sql"
    );
    drop(conn);
    let (status, body, _) = get!(app, "/readyz");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], json!("unavailable"));

    let mut conn = state.db.pool.get().unwrap();
    assert_eq!(
        db::run_migrations(&mut conn).unwrap().len(),
        MIGRATION_COUNT
    );
    assert!(!db::has_pending_migrations(&mut conn).unwrap());
    assert_eq!(store::counts(&mut conn).unwrap(), NOTHING);
    drop(conn);
    assert_eq!(get!(app, "/readyz").0, StatusCode::OK);
    let (status, body, _) = post!(app, "a", update(TARO, "転入"));
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        body["outbox_seq"],
        json!(1),
        "counters start again after re-migration"
    );
}

async fn concurrent_writers_are_serialised(backend: Backend) {
    let (_db, state, _app) = setup!(backend);
    let ctx = juki_node::domain::Context {
        own_municipality: OWN.into(),
        today: state.clock.today(),
    };
    let now = state.clock.now();
    // Eight residents, each posted twice under its own key, from eight threads at once.
    let codes: Vec<String> = (0..8u64)
        .map(|i| {
            let first10 = format!("{:010}", 1_000_000_000 + i * 7919);
            let digits: Vec<u8> = first10.bytes().map(|b| b - b'0').collect();
            let cd = juki_codes::resident_record_check_digit(digits.as_slice().try_into().unwrap());
            format!("{first10}{cd}")
        })
        .collect();
    let threads: Vec<_> = codes
        .iter()
        .map(|code| {
            let (pool, ctx, code) = (state.db.pool.clone(), ctx.clone(), code.clone());
            std::thread::spawn(move || {
                let submission =
                    juki_node::updates::Submission::from_json(update(&code, "転入")).unwrap();
                let mut outcomes = Vec::new();
                for _ in 0..2 {
                    let mut conn = pool.get().unwrap();
                    let outcome = juki_node::updates::submit(
                        &mut conn,
                        &ctx,
                        "cs-131016",
                        &code,
                        &submission,
                        now,
                    );
                    outcomes.push(outcome.unwrap_or_else(|e| panic!("{code}: {e}")));
                }
                outcomes
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for t in threads {
        let outcomes = t.join().unwrap();
        assert!(!outcomes[0].replayed && outcomes[1].replayed);
        assert_eq!(outcomes[0].body, outcomes[1].body);
        seqs.push(outcomes[0].body["outbox_seq"].as_i64().unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=8).collect::<Vec<i64>>());
    assert_eq!(
        counts(&state),
        Counts {
            residents: 8,
            history: 8,
            outbox: 8
        }
    );
}

async fn every_table_matches_its_diesel_definition(backend: Backend) {
    use juki_node::store::schema::{daily_statistics, inbox, provision_log};
    let (_db, state, _app) = setup!(backend);
    let mut conn = state.db.pool.get().unwrap();
    let conn = &mut *conn;
    diesel::insert_into(inbox::table)
        .values((
            inbox::sender.eq("cs-131016"),
            inbox::seq.eq(7_i64),
            inbox::applied_at.eq("t"),
        ))
        .execute(conn)
        .unwrap();
    let dup = diesel::insert_into(inbox::table)
        .values((
            inbox::sender.eq("cs-131016"),
            inbox::seq.eq(7_i64),
            inbox::applied_at.eq("u"),
        ))
        .execute(conn);
    assert!(dup.is_err(), "(sender, seq) is the inbox primary key");
    let row: (String, i64, String) = inbox::table.first(conn).unwrap();
    assert_eq!(row, ("cs-131016".into(), 7, "t".into()));

    diesel::insert_into(daily_statistics::table)
        .values((
            daily_statistics::date.eq("2024-06-03"),
            daily_statistics::municipality_code.eq(OWN),
            daily_statistics::reason.eq("move_in"),
            daily_statistics::count.eq(3_i64),
        ))
        .execute(conn)
        .unwrap();
    let row: (String, String, String, i64) = daily_statistics::table.first(conn).unwrap();
    assert_eq!(row.3, 3);

    diesel::insert_into(provision_log::table)
        .values((
            provision_log::id.eq("0001"),
            provision_log::at.eq("2024-06-03T03:00:00Z"),
            provision_log::recipient.eq("agency"),
            provision_log::affair.eq("pension"),
            provision_log::reason.eq("identity check"),
            provision_log::query_kind.eq("code"),
            provision_log::resident_code.eq(TARO),
            provision_log::items.eq("[\"name\"]"),
            provision_log::outcome.eq("provided"),
            provision_log::detail.eq(""),
        ))
        .execute(conn)
        .unwrap();
    type Row = (
        String,
        String,
        String,
        String,
        String,
        String,
        Option<String>,
        String,
        String,
        String,
    );
    let row: Row = provision_log::table.first(conn).unwrap();
    assert_eq!(row.6.as_deref(), Some(TARO));

    // A bad status is refused by the CHECK constraint on both backends.
    let bad = diesel::insert_into(juki_node::store::schema::residents::table)
        .values(juki_node::store::models::ResidentRow {
            resident_code: TARO.into(),
            individual_number: None,
            name: "n".into(),
            name_kana: "k".into(),
            former_surname: None,
            alias: None,
            birth_date: "1990-04-01".into(),
            sex: "male".into(),
            address: "a".into(),
            municipality_code: OWN.into(),
            status: "lost".into(),
            updated_at: "t".into(),
            permanent_domicile: None,
            domicile_head: None,
        })
        .execute(conn);
    assert!(bad.is_err());
}

async fn only_a_cs_accepts_updates(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let mut state = db.state();
    state.identity = juki_node::domain::identity::NodeIdentity {
        role: juki_node::domain::identity::Role::Prefecture,
        prefecture: Some(13),
        municipality: None,
    };
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(state.clone()))
            .configure(routes::configure),
    )
    .await;
    let (status, body, _) = post!(app, "k", update(TARO, "転入"));
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_error(&body, "wrong_role", None);
    assert_eq!(
        get!(app, &format!("/v1/residents/{TARO}")).0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(get!(app, "/readyz").0, StatusCode::OK);
    assert_eq!(counts(&state), NOTHING);
}

common::on_both_backends!(
    accepted_update_writes_record_history_and_outbox,
    bad_check_digit_names_resident_code,
    other_municipality_is_refused,
    relocation_of_unknown_resident_conflicts,
    nothing_is_accepted_after_death,
    moved_out_resident_may_move_in_again,
    same_idempotency_key_replays_the_first_result,
    batch_with_one_bad_item_writes_nothing,
    future_dates_are_refused,
    bad_input_is_4xx_never_5xx,
    individual_number_belongs_to_one_resident,
    items_of_a_batch_see_each_other,
    health_readiness_and_migrations_revert_cleanly,
    concurrent_writers_are_serialised,
    every_table_matches_its_diesel_definition,
    only_a_cs_accepts_updates,
);
