//! Who a node is: its tier ([`Role`]) and codes ([`NodeIdentity`]).

use clap::ValueEnum;

use crate::error::Error;

/// The tier a node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    National,
    Prefecture,
    Cs,
}

impl Role {
    /// Parses a role name as written in the node configuration file (any case; `CS` too).
    pub fn parse(s: &str) -> Option<Role> {
        match s.to_ascii_lowercase().as_str() {
            "national" => Some(Role::National),
            "prefecture" | "prefectural" => Some(Role::Prefecture),
            "cs" => Some(Role::Cs),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::National => "national",
            Role::Prefecture => "prefecture",
            Role::Cs => "cs",
        }
    }
}

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub role: Role,
    /// Prefecture code, for prefecture and cs roles.
    pub prefecture: Option<u8>,
    /// Municipality code, for the cs role.
    pub municipality: Option<String>,
}

impl NodeIdentity {
    /// A CS node of `municipality` (validated).
    pub fn cs(municipality: &str) -> Result<Self, Error> {
        let prefecture = juki_codes::validate_municipality_code(municipality)
            .map_err(|e| Error::Config(format!("municipality code {municipality:?}: {e}")))?;
        Ok(NodeIdentity {
            role: Role::Cs,
            prefecture: Some(prefecture),
            municipality: Some(municipality.to_owned()),
        })
    }

    /// The sender id this node writes into its outbox and its history rows.
    pub fn sender_id(&self) -> String {
        match (self.role, self.prefecture, &self.municipality) {
            (Role::Cs, _, Some(m)) => format!("cs-{m}"),
            (Role::Prefecture, Some(p), _) => format!("pref-{p:02}"),
            _ => "national".to_owned(),
        }
    }
}
