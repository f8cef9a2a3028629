//! Property Listings: a real-estate listings site whose pages are served from a
//! multi-level Redis cache that never shows stale data.

pub mod access_log;
pub mod auth;
pub mod body_timeout;
pub mod cache;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod https;
pub mod models;
pub mod photos;
pub mod routes;
pub mod schema;
pub mod seed;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod timing;
