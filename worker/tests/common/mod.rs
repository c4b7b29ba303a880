//! A local cluster for end-to-end tests: a real nats-server on a free port,
//! a coordinator on `127.0.0.1:0` with a temp SQLite store, and workers —
//! in-process, or as real `weft-worker` processes for kill tests. Every wait
//! is bounded.

#![allow(dead_code)]

pub mod testapi;

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weft_coordinator::CoordinatorConfig;
use weft_shared::testutil::NatsServer;
use weft_worker::WorkerConfig;

pub const HEARTBEAT_MS: u64 = 100;
/// The coordinator's encryption key in tests (32 bytes of 0x2a, base64).
pub const TEST_KEY: &str = "KioqKioqKioqKioqKioqKioqKioqKioqKioqKioqKio=";
pub const DEAD_AFTER_MS: u64 = 600;
/// The first admin's token in tests; the harness's client sends it.
pub const ADMIN_TOKEN: &str = "weft-test-admin-token-0123456789";

/// A client that sends `token` as `Authorization: Bearer` on every request.
pub fn client_with(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut v = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
    v.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, v);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

pub struct InProcessWorker {
    pub id: String,
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<()>,
}

pub struct Cluster {
    pub nats: NatsServer,
    pub http: reqwest::Client,
    pub base: String,
    coordinator: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
    pub coordinator_config: CoordinatorConfig,
    pub workers: Vec<InProcessWorker>,
    pub processes: Vec<(String, Child)>,
    dir: tempfile::TempDir,
}

pub fn worker_config(nats_url: &str) -> WorkerConfig {
    WorkerConfig {
        nats_url: nats_url.to_string(),
        subject_prefix: "weft".into(),
        capacity: 100,
        heartbeat_interval_ms: HEARTBEAT_MS,
        drain_grace_ms: 5_000,
        arbiters: 2,
        metrics_addr: String::new(),
        fault_injection: true,
        ..Default::default()
    }
}

impl Cluster {
    pub async fn start(workers: usize) -> Cluster {
        Cluster::start_with(workers, |_| {}).await
    }

    pub async fn start_with(workers: usize, tweak: impl FnOnce(&mut CoordinatorConfig)) -> Cluster {
        weft_shared::testutil::init_test_logging();
        weft_shared::telemetry::install_crypto_provider();
        let nats = NatsServer::start();
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = CoordinatorConfig {
            nats_url: nats.url(),
            database_url: format!("sqlite://{}", dir.path().join("weft.db").display()),
            worker_dead_after_ms: DEAD_AFTER_MS,
            deadline_grace_ms: 500,
            shutdown_grace_ms: 5_000,
            encryption_key: TEST_KEY.into(),
            admin_token: ADMIN_TOKEN.into(),
            // Test receivers listen on loopback.
            push_allow_private_targets: true,
            ..Default::default()
        };
        tweak(&mut cfg);
        let mut c = Cluster {
            nats,
            http: client_with(ADMIN_TOKEN),
            base: String::new(),
            coordinator: None,
            coordinator_config: cfg,
            workers: Vec::new(),
            processes: Vec::new(),
            dir,
        };
        c.start_coordinator().await;
        for _ in 0..workers {
            c.add_worker(|_| {}).await;
        }
        c.wait_workers(workers).await;
        c
    }

