//! Configuration from flags or environment variables.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use juki_calendar::Calendar;
use serde_json::Value;

use crate::domain::clock::SharedClock;
use crate::domain::identity::{NodeIdentity, Role};
use crate::error::Error;
use crate::store::db::DbUrl;

#[derive(Debug, Parser)]
#[command(
    name = "juki-node",
    version,
    about = "jukinet node service (national, prefectural or CS)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log one JSON object per line on stderr (default: human-readable lines). The level
    /// filter comes from RUST_LOG (default info).
    #[arg(
        long,
        global = true,
        env = "JUKI_LOG_JSON",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub log_json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations, then serve HTTP.
    Serve(ServeArgs),
    /// Apply pending migrations (or revert them all with --revert-all) and exit.
    Migrate(MigrateArgs),
    /// Daily batch jobs (run after the node's online operation ends).
    Batch(BatchArgs),
    /// Verify a backup against its manifest and restore it (SQLite file or PostgreSQL database).
    Restore(RestoreArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BatchArgs {
    #[command(subcommand)]
    pub job: BatchJob,
}

#[derive(Debug, Clone, Subcommand)]
pub enum BatchJob {
    /// Count the day's updates per municipality and change reason (plus relays and held
    /// updates), store them in daily_statistics and print them as JSON.
    Statistics {
        #[command(flatten)]
        node: NodeArgs,
        /// The operating date (YYYY-MM-DD, Asia/Tokyo); default today.
        #[arg(long)]
        date: Option<jiff::civil::Date>,
    },
    /// Sum the stored daily statistics of the seven days ending at the date, per municipality
    /// and reason, and print them as JSON (the calendar's `weekly-report`).
    WeeklyReport {
        #[command(flatten)]
        node: NodeArgs,
        /// The week's last operating date (YYYY-MM-DD); default today.
        #[arg(long)]
        date: Option<jiff::civil::Date>,
    },
    /// Count the previous month's provisions of personal information per recipient and outcome
    /// and print them as JSON (the calendar's `monthly-audit`).
    MonthlyAudit {
        #[command(flatten)]
        node: NodeArgs,
        /// The operating date the audit runs for; the month audited is the one before it.
        #[arg(long)]
        date: Option<jiff::civil::Date>,
    },
    /// A consistent backup with its sha256 and a manifest: SQLite with VACUUM INTO, PostgreSQL
    /// with pg_dump (custom format; JUKI_PG_DUMP overrides the tool's path).
    Backup {
        #[command(flatten)]
        node: NodeArgs,
        /// Directory the backup file and `<file>.manifest.json` are written to (default:
        /// `backups` next to the SQLite database file, `backups` in the working directory for
        /// PostgreSQL).
        #[arg(long, env = "JUKI_BACKUP_DIR")]
        output: Option<PathBuf>,
        /// The operating date the backup belongs to (recorded in the manifest).
        #[arg(long)]
        date: Option<jiff::civil::Date>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The manifest written by `batch backup`.
    #[arg(long)]
    pub manifest: PathBuf,
    /// The database to restore into: a SQLite file (`sqlite://PATH` or a path), which must not
    /// exist, or an existing PostgreSQL database (`postgres://…`, restored with pg_restore;
    /// JUKI_PG_RESTORE overrides the tool's path), which must be empty — unless --force.
    #[arg(long, env = "JUKI_DATABASE_URL")]
    pub database_url: String,
    /// Replace an existing database file / the contents of a non-empty PostgreSQL database.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The node configuration file (JSON: name, role, prefecture, municipality, upstreamUrl,
    /// listen, optionally databaseUrl and calendar). Flags and environment variables win over it.
    #[arg(long, env = "JUKI_CONFIG")]
    pub config: Option<PathBuf>,
    /// The tier this node serves (required here or in the configuration file).
    #[arg(long, env = "JUKI_ROLE", value_enum)]
    pub role: Option<Role>,
    /// 地方公共団体コード of this CS (6 digits, with check digit); required for role cs.
    #[arg(long, env = "JUKI_MUNICIPALITY_CODE")]
    pub municipality_code: Option<String>,
    /// Prefecture code (01–47); required for role prefecture, derived from the municipality for cs.
    #[arg(long, env = "JUKI_PREFECTURE_CODE")]
    pub prefecture_code: Option<String>,
    /// Database: `sqlite://PATH`, a plain file path (SQLite) or `postgres://...`
    /// (then `DATABASE_URL`, the file's `databaseUrl`, default `sqlite://juki-node.db`).
    #[arg(long, env = "JUKI_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Base URL of the upstream node (`http://host:port`); updates are relayed to
    /// `<url>/v1/relay`. Ignored by the national server.
    #[arg(long, env = "JUKI_UPSTREAM_URL")]
    pub upstream_url: Option<String>,
    /// The operating calendar (JSON, the OperatingCalendar spec). Without it (and without a
    /// `calendar.json` next to the configuration file) the upstream is always open.
    #[arg(long, env = "JUKI_CALENDAR")]
    pub calendar: Option<PathBuf>,
    /// The active ServiceExtensions (JSON list of {kind, nodes, date, endTime}), read on every
    /// wide-area issuance (then the file's `extensions`, then `extensions.json` next to the
    /// configuration file). A missing file means none.
    #[arg(long, env = "JUKI_EXTENSIONS")]
    pub extensions: Option<PathBuf>,
    /// This node's certificate chain (PEM, leaf first; CN = national, pref-PP or cs-MMMMMM).
    /// With --tls-key and --tls-ca the node serves HTTPS only, asks callers for client
    /// certificates of the CA and enforces the tree rules; its upstream URL is then https://.
    /// Without them it serves plain HTTP, which authenticates no caller: only on a loopback
    /// address, or anywhere with --insecure-plain-http.
    #[arg(long, env = "JUKI_TLS_CERT", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "JUKI_TLS_KEY", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The project CA certificate (PEM) that signs every node, operator and agency certificate.
    #[arg(long, env = "JUKI_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// The agency allow-list (JSON `{"allow": [{"agency", "affair", "items": [...]}]}`): the
    /// (agency, affair) pairs the national or prefectural server answers, and the items each
    /// affair receives. Without it every agency query is refused (and logged).
    #[arg(long, env = "JUKI_ALLOW_LIST")]
    pub allow_list: Option<PathBuf>,
    /// Directory of delivered content and files (`content/`, `staged/`, `files/`; see the
    /// README's deliveries section). Default: beside the SQLite database file (`node.db` →
    /// `node.deliveries`), `deliveries` in the working directory for PostgreSQL. A delivered
    /// `allow-list` wins over --allow-list.
    #[arg(long, env = "JUKI_DELIVERY_DIR")]
    pub delivery_dir: Option<PathBuf>,
    /// Ed25519 public keys (64 hex digits each, comma-separated) whose signatures a delivery
    /// needs before the node stages it (then the file's `deliveryKeys`). None: signatures are
    /// not checked.
    #[arg(long, env = "JUKI_DELIVERY_KEYS")]
    pub delivery_keys: Option<String>,
    /// The clock the node judges its online windows by: `real` (the default), or the
    /// operator's fast clock as `fast:SHOWN@REAL,xFACTOR` (at the real instant REAL it showed
    /// SHOWN; demos and tests of a whole night). Then the file's `clock`.
    #[arg(long, env = "JUKI_CLOCK")]
    pub clock: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub node: NodeArgs,
    /// Address to listen on (then the file's `listen`, default 0.0.0.0:8080).
    #[arg(long, env = "JUKI_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Serve plain HTTP on a non-loopback address. Without TLS a node cannot tell its callers
    /// apart, so anyone who reaches the port can relay forged updates or read mailboxes: only
    /// for demos and tests, or behind NetworkPolicies that admit the tree's callers alone.
    #[arg(long, env = "JUKI_INSECURE_PLAIN_HTTP")]
    pub insecure_plain_http: bool,
    /// Maximum database connections.
    #[arg(long, env = "JUKI_DB_POOL_SIZE", default_value_t = 8)]
    pub db_pool_size: u32,
    /// Most outbox rows sent upstream in one relay request.
    #[arg(long, env = "JUKI_RELAY_BATCH", default_value_t = 2000)]
    pub relay_batch: u32,
    /// Cap of the exponential retry backoff of the relay, in milliseconds.
    #[arg(long, env = "JUKI_RELAY_BACKOFF_MAX_MS", default_value_t = 5000)]
    pub relay_backoff_max_ms: u64,
    /// How long a final request waits for the upstream's confirmation, in seconds.
    #[arg(long, env = "JUKI_FINAL_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub final_request_timeout_secs: u64,
    /// How often the link to the upstream is probed (its /healthz), in seconds.
    #[arg(long, env = "JUKI_LINK_PROBE_SECS", default_value_t = 15)]
    pub link_probe_secs: u64,
    /// How long one long poll of the upstream's mailbox waits, in seconds (at most 30).
    #[arg(long, env = "JUKI_MAILBOX_WAIT_SECS", default_value_t = 20)]
    pub mailbox_wait_secs: u64,
    /// The OpenTelemetry collector (OTLP/HTTP base URL, http://HOST:PORT) this node exports
    /// the spans of the updates it records to. Unset: no span leaves the node.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl ServeArgs {
    /// The listen address: flag/env, then the configuration file, then 0.0.0.0:8080. Plain
    /// HTTP (no TLS files) is refused off loopback unless --insecure-plain-http says so.
    pub fn listen(&self, config: &NodeConfig) -> Result<SocketAddr, Error> {
        let listen = self
            .listen
            .or(config.listen)
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080)));
        if config.tls.is_none() && !listen.ip().is_loopback() && !self.insecure_plain_http {
            return Err(Error::Config(format!(
                "listen {listen}: plain HTTP authenticates no caller, so any client that reaches \
                 this address could relay forged updates or read mailboxes; serve mutual TLS \
                 (--tls-cert, --tls-key, --tls-ca), listen on a loopback address, or opt in \
                 with --insecure-plain-http (JUKI_INSECURE_PLAIN_HTTP=true)"
            )));
        }
        Ok(listen)
    }
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

