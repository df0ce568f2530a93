//! The transfer-out/in special procedure (転入転出の特例): rules and transactions.
//!
//! At the source A (`side = source`): `POST /v1/transfers` files the move-out of a card holder;
//! A stores the move-out information (転出証明書情報) with a PBKDF2 hash of the card's PIN
//! (never the PIN) and sends it to the destination B (state `move_out_filed`). When B's move-in
//! notice (転入通知) arrives, A marks the resident moved out with a normal 転出 update (history
//! and outbox: reported upstream) and the transfer is `completed`.
//!
//! At the destination B (`side = destination`): the move-out information arrives (`received`);
//! `POST /v1/move-ins` with the card (resident code) and PIN, within 14 days of the move and 30
//! days of the planned date, registers the person with a normal 転入 update and sends the
//! move-in notice to A, in one transaction (`moved_in`).
//!
//! The resident is active at A until B has registered them: never in zero municipalities;
//! once A has the notice, in exactly one.

use std::num::NonZeroU32;

use diesel::prelude::*;
use jiff::ToSpan;
use jiff::civil::Date;
use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::domain::{self, Reason, Sex, Status, Update};
use crate::error::Error;
use crate::relay::mailbox::{self, Message, MessageKind};
use crate::store::db::DbConnection;
use crate::store::models::{ResidentRow, TransferRow};
use crate::store::schema::transfers;
use crate::store::{self, lock_writes, reserve_ids};
use crate::wide_area::CsContext;

/// Source states.
pub const MOVE_OUT_FILED: &str = "move_out_filed";
pub const COMPLETED: &str = "completed";
/// Both ends: the move-out was cancelled at the source (転出取消) before the move-in.
pub const CANCELLED: &str = "cancelled";
/// Destination states.
pub const RECEIVED: &str = "received";
pub const MOVED_IN: &str = "moved_in";

/// Days after the move within which the move-in must be filed.
pub const MOVE_IN_DAYS: i32 = 14;
/// Days after the planned date within which the move-in must be filed.
pub const PLANNED_DAYS: i32 = 30;
/// Days before today a planned date may lie (a move-out is filed before, or within 14 days
/// after, the move).
pub const PLANNED_PAST_DAYS: i32 = 14;
/// Wrong PINs before the transfer is locked (the card's PIN locks after three).
pub const MAX_PIN_FAILURES: i32 = 3;

const PIN_ITERATIONS: NonZeroU32 = NonZeroU32::new(100_000).unwrap();

// ---------------------------------------------------------------------------------------------
// Pure rules

/// `POST /v1/transfers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveOut {
    pub resident_code: String,
    pub destination: String,
    pub planned_date: Date,
    pub planned_address: String,
    pub pin: String,
}

/// `POST /v1/move-ins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveIn {
    pub resident_code: String,
    pub pin: String,
    pub move_date: Date,
    /// The address at B; default the planned address of the move-out.
    pub address: Option<String>,
}

fn object(v: &Value) -> Result<&Map<String, Value>, Error> {
    v.as_object()
        .ok_or_else(|| Error::InvalidBody("expected a JSON object".into()))
}

fn resident_code(obj: &Map<String, Value>) -> Result<String, Error> {
    let code = domain::required(obj, "resident_code")?;
    juki_codes::validate_resident_record_code(code)
        .map_err(|e| domain::code_error("resident_code", e))?;
    Ok(code.to_owned())
}

fn pin(obj: &Map<String, Value>) -> Result<String, Error> {
    let pin = domain::required(obj, "pin")?;
    if pin.len() != 4 || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(domain::invalid(
            "pin",
            "format",
            "the card's PIN is 4 digits",
        ));
    }
    Ok(pin.to_owned())
}

pub fn parse_move_out(v: &Value, own: &str, today: Date) -> Result<MoveOut, Error> {
    let obj = object(v)?;
    let resident_code = resident_code(obj)?;
    let destination = domain::required(obj, "destination_municipality")?.to_owned();
    juki_codes::validate_municipality_code(&destination)
        .map_err(|e| domain::code_error("destination_municipality", e))?;
    if destination == own {
        return Err(domain::invalid(
            "destination_municipality",
            "own_municipality",
            "a move inside the municipality is a 転居, not a transfer",
        ));
    }
    let planned_date = domain::real_date(obj, "planned_date")?;
    if today
        .checked_sub(PLANNED_PAST_DAYS.days())
        .is_ok_and(|earliest| planned_date < earliest)
    {
        return Err(domain::invalid(
            "planned_date",
            "planned_date_past",
            format!("{planned_date} is more than {PLANNED_PAST_DAYS} days before today ({today})"),
        ));
    }
    let planned_address = domain::text(obj, "planned_address")?;
    Ok(MoveOut {
        resident_code,
        destination,
        planned_date,
        planned_address,
        pin: pin(obj)?,
    })
}

