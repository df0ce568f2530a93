//! Tickets and their state machines. An inquiry (問合せ) goes received → answered → closed; a
//! fault (障害連絡) goes received → isolating → recovery arranged (vendor, expected time) →
//! recovered → closed. Every other move is refused with a 409 naming the current state, and a
//! closed ticket accepts nothing. The validation of a new ticket is the only gate to the store:
//! a request that fails it stores nothing.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The longest subject, in characters.
pub const MAX_SUBJECT: usize = 200;
/// The longest body or answer, in characters.
pub const MAX_TEXT: usize = 20_000;
/// The longest reporter, category or vendor, in characters.
pub const MAX_SHORT: usize = 100;
/// The most affected nodes on one ticket.
pub const MAX_NODES: usize = 50;

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal / $ja:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }

            /// The Japanese label shown in the web UI.
            pub fn label(self) -> &'static str {
                match self { $($name::$variant => $ja),* }
            }

            pub fn parse(text: &str) -> Option<$name> {
                match text { $($text => Some($name::$variant),)* _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(
    /// What a ticket is.
    Kind { Inquiry = "inquiry" / "問合せ", Fault = "fault" / "障害連絡" }
);
string_enum!(
    /// How the ticket reached the call center.
    Channel { Phone = "phone" / "電話", Fax = "fax" / "FAX", Terminal = "terminal" / "コールセンター端末", Alert = "alert" / "監視アラート" }
);
string_enum!(
    /// Where a ticket stands.
    State {
        Received = "received" / "受付",
        Answered = "answered" / "回答済",
        Isolating = "isolating" / "切り分け中",
        RecoveryArranged = "recovery_arranged" / "復旧手配済",
        Recovered = "recovered" / "復旧",
        Closed = "closed" / "完了",
    }
);

impl Kind {
    /// The states a ticket of this kind passes through, in order.
    pub fn states(self) -> &'static [State] {
        match self {
            Kind::Inquiry => &[State::Received, State::Answered, State::Closed],
            Kind::Fault => &[
                State::Received,
                State::Isolating,
                State::RecoveryArranged,
                State::Recovered,
                State::Closed,
            ],
        }
    }
}

/// A change asked of a ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// An answer (an inquiry becomes answered; a fault keeps its state).
    Answer(String),
    Isolate,
    ArrangeRecovery {
        vendor: String,
        expected_at: Timestamp,
    },
    Recover,
    Close,
}

impl Change {
    pub fn action(&self) -> &'static str {
        match self {
            Change::Answer(_) => "answer",
            Change::Isolate => "isolate",
            Change::ArrangeRecovery { .. } => "arrange_recovery",
            Change::Recover => "recover",
            Change::Close => "close",
        }
    }
}

fn conflict(kind: Kind, state: State, change: &Change) -> Error {
    let rule = if state == State::Closed {
        "ticket_closed"
    } else {
        "illegal_transition"
    };
    Error::StateConflict {
        rule,
        field: Some("state"),
        message: format!(
            "a {kind} ticket in state {state} cannot {} (its states: {})",
            change.action(),
            kind.states()
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(" → ")
        ),
    }
}

/// The state after `change`, or the 409 that refuses it.
pub fn next_state(kind: Kind, state: State, change: &Change) -> Result<State, Error> {
    use State::*;
    let next = match (kind, state, change) {
        (_, Closed, _) => None,
        (Kind::Inquiry, Received | Answered, Change::Answer(_)) => Some(Answered),
        (Kind::Inquiry, Answered, Change::Close) => Some(Closed),
        (
            Kind::Fault,
            s @ (Received | Isolating | RecoveryArranged | Recovered),
            Change::Answer(_),
        ) => Some(s),
        (Kind::Fault, Received, Change::Isolate) => Some(Isolating),
        (Kind::Fault, Isolating | RecoveryArranged, Change::ArrangeRecovery { .. }) => {
            Some(RecoveryArranged)
        }
        (Kind::Fault, RecoveryArranged, Change::Recover) => Some(Recovered),
        (Kind::Fault, Recovered, Change::Close) => Some(Closed),
        _ => None,
    };
    next.ok_or_else(|| conflict(kind, state, change))
}

