//! Batch jobs: daily statistics (both backends), backup and restore (SQLite), and the CLI.

mod common;

use std::process::Command;

use actix_web::http::StatusCode;
use actix_web::{App, test, web};
use common::{Backend, OWN, TestDb};
use diesel::prelude::*;
use jiff::civil::date;
use juki_node::batch::{self, StatRow};
use juki_node::db::{DbConnection, DbUrl};
use juki_node::models::{HistoryRow, IdempotencyRow, OutboxRow, ResidentRow};
use juki_node::routes::{self, AppState};
use juki_node::schema::{
    change_history, counters, daily_statistics, idempotency_keys, inbox, outbox, residents,
};
use serde_json::{Value, json};

const TARO: &str = "12345678903";
const HANAKO: &str = "98765432103";

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

/// A CS database with three accepted updates (recorded 2024-06-03 in Tokyo).
async fn with_updates(db: &TestDb) -> AppState {
    let state = db.state();
    let app = test::init_service(
        App::new()
            .app_data(web::Data::new(state.clone()))
            .configure(routes::configure),
    )
    .await;
    for (key, body) in [
        ("a", update(TARO, "転入", "千代田1-1")),
        ("b", update(TARO, "転居", "千代田2-2")),
        ("c", update(HANAKO, "転入", "千代田3-3")),
    ] {
        let req = test::TestRequest::post()
            .uri("/v1/updates")
            .insert_header(("Idempotency-Key", key))
            .set_json(&body)
            .to_request();
        assert_eq!(
            test::call_service(&app, req).await.status(),
            StatusCode::CREATED
        );
    }
    state
}

fn row(municipality: &str, reason: &str, count: i64) -> StatRow {
    StatRow {
        municipality_code: municipality.into(),
        reason: reason.into(),
        count,
    }
}

async fn daily_statistics_are_stored_and_rerunnable(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let state = with_updates(&db).await;
    let mut conn = state.pool.get().unwrap();
    let day = date(2024, 6, 3);
    let stats = batch::statistics(&mut conn, day).unwrap();
    assert_eq!(
        stats.updates,
        vec![row(OWN, "move_in", 2), row(OWN, "relocation", 1)]
    );
    assert_eq!((stats.relayed, stats.held), (0, 3));
    // Running it again replaces the day's rows.
    let again = batch::statistics(&mut conn, day).unwrap();
    assert_eq!(again, stats);
    assert_eq!(
        batch::stored_statistics(&mut conn, day).unwrap(),
        vec![
            row("*", "held", 3),
            row("*", "relayed", 0),
            row(OWN, "move_in", 2),
            row(OWN, "relocation", 1),
        ]
    );
    // Another day has no updates.
    let other = batch::statistics(&mut conn, date(2024, 6, 2)).unwrap();
    assert!(other.updates.is_empty());
    let total: i64 = daily_statistics::table
        .count()
        .get_result(&mut conn)
        .unwrap();
    assert_eq!(total, 6);
}

type Contents = (
    Vec<ResidentRow>,
    Vec<HistoryRow>,
    Vec<OutboxRow>,
    Vec<IdempotencyRow>,
    Vec<(String, i64, String)>,
    Vec<(String, i64)>,
    Vec<(String, String, String, i64)>,
);

fn contents(conn: &mut DbConnection) -> Contents {
    (
        residents::table
            .order(residents::resident_code)
            .select(ResidentRow::as_select())
            .load(conn)
            .unwrap(),
        change_history::table
            .order(change_history::id)
            .select(HistoryRow::as_select())
            .load(conn)
            .unwrap(),
        outbox::table
            .order(outbox::seq)
            .select(OutboxRow::as_select())
            .load(conn)
            .unwrap(),
        idempotency_keys::table
            .order(idempotency_keys::idempotency_key)
            .select(IdempotencyRow::as_select())
            .load(conn)
            .unwrap(),
        inbox::table
            .order((inbox::sender, inbox::seq))
            .select((inbox::sender, inbox::seq, inbox::applied_at))
            .load(conn)
            .unwrap(),
        counters::table
            .order(counters::name)
            .select((counters::name, counters::value))
            .load(conn)
            .unwrap(),
        daily_statistics::table
            .order((
                daily_statistics::date,
                daily_statistics::municipality_code,
                daily_statistics::reason,
            ))
            .select((
                daily_statistics::date,
                daily_statistics::municipality_code,
                daily_statistics::reason,
                daily_statistics::count,
            ))
            .load(conn)
            .unwrap(),
    )
}

