-- Human nodes: a run paused at a `human` node is held by no worker; the
-- coordinator keeps what it needs to go on, on the run's row, until it ends.
--
-- `waiting`: the human nodes waiting, public (node id, rendered prompt, since,
-- deadline and its level), JSON array.
-- `resumes`: every answer given (node id, value, who, when), JSON array.
-- `checkpoint`: what a worker needs to continue the run (outputs of the
-- nodes done, nodes skipped, nodes waiting, answers not yet applied), JSON;
-- NULL unless the run paused, and cleared when it ends.
ALTER TABLE runs ADD COLUMN waiting TEXT NOT NULL DEFAULT '[]';
ALTER TABLE runs ADD COLUMN resumes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE runs ADD COLUMN checkpoint TEXT;
