-- Idempotent submission: a run request's Idempotency-Key maps to the run it
-- started, for the retention window (config idempotency_retention_ms).
CREATE TABLE idempotency_keys (
    workflow_id     TEXT NOT NULL,
    key             TEXT NOT NULL,
    run_id          TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, key)
);
CREATE INDEX idempotency_by_age ON idempotency_keys (created_at_ms);
