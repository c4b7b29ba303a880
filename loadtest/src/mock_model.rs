//! A mock model server speaking the OpenAI-compatible chat-completions
//! protocol over real HTTP.
//!
//! Integration tests start it in-process with [`MockModel::start`] and point
//! the OpenAI base URL at [`MockModel::url`]; load tests run the
//! `weft-mock-model` binary, which calls [`serve`]. [`MockModelConfig`] sets
//! the latency, the error and hang rates, a number of deterministic first
//! failures (for retry tests) and an API key to enforce. Every chat-completion
//! request is recorded so tests can check what the client sent.
//!
//! Endpoints: `POST /v1/chat/completions`, `GET /v1/models` (one model,
//! `mock-1`) and `GET /healthz`. Errors use OpenAI's shape:
//! `{"error": {"message", "type", "param", "code"}}`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use rand::Rng;
use rand_distr::{Distribution, LogNormal};
use serde::Deserialize;
use serde_json::{json, Value};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

/// How long the mock waits before answering.
#[derive(Clone, Debug)]
pub enum Latency {
    Fixed(Duration),
    /// Uniformly distributed between `min` and `max`, both included.
    Uniform {
        min: Duration,
        max: Duration,
    },
    /// Log-normal around `median`; `sigma` is the standard deviation of the
    /// logarithm (0.5 puts the p99 at about 3.2 × the median).
    LogNormal {
        median: Duration,
        sigma: f64,
    },
}

impl Latency {
    fn sample(&self) -> Duration {
        match *self {
            Latency::Fixed(d) => d,
            Latency::Uniform { min, max } => {
                if max <= min {
                    return min;
                }
                min + (max - min).mul_f64(rand::rng().random::<f64>())
            }
            Latency::LogNormal { median, sigma } => {
                if median.is_zero() {
                    return median;
                }
                // An invalid sigma (negative, NaN) or an absurd sample falls
                // back to the median rather than failing the request.
                LogNormal::new(median.as_secs_f64().ln(), sigma)
                    .ok()
                    .and_then(|d| Duration::try_from_secs_f64(d.sample(&mut rand::rng())).ok())
                    .unwrap_or(median)
            }
        }
    }
}

/// What the mock answers.
#[derive(Clone, Debug)]
pub enum Reply {
    /// echo the last user message
    Echo,
    Fixed(String),
}

/// How the mock behaves. Probabilities are per request and exclusive: one
/// draw picks 429, 500, hang or a normal answer.
#[derive(Clone, Debug)]
pub struct MockModelConfig {
    /// Waited before every answer except 400 and 401; default `Fixed(0)`.
    pub latency: Latency,
    /// Reported in `usage`; default 16.
    pub completion_tokens: u32,
    /// Reported in `usage`; `None` estimates it as the total characters of
    /// all message contents / 4, at least 1.
    pub prompt_tokens: Option<u32>,
    /// Probability of a 429 answer; default 0.
    pub rate_429: f64,
    /// Probability of a 500 answer; default 0.
    pub rate_500: f64,
    /// Probability a request never answers (holds the connection open until
    /// the client gives up or the server stops); default 0.
    pub hang_rate: f64,
    /// The first N valid requests answer 500 (deterministic, for retry
    /// tests); default 0. Requests rejected with 400 or 401 do not count.
    pub fail_first: u32,
    /// When set, 429 answers carry `Retry-After` with this many seconds.
    pub retry_after_secs: Option<u64>,
    /// When set, require `Authorization: Bearer <key>`, else 401.
    pub api_key: Option<String>,
    /// Default [`Reply::Echo`].
    pub reply: Reply,
}

impl Default for MockModelConfig {
    fn default() -> Self {
        MockModelConfig {
            latency: Latency::Fixed(Duration::ZERO),
            completion_tokens: 16,
            prompt_tokens: None,
            rate_429: 0.0,
            rate_500: 0.0,
            hang_rate: 0.0,
            fail_first: 0,
            retry_after_secs: None,
            api_key: None,
            reply: Reply::Echo,
        }
    }
}

/// A request as received, for tests: the parsed JSON body and the headers (lowercase names).
///
/// A body that is not JSON is recorded as a JSON string holding its text.
#[derive(Clone, Debug)]
pub struct Received {
    pub body: Value,
    pub headers: Vec<(String, String)>,
}

/// A running mock: `url()` is the base URL to configure as the OpenAI base URL, i.e. "http://127.0.0.1:PORT/v1"
///
/// Dropping it stops the server; requests still waiting (latency, hang) are
/// answered 503.
pub struct MockModel {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping or sending stops the server.
    stop: Option<oneshot::Sender<()>>,
}

