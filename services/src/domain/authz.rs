//! Who may do what: the callers' identities and the tree rules, as one pure function of (this
//! node, the caller, the route). Checks that need the request body (a relay's sender and
//! municipalities, a mailbox recipient, the agency allow-list) are made by the handlers with
//! the helpers at the end of this file.
//!
//! An identity is the Common Name of the caller's client certificate (issued by the project CA):
//! `national`, `pref-13`, `cs-131016` (the node servers), `muni-131016` (the municipality's
//! existing resident system and counters, which talk to their own CS), `agency-<name>` and
//! `operator` (the jukinet operator, the only caller of the admin endpoints).

use crate::domain::identity::{NodeIdentity, Role};
use crate::error::Error;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    National,
    Prefecture(u8),
    Cs(String),
    Municipality(String),
    Agency(String),
    Operator,
}

impl Caller {
    /// Parses a certificate Common Name; None for anything else.
    pub fn parse(name: &str) -> Option<Caller> {
        if name == "national" {
            return Some(Caller::National);
        }
        if name == "operator" {
            return Some(Caller::Operator);
        }
        if let Some(p) = name.strip_prefix("pref-") {
            return juki_codes::validate_prefecture_code(p)
                .ok()
                .filter(|_| p.len() == 2)
                .map(Caller::Prefecture);
        }
        let municipality = |code: &str| {
            juki_codes::validate_municipality_code(code)
                .ok()
                .map(|_| code.to_owned())
        };
        if let Some(m) = name.strip_prefix("cs-") {
            return municipality(m).map(Caller::Cs);
        }
        if let Some(m) = name.strip_prefix("muni-") {
            return municipality(m).map(Caller::Municipality);
        }
        if let Some(a) = name.strip_prefix("agency-") {
            let ok = !a.is_empty()
                && a.len() <= 120
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            return ok.then(|| Caller::Agency(a.to_owned()));
        }
        None
    }

    /// The identity as written in certificates, logs and the provision log.
    pub fn name(&self) -> String {
        match self {
            Caller::National => "national".into(),
            Caller::Prefecture(p) => format!("pref-{p:02}"),
            Caller::Cs(m) => format!("cs-{m}"),
            Caller::Municipality(m) => format!("muni-{m}"),
            Caller::Agency(a) => format!("agency-{a}"),
            Caller::Operator => "operator".into(),
        }
    }
}

