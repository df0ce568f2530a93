//! The provision desk: one thread answers the agency queries in batches. The handlers hand it
//! their validated queries; it takes every query waiting, reads the residents asked for by code
//! in one SELECT, works out each answer and its log row (provision.rs), commits all the rows in
//! one multi-row INSERT, and only then releases the answers. A query costs the database a share
//! of two statements instead of a lookup and a log write of its own, and crosses threads twice
//! (handler → desk → handler). A batch that fails withholds every answer of it (503), so
//! nothing is provided without its log row.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::oneshot;

use crate::domain::identity::NodeIdentity;
use diesel::connection::SimpleConnection;

use crate::error::Error;
use crate::provision::log::{self, LogRow, MAX_BATCH};
use crate::provision::{AllowList, Asked};
use crate::store::db::{Db, DbConnection, DbUrl};

/// Whose rules answer a query: the node and its allow-list (the same for every query of a
/// running node; tests change them between requests).
#[derive(Debug, Clone)]
pub struct Scope {
    pub node: NodeIdentity,
    pub allow: Arc<AllowList>,
}

impl Scope {
    fn same(&self, other: &Scope) -> bool {
        self.node == other.node && Arc::ptr_eq(&self.allow, &other.allow)
    }
}

/// What the desk is asked to do for one request.
#[derive(Debug)]
enum Work {
    /// Answer a query (and log it).
    Ask(Scope, Asked),
    /// Log an answer decided before the query was read (a refusal of the caller).
    Log(LogRow, Result<Value, Error>),
}

type Reply = oneshot::Sender<Result<Result<Value, Error>, String>>;

/// The handle the handlers send their work to; the thread stops when the last handle is gone.
#[derive(Debug, Clone)]
pub struct Desk {
    tx: mpsc::Sender<(Work, Reply)>,
}

impl Desk {
    /// Starts the desk thread with its own connection to the node's database; on SQLite its
    /// log writes take their turn like every other writer of the node.
    pub fn start(db: &Db) -> Desk {
        let (url, writes) = (db.url.clone(), db.writes());
        // One thread: a second one (measured) split the waiting queries into batches half as
        // large, and the cost of a batch is mostly fixed (two statements), so it answered fewer.
        let (tx, rx) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("provision-desk".into())
            .spawn(move || run(&url, &writes, &rx));
        if let Err(e) = spawned {
            // Without the thread every query answers 503 (the receiver is gone).
            tracing::error!("provision desk not started: {e}");
        }
        Desk { tx }
    }

    /// Answers `asked` once its log row is committed: Ok(the answer or the refusal to give),
    /// Err when the query could not be answered and logged.
    pub async fn ask(&self, scope: Scope, asked: Asked) -> Result<Result<Value, Error>, Error> {
        self.send(Work::Ask(scope, asked)).await
    }

    /// Commits `row` for an answer decided without the desk; returns that answer.
    pub async fn log(
        &self,
        row: LogRow,
        answer: Result<Value, Error>,
    ) -> Result<Result<Value, Error>, Error> {
        self.send(Work::Log(row, answer)).await
    }

    async fn send(&self, work: Work) -> Result<Result<Value, Error>, Error> {
        let (reply, answered) = oneshot::channel();
        let stopped = || Error::NotReady("the provision desk stopped".into());
        self.tx.send((work, reply)).map_err(|_| stopped())?;
        answered
            .await
            .map_err(|_| stopped())?
            .map_err(|e| Error::NotReady(format!("provision not answered and logged: {e}")))
    }
}

/// The desk's own connection. On PostgreSQL its statements keep generic plans (planned once,
/// like pgbench's prepared statements; the node's pool replans every execution, see
/// `DbUrl::connect`) with sequential scans off: every query of the desk has an index, and a
/// plan made while a table was still small must not stay a sequential scan as it grows.
fn connect(url: &DbUrl) -> Result<DbConnection, Error> {
    let mut conn = url
        .connect()
        .map_err(|e| Error::NotReady(format!("provision desk: {e}")))?;
    if let DbConnection::Pg(c) = &mut conn {
        c.batch_execute("SET plan_cache_mode = auto; SET enable_seqscan = off")?;
    }
    Ok(conn)
}

/// Takes the next batch: waits for one piece of work, then takes what else is waiting.
fn next_batch(rx: &mpsc::Receiver<(Work, Reply)>) -> Option<Vec<(Work, Reply)>> {
    let mut batch = vec![rx.recv().ok()?];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
    Some(batch)
}

fn run(url: &DbUrl, writes: &Mutex<()>, rx: &mpsc::Receiver<(Work, Reply)>) {
    // The desk keeps its connection; it opens a new one after an error.
    let mut held: Option<DbConnection> = None;
    while let Some(batch) = next_batch(rx) {
        let (work, replies): (Vec<Work>, Vec<Reply>) = batch.into_iter().unzip();
        let conn = match held.take() {
            Some(conn) => Ok(conn),
            None => connect(url),
        };
        let result = conn.and_then(|mut conn| {
            let answers = serve(&mut conn, writes, work);
            if answers.is_ok() {
                held = Some(conn);
            }
            answers
        });
        match result {
            Ok(answers) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(e) => {
                tracing::error!(queries = replies.len(), "provision desk: batch failed: {e}");
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Answers a batch and commits its log rows; the answers in the order of `work`.
fn serve(
    conn: &mut DbConnection,
    writes: &Mutex<()>,
    work: Vec<Work>,
) -> Result<Vec<Result<Value, Error>>, Error> {
    // The queries go to provision.rs together (one call per scope, in order); the answers
    // decided before keep their place.
    let mut groups: Vec<(Scope, Vec<Asked>)> = Vec::new();
    let mut slots = Vec::with_capacity(work.len());
    for w in work {
        match w {
            Work::Ask(scope, asked) => {
                match groups.last_mut() {
                    Some((last, group)) if last.same(&scope) => group.push(asked),
                    _ => groups.push((scope, vec![asked])),
                }
                slots.push(None);
            }
            Work::Log(row, answer) => slots.push(Some((answer, row))),
        }
    }
    let mut answered = Vec::with_capacity(slots.len());
    for (scope, asked) in &groups {
        answered.extend(crate::provision::query_batch(
            conn,
            &scope.node,
            &scope.allow,
            asked,
        )?);
    }
    let mut answered = answered.into_iter();
    let mut rows = Vec::with_capacity(slots.len());
    let mut answers = Vec::with_capacity(slots.len());
    for slot in slots {
        let (answer, row) = match slot {
            Some(decided) => decided,
            None => answered
                .next()
                .ok_or_else(|| Error::Corrupt("a query of the batch got no answer".into()))?,
        };
        rows.push(row);
        answers.push(answer);
    }
    let _turn = matches!(conn, DbConnection::Sqlite(_))
        .then(|| writes.lock().unwrap_or_else(|e| e.into_inner()));
    log::insert(conn, &rows)?;
    Ok(answers)
}
