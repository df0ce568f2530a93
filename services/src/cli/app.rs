//! Wiring: configuration → pool → migrations → HTTP server.

use std::sync::Arc;

use std::time::Duration;

use actix_web::dev::Service as _;
use actix_web::{App, HttpServer, web};

use crate::cli::batch;
use crate::cli::config::{BatchJob, Cli, Command, MigrateArgs, RestoreArgs, ServeArgs};
use crate::domain::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::http::routes::{self, AppState};
use crate::metrics::Metrics;
use crate::relay::{self, RelayControl, RelaySettings};
use crate::store::db::{self, DbUrl};

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
    let writes: Arc<std::sync::Mutex<()>> = Arc::default();
    let state = AppState {
        provision_desk: crate::provision::desk::Desk::start(
            config.database.clone(),
            Arc::clone(&writes),
        ),
        pool,
        identity: config.identity,
        clock,
        relay: Arc::new(RelayControl::new(
            config.upstream,
            config.calendar,
            settings,
        )),
        metrics: Metrics::new(),
        writes,
        wide: Arc::new(crate::relay::mailbox::WideArea {
            name: config.name.clone(),
            extensions: config.extensions.clone(),
            ..crate::relay::mailbox::WideArea::default()
        }),
        mtls: config.tls.is_some(),
        allow: Arc::new(config.allow_list.clone()),
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
    });
    let server = match &config.tls {
        Some(files) => {
            crate::relay::client::set_tls(files.client_config()?);
            server
                .on_connect(remember_peer)
                .bind_rustls_0_23(listen, files.server_config()?)?
        }
        None => {
            tracing::warn!(
                "no TLS files: serving plain HTTP without authentication (local use only)"
            );
            server.bind(listen)?
        }
    };
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
        migrations_applied = applied.len(),
        migrations = ?applied,
        "juki-node serving"
    );
    actix_web::rt::spawn(crate::relay::mailbox::run_pull(state.clone()));
    actix_web::rt::spawn(relay::run(state));
    server.run().await?;
    tracing::info!("juki-node stopped");
    Ok(())
}

/// Keeps what the TLS handshake learnt about the client for the requests of the connection.
fn remember_peer(conn: &dyn std::any::Any, data: &mut actix_web::dev::Extensions) {
    type Tls = actix_tls::accept::rustls_0_23::TlsStream<actix_web::rt::net::TcpStream>;
    if let Some(tls) = conn.downcast_ref::<Tls>() {
        let (_, session) = tls.get_ref();
        data.insert(crate::http::tls::Peer::of(session.peer_certificates()));
    }
}

/// The application: routes behind authentication and the tree rules (authz.rs), plus per
/// request a metric and a debug log line.
pub fn app(
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
            let state = req.app_data::<web::Data<AppState>>().cloned();
            let checked = state
                .as_ref()
                .map_or(Ok(None), |s| routes::authenticate(s, &req, &route));
            // A refusal at the agency endpoint goes into the provision log before the answer.
            let mut log_refusal = None;
            let (response, refused) = match checked {
                Ok(caller) => {
                    if let Some(caller) = caller {
                        actix_web::HttpMessage::extensions_mut(&req).insert(caller);
                    }
                    (Some(srv.call(req)), None)
                }
                Err(e) => {
                    let status = actix_web::ResponseError::status_code(&e).as_u16();
                    let who = refused_identity(&req, state.as_ref().map(|s| s.get_ref()));
                    tracing::warn!(
                        method = %method,
                        route = %route,
                        caller = %who,
                        status,
                        error = e.tag(),
                        "request refused: {e}"
                    );
                    metrics.auth_refused(status, &route);
                    if route == "/v1/agency/queries" {
                        log_refusal = state.clone().map(|s| (s, who, e.tag()));
                    }
                    let response = actix_web::ResponseError::error_response(&e);
                    (None, Some(req.into_response(response)))
                }
            };
            async move {
                if let Some((state, who, detail)) = log_refusal {
                    let row = crate::provision::refusal_row(&who, detail, state.clock.now());
                    // Logged like any refusal; the answer is the refusal below.
                    let _logged = state
                        .provision_desk
                        .log(row, Ok(serde_json::Value::Null))
                        .await
                        .map_err(actix_web::Error::from)?;
                    state.metrics.provision("refused");
                }
                let response = match (response, refused) {
                    (Some(call), _) => call.await?,
                    (None, Some(refused)) => refused,
                    (None, None) => unreachable!("a request is either served or refused"),
                };
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

/// The identity a refused request came with, for the log line and the provision log.
fn refused_identity(req: &actix_web::dev::ServiceRequest, state: Option<&AppState>) -> String {
    let from_tls = state.is_some_and(|s| s.mtls);
    if from_tls {
        match req.conn_data::<crate::http::tls::Peer>() {
            Some(crate::http::tls::Peer::Known(c)) => c.name(),
            Some(crate::http::tls::Peer::Unknown(cn)) => format!("unknown CN {cn:?}"),
            _ => "anonymous".into(),
        }
    } else {
        req.headers()
            .get(routes::IDENTITY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map_or_else(|| "anonymous".into(), |v| v.chars().take(128).collect())
    }
}
