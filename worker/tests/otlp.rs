//! Spans are exported over OTLP/HTTP when an endpoint is configured, and join
//! the caller's trace: a fake collector (a real HTTP server) receives spans
//! carrying the trace id of the `traceparent` the run request came with.

mod common;

use common::*;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Each export request: its content type and body.
type Exports = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_spans_reach_the_otlp_collector_in_the_callers_trace() {
    // The collector: records every export request's body.
    let bodies: Exports = Arc::default();
    let seen = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let ct = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    seen.lock().unwrap().push((ct, body.to_vec()));
                    axum::http::StatusCode::OK
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    // As the binaries do: logs plus OTLP export for this process.
    let telemetry =
        weft_shared::telemetry::init("weft-test", false, &collector).expect("telemetry");
    let c = Cluster::start(1).await;
    let wf = c.deploy(&four_node()).await;
    let trace_hex = "0af7651916cd43dd8448eb211c80319c";
    let r = c
        .http
        .post(c.url(&format!("/v1/workflows/{wf}/runs")))
        .header("traceparent", format!("00-{trace_hex}-b7ad6b7169203331-01"))
        .json(&json!({"input": {"n": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.shutdown().await;
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();

    let trace_id: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let start = Instant::now();
    loop {
        let got = bodies.lock().unwrap().clone();
        let joined: Vec<&(String, Vec<u8>)> = got
            .iter()
            .filter(|(_, b)| b.windows(16).any(|w| w == trace_id.as_slice()))
            .collect();
        if !joined.is_empty() {
            assert!(
                joined.iter().all(|(ct, _)| ct.contains("protobuf")),
                "OTLP/HTTP protobuf"
            );
            let all: Vec<u8> = joined.iter().flat_map(|(_, b)| b.clone()).collect();
            let has = |s: &str| all.windows(s.len()).any(|w| w == s.as_bytes());
            assert!(has("run") && has("node"), "run and node spans exported");
            assert!(has("weft-test"), "service name");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no span with the caller's trace id reached the collector ({} exports)",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
