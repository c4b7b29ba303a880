//! Weft's HTTP API as the load generator uses it: setting a scenario up
//! (create, environment, deploy), and the two kinds of request it measures —
//! a sync run ([`SyncRun`]) and an async run polled to its end ([`AsyncRun`]).
//!
//! Error kinds: `http_<status>` for a refused submission, `poll_http_<status>`
//! for a failed status read, `timeout`, `connect`, `request`, `bad_response`
//! for transport trouble, and `run_<status>` (`run_failed`, `run_timed_out`,
//! `run_cancelled`) for runs that ended other than `succeeded`.

use crate::driver::Op;
use crate::error::LoadError;
use crate::recorder::{ErrorKind, Outcome};
use bytes::Bytes;
use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::{json, Value};
use std::borrow::Cow;
use std::future::Future;
use std::time::{Duration, Instant};

/// The token requests carry: `WEFT_TOKEN`, else the one `chaos` configures
/// its own coordinator with. (`loadtest/cluster.sh` sets `WEFT_TOKEN`.)
pub fn token() -> String {
    std::env::var("WEFT_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| "weft-load-local-admin-token-00000000".to_string())
}

/// The HTTP client every command measures with: keep-alive, no Nagle, no
/// proxy (loopback only), `timeout` per request, the [`token`] as bearer.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, LoadError> {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut auth = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token()))
        .map_err(|_| LoadError::Other("WEFT_TOKEN is not a valid header value".into()))?;
    auth.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, auth);
    reqwest::Client::builder()
        .default_headers(headers)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .tcp_nodelay(true)
        .no_proxy()
        .build()
        .map_err(|e| LoadError::Other(format!("cannot build the HTTP client: {e}")))
}

/// The error kind of a request that got no HTTP answer.
pub fn transport_kind(e: &reqwest::Error) -> ErrorKind {
    if e.is_timeout() {
        Cow::Borrowed("timeout")
    } else if e.is_connect() {
        Cow::Borrowed("connect")
    } else if e.is_decode() || e.is_body() {
        Cow::Borrowed("bad_response")
    } else {
        Cow::Borrowed("request")
    }
}

/// `http_429`, `poll_http_404`…
pub fn status_kind(prefix: &str, status: u16) -> ErrorKind {
    Cow::Owned(format!("{prefix}{status}"))
}

/// Is a run status final?
pub fn is_terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "timed_out" | "cancelled")
}

/// `succeeded` is a success; any other status an error `run_<status>`.
pub fn run_outcome(status: &str) -> Outcome {
    match status {
        "succeeded" => Ok(()),
        "failed" => Err(Cow::Borrowed("run_failed")),
        "timed_out" => Err(Cow::Borrowed("run_timed_out")),
        "cancelled" => Err(Cow::Borrowed("run_cancelled")),
        other => Err(Cow::Owned(format!("run_{other}"))),
    }
}

/// The one field of a run record the load generator reads.
#[derive(Deserialize)]
struct RunStatus {
    status: String,
}

#[derive(Deserialize)]
struct Accepted {
    run_id: String,
}

/// A worker as `GET /v1/workers` lists it.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct WorkerView {
    pub worker_id: String,
    pub capacity: u32,
    /// Runs the coordinator placed on it and has not seen finish.
    pub assigned: u64,
    pub reported_inflight: u64,
}

#[derive(Deserialize)]
struct Workers {
    items: Vec<WorkerView>,
}

/// Weft's API at one base URL.
#[derive(Clone)]
pub struct Weft {
    http: reqwest::Client,
    base: String,
}

