//! `script`: JavaScript in the rquickjs sandbox (see `weft_shared::script`),
//! run on a blocking thread so the actors' threads never wait on it. The
//! sandbox's interrupt handler stops the script at the node's deadline or when
//! the node is cancelled; the memory limit bounds what it can allocate.

use super::{Attempt, NodeError, NodeOutput};
use std::sync::atomic::Ordering;
use weft_shared::error::ErrorCode;
use weft_shared::model::ScriptConfig;
use weft_shared::script::{self, Limits, ScriptError};

pub async fn execute(a: &Attempt, cfg: &ScriptConfig) -> Result<NodeOutput, NodeError> {
    let _permit = a
        .env
        .script_permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| NodeError::new(ErrorCode::Internal, "script pool closed"))?;
    let code = cfg.code.clone();
    let ctx_json = a.context.to_string();
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
