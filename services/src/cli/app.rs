//! Wiring: configuration → pool → migrations → the one [`AppState`] → HTTP server and tasks.

use std::sync::Arc;

use std::time::Duration;

use crate::cli::batch;
use crate::cli::config::{BatchJob, Cli, Command, MigrateArgs, RestoreArgs, ServeArgs};
use crate::delivery::apply::{ALLOW_LIST, Outcome};
use crate::delivery::{Deliveries, FileName};
use crate::domain::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::http::routes::AppState;
use crate::node::Node;
use crate::provision::AllowList;
use crate::relay::calendar_file::CalendarFile;
use crate::relay::{self, RelayControl, RelaySettings};
use crate::store::db::{self, Db, DbUrl};
use crate::wide_area::WideArea;

/// Runs the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    crate::cli::logging::init(cli.log_json);
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Batch(args) => run_batch(args.job).await,
        Command::Restore(args) => restore(args).await,
    };
    if let Err(e) = &result {
        tracing::error!("juki-node failed: {e:#}");
    }
    result
}

/// The database for logs: its kind and where it is, without a password.
fn describe(url: &DbUrl) -> (&'static str, String) {
    match url {
        DbUrl::Sqlite(path) => ("sqlite", path.clone()),
        DbUrl::Postgres(u) => ("postgres", crate::cli::pgtools::redact(u)),
    }
}

/// Runs a batch on the node's database (migrated first), off the async runtime.
async fn read_batch<T: Send + 'static>(
    node: crate::cli::config::NodeArgs,
    run: impl FnOnce(&mut crate::store::db::DbConnection) -> Result<T, Error> + Send + 'static,
) -> anyhow::Result<T> {
    let url = node.database()?;
    Ok(tokio::task::spawn_blocking(move || -> Result<T, Error> {
        let mut conn = url
            .connect()
            .map_err(|e| Error::Batch(format!("connect: {e}")))?;
        db::run_migrations(&mut conn)?;
        run(&mut conn)
    })
    .await??)
}

async fn run_batch(job: BatchJob) -> anyhow::Result<()> {
    let out = match job {
        BatchJob::Statistics { node, date } => {
            let date = date.unwrap_or_else(|| SystemClock.today());
            let (kind, location) = describe(&node.database()?);
            let stats = read_batch(node, move |conn| batch::statistics(conn, date)).await?;
            tracing::info!(
                job = "statistics",
                date = %stats.date,
                database = kind,
                database_url = %location,
                updates = stats.updates.iter().map(|r| r.count).sum::<i64>(),
                relayed = stats.relayed,
                held = stats.held,
                "batch statistics done"
            );
            serde_json::to_string_pretty(&stats)?
        }
        BatchJob::WeeklyReport { node, date } => {
            let date = date.unwrap_or_else(|| SystemClock.today());
            let report = read_batch(node, move |conn| batch::weekly_report(conn, date)).await?;
            tracing::info!(job = "weekly-report", from = %report.from, to = %report.to, days = report.days.len(), "batch weekly-report done");
            serde_json::to_string_pretty(&report)?
        }
        BatchJob::MonthlyAudit { node, date } => {
            let date = date.unwrap_or_else(|| SystemClock.today());
            let audit = read_batch(node, move |conn| batch::monthly_audit(conn, date)).await?;
            tracing::info!(job = "monthly-audit", month = %audit.month, provisions = audit.provisions, "batch monthly-audit done");
            serde_json::to_string_pretty(&audit)?
        }
        BatchJob::Backup { node, output, date } => {
            let url = node.database()?;
            let output = match (output, &url) {
                (Some(dir), _) => dir,
                (None, DbUrl::Sqlite(path)) => std::path::Path::new(path)
                    .parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join("backups"),
                (None, DbUrl::Postgres(_)) => "backups".into(),
            };
            let (kind, location) = describe(&url);
            let started = std::time::Instant::now();
            let (manifest, path) = tokio::task::spawn_blocking(move || {
                batch::backup(&url, &output, SystemClock.now(), date)
            })
            .await??;
            tracing::info!(
                job = "backup",
                database = kind,
                database_url = %location,
                format = %manifest.format,
                manifest = %path.display(),
                bytes = manifest.bytes,
                sha256 = %manifest.sha256,
                rows = manifest.tables.values().sum::<i64>(),
                duration_ms = started.elapsed().as_millis() as u64,
                "batch backup done"
            );
            serde_json::to_string_pretty(&manifest)?
        }
    };
    println!("{out}");
    Ok(())
}

async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let target = DbUrl::parse(&args.database_url)?;
    let (kind, location) = describe(&target);
    let manifest =
        tokio::task::spawn_blocking(move || batch::restore(&args.manifest, &target, args.force))
            .await??;
    tracing::info!(
        job = "restore",
        database = kind,
        database_url = %location,
        file = %manifest.file,
        sha256 = %manifest.sha256,
        rows = manifest.tables.values().sum::<i64>(),
        "restored; sha256 and row counts verified"
    );
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    Ok(())
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let url = DbUrl::parse(&args.database_url)?;
    let args_revert = args.revert_all;
    let versions = tokio::task::spawn_blocking(move || -> Result<Vec<String>, Error> {
        let mut conn = url
            .connect()
            .map_err(|e| Error::Migration(format!("connect: {e}")))?;
        if args_revert {
            db::revert_all_migrations(&mut conn)
        } else {
            db::run_migrations(&mut conn)
        }
    })
    .await??;
    tracing::info!(
        revert_all = args.revert_all,
        versions = ?versions,
        "migrations done"
    );
    Ok(())
}

