//! Provision of 本人確認情報 to agencies (本人確認情報の提供) and disclosure to residents (開示).
//!
//! The national server answers for every resident, a prefectural server for the residents of
//! its own municipalities. An agency may ask only for an (agency, affair) pair on the allow-list
//! and gets only the items that affair allows. Every provision, refusal and disclosure is a row
//! of `provision_log`, written before the answer leaves (append-only: see `db::install_guards`).

pub mod desk;
pub mod log;

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use diesel::prelude::*;
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::domain::identity::{NodeIdentity, Role};
use crate::domain::{Reason, Sex, Status};
use crate::error::Error;
use crate::provision::log::LogRow;
use crate::store::db::DbConnection;
use crate::store::models::ResidentRow;
use crate::store::schema::{change_history, provision_log, residents};

/// The items an affair may be allowed (the individual number is never provided here).
pub const ITEMS: &[&str] = &[
    "resident_code",
    "name",
    "name_kana",
    "birth_date",
    "sex",
    "address",
    "municipality_code",
    "status",
    "change",
];

/// One allow-list entry: what `agency` may receive for `affair`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub agency: String,
    pub affair: String,
    pub items: Vec<&'static str>,
}

/// The (agency, affair) pairs this node answers, from `--allow-list` (JSON:
/// `{"allow": [{"agency": "...", "affair": "...", "items": ["name", ...]}]}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    pub entries: Vec<Allowed>,
}

fn config_error(message: String) -> Error {
    Error::Config(format!("allow-list: {message}"))
}

/// An agency or affair name: 1–128 letters, digits, `-`, `_` or `.`.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl AllowList {
    pub fn parse(json: &str) -> Result<AllowList, Error> {
        let v: Value = serde_json::from_str(json).map_err(|e| config_error(e.to_string()))?;
        let list = v
            .get("allow")
            .and_then(Value::as_array)
            .ok_or_else(|| config_error("expected {\"allow\": [...]}".into()))?;
        let mut entries = Vec::with_capacity(list.len());
        for (i, entry) in list.iter().enumerate() {
            let name = |key: &str| -> Result<String, Error> {
                match entry.get(key).and_then(Value::as_str) {
                    Some(s) if valid_name(s) => Ok(s.to_owned()),
                    _ => Err(config_error(format!(
                        "allow[{i}].{key}: required, 1–128 letters, digits, '-', '_' or '.'"
                    ))),
                }
            };
            let (agency, affair) = (name("agency")?, name("affair")?);
            let raw = entry
                .get("items")
                .and_then(Value::as_array)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| config_error(format!("allow[{i}].items: a non-empty list")))?;
            let mut items = Vec::with_capacity(raw.len());
            for (j, item) in raw.iter().enumerate() {
                let known = item
                    .as_str()
                    .and_then(|s| ITEMS.iter().find(|k| **k == s))
                    .ok_or_else(|| {
                        config_error(format!(
                            "allow[{i}].items[{j}]: {item} is not one of {}",
                            ITEMS.join(", ")
                        ))
                    })?;
                if !items.contains(known) {
                    items.push(*known);
                }
            }
            if entries
                .iter()
                .any(|e: &Allowed| e.agency == agency && e.affair == affair)
            {
                return Err(config_error(format!(
                    "allow[{i}]: ({agency}, {affair}) is listed twice"
                )));
            }
            entries.push(Allowed {
                agency,
                affair,
                items,
            });
        }
        Ok(AllowList { entries })
    }

    pub fn read(path: &Path) -> Result<AllowList, Error> {
        let json = std::fs::read_to_string(path)
            .map_err(|e| config_error(format!("read {}: {e}", path.display())))?;
        AllowList::parse(&json).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// The items `agency` may receive for `affair`; None when the pair is not allowed.
    pub fn items(&self, agency: &str, affair: &str) -> Option<&[&'static str]> {
        self.entries
            .iter()
            .find(|e| e.agency == agency && e.affair == affair)
            .map(|e| e.items.as_slice())
    }
}