impl MockModel {
    /// Binds `127.0.0.1:0` and serves in a background task.
    pub async fn start(config: MockModelConfig) -> std::io::Result<MockModel> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        MockModel::on(listener, config)
    }

    /// Serves on `listener` in a background task (to come back on the port
    /// of a mock that was stopped).
    pub fn on(listener: TcpListener, config: MockModelConfig) -> std::io::Result<MockModel> {
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = run(listener, shared.clone(), async move {
            let _ = stopped.await;
        });
        tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::warn!(%error, "mock model server failed");
            }
        });
        Ok(MockModel {
            addr,
            shared,
            stop: Some(stop),
        })
    }

    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every chat-completion request so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received_lock().clone()
    }

    /// How many chat-completion requests arrived so far.
    pub fn requests(&self) -> usize {
        self.shared.received_lock().len()
    }

    /// How many connections clients opened so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

impl Drop for MockModel {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves the mock on `listener` until `shutdown` completes, then answers
/// requests still waiting with 503 and returns once connections are closed.
pub async fn serve(
    listener: TcpListener,
    config: MockModelConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run(listener, Arc::new(Shared::new(config)), shutdown).await
}

async fn run(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/models", get(models))
        .route("/healthz", get(healthz))
        .fallback(not_found)
        .with_state(shared.clone());
    let opened = shared.clone();
    let listener = listener.tap_io(move |_| {
        opened.connections.fetch_add(1, Ordering::Relaxed);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // Release hanging and sleeping requests, or graceful shutdown
            // would wait for them forever.
            shared.stop.send_replace(true);
        })
        .await
}

/// State shared by the handlers and the [`MockModel`] handle.
struct Shared {
    config: MockModelConfig,
    received: Mutex<Vec<Received>>,
    /// Valid requests so far, for `fail_first`.
    attempts: AtomicU64,
    /// Becomes true when the server stops.
    stop: watch::Sender<bool>,
    /// Connections accepted so far.
    connections: AtomicU64,
}

impl Shared {
    fn new(config: MockModelConfig) -> Self {
        Shared {
            config,
            received: Mutex::new(Vec::new()),
            attempts: AtomicU64::new(0),
            stop: watch::channel(false).0,
            connections: AtomicU64::new(0),
        }
    }

    fn received_lock(&self) -> std::sync::MutexGuard<'_, Vec<Received>> {
        // A panic while holding the lock cannot leave the Vec half-written.
        self.received.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Completes when the server stops.
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    response_format: Option<ResponseFormat>,
    #[serde(default)]
    stream: bool,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct ResponseFormat {
    #[serde(rename = "type")]
    kind: String,
}

impl Message {
    /// The text of the message; text parts joined, other parts ignored.
    fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text.as_deref())
                .collect(),
        }
    }
}

impl ChatRequest {
    fn check(&self) -> Result<(), String> {
        if self.model.is_empty() {
            return Err("model must not be empty".into());
        }
        if self.messages.is_empty() {
            return Err("messages must not be empty".into());
        }
        if let Some(m) = self.messages.iter().find(|m| m.role.is_empty()) {
            return Err(format!("message role {:?} is not valid", m.role));
        }
        if self.temperature.is_some_and(|t| !(0.0..=2.0).contains(&t)) {
            return Err("temperature must be between 0 and 2".into());
        }
        if self.max_tokens == Some(0) {
            return Err("max_tokens must be at least 1".into());
        }
        if self.stream {
            return Err("stream is not supported by the mock model".into());
        }
        Ok(())
    }
}

enum Outcome {
    Answer,
    RateLimited,
    ServerError,
    Hang,
}

/// One draw decides the fate of a request (kept out of async code: the
/// thread-local RNG is not `Send`).
fn draw_outcome(config: &MockModelConfig) -> Outcome {
    let u: f64 = rand::rng().random();
    let mut bound = config.rate_429;
    if u < bound {
        return Outcome::RateLimited;
    }
    bound += config.rate_500;
    if u < bound {
        return Outcome::ServerError;
    }
    bound += config.hang_rate;
    if u < bound {
        return Outcome::Hang;
    }
    Outcome::Answer
}

