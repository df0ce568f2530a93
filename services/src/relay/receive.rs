//! The receiver side: a relayed batch applied once per `(sender, seq)` in one transaction.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};

use diesel::prelude::*;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::wire::{Envelope, RelayAck, RelayBatch, RelayItem};
use crate::domain::identity::{NodeIdentity, Role};
use crate::domain::trace::TraceParent;
use crate::domain::{self, Status};
use crate::error::Error;
use crate::store::db::DbConnection;
use crate::store::models::{HistoryRow, OutboxRow, ResidentRow};
use crate::store::schema::{change_history, inbox, outbox};
use crate::store::{BatchResidents, CHUNK, insert_rows, lock_writes, reserve_ids};
use juki_telemetry::SpanKind;

/// Applies a relayed batch in one transaction: each new `(sender, seq)` writes the record, the
/// history row, the inbox row and (at a prefecture) an outbox row toward the national server;
/// an already-applied seq is skipped.
pub fn apply_batch(
    conn: &mut DbConnection,
    identity: &NodeIdentity,
    batch: &RelayBatch,
    envelopes: Vec<Envelope>,
    now: Timestamp,
) -> Result<RelayAck, Error> {
    if identity.role == Role::Cs {
        return Err(Error::WrongRole(identity.role.as_str()));
    }
    batch.check()?;
    if envelopes.len() != batch.items.len() {
        return Err(Error::Corrupt("one envelope per relayed item".into()));
    }
    let forward = identity.role == Role::Prefecture;
    conn.transaction(|conn| {
        lock_writes(conn)?;
        let seqs: Vec<i64> = batch.items.iter().map(|i| i.seq).collect();
        let mut seen: Vec<i64> = Vec::new();
        for chunk in seqs.chunks(CHUNK) {
            seen.extend(
                inbox::table
                    .filter(inbox::sender.eq(&batch.sender))
                    .filter(inbox::seq.eq_any(chunk))
                    .select(inbox::seq)
                    .load::<i64>(conn)?,
            );
        }
        let seen: HashSet<i64> = seen.into_iter().collect();
        let mut ack = RelayAck {
            acked: seqs.last().copied().unwrap_or(0),
            applied: 0,
            duplicates: seen.len() as u64,
        };
        // The new items with their envelopes.
        let fresh: Vec<(usize, &RelayItem, Envelope)> = batch
            .items
            .iter()
            .zip(envelopes)
            .enumerate()
            .filter(|(_, (item, _))| !seen.contains(&item.seq))
            .map(|(index, (item, envelope))| (index, item, envelope))
            .collect();
        if fresh.is_empty() {
            return Ok(ack);
        }
        if let Some((index, item, _)) = fresh
            .iter()
            .find(|(_, _, e)| e.update.is_some() == e.message.is_some())
        {
            return Err(Error::InvalidBody(format!(
                "payload of seq {}: needs exactly one of update and message",
                item.seq
            ))
            .in_batch(Some(*index)));
        }
        let (messages, updates): (Vec<_>, Vec<_>) =
            fresh.into_iter().partition(|(_, _, e)| e.message.is_some());
        if !updates.is_empty() {
            apply_items(conn, forward, &batch.sender, updates, &now.to_string())?;
        }
        if !messages.is_empty() {
            crate::relay::mailbox::route_from_child(conn, identity, &batch.sender, messages, now)?;
        }
        ack.applied = (batch.items.len() - seen.len()) as u64;
        Ok(ack)
    })
}

/// A CS's envelope as a prefecture forwards it: unchanged but for this tier's `traceparent`,
/// written field by field from the received JSON text (building a tree of every envelope was
/// a good part of the prefecture's time in the throughput benchmark).
struct Forwarded<'a> {
    fields: BTreeMap<Cow<'a, str>, &'a RawValue>,
    traceparent: Option<&'a str>,
}

impl<'a> Forwarded<'a> {
    fn parse(envelope: &'a RawValue, traceparent: Option<&'a str>) -> Result<Self, Error> {
        #[derive(Deserialize)]
        struct Fields<'a>(#[serde(borrow)] BTreeMap<Cow<'a, str>, &'a RawValue>);
        let Fields(fields) = serde_json::from_str(envelope.get())
            .map_err(|e| Error::InvalidBody(format!("envelope: {e}")))?;
        Ok(Forwarded {
            fields,
            traceparent,
        })
    }
}

impl Serialize for Forwarded<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(None)?;
        for (k, v) in &self.fields {
            if k != "traceparent" || self.traceparent.is_none() {
                map.serialize_entry(k, v)?;
            }
        }
        if let Some(traceparent) = self.traceparent {
            map.serialize_entry("traceparent", traceparent)?;
        }
        map.end()
    }
}

