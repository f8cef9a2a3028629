-- Sign-in attempt counters, one row per scope (a client address, or an address and a
-- user name) and fixed window; see src/auth/throttle.rs. In PostgreSQL rather than
-- Redis so that every instance counts in one place, also while Redis is down.
CREATE TABLE sign_in_attempts (
    -- SHA-256 of the scope: neither the address nor the user name is stored.
    scope_key BYTEA PRIMARY KEY CHECK (octet_length(scope_key) = 32),
    -- Attempts since window_start, refused ones included.
    count BIGINT NOT NULL CHECK (count > 0),
    window_start TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Serves the pruning of expired windows (DELETE … WHERE window_start <= …).
CREATE INDEX sign_in_attempts_window_start ON sign_in_attempts (window_start);