/// How the agency names the resident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// By 住民票コード.
    Code(String),
    /// By the four items (基本4情報): name, date of birth, sex and address, matched exactly.
    FourItems {
        name: String,
        birth_date: String,
        sex: Sex,
        address: String,
    },
}

impl Lookup {
    fn kind(&self) -> &'static str {
        match self {
            Lookup::Code(_) => "code",
            Lookup::FourItems { .. } => "four_items",
        }
    }
}

/// A validated identity query (`POST /v1/agency/queries`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub affair: String,
    /// Why the agency asks (recorded in the log; the law requires one).
    pub reason: String,
    pub by: Lookup,
}

fn invalid(field: &'static str, rule: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidField {
        field,
        rule,
        message: message.into(),
    }
}

/// A required string field of 1..=max characters, without control characters.
fn text(v: &Value, key: &str, field: &'static str, max: usize) -> Result<String, Error> {
    match v.get(key) {
        None | Some(Value::Null) => Err(invalid(field, "required", format!("{field} is required"))),
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() {
                Err(invalid(field, "required", format!("{field} is empty")))
            } else if s.chars().count() > max {
                Err(invalid(
                    field,
                    "too_long",
                    format!("{field} is longer than {max} characters"),
                ))
            } else if s.chars().any(char::is_control) {
                Err(invalid(
                    field,
                    "format",
                    format!("{field} has control characters"),
                ))
            } else {
                Ok(s.to_owned())
            }
        }
        Some(_) => Err(invalid(field, "type", format!("{field} must be a string"))),
    }
}

fn only_keys(v: &Value, allowed: &[&str], at: &str) -> Result<(), Error> {
    let obj = v
        .as_object()
        .ok_or_else(|| Error::InvalidBody(format!("{at} must be a JSON object")))?;
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(Error::InvalidBody(format!(
            "{at}: unknown field {k:?} (expected {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn resident_code(v: &Value) -> Result<String, Error> {
    let code = text(v, "resident_code", "resident_code", 11)?;
    juki_codes::validate_resident_record_code(&code).map_err(|e| {
        invalid(
            "resident_code",
            match e {
                juki_codes::CodeError::CheckDigit { .. } => "check_digit",
                _ => "format",
            },
            e.to_string(),
        )
    })?;
    Ok(code)
}

/// Parses the body of `POST /v1/agency/queries`.
pub fn parse_query(v: &Value) -> Result<Query, Error> {
    if !v.is_object() {
        return Err(Error::InvalidBody("body must be a JSON object".into()));
    }
    let affair = text(v, "affair", "affair", 128)?;
    let reason = text(v, "reason", "reason", 500)?;
    let by = v.get("by").ok_or_else(|| {
        invalid(
            "by",
            "required",
            "by is required (resident_code or the four items)",
        )
    })?;
    only_keys(
        by,
        &["resident_code", "name", "birth_date", "sex", "address"],
        "by",
    )?;
    let by = if by.get("resident_code").is_some() {
        if ["name", "birth_date", "sex", "address"]
            .iter()
            .any(|k| by.get(k).is_some())
        {
            return Err(invalid(
                "by",
                "one_lookup",
                "by is either resident_code or the four items, not both",
            ));
        }
        Lookup::Code(resident_code(by)?)
    } else {
        let birth_date = text(by, "birth_date", "by.birth_date", 10)?;
        birth_date
            .parse::<jiff::civil::Date>()
            .map_err(|e| invalid("by.birth_date", "date", format!("by.birth_date: {e}")))?;
        let sex = text(by, "sex", "by.sex", 8)?;
        let sex = Sex::parse(&sex)
            .ok_or_else(|| invalid("by.sex", "sex", "by.sex is male, female, 男 or 女"))?;
        Lookup::FourItems {
            name: text(by, "name", "by.name", 200)?,
            birth_date,
            sex,
            address: text(by, "address", "by.address", 500)?,
        }
    };
    // Unknown fields last, so that a broken known field is the error named.
    only_keys(v, &["affair", "reason", "by"], "body")?;
    Ok(Query { affair, reason, by })
}

/// Parses the body of `POST /v1/disclosures`: `{"resident_code"}`.
pub fn parse_disclosure(v: &Value) -> Result<String, Error> {
    only_keys(v, &["resident_code"], "body")?;
    resident_code(v)
}

/// A new log id: the instant in microseconds, a counter of this process (order within one
/// microsecond) and 48 random bits drawn once per process (no collision between the replicas
/// that share a database), in hex, so ids sort by time.
fn new_id(now: Timestamp) -> String {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    static PROCESS: OnceLock<u64> = OnceLock::new();
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let process = *PROCESS.get_or_init(|| {
        let mut random = [0u8; 8];
        // SystemRandom fails only without an OS random source; the clock still varies then.
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random[2..])
            .is_err()
        {
            random[2..].copy_from_slice(&Timestamp::now().as_nanosecond().to_be_bytes()[10..]);
        }
        u64::from_be_bytes(random)
    });
    format!(
        "{:016x}{seq:08x}{process:012x}",
        now.as_microsecond().max(0)
    )
}

/// What one provision-log row says, before it gets its id and instant.
#[derive(Debug, Clone)]
struct LogEntry<'a> {
    recipient: &'a str,
    affair: &'a str,
    reason: &'a str,
    query_kind: &'a str,
    resident_code: Option<&'a str>,
    items: &'a [&'static str],
    outcome: &'a str,
    detail: &'a str,
}

