//! API views (JSON shapes), kept apart from the database rows.

use serde::Serialize;

use crate::domain::{Reason, Sex, Status};
use crate::store::models::{HistoryRow, ResidentRow};

/// A resident's current record as returned by `GET /v1/residents/{code}`.
#[derive(Debug, Clone, Serialize)]
pub struct ResidentView {
    pub resident_code: String,
    pub individual_number: Option<String>,
    pub name: String,
    pub name_kana: String,
    pub former_surname: Option<String>,
    pub alias: Option<String>,
    pub birth_date: String,
    pub sex: &'static str,
    pub address: String,
    pub municipality_code: String,
    pub status: &'static str,
    pub updated_at: String,
    pub permanent_domicile: Option<String>,
    pub domicile_head: Option<String>,
}

impl From<ResidentRow> for ResidentView {
    fn from(r: ResidentRow) -> Self {
        ResidentView {
            sex: Sex::parse(&r.sex).map_or("?", Sex::japanese),
            status: Status::parse(&r.status).map_or("?", Status::code),
            resident_code: r.resident_code,
            individual_number: r.individual_number,
            name: r.name,
            name_kana: r.name_kana,
            former_surname: r.former_surname,
            alias: r.alias,
            birth_date: r.birth_date,
            address: r.address,
            municipality_code: r.municipality_code,
            updated_at: r.updated_at,
            permanent_domicile: r.permanent_domicile,
            domicile_head: r.domicile_head,
        }
    }
}

/// One history entry as returned by `GET /v1/residents/{code}/history`.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryView {
    pub id: i64,
    pub reason: &'static str,
    pub change_date: String,
    pub municipality_code: String,
    pub recorded_at: String,
    pub sender: String,
    pub seq: i64,
    pub trace_id: Option<String>,
}

impl From<HistoryRow> for HistoryView {
    fn from(h: HistoryRow) -> Self {
        HistoryView {
            reason: Reason::parse(&h.reason).map_or("?", Reason::japanese),
            id: h.id,
            change_date: h.change_date,
            municipality_code: h.municipality_code,
            recorded_at: h.recorded_at,
            sender: h.source_sender,
            seq: h.source_seq,
            trace_id: h.trace_id,
        }
    }
}

/// The result of one accepted update.
#[derive(Debug, Clone, Serialize)]
pub struct Accepted {
    pub resident_code: String,
    pub reason: Reason,
    pub status: Status,
    pub history_id: i64,
    pub outbox_seq: i64,
}
