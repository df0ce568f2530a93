//! Wiring: configuration → pool → migrations → HTTP server.

use std::sync::Arc;

use actix_web::{App, HttpServer, web};

use crate::clock::{Clock, SystemClock};
use crate::config::{Cli, Command, MigrateArgs, ServeArgs};
use crate::db::{self, DbUrl};
use crate::error::Error;
use crate::routes::{self, AppState};

/// Runs the command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Migrate(args) => migrate(args).await,
    }
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
pub async fn prepare(args: &ServeArgs, clock: Arc<dyn Clock>) -> anyhow::Result<AppState> {
    let config = args.node.validate()?;
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
    Ok(AppState {
        pool,
        identity: config.identity,
        clock,
    })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let state = prepare(&args, Arc::new(SystemClock)).await?;
    eprintln!(
        "juki-node: {} ({}) listening on {}",
        state.identity.role.as_str(),
        state.identity.sender_id(),
        args.listen
    );
    let data = web::Data::new(state);
    HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .configure(routes::configure)
    })
    .bind(args.listen)?
    .run()
    .await?;
    Ok(())
}
