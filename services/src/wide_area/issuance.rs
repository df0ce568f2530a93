//! Wide-area issuance of resident-record copies (住民票の写しの広域交付): rules and transactions.
//!
//! The issuing CS X (`side = issuing`) takes `POST /v1/issuances` (with an Idempotency-Key),
//! records the request (`requested`) and sends it to the home CS H through the tiers
//! (`mailbox.rs`). H (`side = home`) decides once: inside the window-service hours (or an
//! active WideAreaIssuance extension naming both nodes), for an active resident of H, it
//! answers with the copy data — never 本籍 or 筆頭者 (`ResidentCopy` has no such fields) — else
//! with a refusal. X stores the answer (`issued` or `refused`). Both ends write every step to
//! their `issuance_log` table and a tracing line.

use diesel::prelude::*;
use jiff::Timestamp;
use juki_calendar::Calendar;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::domain::{self, Sex, Status};
use crate::error::Error;
use crate::relay::mailbox::{self, Message, MessageKind};
use crate::store::db::DbConnection;
use crate::store::models::{IssuanceRow, ResidentRow};
use crate::store::schema::{issuance_log, issuances};
use crate::store::{self, lock_writes, reserve_ids};
use crate::wide_area::CsContext;

pub const REQUESTED: &str = "requested";
pub const ISSUED: &str = "issued";
pub const REFUSED: &str = "refused";

/// The ServiceExtension kind that extends the wide-area issuance.
pub const EXTENSION_KIND: &str = "WideAreaIssuance";

// ---------------------------------------------------------------------------------------------
// Pure rules

pub use crate::relay::extensions::{Extension, ExtensionFile, parse_extensions, read_extensions};

/// Whether the wide-area issuance between this node (`own_names`) and the CS of `other` is
/// open at `now`: inside the window-service hours of the calendar (no calendar: always), or
/// under an extension of kind WideAreaIssuance that names both nodes (by JukiNode name
/// `cs-<code>`, or code) and runs from the start of its date to its end time.
pub fn service_open(
    calendar: Option<&Calendar>,
    extensions: &[Extension],
    own_names: &[String],
    other: &str,
    now: Timestamp,
) -> bool {
    let Some(calendar) = calendar else {
        return true;
    };
    if calendar.in_window_service(now) {
        return true;
    }
    let other_names = [other.to_owned(), format!("cs-{other}")];
    extensions.iter().any(|e| {
        e.kind == EXTENSION_KIND
            && e.nodes.iter().any(|n| own_names.contains(n))
            && e.nodes.iter().any(|n| other_names.contains(n))
            && e.in_force(calendar, now)
    })
}

/// `POST /v1/issuances`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IssuanceRequest {
    pub resident_code: String,
    pub home_municipality: String,
    pub requested_by: Option<String>,
}

pub fn parse_request(v: &Value, own: &str) -> Result<IssuanceRequest, Error> {
    let obj = v
        .as_object()
        .ok_or_else(|| Error::InvalidBody("expected a JSON object".into()))?;
    let resident_code = domain::required(obj, "resident_code")?.to_owned();
    juki_codes::validate_resident_record_code(&resident_code)
        .map_err(|e| domain::code_error("resident_code", e))?;
    let home = domain::required(obj, "home_municipality")?.to_owned();
    juki_codes::validate_municipality_code(&home)
        .map_err(|e| domain::code_error("home_municipality", e))?;
    if home == own {
        return Err(domain::invalid(
            "home_municipality",
            "own_municipality",
            "the resident lives here: issue the copy locally, not wide-area",
        ));
    }
    Ok(IssuanceRequest {
        resident_code,
        home_municipality: home,
        requested_by: domain::optional_text(obj, "requested_by")?,
    })
}

/// The copy data of a wide-area issuance. It has no permanent domicile (本籍) and no head of
/// the family register (筆頭者): the wide-area copy omits them by law.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResidentCopy {
    pub resident_code: String,
    pub name: String,
    pub name_kana: String,
    pub former_surname: Option<String>,
    pub alias: Option<String>,
    pub birth_date: String,
    pub sex: String,
    pub address: String,
    pub municipality_code: String,
    pub last_change: Option<String>,
}

