//! One integration-test binary (each extra `tests/*.rs` is another slow link).
//! Every test starts the real app against the real PostgreSQL and Redis.

mod admin;
mod cli;
mod cluster;
mod consistency;
mod dashboard;
mod e2e;
mod fault_injection;
mod helpers;
mod https;
mod invalidation;
mod lease;
mod metrics;
mod page_cache;
mod pages;
mod photos;
mod precise;
mod proxy;
mod purge;
mod query_cache;
mod replica;
mod replica_reads;
mod sign_in;
mod soak;
