//! Who sees what, as one pure function of (caller, action). The identity is the Common Name of
//! the caller's client certificate (the project CA, as in juki-node), or in development mode a
//! name the request states:
//!
//! | identity | who |
//! | --- | --- |
//! | `callcenter-<name>` | call-center staff: see and act on everything |
//! | `sysmgmt-<name>` | the system management department: the same |
//! | `muni-<6-digit code>` | a municipality's administrator: files and reads its own tickets |
//! | `pref-<2 digits>` | a prefecture's administrator: files its own, reads its own and its municipalities' |
//! | `alertmanager` | monitoring: posts alerts, nothing else |
//!
//! Administrators' searches and lists are narrowed to what they may read; asking for more is a 403.

use crate::error::Error;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    Staff(String),
    SystemManagement(String),
    Municipality(String),
    Prefecture(u8),
    Alertmanager,
}

fn person(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Caller {
    /// Parses an identity; None for anything else.
    pub fn parse(name: &str) -> Option<Caller> {
        if name == "alertmanager" {
            return Some(Caller::Alertmanager);
        }
        if let Some(n) = name.strip_prefix("callcenter-") {
            return person(n).then(|| Caller::Staff(n.to_owned()));
        }
        if let Some(n) = name.strip_prefix("sysmgmt-") {
            return person(n).then(|| Caller::SystemManagement(n.to_owned()));
        }
        if let Some(p) = name.strip_prefix("pref-") {
            return juki_codes::validate_prefecture_code(p)
                .ok()
                .map(Caller::Prefecture);
        }
        if let Some(m) = name.strip_prefix("muni-") {
            return juki_codes::validate_municipality_code(m)
                .ok()
                .map(|_| Caller::Municipality(m.to_owned()));
        }
        None
    }

    /// The identity as written in certificates, logs and the history.
    pub fn name(&self) -> String {
        match self {
            Caller::Staff(n) => format!("callcenter-{n}"),
            Caller::SystemManagement(n) => format!("sysmgmt-{n}"),
            Caller::Municipality(m) => format!("muni-{m}"),
            Caller::Prefecture(p) => format!("pref-{p:02}"),
            Caller::Alertmanager => "alertmanager".into(),
        }
    }

    /// Staff and the system management department.
    pub fn is_staff(&self) -> bool {
        matches!(self, Caller::Staff(_) | Caller::SystemManagement(_))
    }

    /// The tickets the caller may read.
    pub fn scope(&self) -> Scope {
        match self {
            Caller::Staff(_) | Caller::SystemManagement(_) => Scope::All,
            Caller::Municipality(m) => Scope::Org(m.clone()),
            Caller::Prefecture(p) => Scope::Prefecture(*p),
            Caller::Alertmanager => Scope::Nothing,
        }
    }
}

/// The 地方公共団体コード of a prefecture itself (PP0000 and its check digit).
pub fn prefecture_org(p: u8) -> String {
    let d = [p / 10, p % 10, 0, 0, 0];
    format!("{p:02}000{}", juki_codes::municipality_check_digit(&d))
}

/// A set of tickets by organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    /// One organisation's tickets.
    Org(String),
    /// The prefecture's own and its municipalities' tickets.
    Prefecture(u8),
    Nothing,
}

impl Scope {
    pub fn contains(&self, org: Option<&str>) -> bool {
        match (self, org) {
            (Scope::All, _) => true,
            (Scope::Org(own), Some(org)) => own == org,
            (Scope::Prefecture(p), Some(org)) => org.starts_with(&format!("{p:02}")),
            _ => false,
        }
    }

    /// This scope narrowed to `org` (a 403 when `org` lies outside it).
    pub fn narrow(&self, caller: &Caller, org: Option<&str>) -> Result<Scope, Error> {
        match org {
            None => Ok(self.clone()),
            Some(org) if self.contains(Some(org)) => Ok(Scope::Org(org.to_owned())),
            Some(org) => Err(forbidden(
                "forbidden_org",
                format!("{} may not read the tickets of {org}", caller.name()),
            )),
        }
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// File a ticket for this organisation.
    File(Option<&'a str>),
    /// Read one ticket of this organisation (its page, history, node context).
    Read(Option<&'a str>),
    /// List or search (the result is narrowed by [`Caller::scope`]).
    Browse,
    /// Answer or move a ticket.
    Act,
    /// Post an Alertmanager webhook.
    ReceiveAlerts,
}

fn forbidden(rule: &'static str, message: String) -> Error {
    Error::Forbidden { rule, message }
}

/// Whether `caller` may do `action`; `Err` is the 403 to answer.
pub fn decide(caller: &Caller, action: Action<'_>) -> Result<(), Error> {
    let who = caller.name();
    match action {
        Action::File(org) => {
            let own = match caller {
                c if c.is_staff() => true,
                Caller::Municipality(m) => org == Some(m.as_str()),
                Caller::Prefecture(p) => org == Some(prefecture_org(*p).as_str()),
                _ => false,
            };
            if own {
                Ok(())
            } else {
                Err(forbidden(
                    "forbidden_org",
                    format!(
                        "{who} may not file tickets for {}",
                        org.unwrap_or("no organisation")
                    ),
                ))
            }
        }
        Action::Read(org) => {
            if caller.scope().contains(org) {
                Ok(())
            } else {
                Err(forbidden(
                    "forbidden_org",
                    format!(
                        "{who} may not read tickets of {}",
                        org.unwrap_or("no organisation")
                    ),
                ))
            }
        }
        Action::Browse => match caller {
            Caller::Alertmanager => Err(forbidden(
                "forbidden",
                format!("{who} may only post alerts"),
            )),
            _ => Ok(()),
        },
        Action::Act => {
            if caller.is_staff() {
                Ok(())
            } else {
                Err(forbidden(
                    "staff_only",
                    format!("{who} may not answer or change tickets (call-center staff only)"),
                ))
            }
        }
        Action::ReceiveAlerts => {
            if caller.is_staff() || *caller == Caller::Alertmanager {
                Ok(())
            } else {
                Err(forbidden("forbidden", format!("{who} may not post alerts")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse_and_print_back() {
        for name in [
            "callcenter-sato",
            "sysmgmt-ops.1",
            "muni-131016",
            "pref-13",
            "alertmanager",
        ] {
            assert_eq!(Caller::parse(name).unwrap().name(), name);
        }
        for bad in [
            "",
            "callcenter-",
            "muni-131017",
            "pref-48",
            "pref-1",
            "cs-131016",
            "national",
            "callcenter-a b",
        ] {
            assert_eq!(Caller::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn prefecture_codes_carry_their_check_digit() {
        assert_eq!(prefecture_org(13), "130001");
        assert_eq!(prefecture_org(1), "010006");
        assert!(juki_codes::validate_municipality_code(&prefecture_org(47)).is_ok());
    }
}
