//! Supervision, declared per actor kind.
//!
//! | actor | on a retryable error | on a panic | on a timeout | escalates to |
//! | --- | --- | --- | --- | --- |
//! | node | new attempt after exponential backoff with jitter, up to the node's `retry.max_attempts`, never past its deadline | caught; the node fails with `node_panicked` and the actor stops (actix does not restart a panicked actor) | the node fails `timed_out` naming the level | its run |
//! | run | — (a failed node fails the run) | caught by its guard: the run fails and its result is still sent | the run ends `timed_out` (`workflow`) and stops its nodes | the coordinator (result over NATS) |
//!
//! An actor that stops without answering — for whatever reason — answers
//! from its drop guard, so whoever sent it work sees a failure, never silence.
//! Each retry counts in `weft_actor_restarts_total{actor="node"}` and
//! `weft_node_retries_total{node_kind}`.

use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;
use weft_shared::model::RetryPolicy;

/// What a node actor does with failures.
#[derive(Clone, Debug)]
pub struct NodePolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl NodePolicy {
    pub fn from_retry(r: &RetryPolicy) -> NodePolicy {
        NodePolicy {
            max_attempts: r.max_attempts.max(1),
            initial_backoff: Duration::from_millis(r.initial_backoff_ms),
            max_backoff: Duration::from_millis(r.max_backoff_ms.max(r.initial_backoff_ms)),
        }
    }

    /// Delays between attempts: exponential, with jitter, finite.
    pub fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.initial_backoff)
            .with_max_delay(self.max_backoff)
            .with_jitter()
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_finite_and_bounded() {
        let p = NodePolicy::from_retry(&RetryPolicy {
            max_attempts: 4,
            initial_backoff_ms: 10,
            max_backoff_ms: 40,
        });
        let delays: Vec<Duration> = p.backoff().collect();
        assert_eq!(delays.len(), 3);
        // Jitter adds up to one delay on top.
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(80)),
            "{delays:?}"
        );
        let none = NodePolicy::from_retry(&RetryPolicy::default());
        assert_eq!(none.backoff().count(), 0);
    }
}