impl LogEntry<'_> {
    fn row(&self, now: Timestamp) -> LogRow {
        LogRow {
            id: new_id(now),
            at: now.to_string(),
            recipient: self.recipient.to_owned(),
            affair: self.affair.to_owned(),
            reason: self.reason.to_owned(),
            query_kind: self.query_kind.to_owned(),
            resident_code: self.resident_code.map(str::to_owned),
            items: serde_json::to_string(self.items).unwrap_or_default(),
            outcome: self.outcome.to_owned(),
            detail: self.detail.to_owned(),
        }
    }
}

/// Whether this node answers for `row` (a prefecture only for its own active or deceased
/// residents; the national server for everyone).
fn in_scope(node: &NodeIdentity, row: &ResidentRow) -> bool {
    match node.role {
        Role::National => true,
        Role::Prefecture => {
            node.prefecture
                .is_some_and(|p| row.municipality_code.starts_with(&format!("{p:02}")))
                && row.status != Status::MovedOut.code()
        }
        Role::Cs => false,
    }
}

/// The residents `by` names that this node answers for; lookups by code are read beforehand
/// for a whole batch (`known`).
fn lookup(
    conn: &mut DbConnection,
    node: &NodeIdentity,
    by: &Lookup,
    known: &HashMap<String, ResidentRow>,
) -> Result<Vec<ResidentRow>, Error> {
    let rows: Vec<ResidentRow> = match by {
        Lookup::Code(code) => known.get(code).cloned().into_iter().collect(),
        Lookup::FourItems {
            name,
            birth_date,
            sex,
            address,
        } => residents::table
            .filter(residents::name.eq(name))
            .filter(residents::birth_date.eq(birth_date))
            .filter(residents::sex.eq_any([sex.code(), sex.japanese()]))
            .filter(residents::address.eq(address))
            .filter(residents::status.ne(Status::MovedOut.code()))
            .select(ResidentRow::as_select())
            .limit(3)
            .load(conn)?,
    };
    Ok(rows.into_iter().filter(|r| in_scope(node, r)).collect())
}

