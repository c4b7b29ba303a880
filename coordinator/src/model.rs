//! The coordinator's records: workflows, versions, runs.

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;
use weft_shared::model::{
    Checkpoint, HumanResume, HumanWait, ModelRun, NodeLog, RunAttempt, RunError, RunStatus, Usage,
    WorkflowDefinition,
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
    /// The endpoint configuration it was deployed with (shown at
    /// `GET /v1/workflows/{id}/endpoint`; its push token never leaves).
    #[serde(skip)]
    pub endpoint: crate::endpoint::Endpoint,
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
    /// Human nodes waiting for an answer (`POST /v1/runs/{id}/resume`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waiting: Vec<HumanWait>,
    /// Every answer given to a human node: what, by whom, when.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resumes: Vec<HumanResume>,
    /// What a worker needs to go on after a pause at human nodes (not shown).
    #[serde(skip)]
    pub checkpoint: Option<Checkpoint>,
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
            waiting: Vec::new(),
            resumes: Vec::new(),
            checkpoint: None,
        }
    }
}

/// Someone who calls the management API.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: String,
    pub name: String,
    /// Sees and may do everything, including managing users.
    pub admin: bool,
    pub created_at_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// A user's token: acts as that user.
    UserToken,
    /// A workflow's API key: may only run that workflow and read its runs.
    ApiKey,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::UserToken => "user_token",
            CredentialKind::ApiKey => "api_key",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user_token" => Some(CredentialKind::UserToken),
            "api_key" => Some(CredentialKind::ApiKey),
            _ => None,
        }
    }
}

/// A user token or API key as listed: never its secret (only a hash of it is
/// stored), but its first characters to tell keys apart.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Credential {
    pub id: String,
    pub kind: CredentialKind,
    pub user_id: Option<String>,
    pub workflow_id: Option<String>,
    pub name: String,
    pub prefix: String,
    pub created_at_ms: u64,
    /// The user who created it.
    pub created_by: Option<String>,
    /// Updated at most once a second per credential.
    pub last_used_ms: Option<u64>,
    pub revoked_at_ms: Option<u64>,
}

/// A workflow shared with a user.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Share {
    pub workflow_id: String,
    pub user_id: String,
    pub user_name: String,
    pub role: crate::access::Role,
    pub granted_at_ms: u64,
    pub granted_by: Option<String>,
}

/// One entry of the append-only audit log. Never holds a secret or a
/// variable's value.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEvent {
    /// Its position in the log (the list's cursor).
    pub seq: i64,
    pub at_ms: u64,
    /// `auth`, `workflow`, `key`, `sharing`, `env`, `user`, `run`, `system`.
    pub category: String,
    /// E.g. `workflow.deployed`.
    pub event: String,
    /// Who did it; none for system events.
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub workflow_id: Option<String>,
    pub description: String,
}
