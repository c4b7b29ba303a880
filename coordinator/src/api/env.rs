//! Environment variables per workflow: create, list, read, update, delete.
//! A secure variable's value is encrypted at rest and never returned (the API
//! shows `"value": null` and `"secure": true`); it is decrypted only when a run
//! that names it is dispatched.

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiPath};
use super::St;
use crate::access::Role;
use crate::model::EnvVarRow;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use weft_shared::error::ErrorCode;
use weft_shared::time::now_ms;

/// A variable as the API shows it.
#[derive(Serialize)]
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    value: String,
    #[serde(default)]
    secure: bool,
    #[serde(default)]
    notes: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateBody {
    value: Option<String>,
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
    Ok(Json(json!({"items": items, "next_cursor": null})))
}

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
