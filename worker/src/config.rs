//! The worker's configuration. Loaded in layers by
//! [`weft_shared::config::load`]; every field can be set as `WEFT_<FIELD>`.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// This worker's id in the registry and in its NATS subjects. Empty: the
    /// host name plus a random suffix.
    pub worker_id: String,
    /// NATS server URL(s), comma-separated.
    pub nats_url: String,
    /// First token of every NATS subject (must match the coordinator's).
    pub subject_prefix: String,
    /// Runs this worker holds at once; beyond it, assignments are refused.
    pub capacity: u32,
    /// How often the worker announces itself. The coordinator declares it dead
    /// after `worker_dead_after_ms` (by default three intervals) of silence.
    pub heartbeat_interval_ms: u64,
    /// On SIGTERM: how long runs in flight may take to finish. Match the
    /// pod's `terminationGracePeriodSeconds` to it.
    pub drain_grace_ms: u64,
    /// actix arbiters (threads) for run and node actors; 0 = one per core.
    pub arbiters: usize,
    /// Memory limit of one script's JavaScript runtime.
    pub script_memory_limit_bytes: usize,
    /// Scripts running at once (each on a blocking thread); 0 = one per core.
    pub script_concurrency: usize,
    /// Where `/metrics`, `/healthz` and `/readyz` listen; empty = off.
    pub metrics_addr: String,
    /// Speak HTTP/2 without negotiation (h2c) to plain-http model servers,
    /// so concurrent model calls share one connection instead of holding one
    /// each, through a lean client (`nodes/h2c.rs`: a waiting call costs its
    /// stream, not a full reqwest request). Only for servers that accept it
    /// (vLLM behind an h2c proxy, the mock); https model APIs negotiate
    /// HTTP/2 by ALPN without this.
    pub model_http2_prior_knowledge: bool,
    /// Largest run output (JSON bytes); a larger one fails the run with
    /// `output_too_large`.
    pub max_output_bytes: usize,
    /// Honour the `fault` field of nodes (panic, hang). For tests and chaos
    /// runs only.
    pub fault_injection: bool,
    /// Log JSON lines instead of text.
    pub log_json: bool,
    /// OTLP/HTTP collector base URL (e.g. `http://otel-collector:4318`):
    /// spans per run and node are exported there. Empty: no export.
    pub otlp_endpoint: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            worker_id: String::new(),
            nats_url: "nats://127.0.0.1:4222".into(),
            subject_prefix: "weft".into(),
            capacity: 1_000,
            heartbeat_interval_ms: 1_000,
            drain_grace_ms: 30_000,
            arbiters: 0,
            script_memory_limit_bytes: 64 * 1024 * 1024,
            script_concurrency: 0,
            metrics_addr: "0.0.0.0:9091".into(),
            model_http2_prior_knowledge: false,
            max_output_bytes: 1024 * 1024,
            fault_injection: false,
            log_json: false,
            otlp_endpoint: String::new(),
        }
    }
}

impl WorkerConfig {
    pub fn check(&self) -> Result<(), String> {
        if !self.worker_id.is_empty() && !weft_shared::subjects::valid_worker_id(&self.worker_id) {
            return Err(format!(
                "worker_id `{}` may hold only letters, digits, `-` and `_` (128 at most)",
                self.worker_id
            ));
        }
        if self.capacity == 0 {
            return Err("capacity must be at least 1".into());
        }
        if self.heartbeat_interval_ms < 10 {
            return Err("heartbeat_interval_ms must be at least 10".into());
        }
        if self.script_memory_limit_bytes < 1024 * 1024 {
            return Err("script_memory_limit_bytes must be at least 1 MiB".into());
        }
        Ok(())
    }

    /// The configured id, or one made from the host name.
    pub fn resolved_worker_id(&self) -> String {
        if !self.worker_id.is_empty() {
            return self.worker_id.clone();
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .unwrap_or_else(|| "worker".into());
        let host: String = host
            .trim()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        let suffix = uuid::Uuid::now_v7().simple().to_string();
        let suffix = &suffix[suffix.len() - 8..];
        format!(
            "{}-{}",
            if host.is_empty() { "worker" } else { &host },
            suffix
        )
    }
}
