//! The mock model over real HTTP: replies, usage, JSON mode, errors, latency,
//! hangs, recording, and the `weft-mock-model` binary's flags and shutdown.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use weft_loadtest::mock_model::{Latency, MockModel, MockModelConfig, Reply};

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client builds")
}

async fn start(config: MockModelConfig) -> MockModel {
    MockModel::start(config).await.expect("mock starts")
}

fn chat(content: &str) -> Value {
    json!({
        "model": "mock-1",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": content},
        ],
        "temperature": 0.2,
        "max_tokens": 64,
    })
}

async fn post(http: &reqwest::Client, mock: &MockModel, body: &Value) -> (u16, Value) {
    let response = http
        .post(format!("{}/chat/completions", mock.url()))
        .json(body)
        .send()
        .await
        .expect("request is answered");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}

#[tokio::test]
async fn normal_reply_has_openai_shape_and_usage() {
    let mock = start(MockModelConfig::default()).await;
    assert!(mock.url().starts_with("http://127.0.0.1:"));
    assert!(mock.url().ends_with("/v1"));
    let (status, body) = post(&client(), &mock, &chat("hello there, model")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["id"].as_str().expect("id").starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "mock-1");
    assert!(body["created"].as_u64().expect("created") > 1_600_000_000);
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    // "You are terse." (14) + "hello there, model" (18) = 32 chars → 8 tokens.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 8, "completion_tokens": 16, "total_tokens": 24})
    );
}

#[tokio::test]
async fn configured_token_counts_and_fixed_reply() {
    let mock = start(MockModelConfig {
        prompt_tokens: Some(100),
        completion_tokens: 5,
        reply: Reply::Fixed("canned".into()),
        ..MockModelConfig::default()
    })
    .await;
    let (status, body) = post(&client(), &mock, &chat("x")).await;
    assert_eq!(status, 200);
    assert_eq!(body["choices"][0]["message"]["content"], "canned");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105})
    );
}

#[tokio::test]
async fn echo_returns_the_last_user_message() {
    let mock = start(MockModelConfig::default()).await;
    let body = json!({
        "model": "gpt-x",
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "second "}, {"type": "text", "text": "part"}]},
            {"role": "assistant", "content": null},
        ],
    });
    let (status, reply) = post(&client(), &mock, &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["choices"][0]["message"]["content"], "second part");
    assert_eq!(reply["model"], "gpt-x");
    // "first" + "ok" + "second part" = 18 chars → 4 tokens; never below 1.
    assert_eq!(reply["usage"]["prompt_tokens"], 4);
    let empty = json!({"model": "m", "messages": [{"role": "user", "content": ""}]});
    let (_, tiny) = post(&client(), &mock, &empty).await;
    assert_eq!(tiny["usage"]["prompt_tokens"], 1);
    assert_eq!(tiny["choices"][0]["message"]["content"], "");
}

#[tokio::test]
async fn json_mode_wraps_the_echo_in_an_object() {
    let mock = start(MockModelConfig::default()).await;
    let mut body = chat("say \"hi\"");
    body["response_format"] = json!({"type": "json_object"});
    let (status, reply) = post(&client(), &mock, &body).await;
    assert_eq!(status, 200);
    let content = reply["choices"][0]["message"]["content"]
        .as_str()
        .expect("content is a string");
    let parsed: Value = serde_json::from_str(content).expect("content is json");
    assert_eq!(parsed, json!({"echo": "say \"hi\""}));
}

