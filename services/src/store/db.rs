//! Database access: one connection type over SQLite and PostgreSQL, the pool, and the embedded
//! migrations.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::r2d2::{self, ManageConnection, R2D2Connection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

use crate::error::Error;

/// The embedded, reversible migrations (one portable set for both backends).
pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// A connection to either backend.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Pg(PgConnection),
    Sqlite(SqliteConnection),
}

impl std::fmt::Debug for DbConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DbConnection::Pg(_) => "DbConnection::Pg",
            DbConnection::Sqlite(_) => "DbConnection::Sqlite",
        })
    }
}

/// Where the database lives, parsed from the configured URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// A file path (from `sqlite://PATH` or a plain path).
    Sqlite(String),
    /// A libpq URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl DbUrl {
    pub fn parse(url: &str) -> Result<Self, Error> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(DbUrl::Postgres(url.to_owned()))
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                Err(Error::Config("sqlite:// URL without a path".into()))
            } else {
                Ok(DbUrl::Sqlite(path.to_owned()))
            }
        } else if url.is_empty() {
            Err(Error::Config("empty database URL".into()))
        } else if url.contains("://") {
            Err(Error::Config(format!(
                "unsupported database URL scheme in {url:?} (use sqlite://PATH, a plain path or postgres://)"
            )))
        } else {
            Ok(DbUrl::Sqlite(url.to_owned()))
        }
    }

    pub fn backend(&self) -> &'static str {
        match self {
            DbUrl::Sqlite(_) => "sqlite",
            DbUrl::Postgres(_) => "postgres",
        }
    }

    /// Opens one connection (SQLite connections get WAL mode and a busy timeout).
    pub fn connect(&self) -> Result<DbConnection, r2d2::Error> {
        match self {
            DbUrl::Sqlite(path) => {
                let mut conn =
                    SqliteConnection::establish(path).map_err(r2d2::Error::ConnectionError)?;
                // WAL with synchronous = NORMAL: commits do not wait for fsync (the WAL is
                // synced at checkpoints); an OS or power failure may lose the last commits but
                // never corrupts the database, and a process crash loses nothing.
                conn.batch_execute(
                    "PRAGMA busy_timeout = 15000; PRAGMA journal_mode = WAL; \
                     PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;",
                )
                .map_err(r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(conn))
            }
            DbUrl::Postgres(url) => {
                let mut conn =
                    PgConnection::establish(url).map_err(r2d2::Error::ConnectionError)?;
                // diesel prepares and caches its statements; after five executions PostgreSQL
                // may switch one to a generic plan chosen while the tables were still small and
                // keep it: the batch lookups (`resident_code = ANY($1)`, `seq = ANY($2)`) then
                // became sequential scans whose cost grew with the tables (found by the
                // throughput benchmark: ingestion fell from 6,400 to 3,800 updates/s between
                // 20,000 and 60,000 rows). Custom plans see the tables' current size.
                conn.batch_execute("SET plan_cache_mode = force_custom_plan")
                    .map_err(r2d2::Error::QueryError)?;
                Ok(DbConnection::Pg(conn))
            }
        }
    }
}

/// r2d2 manager that opens the backend named by the URL.
#[derive(Debug, Clone)]
pub struct Manager {
    url: DbUrl,
}

impl ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConnection, r2d2::Error> {
        self.url.connect()
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), r2d2::Error> {
        conn.ping().map(|_| ()).map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.is_broken()
    }
}

pub type Pool = r2d2::Pool<Manager>;
pub type PooledConnection = r2d2::PooledConnection<Manager>;

/// The node's database as the tasks and handlers use it: the pool, the URL it connects to
/// (the provision desk opens its own connection there), and the writers' turn on SQLite. The
/// closures run on the blocking thread pool, so diesel's synchronous calls never stall the
/// async workers.
#[derive(Debug, Clone)]
pub struct Db {
    pub url: DbUrl,
    pub pool: Pool,
    /// Writers of this node take turns here first on SQLite (see [`Db::write`]).
    writes: Arc<Mutex<()>>,
}

impl Db {
    /// A database over `pool`, which connects to `url`.
    pub fn new(url: DbUrl, pool: Pool) -> Db {
        Db {
            url,
            pool,
            writes: Arc::default(),
        }
    }

    /// A database with a new pool of at most `size` connections to `url`.
    pub fn open(url: &DbUrl, size: u32) -> Db {
        Db::new(url.clone(), pool(url, size))
    }

    /// The writers' turn, for a writer with its own connection (the provision desk).
    pub fn writes(&self) -> Arc<Mutex<()>> {
        Arc::clone(&self.writes)
    }

    /// Runs `f` with a pooled connection on the blocking thread pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, Error> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .await
        .map_err(|e| Error::Blocking(e.to_string()))?
    }

    /// [`Db::read`] for a writing transaction. On SQLite the node's writers take turns on an
    /// in-process mutex before they ask SQLite for its write lock: a writer that finds the
    /// database locked waits in SQLite's busy handler, which sleeps (1, 2, 5 … 100 ms) instead
    /// of waking when the lock is free. Under a steady stream of ingestion transactions the
    /// relay's writes lost that race again and again (the throughput benchmark found the
    /// national server had applied a quarter of the updates when the ingestion ended).
    pub async fn write<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, Error> + Send + 'static,
    {
        let pool = self.pool.clone();
        let writes = self.writes.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool.get()?;
            let _turn = matches!(*conn, DbConnection::Sqlite(_))
                .then(|| writes.lock().unwrap_or_else(|e| e.into_inner()));
            f(&mut conn)
        })
        .await
        .map_err(|e| Error::Blocking(e.to_string()))?
    }
}