/// The body of `POST /v1/tickets`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketInput {
    pub kind: String,
    /// 地方公共団体コード of the reporting municipality or prefecture (6 digits, check digit).
    pub org: String,
    pub reporter: String,
    pub channel: String,
    pub subject: String,
    pub body: String,
    #[serde(default)]
    pub nodes: Vec<String>,
    #[serde(default)]
    pub category: Option<String>,
}

/// A validated new ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTicket {
    pub kind: Kind,
    /// None only for faults from monitoring that name no municipality or prefecture.
    pub org: Option<String>,
    pub reporter: String,
    pub channel: Channel,
    pub subject: String,
    pub body: String,
    pub nodes: Vec<String>,
    pub category: Option<String>,
}

/// Checks a free text: not blank, at most `max` characters, no control characters (newlines and
/// tabs are allowed where `multiline`). Returns it trimmed.
pub fn text(
    field: &'static str,
    value: &str,
    max: usize,
    multiline: bool,
) -> Result<String, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::field(field, "required", "must not be empty"));
    }
    let len = value.chars().count();
    if len > max {
        return Err(Error::field(
            field,
            "too_long",
            format!("is {len} characters, at most {max} allowed"),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|&c| c.is_control() && !(multiline && matches!(c, '\n' | '\r' | '\t')))
    {
        return Err(Error::field(
            field,
            "control_character",
            format!("contains the control character U+{:04X}", u32::from(c)),
        ));
    }
    Ok(value.to_owned())
}

/// Checks a 地方公共団体コード (municipality or prefecture, 6 digits with its check digit).
pub fn org_code(field: &'static str, code: &str) -> Result<String, Error> {
    juki_codes::validate_municipality_code(code)
        .map_err(|e| Error::field(field, "invalid_org_code", e.to_string()))?;
    Ok(code.to_owned())
}

/// Checks a node name (a JukiNode's name: lowercase letters, digits and '-', at most 63).
pub fn node_name(name: &str) -> Result<String, Error> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(name.to_owned())
    } else {
        Err(Error::field(
            "nodes",
            "invalid_node",
            format!(
                "{:?} is not a node name (lowercase letters, digits and '-', at most 63)",
                name.chars().take(80).collect::<String>()
            ),
        ))
    }
}

impl TicketInput {
    /// Validates the input; `alert` is refused as a channel here (only the webhook uses it).
    pub fn validate(self) -> Result<NewTicket, Error> {
        let kind = Kind::parse(&self.kind).ok_or_else(|| {
            Error::field("kind", "invalid_kind", "must be \"inquiry\" or \"fault\"")
        })?;
        let channel = Channel::parse(&self.channel)
            .filter(|c| *c != Channel::Alert)
            .ok_or_else(|| {
                Error::field(
                    "channel",
                    "invalid_channel",
                    "must be \"phone\", \"fax\" or \"terminal\" (\"alert\" is the monitoring webhook's)",
                )
            })?;
        if self.nodes.len() > MAX_NODES {
            return Err(Error::field(
                "nodes",
                "too_many",
                format!("{} nodes, at most {MAX_NODES}", self.nodes.len()),
            ));
        }
        let mut nodes = self
            .nodes
            .iter()
            .map(|n| node_name(n))
            .collect::<Result<Vec<_>, _>>()?;
        nodes.sort();
        nodes.dedup();
        Ok(NewTicket {
            kind,
            org: Some(org_code("org", &self.org)?),
            reporter: text("reporter", &self.reporter, MAX_SHORT, false)?,
            channel,
            subject: text("subject", &self.subject, MAX_SUBJECT, false)?,
            body: text("body", &self.body, MAX_TEXT, true)?,
            nodes,
            category: self
                .category
                .filter(|c| !c.trim().is_empty())
                .map(|c| text("category", &c, MAX_SHORT, false))
                .transpose()?,
        })
    }
}

