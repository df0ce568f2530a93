//! Wiring: configuration → pool → migrations → HTTP server.

use std::sync::Arc;

use std::time::Duration;

use actix_web::dev::Service as _;
use actix_web::{App, HttpServer, web};

use crate::batch;
use crate::clock::{Clock, SystemClock};
use crate::config::{BatchJob, Cli, Command, MigrateArgs, RestoreArgs, ServeArgs};
use crate::db::{self, DbUrl};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::relay::{self, RelayControl, RelaySettings};
use crate::routes::{self, AppState};

/// Runs the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    crate::logging::init(cli.log_json);
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
        DbUrl::Postgres(u) => ("postgres", crate::pgtools::redact(u)),
    }
}

async fn run_batch(job: BatchJob) -> anyhow::Result<()> {
    let out = match job {
        BatchJob::Statistics { node, date } => {
            let url = node.database()?;
            let date = date.unwrap_or_else(|| SystemClock.today());
            let (kind, location) = describe(&url);
            let stats = web::block(move || -> Result<_, Error> {
                let mut conn = url
                    .connect()
                    .map_err(|e| Error::Batch(format!("connect: {e}")))?;
                db::run_migrations(&mut conn)?;
                batch::statistics(&mut conn, date)
            })
            .await??;
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
            let (manifest, path) =
                web::block(move || batch::backup(&url, &output, SystemClock.now(), date)).await??;
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
        web::block(move || batch::restore(&args.manifest, &target, args.force)).await??;
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
    let versions = web::block(move || -> Result<Vec<String>, Error> {
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
    config: &crate::config::NodeConfig,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<AppState> {
    Ok(prepare_logged(args, config, clock).await?.0)
}

/// [`prepare`], also returning the migrations it applied.
async fn prepare_logged(
    args: &ServeArgs,
    config: &crate::config::NodeConfig,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(AppState, Vec<String>)> {
    let config = config.clone();
    let pool = db::pool(&config.database, args.db_pool_size.max(1));
    let migrate_pool = pool.clone();
    let applied = web::block(move || -> Result<Vec<String>, Error> {
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
        ..RelaySettings::default()
    };
    let state = AppState {
        pool,
        identity: config.identity,
        clock,
        relay: Arc::new(RelayControl::new(
            config.upstream,
            config.calendar,
            settings,
        )),
        metrics: Metrics::new(),
        writes: Arc::default(),
        wide: Arc::new(crate::mailbox::WideArea {
            name: config.name.clone(),
            extensions: config.extensions.clone(),
            ..crate::mailbox::WideArea::default()
        }),
    };
    Ok((state, applied))
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.node.validate()?;
    let listen = args.listen(&config);
    let (kind, location) = describe(&config.database);
    let (state, applied) = prepare_logged(&args, &config, Arc::new(SystemClock)).await?;
    let server = HttpServer::new({
        let data = web::Data::new(state.clone());
        move || app(data.clone())
    })
    .bind(listen)?;
    tracing::info!(
        role = state.identity.role.as_str(),
        name = %state.identity.sender_id(),
        listen = %listen,
        upstream = state.relay.upstream.as_deref().unwrap_or("none"),
        calendar = state.relay.calendar.is_some(),
        database = kind,
        database_url = %location,
        migrations_applied = applied.len(),
        migrations = ?applied,
        "juki-node serving"
    );
    actix_web::rt::spawn(crate::mailbox::run_pull(state.clone()));
    actix_web::rt::spawn(relay::run(state));
    server.run().await?;
    tracing::info!("juki-node stopped");
    Ok(())
}

/// The application: routes, plus per request a metric and a debug log line.
fn app(
    data: web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<actix_web::body::BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = data.metrics.clone();
    App::new()
        .app_data(data)
        .wrap_fn(move |req, srv| {
            let metrics = metrics.clone();
            let method = req.method().to_string();
            let route = req
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_owned());
            let started = std::time::Instant::now();
            let response = srv.call(req);
            async move {
                let response = response.await?;
                let status = response.status().as_u16();
                metrics.request(&method, &route, status);
                tracing::debug!(
                    method = %method,
                    route = %route,
                    status,
                    duration_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "request"
                );
                Ok(response)
            }
        })
        .configure(routes::configure)
}
