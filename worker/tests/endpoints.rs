//! Endpoint configuration and async push, through HTTP → coordinator →
//! nats-server → worker → back: validation, taking effect on deploy, the
//! modes a deployed workflow answers, the async timeout capping a run's
//! deadline, and signed push deliveries — retried, failed after their
//! window, kept across a coordinator restart — whose token and secret
//! never show in any response or export.

mod common;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weft_coordinator::api::export::read_zip;

const TOKEN: &str = "tok-never-shown-5c1d9e";

/// A request the receiver got, and what it answered.
#[derive(Clone, Debug)]
struct Got {
    headers: HeaderMap,
    body: Vec<u8>,
    answered: u16,
}

impl Got {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Default)]
struct RecvState {
    /// Answers for the next requests, in order.
    script: VecDeque<u16>,
    /// The answer once the script is used up.
    then: u16,
    got: Vec<Got>,
}

/// A push receiver on 127.0.0.1: answers by a script, records everything.
#[derive(Clone)]
struct Receiver {
    url: String,
    state: Arc<Mutex<RecvState>>,
}

impl Receiver {
    async fn start(script: &[u16], then: u16) -> Receiver {
        let state = Arc::new(Mutex::new(RecvState {
            script: script.iter().copied().collect(),
            then,
            got: Vec::new(),
        }));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, state }
    }

    fn answer_from_now(&self, code: u16) {
        self.state.lock().unwrap().then = code;
    }

    fn got(&self) -> Vec<Got> {
        self.state.lock().unwrap().got.clone()
    }
}

async fn receive(
    State(state): State<Arc<Mutex<RecvState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut s = state.lock().unwrap();
    let code = s.script.pop_front().unwrap_or(s.then);
    s.got.push(Got {
        headers,
        body: body.to_vec(),
        answered: code,
    });
    StatusCode::from_u16(code).unwrap()
}

/// HMAC-SHA256 from its definition (RFC 2104), independent of the
/// coordinator's implementation.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Checks `Weft-Signature: t=<unix s>,v1=<hex>` as a receiver would:
/// HMAC-SHA256 of `"<t>.<raw body>"` with the secret, and a fresh `t`.
fn signature_verifies(secret: &str, got: &Got) -> bool {
    let header = got.header("weft-signature");
    let parts: BTreeMap<&str, &str> = header
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let (Some(t), Some(v1)) = (parts.get("t"), parts.get("v1")) else {
        return false;
    };
    let now = weft_shared::time::now_ms() / 1000;
    let t_num: u64 = t.parse().unwrap();
    assert!(now.abs_diff(t_num) < 300, "stale timestamp {t}");
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&got.body);
    hex::encode(hmac_sha256(secret.as_bytes(), &signed)) == *v1
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Points the draft's push at `rx` with the test token; the signing secret,
/// shown this once.
async fn push_to(c: &Cluster, wf: &str, rx: &Receiver) -> String {
    let (s, ep) = put_endpoint(
        c,
        wf,
        json!({"push": {"url": rx.url, "access_token": TOKEN}}),
    )
    .await;
    assert_eq!(s, 200, "{ep}");
    ep["signing_secret"]
        .as_str()
        .expect("the secret, once")
        .to_string()
}

async fn put_endpoint(c: &Cluster, wf: &str, body: Value) -> (u16, Value) {
    send(
        c.http
            .put(c.url(&format!("/v1/workflows/{wf}/endpoint")))
            .json(&body),
    )
    .await
}

