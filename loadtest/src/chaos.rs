//! The chaos run (`weft-load chaos`): a steady async load on a cluster this
//! process owns — NATS, a coordinator over a file SQLite store and three
//! workers, each a child process on free loopback ports — while faults are
//! injected on a schedule: SIGKILL a worker (a replacement starts), SIGTERM
//! a worker (a rolling restart; a replacement starts), restart NATS (same
//! port, same store), SIGKILL the coordinator and start it again (same port,
//! same store). Then it waits, bounded, for every accepted run to end and
//! reports runs accepted, succeeded, failed by `error.code`, **lost** (not
//! terminal at the end; must be 0), the faults with their times, and the side
//! effects duplicated at a test endpoint, counted by `Idempotency-Key`.
//!
//! The workflow is input → api (POST to the in-process side-effect endpoint;
//! the worker sends `Idempotency-Key: weft-<hash of run and node>`) → script
//! (busy a few ms) → output. Each submission carries its own
//! `Idempotency-Key`, so a submission retried after a connection error, a 5xx
//! or a 429 is the same run, never a second one.

use crate::api::{http_client, is_terminal};
use crate::error::LoadError;
use axum::extract::State;
use axum::http::HeaderMap;
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// One kind of fault, injected in this order, cycling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL the oldest worker; start a replacement.
    KillWorker,
    /// SIGTERM the oldest worker (it drains); start a replacement.
    TermWorker,
    /// SIGKILL nats-server; start it again on the same port and store.
    RestartNats,
    /// SIGKILL the coordinator; start it again on the same port and store.
    KillCoordinator,
}

impl Fault {
    pub const CYCLE: [Fault; 4] = [
        Fault::KillWorker,
        Fault::TermWorker,
        Fault::RestartNats,
        Fault::KillCoordinator,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::KillWorker => "kill_worker",
            Fault::TermWorker => "term_worker",
            Fault::RestartNats => "restart_nats",
            Fault::KillCoordinator => "kill_coordinator",
        }
    }
}

/// The time between faults when none is given: 10 s, or less for a short
/// run so that all four kinds fit (duration ÷ 5), never under 1 s.
pub fn default_fault_every(duration: Duration) -> Duration {
    (duration / 5).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// When each fault happens, after the load starts: at `every`, `2 × every`…
/// while before `duration`, cycling through [`Fault::CYCLE`].
pub fn fault_schedule(duration: Duration, every: Duration) -> Vec<(Duration, Fault)> {
    if every.is_zero() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut at = every;
    while at < duration {
        out.push((at, Fault::CYCLE[out.len() % Fault::CYCLE.len()]));
        at += every;
    }
    out
}

/// What the chaos run needs.
#[derive(Clone, Debug)]
pub struct ChaosParams {
    pub duration: Duration,
    /// Submissions per second.
    pub rate: f64,
    pub fault_every: Duration,
    /// Longest wait, after the load, for the accepted runs to end.
    pub settle: Duration,
    /// A submission retried for longer than this gives up (not accepted).
    pub submit_deadline: Duration,
    pub nats_server: PathBuf,
    /// Where weft-coordinator and weft-worker are.
    pub bin_dir: PathBuf,
    /// NATS store, SQLite file, logs.
    pub state_dir: PathBuf,
    pub http_port: u16,
    pub nats_port: u16,
    pub workers: usize,
    /// How long the script node is busy.
    pub busy_ms: u64,
    pub progress: bool,
}

/// One injected fault, as reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Seconds after the load started.
    pub at_s: f64,
    pub fault: Fault,
    /// What was hit (a worker id, `nats`, `coordinator`).
    pub target: String,
    /// How it went: the replacement, the time to be back.
    pub detail: String,
    pub ok: bool,
}

/// The side-effect endpoint's counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SideEffects {
    pub posts: u64,
    pub posts_without_key: u64,
    pub distinct_keys: u64,
    /// Keys POSTed two or more times.
    pub keys_seen_twice_or_more: u64,
    /// POSTs beyond the first per key.
    pub duplicate_posts: u64,
}

impl SideEffects {
    pub fn from_counts(counts: &HashMap<String, u64>, posts_without_key: u64) -> SideEffects {
        let posts: u64 = counts.values().sum();
        SideEffects {
            posts: posts + posts_without_key,
            posts_without_key,
            distinct_keys: counts.len() as u64,
            keys_seen_twice_or_more: counts.values().filter(|&&n| n >= 2).count() as u64,
            duplicate_posts: counts.values().map(|&n| n.saturating_sub(1)).sum(),
        }
    }
}

