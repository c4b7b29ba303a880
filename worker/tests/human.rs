//! `human` nodes, end to end (HTTP → coordinator → nats-server → worker):
//! a run pauses at one held by no worker, survives the workers' and the
//! coordinator's restarts, is resumed exactly once by `POST
//! /v1/runs/{id}/resume` and goes on; unanswered, its wait times out at the
//! node's or the workflow's deadline; it can be cancelled while it waits.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const WITHIN: Duration = Duration::from_secs(15);

/// input → human `approve` → output.
fn approval(workflow_timeout_ms: u64, node_timeout_ms: Option<u64>) -> Value {
    let mut approve = json!({"id": "approve", "kind": "human", "config": {
        "prompt": "Approve a refund of {{input.amount}} EUR?",
        "schema": {"type": "object", "required": ["approved"],
                   "properties": {"approved": {"type": "boolean"}}}}});
    if let Some(t) = node_timeout_ms {
        approve["timeout_ms"] = json!(t);
    }
    json!({
        "name": "approval",
        "timeout_ms": workflow_timeout_ms,
        "nodes": [
            {"id": "in", "kind": "input"},
            approve,
            {"id": "out", "kind": "output", "config": {"fields": {
                "approved": "steps.approve.output.value.approved",
                "by": "steps.approve.output.resumed_by",
                "amount": "input.amount"}}}
        ],
        "edges": [{"from": "in", "to": "approve"}, {"from": "approve", "to": "out"}]
    })
}