/// Builds the handler state and applies pending migrations.
pub async fn prepare(
    args: &ServeArgs,
    config: &crate::cli::config::NodeConfig,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<AppState> {
    Ok(prepare_logged(args, config, clock).await?.0)
}

/// [`prepare`], also returning the migrations it applied.
async fn prepare_logged(
    args: &ServeArgs,
    config: &crate::cli::config::NodeConfig,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(AppState, Vec<String>)> {
    let config = config.clone();
    let db = Db::open(&config.database, args.db_pool_size.max(1));
    let migrate_pool = db.pool.clone();
    let applied = tokio::task::spawn_blocking(move || -> Result<Vec<String>, Error> {
        let mut conn = migrate_pool.get()?;
        db::run_migrations(&mut conn)
    })
    .await??;
    if !applied.is_empty() {
        tracing::info!(versions = ?applied, "applied migrations");
    }
    let settings = RelaySettings {
        batch: i64::from(args.relay_batch.max(1)),
        backoff_max: Duration::from_millis(args.relay_backoff_max_ms.max(100)),
        final_timeout: Duration::from_secs(args.final_request_timeout_secs),
        probe_interval: Duration::from_secs(args.link_probe_secs.max(1)),
        ..RelaySettings::default()
    };
    let (deliveries, allow) = open_deliveries(&config, clock.now())?;
    let mut state = AppState::new(Node::new(db, config.identity, clock));
    let calendar = match &config.calendar_path {
        Some(path) => CalendarFile::watch(path.clone())?,
        None => config.calendar.clone().into(),
    };
    let mut relay = RelayControl::new(config.upstream, calendar, settings);
    relay.extensions = config.extensions.clone();
    state.relay = Arc::new(relay);
    state.wide = Arc::new(WideArea {
        name: config.name.clone(),
        extensions: config.extensions.clone(),
        ..WideArea::default()
    });
    state.mtls = config.tls.is_some();
    state.deliveries = Some(Arc::new(deliveries));
    state.allow = Arc::new(allow);
    Ok((state, applied))
}

/// Opens the delivery store and applies the files staged for this start; then the agency
/// allow-list is the delivered one if there is one, else the configured one.
fn open_deliveries(
    config: &crate::cli::config::NodeConfig,
    now: jiff::Timestamp,
) -> anyhow::Result<(Deliveries, AllowList)> {
    let deliveries = Deliveries::open(&config.delivery_dir)?.trusting(config.delivery_keys.clone());
    let check = |name: &FileName, path: &std::path::Path| -> Result<(), Error> {
        match name.as_str() {
            ALLOW_LIST => AllowList::read(path).map(drop),
            _ => Ok(()),
        }
    };
    for outcome in deliveries.apply_staged(&now.to_string(), &check)? {
        match &outcome {
            Outcome::Refused { .. } => tracing::warn!(?outcome, "delivered file not applied"),
            _ => tracing::info!(?outcome, "delivered file applied"),
        }
    }
    let name = FileName::parse(ALLOW_LIST)?;
    let allow = match deliveries.current_path(&name)? {
        Some(path) => {
            tracing::info!(path = %path.display(), "agency allow-list from a delivery");
            AllowList::read(&path)?
        }
        None => config.allow_list.clone(),
    };
    Ok((deliveries, allow))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.node.validate()?;
    let listen = args.listen(&config)?;
    if config.tls.is_none() && !listen.ip().is_loopback() {
        tracing::warn!(%listen, "serving plain HTTP (--insecure-plain-http): callers are not authenticated");
    }
    let (kind, location) = describe(&config.database);
    let clock: Arc<dyn Clock> = match config.clock {
        Some(shared) => {
            tracing::info!(now = %shared.now(), "on the operator's clock");
            Arc::new(shared)
        }
        None => Arc::new(SystemClock),
    };
    let (state, applied) = prepare_logged(&args, &config, clock).await?;
    let spans = juki_telemetry::init(
        args.otlp_endpoint.as_deref(),
        "juki-node",
        vec![
            ("juki.node", state.identity.sender_id()),
            ("juki.tier", state.identity.role.as_str().to_owned()),
        ],
    )?;
    if let Some(files) = &config.tls {
        crate::relay::client::set_tls(files.client_config()?);
    }
    let start = crate::http::server::bind(&state, listen, config.tls.as_ref())?;
    tracing::info!(
        role = state.identity.role.as_str(),
        name = %state.identity.sender_id(),
        listen = %listen,
        upstream = state.relay.upstream.as_deref().unwrap_or("none"),
        calendar = state.relay.calendar.is_some(),
        database = kind,
        database_url = %location,
        tls = config.tls.is_some(),
        allow_list = state.allow.entries.len(),
        delivery_dir = %config.delivery_dir.display(),
        migrations_applied = applied.len(),
        migrations = ?applied,
        spans,
        "juki-node serving"
    );
    // The background tasks take what they need, not the HTTP state.
    tokio::task::spawn_local(crate::wide_area::pull::run(
        state.node.clone(),
        Arc::clone(&state.relay),
        Arc::clone(&state.wide),
        args.mailbox_wait_secs,
    ));
    tokio::task::spawn_local(relay::run(state.node.clone(), Arc::clone(&state.relay)));
    tokio::task::spawn_local(relay::probe::run(
        state.node.clone(),
        Arc::clone(&state.relay),
    ));
    start().await?;
    juki_telemetry::flush();
    tracing::info!("juki-node stopped");
    Ok(())
}
