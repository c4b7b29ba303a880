//! The execution core through the real path: HTTP → coordinator → a real
//! nats-server → worker actors → back.

mod common;

use common::*;
use serde_json::json;
use std::collections::HashSet;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_node_workflow_runs_sync_and_async_spread_over_two_workers() {
    let c = Cluster::start(2).await;
    let wf = c.deploy(&four_node()).await;

    let (s, run) = c.run_sync(&wf, json!({"n": 7})).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], json!({"v": 14, "big": true}));
    let nodes: Vec<&str> = run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["in", "double", "big", "out"]);
    assert!(run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["status"] == "succeeded"));

    let (_, run) = c.run_sync(&wf, json!({"n": 2})).await;
    assert_eq!(run["output"], json!({"v": 4, "big": false}));

    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(c.submit(&wf, json!({"n": n})).await);
    }
    let mut workers = HashSet::new();
    for (n, id) in ids.iter().enumerate() {
        let run = c.wait_run(id, Duration::from_secs(20)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["output"]["v"], json!(n * 2));
        assert_eq!(run["trigger"], "async");
        assert_eq!(run["attempts"].as_array().unwrap().len(), 1);
        workers.insert(
            run["attempts"][0]["worker_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        workers.len(),
        2,
        "runs should spread over both workers: {workers:?}"
    );

    // Input that does not match the schema is refused, naming the field.
    let (s, err) = c.run_sync(&wf, json!({"n": "seven"})).await;
    assert_eq!(s, 400);
    assert_eq!(err["error"]["code"], "invalid_input");
    assert_eq!(err["error"]["details"]["fields"][0]["field"], "/n");
    assert!(err["error"]["message"].as_str().unwrap().contains("/n"));
    let (s, err) = c.run_sync(&wf, json!({})).await;
    assert_eq!(s, 400, "{err}");

    // The run list pages with a cursor.
    let (_, page) = c.get(&format!("/v1/runs?workflow_id={wf}&limit=10")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = c
        .get(&format!(
            "/v1/runs?workflow_id={wf}&limit=50&cursor={cursor}"
        ))
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 12);
    assert!(rest["next_cursor"].is_null());
    c.shutdown().await;
}

/// Each arbiter of a worker takes assignments on a NATS connection of its
/// own (one queue group on the worker's assign subject) and sends the replies
/// and results of its runs on it; the main connection does not subscribe to
/// assignments. Read from the server's own view of its connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_arbiter_takes_runs_and_sends_results_on_its_own_nats_connection() {
    let c = Cluster::start(1).await;
    let id = c.workers[0].id.clone();
    let wf = c.deploy(&four_node()).await;
    const RUNS: u64 = 40;
    for n in 0..RUNS {
        let (s, run) = c.run_sync(&wf, json!({"n": n})).await;
        assert_eq!(s, 200, "{run}");
        assert_eq!(run["output"]["v"], json!(n * 2));
    }
    let connz: serde_json::Value = reqwest::get(format!("{}/connz?subs=1", c.nats.monitor_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let conns = connz["connections"].as_array().unwrap();
    let named = |name: &str| {
        conns
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no connection named {name}: {connz}"))
    };
    let assign = format!("weft.worker.{id}.assign");
    let subscribed = |conn: &serde_json::Value| {
        conn["subscriptions_list"]
            .as_array()
            .is_some_and(|l| l.iter().any(|s| s == assign.as_str()))
    };
    assert!(
        !subscribed(named(&format!("weft-worker-{id}"))),
        "the main connection must not take assignments: {connz}"
    );
    let (mut sent, mut received) = (0, 0);
    for a in 0..2 {
        let conn = named(&format!("weft-worker-{id}-a{a}"));
        assert!(subscribed(conn), "arbiter {a} takes no assignments: {conn}");
        // Server → arbiter: the "no responders" answer to its start-up
        // round trip, then its assignments and the acks of its results.
        let out = conn["out_msgs"].as_u64().unwrap();
        assert!(out > 1, "arbiter {a} was given no run: {conn}");
        received += out;
        sent += conn["in_msgs"].as_u64().unwrap();
    }
    // Arbiter → server: per run, the result the caller was answered with
    // (a run this short needs no separate answer to its assignment).
    assert!(
        sent >= RUNS,
        "{sent} messages from the arbiters for {RUNS} runs"
    );
    // Server → arbiters: every assignment (the last acks may still be on
    // their way).
    assert!(
        received >= RUNS,
        "{received} messages to the arbiters for {RUNS} runs"
    );
    c.shutdown().await;
}

/// The coordinator acks results in batches: what one commit made durable
/// goes to each worker connection ("lane") as one `ResultAcks`, on that
/// lane's own subject — fewer messages than results, each result acked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_acked_in_batches_on_the_lane_that_sent_them() {
    use futures::StreamExt;
    let c = Cluster::start(1).await;
    let id = c.workers[0].id.clone();
    let nats = async_nats::connect(c.nats.url()).await.unwrap();
    let mut acks = nats
        .subscribe(format!("weft.worker.{id}.acks.*"))
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let wf = c.deploy(&four_node()).await;
    const RUNS: usize = 40;
    let runs = futures::future::join_all((0..RUNS).map(|n| c.run_sync(&wf, json!({"n": n})))).await;
    let mut expected = HashSet::new();
    for (s, run) in &runs {
        assert_eq!(*s, 200, "{run}");
        expected.insert(run["id"].as_str().unwrap().to_string());
    }
    let (mut messages, mut acked) = (0, Vec::new());
    let mut lanes = HashSet::new();
    while acked.len() < RUNS {
        let m = tokio::time::timeout(Duration::from_secs(10), acks.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {RUNS} results acked", acked.len()))
            .unwrap();
        let a: weft_shared::wire::ResultAcks = weft_shared::wire::decode(&m.payload).unwrap();
        messages += 1;
        lanes.insert(m.subject.to_string());
        acked.extend(a.runs.iter().map(|(run, attempt)| {
            assert_eq!(*attempt, 1);
            run.to_string()
        }));
    }
    acked.sort();
    let unique = acked.iter().cloned().collect::<HashSet<_>>();
    assert_eq!(unique.len(), acked.len(), "a result acked twice: {acked:?}");
    assert_eq!(unique, expected);
    assert!(
        messages < RUNS,
        "{messages} ack messages for {RUNS} results sent at once"
    );
    // Each arbiter sends on its own connection: its acks come back there.
    for lane in &lanes {
        assert!(
            lane.ends_with(".acks.0") || lane.ends_with(".acks.1"),
            "acks on {lane}: not an arbiter's lane"
        );
    }
    c.shutdown().await;
}

/// A worker answers an assignment it took only if the run is still running
/// after `ANSWER_TAKEN_WITHIN`: a shorter run's result is the answer. Seen on
/// the coordinator's answer subjects: the short runs get none, a long run
/// exactly one — which the coordinator takes, showing the run `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_taken_is_answered_only_if_its_result_does_not_come_first() {
    use futures::StreamExt;
    let c = Cluster::start(1).await;
    let nats = async_nats::connect(c.nats.url()).await.unwrap();
    let mut answers = nats
        .subscribe("weft.coordinator.*.assigned.>")
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let wf = c.deploy(&four_node()).await;
    // Runs the worker finished well within the 20 ms (started on the thread
    // that took them, right after): their result went before the answer
    // fell due.
    let mut short = HashSet::new();
    for n in 0..20 {
        let (s, run) = c.run_sync(&wf, json!({"n": n})).await;
        assert_eq!(s, 200, "{run}");
        let took = run["ended_at_ms"]
            .as_u64()
            .unwrap()
            .saturating_sub(run["started_at_ms"].as_u64().unwrap());
        if took <= 10 {
            short.insert(run["id"].as_str().unwrap().to_string());
        }
    }
    assert!(
        short.len() >= 5,
        "only {} of 20 runs took ≤ 10 ms",
        short.len()
    );
    let long = c
        .deploy(&one_script(
            "const end = Date.now() + 400; while (Date.now() < end) {} return 'done'",
            30_000,
            None,
        ))
        .await;
    let long_id = c.submit(&long, json!({})).await;
    let running = c
        .wait_run_until(&long_id, Duration::from_secs(10), |v| {
            v["status"] == "running"
        })
        .await;
    assert_eq!(
        running["attempts"].as_array().unwrap().len(),
        1,
        "{running}"
    );
    let run = c.wait_run(&long_id, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    // Its start is when the worker took it, not when the answer came.
    assert_eq!(run["started_at_ms"], running["started_at_ms"], "{run}");
    let took = run["ended_at_ms"].as_u64().unwrap() - run["started_at_ms"].as_u64().unwrap();
    assert!(
        took >= 400,
        "{took} ms from start to end of a 400 ms script"
    );
    let mut answered = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), answers.next()).await {
        // weft.coordinator.<process>.assigned.<run>.<seq>
        let run_id = m.subject.split('.').nth(4).unwrap().to_string();
        let reply: weft_shared::wire::AssignReply = weft_shared::wire::decode(&m.payload).unwrap();
        assert!(reply.accepted, "{reply:?}");
        answered.push(run_id);
    }
    assert_eq!(
        answered.iter().filter(|id| **id == long_id).count(),
        1,
        "the long run's assignment must be answered once: {answered:?}"
    );
    let answered_short: Vec<_> = answered.iter().filter(|id| short.contains(*id)).collect();
    assert!(
        answered_short.is_empty(),
        "short runs answered apart from their result: {answered_short:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_timeout_fires_before_a_longer_node_timeout() {
    let c = Cluster::start(1).await;
    let wf = c
        .deploy(&one_script("while (true) {}", 300, Some(20_000)))
        .await;
    let start = Instant::now();
    let (s, run) = c.run_sync(&wf, json!({})).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "timed_out", "{run}");
    assert_eq!(run["error"]["code"], "timed_out");
    assert_eq!(run["error"]["level"], "workflow", "{run}");
    // Ended by the workflow's 300 ms, long before the node's 20 s.
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_timeout_fires_before_the_workflows_and_the_loop_really_stops() {
    let mut c = Cluster::start(0).await;
    // One script slot: if the endless loop kept its thread, nothing after it could run.
    c.add_worker(|w| w.script_concurrency = 1).await;
    c.wait_workers(1).await;
    let wf = c
        .deploy(&one_script("while (true) {}", 20_000, Some(200)))
        .await;
    let (s, run) = c.run_sync(&wf, json!({})).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "timed_out", "{run}");
    assert_eq!(run["error"]["level"], "node", "{run}");
    assert_eq!(run["error"]["node_id"], "work");
    let work = run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "work")
        .unwrap();
    assert_eq!(work["status"], "timed_out");

    // Longer than a script may run in place on its actor's thread: stopped
    // there, run again on the single blocking slot, and right.
    let ok = c
        .deploy(&one_script(
            "const end = Date.now() + 5; while (Date.now() < end) {} return 41 + 1",
            5_000,
            None,
        ))
        .await;
    for _ in 0..3 {
        let (_, run) = c.run_sync(&ok, json!({})).await;
        assert_eq!(
            run["status"], "succeeded",
            "the worker keeps serving: {run}"
        );
        assert_eq!(run["output"]["result"], 42);
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_refuses_memory_files_and_sockets_and_the_worker_keeps_serving() {
    let mut c = Cluster::start(0).await;
    c.add_worker(|w| w.script_memory_limit_bytes = 16 * 1024 * 1024)
        .await;
    c.wait_workers(1).await;
    let cases = [
        (
            "let a = []; while (true) { a.push('x'.repeat(4096)); }",
            "script_out_of_memory",
            "",
        ),
        (
            "return require('fs').readFileSync('/etc/passwd', 'utf8')",
            "script_error",
            "ReferenceError",
        ),
        (
            "return std.loadFile('/etc/passwd')",
            "script_error",
            "ReferenceError",
        ),
        (
            "return fetch('http://127.0.0.1:1/')",
            "script_error",
            "ReferenceError",
        ),
        (
            "return new WebSocket('ws://127.0.0.1:1/')",
            "script_error",
            "ReferenceError",
        ),
        (
            "return os.exec(['/bin/true'])",
            "script_error",
            "ReferenceError",
        ),
    ];
    for (code, want, text) in cases {
        let wf = c.deploy(&one_script(code, 10_000, None)).await;
        let (s, run) = c.run_sync(&wf, json!({})).await;
        assert_eq!(s, 200, "{run}");
        assert_eq!(run["status"], "failed", "{code}: {run}");
        assert_eq!(run["error"]["code"], want, "{code}: {run}");
        assert!(
            run["error"]["message"].as_str().unwrap().contains(text),
            "{code}: {run}"
        );
        assert_eq!(run["error"]["node_id"], "work");
    }
    let ok = c
        .deploy(&one_script("return [1, 2, 3].map(x => x * 2)", 5_000, None))
        .await;
    let (_, run) = c.run_sync(&ok, json!({})).await;
    assert_eq!(run["output"]["result"], json!([2, 4, 6]), "{run}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_node_fails_its_run_and_the_worker_keeps_serving() {
    let c = Cluster::start(1).await;
    let mut def = one_script("return 1", 5_000, None);
    def["nodes"][1]["fault"] = json!("panic");
    let wf = c.deploy(&def).await;
    for _ in 0..3 {
        let (s, run) = c.run_sync(&wf, json!({})).await;
        assert_eq!(s, 200, "{run}");
        assert_eq!(run["status"], "failed", "{run}");
        assert_eq!(run["error"]["code"], "node_panicked", "{run}");
        assert_eq!(run["error"]["node_id"], "work");
    }
    let ok = c.deploy(&four_node()).await;
    let (_, run) = c.run_sync(&ok, json!({"n": 1})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let metrics = c.metrics_text().await;
    assert!(
        metrics.contains("weft_node_panics_total"),
        "panics are counted"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_node_errors_are_retried_with_backoff() {
    let c = Cluster::start(1).await;
    // Fails unless the clock's millisecond is even: over 6 attempts it succeeds
    // with overwhelming likelihood, and the log shows the attempts it took.
    let mut def = one_script(
        "if (Date.now() % 2 !== 0) { throw new Error('odd'); } return 'even'",
        10_000,
        None,
    );
    def["nodes"][1]["retry"] =
        json!({"max_attempts": 10, "initial_backoff_ms": 1, "max_backoff_ms": 3});
    let wf = c.deploy(&def).await;
    let (_, run) = c.run_sync(&wf, json!({})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let work = run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "work")
        .unwrap();
    assert!(work["attempts"].as_u64().unwrap() >= 1);

    // Always failing: exactly max_attempts attempts, then the error.
    let mut def = one_script("throw new Error('always')", 10_000, None);
    def["nodes"][1]["retry"] =
        json!({"max_attempts": 3, "initial_backoff_ms": 1, "max_backoff_ms": 2});
    let wf = c.deploy(&def).await;
    let (_, run) = c.run_sync(&wf, json!({})).await;
    assert_eq!(run["status"], "failed", "{run}");
    let work = run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "work")
        .unwrap();
    assert_eq!(work["attempts"], 3, "{run}");
    assert!(run["error"]["message"].as_str().unwrap().contains("always"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn condition_branches_skip_the_path_not_taken() {
    let c = Cluster::start(1).await;
    let def = json!({
        "name": "route",
        "timeout_ms": 5000,
        "nodes": [
            {"id": "in", "kind": "input"},
            {"id": "pick", "kind": "condition", "config": {"branches": [
                {"name": "small", "when": "input.n < 10"}, {"name": "large", "when": "input.n >= 10"}]}},
            {"id": "small", "kind": "script", "config": {"code": "return 'small'"}},
            {"id": "large", "kind": "script", "config": {"code": "return 'large'"}},
            {"id": "out", "kind": "output", "config": {"fields": {
                "size": "has(steps.small) ? steps.small.output : steps.large.output"}}}
        ],
        "edges": [
            {"from": "in", "to": "pick"},
            {"from": "pick", "to": "small", "branch": "small"},
            {"from": "pick", "to": "large", "branch": "large"},
            {"from": "small", "to": "out"},
            {"from": "large", "to": "out"}
        ]
    });
    let wf = c.deploy(&def).await;
    let (_, run) = c.run_sync(&wf, json!({"n": 3})).await;
    assert_eq!(run["output"]["size"], "small", "{run}");
    let large = run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_id"] == "large")
        .unwrap();
    assert_eq!(large["status"], "skipped");
    let (_, run) = c.run_sync(&wf, json!({"n": 30})).await;
    assert_eq!(run["output"]["size"], "large", "{run}");
    c.shutdown().await;
}