/// Resumes as the named user (created if new and given the viewer role on
/// the run's workflow: any role may answer), or as the admin.
async fn resume_as(c: &Cluster, run_id: &str, user: Option<&str>, body: &Value) -> (u16, Value) {
    let path = format!("/v1/runs/{run_id}/resume");
    let Some(name) = user else {
        return c.post(&path, body).await;
    };
    let (_, run) = c.get(&format!("/v1/runs/{run_id}")).await;
    let wf = run["workflow_id"]
        .as_str()
        .expect("the run's workflow")
        .to_string();
    let (s, v) = c.post("/v1/users", &json!({"name": name})).await;
    let (user_id, token) = if s == 201 {
        let id = v["user"]["id"].as_str().unwrap().to_string();
        (id, v["token"]["secret"].as_str().unwrap().to_string())
    } else {
        let (_, users) = c.get("/v1/users").await;
        let id = users["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == name)
            .expect("the user exists")["id"]
            .as_str()
            .unwrap()
            .to_string();
        let (_, t) = c
            .post(&format!("/v1/users/{id}/tokens"), &json!({"name": "again"}))
            .await;
        (id, t["secret"].as_str().unwrap().to_string())
    };
    let (s, v) = c
        .as_token(ADMIN_TOKEN)
        .put(
            &format!("/v1/workflows/{wf}/shares/{user_id}"),
            &json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(s, 200, "share: {v}");
    c.as_token(&token).post(&path, body).await
}

async fn wait_waiting(c: &Cluster, run_id: &str) -> Value {
    c.wait_run_until(run_id, WITHIN, |v| v["status"] == "waiting")
        .await
}

/// Until no worker holds a run, as the coordinator and the workers see it.
async fn wait_workers_idle(c: &Cluster) -> Value {
    let start = Instant::now();
    loop {
        let (_, v) = c.get("/v1/workers").await;
        let items = v["items"].as_array().cloned().unwrap_or_default();
        if !items.is_empty()
            && items
                .iter()
                .all(|w| w["assigned"] == 0 && w["reported_inflight"] == 0)
        {
            return v;
        }
        assert!(start.elapsed() < WITHIN, "workers still hold runs: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn node_logs<'a>(run: &'a Value, id: &str) -> Vec<&'a Value> {
    run["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["node_id"] == id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_run_frees_its_worker_survives_new_workers_and_resumes() {
    let mut c = Cluster::start(1).await;
    let wf = c.deploy(&approval(600_000, None)).await;
    let id = c.submit(&wf, json!({"amount": 12})).await;
    let run = wait_waiting(&c, &id).await;
    let waiting = run["waiting"].as_array().unwrap();
    assert_eq!(waiting.len(), 1, "{run}");
    assert_eq!(waiting[0]["node_id"], "approve");
    assert_eq!(waiting[0]["prompt"], "Approve a refund of 12 EUR?");
    assert_eq!(waiting[0]["level"], "workflow", "no node timeout: {run}");
    assert_eq!(waiting[0]["deadline_ms"], run["deadline_ms"]);
    // The worker let go of it: no actor, no slot.
    wait_workers_idle(&c).await;
    assert_eq!(run["attempts"][0]["outcome"], "waiting", "{run}");
    assert_eq!(node_logs(&run, "in")[0]["status"], "succeeded");

    // Every worker goes (a rolling restart); a new one comes.
    c.stop_workers().await;
    c.wait_workers(0).await;
    c.add_worker(|_| {}).await;
    c.wait_workers(1).await;
    let (_, still) = c.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(still["status"], "waiting", "{still}");

    let (s, rec) = resume_as(
        &c,
        &id,
        Some("alice"),
        &json!({"value": {"approved": true}}),
    )
    .await;
    assert_eq!(s, 200, "{rec}");
    assert!(
        ["queued", "running"].contains(&rec["status"].as_str().unwrap()),
        "{rec}"
    );
    let run = c.wait_run(&id, WITHIN).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["output"],
        json!({"approved": true, "by": "alice", "amount": 12})
    );
    let approve = node_logs(&run, "approve");
    assert_eq!(approve.len(), 1, "{run}");
    assert_eq!(approve[0]["status"], "succeeded");
    assert_eq!(approve[0]["resumed_by"], "alice");
    let at = approve[0]["resumed_at_ms"].as_u64().expect("resumed_at_ms");
    assert_eq!(approve[0]["ended_at_ms"], at);
    assert!(approve[0]["started_at_ms"].as_u64().unwrap() <= at);
    assert_eq!(run["resumes"][0]["resumed_by"], "alice", "{run}");
    assert_eq!(run["resumes"][0]["value"], json!({"approved": true}));
    assert!(run.get("waiting").is_none(), "{run}");
    // Two placements: up to the pause, and from it on the new worker.
    let attempts = run["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{run}");
    assert_ne!(attempts[0]["worker_id"], attempts[1]["worker_id"]);
    assert_eq!(attempts[1]["outcome"], "succeeded");
    assert_eq!(node_logs(&run, "in").len(), 1, "the input ran once: {run}");
    // The run was started by the admin and answered by alice, a viewer of
    // the workflow; the audit log says so. A stranger cannot answer.
    let (_, log) = c
        .get(&format!("/v1/audit?event=run.resumed&workflow_id={wf}"))
        .await;
    assert_eq!(log["items"][0]["user_name"], "alice", "{log}");
    let (_, stranger) = c.create_user("stranger").await;
    let (s, _) = stranger
        .post(&format!("/v1/runs/{id}/resume"), &json!({"value": 1}))
        .await;
    assert_eq!(s, 404, "not shared with the stranger: not revealed");

    // The admin may answer too; a sync request answers as soon as the run
    // pauses.
    let (s, run) = c.run_sync(&wf, json!({"amount": 3})).await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "waiting", "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let (s, _) = resume_as(
        &c,
        &id,
        None,
        &json!({"node_id": "approve", "value": {"approved": false}}),
    )
    .await;
    assert_eq!(s, 200);
    let run = c.wait_run(&id, WITHIN).await;
    assert_eq!(run["output"]["by"], "admin", "{run}");
    assert_eq!(run["output"]["approved"], false);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_resumes_resume_once() {
    let c = Cluster::start(2).await;
    let wf = c.deploy(&approval(600_000, None)).await;
    for round in 0..3 {
        let id = c.submit(&wf, json!({"amount": round})).await;
        wait_waiting(&c, &id).await;
        let (yes, no) = (
            json!({"value": {"approved": true}}),
            json!({"value": {"approved": false}}),
        );
        let (a, b) = tokio::join!(
            resume_as(&c, &id, Some("ann"), &yes),
            resume_as(&c, &id, Some("bob"), &no),
        );
        let mut statuses = [a.0, b.0];
        statuses.sort();
        assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
        let refused = if a.0 == 409 { &a.1 } else { &b.1 };
        assert_eq!(refused["error"]["code"], "not_waiting", "{refused}");
        let winner = if a.0 == 200 { "ann" } else { "bob" };
        let run = c.wait_run(&id, WITHIN).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["output"]["by"], winner);
        assert_eq!(run["resumes"].as_array().unwrap().len(), 1, "{run}");
        assert_eq!(node_logs(&run, "approve").len(), 1, "{run}");
        assert_eq!(node_logs(&run, "out").len(), 1, "{run}");
        assert_eq!(run["attempts"].as_array().unwrap().len(), 2, "{run}");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_wait_times_out_at_the_node_or_the_workflow_deadline() {
    let c = Cluster::start(1).await;
    // The node's own timeout, shorter than the workflow's.
    let wf = c.deploy(&approval(60_000, Some(700))).await;
    let id = c.submit(&wf, json!({"amount": 1})).await;
    let paused = wait_waiting(&c, &id).await;
    assert_eq!(paused["waiting"][0]["level"], "node", "{paused}");
    let run = c.wait_run(&id, WITHIN).await;
    assert_eq!(run["status"], "timed_out", "{run}");
    assert_eq!(run["error"]["level"], "node", "{run}");
    assert_eq!(run["error"]["node_id"], "approve");
    let late = run["ended_at_ms"].as_u64().unwrap() as i64
        - paused["waiting"][0]["deadline_ms"].as_u64().unwrap() as i64;
    assert!(
        (0..1_000).contains(&late),
        "ended {late} ms after the deadline"
    );
    let approve = node_logs(&run, "approve");
    assert_eq!(approve[0]["status"], "timed_out", "{run}");
    let (s, v) = resume_as(&c, &id, None, &json!({"value": {"approved": true}})).await;
    assert_eq!((s, v["error"]["code"].clone()), (409, json!("not_waiting")));

    // The workflow's deadline comes first: it bounds the wait, and is named.
    let wf = c.deploy(&approval(900, Some(600_000))).await;
    let id = c.submit(&wf, json!({"amount": 1})).await;
    let paused = wait_waiting(&c, &id).await;
    assert_eq!(paused["waiting"][0]["level"], "workflow", "{paused}");
    assert_eq!(paused["waiting"][0]["deadline_ms"], paused["deadline_ms"]);
    let run = c.wait_run(&id, WITHIN).await;
    assert_eq!(run["status"], "timed_out", "{run}");
    assert_eq!(run["error"]["level"], "workflow", "{run}");
    assert_eq!(run["error"]["node_id"], "approve");

    // While another branch still runs, the worker holds the run and enforces
    // the human node's deadline itself.
    let def = json!({
        "name": "busy", "timeout_ms": 20_000,
        "nodes": [
            {"id": "in", "kind": "input"},
            {"id": "approve", "kind": "human", "timeout_ms": 300, "config": {"prompt": "ok?"}},
            {"id": "slow", "kind": "script", "config": {"code":
                "const t = Date.now(); while (Date.now() - t < 3000) {} return 1"}},
            {"id": "out", "kind": "output"}
        ],
        "edges": [{"from": "in", "to": "approve"}, {"from": "in", "to": "slow"},
                  {"from": "approve", "to": "out"}, {"from": "slow", "to": "out"}]
    });
    let wf = c.deploy(&def).await;
    let (_, run) = c.run_sync(&wf, json!({})).await;
    assert_eq!(run["status"], "timed_out", "{run}");
    assert_eq!(run["error"]["level"], "node", "{run}");
    assert_eq!(run["error"]["node_id"], "approve", "{run}");
    assert_eq!(
        run["attempts"].as_array().unwrap().len(),
        1,
        "never paused: {run}"
    );
    assert_eq!(node_logs(&run, "slow")[0]["status"], "timed_out", "{run}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_can_be_cancelled_and_then_not_resumed() {
    let c = Cluster::start(1).await;
    let wf = c.deploy(&approval(600_000, None)).await;
    let id = c.submit(&wf, json!({"amount": 5})).await;
    wait_waiting(&c, &id).await;
    let (s, v) = c.post(&format!("/v1/runs/{id}/cancel"), &json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "cancelled");
    let run = c.wait_run(&id, WITHIN).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(
        node_logs(&run, "approve")[0]["status"],
        "cancelled",
        "{run}"
    );
    assert!(run.get("waiting").is_none(), "{run}");
    let (s, v) = resume_as(&c, &id, None, &json!({"value": {"approved": true}})).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "not_waiting");
    assert_eq!(v["error"]["details"]["status"], "cancelled");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_resume_requests_are_refused_with_stable_codes() {
    let c = Cluster::start(1).await;
    let wf = c.deploy(&approval(600_000, None)).await;
    let id = c.submit(&wf, json!({"amount": 7})).await;
    wait_waiting(&c, &id).await;
    let resume_url = c.url(&format!("/v1/runs/{id}/resume"));

    // Unknown run; not a run id.
    let (s, v) = c
        .post(
            "/v1/runs/01900000-0000-7000-8000-000000000000/resume",
            &json!({"value": 1}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (404, json!("not_found")),
        "{v}"
    );
    let (s, _) = c.post("/v1/runs/nope/resume", &json!({"value": 1})).await;
    assert_eq!(s, 400);
    // A node that does not wait: named, with the one that does.
    let (s, v) = c
        .post(
            &format!("/v1/runs/{id}/resume"),
            &json!({"node_id": "in", "value": 1}),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "not_waiting");
    assert_eq!(v["error"]["details"]["waiting"], json!(["approve"]));
    assert!(
        v["error"]["message"].as_str().unwrap().contains("approve"),
        "{v}"
    );
    // No body, a body that is not JSON, no `value`, an unknown field.
    let r = c.http.post(&resume_url).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_request", "{v}");
    let r = c
        .http
        .post(&resume_url)
        .header("content-type", "application/json")
        .body("{approved: yes")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_json", "{v}");
    for body in [
        json!({"node_id": "approve"}),
        json!({"value": 1, "by": "me"}),
        json!([1]),
    ] {
        let (s, v) = c.post(&format!("/v1/runs/{id}/resume"), &body).await;
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (400, json!("invalid_request")),
            "{body}: {v}"
        );
    }
    // A value that does not match the node's schema, field by field.
    let (s, v) = c
        .post(
            &format!("/v1/runs/{id}/resume"),
            &json!({"value": {"approved": "yes"}}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (400, json!("invalid_input")),
        "{v}"
    );
    assert_eq!(v["error"]["details"]["fields"][0]["field"], "/approved");
    // None of that touched the run.
    let (_, run) = c.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(run["status"], "waiting", "{run}");
    assert!(run.get("resumes").is_none(), "{run}");

    // A run that never waits.
    let plain = c.deploy(&four_node()).await;
    let (_, done) = c.run_sync(&plain, json!({"n": 1})).await;
    let done_id = done["id"].as_str().unwrap();
    let (s, v) = c
        .post(&format!("/v1/runs/{done_id}/resume"), &json!({"value": 1}))
        .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("not_waiting")),
        "{v}"
    );
    assert_eq!(v["error"]["details"]["status"], "succeeded");

    // Two human nodes in parallel: both wait in one pause; a resume must
    // name one; the run pauses again for the other, then finishes.
    let def = json!({
        "name": "two-approvals", "timeout_ms": 600_000,
        "nodes": [
            {"id": "in", "kind": "input"},
            {"id": "legal", "kind": "human", "config": {"prompt": "legal ok?"}},
            {"id": "finance", "kind": "human", "config": {"prompt": "finance ok?"}},
            {"id": "out", "kind": "output", "config": {"fields": {
                "legal": "steps.legal.output.value", "finance": "steps.finance.output.value"}}}
        ],
        "edges": [{"from": "in", "to": "legal"}, {"from": "in", "to": "finance"},
                  {"from": "legal", "to": "out"}, {"from": "finance", "to": "out"}]
    });
    let wf2 = c.deploy(&def).await;
    let id2 = c.submit(&wf2, json!({})).await;
    let run = wait_waiting(&c, &id2).await;
    assert_eq!(run["waiting"].as_array().unwrap().len(), 2, "{run}");
    let (s, v) = c
        .post(&format!("/v1/runs/{id2}/resume"), &json!({"value": true}))
        .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (400, json!("invalid_request")),
        "{v}"
    );
    let mut named = v["error"]["details"]["waiting"].as_array().unwrap().clone();
    named.sort_by_key(|n| n.as_str().unwrap().to_string());
    assert_eq!(named, vec![json!("finance"), json!("legal")]);
    let (s, v) = resume_as(
        &c,
        &id2,
        Some("lea"),
        &json!({"node_id": "legal", "value": "yes"}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["waiting"][0]["node_id"], "finance", "{v}");
    // Paused again, at the other node only.
    let run = c
        .wait_run_until(&id2, WITHIN, |v| {
            v["status"] == "waiting" && v["attempts"].as_array().is_some_and(|a| a.len() == 2)
        })
        .await;
    assert_eq!(run["waiting"].as_array().unwrap().len(), 1, "{run}");
    assert_eq!(run["waiting"][0]["node_id"], "finance");
    let (s, _) = resume_as(&c, &id2, Some("fin"), &json!({"value": "ok"})).await;
    assert_eq!(s, 200);
    let run = c.wait_run(&id2, WITHIN).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], json!({"legal": "yes", "finance": "ok"}));
    assert_eq!(node_logs(&run, "legal")[0]["resumed_by"], "lea");
    assert_eq!(node_logs(&run, "finance")[0]["resumed_by"], "fin");
    assert_eq!(run["resumes"].as_array().unwrap().len(), 2, "{run}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_restart_keeps_waiting_runs_and_their_deadlines() {
    let mut c = Cluster::start(1).await;
    let wf = c.deploy(&approval(600_000, None)).await;
    let id = c.submit(&wf, json!({"amount": 9})).await;
    wait_waiting(&c, &id).await;
    // This one's wait ends after the restart: the new coordinator enforces it.
    let short = c.deploy(&approval(600_000, Some(2_500))).await;
    let short_id = c.submit(&short, json!({"amount": 1})).await;
    wait_waiting(&c, &short_id).await;

    c.stop_coordinator().await;
    c.start_coordinator().await;
    c.wait_workers(1).await;
    let (_, run) = c.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(run["status"], "waiting", "{run}");
    assert_eq!(run["waiting"][0]["node_id"], "approve");

    let (s, v) = resume_as(
        &c,
        &id,
        Some("carol"),
        &json!({"value": {"approved": true}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let run = c.wait_run(&id, WITHIN).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"]["by"], "carol");
    assert_eq!(node_logs(&run, "approve")[0]["resumed_by"], "carol");

    let run = c.wait_run(&short_id, WITHIN).await;
    assert_eq!(run["status"], "timed_out", "{run}");
    assert_eq!(run["error"]["level"], "node", "{run}");
    assert_eq!(run["error"]["node_id"], "approve");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_approval_example_runs() {
    let c = Cluster::start(1).await;
    let def: Value =
        serde_json::from_str(include_str!("../../docs/examples/approval.json")).unwrap();
    let wf = c.deploy(&def).await;
    // Small: no person involved; the human node is skipped.
    let (_, run) = c
        .run_sync(&wf, json!({"order_id": "A-1", "amount": 20}))
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["output"],
        json!({"order_id": "A-1", "refund": true, "approved_by": "policy"})
    );
    assert_eq!(node_logs(&run, "approve")[0]["status"], "skipped");
    // Large: it waits for someone, with the prompt rendered.
    let (_, run) = c
        .run_sync(
            &wf,
            json!({"order_id": "B-2", "amount": 250.5, "reason": "broken"}),
        )
        .await;
    assert_eq!(run["status"], "waiting", "{run}");
    assert_eq!(
        run["waiting"][0]["prompt"],
        "Refund 250.5 EUR on order B-2? Reason given: broken"
    );
    let id = run["id"].as_str().unwrap();
    let (s, v) = resume_as(
        &c,
        id,
        Some("dora"),
        &json!({"value": {"approved": false, "note": "no"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let run = c.wait_run(id, WITHIN).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["output"],
        json!({"order_id": "B-2", "refund": false, "approved_by": "dora"})
    );
    c.shutdown().await;
}
