//! The command line: `serve` (default), `migrate`, `seed`, `create-admin`, `cache`.

use clap::{Parser, Subcommand};

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
}