/// The record with only `items`.
fn render(
    conn: &mut DbConnection,
    row: &ResidentRow,
    items: &[&'static str],
) -> Result<Value, Error> {
    let mut out = Map::new();
    for item in items {
        let value = match *item {
            "resident_code" => json!(row.resident_code),
            "name" => json!(row.name),
            "name_kana" => json!(row.name_kana),
            "birth_date" => json!(row.birth_date),
            "sex" => json!(Sex::parse(&row.sex).map_or("?", Sex::japanese)),
            "address" => json!(row.address),
            "municipality_code" => json!(row.municipality_code),
            "status" => json!(Status::parse(&row.status).map_or("?", Status::code)),
            "change" => {
                let last: Option<(String, String)> = change_history::table
                    .filter(change_history::resident_code.eq(&row.resident_code))
                    .order(change_history::id.desc())
                    .select((change_history::reason, change_history::change_date))
                    .first(conn)
                    .optional()?;
                last.map_or(Value::Null, |(reason, date)| {
                    json!({
                        "reason": Reason::parse(&reason).map_or("?", Reason::japanese),
                        "date": date,
                    })
                })
            }
            _ => continue,
        };
        out.insert((*item).to_owned(), value);
    }
    Ok(Value::Object(out))
}

/// An answer (or the refusal to give) with the log row to commit before it is given.
pub type Answered = (Result<Value, Error>, LogRow);

/// One agency query of a batch: who asks, what, and when.
#[derive(Debug, Clone)]
pub struct Asked {
    pub agency: String,
    pub query: Query,
    pub at: Timestamp,
}

/// Answers a batch of agency queries, reading every allowed lookup by code in one query: each
/// answer (see [`query`]) with the log row that must be committed before it is given.
pub fn query_batch(
    conn: &mut DbConnection,
    node: &NodeIdentity,
    allow: &AllowList,
    batch: &[Asked],
) -> Result<Vec<Answered>, Error> {
    if node.role == Role::Cs {
        return Err(Error::WrongRole(node.role.as_str()));
    }
    let codes: Vec<&str> = batch
        .iter()
        .filter(|a| allow.items(&a.agency, &a.query.affair).is_some())
        .filter_map(|a| match &a.query.by {
            Lookup::Code(code) => Some(code.as_str()),
            Lookup::FourItems { .. } => None,
        })
        .collect();
    let known = crate::store::load_residents(conn, &codes)?;
    batch
        .iter()
        .map(|a| answer(conn, node, allow, &a.agency, &a.query, a.at, &known))
        .collect()
}

/// Answers one agency query: the answer (`{"provision_id", "affair", "record"}` or the
/// refusal) and the log row that must be committed before it is given (provided, not found,
/// ambiguous or refused; the provision desk commits it).
fn answer(
    conn: &mut DbConnection,
    node: &NodeIdentity,
    allow: &AllowList,
    agency: &str,
    q: &Query,
    now: Timestamp,
    known: &HashMap<String, ResidentRow>,
) -> Result<Answered, Error> {
    let mut entry = LogEntry {
        recipient: agency,
        affair: &q.affair,
        reason: &q.reason,
        query_kind: q.by.kind(),
        resident_code: match &q.by {
            Lookup::Code(c) => Some(c),
            Lookup::FourItems { .. } => None,
        },
        items: &[],
        outcome: "refused",
        detail: "",
    };
    let Some(items) = allow.items(agency, &q.affair) else {
        entry.detail = "affair_not_allowed";
        let row = entry.row(now);
        let refusal = Error::Forbidden {
            rule: "affair_not_allowed",
            message: format!(
                "{agency} may not query for affair {:?} (not on this node's allow-list; provision {})",
                q.affair, row.id
            ),
        };
        return Ok((Err(refusal), row));
    };
    entry.items = items;
    let rows = lookup(conn, node, &q.by, known)?;
    Ok(match rows.as_slice() {
        [row] => {
            let record = render(conn, row, items)?;
            entry.resident_code = Some(&row.resident_code);
            entry.outcome = "provided";
            let log = entry.row(now);
            let answer = json!({ "provision_id": log.id, "affair": q.affair, "record": record });
            (Ok(answer), log)
        }
        [] => {
            entry.outcome = "not_found";
            let log = entry.row(now);
            let message = format!("resident matching the query (provision {})", log.id);
            (Err(Error::NotFound(message)), log)
        }
        _ => {
            entry.detail = "ambiguous_match";
            let log = entry.row(now);
            let refusal = Error::StateConflict {
                rule: "ambiguous_match",
                field: Some("by"),
                message: format!(
                    "more than one resident matches the four items; ask by resident_code (provision {})",
                    log.id
                ),
            };
            (Err(refusal), log)
        }
    })
}

/// The log row of a refusal before the query was read (wrong identity at the agency endpoint).
pub fn refusal_row(recipient: &str, detail: &str, now: Timestamp) -> LogRow {
    LogEntry {
        recipient,
        affair: "",
        reason: "",
        query_kind: "unknown",
        resident_code: None,
        items: &[],
        outcome: "refused",
        detail,
    }
    .row(now)
}

/// One provision of a resident's data, as disclosed to them.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, serde::Serialize)]
pub struct ProvisionView {
    pub id: String,
    pub at: String,
    pub recipient: String,
    pub affair: String,
    pub reason: String,
    pub query_kind: String,
    #[serde(serialize_with = "items_json")]
    pub items: String,
    pub outcome: String,
}

fn items_json<S: serde::Serializer>(items: &str, s: S) -> Result<S::Ok, S::Error> {
    use serde::Serialize;
    serde_json::from_str::<Value>(items)
        .unwrap_or(Value::Null)
        .serialize(s)
}

/// Disclosure (開示) of a resident's record here and of the provisions about them, asked at
/// the counter of `municipality`; logged as a provision to the resident. Only the resident's
/// own municipality may ask: any other counter is refused, and the refusal is logged too.
pub fn disclose(
    conn: &mut DbConnection,
    node: &NodeIdentity,
    municipality: &str,
    code: &str,
    now: Timestamp,
) -> Result<Value, Error> {
    if node.role == Role::Cs {
        return Err(Error::WrongRole(node.role.as_str()));
    }
    let requester = format!("resident via muni-{municipality}");
    let known = crate::store::load_residents(conn, &[code])?;
    let rows = lookup(conn, node, &Lookup::Code(code.to_owned()), &known)?;
    let Some(row) = rows.first() else {
        return Err(Error::NotFound(code.to_owned()));
    };
    if row.municipality_code != municipality {
        let log = LogEntry {
            recipient: &requester,
            affair: "disclosure",
            reason: "開示請求 (the resident's own request)",
            query_kind: "disclosure",
            resident_code: Some(code),
            items: &[],
            outcome: "refused",
            detail: "not_own_resident",
        }
        .row(now);
        crate::provision::log::insert(conn, std::slice::from_ref(&log))?;
        return Err(Error::Forbidden {
            rule: "not_own_resident",
            message: format!(
                "muni-{municipality} may disclose only the records of its own residents (provision {})",
                log.id
            ),
        });
    }
    let record = render(conn, row, ITEMS)?;
    let provisions: Vec<ProvisionView> = provision_log::table
        .filter(provision_log::resident_code.eq(code))
        .order(provision_log::id.asc())
        .select((
            provision_log::id,
            provision_log::at,
            provision_log::recipient,
            provision_log::affair,
            provision_log::reason,
            provision_log::query_kind,
            provision_log::items,
            provision_log::outcome,
        ))
        .load(conn)?;
    let log = LogEntry {
        recipient: &requester,
        affair: "disclosure",
        reason: "開示請求 (the resident's own request)",
        query_kind: "disclosure",
        resident_code: Some(code),
        items: ITEMS,
        outcome: "disclosed",
        detail: "",
    }
    .row(now);
    let id = log.id.clone();
    crate::provision::log::insert(conn, std::slice::from_ref(&log))?;
    Ok(json!({
        "disclosure_id": id,
        "record": record,
        "provisions": provisions,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list_errors_name_the_entry_and_the_rule() {
        let ok = AllowList::parse(
            r#"{"allow": [{"agency": "nenkin", "affair": "pension-benefit", "items": ["name", "address", "name"]}]}"#,
        )
        .unwrap();
        assert_eq!(
            ok.items("nenkin", "pension-benefit"),
            Some(&["name", "address"][..])
        );
        assert_eq!(ok.items("nenkin", "tax"), None);
        assert_eq!(ok.items("other", "pension-benefit"), None);
        let err = |j: &str| AllowList::parse(j).unwrap_err().to_string();
        assert!(err("[]").contains("expected {\"allow\""));
        assert!(
            err(r#"{"allow": [{"affair": "a", "items": ["name"]}]}"#).contains("allow[0].agency")
        );
        assert!(
            err(r#"{"allow": [{"agency": "a", "affair": "b", "items": ["individual_number"]}]}"#)
                .contains("allow[0].items[0]")
        );
        assert!(
            err(r#"{"allow": [{"agency": "a", "affair": "b", "items": []}]}"#)
                .contains("non-empty")
        );
        assert!(
            err(r#"{"allow": [{"agency": "a", "affair": "b", "items": ["name"]}, {"agency": "a", "affair": "b", "items": ["sex"]}]}"#)
                .contains("listed twice")
        );
        assert!(
            err(r#"{"allow": [{"agency": "a b", "affair": "b", "items": ["name"]}]}"#)
                .contains("allow[0].agency")
        );
    }

    #[test]
    fn queries_are_either_by_code_or_by_the_four_items() {
        let q = parse_query(
            &json!({"affair": "a", "reason": "r", "by": {"resident_code": "12345678903"}}),
        );
        match q {
            Ok(Query {
                by: Lookup::Code(c),
                ..
            }) => assert_eq!(c, "12345678903"),
            Err(Error::InvalidField {
                field: "resident_code",
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let four = parse_query(&json!({"affair": "a", "reason": "r",
            "by": {"name": "山田 太郎", "birth_date": "1990-04-01", "sex": "男", "address": "東京都千代田区1"}}))
        .unwrap();
        assert_eq!(four.by.kind(), "four_items");
        let field = |v: Value| match parse_query(&v) {
            Err(Error::InvalidField { field, rule, .. }) => format!("{field}/{rule}"),
            Err(e) => e.tag().to_string(),
            Ok(_) => "ok".into(),
        };
        assert_eq!(field(json!({"reason": "r", "by": {}})), "affair/required");
        assert_eq!(field(json!({"affair": "a", "by": {}})), "reason/required");
        assert_eq!(field(json!({"affair": "a", "reason": "r"})), "by/required");
        assert_eq!(
            field(
                json!({"affair": "a", "reason": "r", "by": {"resident_code": "12345678901", "name": "x"}})
            ),
            "by/one_lookup"
        );
        assert_eq!(
            field(
                json!({"affair": "a", "reason": "r", "by": {"name": "x", "birth_date": "1990-02-30", "sex": "男", "address": "a"}})
            ),
            "by.birth_date/date"
        );
        assert_eq!(
            field(
                json!({"affair": "a", "reason": "r", "by": {"name": "x", "birth_date": "1990-02-03", "sex": "x", "address": "a"}})
            ),
            "by.sex/sex"
        );
        assert_eq!(
            field(
                json!({"affair": "a", "reason": "r", "by": {"name": "x", "birth_date": "1990-02-03", "sex": "男"}})
            ),
            "by.address/required"
        );
        assert_eq!(
            field(
                json!({"affair": "a", "reason": "r", "by": {"resident_code": "12345678903"}, "x": 1})
            ),
            "invalid_body"
        );
        assert_eq!(
            field(json!({"affair": 5, "reason": "r", "by": {}})),
            "affair/type"
        );
        assert_eq!(
            field(json!({"affair": "a\u{0}", "reason": "r", "by": {}})),
            "affair/format"
        );
        assert_eq!(field(json!([1])), "invalid_body");
    }

    #[test]
    fn log_ids_sort_by_time_and_differ() {
        let t = Timestamp::from_second(1_700_000_000).unwrap();
        let (a, b) = (new_id(t), new_id(t));
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert!(b > a, "ids of one instant keep their order");
        assert!(new_id(Timestamp::from_second(1_700_000_001).unwrap()) > a.max(b));
    }
}