/// Writes the new items of a batch: each record (updated in item order when it exists, else
/// inserted once with its final contents), and in bulk the history rows (keeping the origin and
/// the trace), the inbox rows and — at a prefecture — the outbox rows toward the national server
/// (carrying the CS's envelope unchanged but for this tier's traceparent).
fn apply_items(
    conn: &mut DbConnection,
    forward: bool,
    sender: &str,
    fresh: Vec<(usize, &RelayItem, Envelope)>,
    recorded_at: &str,
) -> Result<(), Error> {
    let began = std::time::SystemTime::now();
    let mut spans = Vec::with_capacity(fresh.len());
    let codes: Vec<&str> = fresh
        .iter()
        .filter_map(|(_, _, e)| e.update.as_ref().map(|u| u.resident_code.as_str()))
        .collect();
    let mut residents = BatchResidents::load(conn, &codes)?;
    let n = fresh.len();
    let first_history = reserve_ids(conn, "change_history", n)?;
    let first_seq = if forward {
        reserve_ids(conn, "outbox", n)?
    } else {
        0
    };
    let mut history = Vec::with_capacity(n);
    let mut inbox_rows = Vec::with_capacity(n);
    let mut outbox_rows = Vec::with_capacity(if forward { n } else { 0 });
    for (k, (index, item, envelope)) in fresh.into_iter().enumerate() {
        let Some(update) = envelope.update else {
            return Err(
                Error::InvalidBody(format!("payload of seq {}: no update", item.seq))
                    .in_batch(Some(index)),
            );
        };
        // This tier's span of the update's trace (the CS started it).
        let under = envelope.traceparent.as_deref().and_then(TraceParent::parse);
        let span = under.as_ref().map(TraceParent::child);
        if let Some(span) = &span {
            spans.push(
                span.exported_span("apply relayed update", under.as_ref())
                    .kind(SpanKind::Consumer)
                    .started_at(began)
                    .attr("juki.history_id", first_history + k as i64)
                    .attr("juki.sender", envelope.sender.clone())
                    .attr("juki.seq", envelope.seq),
            );
        }
        let status = domain::status_after(update.reason);
        let current = residents
            .get(&update.resident_code)
            .and_then(|r| Some((r.municipality_code.as_str(), Status::parse(&r.status)?)));
        let overwrite = domain::upstream_overwrites(current, &update);
        if overwrite {
            residents.put(
                conn,
                ResidentRow {
                    resident_code: update.resident_code.clone(),
                    individual_number: update.individual_number.clone(),
                    name: update.name.clone(),
                    name_kana: update.name_kana.clone(),
                    former_surname: update.former_surname.clone(),
                    alias: update.alias.clone(),
                    birth_date: update.birth_date.to_string(),
                    sex: update.sex.code().to_owned(),
                    address: update.address.clone(),
                    municipality_code: update.municipality_code.clone(),
                    status: status.code().to_owned(),
                    updated_at: recorded_at.to_owned(),
                    permanent_domicile: None,
                    domicile_head: None,
                },
            )?;
        }
        let payload = serde_json::to_string(&update).map_err(|e| Error::Corrupt(e.to_string()))?;
        history.push(HistoryRow {
            id: first_history + k as i64,
            resident_code: update.resident_code.clone(),
            reason: update.reason.code().to_owned(),
            change_date: update.change_date.to_string(),
            municipality_code: update.municipality_code.clone(),
            payload,
            recorded_at: recorded_at.to_owned(),
            source_sender: envelope.sender,
            source_seq: envelope.seq,
            trace_id: span.as_ref().map(|s| s.trace_id.clone()),
        });
        inbox_rows.push((
            inbox::sender.eq(sender),
            inbox::seq.eq(item.seq),
            inbox::applied_at.eq(recorded_at),
        ));
        if forward {
            let header = span.as_ref().map(TraceParent::header);
            let payload =
                serde_json::to_string(&Forwarded::parse(&item.payload, header.as_deref())?)
                    .map_err(|e| Error::Corrupt(e.to_string()))?;
            outbox_rows.push(OutboxRow {
                seq: first_seq + k as i64,
                payload,
                created_at: recorded_at.to_owned(),
                sent_at: None,
            });
        }
    }
    residents.finish(conn)?;
    insert_rows!(conn, change_history::table, history);
    insert_rows!(conn, inbox::table, inbox_rows);
    insert_rows!(conn, outbox::table, outbox_rows);
    spans.into_iter().for_each(juki_telemetry::Span::end);
    Ok(())
}
