use clap::Parser;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = juki_callcenter::cli::Cli::parse();
    actix_web::rt::System::new().block_on(juki_callcenter::cli::run(cli))
}
