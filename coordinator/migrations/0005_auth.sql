-- Who may do what: users, their tokens and workflows' API keys, sharing, and
-- the audit log.

-- People (and service accounts) that call the management API. The first
-- admin comes from configuration at start (`admin_token`).
CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    admin           INTEGER NOT NULL DEFAULT 0,
    created_at_ms   INTEGER NOT NULL,
    created_by      TEXT
);

-- Bearer secrets: a user's tokens (`user_id` set) and a workflow's API keys
-- (`workflow_id` set). Only a SHA-256 of the secret is kept: secrets are 256
-- random bits, so a fast hash is enough, and a lookup is one index probe.
CREATE TABLE credentials (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,          -- 'user_token' | 'api_key'
    user_id         TEXT,
    workflow_id     TEXT,
    name            TEXT NOT NULL,
    prefix          TEXT NOT NULL,          -- the first characters, to recognise it
    secret_hash     TEXT NOT NULL UNIQUE,
    created_at_ms   INTEGER NOT NULL,
    created_by      TEXT,
    last_used_ms    INTEGER,
    revoked_at_ms   INTEGER
);
CREATE INDEX credentials_by_workflow ON credentials (workflow_id, id);
CREATE INDEX credentials_by_user ON credentials (user_id, id);

-- A workflow shared with a user as owner, editor or viewer. Admins see every
-- workflow without a row here.
CREATE TABLE workflow_shares (
    workflow_id     TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    role            TEXT NOT NULL,          -- 'owner' | 'editor' | 'viewer'
    granted_at_ms   INTEGER NOT NULL,
    granted_by      TEXT,
    PRIMARY KEY (workflow_id, user_id)
);
CREATE INDEX workflow_shares_by_user ON workflow_shares (user_id, workflow_id);

-- Append-only: user actions and system events. Never a secret or a value.
CREATE TABLE audit_log (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms           INTEGER NOT NULL,
    category        TEXT NOT NULL,
    event           TEXT NOT NULL,
    user_id         TEXT,
    user_name       TEXT,
    workflow_id     TEXT,
    description     TEXT NOT NULL
);
CREATE INDEX audit_log_by_time ON audit_log (at_ms);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
