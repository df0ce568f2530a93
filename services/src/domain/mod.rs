//! The pure core of the node: the update payload, its validation and the state rules.
//! No I/O and no clock: "today" and the node's own municipality are passed in.

pub mod authz;
pub mod clock;
pub mod identity;
pub mod trace;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;

/// 異動事由: why a record changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Reason {
    #[serde(rename = "転入", alias = "move_in")]
    MoveIn,
    #[serde(rename = "転出", alias = "move_out")]
    MoveOut,
    #[serde(rename = "転居", alias = "relocation")]
    Relocation,
    #[serde(rename = "出生", alias = "birth")]
    Birth,
    #[serde(rename = "死亡", alias = "death")]
    Death,
    #[serde(rename = "職権修正", alias = "correction")]
    Correction,
}

impl Reason {
    pub const ALL: [Reason; 6] = [
        Reason::MoveIn,
        Reason::MoveOut,
        Reason::Relocation,
        Reason::Birth,
        Reason::Death,
        Reason::Correction,
    ];

    /// The Japanese name used on the wire.
    pub fn japanese(self) -> &'static str {
        match self {
            Reason::MoveIn => "転入",
            Reason::MoveOut => "転出",
            Reason::Relocation => "転居",
            Reason::Birth => "出生",
            Reason::Death => "死亡",
            Reason::Correction => "職権修正",
        }
    }

    /// The code stored in the database (and accepted on the wire as an alias).
    pub fn code(self) -> &'static str {
        match self {
            Reason::MoveIn => "move_in",
            Reason::MoveOut => "move_out",
            Reason::Relocation => "relocation",
            Reason::Birth => "birth",
            Reason::Death => "death",
            Reason::Correction => "correction",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        Reason::ALL
            .into_iter()
            .find(|r| r.japanese() == s || r.code() == s)
    }
}

/// 性別.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sex {
    #[serde(rename = "男", alias = "male")]
    Male,
    #[serde(rename = "女", alias = "female")]
    Female,
}

impl Sex {
    pub fn japanese(self) -> &'static str {
        match self {
            Sex::Male => "男",
            Sex::Female => "女",
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Sex::Male => "male",
            Sex::Female => "female",
        }
    }

    pub fn parse(s: &str) -> Option<Sex> {
        [Sex::Male, Sex::Female]
            .into_iter()
            .find(|x| x.japanese() == s || x.code() == s)
    }
}

/// The state of a resident's current record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    MovedOut,
    Deceased,
}

impl Status {
    pub fn code(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::MovedOut => "moved_out",
            Status::Deceased => "deceased",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [Status::Active, Status::MovedOut, Status::Deceased]
            .into_iter()
            .find(|x| x.code() == s)
    }
}

/// A validated update (本人確認情報 plus the change information).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub resident_code: String,
    pub individual_number: Option<String>,
    pub name: String,
    pub name_kana: String,
    pub former_surname: Option<String>,
    pub alias: Option<String>,
    pub birth_date: Date,
    pub sex: Sex,
    pub address: String,
    pub municipality_code: String,
    pub reason: Reason,
    pub change_date: Date,
    /// 本籍 (optional). Kept at the CS only: never serialised into the relayed envelope, never
    /// part of a wide-area copy.
    #[serde(default, skip_serializing)]
    pub permanent_domicile: Option<String>,
    /// 筆頭者 of the family register (optional); kept like `permanent_domicile`.
    #[serde(default, skip_serializing)]
    pub domicile_head: Option<String>,
}

/// What validation needs to know about the node and the day.
#[derive(Debug, Clone)]
pub struct Context {
    /// This CS's own municipality code.
    pub own_municipality: String,
    /// Today's date in Japan.
    pub today: Date,
}

/// Longest accepted text field (characters).
pub const MAX_TEXT_CHARS: usize = 256;

pub(crate) fn invalid(
    field: &'static str,
    rule: &'static str,
    message: impl Into<String>,
) -> Error {
    Error::InvalidField {
        field,
        rule,
        message: message.into(),
    }
}

