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
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => migrate(args).await,
        Command::Batch(args) => run_batch(args.job).await,
        Command::Restore(args) => restore(args).await,
    }
}

async fn run_batch(job: BatchJob) -> anyhow::Result<()> {
    let out = match job {
        BatchJob::Statistics { node, date } => {
            let url = node.database()?;
            let date = date.unwrap_or_else(|| SystemClock.today());
            let stats = web::block(move || -> Result<_, Error> {
                let mut conn = url
                    .connect()
                    .map_err(|e| Error::Batch(format!("connect: {e}")))?;
                db::run_migrations(&mut conn)?;
                batch::statistics(&mut conn, date)
            })
            .await??;
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
            let (manifest, path) =
                web::block(move || batch::backup(&url, &output, SystemClock.now(), date)).await??;
            eprintln!("juki-node: backup manifest {}", path.display());
            serde_json::to_string_pretty(&manifest)?
        }
    };
    println!("{out}");
    Ok(())
}

async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let target = DbUrl::parse(&args.database_url)?;
    let manifest =
        web::block(move || batch::restore(&args.manifest, &target, args.force)).await??;
    eprintln!(
        "juki-node: restored {} (sha256 {} verified)",
        manifest.file, manifest.sha256
    );
    println!("{}", serde_json::to_string_pretty(&manifest)?);
    Ok(())
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<()> {
    let url = DbUrl::parse(&args.database_url)?;
    let versions = web::block(move || -> Result<Vec<String>, Error> {
        let mut conn = url
            .connect()
            .map_err(|e| Error::Migration(format!("connect: {e}")))?;
        if args.revert_all {
            db::revert_all_migrations(&mut conn)
        } else {
            db::run_migrations(&mut conn)
        }
    })
    .await??;
    eprintln!("juki-node: migrations done: {versions:?}");
    Ok(())
}

/// Builds the handler state and applies pending migrations.
pub async fn prepare(
    args: &ServeArgs,
    config: &crate::config::NodeConfig,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<AppState> {
    let config = config.clone();
    let pool = db::pool(&config.database, args.db_pool_size.max(1));
    let migrate_pool = pool.clone();
    let applied = web::block(move || -> Result<Vec<String>, Error> {
        let mut conn = migrate_pool.get()?;
        db::run_migrations(&mut conn)
    })
    .await??;
    if !applied.is_empty() {
        eprintln!("juki-node: applied migrations {applied:?}");
    }
    let settings = RelaySettings {
        batch: i64::from(args.relay_batch.max(1)),
        backoff_max: Duration::from_millis(args.relay_backoff_max_ms.max(100)),
        final_timeout: Duration::from_secs(args.final_request_timeout_secs),
        ..RelaySettings::default()
    };
    Ok(AppState {
        pool,
        identity: config.identity,
        clock,
        relay: Arc::new(RelayControl::new(
            config.upstream,
            config.calendar,
            settings,
        )),
        metrics: Metrics::new(),
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.node.validate()?;
    let listen = args.listen(&config);
    let state = prepare(&args, &config, Arc::new(SystemClock)).await?;
    eprintln!(
        "juki-node: {} ({}) listening on {}, upstream {}",
        state.identity.role.as_str(),
        state.identity.sender_id(),
        listen,
        state.relay.upstream.as_deref().unwrap_or("none"),
    );
    actix_web::rt::spawn(relay::run(state.clone()));
    let data = web::Data::new(state);
    HttpServer::new(move || {
        let metrics = data.metrics.clone();
        App::new()
            .app_data(data.clone())
            .wrap_fn(move |req, srv| {
                let metrics = metrics.clone();
                let method = req.method().to_string();
                let route = req
                    .match_pattern()
                    .unwrap_or_else(|| "unmatched".to_owned());
                let response = srv.call(req);
                async move {
                    let response = response.await?;
                    metrics.request(&method, &route, response.status().as_u16());
                    Ok(response)
                }
            })
            .configure(routes::configure)
    })
    .bind(listen)?
    .run()
    .await?;
    Ok(())
}
