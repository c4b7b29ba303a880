//! Environment variables per workflow: create, list, read, update, delete.
//! A secure variable's value is encrypted at rest and never returned (the API
//! shows `"value": null` and `"secure": true`); it is decrypted only when a run
//! that names it is dispatched.

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::{Page, St};
use crate::access::Role;
use crate::model::EnvVarRow;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use weft_shared::error::ErrorCode;
use weft_shared::time::now_ms;

/// A variable as the API shows it.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EnvVarView {
    name: String,
    /// The value, for a variable that is not secure; `null` for one that is.
    value: Option<String>,
    secure: bool,
    notes: String,
    created_at_ms: u64,
    updated_at_ms: u64,
}

impl From<EnvVarRow> for EnvVarView {
    fn from(r: EnvVarRow) -> Self {
        EnvVarView {
            value: (!r.secure).then_some(r.value),
            name: r.name,
            secure: r.secure,
            notes: r.notes,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
        }
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// A letter or `_`, then letters, digits and `_`; 64 at most.
    #[schema(pattern = "^[A-Za-z_][A-Za-z0-9_]{0,63}$")]
    name: String,
    value: String,
    /// Encrypted at rest and never shown again.
    #[serde(default)]
    secure: bool,
    #[serde(default)]
    notes: String,
}

/// What to change; what is left out stays.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    value: Option<String>,
    /// Turning it off needs a new `value`.
    secure: Option<bool>,
    notes: Option<String>,
}

pub(super) fn check_name(name: &str) -> Result<(), ApiError> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("variable name `{name}` must start with a letter or `_` and hold only letters, digits and `_` (64 at most)"),
        ))
    }
}

fn seal(st: &St, secure: bool, value: String) -> Result<String, ApiError> {
    if !secure {
        return Ok(value);
    }
    st.crypto
        .encrypt(&value)
        .map_err(|e| ApiError::new(ErrorCode::EncryptionUnavailable, e.to_string()))
}

async fn workflow_exists(st: &St, id: &str) -> Result<(), ApiError> {
    st.store
        .get_workflow(id)
        .await?
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found("workflow"))
}

#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/env",
    operation_id = "create_env_var",
    tag = "env",
    summary = "Create a variable",
    params(("id" = String, Path, description = "Workflow id")),
    request_body(content = CreateBody),
    responses(
        (status = 201, description = "Created (a secure one's value is not shown)", body = EnvVarView),
        (status = 400, description = "`invalid_request` (e.g. a bad name) or `invalid_json`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such workflow", body = ErrorBody),
        (status = 409, description = "`conflict`: the variable exists; or `encryption_unavailable`: no encryption key for a secure one", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    )
)]
pub async fn create(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(b): ApiJson<CreateBody>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &id, Role::Editor).await?;
    check_name(&b.name)?;
    workflow_exists(&st, &id).await?;
    let now = now_ms();
    let row = EnvVarRow {
        workflow_id: id.clone(),
        name: b.name.clone(),
        value: seal(&st, b.secure, b.value)?,
        secure: b.secure,
        notes: b.notes,
        created_at_ms: now,
        updated_at_ms: now,
    };
    if !st.store.create_env(&row).await? {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("variable `{}` exists; update it instead", b.name),
        ));
    }
    st.forget_env(&id);
    tracing::info!(workflow_id = %id, name = %row.name, secure = row.secure, "environment variable created");
    st.audit(
        &who.principal,
        "env",
        "env.created",
        Some(&id),
        format!(
            "created {} variable `{}`",
            if row.secure { "secure" } else { "plain" },
            row.name
        ),
    )
    .await;
    Ok((StatusCode::CREATED, Json(EnvVarView::from(row))))
}

#[utoipa::path(
    get,
    path = "/v1/workflows/{id}/env",
    operation_id = "list_env_vars",
    tag = "env",
    summary = "List a workflow's variables (one page)",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "Every variable, by name", body = Page<EnvVarView>),
        (status = 404, description = "`not_found`: no such workflow", body = ErrorBody),
    )
)]
pub async fn list(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &id, Role::Viewer).await?;
    workflow_exists(&st, &id).await?;
    let items: Vec<EnvVarView> = st
        .store
        .list_env(&id)
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(Page::all(items)))
}

#[utoipa::path(
    get,
    path = "/v1/workflows/{id}/env/{name}",
    operation_id = "get_env_var",
    tag = "env",
    summary = "Read a variable",
    params(("id" = String, Path, description = "Workflow id"), ("name" = String, Path, description = "Variable name")),
    responses(
        (status = 200, description = "The variable", body = EnvVarView),
        (status = 404, description = "`not_found`: no such variable (or workflow)", body = ErrorBody),
    )
)]
pub async fn get(
    st: St,
    who: AuthUser,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &id, Role::Viewer).await?;
    let row = st
        .store
        .get_env(&id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("variable"))?;
    Ok(Json(EnvVarView::from(row)))
}

#[utoipa::path(
    put,
    path = "/v1/workflows/{id}/env/{name}",
    operation_id = "update_env_var",
    tag = "env",
    summary = "Update a variable",
    params(("id" = String, Path, description = "Workflow id"), ("name" = String, Path, description = "Variable name")),
    request_body(content = UpdateBody),
    responses(
        (status = 200, description = "The variable", body = EnvVarView),
        (status = 400, description = "`invalid_request` (e.g. `secure` off without a new `value`) or `invalid_json`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such variable (or workflow)", body = ErrorBody),
        (status = 409, description = "`encryption_unavailable`: no encryption key for a secure value", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    )
)]
pub async fn update(
    st: St,
    who: AuthUser,
    ApiPath((id, name)): ApiPath<(String, String)>,
    ApiJson(b): ApiJson<UpdateBody>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &id, Role::Editor).await?;
    let mut row = st
        .store
        .get_env(&id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("variable"))?;
    let secure = b.secure.unwrap_or(row.secure);
    row.value = match (b.value, row.secure, secure) {
        (Some(v), _, _) => seal(&st, secure, v)?,
        (None, false, true) => seal(&st, true, row.value)?,
        (None, true, false) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "turning `secure` off needs a new `value`: a secure value is never revealed",
            ));
        }
        (None, _, _) => row.value,
    };
    row.secure = secure;
    if let Some(n) = b.notes {
        row.notes = n;
    }
    row.updated_at_ms = now_ms();
    st.store.update_env(&row).await?;
    st.forget_env(&id);
    tracing::info!(workflow_id = %id, name = %name, secure = row.secure, "environment variable updated");
    st.audit(
        &who.principal,
        "env",
        "env.updated",
        Some(&id),
        format!("updated variable `{name}` (secure: {})", row.secure),
    )
    .await;
    Ok(Json(EnvVarView::from(row)))
}

#[utoipa::path(
    delete,
    path = "/v1/workflows/{id}/env/{name}",
    operation_id = "delete_env_var",
    tag = "env",
    summary = "Delete a variable",
    params(("id" = String, Path, description = "Workflow id"), ("name" = String, Path, description = "Variable name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "`not_found`: no such variable (or workflow)", body = ErrorBody),
    )
)]
pub async fn delete(
    st: St,
    who: AuthUser,
    ApiPath((id, name)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &id, Role::Editor).await?;
    if !st.store.delete_env(&id, &name).await? {
        return Err(ApiError::not_found("variable"));
    }
    st.forget_env(&id);
    tracing::info!(workflow_id = %id, name = %name, "environment variable deleted");
    st.audit(
        &who.principal,
        "env",
        "env.deleted",
        Some(&id),
        format!("deleted variable `{name}`"),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}
