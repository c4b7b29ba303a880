//! The platform around runs, through HTTP: versions and deploy (redeploy,
//! undeploy, delete only when undeployed, the active switch), export and
//! import as zip archives, and the built-in templates. Refusals included.

mod common;

use common::testapi::TestApi;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use weft_coordinator::api::export::{read_zip, write_zip};
use weft_loadtest::mock_model::{MockModel, MockModelConfig, Reply};

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn put(c: &Cluster, path: &str, body: &Value) -> (u16, Value) {
    send(c.http.put(c.url(path)).json(body)).await
}

async fn delete(c: &Cluster, path: &str) -> (u16, Value) {
    send(c.http.delete(c.url(path))).await
}

/// POST with no body.
async fn post_empty(c: &Cluster, path: &str) -> (u16, Value) {
    send(c.http.post(c.url(path))).await
}

async fn post_zip(c: &Cluster, path: &str, zip: Vec<u8>) -> (u16, Value) {
    send(
        c.http
            .post(c.url(path))
            .header("content-type", "application/zip")
            .body(zip),
    )
    .await
}

/// The export's status, content type and bytes.
async fn export(c: &Cluster, wf: &str, query: &str) -> (u16, String, Vec<u8>) {
    let r = c
        .http
        .get(c.url(&format!("/v1/workflows/{wf}/export{query}")))
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (s, ct, r.bytes().await.unwrap().to_vec())
}

fn json_of(files: &BTreeMap<String, Vec<u8>>, name: &str) -> Value {
    serde_json::from_slice(&files[name]).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn names(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect()
}

/// The workflow's variables by name: (value, secure).
async fn env_of(c: &Cluster, wf: &str) -> BTreeMap<String, (Value, bool)> {
    let (s, v) = c.get(&format!("/v1/workflows/{wf}/env")).await;
    assert_eq!(s, 200, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                (e["value"].clone(), e["secure"].as_bool().unwrap()),
            )
        })
        .collect()
}