/// The body of `POST /v1/tickets/{id}/state`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateInput {
    pub state: String,
    #[serde(default)]
    pub vendor: Option<String>,
    /// RFC 3339, the expected recovery time (with `recovery_arranged`).
    #[serde(default)]
    pub expected_at: Option<String>,
}

impl StateInput {
    pub fn change(self) -> Result<Change, Error> {
        match State::parse(&self.state) {
            Some(State::Isolating) => Ok(Change::Isolate),
            Some(State::RecoveryArranged) => {
                let vendor = text(
                    "vendor",
                    self.vendor.as_deref().unwrap_or(""),
                    MAX_SHORT,
                    false,
                )?;
                let expected_at = self
                    .expected_at
                    .as_deref()
                    .ok_or_else(|| Error::field("expected_at", "required", "must be given"))?
                    .parse::<Timestamp>()
                    .map_err(|e| {
                        Error::field("expected_at", "invalid_time", format!("not RFC 3339: {e}"))
                    })?;
                Ok(Change::ArrangeRecovery {
                    vendor,
                    expected_at,
                })
            }
            Some(State::Recovered) => Ok(Change::Recover),
            Some(State::Closed) => Ok(Change::Close),
            Some(State::Answered) => Err(Error::field(
                "state",
                "use_answer",
                "answer through POST /v1/tickets/{id}/answer",
            )),
            Some(State::Received) | None => Err(Error::field(
                "state",
                "invalid_state",
                "must be one of isolating, recovery_arranged, recovered, closed",
            )),
        }
    }
}

/// A stored ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ticket {
    pub id: i64,
    pub kind: Kind,
    pub state: State,
    pub org: Option<String>,
    pub reporter: String,
    pub channel: Channel,
    pub subject: String,
    pub body: String,
    pub category: Option<String>,
    pub nodes: Vec<String>,
    pub answer: Option<String>,
    /// A fault's recovery arrangement.
    pub recovery: Option<Recovery>,
    pub filed_by: String,
    pub created_at: Timestamp,
    pub first_answer_at: Option<Timestamp>,
    /// The last change (for a closed ticket, when it was closed: closed is final).
    pub updated_at: Timestamp,
}

/// Who recovers a fault, and when they expect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    pub vendor: String,
    pub expected_at: Timestamp,
}

/// One entry of a ticket's append-only history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub from_state: Option<State>,
    pub to_state: Option<State>,
    pub detail: serde_json::Value,
}

impl Ticket {
    /// The ticket after `change` at `now` by `actor` (the state machine decides; see [`next_state`]).
    pub fn changed(&self, change: &Change, now: Timestamp) -> Result<Ticket, Error> {
        let state = next_state(self.kind, self.state, change)?;
        let mut t = self.clone();
        t.state = state;
        t.updated_at = now;
        match change {
            Change::Answer(text) => {
                t.answer = Some(text.clone());
                t.first_answer_at.get_or_insert(now);
            }
            Change::ArrangeRecovery {
                vendor,
                expected_at,
            } => {
                t.recovery = Some(Recovery {
                    vendor: vendor.clone(),
                    expected_at: *expected_at,
                });
            }
            Change::Isolate | Change::Recover | Change::Close => {}
        }
        Ok(t)
    }
}

