//! Workflow CRUD, validation, and the lifecycle: deploy (and redeploy),
//! undeploy, the active switch. Runs are gated in
//! [`super::AppState::deployed`]; each change here is followed by
//! [`super::AppState::forget`] so the next run request sees it.

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::openapi::WorkflowDefinitionSchema;
use super::{page_limit, Page, St};
use crate::access::Role;
use crate::model::{Workflow, WorkflowVersion};
use crate::store::DeleteOutcome;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use weft_shared::error::ErrorCode;
use weft_shared::model::WorkflowDefinition;
use weft_shared::validate::{parse_and_validate, ValidationError};

pub(super) fn invalid(errors: Vec<ValidationError>) -> ApiError {
    let n = errors.len();
    ApiError::new(
        ErrorCode::InvalidDefinition,
        format!(
            "the definition has {n} error{}",
            if n == 1 { "" } else { "s" }
        ),
    )
    .details(json!({"errors": errors}))
}

/// Validates a definition, and the coordinator's limits on it.
pub(super) fn check(st: &St, body: &Value) -> Result<WorkflowDefinition, ApiError> {
    let max = st.config.max_nodes;
    let too_many = |n: usize| ValidationError {
        node_id: None,
        code: "too_many_nodes",
        message: format!("the workflow has {n} nodes; the limit is {max} (max_nodes)"),
    };
    match parse_and_validate(body) {
        Ok((def, _)) if def.nodes.len() > max => Err(invalid(vec![too_many(def.nodes.len())])),
        Ok((def, _)) => Ok(def),
        Err(mut errors) => {
            let n = body
                .get("nodes")
                .and_then(|v| v.as_array())
                .map(|a| a.len())
                .unwrap_or(0);
            if n > max {
                errors.push(too_many(n));
            }
            Err(invalid(errors))
        }
    }
}

/// Creates a workflow; the caller becomes its owner.
#[utoipa::path(
    post,
    path = "/v1/workflows",
    operation_id = "create_workflow",
    tag = "workflows",
    summary = "Create a workflow (a draft)",
    request_body(content = WorkflowDefinitionSchema, description = "The definition; checked as deploy checks it."),
    responses(
        (status = 201, description = "Created, not deployed", body = Workflow,
            headers(("location" = String, description = "The workflow's URL"))),
        (status = 400, description = "`invalid_definition` (every error in `details.errors`), `invalid_json` or `invalid_request`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: over `max_body_bytes`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: not `application/json`", body = ErrorBody),
    )
)]
pub async fn create(
    st: St,
    who: AuthUser,
    ApiJson(body): ApiJson<Value>,
) -> Result<impl IntoResponse, ApiError> {
    let def = check(&st, &body)?;
    let wf = st.store.create_workflow(&def, Some(&who.user.id)).await?;
    tracing::info!(workflow_id = %wf.id, name = %wf.name, "workflow created");
    st.audit(
        &who.principal,
        "workflow",
        "workflow.created",
        Some(&wf.id),
        format!("created workflow `{}`", wf.name),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        [("location", format!("/v1/workflows/{}", wf.id))],
        Json(wf),
    ))
}

/// The answer of `POST /v1/workflows/validate` for a valid definition (an
/// invalid one is a 400 `invalid_definition`).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Validity {
    /// Always true.
    valid: bool,
    /// Always empty.
    errors: Vec<weft_shared::validate::ValidationError>,
}