async fn endpoint(c: &Cluster, wf: &str) -> Value {
    let (s, v) = c.get(&format!("/v1/workflows/{wf}/endpoint")).await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn create(c: &Cluster, def: &Value) -> String {
    let (s, wf) = c.post("/v1/workflows", def).await;
    assert_eq!(s, 201, "{wf}");
    wf["id"].as_str().unwrap().to_string()
}

async fn deploy(c: &Cluster, wf: &str) -> Value {
    let (s, v) = c
        .post(&format!("/v1/workflows/{wf}/deploy"), &json!({}))
        .await;
    assert_eq!(s, 201, "deploy: {v}");
    v
}

async fn run_async(c: &Cluster, wf: &str, input: Value) -> (u16, Value) {
    c.post(
        &format!("/v1/workflows/{wf}/runs?mode=async"),
        &json!({"input": input}),
    )
    .await
}

async fn wait_delivered(c: &Cluster, run_id: &str) -> Value {
    c.wait_run_until(run_id, Duration::from_secs(20), |v| {
        v["delivery"]["status"] == "delivered"
    })
    .await
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// A script that busy-waits `ctx.input.ms` and returns it.
fn busy(workflow_timeout_ms: u64) -> Value {
    one_script(
        "const end = Date.now() + ctx.input.ms; while (Date.now() < end) {} return {waited: ctx.input.ms}",
        workflow_timeout_ms,
        None,
    )
}

fn quick_retries(cfg: &mut weft_coordinator::CoordinatorConfig) {
    cfg.push_backoff_min_ms = 50;
    cfg.push_backoff_max_ms = 200;
    cfg.push_attempt_timeout_ms = 2_000;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_is_retried_until_accepted_signed_with_the_secret_and_bearing_the_token() {
    let c = Cluster::start_with(1, |cfg| {
        quick_retries(cfg);
        cfg.push_retry_for_ms = 30_000;
    })
    .await;
    let rx = Receiver::start(&[500, 500], 200).await;
    let id = create(
        &c,
        &one_script("return {doubled: ctx.input.n * 2}", 10_000, None),
    )
    .await;
    let (s, ep) = put_endpoint(
        &c,
        &id,
        json!({"push": {"url": rx.url, "access_token": TOKEN}}),
    )
    .await;
    assert_eq!(s, 200, "{ep}");
    let secret = ep["signing_secret"]
        .as_str()
        .expect("the secret, once")
        .to_string();
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert_eq!(
        ep["push"],
        json!({"url": rx.url, "access_token_set": true}),
        "{ep}"
    );
    assert_eq!(ep["signing_secret_set"], true);
    deploy(&c, &id).await;

    let run_id = c.submit(&id, json!({"n": 21})).await;
    let run = c
        .wait_run_until(&run_id, Duration::from_secs(20), |v| {
            v["delivery"]["status"] == "delivered"
        })
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let d = &run["delivery"];
    assert_eq!(
        (&d["attempts"], &d["last_status"], &d["last_error"]),
        (&json!(3), &json!(200), &Value::Null),
        "{run}"
    );
    assert!(d["delivered_at_ms"].as_u64().unwrap() >= run["ended_at_ms"].as_u64().unwrap());

    let got = rx.got();
    assert_eq!(
        got.iter().map(|g| g.answered).collect::<Vec<_>>(),
        [500, 500, 200],
        "exactly one accepted delivery"
    );
    let delivery_id = d["id"].as_str().unwrap();
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.header("authorization"), format!("Bearer {TOKEN}"));
        assert!(
            signature_verifies(&secret, g),
            "signature {}",
            g.header("weft-signature")
        );
        assert!(!signature_verifies("whsec_wrong", g));
        assert_eq!(
            g.header("weft-delivery-id"),
            delivery_id,
            "stable across retries"
        );
        assert_eq!(g.header("weft-run-id"), run_id);
        assert_eq!(g.header("weft-attempt"), (i + 1).to_string());
        assert_eq!(g.header("content-type"), "application/json");
    }
    let body = got[2].json();
    assert_eq!(body["id"], run_id.as_str());
    assert_eq!(body["status"], "succeeded");
    assert_eq!(body["output"], json!({"result": {"doubled": 42}}));
    assert_eq!(body["output"], run["output"]);
    assert!(body.get("delivery").is_none(), "{body}");

    // Sync runs are never pushed; nor do they show a delivery.
    let (s, sync_run) = c.run_sync(&id, json!({"n": 1})).await;
    assert_eq!(s, 200, "{sync_run}");
    let (_, detail) = c
        .get(&format!("/v1/runs/{}", sync_run["id"].as_str().unwrap()))
        .await;
    assert!(detail.get("delivery").is_none(), "{detail}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.got().len(), 3);

    let metrics = c.metrics_text().await;
    assert!(
        metrics.contains("weft_push_deliveries_total{outcome=\"delivered\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("weft_push_attempts_total{result=\"http_error\"} 2"));
    assert!(!metrics.contains(TOKEN) && !metrics.contains(&secret));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_keeps_failing_is_marked_failed_after_its_window_and_the_run_is_untouched() {
    let c = Cluster::start_with(1, |cfg| {
        quick_retries(cfg);
        cfg.push_retry_for_ms = 1_500;
    })
    .await;
    let rx = Receiver::start(&[], 503).await;
    let id = create(&c, &one_script("return 7", 10_000, None)).await;
    push_to(&c, &id, &rx).await;
    deploy(&c, &id).await;
    let run_id = c.submit(&id, json!({})).await;
    let pending = c
        .wait_run_until(&run_id, Duration::from_secs(10), |v| {
            v["delivery"]["attempts"].as_u64().unwrap_or(0) >= 1
        })
        .await;
    assert_eq!(pending["delivery"]["status"], "pending", "{pending}");
    let run = c
        .wait_run_until(&run_id, Duration::from_secs(15), |v| {
            v["delivery"]["status"] == "failed"
        })
        .await;
    assert_eq!(run["status"], "succeeded", "the run is unaffected: {run}");
    assert_eq!(run["output"], json!({"result": 7}));
    let d = &run["delivery"];
    assert_eq!(d["last_status"], 503, "{run}");
    assert!(d["last_error"].as_str().unwrap().contains("503"), "{run}");
    assert_eq!(d["delivered_at_ms"], Value::Null);
    let attempts = d["attempts"].as_u64().unwrap();
    assert!(attempts >= 3, "retried: {run}");
    assert_eq!(rx.got().len() as u64, attempts);
    // Retried for the window, and no longer.
    let first = d["first_attempt_at_ms"].as_u64().unwrap();
    let last = d["last_attempt_at_ms"].as_u64().unwrap();
    assert!(last - first >= 1_500, "{run}");
    assert!(last - first < 1_500 + 1_500, "{run}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.got().len() as u64, attempts, "no attempt after failing");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_settings_are_validated_and_take_effect_on_deploy() {
    let c = Cluster::start(1).await;
    // Workflow timeout 10 min: the async timeout (default 3 min) caps it.
    let id = create(&c, &one_script("return ctx.input", 600_000, None)).await;
    let ep = endpoint(&c, &id).await;
    let run_url = format!("/v1/workflows/{id}/runs");
    assert_eq!(
        ep,
        json!({
            "workflow_id": id, "run_url": run_url, "mode": "both",
            "sync_timeout_ms": 180000, "async_timeout_ms": 180000,
            "push": null, "signing_secret_set": false, "deployed": null
        })
    );

    // Refusals name the field and the allowed range.
    for (body, field, range) in [
        (
            json!({"sync_timeout_ms": 59_000}),
            "sync_timeout_ms",
            "60000 to 300000",
        ),
        (
            json!({"sync_timeout_ms": 301_000}),
            "sync_timeout_ms",
            "60000 to 300000",
        ),
        (
            json!({"async_timeout_ms": 59_999}),
            "async_timeout_ms",
            "60000 to 600000",
        ),
        (
            json!({"async_timeout_ms": 600_001}),
            "async_timeout_ms",
            "60000 to 600000",
        ),
        (json!({"mode": "poll"}), "mode", "both, sync, async"),
        (
            json!({"push": {"url": "ftp://example.com/x", "access_token": "t"}}),
            "push.url",
            "http or https",
        ),
        (
            json!({"push": {"url": "http://127.0.0.1:9/x"}}),
            "push.access_token",
            "required",
        ),
        (
            json!({"push": {"url": "http://127.0.0.1:9/x", "access_token": "has space"}}),
            "push.access_token",
            "visible ASCII",
        ),
    ] {
        let (s, err) = put_endpoint(&c, &id, body.clone()).await;
        assert_eq!((s, code(&err)), (400, "invalid_request"), "{body}: {err}");
        assert_eq!(err["error"]["details"]["field"], field, "{err}");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains(field) && msg.contains(range), "{msg}");
    }
    let (s, err) = put_endpoint(&c, &id, json!({"sync_timeout": 60_000})).await;
    assert_eq!((s, code(&err)), (400, "invalid_request"), "{err}");
    let (s, err) = put_endpoint(&c, "nope", json!({})).await;
    assert_eq!((s, code(&err)), (404, "not_found"), "{err}");
    assert_eq!(endpoint(&c, &id).await, ep, "refusals change nothing");

    // The bounds are accepted; async `null` is "no timeout".
    let (s, v) = put_endpoint(
        &c,
        &id,
        json!({"sync_timeout_ms": 60_000, "async_timeout_ms": null}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (&v["sync_timeout_ms"], &v["async_timeout_ms"]),
        (&json!(60000), &Value::Null)
    );
    let (s, v) = put_endpoint(
        &c,
        &id,
        json!({"sync_timeout_ms": 300_000, "async_timeout_ms": 600_000}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // Defaults again (every field left out).
    let (s, _) = put_endpoint(&c, &id, json!({})).await;
    assert_eq!(s, 200);

    // v1: both modes, the default async timeout caps the deadline.
    deploy(&c, &id).await;
    let (s, run) = c.run_sync(&id, json!({"a": 1})).await;
    assert_eq!((s, &run["status"]), (200, &json!("succeeded")), "{run}");
    let a = c.submit(&id, json!({})).await;
    let a = c.wait_run(&a, Duration::from_secs(10)).await;
    let span = a["deadline_ms"].as_u64().unwrap() - a["created_at_ms"].as_u64().unwrap();
    assert!(
        span.abs_diff(180_000) < 1_000,
        "async deadline capped at 180 s: {span}"
    );
    assert!(
        (run["deadline_ms"].as_u64().unwrap() - run["created_at_ms"].as_u64().unwrap())
            .abs_diff(600_000)
            < 1_000,
        "a sync run keeps the workflow timeout: {run}"
    );

    // Async only, and no async timeout: not until the redeploy.
    let (s, v) = put_endpoint(&c, &id, json!({"mode": "async", "async_timeout_ms": null})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (&v["mode"], &v["deployed"]["mode"]),
        (&json!("async"), &json!("both"))
    );
    assert_eq!(v["deployed"]["version"], 1);
    let (s, run) = c.run_sync(&id, json!({})).await;
    assert_eq!(s, 200, "old mode until redeploy: {run}");
    deploy(&c, &id).await;
    let ep = endpoint(&c, &id).await;
    assert_eq!(
        ep["run_url"],
        run_url.as_str(),
        "redeploy keeps the endpoint"
    );
    assert_eq!(
        (&ep["deployed"]["version"], &ep["deployed"]["mode"]),
        (&json!(2), &json!("async"))
    );
    let (s, err) = c.run_sync(&id, json!({})).await;
    assert_eq!((s, code(&err)), (409, "mode_disabled"), "{err}");
    assert_eq!(err["error"]["details"]["enabled"], json!(["async"]));
    assert_eq!(err["error"]["details"]["mode"], "sync");
    let b = c.submit(&id, json!({})).await;
    let b = c.wait_run(&b, Duration::from_secs(10)).await;
    let span = b["deadline_ms"].as_u64().unwrap() - b["created_at_ms"].as_u64().unwrap();
    assert!(
        span.abs_diff(600_000) < 1_000,
        "no async timeout: the workflow's applies: {span}"
    );

    // Sync only.
    let (s, _) = put_endpoint(&c, &id, json!({"mode": "sync"})).await;
    assert_eq!(s, 200);
    let (s, v) = run_async(&c, &id, json!({})).await;
    assert_eq!(s, 202, "old mode until redeploy: {v}");
    deploy(&c, &id).await;
    let (s, err) = run_async(&c, &id, json!({})).await;
    assert_eq!((s, code(&err)), (409, "mode_disabled"), "{err}");
    assert_eq!(err["error"]["details"]["enabled"], json!(["sync"]));
    let (s, run) = c.run_sync(&id, json!({})).await;
    assert_eq!((s, &run["status"]), (200, &json!("succeeded")), "{run}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_timeout_caps_the_run_deadline_and_the_sync_timeout_the_wait() {
    // Timeouts of a fraction of a second: the floor is lowered for tests.
    let c = Cluster::start_with(1, |cfg| cfg.endpoint_min_timeout_ms = 100).await;
    let id = create(&c, &busy(10_000)).await;
    deploy(&c, &id).await;
    let (s, v) = put_endpoint(
        &c,
        &id,
        json!({"sync_timeout_ms": 400, "async_timeout_ms": 400}),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // Before the redeploy the old (default) timeouts apply.
    let (s, run) = c.run_sync(&id, json!({"ms": 1_200})).await;
    assert_eq!((s, &run["status"]), (200, &json!("succeeded")), "{run}");
    let a = c.submit(&id, json!({"ms": 1_200})).await;
    let a = c.wait_run(&a, Duration::from_secs(10)).await;
    assert_eq!(a["status"], "succeeded", "{a}");

    deploy(&c, &id).await;
    let (s, err) = c.run_sync(&id, json!({"ms": 1_200})).await;
    assert_eq!((s, code(&err)), (504, "sync_timeout"), "{err}");
    assert_eq!(err["error"]["details"]["sync_timeout_ms"], 400);
    let a = c.submit(&id, json!({"ms": 1_200})).await;
    let a = c.wait_run(&a, Duration::from_secs(10)).await;
    assert_eq!(a["status"], "timed_out", "{a}");
    assert_eq!(a["error"]["level"], "workflow", "{a}");
    let span = a["deadline_ms"].as_u64().unwrap() - a["created_at_ms"].as_u64().unwrap();
    assert!(
        span.abs_diff(400) < 200,
        "the deadline is 400 ms away: {span}"
    );

    // "No timeout": only the workflow's own applies.
    let (s, _) = put_endpoint(
        &c,
        &id,
        json!({"sync_timeout_ms": 400, "async_timeout_ms": null}),
    )
    .await;
    assert_eq!(s, 200);
    deploy(&c, &id).await;
    let a = c.submit(&id, json!({"ms": 1_200})).await;
    let a = c.wait_run(&a, Duration::from_secs(10)).await;
    assert_eq!(a["status"], "succeeded", "{a}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_and_secret_never_show_and_exports_carry_mode_and_timeouts() {
    let c = Cluster::start_with(1, quick_retries).await;
    let rx = Receiver::start(&[], 200).await;
    let id = create(&c, &one_script("return 1", 10_000, None)).await;
    let (s, put) = put_endpoint(
        &c,
        &id,
        json!({"mode": "async", "sync_timeout_ms": 120_000, "async_timeout_ms": null,
               "push": {"url": rx.url, "access_token": TOKEN}}),
    )
    .await;
    assert_eq!(s, 200, "{put}");
    let secret = put["signing_secret"].as_str().unwrap().to_string();
    let mut seen = vec![put.to_string()];
    let never = |text: &str, what: &str| {
        assert!(!text.contains(TOKEN), "{what} shows the token: {text}");
    };
    never(&put.to_string(), "PUT endpoint");

    // The secret is shown once: not again, not on a second PUT.
    let (s, again) = put_endpoint(
        &c,
        &id,
        json!({"mode": "async", "sync_timeout_ms": 120_000, "async_timeout_ms": null,
               "push": {"url": rx.url}}),
    )
    .await;
    assert_eq!(s, 200, "{again}");
    assert!(again.get("signing_secret").is_none(), "{again}");
    assert_eq!(
        again["push"]["access_token_set"], true,
        "a token left out is kept"
    );
    seen.push(again.to_string());
    let deployed = deploy(&c, &id).await;
    seen.push(deployed.to_string());
    for path in [
        format!("/v1/workflows/{id}/endpoint"),
        format!("/v1/workflows/{id}"),
        format!("/v1/workflows/{id}/versions"),
        "/v1/workflows".to_string(),
    ] {
        let (s, v) = c.get(&path).await;
        assert_eq!(s, 200, "{path}: {v}");
        seen.push(v.to_string());
    }
    let run_id = c.submit(&id, json!({})).await;
    let run = c
        .wait_run_until(&run_id, Duration::from_secs(20), |v| {
            v["delivery"]["status"] == "delivered"
        })
        .await;
    seen.push(run.to_string());
    let (_, list) = c.get(&format!("/v1/runs?workflow_id={id}")).await;
    seen.push(list.to_string());
    for (i, text) in seen.iter().enumerate() {
        never(text, &format!("response {i}"));
        if i > 0 {
            assert!(
                !text.contains(&secret),
                "response {i} shows the secret: {text}"
            );
        }
    }
    let got = rx.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].header("authorization"), format!("Bearer {TOKEN}"));
    assert!(signature_verifies(&secret, &got[0]));

    // Rotation: a new secret, once; deliveries sign with it at once.
    let (s, rot) = c
        .post(
            &format!("/v1/workflows/{id}/endpoint/rotate-secret"),
            &json!({}),
        )
        .await;
    assert_eq!(s, 200, "{rot}");
    let rotated = rot["signing_secret"].as_str().unwrap().to_string();
    assert_ne!(rotated, secret);
    assert!(!endpoint(&c, &id).await.to_string().contains(&rotated));
    let run_id = c.submit(&id, json!({})).await;
    c.wait_run_until(&run_id, Duration::from_secs(20), |v| {
        v["delivery"]["status"] == "delivered"
    })
    .await;
    let got = rx.got();
    assert!(signature_verifies(&rotated, &got[1]));
    assert!(!signature_verifies(&secret, &got[1]));
    let other = create(&c, &one_script("return 1", 10_000, None)).await;
    let (s, err) = c
        .post(
            &format!("/v1/workflows/{other}/endpoint/rotate-secret"),
            &json!({}),
        )
        .await;
    assert_eq!(
        (s, code(&err)),
        (409, "conflict"),
        "no push, no secret: {err}"
    );

    // Exports: mode and timeouts, never the URL, token or secret.
    for query in ["", "?version=draft", "?version=1"] {
        let r = c
            .http
            .get(c.url(&format!("/v1/workflows/{id}/export{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{query}");
        let zip = r.bytes().await.unwrap().to_vec();
        let files = read_zip(&zip).unwrap();
        for (name, data) in &files {
            let text = String::from_utf8_lossy(data);
            for bad in [TOKEN, secret.as_str(), rotated.as_str(), rx.url.as_str()] {
                assert!(!text.contains(bad), "{query} {name} holds `{bad}`");
            }
        }
        let app: Value = serde_json::from_slice(&files["app_definition.json"]).unwrap();
        assert_eq!(
            app["endpoint"],
            json!({"mode": "async", "sync_timeout_ms": 120000, "async_timeout_ms": null}),
            "{query}"
        );
        if query.is_empty() {
            // Read back on import: a new workflow with this mode and these
            // timeouts, and no push target.
            let (s, imported) = send(
                c.http
                    .post(c.url("/v1/workflows/import"))
                    .header("content-type", "application/zip")
                    .body(zip.clone()),
            )
            .await;
            assert_eq!(s, 201, "{imported}");
            let new_id = imported["workflow"]["id"].as_str().unwrap();
            let ep = endpoint(&c, new_id).await;
            assert_eq!(
                (
                    &ep["mode"],
                    &ep["sync_timeout_ms"],
                    &ep["async_timeout_ms"],
                    &ep["push"],
                    &ep["signing_secret_set"]
                ),
                (
                    &json!("async"),
                    &json!(120000),
                    &Value::Null,
                    &Value::Null,
                    &json!(false)
                ),
                "{ep}"
            );
            // Into an existing workflow: mode and timeouts replaced, its
            // push target kept.
            let (s, v) = put_endpoint(&c, &id, json!({"push": {"url": rx.url}})).await;
            assert_eq!((s, &v["mode"]), (200, &json!("both")), "{v}");
            let (s, v) = send(
                c.http
                    .post(c.url(&format!("/v1/workflows/{id}/import")))
                    .header("content-type", "application/zip")
                    .body(zip),
            )
            .await;
            assert_eq!(s, 200, "{v}");
            let ep = endpoint(&c, &id).await;
            assert_eq!(
                (&ep["mode"], &ep["sync_timeout_ms"]),
                (&json!("async"), &json!(120000))
            );
            assert_eq!(ep["push"]["access_token_set"], true, "{ep}");
        }
    }
    // An archive with out-of-range timeouts is refused, naming the field.
    let bad_app = json!({"format": "weft-export/1",
        "endpoint": {"mode": "sync", "sync_timeout_ms": 5, "async_timeout_ms": null}});
    let zip = weft_coordinator::api::export::write_zip(&[
        (
            "flow_definition.json",
            one_script("return 1", 10_000, None).to_string().as_bytes(),
        ),
        ("app_definition.json", bad_app.to_string().as_bytes()),
        ("env_variables.json", br#"{"variables": []}"#),
    ])
    .unwrap();
    let (s, err) = send(
        c.http
            .post(c.url("/v1/workflows/import"))
            .header("content-type", "application/zip")
            .body(zip),
    )
    .await;
    assert_eq!((s, code(&err)), (400, "invalid_archive"), "{err}");
    assert_eq!(err["error"]["details"]["field"], "sync_timeout_ms", "{err}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_are_made_after_a_coordinator_restart() {
    let mut c = Cluster::start_with(1, |cfg| {
        cfg.push_backoff_min_ms = 100;
        cfg.push_backoff_max_ms = 300;
        cfg.push_retry_for_ms = 60_000;
    })
    .await;
    let rx = Receiver::start(&[], 503).await;
    let id = create(&c, &busy(20_000)).await;
    let secret = push_to(&c, &id, &rx).await;
    deploy(&c, &id).await;

    // One run ended, its delivery failing and pending; one still running.
    let ended = c.submit(&id, json!({"ms": 0})).await;
    c.wait_run_until(&ended, Duration::from_secs(10), |v| {
        v["delivery"]["attempts"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    let running = c.submit(&id, json!({"ms": 2_500})).await;
    c.wait_run_until(&running, Duration::from_secs(10), |v| {
        v["status"] == "running"
    })
    .await;

    c.stop_coordinator().await;
    let before = rx.got().len();
    rx.answer_from_now(200);
    c.start_coordinator().await;

    for run_id in [&ended, &running] {
        let run = c
            .wait_run_until(run_id, Duration::from_secs(30), |v| {
                v["delivery"]["status"] == "delivered"
            })
            .await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let got = rx.got();
    assert!(got.len() > before);
    for run_id in [&ended, &running] {
        let accepted: Vec<&Got> = got
            .iter()
            .filter(|g| g.header("weft-run-id") == run_id.as_str() && g.answered == 200)
            .collect();
        assert_eq!(accepted.len(), 1, "one accepted delivery of {run_id}");
        assert!(signature_verifies(&secret, accepted[0]));
        assert_eq!(accepted[0].json()["status"], "succeeded");
    }
    let (_, run) = c.get(&format!("/v1/runs/{ended}")).await;
    assert!(
        run["delivery"]["attempts"].as_u64().unwrap() >= 3,
        "attempts before the restart count: {run}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_and_secret_are_not_logged_nor_stored_in_clear_and_survive_a_key_rotation() {
    // Everything at trace, through the filter the binaries use.
    let logs = LogCapture::install();
    let mut c = Cluster::start_with(1, quick_retries).await;
    // A failure first, so the retry path logs too.
    let rx = Receiver::start(&[500], 200).await;
    let id = create(&c, &one_script("return 1", 10_000, None)).await;
    let secret = push_to(&c, &id, &rx).await;
    deploy(&c, &id).await;
    let run_id = c.submit(&id, json!({})).await;
    wait_delivered(&c, &run_id).await;

    // A new key, the old one listed as previous: the token and secret are
    // sealed again at start; then the old key can go.
    let new_key = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
    c.stop_coordinator().await;
    c.coordinator_config.encryption_key = new_key.into();
    c.coordinator_config.previous_encryption_keys = vec![TEST_KEY.into()];
    c.start_coordinator().await;
    c.stop_coordinator().await;
    c.coordinator_config.previous_encryption_keys = vec![];
    c.start_coordinator().await;
    let run_id = c.submit(&id, json!({})).await;
    wait_delivered(&c, &run_id).await;
    let got = rx.got();
    let last = got.last().unwrap();
    assert_eq!(last.header("authorization"), format!("Bearer {TOKEN}"));
    assert!(
        signature_verifies(&secret, last),
        "the same secret after rotation"
    );

    c.stop_coordinator().await; // flushes the store
    let stored = c.read_db_files();
    c.shutdown().await;

    let logged = logs.text();
    assert!(
        logged.contains("push delivery ended"),
        "push logs were captured"
    );
    assert!(
        logged.contains("push attempt failed"),
        "retry logs were captured"
    );
    for needle in [TOKEN, secret.as_str()] {
        assert_nowhere(needle, &logged, &stored);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_targets_stay_outside_the_network_and_the_token_does_not_follow_a_new_origin() {
    let c = Cluster::start_with(0, |cfg| cfg.push_allow_private_targets = false).await;
    let (s, wf) = c.post("/v1/workflows", &four_node()).await;
    assert_eq!(s, 201);
    let path = format!("/v1/workflows/{}/endpoint", wf["id"].as_str().unwrap());
    let admin = c.as_token(ADMIN_TOKEN);
    for internal in [
        "http://127.0.0.1:9/cb",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost/cb",
        "http://[::1]/cb",
    ] {
        let (s, v) = admin
            .put(
                &path,
                &json!({"push": {"url": internal, "access_token": "t0ken"}}),
            )
            .await;
        assert_eq!(s, 400, "{internal}: {v}");
        assert_eq!(v["error"]["details"]["field"], "push.url");
    }
    let (s, v) = admin
        .put(
            &path,
            &json!({"push": {"url": "https://hooks.example.com/a", "access_token": "t0ken"}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v["signing_secret"].as_str().is_some());
    // Same origin, no token: the stored one stays.
    let (s, v) = admin
        .put(
            &path,
            &json!({"push": {"url": "https://hooks.example.com/b"}}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("signing_secret").is_none(), "shown once: {v}");
    // Another origin, no token: refused (the stored token must not follow).
    let (s, v) = admin
        .put(
            &path,
            &json!({"push": {"url": "https://attacker.example.net/x"}}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["details"]["field"], "push.access_token");
    // Viewers do not see the push target.
    let (viewer_id, viewer) = c.create_user("viewer").await;
    let wf_id = wf["id"].as_str().unwrap();
    let (s, _) = admin
        .put(
            &format!("/v1/workflows/{wf_id}/shares/{viewer_id}"),
            &json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = viewer.get(&path).await;
    assert_eq!(s, 403);
    c.shutdown().await;
}