#[tokio::test]
async fn bad_requests_get_400_in_openai_shape() {
    let mock = start(MockModelConfig::default()).await;
    let http = client();
    for bad in [
        json!({"messages": [{"role": "user", "content": "x"}]}),
        json!({"model": "m", "messages": []}),
        json!({"model": "m", "messages": "hello"}),
        json!({"model": "m", "messages": [{"content": "x"}]}),
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 9}),
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true}),
        json!([1, 2]),
    ] {
        let (status, body) = post(&http, &mock, &bad).await;
        assert_eq!(status, 400, "{bad} → {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let response = http
        .post(format!("{}/chat/completions", mock.url()))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.expect("json error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    // The raw text of a non-JSON body is still recorded.
    assert_eq!(
        mock.received().last().expect("recorded").body,
        json!("{not json")
    );
}

#[tokio::test]
async fn fail_first_then_success() {
    let mock = start(MockModelConfig {
        fail_first: 2,
        ..MockModelConfig::default()
    })
    .await;
    let http = client();
    for _ in 0..2 {
        let (status, body) = post(&http, &mock, &chat("x")).await;
        assert_eq!(status, 500);
        assert_eq!(body["error"]["type"], "server_error");
    }
    let (status, _) = post(&http, &mock, &chat("x")).await;
    assert_eq!(status, 200);
    assert_eq!(mock.requests(), 3);
}

#[tokio::test]
async fn rate_limited_with_retry_after() {
    let mock = start(MockModelConfig {
        rate_429: 1.0,
        retry_after_secs: Some(7),
        ..MockModelConfig::default()
    })
    .await;
    let response = client()
        .post(format!("{}/chat/completions", mock.url()))
        .json(&chat("x"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("7")
    );
    let body: Value = response.json().await.expect("json error");
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    let always_500 = start(MockModelConfig {
        rate_500: 1.0,
        ..MockModelConfig::default()
    })
    .await;
    let (status, _) = post(&client(), &always_500, &chat("x")).await;
    assert_eq!(status, 500);
}

#[tokio::test]
async fn api_key_is_enforced() {
    let mock = start(MockModelConfig {
        api_key: Some("sk-test".into()),
        ..MockModelConfig::default()
    })
    .await;
    let http = client();
    let url = format!("{}/chat/completions", mock.url());
    for auth in [None, Some("Bearer sk-wrong"), Some("sk-test")] {
        let mut request = http.post(&url).json(&chat("x"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.expect("answered");
        assert_eq!(response.status().as_u16(), 401, "{auth:?}");
        let body: Value = response.json().await.expect("json error");
        assert_eq!(body["error"]["code"], "invalid_api_key");
    }
    let response = http
        .post(&url)
        .bearer_auth("sk-test")
        .json(&chat("x"))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn fixed_latency_is_at_least_that_long() {
    let delay = Duration::from_millis(300);
    let mock = start(MockModelConfig {
        latency: Latency::Fixed(delay),
        ..MockModelConfig::default()
    })
    .await;
    let http = client();
    let started = Instant::now();
    let (status, _) = post(&http, &mock, &chat("x")).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
}

#[tokio::test]
async fn hang_holds_until_the_client_gives_up() {
    let mock = start(MockModelConfig {
        hang_rate: 1.0,
        ..MockModelConfig::default()
    })
    .await;
    let started = Instant::now();
    let error = client()
        .post(format!("{}/chat/completions", mock.url()))
        .timeout(Duration::from_millis(300))
        .json(&chat("x"))
        .send()
        .await
        .expect_err("never answered");
    assert!(error.is_timeout(), "{error}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(mock.requests(), 1);
}

#[tokio::test]
async fn dropping_the_mock_releases_hanging_requests() {
    let mock = start(MockModelConfig {
        hang_rate: 1.0,
        ..MockModelConfig::default()
    })
    .await;
    let url = format!("{}/chat/completions", mock.url());
    let http = client();
    let pending = tokio::spawn(async move { http.post(url).json(&chat("x")).send().await });
    let started = Instant::now();
    while mock.requests() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "request never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(mock);
    let result = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("released promptly")
        .expect("task ran");
    // Either a 503 or a closed connection: anything but waiting forever.
    if let Ok(response) = result {
        assert_eq!(response.status().as_u16(), 503);
    }
}

#[tokio::test]
async fn received_records_bodies_and_headers() {
    let mock = start(MockModelConfig::default()).await;
    let http = client();
    let first = chat("one");
    let second = chat("two");
    http.post(format!("{}/chat/completions", mock.url()))
        .header("X-Trace-Id", "abc123")
        .json(&first)
        .send()
        .await
        .expect("answered");
    post(&http, &mock, &second).await;
    let received = mock.received();
    assert_eq!(received.len(), 2);
    assert_eq!(mock.requests(), 2);
    assert_eq!(received[0].body, first);
    assert_eq!(received[1].body, second);
    assert!(received[0]
        .headers
        .contains(&("x-trace-id".to_string(), "abc123".to_string())));
    assert!(received[0]
        .headers
        .iter()
        .any(|(k, v)| k == "content-type" && v == "application/json"));
}

#[tokio::test]
async fn models_healthz_and_unknown_paths() {
    let mock = start(MockModelConfig::default()).await;
    let http = client();
    let models: Value = http
        .get(format!("{}/models", mock.url()))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "mock-1");
    let base = mock.url().trim_end_matches("/v1").to_string();
    let health = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("answered");
    assert_eq!(health.status().as_u16(), 200);
    let missing = http
        .get(format!("{base}/v2/nothing"))
        .send()
        .await
        .expect("answered");
    assert_eq!(missing.status().as_u16(), 404);
    let body: Value = missing.json().await.expect("json error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(mock.requests(), 0, "only chat completions are recorded");
}

#[test]
fn binary_rejects_bad_flags_with_exit_64() {
    for args in [
        &["--latency", "soon"][..],
        &["--rate-500", "1.5"],
        &["--rate-429", "0.7", "--hang-rate", "0.7"],
        &["--no-such-flag"],
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_weft-mock-model"))
            .args(args)
            .output()
            .expect("binary runs");
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn binary_prints_its_url_serves_and_stops_on_ctrl_c() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft-mock-model"))
        .args(["--listen", "127.0.0.1:0", "--reply", "fixed:pong"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let url = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let url = tokio::time::timeout(Duration::from_secs(10), url)
        .await
        .expect("url printed in time")
        .expect("reader ran")
        .expect("stdout readable");
    let url = url.trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/v1"),
        "{url}"
    );

    let http = client();
    let reply: Value = http
        .post(format!("{url}/chat/completions"))
        .json(&chat("ping"))
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("json");
    assert_eq!(reply["choices"][0]["message"]["content"], "pong");

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("child status") {
            break exit;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("mock model did not stop on ctrl-c");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(exit.success(), "{exit:?}");
}
