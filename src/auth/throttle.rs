//! Sign-in throttling: within a `WINDOW` of 15 minutes, at most `MAX_PER_NAME` (5)
//! attempts per client network and user name, and at most `MAX_PER_NETWORK` (20) per
//! client network across all names, are evaluated; the rest get 429 until the window
//! ends. A client network is an IPv4 address, or the /64 of an IPv6 address (one
//! subscriber's allocation: counting per IPv6 address would give anyone with a /64 an
//! endless supply of fresh limits); IPv4-mapped IPv6 addresses count as IPv4.
//!
//! Why 20 per network: the per-name limit alone lets one address make every guess it
//! likes with a fresh user name, each costing a slow password hash. 20 leaves room for
//! four people behind one office NAT to each use up their 5 tries (successful sign-ins
//! count too) while holding one address to 80 password hashes an hour; the hashes of
//! many addresses together are bounded by `password::PasswordChecks`.
//!
//! Both scopes are counted atomically *before* the password is checked, in one
//! statement, so simultaneous attempts cannot slip past the limit. The counters live in
//! PostgreSQL (`models::sign_in_attempt`): every instance counts in the same rows, and
//! sign-in needs PostgreSQL anyway to find the admin, so the limit holds while Redis is
//! down; with PostgreSQL down the attempt is refused before any hashing. A counter's key
//! is a SHA-256 digest of its scope: the table holds neither addresses nor user names in
//! clear. Expired counters are deleted at most once a minute per instance, so the table
//! holds about one window's attempts.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use diesel::PgConnection;
use diesel::QueryResult;
use sha2::{Digest, Sha256};

use crate::models::sign_in_attempt::{ScopeKey, SignInAttempt};

pub const MAX_PER_NAME: i64 = 5;
pub const MAX_PER_NETWORK: i64 = 20;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// How often one instance deletes expired counters.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The network a client's attempts are counted in (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientNetwork(IpAddr);

impl ClientNetwork {
    pub fn of(client: IpAddr) -> Self {
        match client.to_canonical() {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = v6.to_bits() & (u128::MAX << 64);
                Self(IpAddr::V6(Ipv6Addr::from_bits(prefix)))
            }
        }
    }
}

impl fmt::Display for ClientNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

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
    /// Counts one attempt by `client` for `username` (any case) in both scopes: `Ok`
    /// when it may be evaluated, `Refused` when either limit is reached. Runs on a
    /// pooled connection (inside `db::run`); deletes expired counters now and then.
    pub fn reserve(
        &self,
        conn: &mut PgConnection,
        client: IpAddr,
        username: &str,
    ) -> QueryResult<Result<(), Refused>> {
        let network = ClientNetwork::of(client);
        let per_name = name_scope(network, username);
        let per_network = network_scope(network);
        // Always in this order (see `SignInAttempt::reserve`).
        let counted = SignInAttempt::reserve(conn, &[per_name, per_network], WINDOW)?;
        let mut refused_for_ms = None;
        for scope in &counted {
            let limit = if scope.scope_key == per_name {
                MAX_PER_NAME
            } else {
                MAX_PER_NETWORK
            };
            if scope.count > limit {
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

/// The per-name scope: this network and this user name, lower-cased.
fn name_scope(network: ClientNetwork, username: &str) -> ScopeKey {
    let mut digest = Sha256::new();
    digest.update(b"sign-in name\0");
    digest.update(network.to_string().as_bytes());
    digest.update(b"\0");
    digest.update(username.to_lowercase().as_bytes());
    digest.finalize().into()
}

/// The per-network scope, across all user names.
fn network_scope(network: ClientNetwork) -> ScopeKey {
    let mut digest = Sha256::new();
    digest.update(b"sign-in network\0");
    digest.update(network.to_string().as_bytes());
    digest.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(ip: &str) -> String {
        ClientNetwork::of(ip.parse().unwrap()).to_string()
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_ipv4_per_address() {
        assert_eq!(network("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            network("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            "2001:db8:1:2::/64"
        );
        assert_ne!(network("2001:db8:1:3::1"), network("2001:db8:1:2::1"));
        assert_eq!(network("203.0.113.9"), "203.0.113.9");
        assert_ne!(network("203.0.113.9"), network("203.0.113.10"));
        assert_eq!(network("::ffff:203.0.113.9"), "203.0.113.9", "IPv4-mapped");
    }

    #[test]
    fn scope_keys_ignore_case_and_hold_neither_address_nor_name() {
        let net = ClientNetwork::of("203.0.113.9".parse().unwrap());
        let other = ClientNetwork::of("203.0.113.10".parse().unwrap());
        assert_eq!(name_scope(net, "Bob"), name_scope(net, "bOB"));
        assert_ne!(name_scope(net, "bob"), name_scope(other, "bob"));
        assert_ne!(name_scope(net, "bob"), name_scope(net, "alice"));
        assert_ne!(network_scope(net), network_scope(other));
        assert_ne!(network_scope(net), name_scope(net, ""));
        let long = name_scope(net, &"x".repeat(60_000));
        assert_eq!(long.len(), 32);
    }
}
