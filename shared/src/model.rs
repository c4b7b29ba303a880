//! The workflow definition users write, and the records of a run.
//!
//! A definition is JSON (what `flow_definition.json` holds in an export): a
//! name, a workflow timeout, nodes and edges. Each node has an `id`, a `kind`
//! and a kind-specific `config`; the kind and config are checked by
//! [`crate::validate`], so an unknown kind is reported against its node rather
//! than failing the whole parse. The format is documented in
//! `docs/workflow-format.md` with a JSON Schema beside it.

use crate::error::ErrorCode;
use crate::guardrails::{Finding, GuardrailsConfig};
use crate::time::TimeoutLevel;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Bytes of a value's JSON, counted without building the text (size limits
/// on run inputs and outputs).
pub fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}

/// A value's JSON with every object's keys sorted, whatever order they came
/// in: the same data gives the same text (hashes of request bodies).
pub fn canonical_json(v: &Value) -> String {
    let mut v = v.clone();
    v.sort_all_objects();
    v.to_string()
}

/// Workflow timeout when a definition gives none (the product default, 180 s).
pub const DEFAULT_WORKFLOW_TIMEOUT_MS: u64 = 180_000;
/// The longest workflow or node timeout a definition may ask for (600 s).
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// The longest timeout of a workflow that has a `human` node, and of a
/// `human` node itself (30 days): a person may answer much later. Such a run
/// is held by no worker while it waits (see `docs/workflow-format.md`).
pub const MAX_HUMAN_TIMEOUT_MS: u64 = 30 * 24 * 3_600_000;

fn default_timeout_ms() -> u64 {
    DEFAULT_WORKFLOW_TIMEOUT_MS
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDefinition {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Workflow timeout in milliseconds: the deadline of the whole run, fixed
    /// when the run is accepted. Every node and model call lives under it.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub edges: Vec<Edge>,
    /// Guardrails for every AI node that sets none of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<GuardrailsConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub id: String,
    /// One of [`NODE_KINDS`].
    pub kind: String,
    /// Kind-specific settings; see [`NodeSpec`]. Absent (null) is left out
    /// when written, as the JSON Schema has no null config.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub config: Value,
    /// Node timeout in milliseconds, bounded by the workflow's deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retries for retryable failures; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Fault injection for tests and chaos runs. Ignored unless the worker runs
    /// with `fault_injection = true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The node's code panics.
    Panic,
    /// The node never finishes (until a deadline stops it).
    Hang,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts, the first included (1 = no retry). At most 10.
    pub max_attempts: u32,
    /// First backoff delay; doubles each attempt, with jitter.
    #[serde(default = "default_backoff_ms")]
    pub initial_backoff_ms: u64,
    #[serde(default = "default_max_backoff_ms")]
    pub max_backoff_ms: u64,
}

fn default_backoff_ms() -> u64 {
    100
}
fn default_max_backoff_ms() -> u64 {
    5_000
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            initial_backoff_ms: default_backoff_ms(),
            max_backoff_ms: default_max_backoff_ms(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// For edges leaving a `condition` node: the branch that takes this edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// A node's kind with its parsed config.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeSpec {
    Input(InputConfig),
    Condition(ConditionConfig),
    Script(ScriptConfig),
    Output(OutputConfig),
    Api(ApiConfig),
    AsyncApi(ApiConfig),
    Ai(AiConfig),
    Human(HumanConfig),
}

impl NodeSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            NodeSpec::Input(_) => "input",
            NodeSpec::Condition(_) => "condition",
            NodeSpec::Script(_) => "script",
            NodeSpec::Output(_) => "output",
            NodeSpec::Api(_) => "api",
            NodeSpec::AsyncApi(_) => "async_api",
            NodeSpec::Ai(_) => "ai",
            NodeSpec::Human(_) => "human",
        }
    }

    /// The retry policy a node of this kind gets when it sets none: calls to
    /// other systems retry a little (finite), local work does not.
    pub fn default_retry(&self) -> RetryPolicy {
        match self {
            NodeSpec::Api(_) | NodeSpec::AsyncApi(_) | NodeSpec::Ai(_) => RetryPolicy {
                max_attempts: 3,
                initial_backoff_ms: 200,
                max_backoff_ms: 5_000,
            },
            _ => RetryPolicy::default(),
        }
    }
}

/// The kinds this version knows.
pub const NODE_KINDS: &[&str] = &[
    "input",
    "condition",
    "script",
    "output",
    "api",
    "async_api",
    "ai",
    "human",
];

fn default_method() -> String {
    "GET".into()
}
fn default_max_response_bytes() -> u64 {
    1024 * 1024
}

/// An HTTP call (`api`), or a call whose answer comes later to a callback URL
/// (`async_api`). Strings may hold `{{ }}` templates (see `crate::template`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(default = "default_method")]
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// JSON body; a string that is exactly one template keeps the value's type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// Largest response body accepted; a larger one fails the node.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
}

/// A chat-completions call to an OpenAI-compatible API.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AiConfig {
    /// Base URL of the API (…/v1), usually `{{env.LLM_BASE_URL}}`.
    pub base_url: String,
    /// API key, usually `{{env.LLM_API_KEY}}` from a secure variable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Ask for a JSON object and parse the reply into `output.json`.
    #[serde(default)]
    pub json_mode: bool,
    /// Timeout of one model call, bounded by the node's deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_timeout_ms: Option<u64>,
    /// Overrides the workflow's guardrails for this node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<GuardrailsConfig>,
}

