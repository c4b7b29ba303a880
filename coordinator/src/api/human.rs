//! Resuming a run paused at a `human` node: `POST /v1/runs/{id}/resume` with
//! `{"node_id": …, "value": …}`. The handler checks who may (any user the
//! workflow is shared with) and parses the request; [`resume_run`] is the core.

use super::auth::AuthUser;
use super::error::{ApiBytes, ApiError, ApiPath, ErrorBody};
use super::{AppState, St};
use crate::access::Role;
use crate::dispatch::{Cmd, ResumeRefusal};
use crate::model::RunRecord;
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};
use uuid::Uuid;
use weft_shared::error::ErrorCode;
use weft_shared::model::WorkflowDefinition;

/// Resumes a paused run: any user the workflow is shared with (viewers too:
/// approving is not editing), recorded by name; an API key may not.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/resume",
    operation_id = "resume_run",
    tag = "runs",
    summary = "Answer a human node; the run goes on, on any worker",
    description = "Any user the workflow is shared with (viewers too). The answer (`value`, \
        checked against the node's `schema`) is recorded with who and when before the 200.",
    params(("id" = Uuid, Path, description = "Run id")),
    request_body(content = ResumeBody),
    responses(
        (status = 200, description = "The run, queued to go on", body = RunRecord),
        (status = 400, description = "`invalid_request` (e.g. several nodes wait and none is named), `invalid_json`, or `invalid_input`: the value does not match the node's schema", body = ErrorBody),
        (status = 404, description = "`not_found`: no such run", body = ErrorBody),
        (status = 409, description = "`not_waiting`: the run does not wait at that node (`details.waiting`)", body = ErrorBody),
    )
)]
pub async fn resume(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiBytes(body): ApiBytes,
) -> Result<impl IntoResponse, ApiError> {
    let run_id = Uuid::parse_str(&id).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("run id `{id}` is not a UUID"),
        )
    })?;
    let run = st
        .store
        .get_run(run_id)
        .await?
        .ok_or_else(|| ApiError::not_found("run"))?;
    st.role(&who, &run.workflow_id, Role::Viewer)
        .await
        .map_err(|e| match e.code {
            ErrorCode::NotFound => ApiError::not_found("run"),
            _ => e,
        })?;
    let (node_id, value) = parse_body(&body)?;
    let rec = resume_run(&st, run_id, node_id, value, who.user.name.clone()).await?;
    st.audit(
        &who.principal,
        "run",
        "run.resumed",
        Some(&rec.workflow_id),
        format!("resumed run {run_id}"),
    )
    .await;
    Ok(Json(rec))
}

/// The resume request, for the document (the handler parses the bytes
/// itself, to tell a missing `value` from `null`).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ResumeBody {
    /// The waiting node; may be left out when one node waits.
    node_id: Option<String>,
    /// The answer: any JSON (`null` included), checked against the node's `schema`.
    #[schema(value_type = Object)]
    value: Value,
}

/// `{"node_id"?: string, "value": any}`; `value` must be there (`null` is a value).
fn parse_body(body: &[u8]) -> Result<(Option<String>, Value), ApiError> {
    let shape = || {
        ApiError::new(
            ErrorCode::InvalidRequest,
            r#"the body must be a JSON object {"node_id"?: string, "value": any}"#,
        )
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(shape());
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(mut m) = v else {
        return Err(shape());
    };
    if let Some(k) = m.keys().find(|k| *k != "node_id" && *k != "value") {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("unknown field `{k}`; expected `node_id` and `value`"),
        ));
    }
    let node_id = match m.remove("node_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "`node_id` must be a string",
            ))
        }
    };
    let value = m.remove("value").ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            "`value` is missing: the answer to the human node (any JSON, null included)",
        )
    })?;
    Ok((node_id, value))
}

/// Resumes `run_id` at its waiting human node `node_id` (or the only one
/// waiting) with `value`, recorded as given by `by`, exactly once; returns the
/// run's record once the answer is durable. The run then goes on, on any
/// worker.
pub(crate) async fn resume_run(
    st: &AppState,
    run_id: Uuid,
    node_id: Option<String>,
    value: Value,
    by: String,
) -> Result<RunRecord, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    st.dispatch.send(Cmd::ResumeTarget {
        run_id,
        node_id,
        reply: tx,
    });
    let (node_id, definition) = match rx.await {
        Ok(Ok(t)) => t,
        Ok(Err(r)) => return Err(refusal(st, run_id, r).await),
        Err(_) => return Err(ApiError::internal("the dispatcher is gone")),
    };
    check_value(&definition, &node_id, &value)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    st.dispatch.send(Cmd::Resume {
        run_id,
        node_id,
        value,
        by,
        reply: tx,
    });
    match rx.await {
        Ok(Ok(rec)) => Ok(rec),
        Ok(Err(r)) => Err(refusal(st, run_id, r).await),
        Err(_) => Err(ApiError::internal("the dispatcher is gone")),
    }
}

/// The value must match the node's `schema`, when it has one.
fn check_value(def: &WorkflowDefinition, node_id: &str, value: &Value) -> Result<(), ApiError> {
    let Some(node) = def.nodes.iter().find(|n| n.id == node_id) else {
        return Ok(());
    };
    let Some(schema) = node.config.get("schema").filter(|s| !s.is_null()) else {
        return Ok(());
    };
    let Err(fields) = weft_shared::validate::check_against_schema(schema, value) else {
        return Ok(());
    };
    Err(ApiError::new(
        ErrorCode::InvalidInput,
        format!("the value does not match the schema of human node `{node_id}`"),
    )
    .details(json!({"node_id": node_id, "fields": fields})))
}

async fn refusal(st: &AppState, run_id: Uuid, r: ResumeRefusal) -> ApiError {
    let not_waiting = |message: String, details: Value| {
        ApiError::new(ErrorCode::NotWaiting, message).details(details)
    };
    match r {
        // Not live: ended (perhaps just now, by this very request's lateness
        // or a cancel: flushed first so the stored status is the last one), or
        // never was.
        ResumeRefusal::UnknownRun | ResumeRefusal::TimedOut => match async {
            st.store.flush().await?;
            st.store.get_run(run_id).await
        }
        .await
        {
            Ok(Some(rec)) => not_waiting(
                format!(
                    "the run is {}, not waiting at a human node",
                    rec.status.as_str()
                ),
                json!({"status": rec.status, "waiting": []}),
            ),
            Ok(None) => ApiError::not_found("run"),
            Err(e) => e.into(),
        },
        ResumeRefusal::NotWaiting { status, waiting } => not_waiting(
            format!(
                "the run is {}, not paused at a human node{}",
                status.as_str(),
                if waiting.is_empty() {
                    String::new()
                } else {
                    "; resume it once it is waiting again".into()
                }
            ),
            json!({"status": status, "waiting": waiting}),
        ),
        ResumeRefusal::NodeNotWaiting { node_id, waiting } => not_waiting(
            format!(
                "node `{node_id}` is not waiting; waiting: {}",
                waiting.join(", ")
            ),
            json!({"node_id": node_id, "waiting": waiting}),
        ),
        ResumeRefusal::Ambiguous { waiting } => ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "several human nodes wait ({}): name one in `node_id`",
                waiting.join(", ")
            ),
        )
        .details(json!({"waiting": waiting})),
        ResumeRefusal::WriteFailed(e) => ApiError::internal(e),
    }
}
