//! The coordinator binary's shutdown: on SIGTERM it lets requests in flight
//! finish and exits 0; a second signal exits at once. Also: bad config exits 64.

use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weft_shared::testutil::NatsServer;

const ADMIN_TOKEN: &str = "shutdown-test-admin-token-0123456789";

/// A client that authenticates as the configured admin.
fn client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_exit(p: &mut Proc, within: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < within {
        if let Ok(Some(s)) = p.0.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

async fn start(nats: &NatsServer, dir: &std::path::Path) -> (Proc, String) {
    let port = weft_shared::testutil::free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_weft-coordinator"))
        .env("WEFT_NATS_URL", nats.url())
        .env("WEFT_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "WEFT_DATABASE_URL",
            format!("sqlite://{}", dir.join("w.db").display()),
        )
        .env("WEFT_SHUTDOWN_GRACE_MS", "10000")
        .env("WEFT_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = client();
    let start = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "coordinator did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (Proc(child), base)
}

async fn worker(nats: &NatsServer) -> tokio::sync::oneshot::Sender<()> {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let cfg = weft_worker::WorkerConfig {
        nats_url: nats.url(),
        heartbeat_interval_ms: 100,
        metrics_addr: String::new(),
        fault_injection: true,
        arbiters: 1,
        ..Default::default()
    };
    tokio::spawn(async move {
        let _ = weft_worker::run(cfg, async {
            let _ = rx.await;
        })
        .await;
    });
    tx
}

async fn deploy(http: &reqwest::Client, base: &str, def: Value) -> String {
    let wf: Value = http
        .post(format!("{base}/v1/workflows"))
        .json(&def)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = wf["id"].as_str().unwrap().to_string();
    let r = http
        .post(format!("{base}/v1/workflows/{id}/deploy"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    id
}

async fn wait_workers(http: &reqwest::Client, base: &str) {
    let start = Instant::now();
    loop {
        let v: Value = http
            .get(format!("{base}/v1/workers"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["items"].as_array().is_some_and(|a| !a.is_empty()) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn def(code: &str, fault: Option<&str>) -> Value {
    let mut work = json!({"id": "work", "kind": "script", "config": {"code": code}});
    if let Some(f) = fault {
        work["fault"] = json!(f);
    }
    json!({"name": "w", "timeout_ms": 30000, "nodes": [
        {"id": "in", "kind": "input"}, work, {"id": "out", "kind": "output", "config": {"fields": {"r": "steps.work.output"}}}],
        "edges": [{"from": "in", "to": "work"}, {"from": "work", "to": "out"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_then_exits_cleanly() {
    weft_shared::telemetry::install_crypto_provider();
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut coord, base) = start(&nats, dir.path()).await;
    let stop_worker = worker(&nats).await;
    let http = client();
    wait_workers(&http, &base).await;
    let wf = deploy(
        &http,
        &base,
        def(
            "const end = Date.now() + 1000; while (Date.now() < end) {} return 'done'",
            None,
        ),
    )
    .await;

    let url = format!("{base}/v1/workflows/{wf}/runs");
    let in_flight = tokio::spawn({
        let http = http.clone();
        async move {
            http.post(url)
                .json(&json!({"input": {}}))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    unsafe { libc::kill(coord.0.id() as i32, libc::SIGTERM) };

    let run = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        run["status"], "succeeded",
        "the request in flight finished: {run}"
    );
    let status = wait_exit(&mut coord, Duration::from_secs(10)).expect("coordinator exits");
    assert_eq!(status.code(), Some(0));
    let _ = stop_worker.send(());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    weft_shared::telemetry::install_crypto_provider();
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut coord, base) = start(&nats, dir.path()).await;
    let stop_worker = worker(&nats).await;
    let http = client();
    wait_workers(&http, &base).await;
    let wf = deploy(&http, &base, def("return 1", Some("hang"))).await;
    let url = format!("{base}/v1/workflows/{wf}/runs");
    let _hanging = tokio::spawn({
        let http = http.clone();
        async move { http.post(url).json(&json!({"input": {}})).send().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    unsafe { libc::kill(coord.0.id() as i32, libc::SIGTERM) };
    // Draining: it waits for the hanging request (up to its 10 s grace).
    assert!(
        wait_exit(&mut coord, Duration::from_millis(500)).is_none(),
        "still draining"
    );
    unsafe { libc::kill(coord.0.id() as i32, libc::SIGTERM) };
    let status =
        wait_exit(&mut coord, Duration::from_secs(3)).expect("second signal exits at once");
    assert_eq!(status.code(), Some(130));
    let _ = stop_worker.send(());
}

#[test]
fn bad_configuration_exits_64_with_a_clear_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_weft-coordinator"))
        .env("WEFT_QUEUE_CAPACITY", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("queue_capacity"), "{err}");

    // No admin token: the coordinator refuses to start without one.
    let out = Command::new(env!("CARGO_BIN_EXE_weft-coordinator"))
        .env_remove("WEFT_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WEFT_ADMIN_TOKEN"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_weft-coordinator"))
        .env("WEFT_QUEUE_CAPACITY", "7")
        .env("WEFT_ADMIN_TOKEN", ADMIN_TOKEN)
        .arg("--print-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("queue_capacity = 7"));
    // The token is never printed.
    assert!(!printed.contains(ADMIN_TOKEN), "{printed}");
    assert!(
        printed.contains("admin_token = \"[redacted]\""),
        "{printed}"
    );
}
