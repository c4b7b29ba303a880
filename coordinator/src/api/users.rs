//! Users and their tokens, API keys, sharing, and the audit log: the
//! management side of [`crate::access`].

use super::auth::{AuthUser, Caller};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::{page_limit, Page, St};
use crate::access::{self, Role};
use crate::model::{AuditEvent, Credential, CredentialKind, Share, User};
use crate::store::{AuditFilter, NewCredential, ShareRemoval};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
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

/// A new token or key: its record and its secret, shown this once.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Issued {
    #[serde(flatten)]
    pub credential: Credential,
    /// The secret: send it as `Authorization: Bearer` or `x-api-key`. Only
    /// its hash is kept; it is never shown again.
    pub secret: String,
}

/// A new user and their first token.
#[derive(Serialize, utoipa::ToSchema)]
pub struct UserCreated {
    pub user: User,
    pub token: Issued,
}

/// Who is calling.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Me {
    /// The user (none for an API key).
    pub user: Option<User>,
    /// The token or key the request carried.
    pub credential: Credential,
}

/// A workflow's sharing with one user, as set.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ShareSet {
    pub workflow_id: String,
    pub user_id: String,
    pub user_name: String,
    pub role: Role,
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
) -> Result<Issued, ApiError> {
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
    Ok(Issued {
        credential: record,
        secret,
    })
}

// ---- me and users ---------------------------------------------------------

/// Who the caller is: the user, or the API key and its workflow.
#[utoipa::path(
    get,
    path = "/v1/me",
    operation_id = "me",
    tag = "access",
    summary = "Who the token belongs to",
    responses((status = 200, description = "The user (none for an API key) and the credential used", body = Me))
)]
pub async fn me(caller: Caller) -> impl IntoResponse {
    let p = &caller.0;
    Json(Me {
        user: p.user.clone(),
        credential: p.credential.clone(),
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 1 to 100 characters, unique.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
    /// An admin sees and may do everything.
    #[serde(default)]
    admin: bool,
}

/// Admins create users; the answer holds the user's first token, shown once.
#[utoipa::path(
    post,
    path = "/v1/users",
    operation_id = "create_user",
    tag = "access",
    summary = "Create a user (admins); the answer holds their first token, shown once",
    request_body(content = NewUser),
    responses(
        (status = 201, description = "Created", body = UserCreated,
            headers(("location" = String, description = "The user's URL"))),
        (status = 400, description = "`invalid_request` or `invalid_json`", body = ErrorBody),
        (status = 409, description = "`conflict`: the name is taken", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    )
)]
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
        Json(UserCreated { user, token }),
    ))
}

/// Every user's id and name (to share workflows with them).
#[utoipa::path(
    get,
    path = "/v1/users",
    operation_id = "list_users",
    tag = "access",
    summary = "List users (one page)",
    responses((status = 200, description = "Every user", body = Page<User>))
)]
pub async fn list_users(st: St, _who: AuthUser) -> Result<impl IntoResponse, ApiError> {
    Ok(Json(Page::all(st.store.list_users().await?)))
}

#[utoipa::path(
    get,
    path = "/v1/users/{id}",
    operation_id = "get_user",
    tag = "access",
    summary = "Read a user",
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
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

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCredentialBody {
    /// 1 to 100 characters, to tell it apart.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    name: String,
}

#[utoipa::path(
    post,
    path = "/v1/users/{id}/tokens",
    operation_id = "create_user_token",
    tag = "access",
    summary = "Create a token for a user (the user or an admin); its secret is shown once",
    params(("id" = String, Path, description = "User id")),
    request_body(content = NewCredentialBody),
    responses(
        (status = 201, description = "Created", body = Issued),
        (status = 400, description = "`invalid_request` or `invalid_json`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    )
)]
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
            token.credential.name, user.name
        ),
    )
    .await;
    Ok((StatusCode::CREATED, Json(token)))
}

#[utoipa::path(
    get,
    path = "/v1/users/{id}/tokens",
    operation_id = "list_user_tokens",
    tag = "access",
    summary = "A user's tokens (the user or an admin; one page, never the secrets)",
    params(("id" = String, Path, description = "User id")),
    responses((status = 200, description = "Every token, revoked ones too", body = Page<Credential>))
)]
pub async fn list_tokens(
    st: St,
    who: AuthUser,
    ApiPath(user_id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    self_or_admin(&who, &user_id)?;
    let items = st.store.list_credentials(None, Some(&user_id)).await?;
    Ok(Json(Page::all(items)))
}

#[utoipa::path(
    post,
    path = "/v1/users/{id}/tokens/{token_id}/revoke",
    operation_id = "revoke_user_token",
    tag = "access",
    summary = "Revoke a user's token at once",
    params(("id" = String, Path, description = "User id"), ("token_id" = String, Path, description = "Token id")),
    responses(
        (status = 200, description = "The token, revoked", body = Credential),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
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
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/keys",
    operation_id = "create_api_key",
    tag = "access",
    summary = "Create an API key for a workflow (editors); its secret is shown once",
    description = "The key may only start runs of this workflow and read those runs.",
    params(("id" = String, Path, description = "Workflow id")),
    request_body(content = NewCredentialBody),
    responses(
        (status = 201, description = "Created", body = Issued),
        (status = 400, description = "`invalid_request` or `invalid_json`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such workflow", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    )
)]
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
            key.credential.name, key.credential.prefix
        ),
    )
    .await;
    Ok((StatusCode::CREATED, Json(key)))
}