/// How one accepted run ended, or did not.
#[derive(Clone, Debug, PartialEq)]
pub enum RunEnd {
    Succeeded {
        attempts: usize,
    },
    /// Failed, timed out or cancelled, with the reason (`error.code`, else the status).
    Failed {
        reason: String,
        attempts: usize,
    },
    /// Not terminal at the end: the last status seen (`unknown` if none).
    NotTerminal {
        last: String,
    },
}

impl RunEnd {
    /// From a run record (`GET /v1/runs/{id}`).
    pub fn from_record(run: &Value) -> RunEnd {
        let status = run["status"].as_str().unwrap_or("unknown").to_string();
        let attempts = run["attempts"].as_array().map_or(0, Vec::len);
        if !is_terminal(&status) {
            return RunEnd::NotTerminal { last: status };
        }
        if status == "succeeded" {
            return RunEnd::Succeeded { attempts };
        }
        let reason = run["error"]["code"]
            .as_str()
            .or_else(|| run["error"].as_str())
            .map_or_else(|| status.clone(), str::to_string);
        RunEnd::Failed { reason, attempts }
    }
}

/// What the chaos run found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChaosReport {
    pub duration_s: f64,
    pub rate: f64,
    pub workers: usize,
    /// Submissions started (one per run wanted).
    pub submitted: u64,
    /// Submissions answered 202 with a run id.
    pub accepted: u64,
    /// Submissions given up or refused (by reason); none of these is a run.
    pub not_accepted: BTreeMap<String, u64>,
    /// Extra submission attempts after a connection error, 5xx, 429 or timeout.
    pub submit_retries: u64,
    /// Retries the coordinator answered with the first run (`Idempotent-Replayed`).
    pub submit_replayed: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub failed_by_reason: BTreeMap<String, u64>,
    /// Accepted runs not terminal when the settle wait ended. Must be 0.
    pub lost: u64,
    pub lost_by_last_status: BTreeMap<String, u64>,
    /// Runs that ended with more than one attempt (placed again).
    pub re_placed: u64,
    /// Seconds from the end of the load until the last run ended.
    pub settle_s: f64,
    pub faults: Vec<FaultRecord>,
    pub side_effects: SideEffects,
    pub notes: Vec<String>,
}

impl ChaosReport {
    /// Adds the accepted runs' ends.
    pub fn count_runs<'a>(&mut self, ends: impl IntoIterator<Item = &'a RunEnd>) {
        for end in ends {
            match end {
                RunEnd::Succeeded { attempts } => {
                    self.succeeded += 1;
                    self.re_placed += u64::from(*attempts > 1);
                }
                RunEnd::Failed { reason, attempts } => {
                    self.failed += 1;
                    self.re_placed += u64::from(*attempts > 1);
                    *self.failed_by_reason.entry(reason.clone()).or_default() += 1;
                }
                RunEnd::NotTerminal { last } => {
                    self.lost += 1;
                    *self.lost_by_last_status.entry(last.clone()).or_default() += 1;
                }
            }
        }
    }

    pub fn passed(&self) -> bool {
        self.lost == 0
    }

    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "chaos: {:.0} s at {} runs/s, {} workers",
            self.duration_s, self.rate, self.workers
        );
        let row = |t: &mut String, k: &str, v: String| {
            let _ = writeln!(t, "  {k:<34} {v}");
        };
        row(&mut t, "runs submitted", self.submitted.to_string());
        row(&mut t, "accepted", self.accepted.to_string());
        for (k, v) in &self.not_accepted {
            row(&mut t, &format!("  not accepted: {k}"), v.to_string());
        }
        row(
            &mut t,
            "submission retries (replayed)",
            format!("{} ({})", self.submit_retries, self.submit_replayed),
        );
        row(&mut t, "completed (succeeded)", self.succeeded.to_string());
        row(&mut t, "failed", self.failed.to_string());
        for (k, v) in &self.failed_by_reason {
            row(&mut t, &format!("  failed: {k}"), v.to_string());
        }
        row(
            &mut t,
            "LOST (not terminal; must be 0)",
            self.lost.to_string(),
        );
        for (k, v) in &self.lost_by_last_status {
            row(&mut t, &format!("  lost, last seen {k}"), v.to_string());
        }
        row(
            &mut t,
            "re-placed (attempts > 1)",
            self.re_placed.to_string(),
        );
        row(&mut t, "settled in", format!("{:.1} s", self.settle_s));
        let s = &self.side_effects;
        row(&mut t, "side-effect POSTs", s.posts.to_string());
        row(
            &mut t,
            "  distinct Idempotency-Keys",
            s.distinct_keys.to_string(),
        );
        row(
            &mut t,
            "  keys seen twice or more",
            s.keys_seen_twice_or_more.to_string(),
        );
        row(&mut t, "  duplicate POSTs", s.duplicate_posts.to_string());
        if s.posts_without_key > 0 {
            row(
                &mut t,
                "  POSTs without a key",
                s.posts_without_key.to_string(),
            );
        }
        let _ = writeln!(t, "faults ({}):", self.faults.len());
        for f in &self.faults {
            let _ = writeln!(
                t,
                "  {:>6.1} s  {:<17} {:<12} {}{}",
                f.at_s,
                f.fault.name(),
                f.target,
                if f.ok { "" } else { "FAILED: " },
                f.detail
            );
        }
        for n in &self.notes {
            let _ = writeln!(t, "note: {n}");
        }
        let _ = writeln!(
            t,
            "{}",
            if self.passed() {
                "result: PASS (no accepted run lost)"
            } else {
                "result: FAIL (accepted runs lost)"
            }
        );
        t
    }
}

