//! The use cases: each decides who may (domain::authz), writes the store in one transaction,
//! then brings the search index up to date. Nothing here knows HTTP.

use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use juki_calendar::Calendar;
use serde::Serialize;
use serde_json::json;

use crate::domain::alert::{self, Webhook};
use crate::domain::authz::{self, Action};
use crate::domain::clock::Clock;
use crate::domain::sla::{Sla, SlaPolicy};
use crate::domain::ticket::{
    self, Change, HistoryEntry, NewTicket, StateInput, Ticket, TicketInput,
};
use crate::domain::{Caller, Channel, Kind};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::search::{Hit, SearchIndex, SearchQuery};
use crate::store::tickets::{self as store, ListFilter};
use crate::store::{Db, DbConnection};
use diesel::Connection as _;

/// What every handler and task shares.
#[derive(Debug, Clone)]
pub struct CallCenter {
    pub db: Db,
    pub index: Arc<SearchIndex>,
    pub clock: Arc<dyn Clock>,
    pub calendar: Arc<Calendar>,
    pub sla: SlaPolicy,
    pub metrics: Metrics,
    /// The Kubernetes API for the node context (None: not configured).
    pub nodes: Option<crate::nodes::NodeSource>,
}

/// A ticket with its history and service level.
#[derive(Debug, Clone, Serialize)]
pub struct TicketDetail {
    #[serde(flatten)]
    pub ticket: Ticket,
    pub sla: Sla,
    pub history: Vec<HistoryEntry>,
}

/// A ticket in a list, with its service level.
#[derive(Debug, Clone, Serialize)]
pub struct TicketSummary {
    #[serde(flatten)]
    pub ticket: Ticket,
    pub sla: Sla,
}

/// What the webhook did with a notification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AlertOutcome {
    /// Tickets opened.
    pub opened: Vec<i64>,
    /// Firings added to an open ticket of the same fingerprint.
    pub attached: usize,
    /// Firings and resolutions seen before (replays).
    pub duplicates: usize,
    /// Resolutions noted.
    pub resolved: usize,
}

/// The filter of a list request.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub org: Option<String>,
    pub state: Option<String>,
    pub kind: Option<String>,
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

impl CallCenter {
    pub fn sla_of(&self, t: &Ticket) -> Sla {
        self.sla.evaluate(
            &self.calendar,
            t.created_at,
            t.first_answer_at,
            self.clock.now(),
        )
    }

    /// Runs the migrations and fills the search index from the store.
    pub async fn prepare(&self) -> Result<Vec<String>, Error> {
        let applied = self.db.write(crate::store::db::run_migrations).await?;
        self.rebuild_index().await?;
        Ok(applied)
    }

    /// Indexes every stored ticket (chunks of 5,000), then commits once.
    pub async fn rebuild_index(&self) -> Result<u64, Error> {
        let db = self.db.clone();
        let index = Arc::clone(&self.index);
        tokio::task::spawn_blocking(move || -> Result<u64, Error> {
            let mut conn = db.pool.get()?;
            let mut after = 0;
            let mut n = 0u64;
            loop {
                let chunk = store::scan(&mut conn, after, 5000)?;
                let Some(last) = chunk.last() else { break };
                after = last.id;
                n += chunk.len() as u64;
                index.stage(&chunk)?;
            }
            index.commit()?;
            Ok(n)
        })
        .await
        .map_err(|e| Error::Blocking(e.to_string()))?
    }

    async fn reindex(&self, tickets: Vec<Ticket>) -> Result<(), Error> {
        let index = Arc::clone(&self.index);
        tokio::task::spawn_blocking(move || index.upsert(&tickets))
            .await
            .map_err(|e| Error::Blocking(e.to_string()))?
    }

    /// `POST /v1/tickets`.
    pub async fn file(&self, caller: &Caller, input: TicketInput) -> Result<Ticket, Error> {
        let new = input.validate()?;
        authz::decide(caller, Action::File(new.org.as_deref()))?;
        let who = caller.name();
        let now = self.clock.now();
        let t = self
            .db
            .write(move |c| store::insert(c, &new, &who, now, &json!({})))
            .await?;
        self.metrics.filed(t.kind.as_str(), t.channel.as_str());
        self.reindex(vec![t.clone()]).await?;
        Ok(t)
    }

    async fn load(&self, id: i64) -> Result<Ticket, Error> {
        self.db
            .read(move |c| store::get(c, id))
            .await?
            .ok_or_else(|| Error::NotFound(format!("ticket {id}")))
    }

    /// `GET /v1/tickets/{id}`.
    pub async fn detail(&self, caller: &Caller, id: i64) -> Result<TicketDetail, Error> {
        let ticket = self.load(id).await?;
        authz::decide(caller, Action::Read(ticket.org.as_deref()))?;
        let history = self.db.read(move |c| store::history(c, id)).await?;
        Ok(TicketDetail {
            sla: self.sla_of(&ticket),
            ticket,
            history,
        })
    }