pub fn parse_move_in(v: &Value, today: Date) -> Result<MoveIn, Error> {
    let obj = object(v)?;
    Ok(MoveIn {
        resident_code: resident_code(obj)?,
        pin: pin(obj)?,
        move_date: domain::date(obj, "move_date", today)?,
        address: domain::optional_text(obj, "address")?,
    })
}

/// The move-in's date rules: filed within 14 days of the move (`move_date`, not in the future)
/// and within 30 days of the planned date.
pub fn check_move_in_dates(move_date: Date, planned_date: Date, today: Date) -> Result<(), Error> {
    if move_date > today {
        return Err(domain::invalid(
            "move_date",
            "future_date",
            format!("{move_date} is after today ({today})"),
        ));
    }
    if move_date
        .checked_add(MOVE_IN_DAYS.days())
        .is_ok_and(|last| today > last)
    {
        return Err(domain::invalid(
            "move_date",
            "move_in_deadline",
            format!(
                "the move-in must be filed within {MOVE_IN_DAYS} days of the move ({move_date}); today is {today}"
            ),
        ));
    }
    if planned_date
        .checked_add(PLANNED_DAYS.days())
        .is_ok_and(|last| today > last)
    {
        return Err(domain::invalid(
            "planned_date",
            "planned_date_deadline",
            format!(
                "the move-in must be filed within {PLANNED_DAYS} days of the planned date ({planned_date}); today is {today}"
            ),
        ));
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>` with a random 16-byte salt.
pub fn hash_pin(pin: &str) -> Result<String, Error> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| Error::Corrupt("no system randomness for the PIN salt".into()))?;
    let mut out = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        PIN_ITERATIONS,
        &salt,
        pin.as_bytes(),
        &mut out,
    );
    Ok(format!(
        "pbkdf2-sha256${PIN_ITERATIONS}${}${}",
        hex(&salt),
        hex(&out)
    ))
}

/// Constant-time check of `pin` against a stored hash (false for a malformed hash).
pub fn verify_pin(stored: &str, pin: &str) -> bool {
    let parts: Vec<&str> = stored.split('$').collect();
    let ["pbkdf2-sha256", iterations, salt, hash] = parts.as_slice() else {
        return false;
    };
    let (Some(iterations), Some(salt), Some(hash)) = (
        iterations.parse::<u32>().ok().and_then(NonZeroU32::new),
        unhex(salt),
        unhex(hash),
    ) else {
        return false;
    };
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        pin.as_bytes(),
        &hash,
    )
    .is_ok()
}

// ---------------------------------------------------------------------------------------------
// The move-out information and the views

/// 転出証明書情報: the record B registers the person with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveOutRecord {
    pub resident_code: String,
    pub individual_number: Option<String>,
    pub name: String,
    pub name_kana: String,
    pub former_surname: Option<String>,
    pub alias: Option<String>,
    pub birth_date: String,
    pub sex: String,
    pub address: String,
    pub permanent_domicile: Option<String>,
    pub domicile_head: Option<String>,
}

impl From<&ResidentRow> for MoveOutRecord {
    fn from(r: &ResidentRow) -> Self {
        MoveOutRecord {
            resident_code: r.resident_code.clone(),
            individual_number: r.individual_number.clone(),
            name: r.name.clone(),
            name_kana: r.name_kana.clone(),
            former_surname: r.former_surname.clone(),
            alias: r.alias.clone(),
            birth_date: r.birth_date.clone(),
            sex: r.sex.clone(),
            address: r.address.clone(),
            permanent_domicile: r.permanent_domicile.clone(),
            domicile_head: r.domicile_head.clone(),
        }
    }
}

/// A transfer as `GET /v1/transfers/{id}` shows it (never the PIN hash or the record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferView {
    pub transfer_id: String,
    pub side: String,
    pub state: String,
    pub resident_code: String,
    pub from_municipality: String,
    pub to_municipality: String,
    pub planned_date: String,
    pub planned_address: String,
    pub move_date: Option<String>,
    pub new_address: Option<String>,
    pub note: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<TransferRow> for TransferView {
    fn from(t: TransferRow) -> Self {
        TransferView {
            transfer_id: t.transfer_id,
            side: t.side,
            state: t.state,
            resident_code: t.resident_code,
            from_municipality: t.from_municipality,
            to_municipality: t.to_municipality,
            planned_date: t.planned_date,
            planned_address: t.planned_address,
            move_date: t.move_date,
            new_address: t.new_address,
            note: t.note,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// The body of a move-out information message.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MoveOutInfo {
    transfer_id: String,
    record: MoveOutRecord,
    planned_date: String,
    planned_address: String,
    pin_hash: String,
}

/// The body of a move-in notice.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MoveInNotice {
    transfer_id: String,
    resident_code: String,
    move_date: String,
    new_address: String,
}

fn find(conn: &mut DbConnection, id: &str) -> Result<Option<TransferRow>, Error> {
    Ok(transfers::table
        .filter(transfers::transfer_id.eq(id))
        .select(TransferRow::as_select())
        .first(conn)
        .optional()?)
}

fn of_resident(conn: &mut DbConnection, code: &str, side: &str) -> Result<Vec<TransferRow>, Error> {
    let mut rows: Vec<TransferRow> = transfers::table
        .filter(transfers::resident_code.eq(code))
        .filter(transfers::side.eq(side))
        .select(TransferRow::as_select())
        .load(conn)?;
    // Newest first (by instant: RFC 3339 texts with and without fractional seconds do not sort
    // as text).
    rows.sort_by_key(|t| {
        std::cmp::Reverse(
            t.created_at
                .parse::<jiff::Timestamp>()
                .unwrap_or(jiff::Timestamp::MIN),
        )
    });
    Ok(rows)
}

fn save(conn: &mut DbConnection, row: &TransferRow) -> Result<(), Error> {
    diesel::update(transfers::table.filter(transfers::transfer_id.eq(&row.transfer_id)))
        .set(row)
        .execute(conn)?;
    Ok(())
}

/// `GET /v1/transfers/{id}`.
pub fn get(conn: &mut DbConnection, id: &str) -> Result<TransferView, Error> {
    find(conn, id)?
        .map(TransferView::from)
        .ok_or_else(|| Error::NotFound(format!("transfer {id}")))
}

fn status_of(row: &ResidentRow) -> Result<Status, Error> {
    Status::parse(&row.status).ok_or_else(|| {
        Error::Corrupt(format!(
            "resident {} has unknown status {:?}",
            row.resident_code, row.status
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// Transactions

/// Files a move-out at this CS (the source). Returns the transfer and whether it was filed
/// before (a repeat of the same request: same destination, planned date and address, and PIN).
pub fn move_out(
    conn: &mut DbConnection,
    ctx: &CsContext,
    req: &MoveOut,
) -> Result<(TransferView, bool), Error> {
    let own = ctx
        .identity
        .municipality
        .clone()
        .ok_or(Error::WrongRole(ctx.identity.role.as_str()))?;
    let sender = ctx.identity.sender_id();
    let now = ctx.now;
    conn.transaction(|conn| {
        lock_writes(conn)?;
        let planned = req.planned_date.to_string();
        let previous = of_resident(conn, &req.resident_code, "source")?;
        let today = now
            .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(9)))
            .date();
        if let Some(same) = previous.iter().find(|t| {
            t.state != CANCELLED
                && !(t.state == MOVE_OUT_FILED && expired(t, today))
                && t.to_municipality == req.destination
                && t.planned_date == planned
                && t.planned_address == req.planned_address
        }) && verify_pin(&same.pin_hash, &req.pin)
        {
            return Ok((TransferView::from(same.clone()), true));
        }
        for open in previous.iter().filter(|t| t.state == MOVE_OUT_FILED) {
            if expired(open, today) {
                // No move-in can follow any more (B refuses after 30 days): it lapses.
                end_pending(
                    conn,
                    &sender,
                    open.clone(),
                    "expired: no move-in within 30 days of the planned date",
                    now,
                    ctx.trace.as_ref(),
                )?;
                continue;
            }
            return Err(Error::StateConflict {
                rule: "transfer_in_progress",
                field: Some("resident_code"),
                message: format!(
                    "transfer {} to {} is already filed for this resident",
                    open.transfer_id, open.to_municipality
                ),
            });
        }
        let resident = store::find_resident(conn, &req.resident_code)?
            .filter(|r| r.municipality_code == own)
            .ok_or_else(|| Error::NotFound(req.resident_code.clone()))?;
        match status_of(&resident)? {
            Status::Active => {}
            Status::Deceased => {
                return Err(Error::StateConflict {
                    rule: "resident_deceased",
                    field: Some("resident_code"),
                    message: "the resident is deceased".into(),
                });
            }
            Status::MovedOut => {
                return Err(Error::StateConflict {
                    rule: "not_active",
                    field: Some("resident_code"),
                    message: "the resident moved out already".into(),
                });
            }
        }
        let n = reserve_ids(conn, "transfers", 1)?;
        let transfer_id = format!("{own}-T{n}");
        let record = MoveOutRecord::from(&resident);
        let pin_hash = hash_pin(&req.pin)?;
        let at = now.to_string();
        let row = TransferRow {
            transfer_id: transfer_id.clone(),
            side: "source".into(),
            state: MOVE_OUT_FILED.into(),
            resident_code: req.resident_code.clone(),
            from_municipality: own.clone(),
            to_municipality: req.destination.clone(),
            planned_date: planned.clone(),
            planned_address: req.planned_address.clone(),
            record: serde_json::to_string(&record).map_err(|e| Error::Corrupt(e.to_string()))?,
            pin_hash: pin_hash.clone(),
            pin_failures: 0,
            move_date: None,
            new_address: None,
            note: None,
            created_at: at.clone(),
            updated_at: at,
        };
        diesel::insert_into(transfers::table)
            .values(&row)
            .execute(conn)?;
        let body = MoveOutInfo {
            transfer_id: transfer_id.clone(),
            record,
            planned_date: planned,
            planned_address: req.planned_address.clone(),
            pin_hash,
        };
        let message = Message::new(
            MessageKind::MoveOutInfo,
            &transfer_id,
            &own,
            &req.destination,
            serde_json::to_value(&body).map_err(|e| Error::Corrupt(e.to_string()))?,
        )
        .in_trace(ctx.trace.as_ref());
        mailbox::enqueue(conn, &sender, &message, now)?;
        tracing::info!(
            trace_id = %ctx.trace_id(),
            transfer_id = %transfer_id,
            resident_code = %req.resident_code,
            to = %req.destination,
            "transfer: move-out filed; move-out information sent"
        );
        Ok((TransferView::from(row), false))
    })
}

/// A move-out information message at the destination: stored once (`received`).
pub fn receive_move_out_info(
    conn: &mut DbConnection,
    ctx: &CsContext,
    message: &Message,
) -> Result<(), Error> {
    let info = MoveOutInfo::deserialize(&message.body)
        .map_err(|e| Error::InvalidBody(format!("move-out information: {e}")))?;
    if find(conn, &info.transfer_id)?.is_some() {
        return Ok(());
    }
    let at = ctx.now.to_string();
    let row = TransferRow {
        transfer_id: info.transfer_id.clone(),
        side: "destination".into(),
        state: RECEIVED.into(),
        resident_code: info.record.resident_code.clone(),
        from_municipality: message.from.clone(),
        to_municipality: message.to.clone(),
        planned_date: info.planned_date,
        planned_address: info.planned_address,
        record: serde_json::to_string(&info.record).map_err(|e| Error::Corrupt(e.to_string()))?,
        pin_hash: info.pin_hash,
        pin_failures: 0,
        move_date: None,
        new_address: None,
        note: None,
        created_at: at.clone(),
        updated_at: at,
    };
    diesel::insert_into(transfers::table)
        .values(&row)
        .execute(conn)?;
    tracing::info!(
            trace_id = %ctx.trace_id(),
        transfer_id = %row.transfer_id,
        resident_code = %row.resident_code,
        from = %row.from_municipality,
        "transfer: move-out information received"
    );
    Ok(())
}

/// What a move-in request came to.
#[derive(Debug)]
pub enum MoveInResult {
    /// Registered now (false) or before by the same request (true).
    Done(Box<TransferView>, bool),
    /// Refused after recording something (a wrong PIN counts): the error to answer with.
    Refused(Error),
}

/// Files a move-in at this CS (the destination).
pub fn move_in(
    conn: &mut DbConnection,
    ctx: &CsContext,
    req: &MoveIn,
) -> Result<MoveInResult, Error> {
    let own = ctx
        .identity
        .municipality
        .clone()
        .ok_or(Error::WrongRole(ctx.identity.role.as_str()))?;
    let sender = ctx.identity.sender_id();
    let now = ctx.now;
    let today = ctx
        .now
        .to_zoned(jiff::tz::TimeZone::fixed(jiff::tz::offset(9)))
        .date();
    conn.transaction(|conn| {
        lock_writes(conn)?;
        let candidates = of_resident(conn, &req.resident_code, "destination")?;
        let Some(mut row) = candidates
            .iter()
            .find(|t| t.state == RECEIVED)
            .or_else(|| candidates.iter().find(|t| t.state == MOVED_IN))
            .cloned()
        else {
            if candidates.iter().any(|t| t.state == CANCELLED) {
                return Err(Error::StateConflict {
                    rule: "transfer_cancelled",
                    field: Some("resident_code"),
                    message: "the move-out was cancelled at the source municipality".into(),
                });
            }
            return Err(Error::StateConflict {
                rule: "no_move_out_information",
                field: Some("resident_code"),
                message: "no move-out information for this resident has reached this municipality"
                    .into(),
            });
        };
        if row.pin_failures >= MAX_PIN_FAILURES {
            return Err(Error::StateConflict {
                rule: "pin_locked",
                field: Some("pin"),
                message: format!(
                    "{MAX_PIN_FAILURES} wrong PINs: the card's PIN must be reset at the window"
                ),
            });
        }
        if !verify_pin(&row.pin_hash, &req.pin) {
            row.pin_failures += 1;
            row.updated_at = now.to_string();
            save(conn, &row)?;
            return Ok(MoveInResult::Refused(domain::invalid(
                "pin",
                "pin_mismatch",
                format!(
                    "the PIN does not match the card ({} tries left)",
                    MAX_PIN_FAILURES - row.pin_failures
                ),
            )));
        }
        let address = req
            .address
            .clone()
            .unwrap_or_else(|| row.planned_address.clone());
        let move_date = req.move_date.to_string();
        if row.state == MOVED_IN {
            if row.move_date.as_deref() == Some(move_date.as_str())
                && row.new_address.as_deref() == Some(address.as_str())
            {
                return Ok(MoveInResult::Done(Box::new(TransferView::from(row)), true));
            }
            return Err(Error::StateConflict {
                rule: "already_moved_in",
                field: Some("resident_code"),
                message: format!(
                    "transfer {} was moved in on {} already",
                    row.transfer_id,
                    row.move_date.as_deref().unwrap_or("?")
                ),
            });
        }
        let planned: Date = row
            .planned_date
            .parse()
            .map_err(|e| Error::Corrupt(format!("planned date of {}: {e}", row.transfer_id)))?;
        check_move_in_dates(req.move_date, planned, today)?;
        let record: MoveOutRecord = serde_json::from_str(&row.record)
            .map_err(|e| Error::Corrupt(format!("record of {}: {e}", row.transfer_id)))?;
        let update = Update {
            resident_code: record.resident_code.clone(),
            individual_number: record.individual_number.clone(),
            name: record.name.clone(),
            name_kana: record.name_kana.clone(),
            former_surname: record.former_surname.clone(),
            alias: record.alias.clone(),
            birth_date: record
                .birth_date
                .parse()
                .map_err(|e| Error::Corrupt(format!("birth date of {}: {e}", row.transfer_id)))?,
            sex: Sex::parse(&record.sex).ok_or_else(|| {
                Error::Corrupt(format!("sex of {}: {:?}", row.transfer_id, record.sex))
            })?,
            address: address.clone(),
            municipality_code: own.clone(),
            reason: Reason::MoveIn,
            change_date: req.move_date,
            permanent_domicile: record.permanent_domicile.clone(),
            domicile_head: record.domicile_head.clone(),
        };
        // The 転入 first: its outbox row precedes the notice, so every tier above applies it
        // before the notice passes and before A's confirmed 転出 can arrive.
        store::apply_updates(conn, &sender, vec![update], now, ctx.trace.as_ref())?;
        row.state = MOVED_IN.into();
        row.move_date = Some(move_date.clone());
        row.new_address = Some(address.clone());
        row.updated_at = now.to_string();
        save(conn, &row)?;
        let notice = MoveInNotice {
            transfer_id: row.transfer_id.clone(),
            resident_code: row.resident_code.clone(),
            move_date,
            new_address: address,
        };
        let message = Message::new(
            MessageKind::MoveInNotice,
            &row.transfer_id,
            &own,
            &row.from_municipality,
            serde_json::to_value(&notice).map_err(|e| Error::Corrupt(e.to_string()))?,
        )
        .in_trace(ctx.trace.as_ref());
        mailbox::enqueue(conn, &sender, &message, now)?;
        tracing::info!(
            trace_id = %ctx.trace_id(),
            transfer_id = %row.transfer_id,
            resident_code = %row.resident_code,
            from = %row.from_municipality,
            "transfer: moved in; move-in notice sent"
        );
        Ok(MoveInResult::Done(Box::new(TransferView::from(row)), false))
    })
}

/// A move-in notice at the source: the resident is marked moved out with a 転出 update (reported
/// upstream like any update) and the transfer completed, once.
pub fn receive_move_in_notice(
    conn: &mut DbConnection,
    ctx: &CsContext,
    message: &Message,
) -> Result<(), Error> {
    let notice = MoveInNotice::deserialize(&message.body)
        .map_err(|e| Error::InvalidBody(format!("move-in notice: {e}")))?;
    let Some(mut row) = find(conn, &notice.transfer_id)?.filter(|t| t.side == "source") else {
        tracing::error!(transfer_id = %notice.transfer_id, "transfer: move-in notice for an unknown transfer skipped");
        return Ok(());
    };
    if row.state == COMPLETED {
        return Ok(());
    }
    // A cancellation that crossed the move-in: the person did move in at B with card and PIN,
    // so the move stands (else they would be active in two municipalities).
    let crossed = row.state == CANCELLED;
    let own = ctx.identity.municipality.clone().unwrap_or_default();
    let resident = store::find_resident(conn, &row.resident_code)?;
    let active_here = match &resident {
        Some(r) => r.municipality_code == own && status_of(r)? == Status::Active,
        None => false,
    };
    let move_date: Date = notice
        .move_date
        .parse()
        .map_err(|e| Error::InvalidBody(format!("move-in notice move_date: {e}")))?;
    if let (true, Some(r)) = (active_here, resident) {
        let update = Update {
            resident_code: r.resident_code.clone(),
            individual_number: r.individual_number.clone(),
            name: r.name.clone(),
            name_kana: r.name_kana.clone(),
            former_surname: r.former_surname.clone(),
            alias: r.alias.clone(),
            birth_date: r
                .birth_date
                .parse()
                .map_err(|e| Error::Corrupt(format!("birth date of {}: {e}", r.resident_code)))?,
            sex: Sex::parse(&r.sex)
                .ok_or_else(|| Error::Corrupt(format!("sex of {}", r.resident_code)))?,
            address: r.address.clone(),
            municipality_code: own.clone(),
            reason: Reason::MoveOut,
            change_date: move_date,
            permanent_domicile: r.permanent_domicile.clone(),
            domicile_head: r.domicile_head.clone(),
        };
        store::apply_updates(
            conn,
            &ctx.identity.sender_id(),
            vec![update],
            ctx.now,
            ctx.trace.as_ref(),
        )?;
        if crossed {
            row.note = Some(
                "moved in at the destination before the cancellation reached it; the move stands"
                    .into(),
            );
        }
    } else {
        row.note = Some("the resident was no longer active here; no 転出 recorded".into());
    }
    row.state = COMPLETED.into();
    row.move_date = Some(notice.move_date);
    row.new_address = Some(notice.new_address);
    row.updated_at = ctx.now.to_string();
    save(conn, &row)?;
    tracing::info!(
            trace_id = %ctx.trace_id(),
        transfer_id = %row.transfer_id,
        resident_code = %row.resident_code,
        to = %row.to_municipality,
        "transfer: move-in notice received; moved out and reported upstream"
    );
    Ok(())
}

/// Cancels a move-out at the source (転出取消) while the person has not moved in: the transfer
/// is `cancelled` and the destination is told. A repeat answers the cancelled transfer again.
pub fn cancel(
    conn: &mut DbConnection,
    ctx: &CsContext,
    id: &str,
) -> Result<(TransferView, bool), Error> {
    let own = ctx
        .identity
        .municipality
        .clone()
        .ok_or(Error::WrongRole(ctx.identity.role.as_str()))?;
    conn.transaction(|conn| {
        lock_writes(conn)?;
        let mut row = find(conn, id)?
            .filter(|t| t.side == "source")
            .ok_or_else(|| Error::NotFound(format!("transfer {id}")))?;
        match row.state.as_str() {
            CANCELLED => return Ok((TransferView::from(row), true)),
            MOVE_OUT_FILED => {}
            _ => {
                return Err(Error::StateConflict {
                    rule: "already_completed",
                    field: None,
                    message: "the person moved in at the destination; the move stands".into(),
                });
            }
        }
        row.state = CANCELLED.into();
        row.updated_at = ctx.now.to_string();
        save(conn, &row)?;
        let message = Message::new(
            MessageKind::MoveOutCancelled,
            &row.transfer_id,
            &own,
            &row.to_municipality,
            serde_json::json!({ "transfer_id": row.transfer_id }),
        ).in_trace(ctx.trace.as_ref());
        mailbox::enqueue(conn, &ctx.identity.sender_id(), &message, ctx.now)?;
        tracing::info!(trace_id = %ctx.trace_id(), transfer_id = %row.transfer_id, to = %row.to_municipality, "transfer: move-out cancelled");
        Ok((TransferView::from(row), false))
    })
}

/// Cancels the pending move-outs (`move_out_filed`) of `codes` at this source, because the
/// existing system recorded a 死亡 or an ordinary 転出 for them (inside that transaction): the
/// destination is told, and a move-in there is refused.
pub(crate) fn cancel_pending_of(
    conn: &mut DbConnection,
    sender: &str,
    codes: &[&str],
    now: jiff::Timestamp,
    trace: Option<&crate::domain::trace::TraceParent>,
) -> Result<usize, Error> {
    let rows: Vec<TransferRow> = transfers::table
        .filter(transfers::side.eq("source"))
        .filter(transfers::state.eq(MOVE_OUT_FILED))
        .filter(transfers::resident_code.eq_any(codes))
        .select(TransferRow::as_select())
        .load(conn)?;
    for row in rows.iter().cloned() {
        end_pending(
            conn,
            sender,
            row,
            "cancelled: 死亡 or 転出 recorded by the existing system",
            now,
            trace,
        )?;
    }
    Ok(rows.len())
}

/// True when a filed move-out can no longer be moved in (30 days after its planned date).
fn expired(row: &TransferRow, today: Date) -> bool {
    row.planned_date.parse::<Date>().is_ok_and(|planned| {
        planned
            .checked_add(PLANNED_DAYS.days())
            .is_ok_and(|last| today > last)
    })
}

/// Ends a pending move-out at the source (`cancelled`, with `note`) and tells the destination.
fn end_pending(
    conn: &mut DbConnection,
    sender: &str,
    mut row: TransferRow,
    note: &str,
    now: jiff::Timestamp,
    trace: Option<&crate::domain::trace::TraceParent>,
) -> Result<(), Error> {
    row.state = CANCELLED.into();
    row.note = Some(note.to_owned());
    row.updated_at = now.to_string();
    save(conn, &row)?;
    let message = Message::new(
        MessageKind::MoveOutCancelled,
        &row.transfer_id,
        &row.from_municipality,
        &row.to_municipality,
        serde_json::json!({ "transfer_id": row.transfer_id }),
    )
    .in_trace(trace);
    mailbox::enqueue(conn, sender, &message, now)?;
    tracing::info!(transfer_id = %row.transfer_id, resident_code = %row.resident_code, note, "transfer: pending move-out ended");
    Ok(())
}

/// A cancellation at the destination: a `received` transfer becomes `cancelled`; after the
/// move-in it changes nothing (the notice completes the move at the source).
pub fn receive_cancellation(
    conn: &mut DbConnection,
    ctx: &CsContext,
    message: &Message,
) -> Result<(), Error> {
    let id = message.body["transfer_id"]
        .as_str()
        .ok_or_else(|| Error::InvalidBody("cancellation without transfer_id".into()))?;
    let Some(mut row) = find(conn, id)?.filter(|t| t.side == "destination") else {
        return Ok(());
    };
    if row.state == RECEIVED {
        row.state = CANCELLED.into();
        row.updated_at = ctx.now.to_string();
        save(conn, &row)?;
        tracing::info!(trace_id = %ctx.trace_id(), transfer_id = %row.transfer_id, "transfer: cancellation received");
    }
    Ok(())
}

/// The transfers and the count of each state (for tests and diagnostics).
pub fn states(conn: &mut DbConnection) -> Result<Vec<(String, String)>, Error> {
    Ok(transfers::table
        .select((transfers::transfer_id, transfers::state))
        .load(conn)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use serde_json::json;

    #[test]
    fn move_in_dates() {
        let planned = date(2024, 6, 1);
        let today = date(2024, 6, 20);
        assert!(check_move_in_dates(date(2024, 6, 10), planned, today).is_ok());
        assert!(check_move_in_dates(date(2024, 6, 6), planned, today).is_ok());
        let e = check_move_in_dates(date(2024, 6, 5), planned, today).unwrap_err();
        assert_eq!(
            (e.tag(), e.field()),
            ("move_in_deadline", Some("move_date"))
        );
        let e = check_move_in_dates(date(2024, 6, 21), planned, today).unwrap_err();
        assert_eq!((e.tag(), e.field()), ("future_date", Some("move_date")));
        // 30 days after the planned date is the last day.
        assert!(check_move_in_dates(date(2024, 7, 1), planned, date(2024, 7, 1)).is_ok());
        let e = check_move_in_dates(date(2024, 7, 2), planned, date(2024, 7, 2)).unwrap_err();
        assert_eq!(
            (e.tag(), e.field()),
            ("planned_date_deadline", Some("planned_date"))
        );
    }

    #[test]
    fn pin_hashes_verify_and_never_contain_the_pin() {
        let h = hash_pin("1234").unwrap();
        assert!(h.starts_with("pbkdf2-sha256$100000$"), "{h}");
        assert!(verify_pin(&h, "1234"));
        assert!(!verify_pin(&h, "1235"));
        assert_ne!(h, hash_pin("1234").unwrap(), "salted");
        for bad in ["", "x$y", "pbkdf2-sha256$0$00$00", "pbkdf2-sha256$1$zz$00"] {
            assert!(!verify_pin(bad, "1234"), "{bad}");
        }
    }

    #[test]
    fn move_out_fields() {
        let today = date(2024, 6, 3);
        let ok = json!({"resident_code": "12345678903", "destination_municipality": "271004",
            "planned_date": "2024-06-10", "planned_address": "大阪府大阪市1-1", "pin": "1234"});
        let m = parse_move_out(&ok, "131016", today).unwrap();
        assert_eq!(m.destination, "271004");
        let err = |field: &str, value: Value| {
            let mut v = ok.clone();
            v[field] = value;
            let e = parse_move_out(&v, "131016", today).unwrap_err();
            (e.tag(), e.field())
        };
        assert_eq!(err("pin", json!("12a4")), ("format", Some("pin")));
        assert_eq!(err("pin", json!(1234)), ("wrong_type", Some("pin")));
        assert_eq!(
            err("destination_municipality", json!("131016")),
            ("own_municipality", Some("destination_municipality"))
        );
        assert_eq!(
            err("destination_municipality", json!("271005")),
            ("check_digit", Some("destination_municipality"))
        );
        assert_eq!(
            err("planned_date", json!("2024-05-19")),
            ("planned_date_past", Some("planned_date"))
        );
        assert_eq!(
            err("planned_date", json!("2024-02-30")),
            ("invalid_date", Some("planned_date"))
        );
        assert_eq!(
            err("planned_address", json!("")),
            ("required", Some("planned_address"))
        );
        assert_eq!(
            parse_move_out(&json!([]), "131016", today)
                .unwrap_err()
                .tag(),
            "invalid_body"
        );
    }

    #[test]
    fn move_in_fields() {
        let today = date(2024, 6, 3);
        let ok = json!({"resident_code": "12345678903", "pin": "0000", "move_date": "2024-06-01"});
        assert!(parse_move_in(&ok, today).unwrap().address.is_none());
        let mut v = ok.clone();
        v["move_date"] = json!("2024-06-04");
        let e = parse_move_in(&v, today).unwrap_err();
        assert_eq!((e.tag(), e.field()), ("future_date", Some("move_date")));
    }
}