/// The validated node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub identity: NodeIdentity,
    pub database: DbUrl,
    /// Base URL of the upstream node (None at the national server, or when not configured).
    pub upstream: Option<String>,
    /// The operating calendar; None means the upstream is always open.
    pub calendar: Option<Calendar>,
    /// The file it was read from, read again while the node runs when it changes.
    pub calendar_path: Option<PathBuf>,
    /// `listen` from the configuration file.
    pub listen: Option<SocketAddr>,
    /// `name` from the configuration file (the JukiNode's name).
    pub name: Option<String>,
    /// The active ServiceExtensions file.
    pub extensions: Option<PathBuf>,
    /// Mutual TLS (None: plain HTTP without authentication).
    pub tls: Option<crate::http::tls::TlsFiles>,
    /// The agency allow-list (empty: every query refused).
    pub allow_list: crate::provision::AllowList,
    /// Where delivered content and files are kept.
    pub delivery_dir: PathBuf,
    /// Whose signatures a delivery needs (empty: not checked).
    pub delivery_keys: crate::delivery::DeliveryKeys,
    /// The operator's clock when it is not the real one; None: the system clock.
    pub clock: Option<SharedClock>,
}

/// The node configuration file (`/etc/juki/node.json`, rendered by the operator).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileConfig {
    pub role: Option<Role>,
    pub prefecture: Option<String>,
    pub municipality: Option<String>,
    pub upstream_url: Option<String>,
    pub listen: Option<SocketAddr>,
    pub database_url: Option<String>,
    pub calendar: Option<PathBuf>,
    pub name: Option<String>,
    pub extensions: Option<PathBuf>,
    /// `clock`: the operator's clock when it is not the real one (see [`SharedClock`]).
    pub clock: Option<String>,
    /// `deliveryKeys`: as `--delivery-keys`.
    pub delivery_keys: Option<String>,
}