#[utoipa::path(
    post,
    path = "/v1/workflows/validate",
    operation_id = "validate_workflow",
    tag = "workflows",
    summary = "Check a definition without saving it",
    request_body(content = WorkflowDefinitionSchema),
    responses(
        (status = 200, description = "Valid", body = Validity),
        (status = 400, description = "`invalid_definition` (every error in `details.errors`), `invalid_json` or `invalid_request`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    )
)]
pub async fn validate(
    st: St,
    _who: AuthUser,
    ApiJson(body): ApiJson<Value>,
) -> Result<impl IntoResponse, ApiError> {
    check(&st, &body)?;
    Ok(Json(Validity {
        valid: true,
        errors: Vec::new(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the page before.
    cursor: Option<String>,
}

/// The workflows the caller can see (all, for an admin).
#[utoipa::path(
    get,
    path = "/v1/workflows",
    operation_id = "list_workflows",
    tag = "workflows",
    summary = "List workflows, newest first",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of workflows", body = Page<Workflow>),
        (status = 400, description = "`invalid_request`: a bad `limit` or an unknown parameter", body = ErrorBody),
    )
)]
pub async fn list(
    st: St,
    who: AuthUser,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let limit = page_limit(q.limit)?;
    let items = st
        .store
        .list_workflows(q.cursor.as_deref(), limit, who.visibility().as_deref())
        .await?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|w| w.id.clone()))
        .flatten();
    Ok(Json(Page {
        items,
        next_cursor: next,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/workflows/{id}",
    operation_id = "get_workflow",
    tag = "workflows",
    summary = "Read a workflow (its draft and lifecycle)",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "The workflow", body = Workflow),
        (status = 404, description = "`not_found`: no such workflow", body = ErrorBody),
    )
)]
pub async fn get(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &id, Role::Viewer).await?;
    let wf = st
        .store
        .get_workflow(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    Ok(Json(wf))
}

#[utoipa::path(
    put,
    path = "/v1/workflows/{id}",
    operation_id = "update_workflow",
    tag = "workflows",
    summary = "Replace the draft",
    description = "The deployed version is untouched until the next deploy.",
    params(("id" = String, Path, description = "Workflow id")),
    request_body(content = WorkflowDefinitionSchema),
    responses(
        (status = 200, description = "The workflow with its new draft", body = Workflow),
        (status = 400, description = "`invalid_definition` (every error in `details.errors`), `invalid_json` or `invalid_request`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such workflow", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    )
)]
pub async fn update(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<Value>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &id, Role::Editor).await?;
    let def = check(&st, &body)?;
    let wf = st
        .store
        .update_workflow(&id, &def)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    tracing::info!(workflow_id = %id, "workflow draft updated");
    st.audit(
        &who.principal,
        "workflow",
        "workflow.updated",
        Some(&id),
        format!("updated the draft of `{}`", wf.name),
    )
    .await;
    Ok(Json(wf))
}

