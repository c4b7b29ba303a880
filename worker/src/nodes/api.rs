//! `api` and `async_api`: an HTTP call built from templates.
//!
//! Connect errors, 5xx and 429 are retryable (the node actor backs off,
//! honouring `Retry-After`); other statuses fail the node with `http_error`.
//! Every request carries an `Idempotency-Key` derived from the run and the
//! node, so a run placed again on another worker sends the same key and the
//! other side can refuse to charge twice. The response body is read up to
//! `max_response_bytes`. An `async_api` node then waits for a callback on a
//! per-run URL with a one-time token (`{{callback.url}}` in its templates).

use super::{Attempt, NodeError, NodeOutput, Waiting};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;
use weft_shared::error::ErrorCode;
use weft_shared::model::ApiConfig;
use weft_shared::secret::SecretString;
use weft_shared::template;

/// The key a run's node sends on every attempt and placement.
pub fn idempotency_key(run_id: &uuid::Uuid, node_id: &str) -> String {
    let digest = Sha256::digest(format!("{run_id}:{node_id}").as_bytes());
    format!("weft-{}", &hex::encode(digest)[..40])
}

fn template_err(a: &Attempt, what: &str, e: template::TemplateError) -> NodeError {
    NodeError::new(ErrorCode::TemplateError, a.scrub(&format!("{what}: {e}")))
}

