//! The callback an external system calls to resume an `async_api` node: a
//! per-run URL with a one-time token. The coordinator forwards it to the
//! worker holding the run, which checks the token and resumes the node.

use super::error::{ApiBytes, ApiError, ApiPath, ApiQuery, ErrorBody};
use super::St;
use crate::dispatch::Cmd;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use weft_shared::error::ErrorCode;
use weft_shared::secret::SecretString;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The one-time token in the callback URL the node handed out.
    token: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Resumed {
    /// Always `resumed`.
    status: &'static str,
}

#[utoipa::path(
    post,
    path = "/v1/callbacks/{run_id}/{node_id}",
    operation_id = "resume_callback",
    tag = "callbacks",
    summary = "Resume an `async_api` node waiting for this callback",
    description = "The URL (with its token) is what the node sent the external system. \
        Any JSON body is the payload; an empty body is null; any other body is a string.",
    params(
        ("run_id" = String, Path, description = "Run id"),
        ("node_id" = String, Path, description = "Node id"),
        TokenQuery,
    ),
    request_body(content = Option<Value>, description = "The payload: any JSON, or any other body (taken as a string), or none"),
    responses(
        (status = 202, description = "The node resumes", body = Resumed),
        (status = 403, description = "`forbidden`: the token is missing or not valid for this node", body = ErrorBody),
        (status = 404, description = "`not_found`: no such run in flight", body = ErrorBody),
        (status = 409, description = "`conflict`: the node is not waiting for a callback", body = ErrorBody),
        (status = 413, description = "`payload_too_large`", body = ErrorBody),
    )
)]
pub async fn callback(
    st: St,
    ApiPath((run_id, node_id)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<TokenQuery>,
    ApiBytes(body): ApiBytes,
) -> Result<impl IntoResponse, ApiError> {
    let run_id = Uuid::parse_str(&run_id).map_err(|_| ApiError::not_found("run"))?;
    let token = q.token.ok_or_else(|| {
        ApiError::new(
            ErrorCode::Forbidden,
            "the callback URL's `token` is missing",
        )
    })?;
    // Any JSON body is the payload; an empty body is null; other text is a string.
    let payload = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    st.dispatch.send(Cmd::Callback {
        run_id,
        node_id,
        token: SecretString::new(token),
        payload,
        reply: tx,
    });
    let outcome = rx.await.unwrap_or_else(|_| "unknown_run".into());
    match outcome.as_str() {
        "resumed" => Ok((StatusCode::ACCEPTED, Json(Resumed { status: "resumed" }))),
        "bad_token" => Err(ApiError::new(
            ErrorCode::Forbidden,
            "the callback token is not valid for this node",
        )),
        "not_waiting" => Err(ApiError::new(
            ErrorCode::Conflict,
            "the node is not waiting for a callback (already resumed?)",
        )),
        "unknown_run" => Err(ApiError::not_found("run")),
        other => Err(ApiError::new(
            ErrorCode::Internal,
            format!("could not reach the run's worker: {other}"),
        )),
    }
}