impl From<&ResidentRow> for ResidentCopy {
    fn from(r: &ResidentRow) -> Self {
        ResidentCopy {
            resident_code: r.resident_code.clone(),
            name: r.name.clone(),
            name_kana: r.name_kana.clone(),
            former_surname: r.former_surname.clone(),
            alias: r.alias.clone(),
            birth_date: r.birth_date.clone(),
            sex: Sex::parse(&r.sex).map_or("?", Sex::japanese).to_owned(),
            address: r.address.clone(),
            municipality_code: r.municipality_code.clone(),
            last_change: None,
        }
    }
}

/// The home CS's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Answer {
    Issued {
        copy: ResidentCopy,
    },
    Refused {
        status: u16,
        error: String,
        message: String,
        field: Option<String>,
    },
}

fn refused(status: u16, error: &str, field: Option<&str>, message: &str) -> Answer {
    Answer::Refused {
        status,
        error: error.into(),
        message: message.into(),
        field: field.map(str::to_owned),
    }
}

/// The home CS's decision.
pub fn decide(open: bool, resident: Option<&ResidentRow>, home: &str) -> Answer {
    if !open {
        return refused(
            409,
            "outside_window_service",
            None,
            "the home municipality is outside the window-service hours and no WideAreaIssuance extension names both",
        );
    }
    let Some(r) = resident.filter(|r| r.municipality_code == home) else {
        return refused(
            404,
            "unknown_resident",
            Some("resident_code"),
            "no resident with this code in the home municipality",
        );
    };
    match Status::parse(&r.status) {
        Some(Status::Active) => Answer::Issued {
            copy: ResidentCopy::from(r),
        },
        Some(Status::MovedOut) => refused(
            409,
            "resident_moved_out",
            Some("resident_code"),
            "the resident moved out of the home municipality: no copy is issued",
        ),
        _ => refused(
            409,
            "resident_deceased",
            Some("resident_code"),
            "the resident is deceased: no wide-area copy is issued",
        ),
    }
}

impl Answer {
    fn outcome(&self) -> String {
        match self {
            Answer::Issued { .. } => ISSUED.into(),
            Answer::Refused { error, .. } => format!("{REFUSED}:{error}"),
        }
    }