/// four_node with the multiplier `k` and workflow-level guardrails.
fn times(k: u32) -> Value {
    let mut d = four_node();
    d["nodes"][1]["config"]["code"] = json!(format!("return {{v: ctx.input.n * {k}}}"));
    d["guardrails"] = json!({"input": [{"scanner": "pii_detection", "action": "redact"}]});
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_publishes_versions_redeploy_keeps_the_endpoint_and_invalid_drafts_are_refused() {
    let mut c = Cluster::start(1).await;
    let (s, wf) = c.post("/v1/workflows", &times(2)).await;
    assert_eq!(s, 201, "{wf}");
    let id = wf["id"].as_str().unwrap().to_string();
    assert_eq!(
        (
            &wf["deployed"],
            &wf["active"],
            &wf["deployed_version"],
            &wf["latest_version"]
        ),
        (&json!(false), &json!(true), &Value::Null, &Value::Null)
    );
    let (s, err) = c.run_sync(&id, json!({"n": 1})).await;
    assert_eq!((s, code(&err)), (409, "not_deployed"));
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deploy it first"),
        "{err}"
    );

    let (s, v1) = c
        .post(&format!("/v1/workflows/{id}/deploy"), &json!({}))
        .await;
    assert_eq!((s, v1["version"].as_u64()), (201, Some(1)), "{v1}");
    let (_, wf) = c.get(&format!("/v1/workflows/{id}")).await;
    assert_eq!(
        (&wf["deployed"], &wf["deployed_version"]),
        (&json!(true), &json!(1))
    );
    let (_, run) = c.run_sync(&id, json!({"n": 4})).await;
    assert_eq!(
        (run["version"].as_u64(), run["output"]["v"].as_u64()),
        (Some(1), Some(8)),
        "{run}"
    );

    // Redeploy: a new version behind the same endpoint; runs use it at once.
    let (s, _) = put(&c, &format!("/v1/workflows/{id}"), &times(3)).await;
    assert_eq!(s, 200);
    let (_, run) = c.run_sync(&id, json!({"n": 4})).await;
    assert_eq!(
        run["version"], 1,
        "editing the draft changes nothing deployed"
    );
    let (s, v2) = c
        .post(&format!("/v1/workflows/{id}/deploy"), &json!({}))
        .await;
    assert_eq!((s, v2["version"].as_u64()), (201, Some(2)));
    let (_, run) = c.run_sync(&id, json!({"n": 4})).await;
    assert_eq!(
        (run["version"].as_u64(), run["output"]["v"].as_u64()),
        (Some(2), Some(12)),
        "{run}"
    );
    let (_, wf) = c.get(&format!("/v1/workflows/{id}")).await;
    assert_eq!(
        (&wf["deployed_version"], &wf["latest_version"]),
        (&json!(2), &json!(2))
    );
    let (_, versions) = c.get(&format!("/v1/workflows/{id}/versions")).await;
    assert_eq!(versions["items"].as_array().unwrap().len(), 2);

    // A draft that no longer validates (here: the coordinator's node limit
    // was lowered under it) is refused, every error listed; nothing changes.
    c.stop_coordinator().await;
    c.coordinator_config.max_nodes = 3;
    c.start_coordinator().await;
    c.wait_workers(1).await;
    let (s, err) = c
        .post(&format!("/v1/workflows/{id}/deploy"), &json!({}))
        .await;
    assert_eq!((s, code(&err)), (400, "invalid_definition"), "{err}");
    let errors = err["error"]["details"]["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e["code"] == "too_many_nodes"),
        "{err}"
    );
    let (_, versions) = c.get(&format!("/v1/workflows/{id}/versions")).await;
    assert_eq!(versions["items"].as_array().unwrap().len(), 2);
    let (_, run) = c.run_sync(&id, json!({"n": 1})).await;
    assert_eq!(
        (run["status"].as_str(), run["version"].as_u64()),
        (Some("succeeded"), Some(2))
    );

    let (s, err) = c.post("/v1/workflows/nope/deploy", &json!({})).await;
    assert_eq!((s, code(&err)), (404, "not_found"));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeploy_takes_the_endpoint_offline_while_runs_in_flight_finish_and_delete_waits_for_it() {
    let c = Cluster::start(1).await;
    // Busy for ~500 ms: still running when the workflow is undeployed.
    let busy = one_script(
        "const t = Date.now(); while (Date.now() - t < 500) {} return 'done'",
        10_000,
        None,
    );
    let id = c.deploy(&busy).await;
    let run_id = c.submit(&id, json!({})).await;
    c.wait_run_until(&run_id, Duration::from_secs(5), |r| {
        r["status"] == "running"
    })
    .await;

    let (s, wf) = post_empty(&c, &format!("/v1/workflows/{id}/undeploy")).await;
    assert_eq!(
        (s, &wf["deployed"], &wf["deployed_version"]),
        (200, &json!(false), &Value::Null),
        "{wf}"
    );
    assert_eq!(wf["latest_version"], 1, "versions stay");
    let (s, err) = c.run_sync(&id, json!({})).await;
    assert_eq!((s, code(&err)), (409, "not_deployed"), "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("undeployed"),
        "{err}"
    );
    let (s, err) = c
        .post(
            &format!("/v1/workflows/{id}/runs?mode=async"),
            &json!({"input": {}}),
        )
        .await;
    assert_eq!((s, code(&err)), (409, "not_deployed"));
    // Undeploying again changes nothing.
    let (s, _) = post_empty(&c, &format!("/v1/workflows/{id}/undeploy")).await;
    assert_eq!(s, 200);

    let done = c.wait_run(&run_id, Duration::from_secs(10)).await;
    assert_eq!(
        (done["status"].as_str(), &done["output"]["result"]),
        (Some("succeeded"), &json!("done")),
        "{done}"
    );

    // A deploy brings the endpoint back, with a new version.
    let (s, v) = c
        .post(&format!("/v1/workflows/{id}/deploy"), &json!({}))
        .await;
    assert_eq!((s, v["version"].as_u64()), (201, Some(2)));
    let (_, run) = c.run_sync(&id, json!({})).await;
    assert_eq!(
        (run["status"].as_str(), run["version"].as_u64()),
        (Some("succeeded"), Some(2)),
        "{run}"
    );

    // Deleting a deployed workflow is refused; undeployed, it goes.
    let (s, err) = delete(&c, &format!("/v1/workflows/{id}")).await;
    assert_eq!((s, code(&err)), (409, "workflow_deployed"), "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("undeploy it first"),
        "{err}"
    );
    let (s, _) = c.get(&format!("/v1/workflows/{id}")).await;
    assert_eq!(s, 200, "still there");
    post_empty(&c, &format!("/v1/workflows/{id}/undeploy")).await;
    let (s, _) = delete(&c, &format!("/v1/workflows/{id}")).await;
    assert_eq!(s, 204);
    let (s, err) = c.run_sync(&id, json!({})).await;
    assert_eq!((s, code(&err)), (404, "not_found"));
    let (s, err) = post_empty(&c, &format!("/v1/workflows/{id}/undeploy")).await;
    assert_eq!((s, code(&err)), (404, "not_found"));
    // A workflow never deployed can be deleted at once.
    let (_, wf) = c.post("/v1/workflows", &four_node()).await;
    let (s, _) = delete(&c, &format!("/v1/workflows/{}", wf["id"].as_str().unwrap())).await;
    assert_eq!(s, 204);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_workflow_refuses_runs_until_activated() {
    let c = Cluster::start(1).await;
    let id = c.deploy(&four_node()).await;
    let (s, wf) = post_empty(&c, &format!("/v1/workflows/{id}/deactivate")).await;
    assert_eq!(
        (s, &wf["active"], &wf["deployed"]),
        (200, &json!(false), &json!(true)),
        "{wf}"
    );
    let (s, err) = c.run_sync(&id, json!({"n": 1})).await;
    assert_eq!((s, code(&err)), (409, "workflow_inactive"), "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("activate"),
        "{err}"
    );
    let (s, err) = c
        .post(
            &format!("/v1/workflows/{id}/runs?mode=async"),
            &json!({"input": {"n": 1}}),
        )
        .await;
    assert_eq!((s, code(&err)), (409, "workflow_inactive"));
    // Still editable and deployable while inactive; still refused.
    let (s, _) = c
        .post(&format!("/v1/workflows/{id}/deploy"), &json!({}))
        .await;
    assert_eq!(s, 201);
    let (s, err) = c.run_sync(&id, json!({"n": 1})).await;
    assert_eq!((s, code(&err)), (409, "workflow_inactive"));

    let (s, wf) = post_empty(&c, &format!("/v1/workflows/{id}/activate")).await;
    assert_eq!((s, &wf["active"]), (200, &json!(true)));
    let (s, run) = c.run_sync(&id, json!({"n": 6})).await;
    assert_eq!(
        (s, run["status"].as_str(), run["version"].as_u64()),
        (200, Some("succeeded"), Some(2)),
        "{run}"
    );

    // Inactive and never deployed: the switch is reported first.
    let (_, wf) = c.post("/v1/workflows", &four_node()).await;
    let other = wf["id"].as_str().unwrap();
    post_empty(&c, &format!("/v1/workflows/{other}/deactivate")).await;
    let (s, err) = c.run_sync(other, json!({"n": 1})).await;
    assert_eq!((s, code(&err)), (409, "workflow_inactive"));
    let (s, err) = post_empty(&c, "/v1/workflows/nope/activate").await;
    assert_eq!((s, code(&err)), (404, "not_found"));
    c.shutdown().await;
}

/// A deployed workflow (v1 ×2, v2 ×3, draft ×4) with a plain and a secure
/// variable; returns its id.
async fn exported_workflow(c: &Cluster, secret: &str) -> String {
    let id = c.deploy(&times(2)).await;
    c.set_env(&id, "PLAIN", "visible-value", false).await;
    c.set_env(&id, "SHARED", "from-archive", false).await;
    let (s, _) = c
        .post(
            &format!("/v1/workflows/{id}/env"),
            &json!({"name": "SECRET", "value": secret, "secure": true, "notes": "the key"}),
        )
        .await;
    assert_eq!(s, 201);
    put(c, &format!("/v1/workflows/{id}"), &times(3)).await;
    c.post(&format!("/v1/workflows/{id}/deploy"), &json!({}))
        .await;
    put(c, &format!("/v1/workflows/{id}"), &times(4)).await;
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_holds_the_version_its_settings_and_variables_but_never_a_secure_value() {
    let c = Cluster::start(0).await;
    let secret = "s3cret-Zq7-never-exported";
    let id = exported_workflow(&c, secret).await;

    let (s, ct, zip) = export(&c, &id, "").await;
    assert_eq!((s, ct.as_str()), (200, "application/zip"));
    assert!(
        !zip.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secure value is in the archive's bytes"
    );
    let files = read_zip(&zip).unwrap();
    assert_eq!(
        files.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "app_definition.json",
            "env_variables.json",
            "flow_definition.json"
        ]
    );
    for (name, data) in &files {
        assert!(
            !String::from_utf8_lossy(data).contains(secret),
            "{name} holds the secure value"
        );
    }
    // The default is the deployed version (v2), not the draft.
    let flow = json_of(&files, "flow_definition.json");
    assert_eq!(
        flow["nodes"][1]["config"]["code"],
        "return {v: ctx.input.n * 3}"
    );
    let (_, versions) = c.get(&format!("/v1/workflows/{id}/versions")).await;
    assert_eq!(
        flow, versions["items"][0]["definition"],
        "the definition as deployed"
    );
    let app = json_of(&files, "app_definition.json");
    assert_eq!(app["format"], "weft-export/1");
    assert_eq!(app["workflow"]["name"], "score");
    assert_eq!(
        app["workflow"]["description"],
        "doubles n and says whether it is big"
    );
    assert!(app["workflow"]["created_at_ms"].as_u64().unwrap() > 0);
    assert_eq!(
        (&app["version"]["number"], &app["version"]["draft"]),
        (&json!(2), &json!(false))
    );
    assert!(app["version"]["created_at_ms"].as_u64().unwrap() > 0);
    assert_eq!(app["timeout_ms"], 10000);
    assert_eq!(app["guardrails"]["input"][0]["scanner"], "pii_detection");
    for k in ["mode", "sync_timeout_ms", "async_timeout_ms"] {
        assert!(
            app["endpoint"].as_object().unwrap().contains_key(k),
            "{app}"
        );
    }
    let env = json_of(&files, "env_variables.json");
    let vars = env["variables"].as_array().unwrap();
    let by: BTreeMap<&str, &Value> = vars
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    assert_eq!(by["PLAIN"]["value"], "visible-value");
    assert_eq!(by["PLAIN"]["secure"], false);
    assert_eq!(
        (&by["SECRET"]["secure"], &by["SECRET"]["notes"]),
        (&json!(true), &json!("the key"))
    );
    assert!(
        !by["SECRET"].as_object().unwrap().contains_key("value"),
        "secure value must be absent, not masked: {env}"
    );
    let mut keys: Vec<&str> = app
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "endpoint",
            "exported_at_ms",
            "format",
            "guardrails",
            "timeout_ms",
            "version",
            "workflow"
        ],
        "nothing but the app definition (no keys, sharing or audit)"
    );

    // A named version, the draft, and refusals.
    let (_, _, v1) = export(&c, &id, "?version=1").await;
    let v1 = read_zip(&v1).unwrap();
    assert_eq!(
        json_of(&v1, "flow_definition.json")["nodes"][1]["config"]["code"],
        "return {v: ctx.input.n * 2}"
    );
    assert_eq!(json_of(&v1, "app_definition.json")["version"]["number"], 1);
    let (_, _, draft) = export(&c, &id, "?version=draft").await;
    let draft = read_zip(&draft).unwrap();
    assert_eq!(
        json_of(&draft, "flow_definition.json")["nodes"][1]["config"]["code"],
        "return {v: ctx.input.n * 4}"
    );
    assert_eq!(
        json_of(&draft, "app_definition.json")["version"]["draft"],
        true
    );
    let (s, _, body) = export(&c, &id, "?version=9").await;
    assert_eq!(s, 404, "{}", String::from_utf8_lossy(&body));
    let (s, _, body) = export(&c, &id, "?version=latest").await;
    assert_eq!(s, 400, "{}", String::from_utf8_lossy(&body));
    let (_, wf) = c.post("/v1/workflows", &four_node()).await;
    let (s, _, body) = export(&c, wf["id"].as_str().unwrap(), "").await;
    let err: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((s, code(&err)), (409, "not_deployed"), "{err}");
    let (s, _, _) = export(&c, "nope", "").await;
    assert_eq!(s, 404);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_as_new_and_onto_an_existing_draft_resolves_conflicts_both_ways_with_a_backup() {
    let c = Cluster::start(1).await;
    let source = exported_workflow(&c, "source-secret").await;
    let (_, _, zip) = export(&c, &source, "").await;

    // As a new workflow: a draft, not deployed; the secure variable needs a value.
    let (s, imported) = post_zip(&c, "/v1/workflows/import", zip.clone()).await;
    assert_eq!(s, 201, "{imported}");
    let new_id = imported["workflow"]["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, source);
    assert_eq!(imported["workflow"]["deployed"], false);
    assert_eq!(
        imported["workflow"]["definition"]["nodes"][1]["config"]["code"],
        "return {v: ctx.input.n * 3}"
    );
    assert_eq!(names(&imported["env"]["created"]), ["PLAIN", "SHARED"]);
    assert_eq!(names(&imported["env"]["needs_value"]), ["SECRET"]);
    let env = env_of(&c, &new_id).await;
    assert_eq!(
        env.keys().map(String::as_str).collect::<Vec<_>>(),
        ["PLAIN", "SHARED"]
    );
    assert_eq!(env["PLAIN"], (json!("visible-value"), false));
    // It runs once deployed.
    let (s, _) = c
        .post(&format!("/v1/workflows/{new_id}/deploy"), &json!({}))
        .await;
    assert_eq!(s, 201);
    let (_, run) = c.run_sync(&new_id, json!({"n": 2})).await;
    assert_eq!(run["output"]["v"], 6, "{run}");

    // Onto an existing, deployed workflow with a conflicting variable.
    let target = c.deploy(&one_script("return 1", 5000, None)).await;
    c.set_env(&target, "SHARED", "target-value", false).await;
    c.set_env(&target, "PLAIN", "visible-value", false).await;
    c.set_env(&target, "SECRET", "target-secret", true).await;
    c.set_env(&target, "ONLY_HERE", "untouched", false).await;
    let (_, before) = c.get(&format!("/v1/workflows/{target}")).await;

    // keep (the default), with a backup of the replaced draft.
    let (s, r) = post_zip(
        &c,
        &format!("/v1/workflows/{target}/import?backup=true"),
        zip.clone(),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(names(&r["env"]["kept"]), ["SHARED"]);
    assert_eq!(names(&r["env"]["unchanged"]), ["PLAIN", "SECRET"]);
    assert!(r["env"]["overwritten"].as_array().unwrap().is_empty());
    assert!(r["env"]["created"].as_array().unwrap().is_empty());
    assert_eq!(r["workflow"]["definition"]["name"], "score");
    assert_eq!(
        r["workflow"]["deployed_version"], 1,
        "the deployed version is untouched"
    );
    assert_eq!(r["backup"]["definition"], before["definition"]);
    let env = env_of(&c, &target).await;
    assert_eq!(env["SHARED"], (json!("target-value"), false));
    assert_eq!(env["ONLY_HERE"], (json!("untouched"), false));
    let (_, run) = c.run_sync(&target, json!({})).await;
    assert_eq!(
        run["output"]["result"], 1,
        "runs use the deployed version: {run}"
    );
    let (s, backups) = c.get(&format!("/v1/workflows/{target}/backups")).await;
    assert_eq!(s, 200);
    let items = backups["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["definition"], before["definition"]);
    assert_eq!(items[0]["id"], r["backup"]["id"]);

    // overwrite, without a backup.
    let (s, r) = post_zip(
        &c,
        &format!("/v1/workflows/{target}/import?on_conflict=overwrite"),
        zip.clone(),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(names(&r["env"]["overwritten"]), ["SHARED"]);
    assert!(r["env"]["kept"].as_array().unwrap().is_empty());
    assert!(r["backup"].is_null());
    let env = env_of(&c, &target).await;
    assert_eq!(env["SHARED"], (json!("from-archive"), false));
    assert_eq!(
        env["SECRET"],
        (Value::Null, true),
        "secure stays secure and hidden"
    );
    let (_, backups) = c.get(&format!("/v1/workflows/{target}/backups")).await;
    assert_eq!(backups["items"].as_array().unwrap().len(), 1);
    // The imported draft deploys and runs.
    c.post(&format!("/v1/workflows/{target}/deploy"), &json!({}))
        .await;
    let (_, run) = c.run_sync(&target, json!({"n": 5})).await;
    assert_eq!(
        (run["version"].as_u64(), run["output"]["v"].as_u64()),
        (Some(2), Some(15)),
        "{run}"
    );

    // Refusals: an invalid definition lists every error; broken archives.
    let files = read_zip(&zip).unwrap();
    let mut bad = json_of(&files, "flow_definition.json");
    bad["timeout_ms"] = json!(0);
    bad["nodes"][1]["config"]["code"] = json!("return (");
    let bad = serde_json::to_vec(&bad).unwrap();
    let with = |flow: &[u8]| {
        write_zip(&[
            ("flow_definition.json", flow),
            ("app_definition.json", &files["app_definition.json"]),
            ("env_variables.json", &files["env_variables.json"]),
        ])
        .unwrap()
    };
    let (s, err) = post_zip(&c, "/v1/workflows/import", with(&bad)).await;
    assert_eq!((s, code(&err)), (400, "invalid_definition"), "{err}");
    let codes: Vec<&str> = err["error"]["details"]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"timeout_out_of_range") && codes.contains(&"script_does_not_compile"),
        "{err}"
    );
    let (s, err) = post_zip(&c, &format!("/v1/workflows/{target}/import"), with(&bad)).await;
    assert_eq!((s, code(&err)), (400, "invalid_definition"));
    let (s, err) = post_zip(
        &c,
        "/v1/workflows/import",
        b"PK\x03\x04 not really a zip".to_vec(),
    )
    .await;
    assert_eq!((s, code(&err)), (400, "invalid_archive"), "{err}");
    let (s, err) = post_zip(&c, "/v1/workflows/import", with(b"{not json")).await;
    assert_eq!((s, code(&err)), (400, "invalid_archive"), "{err}");
    let missing = write_zip(&[
        (
            "flow_definition.json",
            files["flow_definition.json"].as_slice(),
        ),
        (
            "app_definition.json",
            files["app_definition.json"].as_slice(),
        ),
    ])
    .unwrap();
    let (s, err) = post_zip(&c, &format!("/v1/workflows/{target}/import"), missing).await;
    assert_eq!((s, code(&err)), (400, "invalid_archive"), "{err}");
    assert_eq!(err["error"]["details"]["missing"], "env_variables.json");
    let (s, err) = send(c.http.post(c.url("/v1/workflows/import")).json(&json!({}))).await;
    assert_eq!((s, code(&err)), (415, "unsupported_media_type"));
    let (s, err) = post_zip(
        &c,
        &format!("/v1/workflows/{target}/import?on_conflict=merge"),
        zip.clone(),
    )
    .await;
    assert_eq!((s, code(&err)), (400, "invalid_request"));
    let (s, err) = post_zip(&c, "/v1/workflows/nope/import", zip.clone()).await;
    assert_eq!((s, code(&err)), (404, "not_found"));
    // Nothing of the refused imports was applied.
    let (_, backups) = c.get(&format!("/v1/workflows/{target}/backups")).await;
    assert_eq!(backups["items"].as_array().unwrap().len(), 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_are_listed_valid_and_create_workflows_that_run() {
    let c = Cluster::start(1).await;
    let (s, list) = c.get("/v1/templates").await;
    assert_eq!(s, 200);
    let items = list["items"].as_array().unwrap();
    let ids: Vec<&str> = items.iter().map(|t| t["id"].as_str().unwrap()).collect();
    assert!(
        ids.contains(&"classify-and-route") && ids.contains(&"call-api-and-summarise"),
        "{list}"
    );
    for t in items {
        let id = t["id"].as_str().unwrap();
        assert!(t["name"].is_string() && t["description"].is_string(), "{t}");
        let env: Vec<&str> = t["required_env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert!(
            env.contains(&"LLM_BASE_URL") && env.contains(&"LLM_API_KEY"),
            "{t}"
        );
        let (s, full) = c.get(&format!("/v1/templates/{id}")).await;
        assert_eq!(s, 200);
        let (s, v) = c.post("/v1/workflows/validate", &full["definition"]).await;
        assert_eq!(s, 200, "template {id} does not validate: {v}");
        // Without a body: the template's own name.
        let (s, wf) = post_empty(&c, &format!("/v1/workflows/from-template/{id}")).await;
        assert_eq!(s, 201, "{wf}");
        let node_ids = |d: &Value| -> Vec<String> {
            d["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(wf["name"], full["definition"]["name"]);
        assert_eq!(node_ids(&wf["definition"]), node_ids(&full["definition"]));
        assert_eq!(wf["deployed"], false);
    }
    let (s, err) = c.get("/v1/templates/nope").await;
    assert_eq!((s, code(&err)), (404, "not_found"));
    let (s, err) = c.post("/v1/workflows/from-template/nope", &json!({})).await;
    assert_eq!((s, code(&err)), (404, "not_found"));
    let (s, err) = c
        .post(
            "/v1/workflows/from-template/classify-and-route",
            &json!({"nom": "x"}),
        )
        .await;
    assert_eq!((s, code(&err)), (400, "invalid_request"), "{err}");
    let (s, err) = c
        .post(
            "/v1/workflows/from-template/classify-and-route",
            &json!({"name": ""}),
        )
        .await;
    assert_eq!((s, code(&err)), (400, "invalid_definition"), "{err}");

    // Each template runs end to end against a mock model (and a local API).
    let mock = MockModel::start(MockModelConfig {
        api_key: Some("mock-key".into()),
        reply: Reply::Fixed(json!({"category": "billing", "reason": "an invoice"}).to_string()),
        ..Default::default()
    })
    .await
    .unwrap();
    let (s, wf) = c
        .post(
            "/v1/workflows/from-template/classify-and-route",
            &json!({"name": "triage"}),
        )
        .await;
    assert_eq!((s, wf["name"].as_str()), (201, Some("triage")));
    let id = wf["id"].as_str().unwrap();
    c.set_env(id, "LLM_BASE_URL", &mock.url(), false).await;
    c.set_env(id, "LLM_API_KEY", "mock-key", true).await;
    c.post(&format!("/v1/workflows/{id}/deploy"), &json!({}))
        .await;
    let (_, run) = c.run_sync(id, json!({"text": "I was charged twice"})).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        (
            run["output"]["category"].as_str(),
            run["output"]["queue"].as_str()
        ),
        (Some("billing"), Some("billing-team")),
        "{run}"
    );

    let api = TestApi::start().await;
    let (_, wf) = post_empty(&c, "/v1/workflows/from-template/call-api-and-summarise").await;
    let id = wf["id"].as_str().unwrap();
    c.set_env(id, "LLM_BASE_URL", &mock.url(), false).await;
    c.set_env(id, "LLM_API_KEY", "mock-key", true).await;
    c.post(&format!("/v1/workflows/{id}/deploy"), &json!({}))
        .await;
    let (_, run) = c
        .run_sync(id, json!({"url": format!("{}/echo", api.url)}))
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"]["status"], 200, "{run}");
    assert!(run["output"]["summary"].is_string(), "{run}");
    assert_eq!(api.seen("/echo").len(), 1);
    c.shutdown().await;
}
