-- The workflow lifecycle: which version is deployed (none when undeployed),
-- the active/inactive switch, and backups of drafts replaced by an import.
--
-- `latest_version` keeps meaning "the newest version ever published";
-- `deployed_version` is the version runs use, NULL when the workflow is not
-- deployed (never deployed, or undeployed). Deploy always publishes the draft
-- as a new version, so when set it equals `latest_version`.
ALTER TABLE workflows ADD COLUMN deployed_version INTEGER;
UPDATE workflows SET deployed_version = latest_version WHERE latest_version > 0;

-- An inactive workflow cannot be run or triggered, deployed or not.
ALTER TABLE workflows ADD COLUMN active INTEGER NOT NULL DEFAULT 1;

-- Drafts saved before an import replaced them (`?backup=true`).
CREATE TABLE draft_backups (
    id              TEXT PRIMARY KEY,
    workflow_id     TEXT NOT NULL,
    definition      TEXT NOT NULL,
    reason          TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL
);
CREATE INDEX draft_backups_by_workflow ON draft_backups (workflow_id, id);