#[utoipa::path(
    get,
    path = "/v1/workflows/{id}/keys",
    operation_id = "list_api_keys",
    tag = "access",
    summary = "A workflow's API keys (editors; one page): name, prefix, created, last used, revoked",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "Every key, revoked ones too; never the secrets", body = Page<Credential>),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
pub async fn list_keys(
    st: St,
    who: AuthUser,
    ApiPath(workflow_id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &workflow_id, Role::Editor).await?;
    let items = st.store.list_credentials(Some(&workflow_id), None).await?;
    Ok(Json(Page::all(items)))
}

/// Revokes a key at once: its next request gets 401. It stays listed.
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/keys/{key_id}/revoke",
    operation_id = "revoke_api_key",
    tag = "access",
    summary = "Revoke an API key at once (its next request gets 401)",
    params(("id" = String, Path, description = "Workflow id"), ("key_id" = String, Path, description = "Key id")),
    responses(
        (status = 200, description = "The key, revoked", body = Credential),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
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

#[utoipa::path(
    get,
    path = "/v1/workflows/{id}/shares",
    operation_id = "list_shares",
    tag = "access",
    summary = "Who the workflow is shared with, and as what (one page)",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "Every share", body = Page<Share>),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
pub async fn list_shares(
    st: St,
    who: AuthUser,
    ApiPath(workflow_id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    st.role(&who, &workflow_id, Role::Viewer).await?;
    let items = st.store.list_shares(&workflow_id).await?;
    Ok(Json(Page::all(items)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ShareBody {
    /// `owner`, `editor` or `viewer`.
    #[schema(value_type = Role)]
    role: String,
}

/// Owners share a workflow with a user as owner, editor or viewer.
#[utoipa::path(
    put,
    path = "/v1/workflows/{id}/shares/{user_id}",
    operation_id = "put_share",
    tag = "access",
    summary = "Share a workflow with a user as owner, editor or viewer (owners)",
    params(("id" = String, Path, description = "Workflow id"), ("user_id" = String, Path, description = "User id")),
    request_body(content = ShareBody),
    responses(
        (status = 200, description = "Shared", body = ShareSet),
        (status = 400, description = "`invalid_request`: not a role", body = ErrorBody),
        (status = 404, description = "`not_found`: no such workflow or user", body = ErrorBody),
        (status = 409, description = "`conflict`: that would leave no owner", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    )
)]
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
    Ok(Json(ShareSet {
        workflow_id,
        user_id: user.id,
        user_name: user.name,
        role,
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/workflows/{id}/shares/{user_id}",
    operation_id = "delete_share",
    tag = "access",
    summary = "Stop sharing a workflow with a user (owners)",
    params(("id" = String, Path, description = "Workflow id"), ("user_id" = String, Path, description = "User id")),
    responses(
        (status = 204, description = "No longer shared"),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: the workflow's last owner", body = ErrorBody),
    )
)]
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

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// At or after (Unix ms).
    #[param(maximum = 9223372036854775807_u64)]
    from_ms: Option<u64>,
    /// Before (Unix ms).
    #[param(maximum = 9223372036854775807_u64)]
    to_ms: Option<u64>,
    /// `auth`, `workflow`, `key`, `sharing`, `env`, `user`, `run`, `system`.
    category: Option<String>,
    /// E.g. `workflow.deployed`.
    event: Option<String>,
    user_id: Option<String>,
    workflow_id: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// The audit log, newest first. Admins read all of it; other users their
/// own actions.
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "list_audit_events",
    tag = "access",
    summary = "The audit log, newest first (admins: all; others: their own events)",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of events", body = Page<AuditEvent>),
        (status = 400, description = "`invalid_request`: a bad filter, limit or cursor", body = ErrorBody),
    )
)]
pub async fn audit(
    st: St,
    who: AuthUser,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<impl IntoResponse, ApiError> {
    super::check_time_range(q.from_ms, q.to_ms)?;
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
    let next_cursor = (items.len() == filter.limit as usize)
        .then(|| items.last().map(|e| e.seq.to_string()))
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}
