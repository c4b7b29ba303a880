//! Every NATS subject Weft uses, built in one place.
//!
//! All subjects start with a configurable prefix (default `weft`), so several
//! clusters — or several tests — can share one NATS server.
//!
//! | subject | direction | message |
//! | --- | --- | --- |
//! | `<p>.workers.heartbeat` | worker → coordinators | [`crate::wire::Heartbeat`] |
//! | `<p>.workers.deregister` | worker → coordinators | [`crate::wire::Deregister`] |
//! | `<p>.worker.<id>.assign` | coordinator → one worker, taken by one of its arbiters (queue group `weft-worker-arbiters`, a NATS connection per arbiter) | [`crate::wire::Assign`] |
//! | `<p>.coordinator.<c>.assigned.<run>.<seq>` | worker → the coordinator process `c` that assigned (the assignment's reply subject; a run taken is answered only if it outlives [`crate::wire::ANSWER_TAKEN_WITHIN`]) | [`crate::wire::AssignReply`] |
//! | `<p>.worker.<id>.cancel` | coordinator → one worker | [`crate::wire::Cancel`] |
//! | `<p>.worker.<id>.resume` | coordinator → one worker (request) | [`crate::wire::Resume`] → [`crate::wire::ResumeReply`] |
//! | `<p>.runs.results` | worker → coordinators (queue group; reply subject `<p>.worker.<id>.acks.<lane>`) | [`crate::wire::RunResult`] |
//! | `<p>.worker.<id>.acks.<lane>` | coordinator → one NATS connection ("lane") of a worker: what one commit made durable of what it sent | [`crate::wire::ResultAcks`] |
//! | `<p>.worker.<id>.runs` | coordinator → one worker (request) | [`crate::wire::HeldRunsQuery`] → [`crate::wire::HeldRuns`] |
//! | `<p>.runs.progress` | worker → coordinators (queue group) | [`crate::wire::RunProgress`] |
//! | `<p>.runs.checkpoints` | worker → coordinators (queue group; reply subject as for results) | [`crate::wire::RunCheckpoint`] |

/// Queue group coordinators share for run results, so each result is handled once.
pub const RESULTS_QUEUE_GROUP: &str = "weft-coordinators";

#[derive(Clone, Debug)]
pub struct Subjects {
    prefix: String,
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects::new("weft")
    }
}

impl Subjects {
    pub fn new(prefix: &str) -> Self {
        Subjects {
            prefix: prefix.trim_end_matches('.').to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn heartbeat(&self) -> String {
        format!("{}.workers.heartbeat", self.prefix)
    }

    pub fn deregister(&self) -> String {
        format!("{}.workers.deregister", self.prefix)
    }

    pub fn assign(&self, worker_id: &str) -> String {
        format!("{}.worker.{}.assign", self.prefix, worker_id)
    }

    /// Where the coordinator process `coordinator` hears answers to its
    /// assignments (each reply subject is this plus `.<run id>.<seq>`).
    pub fn assign_replies(&self, coordinator: &str) -> String {
        format!("{}.coordinator.{}.assigned", self.prefix, coordinator)
    }

    pub fn cancel(&self, worker_id: &str) -> String {
        format!("{}.worker.{}.cancel", self.prefix, worker_id)
    }

    pub fn resume(&self, worker_id: &str) -> String {
        format!("{}.worker.{}.resume", self.prefix, worker_id)
    }

    /// Asks a worker which runs it holds (a restarted coordinator adopts them).
    pub fn held_runs(&self, worker_id: &str) -> String {
        format!("{}.worker.{}.runs", self.prefix, worker_id)
    }

    /// Where the coordinator acks results and checkpoints a worker sent on
    /// one of its NATS connections (`lane`: `main`, or the arbiter's number).
    pub fn acks(&self, worker_id: &str, lane: &str) -> String {
        format!("{}.worker.{}.acks.{}", self.prefix, worker_id, lane)
    }

    pub fn progress(&self) -> String {
        format!("{}.runs.progress", self.prefix)
    }

    pub fn results(&self) -> String {
        format!("{}.runs.results", self.prefix)
    }

    /// Runs paused at `human` nodes, handed back by workers.
    pub fn checkpoints(&self) -> String {
        format!("{}.runs.checkpoints", self.prefix)
    }
}

/// Whether a worker id is safe inside a subject (one token: no dots,
/// wildcards or whitespace).
pub fn valid_worker_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_carry_the_prefix() {
        let s = Subjects::new("t1.");
        assert_eq!(s.assign("w-1"), "t1.worker.w-1.assign");
        assert_eq!(s.results(), "t1.runs.results");
        assert!(valid_worker_id("w-1_a"));
        assert!(!valid_worker_id("w.1"));
        assert!(!valid_worker_id("w*"));
        assert!(!valid_worker_id(""));
    }
}
