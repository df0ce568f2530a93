//! The command line and the wiring: configuration → [`CallCenter`] → HTTP server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use actix_web::HttpServer;
use clap::{Args, Parser, Subcommand};
use jiff::SignedDuration;
use juki_calendar::{Calendar, CalendarConfig};

use crate::domain::Caller;
use crate::domain::clock::{Clock, SystemClock};
use crate::domain::sla::SlaPolicy;
use crate::error::Error;
use crate::http::auth::{AuthMode, TlsFiles};
use crate::http::{AppState, app};
use crate::metrics::Metrics;
use crate::search::SearchIndex;
use crate::service::CallCenter;
use crate::store::{Db, DbUrl};

#[derive(Debug, Parser)]
#[command(name = "juki-callcenter", version, about = "The jukinet call center")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API and the web UI.
    Serve(ServeArgs),
    /// Apply the pending migrations and exit.
    Migrate(DbArgs),
    /// Load the Japanese seed tickets (past inquiries and answers) into an empty database.
    Seed(DbArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// sqlite://PATH, a plain path, or postgres://...
    #[arg(
        long,
        env = "JUKI_CALLCENTER_DATABASE",
        default_value = "sqlite://callcenter.db"
    )]
    pub database: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[arg(long, env = "JUKI_CALLCENTER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The server certificate chain (PEM); with --tls-key and --tls-ca turns on mutual TLS.
    #[arg(long, env = "JUKI_CALLCENTER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, env = "JUKI_CALLCENTER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// The project CA whose client certificates identify the callers.
    #[arg(long, env = "JUKI_CALLCENTER_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Development mode: plain HTTP, callers name themselves (x-juki-identity header or the
    /// /ui/login cookie). Never on a reachable network.
    #[arg(long, env = "JUKI_CALLCENTER_DEV_MODE")]
    pub dev_mode: bool,
    /// Development mode: the identity of requests that state none.
    #[arg(long, env = "JUKI_CALLCENTER_DEV_IDENTITY")]
    pub dev_identity: Option<String>,
    /// The OperatingCalendar configuration (its spec, YAML or JSON); default the built-in
    /// Japanese calendar.
    #[arg(long, env = "JUKI_CALLCENTER_CALENDAR")]
    pub calendar: Option<PathBuf>,
    /// Business minutes to the first answer.
    #[arg(long, env = "JUKI_CALLCENTER_SLA_MINUTES", default_value_t = 240)]
    pub sla_minutes: i64,
    /// Flag tickets with fewer business minutes than this left.
    #[arg(long, env = "JUKI_CALLCENTER_SLA_WARN_MINUTES", default_value_t = 60)]
    pub sla_warn_minutes: i64,
    /// Load the seed tickets when the database is empty.
    #[arg(long, env = "JUKI_CALLCENTER_SEED")]
    pub seed: bool,
    #[arg(long, env = "JUKI_CALLCENTER_DB_POOL", default_value_t = 8)]
    pub db_pool_size: u32,
    /// Read the node context of tickets from the Kubernetes API (in-cluster service account or
    /// the kubeconfig).
    #[arg(long, env = "JUKI_CALLCENTER_KUBE")]
    pub kube: bool,
}

impl ServeArgs {
    /// The authentication mode: mutual TLS with all three files, development mode only when
    /// asked for, anything else refused.
    pub fn auth(&self) -> Result<(AuthMode, Option<TlsFiles>), Error> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca, self.dev_mode) {
            (Some(cert), Some(key), Some(ca), false) => Ok((
                AuthMode::Mtls,
                Some(TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: ca.clone(),
                }),
            )),
            (None, None, None, true) => {
                let default = self
                    .dev_identity
                    .as_deref()
                    .map(|n| {
                        Caller::parse(n).ok_or_else(|| {
                            Error::Config(format!(
                                "--dev-identity {n:?} is not a call-center identity"
                            ))
                        })
                    })
                    .transpose()?;
                Ok((AuthMode::Development { default }, None))
            }
            (_, _, _, true) => Err(Error::Config(
                "--dev-mode and the TLS files exclude each other".into(),
            )),
            _ => Err(Error::Config(
                "give --tls-cert, --tls-key and --tls-ca (mutual TLS), or --dev-mode for local use"
                    .into(),
            )),
        }
    }

    pub fn calendar(&self) -> Result<Calendar, Error> {
        let config = match &self.calendar {
            None => CalendarConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::Config(format!("calendar {}: {e}", path.display())))?;
                serde_yaml::from_str(&text)
                    .map_err(|e| Error::Config(format!("calendar {}: {e}", path.display())))?
            }
        };
        Calendar::new(&config).map_err(|e| Error::Config(format!("calendar: {e}")))
    }

    pub fn sla(&self) -> Result<SlaPolicy, Error> {
        if self.sla_minutes <= 0 || self.sla_warn_minutes < 0 || self.sla_minutes > 100_000 {
            return Err(Error::Config(
                "--sla-minutes must be 1–100000 and --sla-warn-minutes ≥ 0".into(),
            ));
        }
        Ok(SlaPolicy {
            target: SignedDuration::from_mins(self.sla_minutes),
            warn_before: SignedDuration::from_mins(self.sla_warn_minutes),
        })
    }
}

/// The service over a database, with a fresh index and metrics.
pub fn call_center(
    db: Db,
    calendar: Calendar,
    sla: SlaPolicy,
    clock: Arc<dyn Clock>,
) -> Result<CallCenter, Error> {
    Ok(CallCenter {
        db,
        index: Arc::new(SearchIndex::new()?),
        clock,
        calendar: Arc::new(calendar),
        sla,
        metrics: Metrics::new(),
        nodes: None,
    })
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => {
            let db = Db::new(DbUrl::parse(&args.database)?, 1);
            let applied = db.write(crate::store::db::run_migrations).await?;
            tracing::info!(versions = ?applied, "migrations applied");
            Ok(())
        }
        Command::Seed(args) => {
            let cc = call_center(
                Db::new(DbUrl::parse(&args.database)?, 2),
                Calendar::new(&CalendarConfig::default())
                    .map_err(|e| Error::Config(e.to_string()))?,
                SlaPolicy::default(),
                Arc::new(SystemClock),
            )?;
            cc.prepare().await?;
            let n = crate::seed::load(&cc).await?;
            tracing::info!(tickets = n.len(), "seed loaded");
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (auth, tls) = args.auth()?;
    let url = DbUrl::parse(&args.db.database)?;
    let backend = url.backend();
    let mut cc = call_center(
        Db::new(url, args.db_pool_size),
        args.calendar()?,
        args.sla()?,
        Arc::new(SystemClock),
    )?;
    if args.kube {
        cc.nodes = Some(crate::nodes::NodeSource::infer().await?);
    }
    let applied = cc.prepare().await?;
    if args.seed {
        crate::seed::load(&cc).await?;
    }
    if tls.is_none() {
        tracing::warn!("development mode: plain HTTP, callers name themselves (local use only)");
    }
    let state = AppState { cc, auth };
    let server = HttpServer::new({
        let state = state.clone();
        move || app(state.clone())
    });
    let server = match &tls {
        Some(files) => server
            .on_connect(crate::http::auth::remember_peer)
            .bind_rustls_0_23(args.listen, files.server_config()?)?,
        None => server.bind(args.listen)?,
    };
    tracing::info!(
        listen = %args.listen,
        database = backend,
        tls = tls.is_some(),
        migrations_applied = applied.len(),
        indexed = state.cc.index.len(),
        "juki-callcenter serving"
    );
    server.run().await?;
    Ok(())
}
