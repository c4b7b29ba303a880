//! Users and their tokens, API keys, sharing, and the audit log: the
//! management side of [`crate::access`].

use super::auth::{AuthUser, Caller};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery};
use super::{page_limit, St};
use crate::access::{self, Role};
use crate::model::{Credential, CredentialKind};
use crate::store::{AuditFilter, NewCredential, ShareRemoval};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use weft_shared::error::ErrorCode;
use weft_shared::time::now_ms;

/// Names of users, tokens and keys: 1 to 100 characters, no control ones.
fn check_name(what: &str, name: &str) -> Result<String, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("{what} name must be 1 to 100 characters, without control characters"),
        ));
    }
    Ok(name.to_string())
}

/// Creates a credential and returns its record with the secret, which is
/// shown this once.
async fn issue(
    st: &St,
    kind: CredentialKind,
    user_id: Option<&str>,
    workflow_id: Option<&str>,
    name: String,
    by: &str,
) -> Result<Value, ApiError> {
    let secret = access::new_secret(kind);
    let record = Credential {
        id: Uuid::now_v7().to_string(),
        kind,
        user_id: user_id.map(str::to_string),
        workflow_id: workflow_id.map(str::to_string),
        name,
        prefix: access::secret_prefix(&secret),
        created_at_ms: now_ms(),
        created_by: Some(by.to_string()),
        last_used_ms: None,
        revoked_at_ms: None,
    };
    st.store
        .create_credential(&NewCredential {
            secret_hash: access::hash_secret(&secret),
            record: record.clone(),
        })
        .await?;
    let mut v = serde_json::to_value(&record).map_err(ApiError::internal)?;
    v["secret"] = Value::String(secret);
    Ok(v)
}

// ---- me and users ---------------------------------------------------------

