//! Who may do what, through the real path (HTTP → coordinator → NATS →
//! worker): user tokens, API keys (scope, revocation, last use, rate limit),
//! sharing roles, and the audit log that records each action with its user.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn events(v: &Value) -> Vec<(String, String, String)> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_string(),
                e["user_name"].as_str().unwrap_or("").to_string(),
                e["workflow_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_token_are_401_and_open_routes_stay_open() {
    let c = Cluster::start(0).await;
    let anon = reqwest::Client::new();
    let r = anon.get(c.url("/v1/workflows")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "unauthenticated");
    assert_eq!(v["error"]["details"]["reason"], "missing");

    let (s, v) = c
        .as_token("weft_u_not-a-real-token")
        .get("/v1/workflows")
        .await;
    assert_eq!(
        (s, v["error"]["details"]["reason"].clone()),
        (401, json!("unknown")),
        "{v}"
    );

    // Probes and scrapes need no token; an unknown path is 404, not 401.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = anon.get(c.url(path)).send().await.unwrap();
        // (`/readyz` is 503 here: no worker yet. Not 401 either way.)
        assert!(
            [200, 503].contains(&r.status().as_u16()),
            "{path}: {}",
            r.status()
        );
    }
    let r = anon.get(c.url("/v1/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // The configured admin is an admin.
    let (s, me) = c.get("/v1/me").await;
    assert_eq!(s, 200);
    assert_eq!(me["user"]["name"], "admin");
    assert_eq!(me["user"]["admin"], true);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_run_only_their_workflow_and_revoked_keys_are_401() {
    let c = Cluster::start(1).await;
    let a = c.deploy(&four_node()).await;
    let b = c.deploy(&four_node()).await;
    let (s, key) = c
        .post(&format!("/v1/workflows/{a}/keys"), &json!({"name": "ci"}))
        .await;
    assert_eq!(s, 201, "{key}");
    let secret = key["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("weft_k_"));
    assert_eq!(key["prefix"], json!(&secret[..14]));

    // As a bearer token: runs A, through a worker.
    let as_key = c.as_token(&secret);
    let (s, run) = as_key
        .post(
            &format!("/v1/workflows/{a}/runs?mode=sync"),
            &json!({"input": {"n": 7}}),
        )
        .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["output"]["v"], 14);
    // And it may read that run back.
    let (s, _) = as_key
        .get(&format!("/v1/runs/{}", run["id"].as_str().unwrap()))
        .await;
    assert_eq!(s, 200);

    // As `x-api-key`.
    let r = reqwest::Client::new()
        .post(c.url(&format!("/v1/workflows/{a}/runs?mode=sync")))
        .header("x-api-key", &secret)
        .json(&json!({"input": {"n": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Not workflow B: 403. Nor the management API.
    let (s, v) = as_key
        .post(
            &format!("/v1/workflows/{b}/runs?mode=sync"),
            &json!({"input": {"n": 7}}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (403, json!("forbidden")),
        "{v}"
    );
    let b_run = c.submit(&b, json!({"n": 1})).await;
    let (s, _) = as_key.get(&format!("/v1/runs/{b_run}")).await;
    assert_eq!(s, 404, "another workflow's run is not revealed to a key");
    for path in ["/v1/workflows", &format!("/v1/workflows/{a}"), "/v1/audit"] {
        let (s, v) = as_key.get(path).await;
        assert_eq!(s, 403, "{path}: {v}");
    }

    // Listed with name, prefix, created and last used; never the secret.
    let (s, list) = c.get(&format!("/v1/workflows/{a}/keys")).await;
    assert_eq!(s, 200);
    let listed = &list["items"][0];
    assert_eq!(listed["name"], "ci");
    assert_eq!(listed["prefix"], key["prefix"]);
    assert!(listed["created_at_ms"].as_u64().unwrap() > 0);
    assert!(listed.get("secret").is_none());
    assert!(!list.to_string().contains(&secret));
    let start = std::time::Instant::now();
    loop {
        let (_, list) = c.get(&format!("/v1/workflows/{a}/keys")).await;
        if list["items"][0]["last_used_ms"].as_u64().is_some() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "last use never recorded: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Revoked: 401 on the very next request, and it stays listed as revoked.
    let key_id = key["id"].as_str().unwrap();
    let (s, revoked) = c
        .post(
            &format!("/v1/workflows/{a}/keys/{key_id}/revoke"),
            &json!({}),
        )
        .await;
    assert_eq!(s, 200, "{revoked}");
    assert!(revoked["revoked_at_ms"].as_u64().is_some());
    let (s, v) = as_key
        .post(
            &format!("/v1/workflows/{a}/runs?mode=sync"),
            &json!({"input": {"n": 7}}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["details"]["reason"].clone()),
        (401, json!("revoked")),
        "{v}"
    );

    // A key of a deleted workflow stops working too.
    let (_, key_b) = c
        .post(&format!("/v1/workflows/{b}/keys"), &json!({"name": "b"}))
        .await;
    let as_b = c.as_token(key_b["secret"].as_str().unwrap());
    let (s, _) = as_b
        .post(
            &format!("/v1/workflows/{b}/runs?mode=async"),
            &json!({"input": {"n": 1}}),
        )
        .await;
    assert_eq!(s, 202);
    c.post(&format!("/v1/workflows/{b}/undeploy"), &json!({}))
        .await;
    // Deleted once its runs have ended (409 while any is live).
    let start = std::time::Instant::now();
    loop {
        let (s, v) = c
            .as_token(ADMIN_TOKEN)
            .delete(&format!("/v1/workflows/{b}"))
            .await;
        if s == 204 {
            break;
        }
        assert_eq!(
            (s, v["error"]["code"].clone()),
            (409, json!("conflict")),
            "{v}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "runs never ended: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, _) = as_b
        .post(
            &format!("/v1/workflows/{b}/runs?mode=async"),
            &json!({"input": {"n": 1}}),
        )
        .await;
    assert_eq!(s, 401);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_over_its_rate_limit_gets_429_with_retry_after() {
    let c = Cluster::start_with(1, |cfg| {
        cfg.api_key_rate_limit_per_s = 1;
        cfg.api_key_rate_limit_burst = 3;
    })
    .await;
    let wf = c.deploy(&four_node()).await;
    let (_, key) = c
        .post(&format!("/v1/workflows/{wf}/keys"), &json!({"name": "hot"}))
        .await;
    let as_key = c.as_token(key["secret"].as_str().unwrap());
    let path = format!("/v1/workflows/{wf}/runs?mode=async");
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..5 {
        let r = as_key
            .http
            .post(c.url(&path))
            .json(&json!({"input": {"n": 1}}))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["error"]["code"], "rate_limited");
        }
    }
    // The burst of 3 passes; the rest wait about a second.
    assert_eq!(&statuses[..3], &[202, 202, 202], "{statuses:?}");
    assert!(statuses[3..].contains(&429), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));
    // The limit is per key: the admin's token is not metered.
    for _ in 0..5 {
        let (s, _) = c.post(&path, &json!({"input": {"n": 1}})).await;
        assert_eq!(s, 202);
    }
    // And the bucket refills.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let (s, _) = as_key.post(&path, &json!({"input": {"n": 1}})).await;
    assert_eq!(s, 202);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_what_each_user_sees_and_does_and_the_audit_log_names_them() {
    let c = Cluster::start(1).await;
    let (alice_id, alice) = c.create_user("alice").await;
    let (bob_id, bob) = c.create_user("bob").await;
    let (carol_id, carol) = c.create_user("carol").await;

    // Alice creates a workflow: she owns it; nobody else sees it.
    let (s, wf) = alice.post("/v1/workflows", &four_node()).await;
    assert_eq!(s, 201, "{wf}");
    let w = wf["id"].as_str().unwrap().to_string();
    let (s, _) = bob.get(&format!("/v1/workflows/{w}")).await;
    assert_eq!(s, 404, "not shared: not revealed");
    let (_, list) = bob.get("/v1/workflows").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    // Only admins create users.
    let (s, _) = alice.post("/v1/users", &json!({"name": "mallory"})).await;
    assert_eq!(s, 403);

    // Shared: bob views, carol edits.
    let (s, v) = alice
        .put(
            &format!("/v1/workflows/{w}/shares/{bob_id}"),
            &json!({"role": "viewer"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = alice
        .put(
            &format!("/v1/workflows/{w}/shares/{carol_id}"),
            &json!({"role": "editor"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = alice
        .put(
            &format!("/v1/workflows/{w}/shares/{bob_id}"),
            &json!({"role": "boss"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (_, list) = bob.get("/v1/workflows").await;
    assert_eq!(list["items"][0]["id"], json!(w));
    let (_, shares) = bob.get(&format!("/v1/workflows/{w}/shares")).await;
    assert_eq!(shares["items"].as_array().unwrap().len(), 3);

    // The viewer reads, but may not edit, deploy, export or share.
    let (s, _) = bob.get(&format!("/v1/workflows/{w}")).await;
    assert_eq!(s, 200);
    for (method, path) in [
        (reqwest::Method::PUT, format!("/v1/workflows/{w}")),
        (reqwest::Method::POST, format!("/v1/workflows/{w}/deploy")),
        (
            reqwest::Method::GET,
            format!("/v1/workflows/{w}/export?version=draft"),
        ),
        (
            reqwest::Method::PUT,
            format!("/v1/workflows/{w}/shares/{bob_id}"),
        ),
        (reqwest::Method::POST, format!("/v1/workflows/{w}/keys")),
        (reqwest::Method::DELETE, format!("/v1/workflows/{w}")),
    ] {
        let body = match path.ends_with(&bob_id) {
            true => json!({"role": "owner"}),
            false if method == reqwest::Method::PUT => four_node(),
            false => json!({"name": "x"}),
        };
        let (s, v) = bob.send(method.clone(), &path, Some(&body)).await;
        assert_eq!(s, 403, "viewer {method} {path}: {v}");
        assert_eq!(v["error"]["code"], "forbidden");
    }

    // The editor deploys; the viewer runs it.
    let (s, v) = carol
        .post(&format!("/v1/workflows/{w}/deploy"), &json!({}))
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, run) = bob
        .post(
            &format!("/v1/workflows/{w}/runs?mode=sync"),
            &json!({"input": {"n": 6}}),
        )
        .await;
    assert_eq!((s, run["output"]["v"].clone()), (200, json!(12)), "{run}");
    // The editor may not delete it while it is deployed: a clear 409.
    let (s, v) = carol.delete(&format!("/v1/workflows/{w}")).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["code"], "workflow_deployed");
    assert!(v["error"]["message"].as_str().unwrap().contains("undeploy"));
    // Nor share it (owners share).
    let (s, _) = carol
        .put(
            &format!("/v1/workflows/{w}/shares/{bob_id}"),
            &json!({"role": "editor"}),
        )
        .await;
    assert_eq!(s, 403);
    // The last owner cannot be removed or demoted.
    let (s, v) = alice
        .delete(&format!("/v1/workflows/{w}/shares/{alice_id}"))
        .await;
    assert_eq!(
        (s, v["error"]["code"].clone()),
        (409, json!("conflict")),
        "{v}"
    );
    // Runs: bob sees the run of the shared workflow; a stranger sees nothing.
    let (_, runs) = bob.get("/v1/runs").await;
    assert_eq!(runs["items"].as_array().unwrap().len(), 1);
    let (_, dave) = c.create_user("dave").await;
    let (_, runs) = dave.get("/v1/runs").await;
    assert_eq!(runs["items"].as_array().unwrap().len(), 0);
    let (s, _) = dave
        .get(&format!("/v1/runs/{}", run["id"].as_str().unwrap()))
        .await;
    assert_eq!(s, 404);
    // Runs sort oldest or newest first.
    let (s, v) = bob.get("/v1/runs?sort=sideways").await;
    assert_eq!(s, 400, "{v}");

    // Variables: the change is audited, the value is not.
    let (s, _) = carol
        .post(
            &format!("/v1/workflows/{w}/env"),
            &json!({"name": "TOKEN", "value": "hunter2-very-secret", "secure": true}),
        )
        .await;
    assert_eq!(s, 201);
    let (_, key) = carol
        .post(&format!("/v1/workflows/{w}/keys"), &json!({"name": "k"}))
        .await;
    let key_id = key["id"].as_str().unwrap();
    carol
        .post(
            &format!("/v1/workflows/{w}/keys/{key_id}/revoke"),
            &json!({}),
        )
        .await;
    // The editor exports and imports the export back as the new draft.
    let zip = carol
        .http
        .get(c.url(&format!("/v1/workflows/{w}/export?version=draft")))
        .send()
        .await
        .unwrap();
    assert_eq!(zip.status(), 200);
    let zip = zip.bytes().await.unwrap();
    let r = carol
        .http
        .post(c.url(&format!("/v1/workflows/{w}/import?on_conflict=keep")))
        .header("content-type", "application/zip")
        .body(zip)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    carol
        .post(&format!("/v1/workflows/{w}/undeploy"), &json!({}))
        .await;
    let (s, _) = alice
        .delete(&format!("/v1/workflows/{w}/shares/{bob_id}"))
        .await;
    assert_eq!(s, 204);

    // The audit log: each action with the user who did it.
    let (s, log) = c.get(&format!("/v1/audit?workflow_id={w}&limit=100")).await;
    assert_eq!(s, 200, "{log}");
    let got = events(&log);
    for (event, user) in [
        ("workflow.created", "alice"),
        ("share.granted", "alice"),
        ("workflow.deployed", "carol"),
        ("env.created", "carol"),
        ("key.created", "carol"),
        ("key.revoked", "carol"),
        ("workflow.exported", "carol"),
        ("workflow.imported", "carol"),
        ("workflow.undeployed", "carol"),
        ("share.revoked", "alice"),
    ] {
        assert!(
            got.iter().any(|(e, u, _)| e == event && u == user),
            "{event} by {user} missing from {got:?}"
        );
    }
    assert!(
        !log.to_string().contains("hunter2"),
        "a value leaked into the audit log"
    );
    // Filters: by user, category, event, time.
    let (_, by_carol) = c
        .get(&format!("/v1/audit?user_id={carol_id}&limit=100"))
        .await;
    assert!(events(&by_carol).iter().all(|(_, u, _)| u == "carol"));
    assert!(events(&by_carol).len() >= 5);
    let (_, keys) = c.get("/v1/audit?category=key").await;
    assert!(events(&keys).iter().all(|(e, _, _)| e.starts_with("key.")));
    assert_eq!(events(&keys).len(), 2);
    let (_, deploys) = c.get("/v1/audit?event=workflow.deployed").await;
    assert_eq!(events(&deploys).len(), 1);
    let (_, future) = c.get("/v1/audit?from_ms=99999999999999").await;
    assert_eq!(events(&future).len(), 0);
    let (_, users) = c.get("/v1/audit?event=user.created").await;
    assert_eq!(events(&users).len(), 4);
    assert!(events(&users).iter().all(|(_, u, _)| u == "admin"));
    // Token use is recorded (throttled per token).
    let (_, used) = c
        .get(&format!("/v1/audit?event=auth.token_used&user_id={bob_id}"))
        .await;
    assert!(!events(&used).is_empty(), "{used}");
    // A non-admin reads only their own events.
    let (s, _) = bob.get(&format!("/v1/audit?user_id={alice_id}")).await;
    assert_eq!(s, 403);
    let (s, own) = bob.get("/v1/audit").await;
    assert_eq!(s, 200);
    assert!(events(&own).iter().all(|(_, u, _)| u == "bob"));
    // Paging: the cursor continues where the page ended.
    let (_, p1) = c.get("/v1/audit?limit=2").await;
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = c.get(&format!("/v1/audit?limit=2&cursor={cursor}")).await;
    assert!(p2["items"][0]["seq"].as_i64() < p1["items"][1]["seq"].as_i64());
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_manage_their_own_tokens() {
    let c = Cluster::start(0).await;
    let (alice_id, alice) = c.create_user("alice").await;
    let (bob_id, bob) = c.create_user("bob").await;
    let (s, t) = alice
        .post(
            &format!("/v1/users/{alice_id}/tokens"),
            &json!({"name": "laptop"}),
        )
        .await;
    assert_eq!(s, 201, "{t}");
    let laptop = c.as_token(t["secret"].as_str().unwrap());
    let (s, me) = laptop.get("/v1/me").await;
    assert_eq!((s, me["user"]["name"].clone()), (200, json!("alice")));
    // Not someone else's.
    let (s, _) = bob.get(&format!("/v1/users/{alice_id}/tokens")).await;
    assert_eq!(s, 403);
    let (s, _) = bob
        .post(
            &format!("/v1/users/{alice_id}/tokens"),
            &json!({"name": "x"}),
        )
        .await;
    assert_eq!(s, 403);
    let (s, list) = alice.get(&format!("/v1/users/{alice_id}/tokens")).await;
    assert_eq!(s, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 2);
    let tid = t["id"].as_str().unwrap();
    let (s, _) = alice
        .post(
            &format!("/v1/users/{alice_id}/tokens/{tid}/revoke"),
            &json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = laptop.get("/v1/me").await;
    assert_eq!(s, 401);
    // A duplicate user name is a conflict; a blank one a 400.
    let (s, _) = c.post("/v1/users", &json!({"name": "bob"})).await;
    assert_eq!(s, 409);
    let (s, _) = c.post("/v1/users", &json!({"name": "  "})).await;
    assert_eq!(s, 400);
    let _ = bob_id;
    c.shutdown().await;
}
