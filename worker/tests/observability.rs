//! Metrics that tell the truth: the exposition passes `promtool check
//! metrics`, matches the README's table and the code's names, and a real
//! Prometheus scraping the coordinator and workers computes a P99 that agrees
//! with the run monitor's exact one.

mod common;

use common::testapi::TestApi;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weft_loadtest::mock_model::{MockModel, MockModelConfig};

/// `name → type` of every `weft_` family in an exposition.
fn families(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .filter(|(n, _)| n.starts_with("weft_"))
        .collect()
}

/// `name → type` from the README's metrics table.
fn readme_table() -> BTreeMap<String, String> {
    let readme = include_str!("../../README.md");
    readme
        .lines()
        .filter(|l| l.starts_with("| `weft_"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1].trim_matches('`').to_string(), cells[2].to_string())
        })
        .collect()
}

/// Metric names the code defines.
fn code_names() -> BTreeSet<String> {
    [
        include_str!("../../coordinator/src/metrics.rs"),
        include_str!("../src/metrics.rs"),
    ]
    .iter()
    .flat_map(|src| src.lines())
    .filter_map(|l| {
        l.split('"')
            .nth(1)
            .filter(|_| l.trim_start().starts_with("pub const"))
    })
    .map(str::to_string)
    .collect()
}

fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; .ci/install installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_passes_promtool_and_matches_the_readme_and_the_code() {
    let c = Cluster::start(1).await;
    let srv = TestApi::start().await;
    let mock = MockModel::start(MockModelConfig::default()).await.unwrap();
    // A load that touches every kind of metric: successes, failures, a
    // timeout, a panic, a retry, model calls with a guardrail finding.
    let ok = c.deploy(&four_node()).await;
    for n in 0..10 {
        c.run_sync(&ok, json!({"n": n})).await;
    }
    c.run_sync(&ok, json!({"n": "not a number"})).await; // 400
    let fail = c
        .deploy(&one_script("throw new Error('no')", 5_000, None))
        .await;
    c.run_sync(&fail, json!({})).await;
    let slow = c
        .deploy(&one_script("while (true) {}", 5_000, Some(100)))
        .await;
    c.run_sync(&slow, json!({})).await;
    let mut panics = one_script("return 1", 5_000, None);
    panics["nodes"][1]["fault"] = json!("panic");
    let panics = c.deploy(&panics).await;
    c.run_sync(&panics, json!({})).await;
    let flaky = json!({"name": "flaky", "timeout_ms": 5000, "nodes": [
        {"id": "in", "kind": "input"},
        {"id": "call", "kind": "api", "retry": {"max_attempts": 2, "initial_backoff_ms": 1}, "config": {"url": format!("{}/flaky", srv.url)}},
        {"id": "ai", "kind": "ai", "config": {"base_url": mock.url(), "model": "mock-1", "user": "mail me at a@b.example",
            "guardrails": {"input": [{"scanner": "pii_detection", "action": "redact"}]}}},
        {"id": "out", "kind": "output"}],
        "edges": [{"from": "in", "to": "call"}, {"from": "call", "to": "ai"}, {"from": "ai", "to": "out"}]});
    let flaky = c.deploy(&flaky).await;
    let (_, run) = c.run_sync(&flaky, json!({})).await;
    assert_eq!(run["status"], "succeeded", "{run}");

    let text = c.metrics_text().await;
    let (ok_promtool, report) = promtool_check(&text);
    assert!(ok_promtool, "promtool check metrics failed:\n{report}");

    let live = families(&text);
    let table = readme_table();
    let code = code_names();
    // The README's table is exactly the code's metric names, with types.
    assert_eq!(
        table.keys().cloned().collect::<BTreeSet<_>>(),
        code,
        "README table vs the metrics.rs constants"
    );
    // Everything exported is documented, with the type the README says.
    for (name, kind) in &live {
        assert_eq!(
            table.get(name),
            Some(kind),
            "{name} ({kind}) is exported but the README says {:?}",
            table.get(name)
        );
    }
    // And this load exercised the core set.
    for name in [
        "weft_runs_started_total",
        "weft_runs_completed_total",
        "weft_run_duration_seconds",
        "weft_timeouts_total",
        "weft_placement_duration_seconds",
        "weft_pending_runs",
        "weft_workers",
        "weft_http_requests_total",
        "weft_http_request_duration_seconds",
        "weft_node_duration_seconds",
        "weft_node_retries_total",
        "weft_node_panics_total",
        "weft_actor_restarts_total",
        "weft_worker_capacity",
        "weft_worker_inflight_runs",
        "weft_model_request_duration_seconds",
        "weft_model_tokens_total",
        "weft_guardrail_findings_total",
        "weft_timeout_lateness_seconds",
    ] {
        assert!(
            live.contains_key(name),
            "{name} not exported after the load"
        );
    }
    // Durations are histograms, never summaries.
    assert!(live
        .iter()
        .filter(|(n, _)| n.ends_with("_seconds"))
        .all(|(_, t)| t == "histogram" || t == "gauge"));
    assert!(!text.contains("quantile=\""), "no summaries");
    assert!(!text.contains("run_id"), "run ids are never labels");
    // Counts are exact (handles are registered once and reused).
    let route = r#"route="/v1/workflows/{id}/runs""#;
    let wf = format!(r#"workflow="{ok}""#);
    assert_eq!(sample(&text, "weft_runs_started_total", &[&wf]), Some(10.0));
    assert_eq!(
        sample(
            &text,
            "weft_runs_completed_total",
            &[&wf, r#"status="succeeded""#]
        ),
        Some(10.0)
    );
    assert_eq!(
        sample(&text, "weft_run_duration_seconds_count", &[&wf]),
        Some(10.0)
    );
    assert_eq!(
        sample(
            &text,
            "weft_http_requests_total",
            &[route, r#"status="400""#]
        ),
        Some(1.0),
        "the one run refused for its input"
    );
    assert!(
        sample(
            &text,
            "weft_http_requests_total",
            &[route, r#"status="200""#]
        )
        .is_some_and(|n| n >= 10.0),
        "{text}"
    );
    c.shutdown().await;
}

/// The value of the sample of `name` whose labels include every one of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn prom_query(http: &reqwest::Client, base: &str, q: &str) -> Option<f64> {
    let v: Value = http
        .get(format!("{base}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_agrees_with_the_monitor_p99() {
    let mut c = Cluster::start(0).await;
    let (w1, w2) = (
        weft_shared::testutil::free_port(),
        weft_shared::testutil::free_port(),
    );
    c.spawn_worker_process("pw1", &[("WEFT_METRICS_ADDR", &format!("127.0.0.1:{w1}"))]);
    c.spawn_worker_process("pw2", &[("WEFT_METRICS_ADDR", &format!("127.0.0.1:{w2}"))]);
    c.wait_workers(2).await;

    let dir = tempfile::tempdir().unwrap();
    let coord = c.base.trim_start_matches("http://").to_string();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: coordinator\n  static_configs: [{{targets: ['{coord}']}}]\n\
             - job_name: workers\n  static_configs: [{{targets: ['127.0.0.1:{w1}', '127.0.0.1:{w2}']}}]\n"
        ),
    )
    .unwrap();
    let pport = weft_shared::testutil::free_port();
    let mut prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{pport}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package prometheus; .ci/install installs it)");
    let pbase = format!("http://127.0.0.1:{pport}");

    // Runs of spread-out durations: a script busy for input.ms milliseconds.
    let wf = c
        .deploy(&one_script("const end = Date.now() + ctx.input.ms; while (Date.now() < end) {} return ctx.input.ms", 30_000, None))
        .await;
    let n = 120;
    let mut ids = Vec::new();
    for i in 0..n {
        let ms = (i * 37) % 300; // 0..300 ms, evenly spread
        ids.push(c.submit(&wf, json!({"ms": ms})).await);
    }
    for id in &ids {
        let run = c.wait_run(id, Duration::from_secs(60)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }

    // Wait until Prometheus has scraped every completion.
    let count_q = format!("sum(weft_runs_completed_total{{workflow=\"{wf}\"}})");
    let start = Instant::now();
    loop {
        if prom_query(&c.http, &pbase, &count_q).await == Some(n as f64) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "prometheus never saw {n} runs"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let q = format!("histogram_quantile(0.99, sum by (le) (weft_run_duration_seconds_bucket{{workflow=\"{wf}\"}}))");
    let prom_p99 = prom_query(&c.http, &pbase, &q)
        .await
        .expect("a P99 from Prometheus");
    let (_, monitor) = c.get(&format!("/v1/workflows/{wf}/monitor")).await;
    assert_eq!(monitor["runs"]["total"], n, "{monitor}");
    assert_eq!(monitor["runs"]["failure_rate"], 0.0);
    let exact_p99 = monitor["runs"]["p99_ms"].as_u64().unwrap() as f64 / 1000.0;
    // Within bucket resolution: both fall in the same bucket.
    let buckets = weft_shared::telemetry::SECONDS_BUCKETS;
    let upper = buckets.iter().copied().find(|b| *b >= prom_p99).unwrap();
    let lower = buckets
        .iter()
        .copied()
        .rev()
        .find(|b| *b < upper)
        .unwrap_or(0.0);
    assert!(
        exact_p99 > lower - 0.001 && exact_p99 <= upper + 0.001,
        "monitor P99 {exact_p99}s vs Prometheus {prom_p99}s: bucket ({lower}, {upper}]"
    );
    let _ = prom.kill();
    let _ = prom.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_counts_failures_and_model_runs_within_its_filters() {
    let c = Cluster::start(1).await;
    let mock = MockModel::start(MockModelConfig {
        completion_tokens: 5,
        ..Default::default()
    })
    .await
    .unwrap();
    let def = json!({"name": "m", "timeout_ms": 5000, "nodes": [
        {"id": "in", "kind": "input"},
        {"id": "gate", "kind": "script", "config": {"code": "if (ctx.input.fail) { throw new Error('x'); } return 1"}},
        {"id": "ai", "kind": "ai", "config": {"base_url": mock.url(), "model": "mock-1", "user": "hi"}},
        {"id": "out", "kind": "output"}],
        "edges": [{"from": "in", "to": "gate"}, {"from": "gate", "to": "ai"}, {"from": "ai", "to": "out"}]});
    let wf = c.deploy(&def).await;
    let before = weft_shared::time::now_ms();
    for i in 0..8 {
        c.run_sync(&wf, json!({"fail": i % 4 == 0})).await;
    }
    let id = c.submit(&wf, json!({"fail": false})).await;
    c.wait_run(&id, Duration::from_secs(10)).await;
    let (_, m) = c.get(&format!("/v1/workflows/{wf}/monitor")).await;
    assert_eq!(m["runs"]["total"], 9, "{m}");
    assert_eq!(m["runs"]["by_status"]["failed"], 2);
    assert_eq!(m["runs"]["failure_rate"], 2.0 / 9.0);
    assert_eq!(m["model_runs"]["total"], 7);
    assert_eq!(m["model_runs"]["completion_tokens"], 35);
    assert!(m["runs"]["p99_ms"].as_u64().unwrap() >= m["runs"]["p50_ms"].as_u64().unwrap());
    let (_, m) = c
        .get(&format!("/v1/workflows/{wf}/monitor?trigger=async"))
        .await;
    assert_eq!(m["runs"]["total"], 1, "{m}");
    let (_, m) = c
        .get(&format!("/v1/workflows/{wf}/monitor?to_ms={before}"))
        .await;
    assert_eq!(m["runs"]["total"], 0, "{m}");
    assert!(m["runs"]["p99_ms"].is_null());
    let (s, _) = c
        .get(&format!("/v1/workflows/{wf}/monitor?from_ms=10&to_ms=5"))
        .await;
    assert_eq!(s, 400);
    c.shutdown().await;
}
