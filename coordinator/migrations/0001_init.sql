-- Workflows: the editable draft lives on the row; deploys are immutable versions.
CREATE TABLE workflows (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    description     TEXT NOT NULL DEFAULT '',
    definition      TEXT NOT NULL,
    latest_version  INTEGER NOT NULL DEFAULT 0,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);

CREATE TABLE workflow_versions (
    workflow_id     TEXT NOT NULL,
    version         INTEGER NOT NULL,
    definition      TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (workflow_id, version)
);

-- Runs: one row each, rewritten as the run moves; ids are UUIDv7, so they sort by time.
CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    workflow_id     TEXT NOT NULL,
    version         INTEGER NOT NULL,
    status          TEXT NOT NULL,
    trigger         TEXT NOT NULL,
    input           TEXT NOT NULL,
    output          TEXT,
    error           TEXT,
    created_at_ms   INTEGER NOT NULL,
    started_at_ms   INTEGER,
    ended_at_ms     INTEGER,
    deadline_ms     INTEGER NOT NULL,
    attempts        TEXT NOT NULL DEFAULT '[]',
    nodes           TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX runs_by_workflow ON runs (workflow_id, id);
CREATE INDEX runs_unfinished ON runs (status) WHERE status IN ('queued', 'running', 'waiting');
