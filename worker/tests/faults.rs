//! Capacity, faults and bad input through the real path, with worker
//! processes killed by signal where the fault is a process dying.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// A script that keeps its node busy for `ms` milliseconds, then returns.
fn busy(ms: u64) -> String {
    format!("const end = Date.now() + {ms}; while (Date.now() < end) {{}} return 'done'")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_has_its_run_placed_on_the_other() {
    let mut c = Cluster::start(0).await;
    c.spawn_worker_process("wa", &[]);
    c.spawn_worker_process("wb", &[]);
    c.wait_workers(2).await;
    let wf = c.deploy(&one_script(&busy(1_500), 30_000, None)).await;
    let run_id = c.submit(&wf, json!({})).await;
    let running = c
        .wait_run_until(&run_id, Duration::from_secs(10), |v| {
            v["status"] == "running"
        })
        .await;
    let first = running["attempts"][0]["worker_id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = if first == "wa" { "wb" } else { "wa" };
    c.signal_process(&first, libc::SIGKILL);
    let killed_at = Instant::now();

    let run = c.wait_run(&run_id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{run}");
    assert_eq!(attempts[0]["worker_id"], first.as_str());
    assert_eq!(attempts[0]["outcome"], "worker_lost");
    assert_eq!(attempts[1]["worker_id"], other);
    assert_eq!(attempts[1]["outcome"], "succeeded");
    // Re-placed after the heartbeat deadline, not before.
    let replaced = attempts[1]["placed_at_ms"].as_u64().unwrap()
        - attempts[0]["ended_at_ms"].as_u64().unwrap();
    assert!(
        replaced < 1_000,
        "placed again {replaced} ms after being declared lost"
    );
    assert!(killed_at.elapsed() >= Duration::from_millis(DEAD_AFTER_MS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_worker_without_failing_its_runs() {
    let mut c = Cluster::start(0).await;
    // The worker's own account at info, shown if this fails (it failed once
    // on a loaded 2-core run: the draining worker was declared dead and one
    // run stayed queued without its result; the log says why next time).
    c.spawn_worker_process("wd", &[("RUST_LOG", "info,async_nats=warn")]);
    c.wait_workers(1).await;
    let wf = c.deploy(&one_script(&busy(800), 30_000, None)).await;
    let ids = [
        c.submit(&wf, json!({})).await,
        c.submit(&wf, json!({})).await,
    ];
    for id in &ids {
        c.wait_run_until(id, Duration::from_secs(10), |v| v["status"] == "running")
            .await;
    }
    c.signal_process("wd", libc::SIGTERM);
    // While draining it takes nothing new: a sync run finds no worker.
    let start = Instant::now();
    loop {
        let (_, w) = c.get("/v1/workers").await;
        if w["items"][0]["draining"] == true {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "worker never reported draining: {w}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, err) = c.run_sync(&wf, json!({})).await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (503, Some("no_workers")),
        "{err}"
    );
    for id in &ids {
        let run = c.wait_run(id, Duration::from_secs(15)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(
            run["attempts"].as_array().unwrap().len(),
            1,
            "not re-placed: {run}"
        );
    }
    let status = c
        .wait_process_exit("wd", Duration::from_secs(10))
        .expect("worker exits after draining");
    assert!(status.success(), "{status:?}");
    c.wait_workers(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_worker_gets_a_clear_503_not_a_hang() {
    let c = Cluster::start(0).await;
    let wf = c.deploy(&one_script("return 1", 500, None)).await;
    let start = Instant::now();
    let r = c
        .http
        .post(c.url(&format!("/v1/workflows/{wf}/runs?mode=sync")))
        .json(&json!({"input": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "no_workers");
    assert!(start.elapsed() < Duration::from_secs(2));

    // An async run is accepted (it may wait for a worker to scale up) and
    // ends timed_out at its workflow deadline if none comes.
    let id = c.submit(&wf, json!({})).await;
    let run = c.wait_run(&id, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "timed_out", "{run}");
    assert_eq!(run["error"]["level"], "workflow");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_starts_when_a_worker_joins() {
    let mut c = Cluster::start(0).await;
    let wf = c.deploy(&four_node()).await;
    let id = c.submit(&wf, json!({"n": 4})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, v) = c.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(v["status"], "queued");
    c.add_worker(|_| {}).await;
    let run = c.wait_run(&id, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after() {
    let mut c = Cluster::start_with(0, |cfg| cfg.queue_capacity = 1).await;
    c.add_worker(|w| w.capacity = 1).await;
    c.wait_workers(1).await;
    let mut def = one_script("return 1", 3_000, None);
    def["nodes"][1]["fault"] = json!("hang");
    let wf = c.deploy(&def).await;
    let first = c.submit(&wf, json!({})).await; // holds the worker's one slot
    c.wait_run_until(&first, Duration::from_secs(5), |v| v["status"] == "running")
        .await;
    let _second = c.submit(&wf, json!({})).await; // waits in the queue
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = c
        .http
        .post(c.url(&format!("/v1/workflows/{wf}/runs?mode=async")))
        .json(&json!({"input": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "queue_full");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_run_can_be_cancelled() {
    let c = Cluster::start(1).await;
    let mut def = one_script("return 1", 20_000, None);
    def["nodes"][1]["fault"] = json!("hang");
    let wf = c.deploy(&def).await;
    let id = c.submit(&wf, json!({})).await;
    c.wait_run_until(&id, Duration::from_secs(5), |v| v["status"] == "running")
        .await;
    let (s, v) = c.post(&format!("/v1/runs/{id}/cancel"), &json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "cancelled");
    let (s, v) = c.post(&format!("/v1/runs/{id}/cancel"), &json!({})).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "conflict");
    // The worker freed its slot: it reports nothing in flight.
    let start = Instant::now();
    loop {
        let (_, w) = c.get("/v1/workers").await;
        if w["items"][0]["reported_inflight"] == 0 && w["items"][0]["assigned"] == 0 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "{w}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_every_subject_is_dropped_and_counted() {
    let c = Cluster::start(1).await;
    let wf = c.deploy(&four_node()).await;
    let client = async_nats::connect(c.nats.url()).await.unwrap();
    let (_, workers) = c.get("/v1/workers").await;
    let wid = workers["items"][0]["worker_id"]
        .as_str()
        .unwrap()
        .to_string();
    let s = weft_shared::subjects::Subjects::default();
    for subject in [
        s.heartbeat(),
        s.deregister(),
        s.results(),
        s.assign(&wid),
        s.cancel(&wid),
    ] {
        for junk in [
            &b""[..],
            b"\x00\x01\x02",
            b"\xff\xff\xff\xff",
            b"{\"v\":1}",
            &[0x93, 0x01, 0xa6, 0x61][..],
        ] {
            client
                .publish(subject.clone(), junk.to_vec().into())
                .await
                .unwrap();
        }
    }
    // A bad assignment sent as a request gets a refusal, not silence.
    let reply = client
        .request(s.assign(&wid), b"junk".to_vec().into())
        .await
        .unwrap();
    let r: weft_shared::wire::AssignReply = weft_shared::wire::decode(&reply.payload).unwrap();
    assert!(!r.accepted);
    client.flush().await.unwrap();
    let (_, run) = c.run_sync(&wf, json!({"n": 3})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let metrics = c.metrics_text().await;
    for subject in ["heartbeat", "results", "assign", "cancel", "deregister"] {
        assert!(
            metrics.contains(&format!(
                "weft_wire_decode_errors_total{{subject=\"{subject}\"}}"
            )),
            "{subject} garbage counted"
        );
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_runs_survive_a_coordinator_restart() {
    let mut c = Cluster::start(0).await;
    let wf = c.deploy(&four_node()).await;
    let ids = [
        c.submit(&wf, json!({"n": 1})).await,
        c.submit(&wf, json!({"n": 2})).await,
    ];
    c.stop_coordinator().await;
    c.start_coordinator().await;
    c.add_worker(|_| {}).await;
    for (n, id) in ids.iter().enumerate() {
        let run = c.wait_run(id, Duration::from_secs(10)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["output"]["v"], json!((n + 1) * 2));
    }
    c.shutdown().await;
}

/// Heartbeats for workers that do not exist as such, until aborted.
fn fake_heartbeats(
    nats: async_nats::Client,
    ids: &'static [&'static str],
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let started_at_ms = weft_shared::time::now_ms();
        for seq in 0.. {
            for id in ids {
                let hb = weft_shared::wire::Heartbeat {
                    worker_id: id.to_string(),
                    capacity: 100,
                    inflight: 0,
                    draining: false,
                    seq,
                    started_at_ms,
                    labels: Default::default(),
                };
                let bytes = weft_shared::wire::encode(&hb).unwrap();
                let _ = nats.publish("weft.workers.heartbeat", bytes).await;
            }
            tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS)).await;
        }
    })
}

/// Runs 12 four-node runs; each must end on `real`, its only attempt.
async fn twelve_runs_end_on(c: &Cluster, real: &str) {
    let wf = c.deploy(&four_node()).await;
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(c.submit(&wf, json!({"n": n})).await);
    }
    for (n, id) in ids.iter().enumerate() {
        let run = c.wait_run(id, Duration::from_secs(10)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["output"]["v"], json!(n * 2));
        // Attempts not taken are not kept: the one attempt is the real worker's.
        let attempts = run["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{run}");
        assert_eq!(attempts[0]["worker_id"], real, "{run}");
    }
}

/// A worker that announces itself but never subscribed to its assign
/// subject: NATS answers "no responders" at once, and the coordinator places
/// the run elsewhere without waiting out the (here, minute-long) assignment
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_nobody_listens_for_is_placed_again_at_once() {
    let logs = LogCapture::install();
    let c = Cluster::start_with(1, |cfg| cfg.assign_timeout_ms = 60_000).await;
    let nats = async_nats::connect(c.nats.url()).await.unwrap();
    let beats = fake_heartbeats(nats, &["absent"]);
    c.wait_workers(2).await;
    let started = Instant::now();
    twelve_runs_end_on(&c, &c.workers[0].id).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "waited for the assignment timeout: {:?}",
        started.elapsed()
    );
    let text = logs.text();
    assert!(
        text.lines()
            .any(|l| l.contains("absent") && l.contains("worker is not listening")),
        "the absent worker was never tried"
    );
    beats.abort();
    c.shutdown().await;
}

/// A worker that takes assignments and never answers: after
/// `assign_timeout_ms` the run is placed on a worker that does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_nobody_answers_is_placed_again_after_the_timeout() {
    use futures::StreamExt;
    let logs = LogCapture::install();
    // Long enough for the real worker to answer on a loaded debug build.
    let c = Cluster::start_with(1, |cfg| cfg.assign_timeout_ms = 1_000).await;
    let nats = async_nats::connect(c.nats.url()).await.unwrap();
    let mut mute = nats.subscribe("weft.worker.mute.assign").await.unwrap();
    let swallowed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = swallowed.clone();
    tokio::spawn(async move {
        while mute.next().await.is_some() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let beats = fake_heartbeats(nats, &["mute"]);
    c.wait_workers(2).await;
    twelve_runs_end_on(&c, &c.workers[0].id).await;
    assert!(
        swallowed.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the mute worker was never tried, so the timeout was not either"
    );
    assert!(
        logs.text()
            .lines()
            .any(|l| l.contains("mute") && l.contains("assignment not confirmed in time")),
        "no assignment to the mute worker timed out"
    );
    beats.abort();
    c.shutdown().await;
}

/// An assignment left unanswered is not placed again while its worker holds
/// the run: a short run's result is its answer, and could be late. After
/// `assign_timeout_ms` the coordinator asks the worker which runs it holds; a
/// run held stands (one attempt, `running`, until its result), a run not held
/// is placed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_assignment_stands_if_its_worker_holds_the_run() {
    use futures::StreamExt;
    use std::sync::{Arc, Mutex};
    use weft_shared::wire::{self, Assign, HeldRuns, ResultAck, RunResult};
    let logs = LogCapture::install();
    let c = Cluster::start_with(0, |cfg| cfg.assign_timeout_ms = 500).await;
    let nats = async_nats::connect(c.nats.url()).await.unwrap();
    let mut assigns = nats.subscribe("weft.worker.holder.assign").await.unwrap();
    let mut queries = nats.subscribe("weft.worker.holder.runs").await.unwrap();
    nats.flush().await.unwrap();
    // The fake worker takes every assignment without a word, and holds the
    // runs whose input says so.
    let got: Arc<Mutex<Vec<Assign>>> = Arc::default();
    let taker = {
        let got = got.clone();
        tokio::spawn(async move {
            while let Some(m) = assigns.next().await {
                got.lock().unwrap().push(wire::decode(&m.payload).unwrap());
            }
        })
    };
    let answerer = {
        let (got, nats) = (got.clone(), nats.clone());
        tokio::spawn(async move {
            while let Some(q) = queries.next().await {
                let runs = got
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|a| a.input["hold"] == true)
                    .map(|a| (a.run_id, a.attempt))
                    .collect();
                let held = HeldRuns {
                    worker_id: "holder".into(),
                    runs,
                };
                let to = q.reply.unwrap();
                nats.publish(to, wire::encode(&held).unwrap())
                    .await
                    .unwrap();
            }
        })
    };
    let beats = fake_heartbeats(nats.clone(), &["holder"]);
    c.wait_workers(1).await;
    let wf = c.deploy(&four_node()).await;
    let held_id = c.submit(&wf, json!({"n": 6, "hold": true})).await;
    let other_id = c.submit(&wf, json!({"n": 7})).await;
    let sendings = |id: &str| {
        got.lock()
            .unwrap()
            .iter()
            .filter(|a| a.run_id.to_string() == id)
            .map(|a| a.attempt)
            .collect::<Vec<_>>()
    };
    let running = c
        .wait_run_until(&held_id, Duration::from_secs(10), |v| {
            v["status"] == "running"
        })
        .await;
    assert_eq!(
        running["attempts"].as_array().unwrap().len(),
        1,
        "{running}"
    );
    assert_eq!(running["attempts"][0]["worker_id"], "holder", "{running}");
    // The run not held is placed again (on the only worker there is; an
    // attempt not taken is not counted, so it is sent as attempt 1 again).
    let start = Instant::now();
    while sendings(&other_id).len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the run not held was not placed again: {:?}",
            sendings(&other_id)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Several timeouts later the held run was still sent once.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(sendings(&held_id), vec![1]);
    // Its result, when it comes, ends it on that one attempt.
    let result = RunResult {
        run_id: held_id.parse().unwrap(),
        attempt: 1,
        worker_id: "holder".into(),
        status: weft_shared::model::RunStatus::Succeeded,
        output: Some(json!({"v": 12, "big": true})),
        error: None,
        nodes: vec![],
        started_at_ms: weft_shared::time::now_ms(),
        ended_at_ms: weft_shared::time::now_ms(),
        model_runs: vec![],
        usage: Default::default(),
    };
    let ack = nats
        .request("weft.runs.results", wire::encode(&result).unwrap())
        .await
        .unwrap();
    wire::decode::<ResultAck>(&ack.payload).unwrap();
    let run = c.wait_run(&held_id, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"]["v"], 12, "{run}");
    assert_eq!(run["attempts"].as_array().unwrap().len(), 1, "{run}");
    assert!(
        logs.text()
            .lines()
            .any(|l| l.contains("holder") && l.contains("the worker does not hold the run")),
        "the run not held was not logged as placed again for it"
    );
    for t in [taker, answerer, beats] {
        t.abort();
    }
    c.shutdown().await;
}

/// If the worker does not answer what it holds either (a NATS hiccup, a
/// stalled process), nothing is decided: the run is not placed again while
/// the worker heartbeats, and is asked about again; once the worker says it
/// holds the run, it stands as taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_question_about_held_runs_decides_nothing() {
    use futures::StreamExt;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use weft_shared::wire::{self, HeldRuns};
    let c = Cluster::start_with(0, |cfg| cfg.assign_timeout_ms = 300).await;
    let nats = async_nats::connect(c.nats.url()).await.unwrap();
    let mut assigns = nats.subscribe("weft.worker.quiet.assign").await.unwrap();
    let mut queries = nats.subscribe("weft.worker.quiet.runs").await.unwrap();
    nats.flush().await.unwrap();
    let (sent, asked, answer) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let run = Arc::new(std::sync::Mutex::new(None));
    let taker = {
        let (sent, run) = (sent.clone(), run.clone());
        tokio::spawn(async move {
            while let Some(m) = assigns.next().await {
                let a: wire::Assign = wire::decode(&m.payload).unwrap();
                *run.lock().unwrap() = Some((a.run_id, a.attempt));
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let answerer = {
        let (asked, answer, run, nats) = (asked.clone(), answer.clone(), run.clone(), nats.clone());
        tokio::spawn(async move {
            while let Some(q) = queries.next().await {
                asked.fetch_add(1, Ordering::SeqCst);
                if answer.load(Ordering::SeqCst) {
                    let held = HeldRuns {
                        worker_id: "quiet".into(),
                        runs: run.lock().unwrap().iter().copied().collect(),
                    };
                    let bytes = wire::encode(&held).unwrap();
                    nats.publish(q.reply.unwrap(), bytes).await.unwrap();
                }
            }
        })
    };
    let beats = fake_heartbeats(nats.clone(), &["quiet"]);
    c.wait_workers(1).await;
    let wf = c.deploy(&four_node()).await;
    let id = c.submit(&wf, json!({"n": 1})).await;
    // Timeouts of 300 ms, each question unanswered for another 300 ms.
    let start = Instant::now();
    while asked.load(Ordering::SeqCst) < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never asked twice"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sent.load(Ordering::SeqCst),
        1,
        "placed again without an answer"
    );
    let (_, queued) = c.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(queued["status"], "queued", "{queued}");
    answer.store(true, Ordering::SeqCst);
    let running = c
        .wait_run_until(&id, Duration::from_secs(10), |v| v["status"] == "running")
        .await;
    assert_eq!(
        running["attempts"].as_array().unwrap().len(),
        1,
        "{running}"
    );
    assert_eq!(sent.load(Ordering::SeqCst), 1);
    for t in [taker, answerer, beats] {
        t.abort();
    }
    c.shutdown().await;
}

/// A run that ended while no coordinator listened is still the worker's to
/// report: its unacknowledged result counts as held when a restarted
/// coordinator asks, so the run is adopted, not placed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_not_yet_acknowledged_counts_as_held() {
    let mut c = Cluster::start(1).await;
    let worker = c.workers[0].id.clone();
    let wf = c.deploy(&one_script(&busy(300), 30_000, None)).await;
    let run_id = c.submit(&wf, json!({})).await;
    c.wait_run_until(&run_id, Duration::from_secs(10), |v| {
        v["status"] == "running"
    })
    .await;
    c.stop_coordinator().await;
    // The run ends; its result finds no coordinator.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let nats = async_nats::connect(c.nats.url()).await.unwrap();
    let query = weft_shared::wire::encode(&weft_shared::wire::HeldRunsQuery {}).unwrap();
    let reply = nats
        .request(format!("weft.worker.{worker}.runs"), query)
        .await
        .unwrap();
    let held: weft_shared::wire::HeldRuns = weft_shared::wire::decode(&reply.payload).unwrap();
    let id: uuid::Uuid = run_id.parse().unwrap();
    assert_eq!(held.runs, vec![(id, 1)], "{held:?}");
    c.start_coordinator().await;
    let run = c.wait_run(&run_id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["attempts"].as_array().unwrap().len(), 1, "{run}");
    c.shutdown().await;
}