    /// `GET /v1/tickets/{id}/context`: the affected nodes as the Kubernetes API shows them now.
    pub async fn context(
        &self,
        caller: &Caller,
        id: i64,
    ) -> Result<(Ticket, Vec<crate::nodes::NodeContext>), Error> {
        let ticket = self.load(id).await?;
        authz::decide(caller, Action::Read(ticket.org.as_deref()))?;
        let Some(source) = &self.nodes else {
            return Err(Error::Upstream(
                "no Kubernetes API configured (--kube)".into(),
            ));
        };
        let mut out = Vec::new();
        for node in &ticket.nodes {
            out.push(source.context(node).await?);
        }
        Ok((ticket, out))
    }

    /// `GET /v1/tickets`.
    pub async fn list(
        &self,
        caller: &Caller,
        req: ListRequest,
    ) -> Result<Vec<TicketSummary>, Error> {
        authz::decide(caller, Action::Browse)?;
        let org = req
            .org
            .filter(|o| !o.is_empty())
            .map(|o| ticket::org_code("org", &o))
            .transpose()?;
        let scope = caller.scope().narrow(caller, org.as_deref())?;
        let state = match req.state.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(crate::domain::State::parse(s).ok_or_else(|| {
                Error::field("state", "invalid_state", format!("unknown state {s:?}"))
            })?),
        };
        let kind = match req.kind.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(k) => Some(Kind::parse(k).ok_or_else(|| {
                Error::field("kind", "invalid_kind", "must be \"inquiry\" or \"fault\"")
            })?),
        };
        let limit = req.limit.unwrap_or(50);
        if !(1..=500).contains(&limit) {
            return Err(Error::field("limit", "out_of_range", "must be 1–500"));
        }
        let filter = ListFilter {
            scope,
            state,
            kind,
            before: req.before,
            limit,
        };
        let tickets = self.db.read(move |c| store::list(c, &filter)).await?;
        Ok(tickets
            .into_iter()
            .map(|t| TicketSummary {
                sla: self.sla_of(&t),
                ticket: t,
            })
            .collect())
    }

    async fn change(&self, caller: &Caller, id: i64, change: Change) -> Result<Ticket, Error> {
        authz::decide(caller, Action::Act)?;
        let who = caller.name();
        let now = self.clock.now();
        let t = self
            .db
            .write(move |c| store::apply(c, id, &change, &who, now, &|_| Ok(())))
            .await?;
        self.reindex(vec![t.clone()]).await?;
        Ok(t)
    }

    /// `POST /v1/tickets/{id}/answer`.
    pub async fn answer(&self, caller: &Caller, id: i64, answer: &str) -> Result<Ticket, Error> {
        authz::decide(caller, Action::Act)?;
        let text = ticket::text("answer", answer, ticket::MAX_TEXT, true)?;
        self.change(caller, id, Change::Answer(text)).await
    }

    /// `POST /v1/tickets/{id}/state`.
    pub async fn set_state(
        &self,
        caller: &Caller,
        id: i64,
        input: StateInput,
    ) -> Result<Ticket, Error> {
        authz::decide(caller, Action::Act)?;
        let change = input.change()?;
        self.change(caller, id, change).await
    }

    fn check_query(text: &str, limit: Option<usize>) -> Result<usize, Error> {
        if text.chars().count() > 2000 {
            return Err(Error::field("q", "too_long", "at most 2000 characters"));
        }
        let limit = limit.unwrap_or(10);
        if !(1..=crate::search::MAX_LIMIT).contains(&limit) {
            return Err(Error::field("limit", "out_of_range", "must be 1–100"));
        }
        Ok(limit)
    }

    async fn run_search(&self, kind: &'static str, q: SearchQuery) -> Result<Vec<Hit>, Error> {
        let index = Arc::clone(&self.index);
        let started = Instant::now();
        let hits = tokio::task::spawn_blocking(move || index.search(&q))
            .await
            .map_err(|e| Error::Blocking(e.to_string()))??;
        self.metrics.search(kind, started.elapsed().as_secs_f64());
        Ok(hits)
    }

    /// `GET /v1/search`: past tickets the caller may read, best first.
    pub async fn search(
        &self,
        caller: &Caller,
        text: &str,
        limit: Option<usize>,
    ) -> Result<Vec<Hit>, Error> {
        authz::decide(caller, Action::Browse)?;
        let limit = Self::check_query(text, limit)?;
        let q = SearchQuery {
            text: text.to_owned(),
            scope: caller.scope(),
            limit,
            answered_only: false,
            exclude: None,
        };
        self.run_search("search", q).await
    }

    /// `GET /v1/suggestions`: answered past tickets most like a draft (subject and body), for
    /// the one being written or, with `exclude`, for an existing ticket's page.
    pub async fn suggest(
        &self,
        caller: &Caller,
        draft: &str,
        limit: Option<usize>,
        exclude: Option<i64>,
    ) -> Result<Vec<Hit>, Error> {
        authz::decide(caller, Action::Browse)?;
        let draft: String = draft.chars().take(2000).collect();
        let limit = Self::check_query(&draft, Some(limit.unwrap_or(5)))?;
        let q = SearchQuery {
            text: draft,
            scope: caller.scope(),
            limit,
            answered_only: true,
            exclude,
        };
        self.run_search("suggest", q).await
    }

    /// `POST /v1/alerts`: the Alertmanager webhook (see `domain::alert` for the rules).
    pub async fn alerts(&self, caller: &Caller, hook: Webhook) -> Result<AlertOutcome, Error> {
        authz::decide(caller, Action::ReceiveAlerts)?;
        let events = hook.events()?;
        let who = caller.name();
        let now = self.clock.now();
        let (outcome, changed) = self
            .db
            .write(move |c| c.transaction(|c| receive_alerts(c, &hook, &events, &who, now)))
            .await?;
        self.metrics.alerts("opened", outcome.opened.len());
        self.metrics.alerts("attached", outcome.attached);
        self.metrics.alerts("duplicate", outcome.duplicates);
        self.metrics.alerts("resolved", outcome.resolved);
        if !changed.is_empty() {
            let tickets = self
                .db
                .read(move |c| {
                    changed
                        .iter()
                        .filter_map(|id| store::get(c, *id).transpose())
                        .collect::<Result<Vec<_>, _>>()
                })
                .await?;
            self.reindex(tickets).await?;
        }
        Ok(outcome)
    }
}