#[actix_web::test]
async fn backup_restores_into_a_fresh_database_with_equal_contents() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let state = with_updates(&db).await;
    let mut conn = state.pool.get().unwrap();
    batch::statistics(&mut conn, date(2024, 6, 3)).unwrap();
    let original = contents(&mut conn);
    drop(conn);

    let dir = std::env::temp_dir().join(format!("juki-backup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (manifest, manifest_path) = batch::backup(
        &db.url,
        &dir,
        "2024-06-03T10:00:00Z".parse().unwrap(),
        Some(date(2024, 6, 3)),
    )
    .unwrap();
    assert_eq!(manifest.operating_date.as_deref(), Some("2024-06-03"));
    assert_eq!(manifest.file, "juki-node-20240603T100000Z.db");
    assert_eq!(manifest.sha256.len(), 64);
    assert_eq!(manifest.tables["residents"], 2);
    assert_eq!(manifest.tables["change_history"], 3);
    // A second backup at the same instant does not overwrite the first.
    assert!(batch::backup(&db.url, &dir, "2024-06-03T10:00:00Z".parse().unwrap(), None).is_err());

    let fresh = TestDb::new(Backend::Sqlite).unwrap();
    let restored = batch::restore(&manifest_path, &fresh.url, false).unwrap();
    assert_eq!(restored, manifest);
    let mut conn = fresh.url.connect().unwrap();
    assert_eq!(contents(&mut conn), original);
    drop(conn);
    // The target exists now: only --force replaces it.
    assert!(batch::restore(&manifest_path, &fresh.url, false).is_err());
    batch::restore(&manifest_path, &fresh.url, true).unwrap();

    // A damaged backup is refused before anything is written.
    let file = dir.join(&manifest.file);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let other = TestDb::new(Backend::Sqlite).unwrap();
    let err = batch::restore(&manifest_path, &other.url, false).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    let DbUrl::Sqlite(other_path) = &other.url else {
        unreachable!()
    };
    assert!(!std::path::Path::new(other_path).exists());
    // PostgreSQL is backed up with pg_dump, not by this command.
    assert!(
        batch::backup(
            &DbUrl::Postgres("postgres://x/y".into()),
            &dir,
            jiff::Timestamp::now(),
            None
        )
        .is_err()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[actix_web::test]
async fn batch_and_restore_commands() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    with_updates(&db).await;
    let DbUrl::Sqlite(path) = &db.url else {
        unreachable!()
    };
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_juki-node"))
            .args(args)
            .env_remove("JUKI_CONFIG")
            .env_remove("DATABASE_URL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let stats = run(&[
        "batch",
        "statistics",
        "--date",
        "2024-06-03",
        "--database-url",
        path,
    ]);
    assert_eq!(stats["date"], json!("2024-06-03"));
    assert_eq!(stats["updates"][0]["count"], json!(2));
    assert_eq!(stats["held"], json!(3));

    let dir = std::env::temp_dir().join(format!("juki-backup-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // As the operator's Job runs it: `batch backup --date D`, the database from DATABASE_URL.
    let out = Command::new(env!("CARGO_BIN_EXE_juki-node"))
        .args([
            "batch",
            "backup",
            "--date",
            "2024-06-03",
            "--output",
            dir.to_str().unwrap(),
        ])
        .env_remove("JUKI_CONFIG")
        .env_remove("JUKI_DATABASE_URL")
        .env("DATABASE_URL", format!("sqlite://{path}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["operatingDate"], json!("2024-06-03"));
    let manifest_path = dir.join(format!(
        "{}.manifest.json",
        manifest["file"].as_str().unwrap()
    ));
    let target = dir.join("restored.db");
    let restored = run(&[
        "restore",
        "--manifest",
        manifest_path.to_str().unwrap(),
        "--database-url",
        target.to_str().unwrap(),
    ]);
    assert_eq!(restored["sha256"], manifest["sha256"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

mod sqlite {
    #[actix_web::test]
    async fn daily_statistics_are_stored_and_rerunnable() {
        super::daily_statistics_are_stored_and_rerunnable(super::Backend::Sqlite).await
    }
}

mod postgres {
    #[actix_web::test]
    async fn daily_statistics_are_stored_and_rerunnable() {
        super::daily_statistics_are_stored_and_rerunnable(super::Backend::Postgres).await
    }
}