/// The history detail of a change.
pub fn change_detail(change: &Change) -> serde_json::Value {
    match change {
        Change::Answer(text) => serde_json::json!({ "answer": text }),
        Change::ArrangeRecovery {
            vendor,
            expected_at,
        } => serde_json::json!({ "vendor": vendor, "expected_at": expected_at }),
        _ => serde_json::json!({}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_change() -> Vec<Change> {
        vec![
            Change::Answer("a".into()),
            Change::Isolate,
            Change::ArrangeRecovery {
                vendor: "v".into(),
                expected_at: Timestamp::UNIX_EPOCH,
            },
            Change::Recover,
            Change::Close,
        ]
    }

    /// The whole table: every kind × state × change, legal moves listed, the rest refused.
    #[test]
    fn state_machines_refuse_every_illegal_transition() {
        use State::*;
        let legal: &[(Kind, State, &str, State)] = &[
            (Kind::Inquiry, Received, "answer", Answered),
            (Kind::Inquiry, Answered, "answer", Answered),
            (Kind::Inquiry, Answered, "close", Closed),
            (Kind::Fault, Received, "answer", Received),
            (Kind::Fault, Isolating, "answer", Isolating),
            (Kind::Fault, RecoveryArranged, "answer", RecoveryArranged),
            (Kind::Fault, Recovered, "answer", Recovered),
            (Kind::Fault, Received, "isolate", Isolating),
            (Kind::Fault, Isolating, "arrange_recovery", RecoveryArranged),
            (
                Kind::Fault,
                RecoveryArranged,
                "arrange_recovery",
                RecoveryArranged,
            ),
            (Kind::Fault, RecoveryArranged, "recover", Recovered),
            (Kind::Fault, Recovered, "close", Closed),
        ];
        let mut seen = 0;
        for &kind in Kind::ALL {
            for &state in State::ALL {
                for change in every_change() {
                    let expected = legal
                        .iter()
                        .find(|(k, s, a, _)| *k == kind && *s == state && *a == change.action())
                        .map(|l| l.3);
                    match (next_state(kind, state, &change), expected) {
                        (Ok(next), Some(want)) => {
                            assert_eq!(next, want);
                            seen += 1;
                        }
                        (Err(e), None) => {
                            let want = if state == Closed {
                                "ticket_closed"
                            } else {
                                "illegal_transition"
                            };
                            assert_eq!(e.tag(), want, "{kind} {state} {}", change.action());
                            assert!(e.to_string().contains(state.as_str()));
                        }
                        (got, want) => panic!(
                            "{kind} {state} {}: got {got:?}, want {want:?}",
                            change.action()
                        ),
                    }
                }
            }
        }
        assert_eq!(seen, legal.len());
    }

    fn input() -> TicketInput {
        TicketInput {
            kind: "inquiry".into(),
            org: "131016".into(),
            reporter: "千代田区 住民課 佐藤".into(),
            channel: "phone".into(),
            subject: "CSが起動しない".into(),
            body: "朝からCSに接続できません。".into(),
            nodes: vec!["cs-131016".into(), "cs-131016".into()],
            category: None,
        }
    }

    #[test]
    fn new_tickets_are_validated_field_by_field() {
        let ok = input().validate().unwrap();
        assert_eq!(ok.nodes, ["cs-131016"]);
        type Case = (fn(&mut TicketInput), &'static str, &'static str);
        let cases: Vec<Case> = vec![
            (|i| i.org = "131017".into(), "org", "invalid_org_code"),
            (|i| i.org = "13101".into(), "org", "invalid_org_code"),
            (|i| i.kind = "question".into(), "kind", "invalid_kind"),
            (|i| i.channel = "alert".into(), "channel", "invalid_channel"),
            (|i| i.subject = "  ".into(), "subject", "required"),
            (|i| i.subject = "あ".repeat(201), "subject", "too_long"),
            (|i| i.body = "a\u{0}b".into(), "body", "control_character"),
            (
                |i| i.subject = "a\nb".into(),
                "subject",
                "control_character",
            ),
            (|i| i.nodes = vec!["CS_1".into()], "nodes", "invalid_node"),
        ];
        for (edit, field, rule) in cases {
            let mut i = input();
            edit(&mut i);
            let e = i.validate().unwrap_err();
            assert_eq!((e.field_name(), e.tag()), (Some(field), rule), "{e}");
        }
    }
}
