//! Sign-in throttling: at most `MAX_PER_NAME` (5) attempts per client address and user
//! name are evaluated within a `WINDOW` of 15 minutes; the rest get 429 until the window
//! ends.
//!
//! Each attempt is counted atomically *before* the password is checked, so simultaneous
//! attempts cannot slip past the limit. The counters live in PostgreSQL
//! (`models::sign_in_attempt`): every instance counts in the same rows, and sign-in
//! needs PostgreSQL anyway to find the admin, so the limit holds while Redis is down;
//! with PostgreSQL down the attempt is refused before any hashing. A counter's key is a
//! SHA-256 digest of its scope: the table holds neither addresses nor user names in
//! clear. Expired counters are deleted at most once a minute per instance, so the table
//! holds about one window's attempts.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::PgConnection;
use diesel::QueryResult;
use sha2::{Digest, Sha256};

use crate::models::sign_in_attempt::{ScopeKey, SignInAttempt};

pub const MAX_PER_NAME: i64 = 5;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// How often one instance deletes expired counters.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The attempt may not be evaluated; the client may try again in `retry_after_secs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    pub retry_after_secs: u64,
}

#[derive(Default)]
pub struct LoginThrottle {
    last_prune: Mutex<Option<Instant>>,
}

impl LoginThrottle {
    /// Counts one attempt by `client` for `username` (any case): `Ok` when it may be
    /// evaluated, `Refused` when the limit is reached. Runs on a pooled connection
    /// (inside `db::run`); deletes expired counters now and then.
    pub fn reserve(
        &self,
        conn: &mut PgConnection,
        client: IpAddr,
        username: &str,
    ) -> QueryResult<Result<(), Refused>> {
        let per_name = name_scope(client.to_canonical(), username);
        let counted = SignInAttempt::reserve(conn, &[per_name], WINDOW)?;
        let mut refused_for_ms = None;
        for scope in &counted {
            if scope.count > MAX_PER_NAME {
                refused_for_ms = refused_for_ms.max(Some(scope.remaining_ms));
            }
        }
        self.prune_if_due(conn);
        Ok(match refused_for_ms {
            None => Ok(()),
            Some(ms) => Err(Refused {
                retry_after_secs: u64::try_from(ms).unwrap_or(1).div_ceil(1000).max(1),
            }),
        })
    }
    fn prune_if_due(&self, conn: &mut PgConnection) {
        {
            let mut last = self.last_prune.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < PRUNE_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        match SignInAttempt::prune_expired(conn, WINDOW) {
            Ok(0) => {}
            Ok(n) => log::debug!("deleted {n} expired sign-in counters"),
            // The attempt is counted; the next prune will catch up.
            Err(e) => log::warn!("deleting expired sign-in counters: {e}"),
        }
    }
}

/// The per-name scope: this address and this user name, lower-cased.
fn name_scope(client: IpAddr, username: &str) -> ScopeKey {
    let mut digest = Sha256::new();
    digest.update(b"sign-in name\0");
    digest.update(client.to_string().as_bytes());
    digest.update(b"\0");
    digest.update(username.to_lowercase().as_bytes());
    digest.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_keys_ignore_case_and_hold_neither_address_nor_name() {
        let net: IpAddr = "203.0.113.9".parse().unwrap();
        let other: IpAddr = "203.0.113.10".parse().unwrap();
        assert_eq!(name_scope(net, "Bob"), name_scope(net, "bOB"));
        assert_ne!(name_scope(net, "bob"), name_scope(other, "bob"));
        assert_ne!(name_scope(net, "bob"), name_scope(net, "alice"));
        let long = name_scope(net, &"x".repeat(60_000));
        assert_eq!(long.len(), 32);
    }
}
