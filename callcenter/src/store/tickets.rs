//! Ticket rows: filing, reading, listing, changing (with a history row in the same
//! transaction), and the alert links.

use diesel::prelude::*;
use jiff::Timestamp;
use serde_json::Value;

use super::db::DbConnection;
use super::schema::{alert_links, ticket_history, tickets};
use crate::domain::ticket::{Change, HistoryEntry, NewTicket, Ticket, change_detail};
use crate::domain::{Channel, Kind, Scope, State};
use crate::error::Error;

fn micros(t: Timestamp) -> i64 {
    t.as_microsecond()
}

fn time(us: i64) -> Result<Timestamp, Error> {
    Timestamp::from_microsecond(us).map_err(|e| Error::Corrupt(format!("time {us}: {e}")))
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = tickets)]
struct TicketRow {
    id: i64,
    kind: String,
    state: String,
    org_code: Option<String>,
    reporter: String,
    channel: String,
    subject: String,
    body: String,
    category: Option<String>,
    nodes: String,
    answer: Option<String>,
    recovery: Option<String>,
    filed_by: String,
    created_at: i64,
    first_answer_at: Option<i64>,
    updated_at: i64,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = tickets)]
struct NewRow<'a> {
    kind: &'a str,
    state: &'a str,
    org_code: Option<&'a str>,
    reporter: &'a str,
    channel: &'a str,
    subject: &'a str,
    body: &'a str,
    category: Option<&'a str>,
    nodes: String,
    filed_by: &'a str,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<TicketRow> for Ticket {
    type Error = Error;

    fn try_from(r: TicketRow) -> Result<Ticket, Error> {
        let bad = |what: &str, v: &str| Error::Corrupt(format!("ticket {}: {what} {v:?}", r.id));
        Ok(Ticket {
            id: r.id,
            kind: Kind::parse(&r.kind).ok_or_else(|| bad("kind", &r.kind))?,
            state: State::parse(&r.state).ok_or_else(|| bad("state", &r.state))?,
            channel: Channel::parse(&r.channel).ok_or_else(|| bad("channel", &r.channel))?,
            nodes: serde_json::from_str(&r.nodes).map_err(|_| bad("nodes", &r.nodes))?,
            recovery: r
                .recovery
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|_| bad("recovery", r.recovery.as_deref().unwrap_or("")))?,
            created_at: time(r.created_at)?,
            first_answer_at: r.first_answer_at.map(time).transpose()?,
            updated_at: time(r.updated_at)?,
            org: r.org_code,
            reporter: r.reporter,
            subject: r.subject,
            body: r.body,
            category: r.category,
            answer: r.answer,
            filed_by: r.filed_by,
        })
    }
}

/// Appends one history row.
#[allow(clippy::too_many_arguments)]
pub fn append_history(
    conn: &mut DbConnection,
    ticket_id: i64,
    at: Timestamp,
    actor: &str,
    action: &str,
    from: Option<State>,
    to: Option<State>,
    detail: &Value,
) -> Result<(), Error> {
    diesel::insert_into(ticket_history::table)
        .values((
            ticket_history::ticket_id.eq(ticket_id),
            ticket_history::at.eq(micros(at)),
            ticket_history::actor.eq(actor),
            ticket_history::action.eq(action),
            ticket_history::from_state.eq(from.map(State::as_str)),
            ticket_history::to_state.eq(to.map(State::as_str)),
            ticket_history::detail.eq(detail.to_string()),
        ))
        .execute(conn)?;
    Ok(())
}

fn insert_row(
    conn: &mut DbConnection,
    t: &NewTicket,
    filed_by: &str,
    now: Timestamp,
) -> Result<i64, Error> {
    let row = NewRow {
        kind: t.kind.as_str(),
        state: State::Received.as_str(),
        org_code: t.org.as_deref(),
        reporter: &t.reporter,
        channel: t.channel.as_str(),
        subject: &t.subject,
        body: &t.body,
        category: t.category.as_deref(),
        nodes: serde_json::to_string(&t.nodes).unwrap_or_else(|_| "[]".into()),
        filed_by,
        created_at: micros(now),
        updated_at: micros(now),
    };
    let query = diesel::insert_into(tickets::table)
        .values(&row)
        .returning(tickets::id);
    Ok(match conn {
        DbConnection::Pg(c) => query.get_result(c)?,
        DbConnection::Sqlite(c) => query.get_result(c)?,
    })
}

