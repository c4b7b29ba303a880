//! Authentication (a middleware on every `/v1` route) and the checks
//! handlers make: [`Caller`] is whoever called (a user or an API key),
//! [`AuthUser`] refuses API keys, and [`AppState::role`] /
//! [`AppState::may_run`] decide per workflow.

use super::error::ApiError;
use super::AppState;
use crate::access::{self, Principal, Rejection, Role};
use crate::model::User;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;
use weft_shared::error::ErrorCode;

/// Whoever made the request: a user (by one of their tokens) or an API key.
#[derive(Clone)]
pub struct Caller(pub Arc<Principal>);

/// A request made as a user; API keys are refused with 403.
pub struct AuthUser {
    pub user: User,
    pub principal: Arc<Principal>,
}

fn unauthenticated(message: &str, reason: &str) -> Response {
    let mut resp = ApiError::new(ErrorCode::Unauthenticated, message)
        .details(json!({"reason": reason}))
        .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// The secret a request carries: `Authorization: Bearer …`, else `x-api-key`.
fn secret_of(req: &Request) -> Option<&str> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    bearer
        .or_else(|| req.headers().get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Resolves the request's secret into a [`Caller`] (401 when missing,
/// unknown or revoked; 429 when an API key is over its rate limit).
pub async fn authenticate(
    State(st): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(secret) = secret_of(&req) else {
        return unauthenticated(
            "send a token: `Authorization: Bearer <token>` or `x-api-key: <key>`",
            "missing",
        );
    };
    let principal = match st.auth.resolve(&st.store, secret).await {
        Err(e) => return ApiError::from(e).into_response(),
        Ok(Err(Rejection::Unknown)) => return unauthenticated("the token is not valid", "unknown"),
        Ok(Err(Rejection::Revoked)) => return unauthenticated("the token was revoked", "revoked"),
        Ok(Err(Rejection::RateLimited(wait_s))) => {
            metrics::counter!(crate::metrics::RUNS_REJECTED, "reason" => "rate_limited")
                .increment(1);
            return ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "this API key is over its rate limit ({} requests a second, api_key_rate_limit_per_s); retry later",
                    st.config.api_key_rate_limit_per_s
                ),
            )
            .retry_after(wait_s)
            .into_response();
        }
        Ok(Ok(p)) => p,
    };
    st.auth.record_use(&st.store, &principal);
    req.extensions_mut().insert(Caller(principal));
    next.run(req).await
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            // A route outside the authenticated router: a bug, not the caller's fault.
            .ok_or_else(|| ApiError::internal("route is missing authentication"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &S) -> Result<Self, Self::Rejection> {
        let Caller(p) = Caller::from_request_parts(parts, s).await?;
        match &p.user {
            Some(u) => Ok(AuthUser {
                user: u.clone(),
                principal: p.clone(),
            }),
            None => Err(ApiError::new(
                ErrorCode::Forbidden,
                "an API key can only start runs of its workflow and read those runs; use a user token",
            )),
        }
    }
}

impl AuthUser {
    /// `None` for an admin (sees everything), else the user's id: lists are
    /// narrowed to the workflows shared with it.
    pub fn visibility(&self) -> Option<String> {
        (!self.user.admin).then(|| self.user.id.clone())
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.user.admin {
            Ok(())
        } else {
            Err(ApiError::new(ErrorCode::Forbidden, "this needs an admin"))
        }
    }
}

impl AppState {
    /// The caller's role on a workflow, if it is at least `need`: admins are
    /// owners of everything; a workflow not shared with the user is 404 (its
    /// existence is not revealed); a lesser role is 403 naming both.
    pub async fn role(
        &self,
        who: &AuthUser,
        workflow_id: &str,
        need: Role,
    ) -> Result<Role, ApiError> {
        if who.user.admin {
            return Ok(Role::Owner);
        }
        match self.store.role_of(&who.user.id, workflow_id).await? {
            None => Err(ApiError::not_found("workflow")),
            Some(r) if r >= need => Ok(r),
            Some(r) => Err(ApiError::new(
                ErrorCode::Forbidden,
                format!(
                    "this needs the {} role on the workflow; you are {}",
                    need.as_str(),
                    r.as_str()
                ),
            )
            .details(json!({"workflow_id": workflow_id, "role": r, "required": need}))),
        }
    }

    /// Whether the caller may start runs of (or read runs of) a workflow: an
    /// API key only of its own (403 for another), a user with any role.
    pub async fn may_run(&self, caller: &Caller, workflow_id: &str) -> Result<(), ApiError> {
        let p = &caller.0;
        match &p.user {
            None if p.credential.workflow_id.as_deref() == Some(workflow_id) => Ok(()),
            None => Err(ApiError::new(
                ErrorCode::Forbidden,
                "this API key belongs to another workflow",
            )),
            Some(u) if u.admin => Ok(()),
            Some(u) => match self.store.role_of(&u.id, workflow_id).await? {
                Some(_) => Ok(()),
                None => Err(ApiError::not_found("workflow")),
            },
        }
    }

    /// Appends an audit event by `who`.
    pub async fn audit(
        &self,
        who: &Principal,
        category: &str,
        event: &str,
        workflow_id: Option<&str>,
        description: String,
    ) {
        let e = access::event(Some(who), category, event, workflow_id, description);
        access::append(&self.store, e).await;
    }
}