/// The note every report carries about duplicated side effects.
pub const DUPLICATES_NOTE: &str = "duplicate side-effect POSTs are expected under at-least-once \
    execution (a node re-run after a worker or the coordinator died, or a retried call); each \
    carries the same Idempotency-Key (derived from run and node), so the receiver can drop them";

/// The workflow: input → api (POST to `effect_url`) → script (busy `busy_ms`) → output.
pub fn definition(effect_url: &str, busy_ms: u64) -> Value {
    json!({
        "name": "weft-load-chaos",
        "description": "weft-load chaos: input → api (side effect) → script → output",
        "timeout_ms": 120_000,
        "nodes": [
            {"id": "start", "kind": "input", "config": {"schema": {"type": "object", "required": ["n"], "properties": {"n": {"type": "number"}}}}},
            {"id": "effect", "kind": "api", "config": {"method": "POST", "url": effect_url, "body": {"n": "{{input.n}}"}}},
            {"id": "work", "kind": "script", "config": {"code": format!("const end = Date.now() + {busy_ms}; while (Date.now() < end) {{}} return {{n: ctx.input.n + 1}};")}},
            {"id": "result", "kind": "output", "config": {"fields": {"n": "steps.work.output.n"}}}
        ],
        "edges": [
            {"from": "start", "to": "effect"},
            {"from": "effect", "to": "work"},
            {"from": "work", "to": "result"}
        ]
    })
}

// ---------------------------------------------------------------------------
// The side-effect endpoint.

#[derive(Default)]
struct Effects {
    by_key: Mutex<HashMap<String, u64>>,
    without_key: AtomicU64,
}

impl Effects {
    fn summary(&self) -> SideEffects {
        let counts = self.by_key.lock().expect("effects lock").clone();
        SideEffects::from_counts(&counts, self.without_key.load(Ordering::Relaxed))
    }
}

async fn effect(State(effects): State<Arc<Effects>>, headers: HeaderMap) -> axum::Json<Value> {
    match headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        Some(key) => {
            *effects
                .by_key
                .lock()
                .expect("effects lock")
                .entry(key.to_string())
                .or_default() += 1;
        }
        None => {
            effects.without_key.fetch_add(1, Ordering::Relaxed);
        }
    }
    axum::Json(json!({"ok": true}))
}