/// Deletes a workflow that is not deployed; a deployed one is refused with
/// 409 `workflow_deployed`. Editors and owners may delete.
#[utoipa::path(
    delete,
    path = "/v1/workflows/{id}",
    operation_id = "delete_workflow",
    tag = "workflows",
    summary = "Delete a workflow that is not deployed",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such workflow", body = ErrorBody),
        (status = 409, description = "`workflow_deployed`: undeploy it first", body = ErrorBody),
    )
)]
pub async fn delete(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &id, Role::Editor).await?;
    // Runs still in flight or paused would be orphaned (their version gone):
    // they must end first. Undeployed, it accepts no new ones meanwhile.
    let live = st.dispatch.stats.live_runs_of(&id);
    if live > 0 {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "workflow has {live} run(s) in flight or paused; let them end or cancel them first"
            ),
        )
        .details(json!({"workflow_id": id, "live_runs": live})));
    }
    match st.store.delete_workflow(&id).await? {
        DeleteOutcome::Deleted => {}
        DeleteOutcome::NotFound => return Err(ApiError::not_found("workflow")),
        DeleteOutcome::Deployed => {
            return Err(ApiError::new(
                ErrorCode::WorkflowDeployed,
                format!(
                    "workflow is deployed; undeploy it first (POST /v1/workflows/{id}/undeploy)"
                ),
            )
            .details(json!({"workflow_id": id})));
        }
    }
    st.forget(&id);
    st.auth.forget_workflow(&id);
    tracing::info!(workflow_id = %id, "workflow deleted");
    st.audit(
        &who.principal,
        "workflow",
        "workflow.deleted",
        Some(&id),
        "deleted the workflow; its API keys were revoked".into(),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/deploy",
    operation_id = "deploy_workflow",
    tag = "workflows",
    summary = "Publish the draft as the next version (redeploy: the same)",
    description = "Runs use the new version at once. A draft that no longer validates is refused.",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 201, description = "The version published", body = WorkflowVersion),
        (status = 400, description = "`invalid_definition`: the draft no longer validates", body = ErrorBody),
        (status = 404, description = "`not_found`: no such workflow", body = ErrorBody),
    )
)]
pub async fn deploy(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &id, Role::Editor).await?;
    let wf = st
        .store
        .get_workflow(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    // Drafts are validated on save, but validation (or the coordinator's
    // limits, such as `max_nodes`) may have grown stricter since.
    let draft = serde_json::to_value(&wf.definition).map_err(ApiError::internal)?;
    check(&st, &draft)?;
    let v = st
        .store
        .deploy(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    st.forget(&id);
    tracing::info!(workflow_id = %id, version = v.version, "workflow deployed");
    st.audit(
        &who.principal,
        "workflow",
        "workflow.deployed",
        Some(&id),
        format!("deployed `{}` as version {}", wf.name, v.version),
    )
    .await;
    Ok((StatusCode::CREATED, Json(v)))
}

/// Takes the endpoint offline at once: new run requests get 409
/// `not_deployed`; runs already accepted finish. Versions are kept, and a
/// later deploy brings the endpoint back. Idempotent.
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/undeploy",
    operation_id = "undeploy_workflow",
    tag = "workflows",
    summary = "Take the endpoint offline (idempotent)",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "The workflow, not deployed", body = Workflow),
        (status = 404, description = "`not_found`: no such workflow", body = ErrorBody),
    )
)]
pub async fn undeploy(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &id, Role::Editor).await?;
    let wf = st
        .store
        .undeploy(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    st.forget(&id);
    tracing::info!(workflow_id = %id, "workflow undeployed");
    st.audit(
        &who.principal,
        "workflow",
        "workflow.undeployed",
        Some(&id),
        format!("undeployed `{}`: its endpoint is offline", wf.name),
    )
    .await;
    Ok(Json(wf))
}

/// The active switch on: runs are accepted again (if deployed). Idempotent.
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/activate",
    operation_id = "activate_workflow",
    tag = "workflows",
    summary = "The active switch on (idempotent)",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "The workflow, active", body = Workflow),
        (status = 404, description = "`not_found`: no such workflow", body = ErrorBody),
    )
)]
pub async fn activate(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    set_active(st, who, id, true).await
}

/// The active switch off: run requests get 409 `workflow_inactive`, deployed
/// or not; runs already accepted finish. Idempotent.
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/deactivate",
    operation_id = "deactivate_workflow",
    tag = "workflows",
    summary = "The active switch off (idempotent): runs get 409 `workflow_inactive`",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "The workflow, inactive", body = Workflow),
        (status = 404, description = "`not_found`: no such workflow", body = ErrorBody),
    )
)]
pub async fn deactivate(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    set_active(st, who, id, false).await
}

async fn set_active(
    st: St,
    who: AuthUser,
    id: String,
    active: bool,
) -> Result<Json<Workflow>, ApiError> {
    st.role(&who, &id, Role::Editor).await?;
    let wf = st
        .store
        .set_active(&id, active)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    st.forget(&id);
    tracing::info!(workflow_id = %id, active, "workflow active switch set");
    let (event, what) = if active {
        ("workflow.activated", "activated")
    } else {
        ("workflow.deactivated", "deactivated")
    };
    st.audit(
        &who.principal,
        "workflow",
        event,
        Some(&id),
        format!("{what} `{}`", wf.name),
    )
    .await;
    Ok(Json(wf))
}

#[utoipa::path(
    get,
    path = "/v1/workflows/{id}/versions",
    operation_id = "list_versions",
    tag = "workflows",
    summary = "Deployed versions (one page)",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "Every version, newest first", body = Page<WorkflowVersion>),
        (status = 404, description = "`not_found`: no such workflow", body = ErrorBody),
    )
)]
pub async fn versions(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &id, Role::Viewer).await?;
    if st.store.get_workflow(&id).await?.is_none() {
        return Err(ApiError::not_found("workflow"));
    }
    Ok(Json(Page::all(st.store.list_versions(&id).await?)))
}
