//! The node actor: one node execution, supervised by its run.
//!
//! It runs the node's attempts under its policy, bounded by its deadline,
//! catches a panic (the node fails `node_panicked`), reports to its run once,
//! and stops. If it stops without having reported, its drop guard reports
//! `node_lost`.

use super::supervisor::NodePolicy;
use crate::metrics as m;
use crate::nodes::{self, Attempt, NodeError, NodeOutput, Records};
use actix::prelude::*;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::time::Instant;
use weft_shared::error::ErrorCode;
use weft_shared::model::Fault;
use weft_shared::time::now_ms;

/// A node's report to its run.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NodeFinished {
    pub idx: usize,
    pub result: Result<NodeOutput, NodeError>,
    /// Model runs, guardrail findings and token usage, success or not.
    pub records: Records,
    pub attempts: u32,
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
}

/// Stop now (the run has ended).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Sends the node's one report, or `node_lost` if dropped unsent.
struct Reply {
    to: Option<Recipient<NodeFinished>>,
    idx: usize,
    started_at_ms: u64,
    records: std::sync::Arc<std::sync::Mutex<Records>>,
}

impl Reply {
    fn send(&mut self, result: Result<NodeOutput, NodeError>, attempts: u32) {
        if let Some(to) = self.to.take() {
            let records = self
                .records
                .lock()
                .map(|mut r| std::mem::take(&mut *r))
                .unwrap_or_default();
            to.do_send(NodeFinished {
                idx: self.idx,
                result,
                records,
                attempts,
                started_at_ms: self.started_at_ms,
                ended_at_ms: now_ms(),
            });
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        self.send(
            Err(NodeError::new(
                ErrorCode::NodeLost,
                "node actor stopped without reporting",
            )),
            0,
        );
    }
}

pub struct NodeActor {
    attempt: Option<Attempt>,
    /// Child of the run's span: run, node and worker ids on every log line.
    span: tracing::Span,
    policy: NodePolicy,
    workflow_id: String,
    reply: Reply,
}

impl NodeActor {
    pub fn new(
        attempt: Attempt,
        workflow_id: String,
        to: Recipient<NodeFinished>,
        span: tracing::Span,
    ) -> Self {
        let node = &attempt.plan.nodes[attempt.idx];
        let policy = NodePolicy::from_retry(&node.retry);
        let idx = attempt.idx;
        let records = attempt.records.clone();
        NodeActor {
            span,
            attempt: Some(attempt),
            policy,
            workflow_id,
            reply: Reply {
                to: Some(to),
                idx,
                started_at_ms: now_ms(),
                records,
            },
        }
    }
}

/// Runs the attempts: retry on retryable errors with backoff, all under the
/// deadline. Returns the outcome and the number of attempts made.
async fn supervise(a: &Attempt, policy: &NodePolicy) -> (Result<NodeOutput, NodeError>, u32) {
    let node = &a.plan.nodes[a.idx];
    let deadline = tokio::time::Instant::from_std(a.deadline.at);
    let mut delays = policy.backoff();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let once = async {
            if a.env.fault_injection {
                match node.fault {
                    Some(Fault::Panic) => panic!("injected fault: node `{}` panics", node.id),
                    Some(Fault::Hang) => futures::future::pending::<()>().await,
                    None => {}
                }
            }
            nodes::execute(a).await
        };
        let result = match tokio::time::timeout_at(deadline, once).await {
            Ok(r) => r,
            Err(_) => {
                crate::timeouts::record_fired(&a.deadline);
                Err(NodeError::timed_out(a.deadline.level))
            }
        };
        match result {
            Err(e) if e.retryable => match delays
                .next()
                .map(|d| d.max(e.retry_after.unwrap_or_default()))
            {
                // Retry only if the wait (the backoff, or the other side's
                // Retry-After when longer) ends before the deadline.
                Some(d) if tokio::time::Instant::now() + d < deadline => {
                    metrics::counter!(m::NODE_RETRIES, "node_kind" => node.spec.kind())
                        .increment(1);
                    metrics::counter!(m::ACTOR_RESTARTS, "actor" => "node").increment(1);
                    tracing::debug!(node_id = %node.id, attempt = attempts, error = %e.message, "node attempt failed; retrying");
                    tokio::time::sleep(d).await;
                }
                _ => return (Err(e), attempts),
            },
            other => return (other, attempts),
        }
    }
}

impl Actor for NodeActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let Some(attempt) = self.attempt.take() else {
            ctx.stop();
            return;
        };
        let policy = self.policy.clone();
        let kind = attempt.plan.nodes[attempt.idx].spec.kind();
        let workflow_id = self.workflow_id.clone();
        let cancel = attempt.cancel.clone();
        // Dropping the future (the actor stopped) cancels the sandbox too.
        let guard = CancelOnDrop(Some(cancel));
        let fut = async move {
            let _guard = guard;
            let started = Instant::now();
            let outcome = AssertUnwindSafe(supervise(&attempt, &policy))
                .catch_unwind()
                .await;
            metrics::histogram!(m::NODE_DURATION, "workflow" => weft_shared::telemetry::bounded_label("workflow", &workflow_id), "node_kind" => kind)
                .record(started.elapsed().as_secs_f64());
            match outcome {
                Ok(r) => r,
                Err(panic) => {
                    let msg = panic_message(&panic);
                    metrics::counter!(m::NODE_PANICS).increment(1);
                    tracing::error!(run_id = %attempt.run.run_id, workflow_id, node_id = %attempt.plan.nodes[attempt.idx].id, panic = %msg, "node panicked");
                    (
                        Err(NodeError::new(
                            ErrorCode::NodePanicked,
                            format!("node panicked: {msg}"),
                        )),
                        1,
                    )
                }
            }
        };
        let fut = tracing::Instrument::instrument(fut, self.span.clone());
        ctx.spawn(fut.into_actor(self).map(|(result, attempts), act, ctx| {
            act.reply.send(result, attempts);
            ctx.stop();
        }));
    }
}

impl Handler<Stop> for NodeActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        // The run has ended and no longer listens; don't report.
        self.reply.to = None;
        ctx.stop();
    }
}

struct CancelOnDrop(Option<std::sync::Arc<std::sync::atomic::AtomicBool>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.store(true, Ordering::Relaxed);
        }
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}
