//! Secure environment variables: the plaintext reaches the node that uses
//! it, and appears in no API response, no log line (at trace level), and not
//! in the SQLite file.

mod common;

use common::testapi::TestApi;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secure_variable_is_used_but_never_shown_logged_or_stored_in_clear() {
    // Everything at trace, through the filter the binaries use.
    let logs = LogCapture::install();
    let secret = format!("sk-weft-{}", uuid::Uuid::now_v7().simple());
    let c = Cluster::start(1).await;
    let srv = TestApi::start().await;
    srv.expect_token(&secret);
    let def = json!({
        "name": "uses-a-secret", "timeout_ms": 10000,
        "nodes": [
            {"id": "in", "kind": "input"},
            {"id": "call", "kind": "api", "config": {"url": format!("{}/auth", srv.url),
                "headers": {"authorization": "Bearer {{env.API_TOKEN}}"}}},
            {"id": "out", "kind": "output", "config": {"fields": {"authorized": "steps.call.output.body.authorized"}}}
        ],
        "edges": [{"from": "in", "to": "call"}, {"from": "call", "to": "out"}]
    });
    let wf = c.deploy(&def).await;
    let mut responses = Vec::new();
    let created = c.set_env(&wf, "API_TOKEN", &secret, true).await;
    assert_eq!(created["secure"], true);
    assert!(created["value"].is_null());
    responses.push(created.to_string());
    responses.push(
        c.get(&format!("/v1/workflows/{wf}/env"))
            .await
            .1
            .to_string(),
    );
    responses.push(
        c.get(&format!("/v1/workflows/{wf}/env/API_TOKEN"))
            .await
            .1
            .to_string(),
    );
    let (_, run) = c.run_sync(&wf, json!({})).await;
    assert_eq!(
        run["output"]["authorized"], true,
        "the node got the decrypted value: {run}"
    );
    responses.push(run.to_string());
    responses.push(
        c.get(&format!("/v1/runs/{}", run["id"].as_str().unwrap()))
            .await
            .1
            .to_string(),
    );
    responses.push(c.get(&format!("/v1/workflows/{wf}")).await.1.to_string());
    responses.push(c.get("/v1/runs").await.1.to_string());

    // Turning `secure` off without a new value is refused (it would reveal it).
    let r = c
        .http
        .put(c.url(&format!("/v1/workflows/{wf}/env/API_TOKEN")))
        .json(&json!({"secure": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    responses.push(r.text().await.unwrap());
    let mut c = c;
    c.stop_coordinator().await; // flushes the store
    let stored = c.read_db_files();
    c.shutdown().await;

    for body in &responses {
        assert!(
            !body.contains(&secret),
            "an API response shows the secret: {body}"
        );
    }
    let logged = logs.text();
    assert!(logged.len() > 1000, "trace logs were captured");
    assert_nowhere(&secret, &logged, &stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_secure_variables_are_refused() {
    let c = Cluster::start_with(0, |cfg| cfg.encryption_key = String::new()).await;
    let wf = c.deploy(&four_node()).await;
    let (s, v) = c
        .post(
            &format!("/v1/workflows/{wf}/env"),
            &json!({"name": "K", "value": "v", "secure": true}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("encryption_unavailable")),
        "{v}"
    );
    let (s, _) = c
        .post(
            &format!("/v1/workflows/{wf}/env"),
            &json!({"name": "PLAIN", "value": "v"}),
        )
        .await;
    assert_eq!(s, 201);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_key_re_encrypts_values_at_start() {
    let secret = format!("sk-rotate-{}", uuid::Uuid::now_v7().simple());
    let mut c = Cluster::start(1).await;
    let srv = TestApi::start().await;
    srv.expect_token(&secret);
    let def = json!({
        "name": "rotation", "timeout_ms": 10000,
        "nodes": [
            {"id": "in", "kind": "input"},
            {"id": "call", "kind": "api", "config": {"url": format!("{}/auth", srv.url),
                "headers": {"authorization": "Bearer {{env.TOKEN}}"}}},
            {"id": "out", "kind": "output", "config": {"fields": {"ok": "steps.call.output.body.authorized"}}}
        ],
        "edges": [{"from": "in", "to": "call"}, {"from": "call", "to": "out"}]
    });
    let wf = c.deploy(&def).await;
    c.set_env(&wf, "TOKEN", &secret, true).await;

    // New key, old one listed as previous: values are re-encrypted at start.
    let new_key = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
    c.stop_coordinator().await;
    c.coordinator_config.encryption_key = new_key.into();
    c.coordinator_config.previous_encryption_keys = vec![TEST_KEY.into()];
    c.start_coordinator().await;
    c.wait_workers(1).await;
    let (_, run) = c.run_sync(&wf, json!({})).await;
    assert_eq!(run["output"]["ok"], true, "{run}");

    // The old key can now go: everything opens with the new one alone.
    c.stop_coordinator().await;
    c.coordinator_config.previous_encryption_keys = vec![];
    c.start_coordinator().await;
    c.wait_workers(1).await;
    let (_, run) = c.run_sync(&wf, json!({})).await;
    assert_eq!(run["output"]["ok"], true, "{run}");

    // A wrong key is refused at start rather than failing runs later.
    c.stop_coordinator().await;
    c.coordinator_config.encryption_key = TEST_KEY.into();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = weft_coordinator::run(c.coordinator_config.clone(), listener, async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not configured"), "{err}");
    c.shutdown().await;
}