fn text(v: &Value, key: &str) -> Result<Option<String>, Error> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(Error::Config(format!(
            "configuration file: {key} must be a string, not {other}"
        ))),
    }
}

impl FileConfig {
    /// Parses the JSON text of the configuration file.
    pub fn parse(json: &str) -> Result<FileConfig, Error> {
        let v: Value = serde_json::from_str(json)
            .map_err(|e| Error::Config(format!("configuration file: {e}")))?;
        if !v.is_object() {
            return Err(Error::Config(
                "configuration file: expected a JSON object".into(),
            ));
        }
        let role = text(&v, "role")?
            .map(|r| {
                Role::parse(&r)
                    .ok_or_else(|| Error::Config(format!("configuration file: unknown role {r:?}")))
            })
            .transpose()?;
        let prefecture = text(&v, "prefecture")?.map(|p| {
            // A number like 1 means prefecture 01.
            if p.len() == 1 { format!("0{p}") } else { p }
        });
        let listen = text(&v, "listen")?
            .map(|l| {
                l.parse::<SocketAddr>()
                    .map_err(|e| Error::Config(format!("configuration file: listen {l:?}: {e}")))
            })
            .transpose()?;
        Ok(FileConfig {
            role,
            prefecture,
            municipality: text(&v, "municipality")?,
            upstream_url: text(&v, "upstreamUrl")?,
            listen,
            database_url: text(&v, "databaseUrl")?,
            calendar: text(&v, "calendar")?.map(PathBuf::from),
            name: text(&v, "name")?,
            extensions: text(&v, "extensions")?.map(PathBuf::from),
            clock: text(&v, "clock")?,
            delivery_keys: text(&v, "deliveryKeys")?,
        })
    }