async fn chat_completions(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    shared.received_lock().push(Received {
        body: match &parsed {
            Ok(v) => v.clone(),
            Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
        },
        headers: headers
            .iter()
            .map(|(k, v)| {
                let value = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (k.as_str().to_string(), value)
            })
            .collect(),
    });
    let config = &shared.config;

    if let Some(key) = &config.api_key {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key"),
                "incorrect or missing api key; send Authorization: Bearer <key>",
            );
        }
    }
    let request = match parsed
        .map_err(|e| format!("body is not valid json: {e}"))
        .and_then(|v| ChatRequest::deserialize(v).map_err(|e| format!("invalid request: {e}")))
        .and_then(|r| r.check().map(|()| r))
    {
        Ok(r) => r,
        Err(message) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                message,
            )
        }
    };

    let attempt = shared.attempts.fetch_add(1, Ordering::Relaxed);
    let outcome = if attempt < u64::from(config.fail_first) {
        Outcome::ServerError
    } else {
        draw_outcome(config)
    };
    if let Outcome::Hang = outcome {
        shared.stopped().await;
        return shutting_down();
    }
    let delay = config.latency.sample();
    if !delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.stopped() => return shutting_down(),
        }
    }

    match outcome {
        Outcome::RateLimited => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                Some("rate_limit_exceeded"),
                "rate limit reached (mock)",
            );
            if let Some(secs) = config.retry_after_secs {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            response
        }
        Outcome::ServerError => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            None,
            "the server had an error while processing your request (mock)",
        ),
        Outcome::Hang | Outcome::Answer => Json(completion(config, &request)).into_response(),
    }
}

fn completion(config: &MockModelConfig, request: &ChatRequest) -> Value {
    let last_user = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == "user")
        .map(Message::text)
        .unwrap_or_default();
    let json_mode = request
        .response_format
        .as_ref()
        .is_some_and(|f| f.kind == "json_object");
    let content = match &config.reply {
        Reply::Echo if json_mode => json!({ "echo": last_user }).to_string(),
        Reply::Echo => last_user,
        Reply::Fixed(text) => text.clone(),
    };
    let prompt_tokens = config.prompt_tokens.unwrap_or_else(|| {
        let chars: usize = request
            .messages
            .iter()
            .map(|m| m.text().chars().count())
            .sum();
        u32::try_from(chars / 4).unwrap_or(u32::MAX).max(1)
    });
    let completion_tokens = config.completion_tokens;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "id": format!("chatcmpl-{}", uuid::Uuid::now_v7()),
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": content },
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": u64::from(prompt_tokens) + u64::from(completion_tokens),
        },
    })
}

async fn models() -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{ "id": "mock-1", "object": "model", "created": 0, "owned_by": "weft" }],
    }))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn not_found(uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        None,
        format!("unknown path {}", uri.path()),
    )
}

fn shutting_down() -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "server_error",
        None,
        "mock model is shutting down",
    )
}

/// An OpenAI-style error answer.
fn error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    message: impl Into<String>,
) -> Response {
    let body = json!({
        "error": { "message": message.into(), "type": kind, "param": null, "code": code },
    });
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_samples_stay_in_range() {
        let (min, max) = (Duration::from_millis(200), Duration::from_millis(800));
        let uniform = Latency::Uniform { min, max };
        for _ in 0..1000 {
            let d = uniform.sample();
            assert!(d >= min && d <= max, "{d:?}");
        }
        let fixed = Latency::Fixed(Duration::from_millis(5));
        assert_eq!(fixed.sample(), Duration::from_millis(5));
        let backwards = Latency::Uniform { min: max, max: min };
        assert_eq!(backwards.sample(), max);
    }

    #[test]
    fn lognormal_is_centred_on_the_median() {
        let median = Duration::from_millis(500);
        let latency = Latency::LogNormal { median, sigma: 0.5 };
        let mut samples: Vec<Duration> = (0..4001).map(|_| latency.sample()).collect();
        samples.sort();
        let observed = samples[2000].as_secs_f64();
        assert!((0.42..0.60).contains(&observed), "median {observed}");
        let bad = Latency::LogNormal {
            median,
            sigma: f64::NAN,
        };
        assert_eq!(bad.sample(), median);
        let zero = Latency::LogNormal {
            median: Duration::ZERO,
            sigma: 0.5,
        };
        assert_eq!(zero.sample(), Duration::ZERO);
    }

    #[test]
    fn outcomes_follow_the_rates() {
        let always = |rate_429, rate_500, hang_rate| MockModelConfig {
            rate_429,
            rate_500,
            hang_rate,
            ..MockModelConfig::default()
        };
        assert!(matches!(
            draw_outcome(&always(1.0, 0.0, 0.0)),
            Outcome::RateLimited
        ));
        assert!(matches!(
            draw_outcome(&always(0.0, 1.0, 0.0)),
            Outcome::ServerError
        ));
        assert!(matches!(
            draw_outcome(&always(0.0, 0.0, 1.0)),
            Outcome::Hang
        ));
        assert!(matches!(
            draw_outcome(&always(0.0, 0.0, 0.0)),
            Outcome::Answer
        ));
    }
}