/// Parses `Retry-After` in seconds (HTTP dates are rare for APIs; ignored).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Reads a body up to `limit` bytes.
pub async fn read_limited(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, NodeError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(too_large(limit));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| reading(e.to_string()))? {
        if buf.len() as u64 + chunk.len() as u64 > limit {
            return Err(too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// The response broke off while being read (worth another attempt).
pub fn reading(e: String) -> NodeError {
    NodeError::new(ErrorCode::HttpError, format!("reading the response: {e}")).retryable()
}

pub fn too_large(limit: u64) -> NodeError {
    NodeError::new(
        ErrorCode::ResponseTooLarge,
        format!("response is larger than max_response_bytes ({limit})"),
    )
}

pub async fn execute(
    a: &Attempt,
    cfg: &ApiConfig,
    is_async: bool,
) -> Result<NodeOutput, NodeError> {
    let node_id = a.node_id().to_string();
    // An async node's callback: a fresh one-time token per attempt, registered
    // with the run before the call so an early callback is not lost.
    let mut waiting = None;
    let ctx: std::borrow::Cow<Value> = if is_async {
        let base = a.run.callback_base.clone().ok_or_else(|| {
            NodeError::new(
                ErrorCode::Internal,
                "the coordinator gave no callback base URL",
            )
        })?;
        let token = uuid::Uuid::now_v7().simple().to_string()
            + &uuid::Uuid::now_v7().simple().to_string()[20..];
        let url = format!(
            "{base}/v1/callbacks/{}/{node_id}?token={token}",
            a.run.run_id
        );
        let (tx, rx) = tokio::sync::oneshot::channel();
        a.run
            .actor
            .send(crate::actors::run::NodeWaits(Waiting {
                idx: a.idx,
                token: SecretString::new(token.clone()),
                payload: tx,
            }))
            .await
            .map_err(|_| NodeError::new(ErrorCode::Internal, "run actor is gone"))?;
        waiting = Some(rx);
        let mut c = (*a.context).clone();
        c["callback"] = json!({"url": url, "token": token});
        std::borrow::Cow::Owned(c)
    } else {
        std::borrow::Cow::Borrowed(&*a.context)
    };

    let method =
        reqwest::Method::from_bytes(cfg.method.to_ascii_uppercase().as_bytes()).map_err(|_| {
            NodeError::new(
                ErrorCode::InvalidRequest,
                format!("bad method {}", cfg.method),
            )
        })?;
    let url = template::render(&cfg.url, &ctx).map_err(|e| template_err(a, "url", e))?;
    let mut req = a.env.http.request(method.clone(), &url);
    let mut query = Vec::new();
    for (k, v) in &cfg.query {
        query.push((
            template::render(k, &ctx).map_err(|e| template_err(a, "query", e))?,
            template::render(v, &ctx).map_err(|e| template_err(a, "query", e))?,
        ));
    }
    if !query.is_empty() {
        req = req.query(&query);
    }
    let mut headers = HeaderMap::new();
    headers.insert(
        HeaderName::from_static("idempotency-key"),
        HeaderValue::from_str(&idempotency_key(&a.run.run_id, &node_id))
            .expect("hex is a valid header"),
    );
    for (k, v) in &cfg.headers {
        let name = HeaderName::from_bytes(
            template::render(k, &ctx)
                .map_err(|e| template_err(a, "headers", e))?
                .as_bytes(),
        )
        .map_err(|e| NodeError::new(ErrorCode::TemplateError, format!("header name: {e}")))?;
        let value = template::render(v, &ctx).map_err(|e| template_err(a, "headers", e))?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| {
            NodeError::new(
                ErrorCode::TemplateError,
                format!("header `{name}` has a value that is not valid in a header"),
            )
        })?;
        // Values built from variables are kept out of any debug output.
        if v.contains("env.") {
            value.set_sensitive(true);
        }
        headers.insert(name, value);
    }
    if let Some(tp) = a.traceparent() {
        if let Ok(v) = HeaderValue::from_str(&tp) {
            headers.insert(HeaderName::from_static("traceparent"), v);
        }
    }
    req = req.headers(headers);
    if let Some(body) = &cfg.body {
        req =
            req.json(&template::render_value(body, &ctx).map_err(|e| template_err(a, "body", e))?);
    }

    let resp = req.send().await.map_err(|e| {
        NodeError::new(
            ErrorCode::HttpError,
            a.scrub(&format!("{method} {url}: {}", error_chain(&e))),
        )
        .retryable()
    })?;
    let status = resp.status();
    let resp_headers = resp.headers().clone();
    if status.as_u16() == 429 || status.is_server_error() {
        let mut e = NodeError::new(
            ErrorCode::HttpError,
            a.scrub(&format!("{method} {url} answered {status}")),
        )
        .retryable();
        e.retry_after = retry_after(&resp_headers);
        return Err(e);
    }
    let bytes = read_limited(resp, cfg.max_response_bytes).await?;
    if !status.is_success() {
        return Err(NodeError::new(
            ErrorCode::HttpError,
            a.scrub(&format!("{method} {url} answered {status}")),
        ));
    }
    let is_json = resp_headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    let body = if is_json {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    } else {
        Value::String(String::from_utf8_lossy(&bytes).into_owned())
    };
    let mut hmap = Map::new();
    for (k, v) in &resp_headers {
        if let Ok(v) = v.to_str() {
            hmap.insert(k.as_str().to_string(), Value::String(v.to_string()));
        }
    }
    let response = json!({"status": status.as_u16(), "headers": hmap, "body": body});
    match waiting {
        None => Ok(NodeOutput::value(response)),
        Some(rx) => {
            a.run.actor.do_send(crate::actors::run::NowWaiting(a.idx));
            // The node's deadline (wrapped around this by the node actor)
            // bounds the wait.
            let payload = rx.await.map_err(|_| {
                NodeError::new(
                    ErrorCode::Cancelled,
                    "stopped while waiting for the callback",
                )
            })?;
            Ok(NodeOutput::value(
                json!({"response": response, "callback": payload}),
            ))
        }
    }
}

/// The error and its sources on one line (reqwest hides the cause otherwise).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn idempotency_key_is_stable_per_run_and_node() {
        let run = uuid::Uuid::now_v7();
        assert_eq!(
            super::idempotency_key(&run, "a"),
            super::idempotency_key(&run, "a")
        );
        assert_ne!(
            super::idempotency_key(&run, "a"),
            super::idempotency_key(&run, "b")
        );
        assert_ne!(
            super::idempotency_key(&run, "a"),
            super::idempotency_key(&uuid::Uuid::now_v7(), "a")
        );
    }
}
