use clap::Parser;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    juki_node::app::run(juki_node::config::Cli::parse()).await
}
