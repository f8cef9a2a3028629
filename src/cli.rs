//! The command line: `serve` (default), `migrate`, `seed`, `create-admin`, `cache`
//! (`metrics`, `clear`, `purge`).

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "property-listings",
    version,
    about = "Property listings behind a multi-level Redis cache"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Migrate the database, then serve HTTP on BIND (the default command).
    Serve,
    /// Create the database if missing and apply pending migrations.
    Migrate,
    /// Insert realistic demo listings (through the same path as the admin forms).
    Seed {
        /// How many listings to add.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        count: u32,
    },
    /// Create an admin user (password from ADMIN_PASSWORD or a prompt).
    CreateAdmin {
        /// The admin's user name.
        username: String,
    },
    /// Inspect or empty this app's cache layers.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum CacheAction {
    /// Print the cache metrics as JSON.
    Metrics,
    /// Delete this app's keys (PREFIX:*) only — never FLUSHALL.
    Clear,
    /// Drop one listing's cached pages (what an edit of it drops) or one URL's page.
    Purge(PurgeTarget),
}

/// Exactly one of `--listing ID` and `--url PATH`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct PurgeTarget {
    /// A listing id: every cached page that shows it is dropped.
    #[arg(long, value_name = "ID", value_parser = clap::value_parser!(i64).range(1..))]
    pub listing: Option<i64>,
    /// A cacheable page's path and query (`/properties/?page=2`): that page is dropped.
    #[arg(long, value_name = "PATH", value_parser = cacheable_url)]
    pub url: Option<String>,
}

/// Accepts the path (and query) of a page the page cache stores.
fn cacheable_url(raw: &str) -> Result<String, String> {
    let (path, query) = raw.split_once('?').unwrap_or((raw, ""));
    match crate::routes::cacheable::rules::normalised_url(path, query) {
        Some(_) => Ok(raw.to_string()),
        None => Err("not a cacheable page (e.g. /properties/7/ or /properties/?page=2)".into()),
    }
}
