//! The store: tickets, their append-only history and the alert links, on SQLite or PostgreSQL
//! through diesel. Actions are plain functions over a connection; the blocking runner is
//! [`Db`] (tokio's blocking pool, no actix here).

pub mod db;
pub mod schema;
pub mod tickets;

use std::sync::{Arc, Mutex};

pub use db::{DbConnection, DbUrl, Pool};

use crate::error::Error;

/// The pool and, for SQLite, the turn every writer takes before it asks SQLite for its write
/// lock (SQLite's busy handler sleeps instead of waking when the lock is free; juki-node found
/// the same under load).
#[derive(Debug, Clone)]
pub struct Db {
    pub pool: Pool,
    pub url: DbUrl,
    writes: Arc<Mutex<()>>,
}

impl Db {
    pub fn new(url: DbUrl, pool_size: u32) -> Db {
        Db {
            pool: db::pool(&url, pool_size.max(1)),
            url,
            writes: Arc::default(),
        }
    }

    /// Runs `f` with a pooled connection on the blocking thread pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, Error> + Send + 'static,
    {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || f(&mut *pool.get()?))
            .await
            .map_err(|e| Error::Blocking(e.to_string()))?
    }

    /// [`Db::read`] for a writing transaction (SQLite writers take turns first).
    pub async fn write<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut DbConnection) -> Result<T, Error> + Send + 'static,
    {
        let db = self.clone();
        tokio::task::spawn_blocking(move || db.write_blocking(f))
            .await
            .map_err(|e| Error::Blocking(e.to_string()))?
    }

    /// [`Db::write`] on the calling thread.
    pub fn write_blocking<T>(
        &self,
        f: impl FnOnce(&mut DbConnection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let mut conn = self.pool.get()?;
        let _turn = matches!(*conn, DbConnection::Sqlite(_))
            .then(|| self.writes.lock().unwrap_or_else(|e| e.into_inner()));
        f(&mut conn)
    }
}
