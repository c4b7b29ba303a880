//! Node kinds, one file each. [`execute`] runs one attempt of a node.

mod ai;
mod api;
mod condition;
pub mod h2c;
mod input;
mod output;
mod script;

use crate::timeouts::{Deadline, TimeoutLevel};
use serde_json::Value;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};
use uuid::Uuid;
use weft_shared::error::ErrorCode;
use weft_shared::guardrails::Finding;
use weft_shared::model::{ModelRun, NodeSpec, RunError, Usage};
use weft_shared::secret::SecretString;
use weft_shared::validate::Plan;

/// The `User-Agent` of the worker's HTTP calls.
pub const USER_AGENT: &str = concat!("weft-worker/", env!("CARGO_PKG_VERSION"));

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
    /// The other side asked us to wait this long before trying again.
    pub retry_after: Option<Duration>,
}

impl NodeError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        NodeError {
            code,
            message: message.into(),
            retryable: false,
            level: None,
            retry_after: None,
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
            retry_after: None,
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
    /// Largest run output accepted.
    pub max_output_bytes: usize,
    /// One HTTP client (connection pools) for API nodes, and for AI nodes'
    /// calls that do not go over h2c (HTTP/2 by ALPN where the server offers it).
    pub http: reqwest::Client,
    /// With `model_http2_prior_knowledge`: the client for `http://` model
    /// URLs (h2c), leaner per waiting call than reqwest.
    pub model_h2c: Option<h2c::H2c>,
}

/// What a node leaves in the run's record besides its output, success or not.
#[derive(Debug, Default, Clone)]
pub struct Records {
    pub model_runs: Vec<ModelRun>,
    pub findings: Vec<Finding>,
    pub usage: Usage,
}

/// A node that waits for a callback: its token and where the payload goes.
pub struct Waiting {
    pub idx: usize,
    pub token: SecretString,
    pub payload: oneshot::Sender<Value>,
}

/// The run-level facts a node may need.
pub struct RunInfo {
    pub run_id: Uuid,
    /// Secure values, scrubbed from any error text.
    pub secrets: Vec<SecretString>,
    /// Base URL for callbacks to the coordinator.
    pub callback_base: Option<String>,
    /// The run's trace: calls the run makes send a child `traceparent`.
    pub trace: Option<weft_shared::trace::TraceParent>,
    pub worker_id: String,
    /// The run's actor: a node that waits for a callback registers with it.
    pub actor: actix::Addr<crate::actors::run::RunActor>,
}

/// One attempt's inputs.
pub struct Attempt {
    pub plan: Arc<Plan>,
    pub idx: usize,
    /// `{"input": …, "steps": {id: {"output": …}}, "env": {…}}`.
    pub context: Arc<Value>,
    pub deadline: Deadline,
    /// Set when the node must stop early (run ended or cancelled).
    pub cancel: Arc<AtomicBool>,
    pub env: Arc<NodeEnv>,
    pub run: Arc<RunInfo>,
    pub records: Arc<Mutex<Records>>,
}

impl Attempt {
    pub fn node_id(&self) -> &str {
        &self.plan.nodes[self.idx].id
    }

    /// Error text with secure values scrubbed.
    pub fn scrub(&self, text: &str) -> String {
        weft_shared::secret::scrub(text, &self.run.secrets)
    }

    /// The `traceparent` header for a call this node makes.
    pub fn traceparent(&self) -> Option<String> {
        self.run.trace.map(|t| t.child().to_string())
    }

    pub fn record(&self, f: impl FnOnce(&mut Records)) {
        if let Ok(mut r) = self.records.lock() {
            f(&mut r);
        }
    }
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
        NodeSpec::Api(c) => api::execute(a, c, false).await,
        NodeSpec::AsyncApi(c) => api::execute(a, c, true).await,
        NodeSpec::Ai(c) => ai::execute(a, c).await,
        // The run actor handles a human node itself: it waits without a node
        // actor, and the run pauses (see `actors::run`).
        NodeSpec::Human(_) => Err(NodeError::new(
            ErrorCode::Internal,
            "a human node is not executed by a node actor",
        )),
    }
}
