//! `script`: JavaScript in the rquickjs sandbox (see `weft_shared::script`).
//! A script first runs in place, on its node actor's thread, for at most
//! [`INLINE_BUDGET`]; one that needs longer runs on a blocking thread, so the
//! actors' threads never wait on it. The sandbox's interrupt handler stops the
//! script at the node's deadline or when the node is cancelled; the memory
//! limit bounds what it can allocate.

use super::{Attempt, NodeError, NodeOutput};
use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use weft_shared::error::ErrorCode;
use weft_shared::model::ScriptConfig;
use weft_shared::script::{self, Limits, ScriptError};

/// How long a script may run on its node actor's own thread. Most scripts
/// are small transforms done in microseconds; running them in place saves
/// two thread hand-offs (to a blocking thread and back). A script that uses
/// the budget up is stopped — scripts reach nothing outside their sandbox, so
/// stopping one and running it again changes nothing but CPU time — run again
/// on a blocking thread, and sent straight there from then on.
const INLINE_BUDGET: Duration = Duration::from_millis(1);

/// Scripts (by source) that outran the budget on this thread.
const MAX_SLOW: usize = 1024;

thread_local! {
    static SLOW: RefCell<HashSet<String>> = RefCell::new(HashSet::new());
}

pub async fn execute(a: &Attempt, cfg: &ScriptConfig) -> Result<NodeOutput, NodeError> {
    let ctx_json = a.context.to_string();
    let cancelled = || a.cancel.load(Ordering::Relaxed);
    if !SLOW.with(|s| s.borrow().contains(&cfg.code)) {
        let limits = Limits {
            memory_bytes: a.env.script_memory_limit,
            deadline: (Instant::now() + INLINE_BUDGET).min(a.deadline.at),
            cancel: a.cancel.clone(),
        };
        match script::run(&cfg.code, &ctx_json, &limits) {
            Err(ScriptError::Interrupted) if !cancelled() && Instant::now() < a.deadline.at => {
                SLOW.with(|s| {
                    let mut s = s.borrow_mut();
                    if s.len() >= MAX_SLOW {
                        s.clear();
                    }
                    s.insert(cfg.code.clone());
                });
            }
            result => return outcome(a, result),
        }
    }
    let _permit = a
        .env
        .script_permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| NodeError::new(ErrorCode::Internal, "script pool closed"))?;
    let code = cfg.code.clone();
    let limits = Limits {
        memory_bytes: a.env.script_memory_limit,
        deadline: a.deadline.at,
        cancel: a.cancel.clone(),
    };
    let joined = tokio::task::spawn_blocking(move || script::run(&code, &ctx_json, &limits)).await;
    let result = match joined {
        Ok(r) => r,
        // A panic on the blocking thread is the node's panic: hand it on to
        // the node actor, which turns it into `node_panicked`.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => return Err(NodeError::new(ErrorCode::Internal, e.to_string())),
    };
    outcome(a, result)
}

fn outcome(a: &Attempt, result: Result<String, ScriptError>) -> Result<NodeOutput, NodeError> {
    match result {
        Ok(text) => serde_json::from_str(&text)
            .map(NodeOutput::value)
            .map_err(|e| NodeError::new(ErrorCode::ScriptError, format!("script result: {e}"))),
        Err(ScriptError::Interrupted) if a.cancel.load(Ordering::Relaxed) => Err(NodeError::new(
            ErrorCode::Cancelled,
            "script stopped: node cancelled",
        )),
        Err(ScriptError::Interrupted) => {
            crate::timeouts::record_fired(&a.deadline);
            Err(NodeError::timed_out(a.deadline.level))
        }
        Err(ScriptError::OutOfMemory) => Err(NodeError::new(
            ErrorCode::ScriptOutOfMemory,
            format!(
                "script exceeded its memory limit of {} bytes",
                a.env.script_memory_limit
            ),
        )),
        Err(ScriptError::Thrown(m)) => Err(NodeError::new(ErrorCode::ScriptError, m).retryable()),
        Err(e) => Err(NodeError::new(ErrorCode::ScriptError, e.to_string())),
    }
}