    fn state(&self) -> &'static str {
        match self {
            Answer::Issued { .. } => ISSUED,
            Answer::Refused { .. } => REFUSED,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Views and transactions

/// An issuance as `GET /v1/issuances/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IssuanceView {
    pub issuance_id: String,
    pub side: String,
    pub state: String,
    pub resident_code: String,
    pub issuing_municipality: String,
    pub home_municipality: String,
    /// The copy (state issued) or the refusal (state refused).
    pub answer: Option<Value>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<IssuanceRow> for IssuanceView {
    fn from(r: IssuanceRow) -> Self {
        IssuanceView {
            answer: r.answer.and_then(|a| serde_json::from_str(&a).ok()),
            issuance_id: r.issuance_id,
            side: r.side,
            state: r.state,
            resident_code: r.resident_code,
            issuing_municipality: r.issuing_municipality,
            home_municipality: r.home_municipality,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

fn find(conn: &mut DbConnection, id: &str) -> Result<Option<IssuanceRow>, Error> {
    Ok(issuances::table
        .filter(issuances::issuance_id.eq(id))
        .select(IssuanceRow::as_select())
        .first(conn)
        .optional()?)
}

pub fn get(conn: &mut DbConnection, id: &str) -> Result<IssuanceView, Error> {
    find(conn, id)?
        .map(IssuanceView::from)
        .ok_or_else(|| Error::NotFound(format!("issuance {id}")))
}

#[allow(clippy::too_many_arguments)]
fn log(
    conn: &mut DbConnection,
    now: Timestamp,
    issuance_id: &str,
    side: &str,
    resident_code: &str,
    counterpart: &str,
    outcome: &str,
    detail: &str,
    trace_id: &str,
) -> Result<(), Error> {
    let id = reserve_ids(conn, "issuance_log", 1)?;
    diesel::insert_into(issuance_log::table)
        .values((
            issuance_log::id.eq(id),
            issuance_log::at.eq(now.to_string()),
            issuance_log::issuance_id.eq(issuance_id),
            issuance_log::side.eq(side),
            issuance_log::resident_code.eq(resident_code),
            issuance_log::counterpart.eq(counterpart),
            issuance_log::outcome.eq(outcome),
            issuance_log::detail.eq(detail),
        ))
        .execute(conn)?;
    tracing::info!(
        issuance_id,
        side,
        resident_code,
        counterpart,
        outcome,
        detail,
        trace_id,
        "wide-area issuance"
    );
    Ok(())
}

/// What a request came to at the issuing CS.
#[derive(Debug)]
pub enum Requested {
    /// Sent to the home CS now (false), or the same request was made before (true).
    Sent(Box<IssuanceView>, bool),
    /// Refused here (outside the hours); logged.
    Closed,
}

/// Records a request at the issuing CS (`open`: the service is open at this end) and sends it.
pub fn request(
    conn: &mut DbConnection,
    ctx: &CsContext,
    key: &str,
    req: &IssuanceRequest,
    open: bool,
) -> Result<Requested, Error> {
    let own = ctx
        .identity
        .municipality
        .clone()
        .ok_or(Error::WrongRole(ctx.identity.role.as_str()))?;
    let canonical = serde_json::to_string(req).map_err(|e| Error::Corrupt(e.to_string()))?;
    let now = ctx.now;
    conn.transaction(|conn| {
        lock_writes(conn)?;
        let previous: Option<IssuanceRow> = issuances::table
            .filter(issuances::idempotency_key.eq(key))
            .select(IssuanceRow::as_select())
            .first(conn)
            .optional()?;
        if let Some(prev) = previous {
            if prev.request != canonical {
                return Err(Error::IdempotencyKeyReused(key.to_owned()));
            }
            return Ok(Requested::Sent(Box::new(IssuanceView::from(prev)), true));
        }
        if !open {
            log(
                conn,
                now,
                "-",
                "issuing",
                &req.resident_code,
                &req.home_municipality,
                "refused:outside_window_service",
                "this municipality is outside the window-service hours",
                ctx.trace_id(),
            )?;
            return Ok(Requested::Closed);
        }
        let n = reserve_ids(conn, "issuances", 1)?;
        let issuance_id = format!("{own}-I{n}");
        let at = now.to_string();
        let row = IssuanceRow {
            issuance_id: issuance_id.clone(),
            side: "issuing".into(),
            state: REQUESTED.into(),
            resident_code: req.resident_code.clone(),
            issuing_municipality: own.clone(),
            home_municipality: req.home_municipality.clone(),
            idempotency_key: Some(key.to_owned()),
            request: canonical,
            answer: None,
            created_at: at.clone(),
            updated_at: at,
        };
        diesel::insert_into(issuances::table)
            .values(&row)
            .execute(conn)?;
        log(
            conn,
            now,
            &issuance_id,
            "issuing",
            &req.resident_code,
            &req.home_municipality,
            REQUESTED,
            req.requested_by.as_deref().unwrap_or(""),
            ctx.trace_id(),
        )?;
        let message = Message::new(
            MessageKind::IssuanceRequest,
            &issuance_id,
            &own,
            &req.home_municipality,
            json!({"issuance_id": issuance_id, "resident_code": req.resident_code}),
        )
        .in_trace(ctx.trace.as_ref());
        mailbox::enqueue(conn, &ctx.identity.sender_id(), &message, now)?;
        Ok(Requested::Sent(Box::new(IssuanceView::from(row)), false))
    })
}

#[derive(Debug, Deserialize)]
struct RequestBody {
    issuance_id: String,
    resident_code: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct AnswerBody {
    issuance_id: String,
    answer: Answer,
}

/// A request at the home CS: decided once, logged, answered.
pub fn receive_request(
    conn: &mut DbConnection,
    ctx: &CsContext,
    message: &Message,
) -> Result<(), Error> {
    let body = RequestBody::deserialize(&message.body)
        .map_err(|e| Error::InvalidBody(format!("issuance request: {e}")))?;
    if find(conn, &body.issuance_id)?.is_some() {
        return Ok(());
    }
    let own = ctx.identity.municipality.clone().unwrap_or_default();
    let open = service_open(
        ctx.calendar.as_ref(),
        &ctx.extensions,
        &ctx.own_names,
        &message.from,
        ctx.now,
    );
    let resident = store::find_resident(conn, &body.resident_code)?;
    let answer = decide(open, resident.as_ref(), &own);
    let at = ctx.now.to_string();
    let answer_text = serde_json::to_string(&answer).map_err(|e| Error::Corrupt(e.to_string()))?;
    diesel::insert_into(issuances::table)
        .values(IssuanceRow {
            issuance_id: body.issuance_id.clone(),
            side: "home".into(),
            state: answer.state().into(),
            resident_code: body.resident_code.clone(),
            issuing_municipality: message.from.clone(),
            home_municipality: own.clone(),
            idempotency_key: None,
            request: message.body.to_string(),
            answer: Some(answer_text),
            created_at: at.clone(),
            updated_at: at,
        })
        .execute(conn)?;
    log(
        conn,
        ctx.now,
        &body.issuance_id,
        "home",
        &body.resident_code,
        &message.from,
        &answer.outcome(),
        "",
        ctx.trace_id(),
    )?;
    let reply = Message::new(
        MessageKind::IssuanceAnswer,
        &body.issuance_id,
        &own,
        &message.from,
        serde_json::to_value(AnswerBody {
            issuance_id: body.issuance_id.clone(),
            answer,
        })
        .map_err(|e| Error::Corrupt(e.to_string()))?,
    )
    .in_trace(ctx.trace.as_ref());
    mailbox::enqueue(conn, &ctx.identity.sender_id(), &reply, ctx.now)?;
    Ok(())
}

/// The answer at the issuing CS: stored once, logged.
pub fn receive_answer(
    conn: &mut DbConnection,
    ctx: &CsContext,
    message: &Message,
) -> Result<(), Error> {
    let body = AnswerBody::deserialize(&message.body)
        .map_err(|e| Error::InvalidBody(format!("issuance answer: {e}")))?;
    let Some(mut row) = find(conn, &body.issuance_id)?.filter(|r| r.side == "issuing") else {
        tracing::error!(issuance_id = %body.issuance_id, "issuance answer for an unknown request skipped");
        return Ok(());
    };
    if row.state != REQUESTED {
        return Ok(());
    }
    row.state = body.answer.state().into();
    row.answer =
        Some(serde_json::to_string(&body.answer).map_err(|e| Error::Corrupt(e.to_string()))?);
    row.updated_at = ctx.now.to_string();
    diesel::update(issuances::table.filter(issuances::issuance_id.eq(&row.issuance_id)))
        .set(&row)
        .execute(conn)?;
    log(
        conn,
        ctx.now,
        &row.issuance_id,
        "issuing",
        &row.resident_code,
        &row.home_municipality,
        &body.answer.outcome(),
        "",
        ctx.trace_id(),
    )?;
    Ok(())
}

/// The HTTP answer for a view: 200 issued, 202 still requested, the refusal's 4xx.
pub fn http_answer(view: &IssuanceView) -> (u16, Value) {
    let body = json!(view);
    match view.state.as_str() {
        ISSUED => (200, body),
        REFUSED => {
            let a = view.answer.clone().unwrap_or(Value::Null);
            // Always a 4xx: the home CS's status, if it is one.
            let status = a["status"]
                .as_u64()
                .filter(|s| (400..500).contains(s))
                .map_or(409, |s| s as u16);
            (
                status,
                json!({
                    "error": a["error"],
                    "message": a["message"],
                    "field": a["field"],
                    "issuance_id": view.issuance_id,
                    "state": view.state,
                }),
            )
        }
        _ => (202, body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use juki_calendar::CalendarConfig;

    fn row(status: &str) -> ResidentRow {
        ResidentRow {
            resident_code: "12345678903".into(),
            individual_number: Some("123456789018".into()),
            name: "山田 太郎".into(),
            name_kana: "ヤマダ タロウ".into(),
            former_surname: None,
            alias: None,
            birth_date: "1990-04-01".into(),
            sex: "male".into(),
            address: "東京都千代田区千代田1-1".into(),
            municipality_code: "131016".into(),
            status: status.into(),
            updated_at: "t".into(),
            permanent_domicile: Some("東京都千代田区千代田1番".into()),
            domicile_head: Some("山田 一郎".into()),
        }
    }

    #[test]
    fn the_copy_never_has_the_domicile() {
        let Answer::Issued { copy } = decide(true, Some(&row("active")), "131016") else {
            panic!("not issued");
        };
        let text = serde_json::to_string(&copy).unwrap();
        assert!(
            !text.contains("千代田1番") && !text.contains("一郎"),
            "{text}"
        );
        assert!(!text.contains("domicile") && !text.contains("individual_number"));
        assert_eq!(copy.sex, "男");
    }

    #[test]
    fn refusals() {
        let tag = |a: Answer| match a {
            Answer::Refused { error, status, .. } => (error, status),
            Answer::Issued { .. } => ("issued".into(), 200),
        };
        assert_eq!(
            tag(decide(true, Some(&row("moved_out")), "131016")),
            ("resident_moved_out".into(), 409)
        );
        assert_eq!(
            tag(decide(true, Some(&row("deceased")), "131016")),
            ("resident_deceased".into(), 409)
        );
        assert_eq!(
            tag(decide(true, Some(&row("active")), "131024")),
            ("unknown_resident".into(), 404)
        );
        assert_eq!(tag(decide(true, None, "131016")).1, 404);
        assert_eq!(
            tag(decide(false, Some(&row("active")), "131016")),
            ("outside_window_service".into(), 409)
        );
    }

    #[test]
    fn hours_and_extensions() {
        let cal = Calendar::new(&CalendarConfig::default()).unwrap();
        let at = |s: &str| -> Timestamp { s.parse().unwrap() };
        let own = vec!["cs-131016".to_owned(), "131016".to_owned()];
        // Monday 2024-06-03: 10:00 and 18:30 Tokyo.
        let inside = at("2024-06-03T01:00:00Z");
        let evening = at("2024-06-03T09:30:00Z");
        assert!(service_open(Some(&cal), &[], &own, "271004", inside));
        assert!(!service_open(Some(&cal), &[], &own, "271004", evening));
        assert!(service_open(None, &[], &own, "271004", evening));
        let ext = parse_extensions(
            r#"[{"kind": "WideAreaIssuance", "nodes": ["cs-131016", "271004"],
                 "date": "2024-06-03", "endTime": "20:00"}]"#,
        )
        .unwrap();
        assert!(service_open(Some(&cal), &ext, &own, "271004", evening));
        // Not past its end, not for another pair, not of another kind.
        assert!(!service_open(
            Some(&cal),
            &ext,
            &own,
            "271004",
            at("2024-06-03T11:00:00Z")
        ));
        assert!(!service_open(Some(&cal), &ext, &own, "011002", evening));
        let mut other = ext.clone();
        other[0].kind = "LocalProcessing".into();
        assert!(!service_open(Some(&cal), &other, &own, "271004", evening));
        assert!(
            parse_extensions(
                r#"[{"kind": "x", "nodes": [], "date": "2024-06-03", "endTime": "25:99"}]"#
            )
            .is_err()
        );
        assert!(parse_extensions("{}").is_err());
    }

    #[test]
    fn request_fields() {
        let ok = json!({"resident_code": "12345678903", "home_municipality": "271004"});
        assert!(parse_request(&ok, "131016").is_ok());
        let e = parse_request(&ok, "271004").unwrap_err();
        assert_eq!(
            (e.tag(), e.field()),
            ("own_municipality", Some("home_municipality"))
        );
        let e = parse_request(&json!({"resident_code": "1"}), "131016").unwrap_err();
        assert_eq!((e.tag(), e.field()), ("format", Some("resident_code")));
    }
}
