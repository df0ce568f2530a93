//! Test harness: a fresh database per test on SQLite (temp file) or PostgreSQL (a new database
//! on the server named by JUKINET_TEST_PG_URL, dropped afterwards; JUKINET_REQUIRE_PG=1 makes a
//! missing server fail instead of skip), and the service over it with a manual clock.

#![allow(dead_code)]

pub mod pki;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use jiff::Timestamp;
use juki_calendar::{Calendar, CalendarConfig};
use juki_callcenter::domain::clock::ManualClock;
use juki_callcenter::domain::sla::SlaPolicy;
use juki_callcenter::http::AppState;
use juki_callcenter::http::auth::AuthMode;
use juki_callcenter::service::CallCenter;
use juki_callcenter::store::{Db, DbUrl};

/// Thursday 2026-11-26 10:00 in Tokyo.
pub const NOW: &str = "2026-11-26T01:00:00Z";

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

impl TestDb {
    pub fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{}.db", unique("juki-cc-test")));
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
                    eprintln!("skipped: JUKINET_TEST_PG_URL is unset");
                    return None;
                };
                let name = unique("jcc");
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

    /// A handle on an existing database that does not clean up (another handle does).
    pub fn from_url(url: DbUrl) -> TestDb {
        TestDb {
            url,
            cleanup: Cleanup::Files(PathBuf::new()),
        }
    }

    /// The migrated service with an empty index and a manual clock at [`NOW`].
    pub async fn service(&self) -> (CallCenter, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(NOW.parse::<Timestamp>().unwrap()));
        let cc = juki_callcenter::cli::call_center(
            Db::new(self.url.clone(), 4),
            Calendar::new(&CalendarConfig::default()).unwrap(),
            SlaPolicy::default(),
            clock.clone(),
        )
        .unwrap();
        cc.prepare().await.expect("migrate");
        (cc, clock)
    }

    /// The HTTP state in development mode without a default identity.
    pub async fn state(&self) -> (AppState, Arc<ManualClock>) {
        let (cc, clock) = self.service().await;
        (
            AppState {
                cc,
                auth: AuthMode::Development { default: None },
            },
            clock,
        )
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

/// Runs each named `async fn(Backend)` on SQLite and on PostgreSQL.
#[macro_export]
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
