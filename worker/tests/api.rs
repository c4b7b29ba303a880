//! The HTTP API's contract: workflow CRUD and deploy, and errors that are
//! always `{"error": {"code", "message", "details"}}` with a 4xx for bad input.

mod common;

use common::*;
use serde_json::{json, Value};

fn codes(err: &Value) -> Vec<(String, Option<String>)> {
    err["error"]["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["code"].as_str().unwrap().to_string(),
                e["node_id"].as_str().map(str::to_string),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_class_of_bad_definition_is_a_400_listing_every_error() {
    let c = Cluster::start(0).await;
    let bad = json!({
        "name": "bad",
        "timeout_ms": 0,
        "nodes": [
            {"id": "in", "kind": "input"},
            {"id": "in2", "kind": "input"},
            {"id": "mystery", "kind": "teleport"},
            {"id": "broken", "kind": "script", "config": {"code": "return ("}},
            {"id": "cond", "kind": "condition", "config": {"branches": [{"name": "a", "when": "input.x >"}]}},
            {"id": "slow", "kind": "script", "config": {"code": "return 1"}, "timeout_ms": 99999999},
            {"id": "loop_a", "kind": "script", "config": {"code": "return 1"}},
            {"id": "loop_b", "kind": "script", "config": {"code": "return 1"}},
            {"id": "island", "kind": "script", "config": {"code": "return 1"}}
        ],
        "edges": [
            {"from": "in", "to": "broken"},
            {"from": "broken", "to": "nowhere"},
            {"from": "in", "to": "cond"},
            {"from": "cond", "to": "slow", "branch": "a"},
            {"from": "in", "to": "loop_a"},
            {"from": "loop_a", "to": "loop_b"},
            {"from": "loop_b", "to": "loop_a"}
        ]
    });
    let (s, err) = c.post("/v1/workflows", &bad).await;
    assert_eq!(s, 400, "{err}");
    assert_eq!(err["error"]["code"], "invalid_definition");
    let got = codes(&err);
    let want = [
        ("timeout_out_of_range", None),
        ("multiple_inputs", Some("in2")),
        ("unknown_kind", Some("mystery")),
        ("script_does_not_compile", Some("broken")),
        ("expression_does_not_compile", Some("cond")),
        ("timeout_out_of_range", Some("slow")),
        ("dangling_edge", Some("broken")),
        ("cycle", Some("loop_a")),
        ("unreachable_node", Some("island")),
        ("missing_output", None),
    ];
    for (code, node) in want {
        assert!(
            got.contains(&(code.to_string(), node.map(str::to_string))),
            "missing ({code}, {node:?}) in {got:?}"
        );
    }
    let cycle = err["error"]["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["code"] == "cycle")
        .unwrap();
    assert!(
        cycle["message"]
            .as_str()
            .unwrap()
            .contains("loop_a → loop_b → loop_a"),
        "{cycle}"
    );

    // Missing input and the validate endpoint give the same answers.
    let (s, err) = c
        .post(
            "/v1/workflows/validate",
            &json!({"name": "x", "nodes": [{"id": "o", "kind": "output"}]}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(codes(&err).contains(&("missing_input".into(), None)));
    let (s, ok) = c.post("/v1/workflows/validate", &four_node()).await;
    assert_eq!((s, &ok["valid"]), (200, &json!(true)));

    // A document of the wrong shape, bad JSON, and the wrong content type.
    let (s, err) = c
        .post("/v1/workflows", &json!({"name": "x", "nodes": "many"}))
        .await;
    assert_eq!(s, 400);
    assert_eq!(err["error"]["code"], "invalid_definition");
    let r = c
        .http
        .post(c.url("/v1/workflows"))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_json"
    );
    let r = c
        .http
        .post(c.url("/v1/workflows"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "unsupported_media_type"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_crud_and_deploy() {
    let c = Cluster::start(1).await;
    let (s, wf) = c.post("/v1/workflows", &four_node()).await;
    assert_eq!(s, 201);
    let id = wf["id"].as_str().unwrap();
    assert!(wf["latest_version"].is_null());

    // Not deployed yet: a run is refused with a clear code.
    let (s, err) = c.run_sync(id, json!({"n": 1})).await;
    assert_eq!(
        (s, err["error"]["code"].as_str()),
        (409, Some("not_deployed"))
    );

    let (s, v1) = c
        .post(&format!("/v1/workflows/{id}/deploy"), &json!({}))
        .await;
    assert_eq!((s, v1["version"].as_u64()), (201, Some(1)));

    // Editing the draft does not change the deployed version runs use.
    let mut edited = four_node();
    edited["nodes"][1]["config"]["code"] = json!("return {v: ctx.input.n * 3}");
    let r = c
        .http
        .put(c.url(&format!("/v1/workflows/{id}")))
        .json(&edited)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (_, run) = c.run_sync(id, json!({"n": 5})).await;
    assert_eq!(
        (run["output"]["v"].as_u64(), run["version"].as_u64()),
        (Some(10), Some(1))
    );
    let (_, v2) = c
        .post(&format!("/v1/workflows/{id}/deploy"), &json!({}))
        .await;
    assert_eq!(v2["version"], 2);
    let (_, run) = c.run_sync(id, json!({"n": 5})).await;
    assert_eq!(
        (run["output"]["v"].as_u64(), run["version"].as_u64()),
        (Some(15), Some(2))
    );
    let (_, versions) = c.get(&format!("/v1/workflows/{id}/versions")).await;
    assert_eq!(versions["items"].as_array().unwrap().len(), 2);

    let (_, list) = c.get("/v1/workflows").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // Only an undeployed workflow can be deleted (see tests/platform.rs).
    let (s, _) = c
        .post(&format!("/v1/workflows/{id}/undeploy"), &json!({}))
        .await;
    assert_eq!(s, 200);
    let r = c
        .http
        .delete(c.url(&format!("/v1/workflows/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, err) = c.get(&format!("/v1/workflows/{id}")).await;
    assert_eq!((s, err["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, _) = c.run_sync(id, json!({"n": 1})).await;
    assert_eq!(s, 404);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_stable_codes() {
    let c = Cluster::start_with(0, |cfg| cfg.max_body_bytes = 4096).await;
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (c.http.get(c.url("/v1/nope")), 404, "not_found"),
        (c.http.delete(c.url("/v1/runs")), 405, "method_not_allowed"),
        (
            c.http.get(c.url("/v1/runs/not-a-uuid")),
            400,
            "invalid_request",
        ),
        (
            c.http
                .get(c.url("/v1/runs/0190f5f5-0000-7000-8000-000000000000")),
            404,
            "not_found",
        ),
        (
            c.http.get(c.url("/v1/runs?status=sideways")),
            400,
            "invalid_request",
        ),
        (
            c.http.get(c.url("/v1/runs?limit=0")),
            400,
            "invalid_request",
        ),
        (
            c.http.get(c.url("/v1/runs?bogus=1")),
            400,
            "invalid_request",
        ),
        (
            c.http
                .post(c.url("/v1/workflows/x/runs?mode=later"))
                .json(&json!({})),
            400,
            "invalid_request",
        ),
        (
            c.http
                .post(c.url("/v1/workflows"))
                .json(&json!({"name": "x".repeat(5000), "nodes": []})),
            413,
            "payload_too_large",
        ),
    ];
    for (req, status, code) in cases {
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert!(body["error"].get("details").is_some());
    }
    // Ready once NATS and the store answer (NATS connects in the background).
    let start = std::time::Instant::now();
    loop {
        let (s, ready) = c.get("/readyz").await;
        if s == 200 {
            assert_eq!(ready["status"], "ready");
            break;
        }
        assert_eq!((s, ready["status"].as_str()), (503, Some("not_ready")));
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "never ready: {ready}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    c.shutdown().await;
}
