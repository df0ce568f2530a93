//! The seed: past inquiries and fault reports about operating jukinet, with their answers,
//! written for this project in Japanese (`data/seed.json`). The demo, the web UI and the search
//! quality test (`data/queries.json`, recall@5) use them.

use diesel::Connection as _;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::json;

use crate::domain::ticket::{Change, NewTicket};
use crate::domain::{Channel, Kind};
use crate::error::Error;
use crate::service::CallCenter;
use crate::store::tickets as store;

/// The seed tickets.
pub const SEED_JSON: &str = include_str!("../data/seed.json");
/// The labelled queries: each with the seed keys that answer it.
pub const QUERIES_JSON: &str = include_str!("../data/queries.json");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedTicket {
    pub key: String,
    pub kind: String,
    pub org: String,
    pub reporter: String,
    pub channel: String,
    pub category: String,
    #[serde(default)]
    pub nodes: Vec<String>,
    pub subject: String,
    pub body: String,
    pub answer: String,
    /// Days before the load that the ticket was received.
    pub days_ago: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelledQuery {
    pub q: String,
    pub relevant: Vec<String>,
}

pub fn tickets() -> Vec<SeedTicket> {
    serde_json::from_str(SEED_JSON).expect("data/seed.json is valid (tested)")
}

pub fn queries() -> Vec<LabelledQuery> {
    serde_json::from_str(QUERIES_JSON).expect("data/queries.json is valid (tested)")
}

/// Loads the seed into an empty database (answered and closed, as past tickets are); returns
/// the ids by seed key. A database with tickets is left alone.
pub async fn load(cc: &CallCenter) -> Result<Vec<(String, i64)>, Error> {
    let now = cc.clock.now();
    let seed = tickets();
    let ids = cc
        .db
        .write(move |c| {
            if store::counts(c)?.0 > 0 {
                return Ok(Vec::new());
            }
            c.transaction(|c| {
                let mut ids = Vec::new();
                for s in &seed {
                    let at = now - SignedDuration::from_hours(24 * s.days_ago);
                    ids.push((s.key.clone(), insert_answered(c, s, at)?));
                }
                Ok(ids)
            })
        })
        .await?;
    cc.rebuild_index().await?;
    Ok(ids)
}

fn insert_answered(
    c: &mut crate::store::DbConnection,
    s: &SeedTicket,
    at: Timestamp,
) -> Result<i64, Error> {
    let new = NewTicket {
        kind: Kind::parse(&s.kind).ok_or_else(|| Error::Config(format!("seed {}: kind", s.key)))?,
        org: Some(s.org.clone()),
        reporter: s.reporter.clone(),
        channel: Channel::parse(&s.channel)
            .ok_or_else(|| Error::Config(format!("seed {}: channel", s.key)))?,
        subject: s.subject.clone(),
        body: s.body.clone(),
        nodes: s.nodes.clone(),
        category: Some(s.category.clone()),
    };
    let staff = "callcenter-seed";
    let t = store::insert(c, &new, staff, at, &json!({ "seed": s.key }))?;
    let answered = at + SignedDuration::from_mins(50);
    let steps: Vec<Change> = match new.kind {
        Kind::Inquiry => vec![Change::Answer(s.answer.clone()), Change::Close],
        Kind::Fault => vec![
            Change::Isolate,
            Change::Answer(s.answer.clone()),
            Change::ArrangeRecovery {
                vendor: "保守ベンダー".into(),
                expected_at: answered + SignedDuration::from_hours(2),
            },
            Change::Recover,
            Change::Close,
        ],
    };
    for (i, step) in steps.iter().enumerate() {
        let when = answered + SignedDuration::from_mins(10 * i as i64);
        store::apply(c, t.id, step, staff, when, &|_| Ok(()))?;
    }
    Ok(t.id)
}
