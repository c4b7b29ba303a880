//! Deadlines on the worker. One absolute deadline per level, the earliest
//! passed down: the workflow's comes from the coordinator (fixed at
//! acceptance); a node's is the earlier of the workflow's and its own
//! timeout from when it starts; a model call's (AI nodes) the earlier of the
//! node's and the model timeout. Durations are never added up.

use std::time::Duration;
pub use weft_shared::time::{Deadline, TimeoutLevel};

/// The workflow deadline of a run, from the Unix-ms deadline on the wire.
pub fn workflow_deadline(deadline_ms: u64) -> Deadline {
    Deadline::new(
        weft_shared::time::instant_from_unix_ms(deadline_ms),
        TimeoutLevel::Workflow,
    )
}

/// A node's deadline, starting now.
pub fn node_deadline(workflow: &Deadline, node_timeout_ms: Option<u64>) -> Deadline {
    workflow.child(
        node_timeout_ms.map(Duration::from_millis),
        TimeoutLevel::Node,
    )
}

/// Records how late a timeout was handled, against its deadline.
pub fn record_fired(deadline: &Deadline) {
    let late = std::time::Instant::now().saturating_duration_since(deadline.at);
    metrics::histogram!(crate::metrics::TIMEOUT_LATENESS).record(late.as_secs_f64());
    metrics::counter!(crate::metrics::TIMEOUTS, "level" => deadline.level.as_str()).increment(1);
}
