//! The coordinator's configuration. Loaded in layers by
//! [`weft_shared::config::load`]; every field can be set as `WEFT_<FIELD>`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// Where the HTTP API (and `/metrics`) listens.
    pub http_addr: String,
    /// NATS server URL(s), comma-separated.
    pub nats_url: String,
    /// First token of every NATS subject; lets clusters share a NATS server.
    pub subject_prefix: String,
    /// The run store. SQLite by default (`sqlite://FILE`, created if missing).
    pub database_url: String,
    /// A worker that has not heart-beaten for this long is declared dead and its
    /// runs are placed again (worker heartbeat interval × allowed misses).
    pub worker_dead_after_ms: u64,
    /// Runs waiting for capacity; beyond it a run request gets 429.
    pub queue_capacity: usize,
    /// The ceiling on how long any synchronous run request waits for its
    /// result, whatever a workflow's endpoint says (each workflow sets its
    /// own wait, 60–300 s, default 180 s: `sync_timeout_ms` at
    /// `PUT /v1/workflows/{id}/endpoint`). Past it the caller gets 504
    /// `sync_timeout` with the run id to poll.
    pub sync_timeout_ms: u64,
    /// The shortest sync or async timeout a workflow's endpoint may set.
    /// The documented range starts at 60 s (60000, the default); only tests
    /// lower it, to exercise the timeouts quickly. It cannot be raised.
    pub endpoint_min_timeout_ms: u64,
    /// Let push URLs point at loopback, private and link-local addresses
    /// (off: the coordinator does not post into its own network, e.g. the
    /// cloud metadata address): IP literals and `localhost` are refused when
    /// configured, and names resolving only inside at connection time.
    pub push_allow_private_targets: bool,
    /// Async push: how long a failing delivery is retried, from its first
    /// attempt; then it is marked `failed`.
    pub push_retry_for_ms: u64,
    /// Async push: how long one attempt may take (connect, send, answer).
    pub push_attempt_timeout_ms: u64,
    /// Async push: the first delay between attempts; it doubles (with
    /// jitter) up to `push_backoff_max_ms`.
    pub push_backoff_min_ms: u64,
    /// Async push: the longest delay between attempts.
    pub push_backoff_max_ms: u64,
    /// Async push: attempts in flight at once (across all workflows).
    pub push_concurrency: usize,
    /// How long a worker has to confirm an assignment (by its answer, or the
    /// run's result) before it is asked what it holds and, if the run is not
    /// among it, the run is placed again. At least 200.
    pub assign_timeout_ms: u64,
    /// After a run's workflow deadline, how long the coordinator waits for the
    /// worker's own `timed_out` report before ending the run itself.
    pub deadline_grace_ms: u64,
    /// On SIGTERM: how long in-flight requests may take to finish.
    pub shutdown_grace_ms: u64,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Largest run input accepted, in bytes of JSON (413 beyond).
    pub max_input_bytes: usize,
    /// Most nodes a workflow definition may have.
    pub max_nodes: usize,
    /// Runs of one workflow in flight (queued, running or waiting) at once;
    /// beyond it a run request gets 429. 0: no limit.
    pub max_concurrent_runs_per_workflow: usize,
    /// How long an `Idempotency-Key` on a run request keeps answering with
    /// the run it started.
    pub idempotency_retention_ms: u64,
    /// Log as JSON lines instead of text.
    pub log_json: bool,
    /// OTLP/HTTP collector base URL (e.g. `http://otel-collector:4318`):
    /// spans of requests and runs are exported there. Empty: no export.
    pub otlp_endpoint: String,
    /// The URL external systems reach this coordinator at (for async API
    /// callbacks). Empty: `http://` + the bound address (0.0.0.0 read as
    /// 127.0.0.1) — set it whenever the coordinator is behind a proxy or in a pod.
    pub public_url: String,
    /// 32 bytes, base64: the key that encrypts secure environment variables.
    /// Empty: secure variables cannot be created. Never printed.
    pub encryption_key: String,
    /// Keys that sealed values before a rotation; values are re-encrypted
    /// under `encryption_key` at start. Never printed.
    pub previous_encryption_keys: Vec<String>,
    /// The first admin's token (at least 24 characters; generate one with
    /// `openssl rand -base64 32`). At start the user `admin_name` is made an
    /// admin holding this token; a token configured before is revoked.
    /// Required. Never printed.
    pub admin_token: String,
    /// The first admin's user name.
    pub admin_name: String,
    /// Requests a second one API key may make (a token bucket); beyond it
    /// 429 `rate_limited` with `Retry-After`. 0: no limit.
    pub api_key_rate_limit_per_s: u32,
    /// How many requests an API key may make at once above its rate.
    pub api_key_rate_limit_burst: u32,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            http_addr: "0.0.0.0:8080".into(),
            nats_url: "nats://127.0.0.1:4222".into(),
            subject_prefix: "weft".into(),
            database_url: "sqlite://weft.db".into(),
            worker_dead_after_ms: 3_000,
            queue_capacity: 10_000,
            sync_timeout_ms: 300_000,
            endpoint_min_timeout_ms: crate::endpoint::TIMEOUT_MIN_MS,
            push_allow_private_targets: false,
            push_retry_for_ms: 600_000,
            push_attempt_timeout_ms: 10_000,
            push_backoff_min_ms: 1_000,
            push_backoff_max_ms: 60_000,
            push_concurrency: 32,
            assign_timeout_ms: 2_000,
            deadline_grace_ms: 2_000,
            shutdown_grace_ms: 30_000,
            max_body_bytes: 1024 * 1024,
            max_input_bytes: 256 * 1024,
            max_nodes: 200,
            max_concurrent_runs_per_workflow: 0,
            idempotency_retention_ms: 24 * 3600 * 1000,
            log_json: false,
            otlp_endpoint: String::new(),
            public_url: String::new(),
            encryption_key: String::new(),
            previous_encryption_keys: Vec::new(),
            admin_token: String::new(),
            admin_name: "admin".into(),
            api_key_rate_limit_per_s: 1_000,
            api_key_rate_limit_burst: 2_000,
        }
    }
}

