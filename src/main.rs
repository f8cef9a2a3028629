//! Entry point: parse the command line, set up logging, dispatch.

use anyhow::Context;
use clap::{CommandFactory, Parser};
use property_listings::cache::metrics::get_redis_cache_metrics;
use property_listings::cli::{CacheAction, Cli, Command};
use property_listings::config::Settings;
use property_listings::startup::{Application, build_state};
use property_listings::{db, seed};

fn main() -> std::process::ExitCode {
    let _ = dotenvy::dotenv();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let runtime = actix_web::rt::System::new();
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--help`/`--version` print and succeed; any bad argument prints the error and the
/// usage line, and exits with status 2.
fn usage_error(e: clap::Error) -> std::process::ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return std::process::ExitCode::SUCCESS;
    }
    let message = e.render().to_string();
    eprint!("{message}");
    if !message.contains("Usage:") {
        eprintln!("\n{}", Cli::command().render_usage());
    }
    std::process::ExitCode::from(2)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(settings).await?;
            log::info!("listening on port {}", app.port());
            app.run_until_stopped().await?;
        }
        Command::Migrate => {
            db::prepare_database(&settings.database_url)?;
            println!("migrations applied");
        }
        Command::Seed { count } => {
            let state = build_state(settings)?;
            let mut written = 0usize;
            for chunk in seed::demo_listings(count as usize).chunks(1000) {
                written += state.properties.insert_many(chunk.to_vec()).await?.len();
            }
            if state.cache.invalidation_pending() {
                eprintln!(
                    "warning: redis was unreachable; caches will be invalidated by the next instance that reaches it"
                );
            }
            println!("seeded {written} listings");
        }
        Command::CreateAdmin { username } => {
            anyhow::bail!("create-admin {username}: admin accounts are not available yet");
        }
        Command::Cache { action } => {
            let state = build_state(settings)?;
            match action {
                CacheAction::Metrics => {
                    let metrics = get_redis_cache_metrics(&state.cache)
                        .await
                        .map_err(|(e, _)| anyhow::anyhow!(e))
                        .context("reading cache metrics")?;
                    println!("{}", serde_json::to_string_pretty(&metrics)?);
                }
                CacheAction::Clear => {
                    let deleted = state.cache.clear().await.context("clearing the cache")?;
                    println!(
                        "deleted {deleted} keys under {}:",
                        state.cache.keys().prefix()
                    );
                }
            }
        }
    }
    Ok(())
}
