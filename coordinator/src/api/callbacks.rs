//! The callback an external system calls to resume an `async_api` node: a
//! per-run URL with a one-time token. The coordinator forwards it to the
//! worker holding the run, which checks the token and resumes the node.

use super::error::{ApiBytes, ApiError, ApiPath, ApiQuery};
use super::St;
use crate::dispatch::Cmd;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;
use weft_shared::error::ErrorCode;
use weft_shared::secret::SecretString;

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

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
        "resumed" => Ok((StatusCode::ACCEPTED, Json(json!({"status": "resumed"})))),
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
