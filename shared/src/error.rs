//! Stable error codes. Each maps to one HTTP status and one string that clients
//! can match on; run and node failures carry the same strings.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ErrorCode {
    // Request errors.
    InvalidJson,
    InvalidRequest,
    UnsupportedMediaType,
    InvalidDefinition,
    InvalidInput,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    NotDeployed,
    Conflict,
    // Capacity.
    QueueFull,
    NoWorkers,
    ShuttingDown,
    SyncTimeout,
    Internal,
    // Run and node outcomes.
    TimedOut,
    NodePanicked,
    NodeLost,
    ScriptError,
    ScriptOutOfMemory,
    ExpressionError,
    NoBranchMatched,
    OutputNotReached,
    Cancelled,
    WorkerLost,
    GuardrailBlocked,
    TemplateError,
    HttpError,
    ResponseTooLarge,
    ModelError,
    Forbidden,
    EncryptionUnavailable,
    OutputTooLarge,
    ConcurrencyLimit,
    IdempotencyKeyReused,
    IdempotencyInProgress,
    // Workflow lifecycle and archives.
    WorkflowDeployed,
    WorkflowInactive,
    InvalidArchive,
    // Authentication and access.
    Unauthenticated,
    RateLimited,
    /// A run requested in a mode (`sync` or `async`) the workflow's
    /// deployed endpoint does not answer.
    ModeDisabled,
    // Human nodes.
    NotWaiting,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::InvalidJson,
        ErrorCode::InvalidRequest,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::InvalidDefinition,
        ErrorCode::InvalidInput,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::NotDeployed,
        ErrorCode::Conflict,
        ErrorCode::QueueFull,
        ErrorCode::NoWorkers,
        ErrorCode::ShuttingDown,
        ErrorCode::SyncTimeout,
        ErrorCode::Internal,
        ErrorCode::TimedOut,
        ErrorCode::NodePanicked,
        ErrorCode::NodeLost,
        ErrorCode::ScriptError,
        ErrorCode::ScriptOutOfMemory,
        ErrorCode::ExpressionError,
        ErrorCode::NoBranchMatched,
        ErrorCode::OutputNotReached,
        ErrorCode::Cancelled,
        ErrorCode::WorkerLost,
        ErrorCode::GuardrailBlocked,
        ErrorCode::TemplateError,
        ErrorCode::HttpError,
        ErrorCode::ResponseTooLarge,
        ErrorCode::ModelError,
        ErrorCode::Forbidden,
        ErrorCode::EncryptionUnavailable,
        ErrorCode::OutputTooLarge,
        ErrorCode::ConcurrencyLimit,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::IdempotencyInProgress,
        ErrorCode::WorkflowDeployed,
        ErrorCode::WorkflowInactive,
        ErrorCode::InvalidArchive,
        ErrorCode::Unauthenticated,
        ErrorCode::RateLimited,
        ErrorCode::ModeDisabled,
        ErrorCode::NotWaiting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::InvalidDefinition => "invalid_definition",
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::NotDeployed => "not_deployed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::QueueFull => "queue_full",
            ErrorCode::NoWorkers => "no_workers",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::SyncTimeout => "sync_timeout",
            ErrorCode::Internal => "internal",
            ErrorCode::TimedOut => "timed_out",
            ErrorCode::NodePanicked => "node_panicked",
            ErrorCode::NodeLost => "node_lost",
            ErrorCode::ScriptError => "script_error",
            ErrorCode::ScriptOutOfMemory => "script_out_of_memory",
            ErrorCode::ExpressionError => "expression_error",
            ErrorCode::NoBranchMatched => "no_branch_matched",
            ErrorCode::OutputNotReached => "output_not_reached",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::WorkerLost => "worker_lost",
            ErrorCode::GuardrailBlocked => "guardrail_blocked",
            ErrorCode::TemplateError => "template_error",
            ErrorCode::HttpError => "http_error",
            ErrorCode::ResponseTooLarge => "response_too_large",
            ErrorCode::ModelError => "model_error",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::EncryptionUnavailable => "encryption_unavailable",
            ErrorCode::OutputTooLarge => "output_too_large",
            ErrorCode::ConcurrencyLimit => "concurrency_limit",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::IdempotencyInProgress => "idempotency_in_progress",
            ErrorCode::WorkflowDeployed => "workflow_deployed",
            ErrorCode::WorkflowInactive => "workflow_inactive",
            ErrorCode::InvalidArchive => "invalid_archive",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::ModeDisabled => "mode_disabled",
            ErrorCode::NotWaiting => "not_waiting",
        }
    }

    /// The HTTP status for a request that fails with this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson
            | ErrorCode::InvalidRequest
            | ErrorCode::InvalidDefinition
            | ErrorCode::InvalidInput => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict | ErrorCode::NotDeployed | ErrorCode::EncryptionUnavailable => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::QueueFull | ErrorCode::ConcurrencyLimit | ErrorCode::RateLimited => 429,
            ErrorCode::IdempotencyKeyReused | ErrorCode::IdempotencyInProgress => 409,
            ErrorCode::WorkflowDeployed | ErrorCode::WorkflowInactive | ErrorCode::ModeDisabled => {
                409
            }
            ErrorCode::NotWaiting => 409,
            ErrorCode::InvalidArchive => 400,
            ErrorCode::NoWorkers | ErrorCode::ShuttingDown => 503,
            ErrorCode::SyncTimeout | ErrorCode::TimedOut => 504,
            _ => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn the_wire_name_is_the_stable_code() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_string(c).unwrap(),
                format!("\"{}\"", c.as_str())
            );
            assert!(seen.insert(c.as_str()), "{} twice", c.as_str());
            assert!((400..600).contains(&c.http_status()));
        }
    }
}
