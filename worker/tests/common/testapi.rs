//! A real local HTTP API for node tests: records every request and answers
//! by path.
//!
//! | path | answer |
//! | --- | --- |
//! | `/echo` | 200, the request as JSON (method, query, headers, body) |
//! | `/flaky` | 503 on the first call, then 200 |
//! | `/limited` | 429 with `Retry-After: 1` on the first call, then 200 |
//! | `/big` | 200 with a 2 MiB body |
//! | `/slow` | waits 3 s on the first call, then 200 |
//! | `/hook` | 202; an async API target (the test calls the callback) |
//! | `/auth` | 200 `{"authorized": bool}`: whether the bearer token is `expected_token` |

#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    seen: Vec<Seen>,
    expected_token: String,
}

#[derive(Clone)]
pub struct TestApi {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl TestApi {
    pub async fn start() -> TestApi {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .route("/{*path}", axum::routing::any(handle))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestApi { url, inner }
    }

    pub fn expect_token(&self, t: &str) {
        self.inner.lock().unwrap().expected_token = t.to_string();
    }

    pub fn seen(&self, path: &str) -> Vec<Seen> {
        self.inner
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    method: Method,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/{path}");
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (calls, expected) = {
        let mut g = inner.lock().unwrap();
        g.seen.push(Seen {
            path: path.clone(),
            headers: headers.clone(),
            body: body_json.clone(),
            at: Instant::now(),
        });
        (
            g.seen.iter().filter(|s| s.path == path).count(),
            g.expected_token.clone(),
        )
    };
    match path.as_str() {
        "/echo" => {
            let hs: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
                .collect();
            axum::Json(json!({"method": method.as_str(), "query": query, "headers": hs, "body": body_json})).into_response()
        }
        "/flaky" if calls == 1 => (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response(),
        "/limited" if calls == 1 => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response(),
        "/big" => "x".repeat(2 * 1024 * 1024).into_response(),
        "/slow" => {
            if calls == 1 {
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            axum::Json(json!({"done": calls})).into_response()
        }
        "/hook" => (StatusCode::ACCEPTED, axum::Json(json!({"queued": true}))).into_response(),
        "/auth" => {
            let got = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            axum::Json(
                json!({"authorized": !expected.is_empty() && got == format!("Bearer {expected}")}),
            )
            .into_response()
        }
        _ => axum::Json(json!({"ok": true, "call": calls})).into_response(),
    }
}