    pub fn read(path: &Path) -> Result<FileConfig, Error> {
        let json = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("read {}: {e}", path.display())))?;
        FileConfig::parse(&json).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }
}

pub use crate::relay::calendar_file::read_calendar;

impl NodeArgs {
    fn file(&self) -> Result<FileConfig, Error> {
        match &self.config {
            Some(path) => FileConfig::read(path),
            None => Ok(FileConfig::default()),
        }
    }

    fn database_of(&self, file: &FileConfig) -> Result<DbUrl, Error> {
        let database_url = self
            .database_url
            .clone()
            .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
            .or_else(|| file.database_url.clone())
            .unwrap_or_else(|| "sqlite://juki-node.db".to_owned());
        DbUrl::parse(&database_url)
    }

    /// The database alone (the batch commands need no role).
    pub fn database(&self) -> Result<DbUrl, Error> {
        self.database_of(&self.file()?)
    }

    pub fn validate(&self) -> Result<NodeConfig, Error> {
        let file = self.file()?;
        let database = self.database_of(&file)?;
        let role = self.role.or(file.role).ok_or_else(|| {
            Error::Config(
                "no role: give --role (JUKI_ROLE) or `role` in the configuration file".into(),
            )
        })?;
        let municipality_code = self
            .municipality_code
            .clone()
            .or_else(|| file.municipality.clone());
        let prefecture_code = self
            .prefecture_code
            .clone()
            .or_else(|| file.prefecture.clone());
        let identity = match role {
            Role::Cs => {
                let m = municipality_code.as_deref().ok_or_else(|| {
                    Error::Config(
                        "role cs needs --municipality-code (JUKI_MUNICIPALITY_CODE)".into(),
                    )
                })?;
                let id = NodeIdentity::cs(m)?;
                if let Some(p) = &prefecture_code {
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
                let p = prefecture_code.as_deref().ok_or_else(|| {
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
        let upstream = match role {
            Role::National => None,
            _ => self
                .upstream_url
                .clone()
                .or_else(|| file.upstream_url.clone())
                .map(|u| u.trim_end_matches('/').to_owned()),
        };
        let tls = match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Some(crate::http::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            }),
            _ => None,
        };
        let scheme = if tls.is_some() { "https://" } else { "http://" };
        if let Some(u) = &upstream
            && !u.starts_with(scheme)
        {
            return Err(Error::Config(format!(
                "upstream URL {u:?}: must start with {scheme} ({})",
                if tls.is_some() {
                    "the node has TLS files"
                } else {
                    "https needs --tls-cert, --tls-key and --tls-ca"
                }
            )));
        }
        let allow_list = match &self.allow_list {
            Some(path) => crate::provision::AllowList::read(path)?,
            None => crate::provision::AllowList::default(),
        };
        let calendar_path = self.calendar.clone().or(file.calendar.clone()).or_else(|| {
            // The operator renders calendar.json next to node.json.
            let beside = self.config.as_ref()?.parent()?.join("calendar.json");
            beside.exists().then_some(beside)
        });
        let calendar = calendar_path.as_deref().map(read_calendar).transpose()?;
        let extensions = self
            .extensions
            .clone()
            .or(file.extensions.clone())
            .or_else(|| Some(self.config.as_ref()?.parent()?.join("extensions.json")));
        let delivery_dir = self
            .delivery_dir
            .clone()
            .unwrap_or_else(|| match &database {
                // One directory per database: node.db → node.deliveries.
                DbUrl::Sqlite(path) => Path::new(path).with_extension("deliveries"),
                DbUrl::Postgres(_) => PathBuf::from("deliveries"),
            });
        let delivery_keys: Vec<String> = self
            .delivery_keys
            .clone()
            .or(file.delivery_keys.clone())
            .map(|keys| {
                keys.split(',')
                    .map(|k| k.trim().to_owned())
                    .filter(|k| !k.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let delivery_keys = crate::delivery::DeliveryKeys::parse(&delivery_keys)?;
        let clock = self
            .clock
            .clone()
            .or(file.clock.clone())
            .map(|spec| SharedClock::parse(&spec).map_err(|e| Error::Config(format!("clock: {e}"))))
            .transpose()?
            .flatten();
        Ok(NodeConfig {
            clock,
            delivery_dir,
            delivery_keys,
            identity,
            database,
            upstream,
            calendar,
            calendar_path,
            listen: file.listen,
            name: file.name,
            extensions,
            tls,
            allow_list,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<NodeConfig, Error> {
        serve_args(args).node.validate()
    }

    fn serve_args(args: &[&str]) -> ServeArgs {
        let mut all = vec!["juki-node", "serve"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all).unwrap().command {
            Command::Serve(s) => s,
            _ => unreachable!(),
        }
    }

    /// The listen address `args` resolve to, or the refusal.
    fn listen_of(args: &[&str]) -> Result<SocketAddr, Error> {
        let serve = serve_args(args);
        serve.listen(&serve.node.validate().unwrap())
    }

    #[test]
    fn plain_http_off_loopback_needs_the_insecure_flag() {
        let national = ["--role", "national", "--database-url", "/tmp/x.db"];
        let with = |extra: &[&'static str]| [&national[..], extra].concat();
        // The default address is every interface: refused without TLS, naming the way out.
        let refused = listen_of(&national).unwrap_err().to_string();
        assert!(refused.contains("listen 0.0.0.0:8080"), "{refused}");
        assert!(refused.contains("--insecure-plain-http"), "{refused}");
        assert!(listen_of(&with(&["--listen", "10.1.2.3:8080"])).is_err());
        assert!(listen_of(&with(&["--listen", "[::]:8080"])).is_err());
        // Loopback is the caller's own machine: allowed.
        for ok in ["127.0.0.1:9000", "[::1]:9000"] {
            assert_eq!(
                listen_of(&with(&["--listen", ok])).unwrap(),
                ok.parse().unwrap()
            );
        }
        // The explicit opt-in, as the operator's pods get it, and mutual TLS.
        let tls = [
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--tls-ca",
            "ca.pem",
        ];
        for ok in [&["--insecure-plain-http"][..], &tls] {
            assert_eq!(
                listen_of(&with(ok)).unwrap(),
                "0.0.0.0:8080".parse().unwrap()
            );
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

    #[test]
    fn configuration_file_with_flags_winning() {
        let dir = std::env::temp_dir().join(format!("juki-node-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.json");
        std::fs::write(
            &path,
            r#"{"name": "cs-131016", "role": "CS", "prefecture": "13", "municipality": "131016",
                "onlineEnd": null, "upstreamUrl": "http://pref-13:8080/", "listen": "127.0.0.1:9000"}"#,
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = parse(&["--config", p, "--database-url", "/tmp/x.db"]).unwrap();
        assert_eq!(c.identity.sender_id(), "cs-131016");
        assert_eq!(c.upstream.as_deref(), Some("http://pref-13:8080"));
        assert_eq!(c.listen, Some("127.0.0.1:9000".parse().unwrap()));
        assert!(c.calendar.is_none());
        let c = parse(&["--config", p, "--role", "national"]).unwrap();
        assert_eq!(c.identity.sender_id(), "national");
        assert_eq!(c.upstream, None);
        // A calendar.json next to the file is read.
        std::fs::write(dir.join("calendar.json"), "{}").unwrap();
        assert!(parse(&["--config", p]).unwrap().calendar.is_some());
        std::fs::write(dir.join("calendar.json"), r#"{"timeZone": "Nowhere/Else"}"#).unwrap();
        assert!(parse(&["--config", p]).is_err());
        assert!(FileConfig::parse(r#"{"role": "king"}"#).is_err());
        assert!(FileConfig::parse("[]").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_operators_clock_from_the_file_or_the_flag_and_a_bad_one_named() {
        let dir = std::env::temp_dir().join(format!("juki-node-clock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.json");
        std::fs::write(
            &path,
            r#"{"role": "National", "clock": "fast:2026-11-25T01:00:00Z@2026-12-06T05:00:00Z,x300"}"#,
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = parse(&["--config", p, "--database-url", "/tmp/x.db"]).unwrap();
        let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap();
        assert_eq!(
            c.clock.unwrap().at(at("2026-12-06T05:00:12Z")),
            at("2026-11-25T02:00:00Z")
        );
        let c = parse(&[
            "--config",
            p,
            "--database-url",
            "/tmp/x.db",
            "--clock",
            "real",
        ])
        .unwrap();
        assert_eq!(c.clock, None);
        let e = parse(&[
            "--config",
            p,
            "--database-url",
            "/tmp/x.db",
            "--clock",
            "fast:soon",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("clock: \"fast:soon\""), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
