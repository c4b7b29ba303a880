//! Faults under load, with real processes and a real nats-server: nothing
//! accepted is lost. Each test submits a batch of async runs, injects one
//! fault while they run, and checks every run ends `succeeded`.

mod common;

use common::*;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A script busy for `input.ms` milliseconds.
fn busy() -> serde_json::Value {
    one_script(
        "const end = Date.now() + ctx.input.ms; while (Date.now() < end) {} return ctx.input.ms",
        60_000,
        None,
    )
}

async fn submit_batch(c: &Cluster, wf: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(c.submit(wf, json!({"ms": 50 + (i * 13) % 150})).await);
    }
    ids
}

/// Waits for every run; returns them. Fails on any that did not succeed.
async fn all_succeed(c: &Cluster, ids: &[String], within: Duration) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for id in ids {
        let run = c.wait_run(id, within).await;
        assert_eq!(run["status"], "succeeded", "lost or failed: {run}");
        out.push(run);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_under_load_loses_nothing_and_re_placement_is_bounded() {
    let mut c = Cluster::start(0).await;
    for w in ["ka", "kb", "kc"] {
        c.spawn_worker_process(w, &[("WEFT_SCRIPT_CONCURRENCY", "2")]);
    }
    c.wait_workers(3).await;
    let wf = c.deploy(&busy()).await;
    let ids = submit_batch(&c, &wf, 60).await;
    // Kill a worker once it holds runs.
    let start = Instant::now();
    loop {
        let (_, w) = c.get("/v1/workers").await;
        if w["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["worker_id"] == "kb" && x["assigned"].as_u64().unwrap_or(0) > 0)
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.signal_process("kb", libc::SIGKILL);
    let killed_ms = weft_shared::time::now_ms();
    let runs = all_succeed(&c, &ids, Duration::from_secs(60)).await;
    let replaced: Vec<&serde_json::Value> = runs
        .iter()
        .filter(|r| r["attempts"].as_array().unwrap().len() > 1)
        .collect();
    assert!(!replaced.is_empty(), "some runs were on the killed worker");
    let mut worst = 0;
    for r in &replaced {
        let a = r["attempts"].as_array().unwrap();
        assert_eq!(a[0]["worker_id"], "kb");
        assert_eq!(a[0]["outcome"], "worker_lost");
        let replaced_at = a[1]["placed_at_ms"].as_u64().unwrap();
        worst = worst.max(replaced_at.saturating_sub(killed_ms));
    }
    eprintln!("re-placed {} runs; worst time from kill to re-placement {worst} ms (dead after {DEAD_AFTER_MS} ms)", replaced.len());
    // Bounded by the heartbeat deadline plus one dispatcher tick and slack.
    assert!(
        worst <= DEAD_AFTER_MS + 1_000,
        "re-placement took {worst} ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_by_sigterm_fails_no_run() {
    let mut c = Cluster::start(0).await;
    c.spawn_worker_process("ra", &[]);
    c.spawn_worker_process("rb", &[]);
    c.wait_workers(2).await;
    let wf = c.deploy(&busy()).await;
    let ids = submit_batch(&c, &wf, 40).await;
    // Restart each worker in turn, as a rolling deploy does.
    for (old, new) in [("ra", "ra2"), ("rb", "rb2")] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.signal_process(old, libc::SIGTERM);
        c.spawn_worker_process(new, &[]);
        assert!(
            c.wait_process_exit(old, Duration::from_secs(20))
                .is_some_and(|s| s.success()),
            "{old} drained and exited 0"
        );
    }
    let runs = all_succeed(&c, &ids, Duration::from_secs(60)).await;
    let lost: usize = runs
        .iter()
        .filter(|r| {
            r["attempts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["outcome"] == "worker_lost")
        })
        .count();
    assert_eq!(
        lost, 0,
        "draining workers finish their runs; none is re-placed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_under_load_loses_nothing() {
    let mut c = Cluster::start_with(0, |cfg| cfg.worker_dead_after_ms = 1_000).await;
    c.spawn_worker_process("na", &[("WEFT_HEARTBEAT_INTERVAL_MS", "200")]);
    c.spawn_worker_process("nb", &[("WEFT_HEARTBEAT_INTERVAL_MS", "200")]);
    c.wait_workers(2).await;
    let wf = c.deploy(&busy()).await;
    let ids = submit_batch(&c, &wf, 40).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.nats.restart();
    // Sync calls in flight during the outage end clearly, never hang past their deadline.
    let short = c.deploy(&one_script("return 1", 2_000, None)).await;
    let started = Instant::now();
    let (s, v) = c.run_sync(&short, json!({})).await;
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "a sync call returned within its deadline: {s} {v}"
    );
    assert!([200, 503, 504].contains(&s), "{s} {v}");
    let runs = all_succeed(&c, &ids, Duration::from_secs(60)).await;
    // Silence during the outage is not death: no live worker was declared lost.
    for r in &runs {
        let lost = r["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["outcome"] == "worker_lost");
        assert!(
            !lost,
            "a live worker was declared dead during the NATS restart: {r}"
        );
    }
    // And new work flows after the restart.
    let (_, run) = c.run_sync(&short, json!({})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_and_restarted_completes_what_it_accepted() {
    // The coordinator as a real process over a file store, killed with SIGKILL.
    let nats = weft_shared::testutil::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = weft_shared::testutil::free_port();
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_weft-worker"))
        .with_file_name("weft-coordinator");
    let nats_url = nats.url();
    let spawn = || {
        Proc(
            Command::new(&bin)
                .env("WEFT_NATS_URL", &nats_url)
                .env("WEFT_HTTP_ADDR", format!("127.0.0.1:{port}"))
                .env(
                    "WEFT_DATABASE_URL",
                    format!("sqlite://{}", dir.path().join("c.db").display()),
                )
                .env("WEFT_WORKER_DEAD_AFTER_MS", "1500")
                .env("WEFT_ADMIN_TOKEN", common::ADMIN_TOKEN)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .spawn()
                .expect("the coordinator binary (cargo build --workspace)"),
        )
    };
    let mut coord = spawn();
    let mut c = Cluster::attach(nats, format!("http://127.0.0.1:{port}")).await;
    c.spawn_worker_process("ca", &[]);
    c.spawn_worker_process("cb", &[]);
    c.wait_workers(2).await;
    let wf = c.deploy(&busy()).await;
    // Runs long enough to be in flight across the crash.
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(c.submit(&wf, json!({"ms": 800 + i * 20})).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    unsafe { libc::kill(coord.0.id() as i32, libc::SIGKILL) };
    let _ = coord.0.wait();
    // Workers finish runs while it is down; their results wait for an ack.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    coord = spawn();
    c.wait_healthy().await;
    let runs = all_succeed(&c, &ids, Duration::from_secs(60)).await;
    // The restarted coordinator adopted what the workers still held: no run
    // was executed twice.
    for r in &runs {
        let attempts = r["attempts"].as_array().unwrap();
        assert_eq!(
            attempts.len(),
            1,
            "placed again though a worker held it: {r}"
        );
    }
    drop(coord);
}
