//! The coordinator's records: workflows, versions, runs.

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;
use weft_shared::model::{
    ModelRun, NodeLog, RunAttempt, RunError, RunStatus, Usage, WorkflowDefinition,
};

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Workflow {
    pub id: String,
    pub name: String,
    pub description: String,
    /// The draft: what the next deploy publishes.
    #[schema(value_type = crate::api::openapi::WorkflowDefinitionSchema)]
    pub definition: WorkflowDefinition,
    /// The newest version ever published; none until first deployed. It
    /// stays set after an undeploy (see `deployed_version`).
    pub latest_version: Option<u32>,
    /// Whether the endpoint is online: runs are accepted only when it is.
    pub deployed: bool,
    /// The version runs use; none when not deployed (never, or undeployed).
    pub deployed_version: Option<u32>,
    /// The switch: an inactive workflow cannot be run or triggered.
    pub active: bool,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// A draft saved before an import replaced it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct DraftBackup {
    pub id: String,
    pub workflow_id: String,
    /// Why it was saved (`import`).
    pub reason: String,
    #[schema(value_type = crate::api::openapi::WorkflowDefinitionSchema)]
    pub definition: WorkflowDefinition,
    pub created_at_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct WorkflowVersion {
    pub workflow_id: String,
    pub version: u32,
    #[schema(value_type = crate::api::openapi::WorkflowDefinitionSchema)]
    pub definition: WorkflowDefinition,
    pub created_at_ms: u64,
}

/// A run as stored and as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RunRecord {
    pub id: Uuid,
    pub workflow_id: String,
    pub version: u32,
    pub status: RunStatus,
    /// `sync` or `async`.
    pub trigger: String,
    /// The run's input, as given.
    pub input: Value,
    /// What the output node produced; null until the run succeeds.
    pub output: Option<Value>,
    pub error: Option<RunError>,
    pub created_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub ended_at_ms: Option<u64>,
    /// The workflow deadline fixed at acceptance (Unix ms).
    pub deadline_ms: u64,
    /// Each placement on a worker.
    pub attempts: Vec<RunAttempt>,
    /// Node-by-node log, over all attempts.
    pub nodes: Vec<NodeLog>,
    /// Tokens used by the run's model calls.
    pub usage: Usage,
    /// Each model call (in the run detail; empty in lists).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub model_runs: Vec<ModelRun>,
}

/// An environment variable as stored: a secure one's value is ciphertext.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvVarRow {
    pub workflow_id: String,
    pub name: String,
    pub value: String,
    pub secure: bool,
    pub notes: String,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

impl RunRecord {
    pub fn new(
        id: Uuid,
        workflow_id: String,
        version: u32,
        trigger: &str,
        input: Value,
        deadline_ms: u64,
    ) -> Self {
        RunRecord {
            id,
            workflow_id,
            version,
            status: RunStatus::Queued,
            trigger: trigger.to_string(),
            input,
            output: None,
            error: None,
            created_at_ms: weft_shared::time::now_ms(),
            started_at_ms: None,
            ended_at_ms: None,
            deadline_ms,
            attempts: Vec::new(),
            nodes: Vec::new(),
            usage: Usage::default(),
            model_runs: Vec::new(),
        }
    }
}
