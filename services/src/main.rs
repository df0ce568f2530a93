use clap::Parser;

// mimalloc: the request path allocates and frees small buffers on several threads (actix
// workers, the provision desk); glibc's malloc spent ~6% of the provision bench's CPU there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    juki_node::cli::app::run(juki_node::cli::config::Cli::parse()).await
}