impl CoordinatorConfig {
    /// Checks values that parse but make no sense.
    pub fn check(&self) -> Result<(), String> {
        if self.queue_capacity == 0 {
            return Err("queue_capacity must be at least 1".into());
        }
        // Ten times the longest a worker holds a taken run's answer.
        if self.assign_timeout_ms < 200 {
            return Err("assign_timeout_ms must be at least 200".into());
        }
        if self.worker_dead_after_ms < 100 {
            return Err("worker_dead_after_ms must be at least 100".into());
        }
        if self.sync_timeout_ms == 0 || self.sync_timeout_ms > 300_000 {
            return Err("sync_timeout_ms must be between 1 and 300000".into());
        }
        if self.endpoint_min_timeout_ms == 0
            || self.endpoint_min_timeout_ms > crate::endpoint::TIMEOUT_MIN_MS
        {
            return Err(format!(
                "endpoint_min_timeout_ms must be between 1 and {}",
                crate::endpoint::TIMEOUT_MIN_MS
            ));
        }
        if self.push_attempt_timeout_ms == 0 {
            return Err("push_attempt_timeout_ms must be at least 1".into());
        }
        if self.push_backoff_min_ms == 0 || self.push_backoff_min_ms > self.push_backoff_max_ms {
            return Err(
                "push_backoff_min_ms must be at least 1 and at most push_backoff_max_ms".into(),
            );
        }
        if self.push_concurrency == 0 {
            return Err("push_concurrency must be at least 1".into());
        }
        if !self.database_url.starts_with("sqlite:") {
            return Err(format!(
                "database_url `{}` is not supported: only sqlite: URLs for now",
                self.database_url
            ));
        }
        if self.admin_token.trim().chars().count() < 24 {
            return Err(if self.admin_token.is_empty() {
                "admin_token is not set: set WEFT_ADMIN_TOKEN to a secret of at least 24 characters (e.g. `openssl rand -base64 32`); it is the first admin's token".into()
            } else {
                "admin_token must be at least 24 characters".into()
            });
        }
        if self.admin_name.trim().is_empty() {
            return Err("admin_name must not be empty".into());
        }
        crate::secrets::Crypto::new(&self.encryption_key, &self.previous_encryption_keys)
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// `public_url`, or one made from the address the server is bound to.
    pub fn callback_base(&self, bound: std::net::SocketAddr) -> String {
        if !self.public_url.is_empty() {
            return self.public_url.trim_end_matches('/').to_string();
        }
        let host = if bound.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            bound.ip().to_string()
        };
        format!("http://{host}:{}", bound.port())
    }
}
