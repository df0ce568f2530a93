//! Batch jobs: daily statistics, backup and restore (both backends), and the CLI.

mod common;

use std::process::Command;

use actix_web::http::StatusCode;
use actix_web::{App, test, web};
use common::{Backend, NOW, OWN, TestDb};
use diesel::prelude::*;
use jiff::civil::date;
use juki_node::cli::batch::{self, StatRow};
use juki_node::http::routes::{self, AppState};
use juki_node::store::db::{DbConnection, DbUrl};
use juki_node::store::models::{HistoryRow, IdempotencyRow, OutboxRow, ResidentRow};
use juki_node::store::schema::{
    change_history, counters, daily_statistics, idempotency_keys, inbox, outbox, provision_log,
    residents,
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
    let mut conn = state.db.pool.get().unwrap();
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
    Vec<ProvisionRow>,
);

type ProvisionRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
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
        provision_log::table
            .order(provision_log::id)
            .select((
                provision_log::id,
                provision_log::at,
                provision_log::recipient,
                provision_log::affair,
                provision_log::reason,
                provision_log::query_kind,
                provision_log::resident_code,
                provision_log::items,
                provision_log::outcome,
            ))
            .load(conn)
            .unwrap(),
    )
}

/// A CS database with a row in every table: the API writes residents, history, outbox,
/// idempotency keys and counters, the statistics batch daily_statistics; an inbox and a
/// provision_log row are written directly.
async fn populated(db: &TestDb) -> AppState {
    let state = with_updates(db).await;
    let mut conn = state.db.pool.get().unwrap();
    batch::statistics(&mut conn, date(2024, 6, 3)).unwrap();
    diesel::insert_into(inbox::table)
        .values((
            inbox::sender.eq("cs-131024"),
            inbox::seq.eq(7),
            inbox::applied_at.eq(NOW),
        ))
        .execute(&mut conn)
        .unwrap();
    diesel::insert_into(provision_log::table)
        .values((
            provision_log::id.eq("0001"),
            provision_log::at.eq(NOW),
            provision_log::recipient.eq("地方公共団体情報システム機構"),
            provision_log::affair.eq("年金給付"),
            provision_log::reason.eq("現況確認"),
            provision_log::query_kind.eq("code"),
            provision_log::resident_code.eq(TARO),
            provision_log::items.eq(r#"["name","address"]"#),
            provision_log::outcome.eq("provided"),
            provision_log::detail.eq(""),
        ))
        .execute(&mut conn)
        .unwrap();
    state
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "juki-{name}-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[actix_web::test]
async fn backup_restores_into_a_fresh_database_with_equal_contents() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    let state = with_updates(&db).await;
    let mut conn = state.db.pool.get().unwrap();
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
    // A SQLite backup does not restore into PostgreSQL (refused before connecting).
    let err = batch::restore(
        &manifest_path,
        &DbUrl::Postgres("postgres://nobody@127.0.0.1:1/none".into()),
        false,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot be restored into a postgres"),
        "{err}"
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

async fn the_weekly_report_sums_the_weeks_statistics_and_the_monthly_audit_counts_last_months_provisions(
    backend: Backend,
) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let state = with_updates(&db).await;
    let mut conn = state.db.pool.get().unwrap();
    // Statistics on Monday June 3 (the updates) and Friday June 7 (none); June 10 is next week.
    for day in [date(2024, 6, 3), date(2024, 6, 7), date(2024, 6, 10)] {
        batch::statistics(&mut conn, day).unwrap();
    }
    let week = batch::weekly_report(&mut conn, date(2024, 6, 7)).unwrap();
    assert_eq!(
        (week.from.as_str(), week.to.as_str()),
        ("2024-06-01", "2024-06-07")
    );
    assert_eq!(week.days, ["2024-06-03", "2024-06-07"]);
    assert_eq!(
        week.totals,
        vec![
            row("*", "held", 3),
            row("*", "relayed", 0),
            row(OWN, "move_in", 2),
            row(OWN, "relocation", 1),
        ]
    );

    // Provisions at the end of May, on June 1 (Japan time) and in April.
    for (id, at, recipient, outcome) in [
        ("p1", "2024-05-31T14:59:59Z", "agency-a", "provided"),
        ("p2", "2024-05-02T03:00:00Z", "agency-a", "provided"),
        ("p3", "2024-05-20T03:00:00Z", "agency-b", "refused"),
        ("p4", "2024-05-31T15:00:00Z", "agency-a", "provided"),
        ("p5", "2024-04-30T14:59:00Z", "agency-a", "provided"),
    ] {
        diesel::insert_into(provision_log::table)
            .values((
                provision_log::id.eq(id),
                provision_log::at.eq(at),
                provision_log::recipient.eq(recipient),
                provision_log::affair.eq("pension"),
                provision_log::reason.eq("eligibility"),
                provision_log::query_kind.eq("by_code"),
                provision_log::resident_code.eq(Some(TARO)),
                provision_log::items.eq("[]"),
                provision_log::outcome.eq(outcome),
                provision_log::detail.eq(""),
            ))
            .execute(&mut conn)
            .unwrap();
    }
    // Run on Monday June 3 (June 1 was a Saturday: the next open day): May is audited, in Japan
    // time (p4 is June 1 00:00 in Tokyo, p5 April 30 23:59).
    let audit = batch::monthly_audit(&mut conn, date(2024, 6, 3)).unwrap();
    assert_eq!(audit.month, "2024-05");
    assert_eq!(audit.provisions, 3);
    let counts: Vec<(&str, &str, i64)> = audit
        .by_recipient
        .iter()
        .map(|r| (r.recipient.as_str(), r.outcome.as_str(), r.count))
        .collect();
    assert_eq!(
        counts,
        [("agency-a", "provided", 2), ("agency-b", "refused", 1)]
    );
}

#[actix_web::test]
async fn every_batch_the_example_calendar_schedules_is_a_batch_command() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    with_updates(&db).await;
    let DbUrl::Sqlite(path) = &db.url else {
        unreachable!()
    };
    let calendar = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/calendar.yaml"),
    )
    .unwrap();
    let names: Vec<&str> = calendar
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- {name: ")?.split(',').next())
        .collect();
    assert_eq!(
        names,
        ["statistics", "backup", "weekly-report", "monthly-audit"]
    );
    let dir = std::env::temp_dir().join(format!("juki-batch-names-{}", std::process::id()));
    for name in names {
        // As the operator's Job runs it: `batch NAME --date D`, the database from DATABASE_URL.
        let out = Command::new(env!("CARGO_BIN_EXE_juki-node"))
            .args(["batch", name, "--date", "2024-06-03"])
            .env_remove("JUKI_CONFIG")
            .env("DATABASE_URL", format!("sqlite://{path}"))
            .env("JUKI_BACKUP_DIR", &dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "batch {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("batch {name} prints JSON: {e}"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The relations of a PostgreSQL database's public schema.
fn pg_relations(conn: &mut DbConnection) -> i64 {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    diesel::sql_query("SELECT count(*) AS n FROM pg_tables WHERE schemaname = 'public'")
        .get_result::<N>(conn)
        .unwrap()
        .n
}

async fn pg_backup_restores_every_table_into_a_fresh_database() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let state = populated(&db).await;
    let mut conn = state.db.pool.get().unwrap();
    let original = contents(&mut conn);
    drop(conn);
    assert!(original.4.len() == 1 && original.7.len() == 1 && !original.6.is_empty());

    let dir = temp_dir("pg-backup");
    let (manifest, manifest_path) = batch::backup(
        &db.url,
        &dir,
        "2024-06-03T10:00:00Z".parse().unwrap(),
        Some(date(2024, 6, 3)),
    )
    .unwrap();
    assert_eq!(manifest.format, batch::FORMAT_PG_DUMP);
    assert_eq!(manifest.file, "juki-node-20240603T100000Z.pgdump");
    assert_eq!(manifest.operating_date.as_deref(), Some("2024-06-03"));
    assert_eq!(manifest.sha256.len(), 64);
    let DbUrl::Postgres(source) = &db.url else {
        unreachable!()
    };
    assert_eq!(&manifest.source, source);
    assert_eq!(manifest.tables["residents"], 2);
    assert_eq!(manifest.tables["change_history"], 3);
    assert_eq!(manifest.tables["outbox"], 3);
    assert_eq!(manifest.tables["provision_log"], 1);
    let on_disk: batch::Manifest =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    assert_eq!(on_disk, manifest);
    assert_eq!(
        std::fs::metadata(dir.join(&manifest.file)).unwrap().len(),
        manifest.bytes
    );

    let fresh = TestDb::new(Backend::Postgres).unwrap();
    let restored = batch::restore(&manifest_path, &fresh.url, false).unwrap();
    assert_eq!(restored, manifest);
    let mut conn = fresh.url.connect().unwrap();
    assert_eq!(contents(&mut conn), original);
    assert!(!juki_node::store::db::has_pending_migrations(&mut conn).unwrap());
    drop(conn);

    // A PostgreSQL backup does not restore into SQLite.
    let sqlite = TestDb::new(Backend::Sqlite).unwrap();
    let err = batch::restore(&manifest_path, &sqlite.url, false).unwrap_err();
    assert!(
        err.to_string().contains("cannot be restored into a sqlite"),
        "{err}"
    );

    // Row counts that do not match the manifest fail the restore.
    let mut wrong = manifest.clone();
    *wrong.tables.get_mut("residents").unwrap() += 1;
    let wrong_path = dir.join("wrong.manifest.json");
    std::fs::write(&wrong_path, serde_json::to_string(&wrong).unwrap()).unwrap();
    let other = TestDb::new(Backend::Postgres).unwrap();
    let err = batch::restore(&wrong_path, &other.url, false).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("row counts differ")
            && text.contains("residents: restored Some(2), manifest Some(3)"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn pg_corrupted_backup_is_refused() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    populated(&db).await;
    let dir = temp_dir("pg-corrupt");
    let (manifest, manifest_path) =
        batch::backup(&db.url, &dir, jiff::Timestamp::now(), None).unwrap();
    let file = dir.join(&manifest.file);
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let fresh = TestDb::new(Backend::Postgres).unwrap();
    let err = batch::restore(&manifest_path, &fresh.url, true).unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    // Nothing was written.
    let mut conn = fresh.url.connect().unwrap();
    assert_eq!(pg_relations(&mut conn), 0);
    // A truncated file is refused too.
    std::fs::write(&file, b"PGDMP").unwrap();
    let err = batch::restore(&manifest_path, &fresh.url, false).unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert_eq!(pg_relations(&mut conn), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

async fn pg_non_empty_target_needs_force() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let state = populated(&db).await;
    let original = contents(&mut state.db.pool.get().unwrap());
    let dir = temp_dir("pg-force");
    let (_, manifest_path) = batch::backup(&db.url, &dir, jiff::Timestamp::now(), None).unwrap();

    // The target is a node database with other contents (one different update).
    let target = TestDb::new(Backend::Postgres).unwrap();
    let other = target.state();
    let mut conn = other.db.pool.get().unwrap();
    diesel::insert_into(residents::table)
        .values(ResidentRow {
            resident_code: "11111111119".into(),
            individual_number: None,
            name: "他".into(),
            name_kana: "ホカ".into(),
            former_surname: None,
            alias: None,
            birth_date: "2000-01-01".into(),
            sex: "2".into(),
            address: "どこか".into(),
            municipality_code: OWN.into(),
            status: "active".into(),
            updated_at: NOW.into(),
            permanent_domicile: None,
            domicile_head: None,
        })
        .execute(&mut conn)
        .unwrap();
    let before = contents(&mut conn);
    drop(conn);
    drop(other);
    let err = batch::restore(&manifest_path, &target.url, false).unwrap_err();
    assert!(
        err.to_string().contains("not empty") && err.to_string().contains("--force"),
        "{err}"
    );
    let mut conn = target.url.connect().unwrap();
    assert_eq!(contents(&mut conn), before);
    drop(conn);
    // Even an empty migrated database counts as not empty (its tables would clash).
    let migrated = TestDb::new(Backend::Postgres).unwrap();
    drop(migrated.state());
    assert!(batch::restore(&manifest_path, &migrated.url, false).is_err());

    batch::restore(&manifest_path, &target.url, true).unwrap();
    let mut conn = target.url.connect().unwrap();
    assert_eq!(contents(&mut conn), original);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `batch backup --date D` with DATABASE_URL (the operator's Job) and `restore` on PostgreSQL;
/// a missing or failing pg_dump is named.
async fn pg_backup_and_restore_commands() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let state = populated(&db).await;
    let original = contents(&mut state.db.pool.get().unwrap());
    let DbUrl::Postgres(url) = &db.url else {
        unreachable!()
    };
    let dir = temp_dir("pg-cli");
    let backup = |envs: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_juki-node"));
        cmd.args(["batch", "backup", "--date", "2024-06-03"])
            .env_remove("JUKI_CONFIG")
            .env_remove("JUKI_DATABASE_URL")
            .env_remove("JUKI_PG_DUMP")
            .env("JUKI_BACKUP_DIR", &dir)
            .env("DATABASE_URL", url);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = backup(&[("JUKI_PG_DUMP", "/nonexistent/pg_dump")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pg_dump not found"), "{stderr}");
    let failing = dir.join("failing-pg_dump");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        &failing,
        "#!/bin/sh\necho 'pg_dump: error: server version mismatch' >&2\nexit 1\n",
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = backup(&[("JUKI_PG_DUMP", failing.to_str().unwrap())]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pg_dump failed") && stderr.contains("server version mismatch"),
        "{stderr}"
    );

    let out = backup(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(manifest["format"], json!("postgres-pg_dump"));
    assert_eq!(manifest["operatingDate"], json!("2024-06-03"));
    let manifest_path = dir.join(format!(
        "{}.manifest.json",
        manifest["file"].as_str().unwrap()
    ));
    let fresh = TestDb::new(Backend::Postgres).unwrap();
    let DbUrl::Postgres(fresh_url) = &fresh.url else {
        unreachable!()
    };
    let restore = |force: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_juki-node"));
        cmd.args([
            "restore",
            "--manifest",
            manifest_path.to_str().unwrap(),
            "--database-url",
            fresh_url,
        ])
        .env_remove("JUKI_PG_RESTORE");
        if force {
            cmd.arg("--force");
        }
        cmd.output().unwrap()
    };
    let out = restore(false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let restored: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(restored["sha256"], manifest["sha256"]);
    assert_eq!(contents(&mut fresh.url.connect().unwrap()), original);
    let out = restore(false);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
    assert!(restore(true).status.success());
    assert_eq!(contents(&mut fresh.url.connect().unwrap()), original);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Replicas of a PostgreSQL node start together and each migrates the shared database first:
/// every one must succeed (the migrations and guards run one at a time under a lock).
fn pg_concurrent_migrations_of_one_fresh_database_all_succeed() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let url = db.url.clone();
    let replicas: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                juki_node::store::db::run_migrations(&mut url.connect().unwrap())
                    .map_err(|e| e.to_string())
            })
        })
        .collect();
    let outcomes: Vec<Result<Vec<String>, String>> =
        replicas.into_iter().map(|r| r.join().unwrap()).collect();
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:#?}");
    // One replica applied them all; the others found nothing left to do.
    let applied: Vec<usize> = outcomes.iter().map(|o| o.as_ref().unwrap().len()).collect();
    assert_eq!(applied.iter().filter(|n| **n > 0).count(), 1, "{applied:?}");
}

mod sqlite {
    #[actix_web::test]
    async fn daily_statistics_are_stored_and_rerunnable() {
        super::daily_statistics_are_stored_and_rerunnable(super::Backend::Sqlite).await
    }

    #[actix_web::test]
    async fn the_weekly_report_and_the_monthly_audit() {
        super::the_weekly_report_sums_the_weeks_statistics_and_the_monthly_audit_counts_last_months_provisions(super::Backend::Sqlite).await
    }
}

mod postgres {
    #[actix_web::test]
    async fn the_weekly_report_and_the_monthly_audit() {
        super::the_weekly_report_sums_the_weeks_statistics_and_the_monthly_audit_counts_last_months_provisions(super::Backend::Postgres).await
    }

    #[actix_web::test]
    async fn backup_restores_every_table_into_a_fresh_database() {
        super::pg_backup_restores_every_table_into_a_fresh_database().await
    }

    #[actix_web::test]
    async fn corrupted_backup_is_refused() {
        super::pg_corrupted_backup_is_refused().await
    }

    #[actix_web::test]
    async fn non_empty_target_needs_force() {
        super::pg_non_empty_target_needs_force().await
    }

    #[actix_web::test]
    async fn backup_and_restore_commands() {
        super::pg_backup_and_restore_commands().await
    }

    #[actix_web::test]
    async fn daily_statistics_are_stored_and_rerunnable() {
        super::daily_statistics_are_stored_and_rerunnable(super::Backend::Postgres).await
    }

    #[test]
    fn concurrent_migrations_of_one_fresh_database_all_succeed() {
        super::pg_concurrent_migrations_of_one_fresh_database_all_succeed()
    }
}
