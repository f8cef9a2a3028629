-- Every session cookie carries the version current at sign-in; signing out bumps it, so
-- every earlier cookie of that admin stops working on every instance.
ALTER TABLE admin_users ADD COLUMN session_version BIGINT NOT NULL DEFAULT 0;
