//! The site's cache rules, in one folder. The cache library (`crate::cache`) knows
//! nothing of routes or listings; what it keeps, and for how long it stays true, is
//! declared here:
//! - `rules.rs`: the dependency tokens, what each cached entry depends on, what each
//!   write replaces (side by side: the two halves of one rule), and which requests are
//!   cached pages, by their canonical URL;
//! - `hook.rs`: the model hook that replaces a write's tokens, and the admin's purges;
//! - `middleware.rs`: the page cache's two middlewares, which decide per request.
//!
//! The list query itself (its parameters and canonical form) is `routes::list_query`.

pub mod hook;
pub mod middleware;
pub mod rules;
