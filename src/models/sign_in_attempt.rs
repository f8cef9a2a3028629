//! The `sign_in_attempts` table: one counter per sign-in scope and fixed window, kept in
//! PostgreSQL so that every instance counts in one place (the rules are in
//! `auth::throttle`). The database's clock decides the windows, so instances whose
//! clocks disagree still agree on them.

use std::time::Duration;

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bytea};

/// A scope's key: the SHA-256 digest of what it counts (see `auth::throttle`).
pub type ScopeKey = [u8; 32];

/// One scope's count after an attempt was reserved in it.
#[derive(Clone, Debug, PartialEq, Eq, QueryableByName)]
pub struct Reserved {
    #[diesel(sql_type = Bytea)]
    pub scope_key: Vec<u8>,
    /// This attempt's place in the scope's window (1 is the first).
    #[diesel(sql_type = BigInt)]
    pub count: i64,
    /// Milliseconds until the scope's window ends (at least 1).
    #[diesel(sql_type = BigInt)]
    pub remaining_ms: i64,
}

pub struct SignInAttempt;

impl SignInAttempt {
    /// Counts one attempt in each scope, in one statement: a scope whose window has
    /// ended starts a new one at 1. Concurrent calls queue on each row's lock, so every
    /// attempt gets its own count, on any number of instances. Keys are locked in the
    /// order given: callers pass them in one fixed order, so two calls cannot deadlock.
    pub fn reserve(
        conn: &mut PgConnection,
        keys: &[ScopeKey],
        window: Duration,
    ) -> QueryResult<Vec<Reserved>> {
        let keys: Vec<Vec<u8>> = keys.iter().map(|k| k.to_vec()).collect();
        diesel::sql_query(
            "INSERT INTO sign_in_attempts AS a (scope_key, count, window_start) \
             SELECT k, 1, now() FROM unnest($1) AS k \
             ON CONFLICT (scope_key) DO UPDATE SET \
                 count = CASE WHEN a.window_start <= now() - $2 * interval '1 millisecond' \
                              THEN 1 ELSE a.count + 1 END, \
                 window_start = CASE WHEN a.window_start <= now() - $2 * interval '1 millisecond' \
                                     THEN now() ELSE a.window_start END \
             RETURNING a.scope_key, a.count, \
                 GREATEST(1, CEIL(EXTRACT(EPOCH FROM \
                     a.window_start + $2 * interval '1 millisecond' - now()) * 1000))::bigint \
                 AS remaining_ms",
        )
        .bind::<Array<Bytea>, _>(keys)
        .bind::<BigInt, _>(millis(window))
        .load(conn)
    }

    /// Deletes the counters whose window has ended (they count nothing any more); the
    /// number deleted.
    pub fn prune_expired(conn: &mut PgConnection, window: Duration) -> QueryResult<usize> {
        diesel::sql_query(
            "DELETE FROM sign_in_attempts \
             WHERE window_start <= now() - $1 * interval '1 millisecond'",
        )
        .bind::<BigInt, _>(millis(window))
        .execute(conn)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