/// Builds a pool without connecting yet (readiness reports an unreachable database).
pub fn pool(url: &DbUrl, max_size: u32) -> Pool {
    r2d2::Pool::builder()
        .max_size(max_size)
        .min_idle(Some(0))
        .connection_timeout(Duration::from_secs(5))
        .build_unchecked(Manager { url: url.clone() })
}

fn migration_error(step: &str, e: impl std::fmt::Display) -> Error {
    Error::Migration(format!("{step}: {e}"))
}

/// The PostgreSQL advisory lock the migrations run under (any constant the node uses for
/// nothing else): the replicas of a node start together on one database.
const MIGRATION_LOCK: i64 = 0x6a756b69_6d696772; // "jukimigr"

/// Applies every pending migration and the append-only guards; returns the versions applied.
/// On PostgreSQL one connection at a time does (a session advisory lock): replicas starting
/// together would otherwise create the same tables at once, and all but one would fail.
pub fn run_migrations(conn: &mut DbConnection) -> Result<Vec<String>, Error> {
    if let DbConnection::Pg(c) = conn {
        diesel::sql_query(format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))
            .execute(c)
            .map_err(|e| migration_error("lock", e))?;
    }
    let outcome = migrate_and_guard(conn);
    if let DbConnection::Pg(c) = conn {
        // Released with the session anyway; explicitly so a pooled connection does not keep it.
        diesel::sql_query(format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"))
            .execute(c)
            .map_err(|e| migration_error("unlock", e))?;
    }
    outcome
}

fn migrate_and_guard(conn: &mut DbConnection) -> Result<Vec<String>, Error> {
    let applied = match conn {
        DbConnection::Pg(c) => c.run_pending_migrations(MIGRATIONS).map(versions),
        DbConnection::Sqlite(c) => c.run_pending_migrations(MIGRATIONS).map(versions),
    };
    let applied = applied.map_err(|e| migration_error("apply", e))?;
    install_guards(conn)?;
    Ok(applied)
}

/// The append-only logs: rows are only ever inserted.
pub const APPEND_ONLY: &[&str] = &["provision_log"];

/// Installs (idempotently) the triggers that refuse UPDATE, DELETE and (PostgreSQL) TRUNCATE on
/// the append-only logs. Their syntax differs per backend, so they are not in the portable
/// migrations; dropping the table (reverting its migration) drops them too.
pub fn install_guards(conn: &mut DbConnection) -> Result<(), Error> {
    let sql = match conn {
        DbConnection::Sqlite(_) => APPEND_ONLY
            .iter()
            .map(|t| {
                format!(
                    "CREATE TRIGGER IF NOT EXISTS {t}_no_update BEFORE UPDATE ON {t} \
                     BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END; \
                     CREATE TRIGGER IF NOT EXISTS {t}_no_delete BEFORE DELETE ON {t} \
                     BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END;"
                )
            })
            .collect::<String>(),
        DbConnection::Pg(_) => {
            let mut sql = "CREATE OR REPLACE FUNCTION juki_append_only() RETURNS trigger \
                 LANGUAGE plpgsql AS $$ BEGIN \
                 RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$;"
                .to_owned();
            for t in APPEND_ONLY {
                sql.push_str(&format!(
                    " CREATE OR REPLACE TRIGGER {t}_append_only \
                     BEFORE UPDATE OR DELETE OR TRUNCATE ON {t} \
                     FOR EACH STATEMENT EXECUTE FUNCTION juki_append_only();"
                ));
            }
            sql
        }
    };
    conn.batch_execute(&sql)
        .map_err(|e| migration_error("append-only guards", e))
}

/// Reverts every applied migration; returns the versions reverted.
pub fn revert_all_migrations(conn: &mut DbConnection) -> Result<Vec<String>, Error> {
    let reverted = match conn {
        DbConnection::Pg(c) => c.revert_all_migrations(MIGRATIONS).map(versions),
        DbConnection::Sqlite(c) => c.revert_all_migrations(MIGRATIONS).map(versions),
    };
    reverted.map_err(|e| migration_error("revert", e))
}

/// True when some embedded migration is not applied yet.
pub fn has_pending_migrations(conn: &mut DbConnection) -> Result<bool, Error> {
    let pending = match conn {
        DbConnection::Pg(c) => c.has_pending_migration(MIGRATIONS),
        DbConnection::Sqlite(c) => c.has_pending_migration(MIGRATIONS),
    };
    pending.map_err(|e| migration_error("check", e))
}

fn versions(v: Vec<diesel::migration::MigrationVersion<'_>>) -> Vec<String> {
    v.into_iter().map(|v| v.to_string()).collect()
}