/// The webhook's transaction: returns the outcome and the tickets opened.
fn receive_alerts(
    c: &mut DbConnection,
    hook: &Webhook,
    events: &[alert::AlertEvent],
    who: &str,
    now: Timestamp,
) -> Result<(AlertOutcome, Vec<i64>), Error> {
    let mut out = AlertOutcome::default();
    let mut fresh = Vec::new();
    // Firings first: known ones are replays; new ones join an open ticket of their
    // fingerprint, or the group's new ticket.
    for e in events {
        match store::alert_link(c, &e.fingerprint, e.starts_at)? {
            Some(_) if e.resolved_at.is_none() => out.duplicates += 1,
            Some(_) => {}
            None => {
                if let Some(open) = store::open_ticket_of(c, &e.fingerprint)? {
                    store::link_alert(c, &e.fingerprint, e.starts_at, open)?;
                    store::append_history(
                        c,
                        open,
                        now,
                        who,
                        "alert_firing",
                        None,
                        None,
                        &json!({ "fingerprint": e.fingerprint, "alertname": e.name, "starts_at": e.starts_at }),
                    )?;
                    out.attached += 1;
                } else {
                    fresh.push(e);
                }
            }
        }
    }
    if !fresh.is_empty() {
        let (subject, body, nodes) = alert::ticket_text(hook, &fresh);
        let org = fresh[0].org.clone();
        let new = NewTicket {
            kind: Kind::Fault,
            org: org.filter(|o| fresh.iter().all(|e| e.org.as_deref() == Some(o))),
            reporter: "Alertmanager".into(),
            channel: Channel::Alert,
            subject,
            body,
            nodes,
            category: Some("監視".into()),
        };
        let detail = json!({ "group_key": hook.group_key, "receiver": hook.receiver });
        let t = store::insert(c, &new, who, now, &detail)?;
        for e in &fresh {
            store::link_alert(c, &e.fingerprint, e.starts_at, t.id)?;
        }
        out.opened.push(t.id);
    }
    // Then resolutions, each noted once on the ticket its firing went to (a closed ticket
    // gets the note and stays closed).
    for e in events {
        let Some(resolved_at) = e.resolved_at else {
            continue;
        };
        match store::alert_link(c, &e.fingerprint, e.starts_at)? {
            Some((_, true)) => out.duplicates += 1,
            Some((ticket_id, false)) => {
                store::resolve_alert(c, &e.fingerprint, e.starts_at, resolved_at)?;
                store::append_history(
                    c,
                    ticket_id,
                    now,
                    who,
                    "alert_resolved",
                    None,
                    None,
                    &json!({ "fingerprint": e.fingerprint, "alertname": e.name, "resolved_at": resolved_at }),
                )?;
                out.resolved += 1;
            }
            None => {}
        }
    }
    let changed = out.opened.clone();
    Ok((out, changed))
}
