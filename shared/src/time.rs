//! Wall-clock helpers and the timeout levels.
//!
//! Deadlines cross the wire as Unix milliseconds (the coordinator fixes the
//! workflow deadline when it accepts a run, so a re-placed run keeps it); inside
//! a process they become monotonic instants.

use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The monotonic instant matching a Unix-millisecond deadline (now if it is past).
pub fn instant_from_unix_ms(deadline_ms: u64) -> Instant {
    let now = now_ms();
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now))
}

/// Which level's timeout fired. Precedence: workflow > node > model — a model
/// call never outlives its node, a node never outlives its workflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TimeoutLevel {
    Workflow,
    Node,
    Model,
}

impl TimeoutLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            TimeoutLevel::Workflow => "workflow",
            TimeoutLevel::Node => "node",
            TimeoutLevel::Model => "model",
        }
    }
}

/// An absolute deadline and the level it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline {
    pub at: Instant,
    pub level: TimeoutLevel,
}

impl Deadline {
    pub fn new(at: Instant, level: TimeoutLevel) -> Self {
        Deadline { at, level }
    }

    /// The deadline of a child level that starts now with `timeout`, bounded by
    /// this one: the earliest of the two wins, and keeps its own level. On a
    /// tie the outer level is named, since it is the one the user set wider.
    pub fn child(&self, timeout: Option<Duration>, level: TimeoutLevel) -> Deadline {
        match timeout {
            Some(t) => {
                let own = Instant::now() + t;
                if own < self.at {
                    Deadline { at: own, level }
                } else {
                    *self
                }
            }
            None => *self,
        }
    }

    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_takes_the_earliest_deadline_and_its_level() {
        let wf = Deadline::new(
            Instant::now() + Duration::from_secs(10),
            TimeoutLevel::Workflow,
        );
        let node = wf.child(Some(Duration::from_secs(1)), TimeoutLevel::Node);
        assert_eq!(node.level, TimeoutLevel::Node);
        // A longer node timeout is capped by the workflow, which keeps its name.
        let long = wf.child(Some(Duration::from_secs(100)), TimeoutLevel::Node);
        assert_eq!(long, wf);
        // A model timeout longer than its node is capped by the node.
        let model = node.child(Some(Duration::from_secs(5)), TimeoutLevel::Model);
        assert_eq!(model, node);
        let short_model = node.child(Some(Duration::from_millis(10)), TimeoutLevel::Model);
        assert_eq!(short_model.level, TimeoutLevel::Model);
        assert!(short_model.at <= node.at);
        assert_eq!(node.child(None, TimeoutLevel::Model), node);
    }
}
