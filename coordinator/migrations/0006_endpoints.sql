-- Endpoint configuration per workflow, and async-push deliveries.
--
-- `endpoint` is JSON: {"mode", "sync_timeout_ms", "async_timeout_ms",
-- "push_url"}; NULL means the defaults (both modes, 180 s, 180 s, no push).
-- The draft's lives on `workflows`; deploy copies it, with the push access
-- token, onto the version, which keeps it ("takes effect on deploy").
-- `push_token` and `push_signing_secret` are ciphertext, sealed like secure
-- environment variables ("v1.<key id>.<nonce>.<ciphertext>"). The signing
-- secret is the workflow's, not a version's: rotating it applies at once.
ALTER TABLE workflows ADD COLUMN endpoint TEXT;
ALTER TABLE workflows ADD COLUMN push_token TEXT;
ALTER TABLE workflows ADD COLUMN push_signing_secret TEXT;
ALTER TABLE workflow_versions ADD COLUMN endpoint TEXT;
ALTER TABLE workflow_versions ADD COLUMN push_token TEXT;

-- One row per async run of a version with push configured, written in the
-- same transaction as the run's first record, so a run that ends is never
-- without its delivery. `status`: pending (the run has not ended, or it is
-- being delivered or retried), delivered, failed. Pending rows whose run has
-- ended are picked up again after a restart.
CREATE TABLE push_deliveries (
    run_id              TEXT PRIMARY KEY,
    delivery_id         TEXT NOT NULL,
    workflow_id         TEXT NOT NULL,
    version             INTEGER NOT NULL,
    status              TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    last_status         INTEGER,
    last_error          TEXT,
    created_at_ms       INTEGER NOT NULL,
    first_attempt_at_ms INTEGER,
    last_attempt_at_ms  INTEGER,
    delivered_at_ms     INTEGER
);
CREATE INDEX push_deliveries_pending ON push_deliveries (run_id) WHERE status = 'pending';
