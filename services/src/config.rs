//! Configuration from flags or environment variables.

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::db::DbUrl;
use crate::error::Error;

/// The tier a node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    National,
    Prefecture,
    Cs,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::National => "national",
            Role::Prefecture => "prefecture",
            Role::Cs => "cs",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "juki-node",
    version,
    about = "jukinet node service (national, prefectural or CS)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve HTTP.
    Serve(ServeArgs),
    /// Apply pending migrations (or revert them all with --revert-all) and exit.
    Migrate(MigrateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The tier this node serves.
    #[arg(long, env = "JUKI_ROLE", value_enum)]
    pub role: Role,
    /// 地方公共団体コード of this CS (6 digits, with check digit); required for role cs.
    #[arg(long, env = "JUKI_MUNICIPALITY_CODE")]
    pub municipality_code: Option<String>,
    /// Prefecture code (01–47); required for role prefecture, derived from the municipality for cs.
    #[arg(long, env = "JUKI_PREFECTURE_CODE")]
    pub prefecture_code: Option<String>,
    /// Database: `sqlite://PATH`, a plain file path (SQLite) or `postgres://...`.
    #[arg(
        long,
        env = "JUKI_DATABASE_URL",
        default_value = "sqlite://juki-node.db"
    )]
    pub database_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Address to listen on.
    #[arg(long, env = "JUKI_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Maximum database connections.
    #[arg(long, env = "JUKI_DB_POOL_SIZE", default_value_t = 8)]
    pub db_pool_size: u32,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Database: `sqlite://PATH`, a plain file path (SQLite) or `postgres://...`.
    #[arg(
        long,
        env = "JUKI_DATABASE_URL",
        default_value = "sqlite://juki-node.db"
    )]
    pub database_url: String,
    /// Revert every migration instead of applying.
    #[arg(long)]
    pub revert_all: bool,
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

/// The validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub identity: NodeIdentity,
    pub database: DbUrl,
}

impl NodeArgs {
    pub fn validate(&self) -> Result<NodeConfig, Error> {
        let database = DbUrl::parse(&self.database_url)?;
        let identity = match self.role {
            Role::Cs => {
                let m = self.municipality_code.as_deref().ok_or_else(|| {
                    Error::Config(
                        "role cs needs --municipality-code (JUKI_MUNICIPALITY_CODE)".into(),
                    )
                })?;
                let id = NodeIdentity::cs(m)?;
                if let Some(p) = &self.prefecture_code {
                    let p = juki_codes::validate_prefecture_code(p)
                        .map_err(|e| Error::Config(format!("prefecture code: {e}")))?;
                    if Some(p) != id.prefecture {
                        return Err(Error::Config(format!(
                            "prefecture code {p:02} does not match municipality {m}"
                        )));
                    }
                }
                id
            }
            Role::Prefecture => {
                let p = self.prefecture_code.as_deref().ok_or_else(|| {
                    Error::Config(
                        "role prefecture needs --prefecture-code (JUKI_PREFECTURE_CODE)".into(),
                    )
                })?;
                let p = juki_codes::validate_prefecture_code(p)
                    .map_err(|e| Error::Config(format!("prefecture code: {e}")))?;
                NodeIdentity {
                    role: Role::Prefecture,
                    prefecture: Some(p),
                    municipality: None,
                }
            }
            Role::National => NodeIdentity {
                role: Role::National,
                prefecture: None,
                municipality: None,
            },
        };
        Ok(NodeConfig { identity, database })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<NodeConfig, Error> {
        let mut all = vec!["juki-node", "serve"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Serve(s) => s.node.validate(),
            Command::Migrate(_) => unreachable!(),
        }
    }

    #[test]
    fn cs_needs_a_valid_municipality() {
        let c = parse(&[
            "--role",
            "cs",
            "--municipality-code",
            "131016",
            "--database-url",
            "/tmp/x.db",
        ])
        .unwrap();
        assert_eq!(c.identity.prefecture, Some(13));
        assert_eq!(c.identity.sender_id(), "cs-131016");
        assert_eq!(c.database, DbUrl::Sqlite("/tmp/x.db".into()));
        assert!(parse(&["--role", "cs"]).is_err());
        assert!(parse(&["--role", "cs", "--municipality-code", "131017"]).is_err());
        assert!(
            parse(&[
                "--role",
                "cs",
                "--municipality-code",
                "131016",
                "--prefecture-code",
                "01"
            ])
            .is_err()
        );
    }

    #[test]
    fn prefecture_and_national() {
        let c = parse(&[
            "--role",
            "prefecture",
            "--prefecture-code",
            "13",
            "--database-url",
            "postgres://h/db",
        ])
        .unwrap();
        assert_eq!(c.identity.sender_id(), "pref-13");
        assert_eq!(c.database, DbUrl::Postgres("postgres://h/db".into()));
        assert!(parse(&["--role", "prefecture"]).is_err());
        assert_eq!(
            parse(&["--role", "national"]).unwrap().identity.sender_id(),
            "national"
        );
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            DbUrl::parse("sqlite:///var/lib/juki.db").unwrap(),
            DbUrl::Sqlite("/var/lib/juki.db".into())
        );
        assert_eq!(
            DbUrl::parse("juki.db").unwrap(),
            DbUrl::Sqlite("juki.db".into())
        );
        assert!(DbUrl::parse("postgresql://u@h/d").is_ok());
        assert!(DbUrl::parse("mysql://h/d").is_err());
        assert!(DbUrl::parse("sqlite://").is_err());
    }
}