/// Who the caller is: the user, or the API key and its workflow.
pub async fn me(caller: Caller) -> impl IntoResponse {
    let p = &caller.0;
    Json(json!({"user": p.user, "credential": p.credential}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    #[serde(default)]
    admin: bool,
}

/// Admins create users; the answer holds the user's first token, shown once.
pub async fn create_user(
    st: St,
    who: AuthUser,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<impl IntoResponse, ApiError> {
    who.require_admin()?;
    let name = check_name("user", &body.name)?;
    let user = st
        .store
        .create_user(&name, body.admin, Some(&who.user.id))
        .await?
        .ok_or_else(|| {
            ApiError::new(ErrorCode::Conflict, format!("a user named `{name}` exists"))
        })?;
    let token = issue(
        &st,
        CredentialKind::UserToken,
        Some(&user.id),
        None,
        "initial".into(),
        &who.user.id,
    )
    .await?;
    st.audit(
        &who.principal,
        "user",
        "user.created",
        None,
        format!(
            "created user `{}`{}",
            user.name,
            if user.admin { " (admin)" } else { "" }
        ),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        [("location", format!("/v1/users/{}", user.id))],
        Json(json!({"user": user, "token": token})),
    ))
}

/// Every user's id and name (to share workflows with them).
pub async fn list_users(st: St, _who: AuthUser) -> Result<impl IntoResponse, ApiError> {
    let items = st.store.list_users().await?;
    Ok(Json(json!({"items": items, "next_cursor": null})))
}

pub async fn get_user(
    st: St,
    _who: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let user = st
        .store
        .get_user(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    Ok(Json(user))
}

/// A user manages their own tokens; an admin anyone's.
fn self_or_admin(who: &AuthUser, user_id: &str) -> Result<(), ApiError> {
    if who.user.admin || who.user.id == user_id {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            "only the user or an admin manages a user's tokens",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCredentialBody {
    name: String,
}

pub async fn create_token(
    st: St,
    who: AuthUser,
    ApiPath(user_id): ApiPath<String>,
    ApiJson(body): ApiJson<NewCredentialBody>,
) -> Result<impl IntoResponse, ApiError> {
    self_or_admin(&who, &user_id)?;
    let name = check_name("token", &body.name)?;
    let user = st
        .store
        .get_user(&user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    let token = issue(
        &st,
        CredentialKind::UserToken,
        Some(&user.id),
        None,
        name,
        &who.user.id,
    )
    .await?;
    st.audit(
        &who.principal,
        "auth",
        "token.created",
        None,
        format!(
            "created token `{}` for user `{}`",
            token["name"].as_str().unwrap_or_default(),
            user.name
        ),
    )
    .await;
    Ok((StatusCode::CREATED, Json(token)))
}

pub async fn list_tokens(
    st: St,
    who: AuthUser,
    ApiPath(user_id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    self_or_admin(&who, &user_id)?;
    let items = st.store.list_credentials(None, Some(&user_id)).await?;
    Ok(Json(json!({"items": items, "next_cursor": null})))
}

pub async fn revoke_token(
    st: St,
    who: AuthUser,
    ApiPath((user_id, token_id)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    self_or_admin(&who, &user_id)?;
    let cred = st
        .store
        .revoke_credential(&token_id, None, Some(&user_id))
        .await?
        .ok_or_else(|| ApiError::not_found("token"))?;
    st.auth.forget(&cred.id);
    st.audit(
        &who.principal,
        "auth",
        "token.revoked",
        None,
        format!("revoked token `{}` ({})", cred.name, cred.prefix),
    )
    .await;
    Ok(Json(cred))
}

// ---- API keys -------------------------------------------------------------

/// Editors and owners manage a workflow's API keys.
pub async fn create_key(
    st: St,
    who: AuthUser,
    ApiPath(workflow_id): ApiPath<String>,
    ApiJson(body): ApiJson<NewCredentialBody>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &workflow_id, Role::Editor).await?;
    let name = check_name("key", &body.name)?;
    st.store
        .get_workflow(&workflow_id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    let key = issue(
        &st,
        CredentialKind::ApiKey,
        None,
        Some(&workflow_id),
        name,
        &who.user.id,
    )
    .await?;
    st.audit(
        &who.principal,
        "key",
        "key.created",
        Some(&workflow_id),
        format!(
            "created API key `{}` ({})",
            key["name"].as_str().unwrap_or_default(),
            key["prefix"].as_str().unwrap_or_default()
        ),
    )
    .await;
    Ok((StatusCode::CREATED, Json(key)))
}

pub async fn list_keys(
    st: St,
    who: AuthUser,
    ApiPath(workflow_id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &workflow_id, Role::Editor).await?;
    let items = st.store.list_credentials(Some(&workflow_id), None).await?;
    Ok(Json(json!({"items": items, "next_cursor": null})))
}

/// Revokes a key at once: its next request gets 401. It stays listed.
pub async fn revoke_key(
    st: St,
    who: AuthUser,
    ApiPath((workflow_id, key_id)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &workflow_id, Role::Editor).await?;
    let cred = st
        .store
        .revoke_credential(&key_id, Some(&workflow_id), None)
        .await?
        .ok_or_else(|| ApiError::not_found("key"))?;
    st.auth.forget(&cred.id);
    st.audit(
        &who.principal,
        "key",
        "key.revoked",
        Some(&workflow_id),
        format!("revoked API key `{}` ({})", cred.name, cred.prefix),
    )
    .await;
    Ok(Json(cred))
}

// ---- sharing --------------------------------------------------------------

pub async fn list_shares(
    st: St,
    who: AuthUser,
    ApiPath(workflow_id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &workflow_id, Role::Viewer).await?;
    let items = st.store.list_shares(&workflow_id).await?;
    Ok(Json(json!({"items": items, "next_cursor": null})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareBody {
    role: String,
}

/// Owners share a workflow with a user as owner, editor or viewer.
pub async fn put_share(
    st: St,
    who: AuthUser,
    ApiPath((workflow_id, user_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ShareBody>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &workflow_id, Role::Owner).await?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("role `{}` is not owner, editor or viewer", body.role),
        )
    })?;
    st.store
        .get_workflow(&workflow_id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    let user = st
        .store
        .get_user(&user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("user"))?;
    if !st
        .store
        .set_share(&workflow_id, &user.id, role, &who.user.id)
        .await?
    {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "this is the workflow's last owner; make someone else owner first",
        ));
    }
    st.audit(
        &who.principal,
        "sharing",
        "share.granted",
        Some(&workflow_id),
        format!("shared with `{}` as {}", user.name, role.as_str()),
    )
    .await;
    Ok(Json(
        json!({"workflow_id": workflow_id, "user_id": user.id, "user_name": user.name, "role": role}),
    ))
}

pub async fn delete_share(
    st: St,
    who: AuthUser,
    ApiPath((workflow_id, user_id)): ApiPath<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &workflow_id, Role::Owner).await?;
    match st.store.remove_share(&workflow_id, &user_id).await? {
        ShareRemoval::Removed => {}
        ShareRemoval::NotShared => return Err(ApiError::not_found("share")),
        ShareRemoval::LastOwner => {
            return Err(ApiError::new(
                ErrorCode::Conflict,
                "this is the workflow's last owner; make someone else owner first",
            ))
        }
    }
    let name = st
        .store
        .get_user(&user_id)
        .await?
        .map(|u| u.name)
        .unwrap_or_else(|| user_id.clone());
    st.audit(
        &who.principal,
        "sharing",
        "share.revoked",
        Some(&workflow_id),
        format!("stopped sharing with `{name}`"),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- audit log ------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    category: Option<String>,
    event: Option<String>,
    user_id: Option<String>,
    workflow_id: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// The audit log, newest first. Admins read all of it; other users their
/// own actions.
pub async fn audit(
    st: St,
    who: AuthUser,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<impl IntoResponse, ApiError> {
    if let (Some(f), Some(t)) = (q.from_ms, q.to_ms) {
        if f >= t {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "from_ms must be before to_ms",
            ));
        }
    }
    let user_id = if who.user.admin {
        q.user_id
    } else {
        match q.user_id {
            Some(u) if u != who.user.id => {
                return Err(ApiError::new(
                    ErrorCode::Forbidden,
                    "only admins read other users' audit events",
                ))
            }
            _ => Some(who.user.id.clone()),
        }
    };
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(c.parse::<i64>().map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("cursor `{c}` is not one this list gave"),
            )
        })?),
    };
    let filter = AuditFilter {
        from_ms: q.from_ms,
        to_ms: q.to_ms,
        category: q.category,
        event: q.event,
        user_id,
        workflow_id: q.workflow_id,
        before,
        limit: page_limit(q.limit)?,
    };
    let items = st.store.list_audit(&filter).await?;
    let next = (items.len() == filter.limit as usize)
        .then(|| items.last().map(|e| e.seq.to_string()))
        .flatten();
    Ok(Json(json!({"items": items, "next_cursor": next})))
}
