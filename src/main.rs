//! Entry point: parse the command line, set up logging, dispatch.

use anyhow::Context;
use clap::{CommandFactory, Parser};
use property_listings::cache::admin::get_redis_cache_metrics;
use property_listings::cli::{CacheAction, Cli, Command};
use property_listings::config::Settings;
use std::sync::Arc;

use property_listings::auth::password;
use property_listings::cache::Cache;
use property_listings::cache::metrics::Metrics;
use property_listings::routes::cacheable::hook::CacheInvalidation;
use property_listings::startup::{Application, build_state, create_admin};
use property_listings::{db, seed};

fn main() -> std::process::ExitCode {
    let _ = dotenvy::dotenv();
    limit_malloc_arenas();
    // The cluster client logs every reconnect attempt of every connection (a dozen lines
    // a second per worker while a node is down); the cache logs its own failures once.
    // `RUST_LOG=redis::cluster_handling=warn` shows them again.
    env_logger::Builder::new()
        .filter_module("redis::cluster_handling", log::LevelFilter::Off)
        .parse_env(env_logger::Env::default().default_filter_or("info"))
        .init();
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

/// glibc gives each thread that allocates its own arena (up to 8 per core), and each
/// keeps its freed memory: with actix's workers and blocking threads that costs tens of
/// MB of resident memory for nothing on a 2-core box. Two arenas are plenty for a
/// server whose hot path is a few allocations per request. `MALLOC_ARENA_MAX` in the
/// environment still wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in main, before any other thread exists; mallopt
        // only adjusts allocator tuning and reports failure by its return value.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// `GET /api/cache/metrics` from a server listening on `bind` (plain HTTP/1.0, short
/// timeouts); `None` when nothing usable answers.
fn server_metrics(bind: &str) -> Option<serde_json::Value> {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::time::Duration;
    let mut addr: SocketAddr = bind.parse().ok()?;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET /api/cache/metrics HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status_ok = head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200");
    let json: serde_json::Value = serde_json::from_str(body).ok()?;
    (status_ok && json.get("keyspace_hits").is_some()).then_some(json)
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
            let stopped = app.run_until_stopped().await;
            property_listings::access_log::flush();
            stopped?;
        }
        Command::Migrate => {
            db::prepare_database(&settings.database_url)?;
            println!("migrations applied");
        }
        Command::Seed { count } => {
            let state = build_state(settings, false)?;
            let written = seed::seed(&state.properties, count as usize).await?;
            if state.cache.invalidation_pending() {
                eprintln!(
                    "warning: redis was unreachable; caches will be invalidated by the next instance that reaches it"
                );
            }
            println!("seeded {written} listings");
        }
        Command::CreateAdmin { username } => {
            let password = match settings.admin_password.clone() {
                Some(p) => p,
                None => rpassword::prompt_password(format!("Password for {username}: "))
                    .context("reading the password (set ADMIN_PASSWORD when not on a terminal)")?,
            };
            password::check_new_password(&password).map_err(anyhow::Error::msg)?;
            let state = build_state(settings, false)?;
            if create_admin(&state.db, &username, &password)? {
                println!("created admin {username:?}");
            } else {
                anyhow::bail!("an admin named {username:?} already exists");
            }
        }
        Command::Cache { action } => {
            // Only Redis is needed here: these work while PostgreSQL is down.
            let cache = Cache::new(
                property_listings::startup::cache_config(&settings, false),
                Arc::new(Metrics::new()),
                |_| {},
            )?;
            match action {
                CacheAction::Metrics => {
                    // The per-layer counters live in the serving process: ask it when
                    // it answers on BIND, else report Redis' numbers alone.
                    if let Some(mut json) = server_metrics(&settings.bind) {
                        // An anonymous caller gets no details: this command reaches
                        // Redis itself, so it adds the node list and the instances;
                        // the recent writes stay the server's.
                        if json["details"] == false
                            && let Ok(own) = get_redis_cache_metrics(&cache).await
                        {
                            json["redis_nodes"] = serde_json::to_value(own.redis_nodes)?;
                            if let Some(instances) = own.instances {
                                json["instances"] = serde_json::to_value(instances)?;
                            }
                            eprintln!(
                                "note: the server shows its recent writes to signed-in admins only (or with PUBLIC_DASHBOARD=1)"
                            );
                        }
                        println!("{}", serde_json::to_string_pretty(&json)?);
                        return Ok(());
                    }
                    eprintln!(
                        "note: no server answered on {}; the app counters below are this command's own (zero)",
                        settings.bind
                    );
                    let metrics = get_redis_cache_metrics(&cache)
                        .await
                        .map_err(|(e, _)| anyhow::anyhow!(e))
                        .context("reading cache metrics")?;
                    println!("{}", serde_json::to_string_pretty(&metrics)?);
                }
                CacheAction::Purge(target) => {
                    let pool = db::build_pool(&settings.database_url, 1, settings.db_timeout);
                    let purge = CacheInvalidation::new(cache.clone(), pool);
                    cache.skip_start_invalidation();
                    let dropped = match (target.listing, target.url) {
                        (Some(id), _) => match purge.purge_listing(id).await {
                            Ok(Some(tokens)) => format!(
                                "purged listing {id}: replaced tokens {}",
                                tokens.join(", ")
                            ),
                            Ok(None) => format!(
                                "no listing {id}: replaced token listing:{id} only (in case pages of it were cached)"
                            ),
                            Err(e) => anyhow::bail!("reading listing {id}: {e}"),
                        },
                        (None, Some(url)) => match purge.purge_url(&url).await {
                            Some((canonical, token)) => {
                                format!(
                                    "purged {canonical}: deleted its entry, replaced token {token}"
                                )
                            }
                            None => anyhow::bail!("{url} is not a cacheable page"),
                        },
                        (None, None) => anyhow::bail!("give --listing ID or --url PATH"),
                    };
                    if cache.invalidation_pending() {
                        anyhow::bail!(
                            "redis was unreachable: nothing was purged; try again when it answers"
                        );
                    }
                    println!("{dropped}");
                }
                CacheAction::Clear => {
                    let deleted = cache.clear().await.context("clearing the cache")?;
                    println!(
                        "cleared the cache layers under {}: ({deleted} keys)",
                        cache.keys().prefix()
                    );
                }
            }
        }
    }
    Ok(())
}
