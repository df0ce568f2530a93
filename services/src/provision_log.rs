//! The provision log's writer. Every agency query is answered only after its log row is
//! committed; the rows of concurrent queries are committed together (one multi-row INSERT and
//! one commit per batch) by one writer thread, so that the log costs the database a fraction of
//! a write per query instead of a transaction each. A batch that fails withholds every answer
//! of the batch (503), so nothing is provided without its log row.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use diesel::prelude::*;
use tokio::sync::oneshot;

use crate::db::{DbConnection, Pool};
use crate::error::Error;
use crate::schema::provision_log;

/// One row of `provision_log`.
#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = provision_log)]
pub struct LogRow {
    pub id: String,
    pub at: String,
    pub recipient: String,
    pub affair: String,
    pub reason: String,
    pub query_kind: String,
    pub resident_code: Option<String>,
    /// JSON array of the items given (or that would have been).
    pub items: String,
    pub outcome: String,
    pub detail: String,
}

/// Most rows committed in one batch.
const MAX_BATCH: usize = 512;

type Pending = (LogRow, oneshot::Sender<Result<(), String>>);

/// Inserts `rows`: on PostgreSQL as one multi-row INSERT (one statement, atomic, one commit;
/// up to MAX_BATCH rows), on SQLite row by row in one transaction.
pub fn insert(conn: &mut DbConnection, rows: &[LogRow]) -> Result<(), Error> {
    match conn {
        DbConnection::Pg(c) if rows.len() <= MAX_BATCH => {
            diesel::insert_into(provision_log::table)
                .values(rows)
                .execute(c)?;
            Ok(())
        }
        _ => conn.transaction(|conn| {
            crate::store::insert_rows!(conn, provision_log::table, rows);
            Ok(())
        }),
    }
}

/// The handle the handlers send their rows to; the thread stops when the last handle is gone.
#[derive(Debug, Clone)]
pub struct LogWriter {
    tx: mpsc::Sender<Pending>,
}

impl LogWriter {
    /// Starts the writer thread on `pool`; on SQLite it takes its turn on `writes` like every
    /// other writer of the node.
    pub fn start(pool: Pool, writes: Arc<Mutex<()>>) -> LogWriter {
        let (tx, rx) = mpsc::channel::<Pending>();
        let spawned = std::thread::Builder::new()
            .name("provision-log".into())
            .spawn(move || run(&pool, &writes, &rx));
        if let Err(e) = spawned {
            // Without the thread every write answers 503 (the receiver is gone).
            tracing::error!("provision log writer not started: {e}");
        }
        LogWriter { tx }
    }

    /// Commits `row` (with others waiting at the same time); Ok once it is in the database.
    pub async fn write(&self, row: LogRow) -> Result<(), Error> {
        let (done, committed) = oneshot::channel();
        let stopped = || Error::NotReady("the provision log writer stopped".into());
        self.tx.send((row, done)).map_err(|_| stopped())?;
        committed
            .await
            .map_err(|_| stopped())?
            .map_err(|e| Error::NotReady(format!("provision log not written: {e}")))
    }
}

fn run(pool: &Pool, writes: &Mutex<()>, rx: &mpsc::Receiver<Pending>) {
    // The writer keeps its connection (no pool checkout and its ping per batch); it takes a new
    // one after an error.
    let mut held: Option<crate::db::PooledConnection> = None;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (rows, waiters): (Vec<LogRow>, Vec<_>) = batch.into_iter().unzip();
        let conn = match held.take() {
            Some(conn) => Ok(conn),
            None => pool.get().map_err(Error::from),
        };
        let result = conn.and_then(|mut conn| {
            let written = {
                let _turn = matches!(*conn, DbConnection::Sqlite(_))
                    .then(|| writes.lock().unwrap_or_else(|e| e.into_inner()));
                insert(&mut conn, &rows)
            };
            if written.is_ok() {
                held = Some(conn);
            }
            written
        });
        if let Err(e) = &result {
            tracing::error!(rows = rows.len(), "provision log: batch not written: {e}");
        }
        let result = result.map_err(|e| e.to_string());
        for done in waiters {
            let _ = done.send(result.clone());
        }
    }
}
