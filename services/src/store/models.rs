//! Database rows. They are kept apart from the API views in `views.rs`.

use diesel::prelude::*;

use crate::store::schema::{
    change_history, idempotency_keys, issuances, outbox, residents, transfers,
};

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = residents, treat_none_as_null = true)]
pub struct ResidentRow {
    pub resident_code: String,
    pub individual_number: Option<String>,
    pub name: String,
    pub name_kana: String,
    pub former_surname: Option<String>,
    pub alias: Option<String>,
    pub birth_date: String,
    pub sex: String,
    pub address: String,
    pub municipality_code: String,
    pub status: String,
    pub updated_at: String,
    /// 本籍 (kept at the CS only).
    pub permanent_domicile: Option<String>,
    /// 筆頭者 of the family register (kept at the CS only).
    pub domicile_head: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = change_history)]
pub struct HistoryRow {
    pub id: i64,
    pub resident_code: String,
    pub reason: String,
    pub change_date: String,
    pub municipality_code: String,
    pub payload: String,
    pub recorded_at: String,
    pub source_sender: String,
    pub source_seq: i64,
    pub trace_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = outbox)]
pub struct OutboxRow {
    pub seq: i64,
    pub payload: String,
    pub created_at: String,
    pub sent_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_keys)]
pub struct IdempotencyRow {
    pub idempotency_key: String,
    pub request: String,
    pub status: i32,
    pub response: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = transfers, treat_none_as_null = true)]
pub struct TransferRow {
    pub transfer_id: String,
    pub side: String,
    pub state: String,
    pub resident_code: String,
    pub from_municipality: String,
    pub to_municipality: String,
    pub planned_date: String,
    pub planned_address: String,
    pub record: String,
    pub pin_hash: String,
    pub pin_failures: i32,
    pub move_date: Option<String>,
    pub new_address: Option<String>,
    pub note: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = issuances, treat_none_as_null = true)]
pub struct IssuanceRow {
    pub issuance_id: String,
    pub side: String,
    pub state: String,
    pub resident_code: String,
    pub issuing_municipality: String,
    pub home_municipality: String,
    pub idempotency_key: Option<String>,
    pub request: String,
    pub answer: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}