/// Files a ticket: the row and its first history entry, in one transaction.
pub fn insert(
    conn: &mut DbConnection,
    t: &NewTicket,
    filed_by: &str,
    now: Timestamp,
    detail: &Value,
) -> Result<Ticket, Error> {
    conn.transaction(|conn| {
        let id = insert_row(conn, t, filed_by, now)?;
        append_history(
            conn,
            id,
            now,
            filed_by,
            "file",
            None,
            Some(State::Received),
            detail,
        )?;
        get(conn, id)?.ok_or_else(|| Error::Corrupt(format!("ticket {id} vanished")))
    })
}

/// Files many tickets in one transaction without history (the seed loader and the bench).
pub fn insert_many(
    conn: &mut DbConnection,
    ts: &[(NewTicket, Timestamp)],
    filed_by: &str,
) -> Result<(), Error> {
    conn.transaction(|conn| {
        for (t, at) in ts {
            let id = insert_row(conn, t, filed_by, *at)?;
            append_history(
                conn,
                id,
                *at,
                filed_by,
                "file",
                None,
                Some(State::Received),
                &Value::Null,
            )?;
        }
        Ok(())
    })
}

pub fn get(conn: &mut DbConnection, id: i64) -> Result<Option<Ticket>, Error> {
    tickets::table
        .find(id)
        .select(TicketRow::as_select())
        .first(conn)
        .optional()?
        .map(Ticket::try_from)
        .transpose()
}

pub fn history(conn: &mut DbConnection, id: i64) -> Result<Vec<HistoryEntry>, Error> {
    type Row = (i64, String, String, Option<String>, Option<String>, String);
    let rows: Vec<Row> = ticket_history::table
        .filter(ticket_history::ticket_id.eq(id))
        .order(ticket_history::id)
        .select((
            ticket_history::at,
            ticket_history::actor,
            ticket_history::action,
            ticket_history::from_state,
            ticket_history::to_state,
            ticket_history::detail,
        ))
        .load(conn)?;
    rows.into_iter()
        .map(|(at, actor, action, from, to, detail)| {
            Ok(HistoryEntry {
                at: time(at)?,
                actor,
                action,
                from_state: from.as_deref().and_then(State::parse),
                to_state: to.as_deref().and_then(State::parse),
                detail: serde_json::from_str(&detail).unwrap_or(Value::Null),
            })
        })
        .collect()
}

/// What to list.
#[derive(Debug, Clone)]
pub struct ListFilter {
    pub scope: Scope,
    pub state: Option<State>,
    pub kind: Option<Kind>,
    /// Only tickets with an id below this (paging, newest first).
    pub before: Option<i64>,
    pub limit: i64,
}

/// Tickets matching the filter, newest first.
pub fn list(conn: &mut DbConnection, f: &ListFilter) -> Result<Vec<Ticket>, Error> {
    let mut q = tickets::table.select(TicketRow::as_select()).into_boxed();
    match &f.scope {
        Scope::All => {}
        Scope::Org(org) => q = q.filter(tickets::org_code.eq(org.clone())),
        Scope::Prefecture(p) => q = q.filter(tickets::org_code.like(format!("{p:02}%"))),
        Scope::Nothing => return Ok(Vec::new()),
    }
    if let Some(s) = f.state {
        q = q.filter(tickets::state.eq(s.as_str()));
    }
    if let Some(k) = f.kind {
        q = q.filter(tickets::kind.eq(k.as_str()));
    }
    if let Some(before) = f.before {
        q = q.filter(tickets::id.lt(before));
    }
    q.order(tickets::id.desc())
        .limit(f.limit)
        .load::<TicketRow>(conn)?
        .into_iter()
        .map(Ticket::try_from)
        .collect()
}

/// Tickets with an id above `after`, in id order (rebuilding the search index).
pub fn scan(conn: &mut DbConnection, after: i64, limit: i64) -> Result<Vec<Ticket>, Error> {
    tickets::table
        .filter(tickets::id.gt(after))
        .order(tickets::id)
        .limit(limit)
        .select(TicketRow::as_select())
        .load(conn)?
        .into_iter()
        .map(Ticket::try_from)
        .collect()
}

