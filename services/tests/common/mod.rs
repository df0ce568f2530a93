//! Test harness: a fresh database per test on SQLite (temp file) or PostgreSQL (a new database
//! on the server named by JUKINET_TEST_PG_URL, dropped afterwards).

#![allow(dead_code)]

pub mod pki;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use juki_node::domain::clock::FixedClock;
use juki_node::domain::identity::NodeIdentity;
use juki_node::http::routes::AppState;
use juki_node::node::Node;
use juki_node::store::db::{self, Db, DbUrl};

pub const OWN: &str = "131016";
/// The fixed "now" of the tests: 2024-06-03 12:00 in Tokyo.
pub const NOW: &str = "2024-06-03T03:00:00Z";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug)]
enum Cleanup {
    Files(PathBuf),
    PgDatabase { admin_url: String, name: String },
}

/// A database that lives as long as the test.
#[derive(Debug)]
pub struct TestDb {
    pub url: DbUrl,
    cleanup: Cleanup,
}

fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{nanos}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let prefix = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestDb {
    /// A fresh database, or None (after printing "skipped: ...") when PostgreSQL is not
    /// configured. With JUKINET_REQUIRE_PG=1 a missing server fails the test instead.
    pub fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{}.db", unique("juki-node-test")));
                Some(TestDb {
                    url: DbUrl::Sqlite(path.to_string_lossy().into_owned()),
                    cleanup: Cleanup::Files(path),
                })
            }
            Backend::Postgres => {
                let Some(admin_url) = std::env::var("JUKINET_TEST_PG_URL")
                    .ok()
                    .filter(|u| !u.is_empty())
                else {
                    if std::env::var("JUKINET_REQUIRE_PG").as_deref() == Ok("1") {
                        panic!(
                            "JUKINET_REQUIRE_PG=1 but JUKINET_TEST_PG_URL is unset (run scripts/postgres start)"
                        );
                    }
                    eprintln!(
                        "skipped: JUKINET_TEST_PG_URL is unset (eval \"$(scripts/postgres start)\")"
                    );
                    return None;
                };
                let name = unique("jt");
                let mut admin = PgConnection::establish(&admin_url)
                    .unwrap_or_else(|e| panic!("connect to JUKINET_TEST_PG_URL: {e}"));
                admin
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .expect("create test database");
                Some(TestDb {
                    url: DbUrl::Postgres(with_database(&admin_url, &name)),
                    cleanup: Cleanup::PgDatabase { admin_url, name },
                })
            }
        }
    }

    /// A migrated CS node of municipality 131016 with a fixed clock.
    pub fn state(&self) -> AppState {
        let pool = db::pool(&self.url, 4);
        let mut conn = pool.get().expect("connect");
        db::run_migrations(&mut conn).expect("migrate");
        drop(conn);
        AppState::new(Node::new(
            Db::new(self.url.clone(), pool),
            NodeIdentity::cs(OWN).unwrap(),
            Arc::new(FixedClock(NOW.parse().unwrap())),
        ))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Files(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
                // The delivery directory a node on this database made by default.
                let _ = std::fs::remove_dir_all(path.with_extension("deliveries"));
            }
            Cleanup::PgDatabase { admin_url, name } => {
                if let Ok(mut admin) = PgConnection::establish(admin_url) {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                }
            }
        }
    }
}

#[test]
fn database_name_replacement() {
    assert_eq!(
        with_database("postgres://u@h:1/postgres", "jt_1"),
        "postgres://u@h:1/jt_1"
    );
    assert_eq!(
        with_database("postgres://u@h/postgres?sslmode=disable", "x"),
        "postgres://u@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
}

/// Runs each named `async fn(Backend)` of the test file as two tests, `sqlite::<name>` and
/// `postgres::<name>` (the latter skipped without a server, see [`TestDb::new`]).
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[actix_web::test]
            async fn $name() {
                super::$name(super::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[actix_web::test]
            async fn $name() {
                super::$name(super::Backend::Postgres).await
            })*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_both_backends;
