//! The OpenAPI document (`GET /openapi.json`) is valid OpenAPI 3.1 by a real
//! validator (`worker/tests/openapi/check_openapi.py`, openapi-spec-validator),
//! documents exactly the routes the router serves (`api::ROUTES`, which the
//! router is built from), and each of those routes is served.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use weft_coordinator::api::ROUTES;

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

async fn fetch_document(c: &Cluster) -> Value {
    // No credentials: the document is public.
    let r = c.http.get(c.url("/openapi.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    r.json().await.expect("the document is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_openapi_3_1() {
    let c = Cluster::start(0).await;
    let doc = fetch_document(&c).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/check_openapi.py");
    // python3 re-runs the script under the tools venv when it lacks the
    // validator there; exit 2 (with how to install it) if neither has it.
    let out = Command::new("python3")
        .arg(&script)
        .arg(&file)
        .output()
        .expect("python3 runs (install the validator with .ci/install)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "OpenAPI validation failed:\n{text}");
    assert!(text.contains("valid OpenAPI 3.1"), "{text}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_served_is_documented_and_every_documented_route_is_served() {
    let c = Cluster::start(0).await;
    let doc = fetch_document(&c).await;

    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| METHODS.contains(&m.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let phantom: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && phantom.is_empty(),
        "served but not in /openapi.json: {undocumented:?}\nin /openapi.json but not served: {phantom:?}"
    );

    // Each documented path parameter is one of the path's, and vice versa.
    for (method, path) in &served {
        let op = &doc["paths"][path][method];
        let mut in_doc: Vec<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let mut in_path: Vec<&str> = path
            .split('{')
            .skip(1)
            .map(|s| s.split_once('}').unwrap().0)
            .collect();
        in_doc.sort_unstable();
        in_path.sort_unstable();
        assert_eq!(in_doc, in_path, "{method} {path}: path parameters");
        assert!(
            op["operationId"].is_string(),
            "{method} {path}: operationId"
        );
    }

    // ROUTES is what the router serves: no route answers with the router's
    // own fallbacks (no such route, method not allowed). The ids are made up,
    // so nothing is created or changed.
    let fallback = c
        .http
        .get(c.url("/v1/no-such-route"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    for (method, path) in &served {
        let url = c.url(
            &path
                .replace("{run_id}", "01890000-0000-7000-8000-000000000000")
                .replace("{id}", "openapi-probe")
                .replace(['{', '}'], ""),
        );
        let req = c
            .http
            .request(method.to_uppercase().parse().unwrap(), url)
            .json(&json!({}));
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert_ne!(body, fallback, "{method} {path} is not routed");
    }
    c.shutdown().await;
}