async fn start_effects() -> Result<(Arc<Effects>, String), LoadError> {
    let effects = Arc::new(Effects::default());
    let app = axum::Router::new()
        .route("/effect", axum::routing::post(effect))
        .with_state(effects.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| LoadError::Other(format!("side-effect endpoint: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| LoadError::Other(format!("side-effect endpoint: {e}")))?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((effects, format!("http://{addr}/effect")))
}

// ---------------------------------------------------------------------------
// The cluster this process owns.

/// A free loopback port (bound, then released).
pub fn free_port() -> Result<u16, LoadError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| LoadError::Other(format!("no free port: {e}")))
}

fn signal(pid: Option<u32>, sig: &str) {
    if let Some(pid) = pid {
        let _ = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Waits for `child` to exit within `within`; SIGKILLs it otherwise.
async fn wait_or_kill(child: &mut Child, within: Duration) -> String {
    match tokio::time::timeout(within, child.wait()).await {
        Ok(Ok(status)) => format!("{status}"),
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => {
            let _ = child.kill().await;
            format!("still running after {within:?}; killed")
        }
    }
}

struct Cluster {
    p: ChaosParams,
    http: reqwest::Client,
    nats: Option<Child>,
    coordinator: Option<Child>,
    /// Oldest first.
    workers: Vec<(String, Child)>,
    next_worker: usize,
    /// Workers sent SIGTERM, draining in the background: their exit.
    draining: Vec<tokio::task::JoinHandle<(String, String)>>,
}

impl Cluster {
    fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.p.nats_port)
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.p.http_port)
    }

    fn log(&self, name: &str) -> Result<Stdio, LoadError> {
        let path = self.p.state_dir.join(format!("{name}.log"));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map(Stdio::from)
            .map_err(|source| LoadError::File {
                what: "opening",
                path,
                source,
            })
    }

    fn spawn(
        &self,
        program: &Path,
        name: &str,
        cmd: impl FnOnce(&mut Command),
    ) -> Result<Child, LoadError> {
        let mut c = Command::new(program);
        c.stdin(Stdio::null())
            .stdout(self.log(name)?)
            .stderr(self.log(name)?)
            .kill_on_drop(true);
        cmd(&mut c);
        c.spawn()
            .map_err(|e| LoadError::Child(format!("cannot start {}: {e}", program.display())))
    }

    async fn start_nats(&mut self) -> Result<(), LoadError> {
        let store = self.p.state_dir.join("nats");
        let port = self.p.nats_port.to_string();
        let nats_server = self.p.nats_server.clone();
        let child = self.spawn(&nats_server, "nats", |c| {
            c.args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd"])
                .arg(&store);
        })?;
        self.nats = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.p.nats_port))
            .await
            .is_err()
        {
            if Instant::now() > deadline {
                return Err(LoadError::Child(
                    "nats-server did not listen within 10 s".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    async fn start_coordinator(&mut self) -> Result<(), LoadError> {
        let db = format!("sqlite://{}", self.p.state_dir.join("weft.db").display());
        let (nats, addr) = (self.nats_url(), format!("127.0.0.1:{}", self.p.http_port));
        let bin = self.p.bin_dir.join("weft-coordinator");
        let child = self.spawn(&bin, "coordinator", |c| {
            c.env("WEFT_NATS_URL", nats)
                .env("WEFT_HTTP_ADDR", addr)
                .env("WEFT_DATABASE_URL", db)
                .env("WEFT_ADMIN_TOKEN", crate::api::token())
                .env("RUST_LOG", "warn");
        })?;
        self.coordinator = Some(child);
        self.wait_healthy(Duration::from_secs(30)).await
    }

    async fn wait_healthy(&self, within: Duration) -> Result<(), LoadError> {
        let deadline = Instant::now() + within;
        let url = format!("{}/healthz", self.base());
        loop {
            if let Ok(r) = self.http.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(LoadError::Child(format!(
                    "the coordinator was not healthy within {within:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn start_worker(&mut self) -> Result<String, LoadError> {
        self.next_worker += 1;
        let id = format!("chaos-{}", self.next_worker);
        let nats = self.nats_url();
        let bin = self.p.bin_dir.join("weft-worker");
        let wid = id.clone();
        let child = self.spawn(&bin, &id, |c| {
            c.env("WEFT_NATS_URL", nats)
                .env("WEFT_WORKER_ID", wid)
                .env("WEFT_METRICS_ADDR", "127.0.0.1:0")
                .env("RUST_LOG", "warn");
        })?;
        self.workers.push((id.clone(), child));
        Ok(id)
    }

    async fn wait_workers(&self, n: usize, within: Duration) -> Result<(), LoadError> {
        let deadline = Instant::now() + within;
        let url = format!("{}/v1/workers", self.base());
        loop {
            let seen = match self.http.get(&url).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["items"].as_array().map(Vec::len))
                    .unwrap_or(0),
                Err(_) => 0,
            };
            if seen >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LoadError::Child(format!(
                    "{seen} of {n} workers registered within {within:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Injects one fault; what was hit and how it went.
    async fn inject(&mut self, fault: Fault) -> (String, String, bool) {
        let t0 = Instant::now();
        match fault {
            Fault::KillWorker | Fault::TermWorker => {
                if self.workers.is_empty() {
                    return ("-".into(), "no worker to hit".into(), false);
                }
                let (id, mut child) = self.workers.remove(0);
                if fault == Fault::KillWorker {
                    let _ = child.start_kill();
                    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                } else {
                    signal(child.id(), "TERM");
                    let name = id.clone();
                    let grace = Duration::from_secs(30);
                    let started = Instant::now();
                    self.draining.push(tokio::spawn(async move {
                        let status = wait_or_kill(&mut child, grace).await;
                        (
                            name,
                            format!("{status} after {:.1} s", started.elapsed().as_secs_f64()),
                        )
                    }));
                }
                match self.start_worker() {
                    Ok(new) => (id, format!("replaced by {new}"), true),
                    Err(e) => (id, format!("no replacement: {e}"), false),
                }
            }
            Fault::RestartNats => {
                if let Some(mut c) = self.nats.take() {
                    let _ = c.start_kill();
                    let _ = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
                }
                match self.start_nats().await {
                    Ok(()) => (
                        "nats".into(),
                        format!("listening again after {} ms", t0.elapsed().as_millis()),
                        true,
                    ),
                    Err(e) => ("nats".into(), e.to_string(), false),
                }
            }
            Fault::KillCoordinator => {
                if let Some(mut c) = self.coordinator.take() {
                    let _ = c.start_kill();
                    let _ = tokio::time::timeout(Duration::from_secs(5), c.wait()).await;
                }
                match self.start_coordinator().await {
                    Ok(()) => (
                        "coordinator".into(),
                        format!("healthy again after {} ms", t0.elapsed().as_millis()),
                        true,
                    ),
                    Err(e) => ("coordinator".into(), e.to_string(), false),
                }
            }
        }
    }

    /// Workers drain first (SIGTERM), then the coordinator, then NATS; every wait bounded.
    async fn stop(&mut self) -> Vec<String> {
        let mut notes = Vec::new();
        for (_, c) in &self.workers {
            signal(c.id(), "TERM");
        }
        for (id, mut c) in self.workers.drain(..) {
            let s = wait_or_kill(&mut c, Duration::from_secs(30)).await;
            if !s.contains("exit status: 0") {
                notes.push(format!("{id} at shutdown: {s}"));
            }
        }
        for h in self.draining.drain(..) {
            if let Ok((id, s)) = h.await {
                notes.push(format!("{id} (SIGTERM fault) ended: {s}"));
            }
        }
        if let Some(mut c) = self.coordinator.take() {
            signal(c.id(), "TERM");
            wait_or_kill(&mut c, Duration::from_secs(15)).await;
        }
        if let Some(mut c) = self.nats.take() {
            signal(c.id(), "TERM");
            wait_or_kill(&mut c, Duration::from_secs(10)).await;
        }
        notes
    }
}

// ---------------------------------------------------------------------------
// The load.

#[derive(Default)]
struct Submissions {
    submitted: AtomicU64,
    retries: AtomicU64,
    replayed: AtomicU64,
    accepted: Mutex<Vec<String>>,
    refused: Mutex<BTreeMap<String, u64>>,
}

impl Submissions {
    fn refuse(&self, why: String) {
        *self.refused.lock().expect("lock").entry(why).or_default() += 1;
    }
}

/// Submits one run, retrying with the same key on a connection error, a
/// timeout, a 5xx or a 429, until `deadline`.
async fn submit(
    http: reqwest::Client,
    url: String,
    n: u64,
    deadline: Instant,
    subs: Arc<Submissions>,
) {
    let key = uuid::Uuid::now_v7().to_string();
    let body = json!({"input": {"n": n}}).to_string();
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        if !first {
            subs.retries.fetch_add(1, Ordering::Relaxed);
        }
        let retry_why = match http
            .post(&url)
            .header("content-type", "application/json")
            .header("idempotency-key", &key)
            .body(body.clone())
            .send()
            .await
        {
            Ok(r) => {
                let status = r.status().as_u16();
                let replayed = r.headers().contains_key("idempotent-replayed");
                if r.status().is_success() {
                    match r
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["run_id"].as_str().map(str::to_string))
                    {
                        Some(id) => {
                            if replayed {
                                subs.replayed.fetch_add(1, Ordering::Relaxed);
                            }
                            subs.accepted.lock().expect("lock").push(id);
                            return;
                        }
                        None => "bad_response".to_string(),
                    }
                } else if status == 429 || status >= 500 {
                    format!("http_{status}")
                } else {
                    let text = r.text().await.unwrap_or_default();
                    let code = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    subs.refuse(format!("http_{status} {code}").trim().to_string());
                    return;
                }
            }
            Err(e) => crate::api::transport_kind(&e).into_owned(),
        };
        first = false;
        if Instant::now() + backoff > deadline {
            subs.refuse(format!("gave up retrying ({retry_why})"));
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Polls the accepted runs until each is terminal or `settle` passes.
async fn settle(
    http: &reqwest::Client,
    base: &str,
    ids: Vec<String>,
    within: Duration,
) -> (Vec<RunEnd>, f64) {
    let started = Instant::now();
    let deadline = started + within;
    let mut ended = Vec::new();
    let mut pending: Vec<(String, String)> =
        ids.into_iter().map(|id| (id, "unknown".into())).collect();
    loop {
        let results: Vec<(String, RunEnd)> = stream::iter(pending.drain(..))
            .map(|(id, last)| async move {
                let end = match http.get(format!("{base}/v1/runs/{id}")).send().await {
                    Ok(r) if r.status().is_success() => match r.json::<Value>().await {
                        Ok(v) => RunEnd::from_record(&v),
                        Err(_) => RunEnd::NotTerminal { last },
                    },
                    _ => RunEnd::NotTerminal { last },
                };
                (id, end)
            })
            .buffer_unordered(32)
            .collect()
            .await;
        for (id, end) in results {
            match end {
                RunEnd::NotTerminal { last } => pending.push((id, last)),
                done => ended.push(done),
            }
        }
        if pending.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    ended.extend(
        pending
            .into_iter()
            .map(|(_, last)| RunEnd::NotTerminal { last }),
    );
    (ended, secs)
}

/// The chaos run: cluster up, load with faults, settle, cluster down, report.
pub async fn chaos(p: ChaosParams) -> Result<ChaosReport, LoadError> {
    std::fs::create_dir_all(p.state_dir.join("nats")).map_err(|source| LoadError::File {
        what: "creating",
        path: p.state_dir.clone(),
        source,
    })?;
    let http = http_client(Duration::from_secs(10))?;
    let mut cluster = Cluster {
        p: p.clone(),
        http: http.clone(),
        nats: None,
        coordinator: None,
        workers: Vec::new(),
        next_worker: 0,
        draining: Vec::new(),
    };
    let result = drive(&mut cluster, &p, &http).await;
    let notes = cluster.stop().await;
    let mut report = result?;
    report.notes.extend(notes);
    Ok(report)
}

async fn drive(
    cluster: &mut Cluster,
    p: &ChaosParams,
    http: &reqwest::Client,
) -> Result<ChaosReport, LoadError> {
    let (effects, effect_url) = start_effects().await?;
    cluster.start_nats().await?;
    cluster.start_coordinator().await?;
    for _ in 0..p.workers {
        cluster.start_worker()?;
    }
    cluster
        .wait_workers(p.workers, Duration::from_secs(20))
        .await?;
    let base = cluster.base();
    let weft = crate::api::Weft::new(&base, http.clone());
    let workflow = weft.setup(&definition(&effect_url, p.busy_ms), &[]).await?;
    let url = weft.runs_url(&workflow, "async");
    let schedule = fault_schedule(p.duration, p.fault_every);
    eprintln!(
        "weft-load chaos: NATS :{}, coordinator {base}, {} workers, workflow {workflow}; \
         {} runs/s for {:?}, {} faults; state in {}",
        p.nats_port,
        p.workers,
        p.rate,
        p.duration,
        schedule.len(),
        p.state_dir.display()
    );

    // The load: an open loop at `rate`, each submission its own task.
    let subs = Arc::new(Submissions::default());
    let start = Instant::now();
    let load = {
        let (subs, http, url) = (subs.clone(), http.clone(), url.clone());
        let (rate, duration, submit_deadline) = (p.rate, p.duration, p.submit_deadline);
        tokio::spawn(async move {
            let sched = crate::schedule::Schedule::new(rate).expect("rate checked");
            let total = sched.total(duration);
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..total {
                tokio::time::sleep_until((start + sched.offset(i)).into()).await;
                subs.submitted.fetch_add(1, Ordering::Relaxed);
                let deadline = Instant::now() + submit_deadline;
                tasks.spawn(submit(http.clone(), url.clone(), i, deadline, subs.clone()));
                while tasks.try_join_next().is_some() {}
            }
            while tasks.join_next().await.is_some() {}
        })
    };
    let progress = p.progress.then(|| {
        let subs = subs.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                eprintln!(
                    "chaos: {:>5.1} s  submitted {}  accepted {}  retries {}",
                    start.elapsed().as_secs_f64(),
                    subs.submitted.load(Ordering::Relaxed),
                    subs.accepted.lock().expect("lock").len(),
                    subs.retries.load(Ordering::Relaxed)
                );
            }
        })
    });

    let mut faults = Vec::new();
    for (at, fault) in schedule {
        tokio::time::sleep_until((start + at).into()).await;
        let at_s = start.elapsed().as_secs_f64();
        eprintln!("chaos: {at_s:.1} s: {}", fault.name());
        let (target, detail, ok) = cluster.inject(fault).await;
        eprintln!("chaos:   {target}: {detail}");
        faults.push(FaultRecord {
            at_s,
            fault,
            target,
            detail,
            ok,
        });
    }
    // Submissions still retrying end by their own deadline.
    let _ = load.await;
    if let Some(h) = progress {
        h.abort();
    }
    let ids = std::mem::take(&mut *subs.accepted.lock().expect("lock"));
    eprintln!(
        "chaos: load over; waiting up to {:?} for {} runs to end",
        p.settle,
        ids.len()
    );
    let accepted = ids.len() as u64;
    let (ends, settle_s) = settle(http, &base, ids, p.settle).await;
    let mut report = ChaosReport {
        duration_s: p.duration.as_secs_f64(),
        rate: p.rate,
        workers: p.workers,
        submitted: subs.submitted.load(Ordering::Relaxed),
        accepted,
        not_accepted: subs.refused.lock().expect("lock").clone(),
        submit_retries: subs.retries.load(Ordering::Relaxed),
        submit_replayed: subs.replayed.load(Ordering::Relaxed),
        settle_s,
        faults,
        side_effects: effects.summary(),
        notes: vec![DUPLICATES_NOTE.to_string()],
        ..ChaosReport::default()
    };
    report.count_runs(&ends);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_cycles_through_every_fault_in_order() {
        let s = fault_schedule(Duration::from_secs(45), Duration::from_secs(10));
        let kinds: Vec<Fault> = s.iter().map(|(_, f)| *f).collect();
        assert_eq!(kinds, Fault::CYCLE);
        assert_eq!(s[0].0, Duration::from_secs(10));
        assert_eq!(s[3].0, Duration::from_secs(40));
        let long = fault_schedule(Duration::from_secs(61), Duration::from_secs(10));
        assert_eq!(long.len(), 6);
        assert_eq!(long[4].1, Fault::KillWorker);
        assert_eq!(long[5].1, Fault::TermWorker);
        // None at or past the end, none with no spacing.
        assert!(fault_schedule(Duration::from_secs(10), Duration::from_secs(10)).is_empty());
        assert!(fault_schedule(Duration::from_secs(10), Duration::ZERO).is_empty());
    }

    #[test]
    fn the_default_spacing_fits_all_four_faults_into_short_runs() {
        for secs in [10, 20, 40, 50, 300] {
            let d = Duration::from_secs(secs);
            let s = fault_schedule(d, default_fault_every(d));
            assert!(s.len() >= 4, "{secs} s: {s:?}");
        }
        assert_eq!(
            default_fault_every(Duration::from_secs(40)),
            Duration::from_secs(8)
        );
        assert_eq!(
            default_fault_every(Duration::from_secs(300)),
            Duration::from_secs(10)
        );
        assert_eq!(
            default_fault_every(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn side_effects_count_duplicates_per_key() {
        let counts: HashMap<String, u64> = [("a", 1), ("b", 2), ("c", 4), ("d", 1)]
            .iter()
            .map(|(k, n)| (k.to_string(), *n))
            .collect();
        let s = SideEffects::from_counts(&counts, 3);
        assert_eq!(s.posts, 11);
        assert_eq!(s.distinct_keys, 4);
        assert_eq!(s.keys_seen_twice_or_more, 2);
        assert_eq!(s.duplicate_posts, 4);
        assert_eq!(s.posts_without_key, 3);
        assert_eq!(
            SideEffects::from_counts(&HashMap::new(), 0),
            SideEffects::default()
        );
    }

    #[test]
    fn run_records_map_to_ends() {
        let ok = json!({"status": "succeeded", "attempts": [{}, {}]});
        assert_eq!(RunEnd::from_record(&ok), RunEnd::Succeeded { attempts: 2 });
        let failed = json!({"status": "failed", "error": {"code": "http_error"}, "attempts": [{}]});
        assert_eq!(
            RunEnd::from_record(&failed),
            RunEnd::Failed {
                reason: "http_error".into(),
                attempts: 1
            }
        );
        let timed_out = json!({"status": "timed_out"});
        assert_eq!(
            RunEnd::from_record(&timed_out),
            RunEnd::Failed {
                reason: "timed_out".into(),
                attempts: 0
            }
        );
        let running = json!({"status": "running"});
        assert_eq!(
            RunEnd::from_record(&running),
            RunEnd::NotTerminal {
                last: "running".into()
            }
        );
    }

    #[test]
    fn the_report_counts_ends_and_fails_on_any_lost_run() {
        let mut r = ChaosReport {
            submitted: 5,
            accepted: 5,
            ..ChaosReport::default()
        };
        r.count_runs(&[
            RunEnd::Succeeded { attempts: 1 },
            RunEnd::Succeeded { attempts: 2 },
            RunEnd::Failed {
                reason: "worker_lost".into(),
                attempts: 3,
            },
            RunEnd::Failed {
                reason: "worker_lost".into(),
                attempts: 1,
            },
        ]);
        assert_eq!((r.succeeded, r.failed, r.lost, r.re_placed), (2, 2, 0, 2));
        assert_eq!(r.failed_by_reason["worker_lost"], 2);
        assert!(r.passed());
        assert!(r.table().contains("result: PASS"));
        r.count_runs(&[RunEnd::NotTerminal {
            last: "queued".into(),
        }]);
        assert_eq!(r.lost, 1);
        assert_eq!(r.lost_by_last_status["queued"], 1);
        assert!(!r.passed());
        let table = r.table();
        assert!(table.contains("LOST (not terminal; must be 0)"), "{table}");
        assert!(table.contains("result: FAIL"), "{table}");
        // The JSON round-trips.
        let back: ChaosReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn the_report_lists_faults_and_duplicates() {
        let r = ChaosReport {
            faults: vec![FaultRecord {
                at_s: 8.0,
                fault: Fault::KillCoordinator,
                target: "coordinator".into(),
                detail: "healthy again after 300 ms".into(),
                ok: true,
            }],
            side_effects: SideEffects {
                posts: 12,
                distinct_keys: 10,
                keys_seen_twice_or_more: 1,
                duplicate_posts: 2,
                posts_without_key: 0,
            },
            notes: vec![DUPLICATES_NOTE.into()],
            ..ChaosReport::default()
        };
        let t = r.table();
        assert!(t.contains("kill_coordinator"), "{t}");
        assert!(t.contains("keys seen twice or more"), "{t}");
        assert!(t.contains("duplicate POSTs"), "{t}");
        assert!(t.contains("at-least-once"), "{t}");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["faults"][0]["fault"], "kill_coordinator");
        assert_eq!(v["side_effects"]["duplicate_posts"], 2);
    }

    #[test]
    fn the_workflow_calls_the_endpoint_before_the_script() {
        let d = definition("http://127.0.0.1:1/effect", 3);
        let kinds: Vec<&str> = d["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["input", "api", "script", "output"]);
        assert_eq!(d["nodes"][1]["config"]["url"], "http://127.0.0.1:1/effect");
        assert!(d["nodes"][2]["config"]["code"]
            .as_str()
            .unwrap()
            .contains("+ 3;"));
    }
}