/// Routes anyone may call, authenticated or not (probes, scraping, the API description).
pub const PUBLIC_ROUTES: &[&str] = &["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// Whether `municipality` lies in prefecture `p`.
fn in_prefecture(municipality: &str, p: Option<u8>) -> bool {
    p.is_some_and(|p| municipality.starts_with(&format!("{p:02}")))
}

/// Whether `caller` is one of this node's children in the tree.
pub fn is_child(node: &NodeIdentity, caller: &Caller) -> bool {
    match (node.role, caller) {
        (Role::Prefecture, Caller::Cs(m)) => in_prefecture(m, node.prefecture),
        (Role::National, Caller::Prefecture(_)) => true,
        _ => false,
    }
}

fn forbidden(caller: &Caller, what: &str) -> Error {
    Error::Forbidden {
        rule: "forbidden",
        message: format!("{} may not {what}", caller.name()),
    }
}

/// Decides whether `caller` may call `route` (the actix route pattern, `"unmatched"` for none)
/// on `node`. `Err` is the 401 or 403 to answer.
pub fn decide(node: &NodeIdentity, caller: Option<&Caller>, route: &str) -> Result<(), Error> {
    if PUBLIC_ROUTES.contains(&route) {
        return Ok(());
    }
    let Some(caller) = caller else {
        return Err(Error::Unauthenticated(format!(
            "{route} needs a client certificate of the project CA"
        )));
    };
    let own_municipality = |c: &Caller| match (c, &node.municipality) {
        (Caller::Municipality(m), Some(own)) => node.role == Role::Cs && m == own,
        _ => false,
    };
    let allowed = match route {
        // Unknown routes answer 404 to any authenticated caller.
        "unmatched" => return Ok(()),
        "/v1/updates"
        | "/v1/residents/{code}"
        | "/v1/residents/{code}/history"
        | "/v1/transfers"
        | "/v1/transfers/{id}"
        | "/v1/transfers/{id}/cancel"
        | "/v1/move-ins"
        | "/v1/issuances"
        | "/v1/issuances/{id}" => own_municipality(caller),
        "/v1/relay" | "/v1/mailbox" => is_child(node, caller),
        // The tier below fetches delivered content; the operator may look too.
        "/v1/deliveries/content/{sha256}" => is_child(node, caller) || *caller == Caller::Operator,
        "/v1/agency/queries" => matches!(caller, Caller::Agency(_)) && node.role != Role::Cs,
        "/v1/disclosures" => match (node.role, caller) {
            (Role::National, Caller::Municipality(_)) => true,
            (Role::Prefecture, Caller::Municipality(m)) => in_prefecture(m, node.prefecture),
            _ => false,
        },
        r if r.starts_with("/admin/") => *caller == Caller::Operator,
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(forbidden(
            caller,
            &format!("call {route} on {}", node.sender_id()),
        ))
    }
}

/// A relay batch must come from its sender, and carry only what that sender may send: at a
/// prefecture, a CS's own envelopes (its updates name its own municipality); at the national
/// server, envelopes of the prefecture's own CSs.
pub fn check_relay(
    node: &NodeIdentity,
    caller: &Caller,
    batch_sender: &str,
    origins: &[(&str, Option<&str>)],
) -> Result<(), Error> {
    if batch_sender != caller.name() {
        return Err(forbidden(
            caller,
            &format!("relay a batch as sender {batch_sender:?}"),
        ));
    }
    for (origin, municipality) in origins {
        let origin_ok = match (node.role, caller) {
            (Role::Prefecture, Caller::Cs(_)) => *origin == caller.name(),
            (Role::National, Caller::Prefecture(p)) => origin
                .strip_prefix("cs-")
                .is_some_and(|m| in_prefecture(m, Some(*p))),
            _ => false,
        };
        let expected_municipality = origin.strip_prefix("cs-").unwrap_or_default();
        let municipality_ok = municipality.is_none_or(|m| m == expected_municipality);
        if !origin_ok || !municipality_ok {
            return Err(forbidden(
                caller,
                &format!(
                    "relay an update of {} from {origin}",
                    municipality.unwrap_or("a message")
                ),
            ));
        }
    }
    Ok(())
}

/// A child fetches only its own mailbox.
pub fn check_mailbox(caller: &Caller, recipient: &str) -> Result<(), Error> {
    if recipient == caller.name() {
        Ok(())
    } else {
        Err(forbidden(
            caller,
            &format!("fetch the mailbox of {recipient}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(role: Role, p: Option<u8>, m: Option<&str>) -> NodeIdentity {
        NodeIdentity {
            role,
            prefecture: p,
            municipality: m.map(str::to_owned),
        }
    }

    #[test]
    fn names_round_trip_and_junk_is_no_identity() {
        for name in [
            "national",
            "operator",
            "pref-13",
            "cs-131016",
            "muni-011002",
            "agency-nenkin",
        ] {
            assert_eq!(Caller::parse(name).unwrap().name(), name);
        }
        for junk in [
            "",
            "pref-48",
            "pref-1",
            "cs-131017",
            "muni-13101",
            "agency-",
            "agency-a b",
            "root",
            "National",
        ] {
            assert_eq!(Caller::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn the_tree_decides() {
        let cs = node(Role::Cs, Some(13), Some("131016"));
        let pref = node(Role::Prefecture, Some(13), None);
        let national = node(Role::National, None, None);
        let c = |s: &str| Caller::parse(s).unwrap();
        assert!(decide(&cs, Some(&c("muni-131016")), "/v1/updates").is_ok());
        assert!(decide(&cs, Some(&c("muni-131024")), "/v1/updates").is_err());
        assert!(decide(&cs, Some(&c("cs-131016")), "/v1/updates").is_err());
        assert!(decide(&pref, Some(&c("cs-131016")), "/v1/relay").is_ok());
        assert!(decide(&pref, Some(&c("cs-011002")), "/v1/relay").is_err());
        assert!(decide(&national, Some(&c("pref-01")), "/v1/relay").is_ok());
        assert!(decide(&national, Some(&c("cs-011002")), "/v1/relay").is_err());
        assert!(decide(&national, Some(&c("agency-nenkin")), "/v1/agency/queries").is_ok());
        assert!(decide(&cs, Some(&c("agency-nenkin")), "/v1/agency/queries").is_err());
        assert!(decide(&pref, Some(&c("muni-131016")), "/v1/disclosures").is_ok());
        assert!(decide(&pref, Some(&c("muni-011002")), "/v1/disclosures").is_err());
        assert!(decide(&cs, Some(&c("operator")), "/admin/v1/final-request").is_ok());
        let content = "/v1/deliveries/content/{sha256}";
        assert!(decide(&national, Some(&c("pref-13")), content).is_ok());
        assert!(decide(&national, Some(&c("cs-131016")), content).is_err());
        assert!(decide(&pref, Some(&c("cs-131016")), content).is_ok());
        assert!(decide(&pref, Some(&c("cs-011002")), content).is_err());
        assert!(decide(&cs, Some(&c("operator")), content).is_ok());
        assert!(decide(&cs, Some(&c("muni-131016")), content).is_err());
        let upload = "/admin/v1/deliveries/content/{sha256}";
        assert!(decide(&national, Some(&c("operator")), upload).is_ok());
        assert!(decide(&national, Some(&c("pref-13")), upload).is_err());
        assert!(decide(&cs, Some(&c("national")), "/admin/v1/final-request").is_err());
        assert!(matches!(
            decide(&cs, None, "/v1/updates"),
            Err(Error::Unauthenticated(_))
        ));
        assert!(decide(&cs, None, "/healthz").is_ok());
    }

    #[test]
    fn relays_carry_only_the_senders_own_updates() {
        let pref = node(Role::Prefecture, Some(13), None);
        let national = node(Role::National, None, None);
        let cs = Caller::parse("cs-131016").unwrap();
        assert!(
            check_relay(
                &pref,
                &cs,
                "cs-131016",
                &[("cs-131016", Some("131016")), ("cs-131016", None)]
            )
            .is_ok()
        );
        assert!(check_relay(&pref, &cs, "cs-131024", &[]).is_err());
        assert!(check_relay(&pref, &cs, "cs-131016", &[("cs-131016", Some("131024"))]).is_err());
        assert!(check_relay(&pref, &cs, "cs-131016", &[("cs-131024", Some("131024"))]).is_err());
        let p13 = Caller::parse("pref-13").unwrap();
        assert!(check_relay(&national, &p13, "pref-13", &[("cs-131016", Some("131016"))]).is_ok());
        assert!(check_relay(&national, &p13, "pref-13", &[("cs-011002", Some("011002"))]).is_err());
        assert!(check_mailbox(&cs, "cs-131016").is_ok());
        assert!(check_mailbox(&cs, "cs-131024").is_err());
    }
}