/// Applies `change` to ticket `id` by `actor` at `now`, after `allow` accepted the current
/// ticket, with its history row, in one transaction. The update is conditional on the state and
/// time read, so two concurrent changes cannot both pass the state machine.
pub fn apply(
    conn: &mut DbConnection,
    id: i64,
    change: &Change,
    actor: &str,
    now: Timestamp,
    allow: &dyn Fn(&Ticket) -> Result<(), Error>,
) -> Result<Ticket, Error> {
    conn.transaction(|conn| {
        let old = get(conn, id)?.ok_or_else(|| Error::NotFound(format!("ticket {id}")))?;
        allow(&old)?;
        let new = old.changed(change, now)?;
        let updated = diesel::update(
            tickets::table
                .filter(tickets::id.eq(id))
                .filter(tickets::state.eq(old.state.as_str()))
                .filter(tickets::updated_at.eq(micros(old.updated_at))),
        )
        .set((
            tickets::state.eq(new.state.as_str()),
            tickets::answer.eq(new.answer.as_deref()),
            tickets::recovery.eq(new
                .recovery
                .as_ref()
                .map(|r| serde_json::to_string(r).unwrap_or_default())),
            tickets::first_answer_at.eq(new.first_answer_at.map(micros)),
            tickets::updated_at.eq(micros(new.updated_at)),
        ))
        .execute(conn)?;
        if updated != 1 {
            return Err(Error::StateConflict {
                rule: "concurrent_change",
                field: None,
                message: format!("ticket {id} changed meanwhile; reload and retry"),
            });
        }
        append_history(
            conn,
            id,
            now,
            actor,
            change.action(),
            Some(old.state),
            Some(new.state),
            &change_detail(change),
        )?;
        Ok(new)
    })
}

/// The ticket an alert firing went to, and whether its resolution was noted.
pub fn alert_link(
    conn: &mut DbConnection,
    fingerprint: &str,
    starts_at: Timestamp,
) -> Result<Option<(i64, bool)>, Error> {
    Ok(alert_links::table
        .find((fingerprint, micros(starts_at)))
        .select((alert_links::ticket_id, alert_links::resolved_at))
        .first::<(i64, Option<i64>)>(conn)
        .optional()?
        .map(|(id, resolved)| (id, resolved.is_some())))
}

/// The newest not-closed ticket an earlier firing of `fingerprint` went to.
pub fn open_ticket_of(conn: &mut DbConnection, fingerprint: &str) -> Result<Option<i64>, Error> {
    Ok(alert_links::table
        .inner_join(tickets::table)
        .filter(alert_links::fingerprint.eq(fingerprint))
        .filter(tickets::state.ne(State::Closed.as_str()))
        .order(tickets::id.desc())
        .select(tickets::id)
        .first(conn)
        .optional()?)
}

pub fn link_alert(
    conn: &mut DbConnection,
    fingerprint: &str,
    starts_at: Timestamp,
    ticket_id: i64,
) -> Result<(), Error> {
    diesel::insert_into(alert_links::table)
        .values((
            alert_links::fingerprint.eq(fingerprint),
            alert_links::starts_at.eq(micros(starts_at)),
            alert_links::ticket_id.eq(ticket_id),
        ))
        .execute(conn)?;
    Ok(())
}

pub fn resolve_alert(
    conn: &mut DbConnection,
    fingerprint: &str,
    starts_at: Timestamp,
    at: Timestamp,
) -> Result<(), Error> {
    diesel::update(alert_links::table.find((fingerprint, micros(starts_at))))
        .set(alert_links::resolved_at.eq(Some(micros(at))))
        .execute(conn)?;
    Ok(())
}

/// Row counts of (tickets, history, alert links), for tests and readiness.
pub fn counts(conn: &mut DbConnection) -> Result<(i64, i64, i64), Error> {
    Ok((
        tickets::table.count().get_result(conn)?,
        ticket_history::table.count().get_result(conn)?,
        alert_links::table.count().get_result(conn)?,
    ))
}