    /// A cluster around a coordinator started elsewhere (e.g. as a process).
    pub async fn attach(nats: NatsServer, base: String) -> Cluster {
        weft_shared::testutil::init_test_logging();
        weft_shared::telemetry::install_crypto_provider();
        let c = Cluster {
            nats,
            http: client_with(ADMIN_TOKEN),
            base,
            coordinator: None,
            coordinator_config: CoordinatorConfig::default(),
            workers: Vec::new(),
            processes: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        c.wait_healthy().await;
        c
    }

    /// Waits until the coordinator answers `/healthz`.
    pub async fn wait_healthy(&self) {
        let start = Instant::now();
        while self.http.get(self.url("/healthz")).send().await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "coordinator did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn start_coordinator(&mut self) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let cfg = self.coordinator_config.clone();
        let join = tokio::spawn(async move {
            weft_coordinator::run(cfg, listener, async {
                let _ = rx.await;
            })
            .await
            .expect("coordinator runs");
        });
        self.coordinator = Some((tx, join));
        let start = Instant::now();
        while self.http.get(self.url("/healthz")).send().await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "coordinator did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop_coordinator(&mut self) {
        if let Some((tx, join)) = self.coordinator.take() {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), join).await;
        }
    }

    /// Starts an in-process worker; returns its id.
    pub async fn add_worker(&mut self, tweak: impl FnOnce(&mut WorkerConfig)) -> String {
        let mut cfg = worker_config(&self.nats.url());
        tweak(&mut cfg);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (id_tx, id_rx) = oneshot::channel::<String>();
        let join = tokio::spawn(async move {
            weft_worker::run_with(
                cfg,
                async {
                    let _ = stop_rx.await;
                },
                move |info| {
                    let _ = id_tx.send(info.worker_id);
                },
            )
            .await
            .expect("worker runs");
        });
        let id = tokio::time::timeout(Duration::from_secs(10), id_rx)
            .await
            .expect("worker started")
            .unwrap();
        self.workers.push(InProcessWorker {
            id: id.clone(),
            stop: Some(stop_tx),
            join,
        });
        id
    }

    /// Stops every in-process worker: each drains, deregisters and exits.
    pub async fn stop_workers(&mut self) {
        for w in &mut self.workers {
            if let Some(s) = w.stop.take() {
                let _ = s.send(());
            }
        }
        for w in self.workers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), w.join).await;
        }
    }

    /// Starts a `weft-worker` process with `id`.
    pub fn spawn_worker_process(&mut self, id: &str, extra_env: &[(&str, &str)]) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_weft-worker"));
        cmd.env("WEFT_NATS_URL", self.nats.url())
            .env("WEFT_WORKER_ID", id)
            .env("WEFT_HEARTBEAT_INTERVAL_MS", HEARTBEAT_MS.to_string())
            .env("WEFT_METRICS_ADDR", "")
            .env("WEFT_ARBITERS", "2")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn weft-worker");
        self.processes.push((id.to_string(), child));
    }

    pub fn signal_process(&mut self, id: &str, signal: i32) {
        let (_, child) = self
            .processes
            .iter_mut()
            .find(|(i, _)| i == id)
            .expect("process");
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
    }

    pub fn wait_process_exit(
        &mut self,
        id: &str,
        within: Duration,
    ) -> Option<std::process::ExitStatus> {
        let (_, child) = self
            .processes
            .iter_mut()
            .find(|(i, _)| i == id)
            .expect("process");
        let start = Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The SQLite file and its write-ahead log.
    pub fn db_files(&self) -> Vec<std::path::PathBuf> {
        ["weft.db", "weft.db-wal", "weft.db-shm"]
            .iter()
            .map(|f| self.dir.path().join(f))
            .collect()
    }

    /// Every database file's bytes (at least one), to look for secrets in.
    pub fn read_db_files(&self) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let stored: Vec<_> = self
            .db_files()
            .into_iter()
            .filter_map(|f| std::fs::read(&f).ok().map(|b| (f, b)))
            .collect();
        assert!(!stored.is_empty());
        stored
    }

    /// Sets an environment variable on a workflow.
    pub async fn set_env(&self, wf: &str, name: &str, value: &str, secure: bool) -> Value {
        let (s, v) = self
            .post(
                &format!("/v1/workflows/{wf}/env"),
                &json!({"name": name, "value": value, "secure": secure}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        v
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The coordinator's Prometheus exposition.
    pub async fn metrics_text(&self) -> String {
        let r = self.http.get(self.url("/metrics")).send().await.unwrap();
        r.text().await.unwrap()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Waits until the coordinator knows `n` ready workers.
    pub async fn wait_workers(&self, n: usize) {
        let start = Instant::now();
        loop {
            let (_, v) = self.get("/v1/workers").await;
            let ready = v["items"]
                .as_array()
                .map(|a| a.iter().filter(|w| w["draining"] == false).count())
                .unwrap_or(0);
            if ready == n {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "expected {n} workers, have {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Creates and deploys a workflow; returns its id.
    pub async fn deploy(&self, def: &Value) -> String {
        let (s, wf) = self.post("/v1/workflows", def).await;
        assert_eq!(s, 201, "create: {wf}");
        let id = wf["id"].as_str().unwrap().to_string();
        let (s, v) = self
            .post(&format!("/v1/workflows/{id}/deploy"), &json!({}))
            .await;
        assert_eq!(s, 201, "deploy: {v}");
        id
    }

    pub async fn run_sync(&self, wf: &str, input: Value) -> (u16, Value) {
        self.post(
            &format!("/v1/workflows/{wf}/runs?mode=sync"),
            &json!({"input": input}),
        )
        .await
    }

    /// Submits an async run; returns its id.
    pub async fn submit(&self, wf: &str, input: Value) -> String {
        let (s, v) = self
            .post(
                &format!("/v1/workflows/{wf}/runs?mode=async"),
                &json!({"input": input}),
            )
            .await;
        assert_eq!(s, 202, "submit: {v}");
        v["run_id"].as_str().unwrap().to_string()
    }

    /// Polls a run until it is terminal.
    pub async fn wait_run(&self, run_id: &str, within: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (s, v) = self.get(&format!("/v1/runs/{run_id}")).await;
            assert_eq!(s, 200, "{v}");
            if ["succeeded", "failed", "timed_out", "cancelled"]
                .contains(&v["status"].as_str().unwrap_or(""))
            {
                return v;
            }
            assert!(
                start.elapsed() < within,
                "run {run_id} not done after {within:?}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls a run until `pred` holds.
    pub async fn wait_run_until(
        &self,
        run_id: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let (_, v) = self.get(&format!("/v1/runs/{run_id}")).await;
            if pred(&v) {
                return v;
            }
            assert!(
                start.elapsed() < within,
                "run {run_id}: condition not met after {within:?}: {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn shutdown(mut self) {
        for w in &mut self.workers {
            if let Some(s) = w.stop.take() {
                let _ = s.send(());
            }
        }
        for w in self.workers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), w.join).await;
        }
        self.stop_coordinator().await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, c) in &mut self.processes {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// input → script → condition → output.
pub fn four_node() -> Value {
    json!({
        "name": "score",
        "description": "doubles n and says whether it is big",
        "timeout_ms": 10000,
        "nodes": [
            {"id": "in", "kind": "input", "config": {"schema": {
                "type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}}},
            {"id": "double", "kind": "script", "config": {"code": "return {v: ctx.input.n * 2}"}},
            {"id": "big", "kind": "condition", "config": {
                "branches": [{"name": "yes", "when": "steps.double.output.v > 10"}], "default": "no"}},
            {"id": "out", "kind": "output", "config": {"fields": {
                "v": "steps.double.output.v", "big": "steps.big.output.branch == 'yes'"}}}
        ],
        "edges": [
            {"from": "in", "to": "double"},
            {"from": "double", "to": "big"},
            {"from": "big", "to": "out", "branch": "yes"},
            {"from": "big", "to": "out", "branch": "no"}
        ]
    })
}

/// input → one script node → output, with the given timeouts.
pub fn one_script(code: &str, workflow_timeout_ms: u64, node_timeout_ms: Option<u64>) -> Value {
    let mut node = json!({"id": "work", "kind": "script", "config": {"code": code}});
    if let Some(t) = node_timeout_ms {
        node["timeout_ms"] = json!(t);
    }
    json!({
        "name": "one-script",
        "timeout_ms": workflow_timeout_ms,
        "nodes": [
            {"id": "in", "kind": "input"},
            node,
            {"id": "out", "kind": "output", "config": {"fields": {"result": "steps.work.output"}}}
        ],
        "edges": [{"from": "in", "to": "work"}, {"from": "work", "to": "out"}]
    })
}

/// The API as someone else: a user token or an API key.
pub struct Api {
    pub http: reqwest::Client,
    pub base: String,
}

impl Api {
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, path, None).await
    }
}

impl Cluster {
    /// The API as the holder of `token`.
    pub fn as_token(&self, token: &str) -> Api {
        Api {
            http: client_with(token),
            base: self.base.clone(),
        }
    }

    /// Creates a (non-admin) user as the admin; returns its id and its API.
    pub async fn create_user(&self, name: &str) -> (String, Api) {
        let (s, v) = self.post("/v1/users", &json!({"name": name})).await;
        assert_eq!(s, 201, "create user: {v}");
        let token = v["token"]["secret"].as_str().unwrap();
        (
            v["user"]["id"].as_str().unwrap().to_string(),
            self.as_token(token),
        )
    }
}

/// Every log line of this process, at trace, through the filter the binaries
/// ship: for tests that prove a secret never reaches the logs. Call it once,
/// first, in a test that owns its process (nextest runs each test alone).
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    pub fn install() -> LogCapture {
        let logs = LogCapture::default();
        std::env::set_var("RUST_LOG", "trace");
        tracing_subscriber::fmt()
            .with_env_filter(weft_shared::telemetry::log_filter("trace"))
            .with_writer(logs.clone())
            .with_ansi(false)
            .try_init()
            .expect("this test's process has no other subscriber");
        logs
    }

    /// What was logged so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}

/// Fails if `needle` is on any captured log line or in any stored file.
pub fn assert_nowhere(needle: &str, logged: &str, stored: &[(std::path::PathBuf, Vec<u8>)]) {
    let leaks: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains(needle))
        .take(3)
        .collect();
    assert!(leaks.is_empty(), "log lines hold `{needle}`: {leaks:#?}");
    for (f, bytes) in stored {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{} holds `{needle}` in clear",
            f.display()
        );
    }
}
