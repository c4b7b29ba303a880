//! Idempotent submission and the configurable limits, through HTTP.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

async fn post_with_key(c: &Cluster, path: &str, key: &str, body: &Value) -> (u16, Value, bool) {
    let r = c
        .http
        .post(c.url(path))
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    let replayed = r.headers().get("idempotent-replayed").is_some();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null), replayed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_idempotency_key_returns_the_same_run() {
    let c = Cluster::start(1).await;
    let wf = c.deploy(&four_node()).await;
    let path = format!("/v1/workflows/{wf}/runs?mode=async");
    let (s1, a, r1) = post_with_key(&c, &path, "order-42", &json!({"input": {"n": 5}})).await;
    let (s2, b, r2) = post_with_key(&c, &path, "order-42", &json!({"input": {"n": 5}})).await;
    assert_eq!((s1, s2), (202, 202), "{a} {b}");
    assert_eq!(a["run_id"], b["run_id"]);
    assert!(!r1 && r2, "the second answer says it is a replay");
    c.wait_run(a["run_id"].as_str().unwrap(), Duration::from_secs(10))
        .await;
    let (_, list) = c.get(&format!("/v1/runs?workflow_id={wf}")).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "one run, not two"
    );

    // Sync: a repeat after completion gets the finished run.
    let path = format!("/v1/workflows/{wf}/runs?mode=sync");
    let (_, first, _) = post_with_key(&c, &path, "k-sync", &json!({"input": {"n": 6}})).await;
    let (s, again, replayed) =
        post_with_key(&c, &path, "k-sync", &json!({"input": {"n": 6}})).await;
    assert_eq!(s, 200);
    assert!(replayed);
    assert_eq!(first["id"], again["id"]);
    assert_eq!(again["output"]["v"], 12);

    // Concurrent repeats while the run is in flight all get that one run.
    let mut def = one_script(
        "const end = Date.now() + 300; while (Date.now() < end) {} return 1",
        10_000,
        None,
    );
    def["name"] = json!("slow");
    let slow = c.deploy(&def).await;
    let path = format!("/v1/workflows/{slow}/runs?mode=sync");
    let mut handles = Vec::new();
    for _ in 0..4 {
        let (http, url) = (c.http.clone(), c.url(&path));
        handles.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .header("idempotency-key", "burst")
                .json(&json!({"input": {}}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for h in handles {
        let (s, v) = h.await.unwrap();
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["status"], "succeeded");
        ids.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "one run for the burst: {ids:?}");

    // The same key for a different request is refused, naming the first run.
    let (s, err, _) = post_with_key(
        &c,
        &format!("/v1/workflows/{wf}/runs?mode=async"),
        "order-42",
        &json!({"input": {"n": 9}}),
    )
    .await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (409, Some("idempotency_key_reused")),
        "{err}"
    );
    assert_eq!(err["error"]["details"]["run_id"], a["run_id"]);

    // Key order is not meaning: the same input written in another order is
    // the same request (objects keep the order they are sent in).
    let path = format!("/v1/workflows/{wf}/runs?mode=async");
    let (_, x, _) = post_with_key(&c, &path, "k-order", &json!({"input": {"n": 7, "m": 1}})).await;
    let (s, y, replayed) =
        post_with_key(&c, &path, "k-order", &json!({"input": {"m": 1, "n": 7}})).await;
    assert_eq!(s, 202, "{y}");
    assert!(replayed, "{y}");
    assert_eq!(x["run_id"], y["run_id"]);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_what_is_too_big_or_too_many() {
    let mut c = Cluster::start_with(0, |cfg| {
        cfg.max_input_bytes = 1_000;
        cfg.max_nodes = 5;
        cfg.max_concurrent_runs_per_workflow = 1;
    })
    .await;
    c.add_worker(|w| w.max_output_bytes = 2_000).await;
    c.wait_workers(1).await;

    // Input size: 413 naming the limit.
    let wf = c
        .deploy(&one_script(
            "return ctx.input.size ? 'x'.repeat(ctx.input.size) : 1",
            10_000,
            None,
        ))
        .await;
    let (s, err) = c.run_sync(&wf, json!({"blob": "y".repeat(2_000)})).await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (413, Some("payload_too_large")),
        "{err}"
    );
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_input_bytes"));

    // Output size: the run fails clearly.
    let (_, run) = c.run_sync(&wf, json!({"size": 5_000})).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["error"]["code"], "output_too_large");
    let (_, run) = c.run_sync(&wf, json!({"size": 10})).await;
    assert_eq!(run["status"], "succeeded", "{run}");

    // Nodes per workflow.
    let mut big = four_node();
    for i in 0..3 {
        big["nodes"].as_array_mut().unwrap().push(
            json!({"id": format!("extra{i}"), "kind": "script", "config": {"code": "return 1"}}),
        );
        big["edges"]
            .as_array_mut()
            .unwrap()
            .push(json!({"from": "in", "to": format!("extra{i}")}));
    }
    let (s, err) = c.post("/v1/workflows", &big).await;
    assert_eq!(s, 400);
    assert!(
        err["error"]["details"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["code"] == "too_many_nodes"),
        "{err}"
    );

    // Concurrent runs per workflow: the second while the first runs is a 429.
    let mut hang = one_script("return 1", 3_000, None);
    hang["nodes"][1]["fault"] = json!("hang");
    let hang = c.deploy(&hang).await;
    let first = c.submit(&hang, json!({})).await;
    let r = c
        .http
        .post(c.url(&format!("/v1/workflows/{hang}/runs?mode=async")))
        .json(&json!({"input": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "concurrency_limit"
    );
    // Concurrent requests cannot all slip under the limit: of six at once
    // to a workflow with nothing running, exactly one is accepted.
    let mut burst = one_script("return 1", 3_000, None);
    burst["nodes"][1]["fault"] = json!("hang");
    burst["name"] = json!("burst");
    let burst = c.deploy(&burst).await;
    let mut handles = Vec::new();
    for _ in 0..6 {
        let (http, url) = (
            c.http.clone(),
            c.url(&format!("/v1/workflows/{burst}/runs?mode=async")),
        );
        handles.push(tokio::spawn(async move {
            http.post(url)
                .json(&json!({"input": {}}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for h in handles {
        codes.push(h.await.unwrap());
    }
    codes.sort();
    assert_eq!(codes, [202, 429, 429, 429, 429, 429]);

    // Other workflows are not held back, and the slot frees when the run ends.
    let (_, run) = c.run_sync(&wf, json!({"size": 1})).await;
    assert_eq!(run["status"], "succeeded");
    c.wait_run(&first, Duration::from_secs(10)).await;
    let again = c.submit(&hang, json!({})).await;
    assert!(!again.is_empty());
    c.shutdown().await;
}