impl Weft {
    pub fn new(base_url: &str, http: reqwest::Client) -> Weft {
        Weft {
            http,
            base: base_url.trim_end_matches('/').to_string(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn post(&self, path: &str, body: &Value, what: &str) -> Result<Value, LoadError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .map_err(|e| LoadError::api(what, format!("{e} (is Weft at {}?)", self.base)))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| LoadError::api(what, e))?;
        if !status.is_success() {
            return Err(LoadError::api(what, format!("HTTP {status}: {text}")));
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| LoadError::api(what, e))
    }

    /// Creates `definition`, sets `env` (plain variables), deploys it, and
    /// returns the workflow id.
    pub async fn setup(
        &self,
        definition: &Value,
        env: &[(&str, &str)],
    ) -> Result<String, LoadError> {
        let created = self
            .post("/v1/workflows", definition, "creating the workflow")
            .await?;
        let id = created["id"]
            .as_str()
            .ok_or_else(|| LoadError::api("creating the workflow", format!("no id in {created}")))?
            .to_string();
        for (name, value) in env {
            // Not `secure`: a local cluster has no encryption key, and the
            // mock's URL and key are no secrets.
            let body = json!({"name": name, "value": value, "secure": false, "notes": "weft-load"});
            self.post(
                &format!("/v1/workflows/{id}/env"),
                &body,
                "setting the environment",
            )
            .await?;
        }
        self.post(
            &format!("/v1/workflows/{id}/deploy"),
            &json!({}),
            "deploying the workflow",
        )
        .await?;
        Ok(id)
    }

    /// `POST /v1/workflows/{id}/runs?mode=…` as a URL.
    pub fn runs_url(&self, workflow_id: &str, mode: &str) -> String {
        format!("{}/v1/workflows/{workflow_id}/runs?mode={mode}", self.base)
    }

    pub async fn workers(&self) -> Result<Vec<WorkerView>, LoadError> {
        let what = "listing the workers";
        let response = self
            .http
            .get(format!("{}/v1/workers", self.base))
            .send()
            .await
            .map_err(|e| LoadError::api(what, e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(LoadError::api(what, format!("HTTP {status}")));
        }
        let workers: Workers = response.json().await.map_err(|e| LoadError::api(what, e))?;
        Ok(workers.items)
    }

    /// Submits an async run; its id, or the error kind.
    pub async fn submit_async(&self, url: &str, body: Bytes) -> Result<String, ErrorKind> {
        let response = self
            .http
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| transport_kind(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_kind("http_", status.as_u16()));
        }
        let bytes = response.bytes().await.map_err(|e| transport_kind(&e))?;
        serde_json::from_slice::<Accepted>(&bytes)
            .map(|a| a.run_id)
            .map_err(|_| Cow::Borrowed("bad_response"))
    }

    /// The status of a run.
    pub async fn run_status(&self, run_id: &str) -> Result<String, ErrorKind> {
        let response = self
            .http
            .get(format!("{}/v1/runs/{run_id}", self.base))
            .send()
            .await
            .map_err(|e| transport_kind(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_kind("poll_http_", status.as_u16()));
        }
        let bytes = response.bytes().await.map_err(|e| transport_kind(&e))?;
        serde_json::from_slice::<RunStatus>(&bytes)
            .map(|r| r.status)
            .map_err(|_| Cow::Borrowed("bad_response"))
    }

    /// Asks for a run to be cancelled; whether it was.
    pub async fn cancel(&self, run_id: &str) -> bool {
        self.http
            .post(format!("{}/v1/runs/{run_id}/cancel", self.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

/// `POST …/runs?mode=sync`: the run's latency is the request's.
pub struct SyncRun {
    pub http: reqwest::Client,
    /// Parsed once: parsing it for every request cost the generator a tenth
    /// of its CPU, taken from the cluster it measures.
    pub url: reqwest::Url,
    /// `{"input": …}`, serialised once.
    pub body: Bytes,
}

impl Op for SyncRun {
    fn call(&self) -> impl Future<Output = Outcome> + Send {
        let request = self
            .http
            .post(self.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(self.body.clone());
        async move {
            let response = request.send().await.map_err(|e| transport_kind(&e))?;
            let status = response.status();
            if !status.is_success() {
                return Err(status_kind("http_", status.as_u16()));
            }
            let bytes = response.bytes().await.map_err(|e| transport_kind(&e))?;
            let run: RunStatus =
                serde_json::from_slice(&bytes).map_err(|_| Cow::Borrowed("bad_response"))?;
            run_outcome(&run.status)
        }
    }
}

/// `POST …/runs?mode=async`, then `GET /v1/runs/{id}` every `poll` until the
/// run is final: the latency runs from the submission to the poll that saw
/// the end, so it overstates the true one by up to one poll interval (half
/// of one on average), and the polls themselves load the coordinator
/// (runs/s × latency ÷ interval reads per second).
pub struct AsyncRun {
    pub weft: Weft,
    pub url: String,
    pub body: Bytes,
    pub poll: Duration,
    /// Longest from submission to the end before the run counts as `timeout`.
    pub timeout: Duration,
}

impl Op for AsyncRun {
    fn call(&self) -> impl Future<Output = Outcome> + Send {
        let weft = self.weft.clone();
        let url = self.url.clone();
        let body = self.body.clone();
        let (poll, timeout) = (self.poll, self.timeout);
        async move {
            let give_up = Instant::now() + timeout;
            let run_id = weft.submit_async(&url, body).await?;
            loop {
                tokio::time::sleep(poll).await;
                if Instant::now() >= give_up {
                    return Err(Cow::Borrowed("timeout"));
                }
                let status = weft.run_status(&run_id).await?;
                if is_terminal(&status) {
                    return run_outcome(&status);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_statuses_map_to_outcomes() {
        assert_eq!(run_outcome("succeeded"), Ok(()));
        assert_eq!(run_outcome("failed"), Err("run_failed".into()));
        assert_eq!(run_outcome("timed_out"), Err("run_timed_out".into()));
        assert_eq!(run_outcome("cancelled"), Err("run_cancelled".into()));
        assert_eq!(run_outcome("running"), Err("run_running".into()));
        assert!(is_terminal("timed_out"));
        assert!(!is_terminal("waiting"));
        assert!(!is_terminal("queued"));
        assert_eq!(status_kind("http_", 429), "http_429");
    }

    #[test]
    fn workers_parse_from_the_api_shape() {
        let body = r#"{"items": [{"worker_id": "worker-1", "capacity": 1000, "assigned": 3,
            "reported_inflight": 2, "draining": false, "last_seen_ms_ago": 12}]}"#;
        let w: Workers = serde_json::from_str(body).expect("parses");
        assert_eq!(w.items[0].worker_id, "worker-1");
        assert_eq!(w.items[0].assigned, 3);
    }
}
