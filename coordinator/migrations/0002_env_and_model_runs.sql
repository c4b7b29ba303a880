-- Environment variables per workflow. A secure variable's value is
-- ciphertext (AES-256-GCM, "v1.<key id>.<nonce>.<ciphertext>"); the key is
-- in the coordinator's configuration, never in this database.
CREATE TABLE env_vars (
    workflow_id     TEXT NOT NULL,
    name            TEXT NOT NULL,
    value           TEXT NOT NULL,
    secure          INTEGER NOT NULL,
    notes           TEXT NOT NULL DEFAULT '',
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, name)
);

-- One row per call to a model (the monitor's "model runs").
CREATE TABLE model_runs (
    request_id        TEXT PRIMARY KEY,
    run_id            TEXT NOT NULL,
    workflow_id       TEXT NOT NULL,
    node_id           TEXT NOT NULL,
    model             TEXT NOT NULL,
    connection        TEXT NOT NULL,
    status            TEXT NOT NULL,
    started_at_ms     INTEGER NOT NULL,
    ended_at_ms       INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    error             TEXT
);
CREATE INDEX model_runs_by_run ON model_runs (run_id);
CREATE INDEX model_runs_by_workflow ON model_runs (workflow_id, started_at_ms);

ALTER TABLE runs ADD COLUMN usage TEXT NOT NULL DEFAULT '{"prompt_tokens":0,"completion_tokens":0,"total_tokens":0}';
