//! Node kinds, one file each. [`execute`] runs one attempt of a node.

mod condition;
mod input;
mod output;
mod script;

use crate::timeouts::{Deadline, TimeoutLevel};
use serde_json::Value;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::Semaphore;
use weft_shared::error::ErrorCode;
use weft_shared::model::{NodeSpec, RunError};
use weft_shared::validate::Plan;

/// What a node produced.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeOutput {
    pub value: Value,
    /// For a condition: the branch taken.
    pub branch: Option<String>,
}

impl NodeOutput {
    pub fn value(value: Value) -> Self {
        NodeOutput {
            value,
            branch: None,
        }
    }
}

/// Why a node attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeError {
    pub code: ErrorCode,
    pub message: String,
    /// Worth another attempt under the node's retry policy.
    pub retryable: bool,
    /// For `timed_out`: the level that fired.
    pub level: Option<TimeoutLevel>,
}

impl NodeError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        NodeError {
            code,
            message: message.into(),
            retryable: false,
            level: None,
        }
    }

    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    pub fn timed_out(level: TimeoutLevel) -> Self {
        NodeError {
            code: ErrorCode::TimedOut,
            message: format!("{} timeout fired", level.as_str()),
            retryable: false,
            level: Some(level),
        }
    }

    pub fn to_run_error(&self, node_id: &str) -> RunError {
        RunError {
            code: self.code,
            message: self.message.clone(),
            node_id: Some(node_id.to_string()),
            level: self.level,
        }
    }
}

/// What every node execution may use, shared by the worker's runs.
pub struct NodeEnv {
    pub script_memory_limit: usize,
    /// Bounds scripts running at once on blocking threads.
    pub script_permits: Arc<Semaphore>,
    pub fault_injection: bool,
}

/// One attempt's inputs.
pub struct Attempt {
    pub plan: Arc<Plan>,
    pub idx: usize,
    /// `{"input": …, "steps": {id: {"output": …}}}`.
    pub context: Arc<Value>,
    pub deadline: Deadline,
    /// Set when the node must stop early (run ended or cancelled).
    pub cancel: Arc<AtomicBool>,
    pub env: Arc<NodeEnv>,
}

/// Runs one attempt of the node. Deadlines are enforced by the caller (the
/// node actor) and, for scripts, inside the sandbox as well.
pub async fn execute(a: &Attempt) -> Result<NodeOutput, NodeError> {
    let node = &a.plan.nodes[a.idx];
    match &node.spec {
        NodeSpec::Input(_) => input::execute(a),
        NodeSpec::Condition(c) => condition::execute(a, c),
        NodeSpec::Script(s) => script::execute(a, s).await,
        NodeSpec::Output(_) => output::execute(a),
    }
}