/// A step a person takes: the run pauses here — held by no worker — until
/// someone resumes it (`POST /v1/runs/{id}/resume`) or its wait times out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HumanConfig {
    /// What the person is asked; may hold `{{ }}` templates.
    pub prompt: String,
    /// A JSON Schema the resume value must match (any value when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
}

/// Token counts of model calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
    }
}

/// One call to a model, as recorded for the monitor's model runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelRun {
    pub request_id: String,
    pub node_id: String,
    pub model: String,
    /// The connection: the env variable the base URL came from, else its host.
    pub connection: String,
    /// `succeeded`, `failed` or `timed_out`.
    pub status: String,
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
    /// Time from request to response (end − start).
    #[serde(default)]
    pub response_ms: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    /// JSON Schema the run's input must match (any input when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionConfig {
    /// Checked in order; the first whose `when` is true is taken.
    pub branches: Vec<Branch>,
    /// Branch taken when none matches; without it, no match fails the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    pub name: String,
    /// A CEL expression over `input` and `steps` that yields a bool.
    pub when: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptConfig {
    /// The body of a JavaScript function of one argument, `ctx`
    /// (`ctx.input`, `ctx.steps`); what it returns is the node's output.
    pub code: String,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Result field → CEL expression over `input` and `steps`.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RunStatus {
    /// Accepted, not yet confirmed by a worker (a worker confirms a run once
    /// it has run `wire::ANSWER_TAKEN_WITHIN`; a shorter one ends first).
    Queued,
    /// Confirmed by its worker.
    Running,
    Waiting,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Failed | RunStatus::TimedOut | RunStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        Some(match s {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "waiting" => RunStatus::Waiting,
            "succeeded" => RunStatus::Succeeded,
            "failed" => RunStatus::Failed,
            "timed_out" => RunStatus::TimedOut,
            "cancelled" => RunStatus::Cancelled,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum NodeStatus {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Skipped,
    Cancelled,
}

/// Why a run or node failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// For `timed_out`: the level whose deadline fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<TimeoutLevel>,
}

impl RunError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RunError {
            code,
            message: message.into(),
            node_id: None,
            level: None,
        }
    }

    pub fn timed_out(level: TimeoutLevel) -> Self {
        RunError {
            code: ErrorCode::TimedOut,
            message: format!("{} timeout fired", level.as_str()),
            node_id: None,
            level: Some(level),
        }
    }

    pub fn at_node(mut self, node_id: &str) -> Self {
        self.node_id = Some(node_id.to_string());
        self
    }
}

/// One node's line in a run's log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeLog {
    pub node_id: String,
    pub kind: String,
    pub status: NodeStatus,
    /// Which placement of the run this line belongs to (1 = first).
    pub run_attempt: u32,
    pub started_at_ms: u64,
    pub ended_at_ms: u64,
    /// Attempts the node's retry policy made.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// Guardrail findings (which scanner, what kind, where — never the text).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// For a resumed `human` node: who resumed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_by: Option<String>,
    /// For a resumed `human` node: when (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at_ms: Option<u64>,
}

/// One placement of a run on a worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RunAttempt {
    pub attempt: u32,
    pub worker_id: String,
    pub placed_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
    /// How the attempt ended: a run status, or `worker_lost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// A node that had finished when its run paused: what its successors read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoneNode {
    pub node_id: String,
    pub output: Value,
    /// For a condition: the branch it took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// A `human` node waiting for a person.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HumanWait {
    pub node_id: String,
    /// The node's prompt, its templates rendered (secure values scrubbed).
    pub prompt: String,
    /// When the wait began: the node became ready (Unix ms).
    pub since_ms: u64,
    /// When the wait ends unanswered (Unix ms): the earlier of `since_ms` +
    /// the node's `timeout_ms` and the workflow deadline.
    pub deadline_ms: u64,
    /// Which of the two that is: `node` or `workflow`.
    pub level: TimeoutLevel,
}

/// A person's answer to a `human` node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HumanResume {
    pub node_id: String,
    pub value: Value,
    pub resumed_by: String,
    pub resumed_at_ms: u64,
}

/// What a run paused at `human` nodes needs to go on, on any worker: the
/// outputs of the nodes that finished, the nodes skipped, the nodes that wait
/// and — added by the coordinator — the answers given since it paused.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub done: Vec<DoneNode>,
    #[serde(default)]
    pub skipped: Vec<String>,
    pub waiting: Vec<HumanWait>,
    #[serde(default)]
    pub resumed: Vec<HumanResume>,
}

#[cfg(test)]
mod canonical_tests {
    use super::canonical_json;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth_and_ignores_their_order() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b": [{"y": 1, "x": "\"q\""}], "a": {"d": null, "c": 2.5}}"#)
                .unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a": {"c": 2.5, "d": null}, "b": [{"x": "\"q\"", "y": 1}]}"#)
                .unwrap();
        let want = r#"{"a":{"c":2.5,"d":null},"b":[{"x":"\"q\"","y":1}]}"#;
        assert_eq!(canonical_json(&a), want);
        assert_eq!(canonical_json(&b), want);
        // Keys that need escaping are written as JSON strings.
        assert_eq!(canonical_json(&json!({"a\"b": 1})), r#"{"a\"b":1}"#);
        assert_eq!(canonical_json(&json!([])), "[]");
    }
}