pub(crate) fn string_field<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<Option<&'a str>, Error> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => Err(invalid(field, "wrong_type", "must be a string")),
    }
}

pub(crate) fn required<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, Error> {
    string_field(obj, field)?.ok_or_else(|| invalid(field, "required", "is required"))
}

pub(crate) fn text(obj: &Map<String, Value>, field: &'static str) -> Result<String, Error> {
    let s = required(obj, field)?.trim();
    check_text(field, s)?;
    Ok(s.to_owned())
}

pub(crate) fn optional_text(
    obj: &Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, Error> {
    match string_field(obj, field)?.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => check_text(field, s).map(|()| Some(s.to_owned())),
    }
}

fn check_text(field: &'static str, s: &str) -> Result<(), Error> {
    if s.is_empty() {
        return Err(invalid(field, "required", "must not be empty"));
    }
    if s.chars().count() > MAX_TEXT_CHARS {
        return Err(invalid(
            field,
            "too_long",
            format!("must be at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(
            field,
            "control_character",
            "must not contain control characters",
        ));
    }
    Ok(())
}

pub(crate) fn code_error(field: &'static str, e: juki_codes::CodeError) -> Error {
    let rule = match e {
        juki_codes::CodeError::Format { .. } => "format",
        juki_codes::CodeError::CheckDigit { .. } => "check_digit",
        juki_codes::CodeError::Prefecture(_) => "prefecture",
    };
    invalid(field, rule, e.to_string())
}

pub(crate) fn date(
    obj: &Map<String, Value>,
    field: &'static str,
    today: Date,
) -> Result<Date, Error> {
    let d = real_date(obj, field)?;
    if d > today {
        return Err(invalid(
            field,
            "future_date",
            format!("{d} is after today ({today})"),
        ));
    }
    Ok(d)
}

/// A required `YYYY-MM-DD` field naming a real calendar date (past or future).
pub(crate) fn real_date(obj: &Map<String, Value>, field: &'static str) -> Result<Date, Error> {
    let s = required(obj, field)?;
    let valid_shape = s.len() == 10
        && s.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !valid_shape {
        return Err(invalid(
            field,
            "format",
            format!("must be a date YYYY-MM-DD, got {s:?}"),
        ));
    }
    let d: Date = s.parse().map_err(|_| {
        invalid(
            field,
            "invalid_date",
            format!("{s} is not a real calendar date"),
        )
    })?;
    Ok(d)
}

/// Validates one update object against the field rules (not the state rules).
pub fn parse_update(item: &Value, ctx: &Context) -> Result<Update, Error> {
    let obj = item
        .as_object()
        .ok_or_else(|| Error::InvalidBody("an update must be a JSON object".into()))?;

    let resident_code = required(obj, "resident_code")?.to_owned();
    juki_codes::validate_resident_record_code(&resident_code)
        .map_err(|e| code_error("resident_code", e))?;

    let individual_number = match string_field(obj, "individual_number")? {
        None | Some("") => None,
        Some(n) => {
            juki_codes::validate_individual_number(n)
                .map_err(|e| code_error("individual_number", e))?;
            Some(n.to_owned())
        }
    };

    let municipality_code = required(obj, "municipality_code")?.to_owned();
    juki_codes::validate_municipality_code(&municipality_code)
        .map_err(|e| code_error("municipality_code", e))?;
    if municipality_code != ctx.own_municipality {
        return Err(Error::ForeignMunicipality {
            got: municipality_code,
            own: ctx.own_municipality.clone(),
        });
    }

    let name = text(obj, "name")?;
    let name_kana = text(obj, "name_kana")?;
    let former_surname = optional_text(obj, "former_surname")?;
    let alias = optional_text(obj, "alias")?;
    let address = text(obj, "address")?;
    let permanent_domicile = optional_text(obj, "permanent_domicile")?;
    let domicile_head = optional_text(obj, "domicile_head")?;

    let sex_text = required(obj, "sex")?;
    let sex = Sex::parse(sex_text).ok_or_else(|| {
        invalid(
            "sex",
            "unknown_sex",
            format!("{sex_text:?} is not one of 男, 女 (male, female)"),
        )
    })?;

    let reason_text = required(obj, "reason")?;
    let reason = Reason::parse(reason_text).ok_or_else(|| {
        invalid(
            "reason",
            "unknown_reason",
            format!("{reason_text:?} is not one of 転入, 転出, 転居, 出生, 死亡, 職権修正"),
        )
    })?;

    let birth_date = date(obj, "birth_date", ctx.today)?;
    let change_date = date(obj, "change_date", ctx.today)?;
    if change_date < birth_date {
        return Err(invalid(
            "change_date",
            "before_birth",
            format!("{change_date} is before the birth date {birth_date}"),
        ));
    }
    if reason == Reason::Birth && change_date != birth_date {
        return Err(invalid(
            "change_date",
            "birth_date_mismatch",
            format!("a 出生 change date ({change_date}) must equal the birth date ({birth_date})"),
        ));
    }

    Ok(Update {
        resident_code,
        individual_number,
        name,
        name_kana,
        former_surname,
        alias,
        birth_date,
        sex,
        address,
        municipality_code,
        reason,
        change_date,
        permanent_domicile,
        domicile_head,
    })
}

fn conflict(rule: &'static str, message: String) -> Error {
    Error::StateConflict {
        rule,
        field: Some("reason"),
        message,
    }
}

/// The state a record is in after `reason`, whatever it was before. Upstream tiers use it: the
/// CS already enforced the state rules, and upstream applies what the CS accepted.
pub fn status_after(reason: Reason) -> Status {
    match reason {
        Reason::MoveOut => Status::MovedOut,
        Reason::Death => Status::Deceased,
        Reason::MoveIn | Reason::Relocation | Reason::Birth | Reason::Correction => Status::Active,
    }
}

/// Whether an upstream tier (prefecture, national) writes a relayed update over the record it
/// holds. It does, except for a 転出 from a municipality that no longer holds the resident: the
/// special transfer procedure registers the person at the destination B before the source A
/// reports its confirmed 転出, so B's active record must not be overwritten by A's late report
/// (the history keeps the report either way).
pub fn upstream_overwrites(current: Option<(&str, Status)>, update: &Update) -> bool {
    match current {
        Some((municipality, Status::Active)) => {
            update.reason != Reason::MoveOut || municipality == update.municipality_code
        }
        _ => true,
    }
}

/// The state rules: given the current status of the resident's record (None when there is no
/// record), returns the status after `reason`, or a conflict.
///
/// - nothing is accepted after 死亡;
/// - 転居, 転出, 死亡 and 職権修正 need an active record;
/// - 出生 needs no record at all; 転入 needs no active record (a moved-out resident may return).
pub fn transition(current: Option<Status>, reason: Reason) -> Result<Status, Error> {
    let name = reason.japanese();
    match (current, reason) {
        (Some(Status::Deceased), _) => Err(Error::StateConflict {
            rule: "resident_deceased",
            field: Some("resident_code"),
            message: format!("the resident is deceased; no {name} is accepted after 死亡"),
        }),
        (None, Reason::Birth) => Ok(Status::Active),
        (Some(_), Reason::Birth) => Err(conflict(
            "already_registered",
            "出生 for a resident who already has a record".into(),
        )),
        (None | Some(Status::MovedOut), Reason::MoveIn) => Ok(Status::Active),
        (Some(Status::Active), Reason::MoveIn) => Err(conflict(
            "already_active",
            "転入 for a resident who already has an active record".into(),
        )),
        (Some(Status::Active), Reason::MoveOut) => Ok(Status::MovedOut),
        (Some(Status::Active), Reason::Death) => Ok(Status::Deceased),
        (Some(Status::Active), Reason::Relocation | Reason::Correction) => Ok(Status::Active),
        (None, _) => Err(conflict(
            "unknown_resident",
            format!("{name} needs an active record; there is none"),
        )),
        (Some(Status::MovedOut), _) => Err(conflict(
            "not_active",
            format!("{name} needs an active record; the resident moved out"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const OWN: &str = "131016";

    fn ctx() -> Context {
        Context {
            own_municipality: OWN.into(),
            today: jiff::civil::date(2024, 6, 3),
        }
    }

    fn valid() -> Value {
        json!({
            "resident_code": "12345678903",
            "individual_number": "123456789018",
            "name": "山田 太郎",
            "name_kana": "ヤマダ タロウ",
            "birth_date": "1990-04-01",
            "sex": "男",
            "address": "東京都千代田区千代田1-1",
            "municipality_code": OWN,
            "reason": "転入",
            "change_date": "2024-06-01",
        })
    }

    fn with(field: &str, value: Value) -> Value {
        let mut v = valid();
        v[field] = value;
        v
    }

    fn without(field: &str) -> Value {
        let mut v = valid();
        v.as_object_mut().unwrap().remove(field);
        v
    }

    fn err(v: Value) -> (&'static str, Option<&'static str>) {
        let e = parse_update(&v, &ctx()).unwrap_err();
        (e.tag(), e.field())
    }

    #[test]
    fn sample_resident_code_is_valid() {
        juki_codes::validate_resident_record_code("12345678903").unwrap();
    }

    #[test]
    fn accepts_a_valid_update() {
        let u = parse_update(&valid(), &ctx()).unwrap();
        assert_eq!(u.reason, Reason::MoveIn);
        assert_eq!(u.sex, Sex::Male);
        assert_eq!(u.birth_date, jiff::civil::date(1990, 4, 1));
        assert_eq!(u.former_surname, None);
    }

    #[test]
    fn accepts_english_aliases() {
        let u = parse_update(&with("reason", json!("move_in")), &ctx()).unwrap();
        assert_eq!(u.reason, Reason::MoveIn);
        let u = parse_update(&with("sex", json!("female")), &ctx()).unwrap();
        assert_eq!(u.sex, Sex::Female);
    }

    #[test]
    fn resident_code_check_digit() {
        assert_eq!(
            err(with("resident_code", json!("12345678904"))),
            ("check_digit", Some("resident_code"))
        );
        assert_eq!(
            err(with("resident_code", json!("1234"))),
            ("format", Some("resident_code"))
        );
        assert_eq!(
            err(without("resident_code")),
            ("required", Some("resident_code"))
        );
        assert_eq!(
            err(with("resident_code", json!(12345678903_u64))),
            ("wrong_type", Some("resident_code"))
        );
    }

    #[test]
    fn individual_number_is_optional_but_checked() {
        assert!(
            parse_update(&without("individual_number"), &ctx())
                .unwrap()
                .individual_number
                .is_none()
        );
        assert!(parse_update(&with("individual_number", Value::Null), &ctx()).is_ok());
        assert_eq!(
            err(with("individual_number", json!("123456789019"))),
            ("check_digit", Some("individual_number"))
        );
    }

    #[test]
    fn municipality_must_be_valid_and_own() {
        assert_eq!(
            err(with("municipality_code", json!("131017"))),
            ("check_digit", Some("municipality_code"))
        );
        assert_eq!(
            err(with("municipality_code", json!("011002"))),
            ("foreign_municipality", Some("municipality_code"))
        );
        assert_eq!(
            err(with("municipality_code", json!("991003"))),
            ("prefecture", Some("municipality_code"))
        );
    }

    #[test]
    fn dates_must_be_real_and_not_in_the_future() {
        assert_eq!(
            err(with("birth_date", json!("2023-02-29"))),
            ("invalid_date", Some("birth_date"))
        );
        assert_eq!(
            err(with("birth_date", json!("1990/04/01"))),
            ("format", Some("birth_date"))
        );
        assert_eq!(
            err(with("change_date", json!("2024-06-04"))),
            ("future_date", Some("change_date"))
        );
        assert!(parse_update(&with("change_date", json!("2024-06-03")), &ctx()).is_ok());
        assert_eq!(
            err(with("change_date", json!("1980-01-01"))),
            ("before_birth", Some("change_date"))
        );
    }

    #[test]
    fn birth_change_date_is_the_birth_date() {
        let mut v = with("reason", json!("出生"));
        assert_eq!(err(v.clone()), ("birth_date_mismatch", Some("change_date")));
        v["birth_date"] = json!("2024-06-01");
        assert!(parse_update(&v, &ctx()).is_ok());
    }

    #[test]
    fn reason_and_sex_are_known() {
        assert_eq!(
            err(with("reason", json!("引越し"))),
            ("unknown_reason", Some("reason"))
        );
        assert_eq!(err(with("sex", json!("x"))), ("unknown_sex", Some("sex")));
    }

    #[test]
    fn text_fields_are_required_and_bounded() {
        assert_eq!(err(with("name", json!("  "))), ("required", Some("name")));
        assert_eq!(err(without("address")), ("required", Some("address")));
        assert_eq!(
            err(with("name_kana", json!("ア".repeat(300)))),
            ("too_long", Some("name_kana"))
        );
        assert_eq!(
            err(with("alias", json!("a\u{7}"))),
            ("control_character", Some("alias"))
        );
        assert_eq!(
            parse_update(&with("alias", json!("")), &ctx())
                .unwrap()
                .alias,
            None
        );
    }

    #[test]
    fn non_object_is_a_bad_body() {
        assert_eq!(
            parse_update(&json!(3), &ctx()).unwrap_err().tag(),
            "invalid_body"
        );
    }

    #[test]
    fn state_rules() {
        use Reason::*;
        use Status::*;
        assert_eq!(transition(None, Birth).unwrap(), Active);
        assert_eq!(transition(None, MoveIn).unwrap(), Active);
        assert_eq!(transition(Some(MovedOut), MoveIn).unwrap(), Active);
        assert_eq!(transition(Some(Active), Relocation).unwrap(), Active);
        assert_eq!(transition(Some(Active), Correction).unwrap(), Active);
        assert_eq!(transition(Some(Active), MoveOut).unwrap(), MovedOut);
        assert_eq!(transition(Some(Active), Death).unwrap(), Deceased);
        assert_eq!(
            transition(Some(Active), MoveIn).unwrap_err().tag(),
            "already_active"
        );
        assert_eq!(
            transition(Some(MovedOut), Birth).unwrap_err().tag(),
            "already_registered"
        );
        for r in [Relocation, MoveOut, Death, Correction] {
            assert_eq!(transition(None, r).unwrap_err().tag(), "unknown_resident");
            assert_eq!(
                transition(Some(MovedOut), r).unwrap_err().tag(),
                "not_active"
            );
        }
        for r in Reason::ALL {
            assert_eq!(
                transition(Some(Deceased), r).unwrap_err().tag(),
                "resident_deceased"
            );
        }
    }

    #[test]
    fn a_late_move_out_does_not_overwrite_the_destination_record() {
        let mut u = parse_update(&with("reason", json!("転出")), &ctx()).unwrap();
        assert!(!upstream_overwrites(Some(("271004", Status::Active)), &u));
        assert!(upstream_overwrites(Some((OWN, Status::Active)), &u));
        assert!(upstream_overwrites(Some(("271004", Status::MovedOut)), &u));
        assert!(upstream_overwrites(None, &u));
        u.reason = Reason::Relocation;
        assert!(upstream_overwrites(Some(("271004", Status::Active)), &u));
    }

    #[test]
    fn domicile_is_parsed_but_never_serialised() {
        let mut v = valid();
        v["permanent_domicile"] = json!("東京都千代田区千代田1番");
        v["domicile_head"] = json!("山田 一郎");
        let u = parse_update(&v, &ctx()).unwrap();
        assert_eq!(u.domicile_head.as_deref(), Some("山田 一郎"));
        let text = serde_json::to_string(&u).unwrap();
        assert!(!text.contains("domicile"), "{text}");
    }

    #[test]
    fn wire_names_round_trip() {
        for r in Reason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), json!(r.japanese()));
            assert_eq!(
                serde_json::from_value::<Reason>(json!(r.code())).unwrap(),
                r
            );
            assert_eq!(Reason::parse(r.japanese()), Some(r));
        }
        for s in [Status::Active, Status::MovedOut, Status::Deceased] {
            assert_eq!(Status::parse(s.code()), Some(s));
        }
    }
}
