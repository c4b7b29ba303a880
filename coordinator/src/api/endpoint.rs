//! A workflow's endpoint configuration: `GET/PUT /v1/workflows/{id}/endpoint`
//! and `POST /v1/workflows/{id}/endpoint/rotate-secret`.
//!
//! What is edited is the draft's configuration; deploy copies it onto the
//! new version, and runs use the deployed version's (see
//! [`crate::endpoint`]). The push access token is sealed at rest and never
//! returned (`access_token_set`); the signing secret is generated the first
//! time push is configured and returned once, in that response, or by a
//! rotation.

use super::auth::AuthUser;
use super::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use super::St;
use crate::access::Role;
use crate::endpoint::{
    check_mode, check_push_url, check_settings, check_token, new_signing_secret, Endpoint,
    EndpointSettings, FieldError, DEFAULT_TIMEOUT_MS,
};
use axum::Json;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use weft_shared::error::ErrorCode;

/// A field that fails validation, as an error of `code`.
pub(super) fn field_error(code: ErrorCode, e: FieldError) -> ApiError {
    ApiError::new(code, e.message).details(e.details)
}

fn invalid(e: FieldError) -> ApiError {
    field_error(ErrorCode::InvalidRequest, e)
}

/// Tells a field given as `null` (`Some(None)`) from one left out (`None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// The body of `PUT …/endpoint`: the whole configuration. A field left out
/// takes its default, except `push.access_token`, which keeps the stored
/// token when left out.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    /// `both` (default), `sync` or `async`.
    #[schema(pattern = "^(both|sync|async)$")]
    mode: Option<String>,
    /// 60000–300000; default 180000.
    #[schema(minimum = 60000, maximum = 300000)]
    sync_timeout_ms: Option<u64>,
    /// 60000–600000, or `null` for none; default 180000.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>, minimum = 60000, maximum = 600000)]
    async_timeout_ms: Option<Option<u64>>,
    /// The async-push target; `null` or left out: no push.
    push: Option<PushBody>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushBody {
    url: String,
    /// Sent as `Authorization: Bearer <token>`. Required the first time.
    access_token: Option<String>,
}

fn seal(st: &St, plain: &str) -> Result<String, ApiError> {
    st.crypto.encrypt(plain).map_err(|e| {
        ApiError::new(
            ErrorCode::EncryptionUnavailable,
            format!("the push access token and signing secret are stored encrypted: {e}"),
        )
    })
}

/// One configuration as the API shows it: never the token.
fn settings_view(e: &Endpoint) -> Value {
    let s = &e.settings;
    json!({
        "mode": s.mode.as_str(),
        "sync_timeout_ms": s.sync_timeout_ms,
        "async_timeout_ms": s.async_timeout_ms,
        "push": s.push_url.as_ref().map(|url| json!({
            "url": url,
            "access_token_set": e.push_token.is_some(),
        })),
    })
}

/// The draft's configuration at the top, and the deployed version's (what
/// runs use now) under `deployed`.
async fn view(st: &St, id: &str) -> Result<Value, ApiError> {
    let wf = st
        .store
        .get_workflow(id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    let (draft, secret_set) = st
        .store
        .get_endpoint(id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    let deployed = match wf.deployed_version {
        Some(v) => st.store.version_endpoint(id, v).await?.map(|e| {
            let mut d = settings_view(&e);
            d["version"] = json!(v);
            d
        }),
        None => None,
    };
    let mut out = json!({
        "workflow_id": id,
        // The endpoint callers use; deploys never change it.
        "run_url": format!("/v1/workflows/{id}/runs"),
    });
    if let (Some(o), Value::Object(s)) = (out.as_object_mut(), settings_view(&draft)) {
        o.extend(s);
        o.insert("signing_secret_set".into(), json!(secret_set));
        o.insert("deployed".into(), deployed.unwrap_or(Value::Null));
    }
    Ok(out)
}

/// `GET /v1/workflows/{id}/endpoint`.
#[utoipa::path(
    get,
    path = "/v1/workflows/{id}/endpoint",
    operation_id = "get_endpoint",
    tag = "workflows",
    summary = "The endpoint configuration: the draft's, and the deployed version's (editors)",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "`mode`, `sync_timeout_ms`, `async_timeout_ms`, `push` (`url`, `access_token_set`), `signing_secret_set`, `run_url`, and `deployed` (the same for the deployed version, with its `version`)", body = Object),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
pub async fn get(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    // Editors: push URLs often carry a secret in their path or query.
    st.role(&who, &id, Role::Editor).await?;
    Ok(Json(view(&st, &id).await?))
}

/// `PUT /v1/workflows/{id}/endpoint`: replaces the draft's configuration;
/// it takes effect on the next deploy. The first time push is configured,
/// the answer carries the `signing_secret`, once.
#[utoipa::path(
    put,
    path = "/v1/workflows/{id}/endpoint",
    operation_id = "put_endpoint",
    tag = "workflows",
    summary = "Set the draft's endpoint configuration (editors); it takes effect on deploy",
    description = "The first time push is configured, the answer carries `signing_secret`, once.",
    params(("id" = String, Path, description = "Workflow id")),
    request_body(content = PutBody),
    responses(
        (status = 200, description = "The configuration, as `GET` shows it", body = Object),
        (status = 400, description = "`invalid_request`: a value out of range (`details`: `field`, `value`, `min`, `max`), or `invalid_json`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`encryption_unavailable`: no encryption key for the push token", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    )
)]
pub async fn put(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PutBody>,
) -> Result<Json<Value>, ApiError> {
    st.role(&who, &id, Role::Editor).await?;
    let (current, secret_set) = st
        .store
        .get_endpoint(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    let mode = match body.mode.as_deref() {
        Some(m) => check_mode(m).map_err(invalid)?,
        None => Default::default(),
    };
    let settings = EndpointSettings {
        mode,
        sync_timeout_ms: body.sync_timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
        async_timeout_ms: body.async_timeout_ms.unwrap_or(Some(DEFAULT_TIMEOUT_MS)),
        push_url: None,
    };
    check_settings(&settings, st.config.endpoint_min_timeout_ms).map_err(invalid)?;
    let (push_url, push_token) = match body.push {
        None => (None, None),
        Some(p) => {
            check_push_url(&p.url, st.config.push_allow_private_targets).map_err(invalid)?;
            // The stored token may only keep going where it went before: an
            // editor who never saw it must not redirect it to another host.
            let same_origin = current.settings.push_url.as_deref().is_some_and(|old| {
                match (reqwest::Url::parse(old), reqwest::Url::parse(&p.url)) {
                    (Ok(a), Ok(b)) => a.origin() == b.origin(),
                    _ => false,
                }
            });
            let token = match p.access_token {
                Some(t) => {
                    check_token(&t).map_err(invalid)?;
                    Some(seal(&st, &t)?)
                }
                // Left out: the stored one stays, for the same origin.
                None if same_origin => current.push_token.clone(),
                None => None,
            };
            let Some(token) = token else {
                return Err(invalid(FieldError {
                    field: "push.access_token",
                    message: "push.access_token is required when push is first configured or its URL moves to another origin".into(),
                    details: json!({"field": "push.access_token"}),
                }));
            };
            (Some(p.url), Some(token))
        }
    };
    let new_secret = (push_url.is_some() && !secret_set).then(new_signing_secret);
    let sealed_secret = new_secret.as_deref().map(|s| seal(&st, s)).transpose()?;
    let endpoint = Endpoint {
        settings: EndpointSettings {
            push_url,
            ..settings
        },
        push_token,
    };
    let secret_stored = st
        .store
        .set_endpoint(&id, &endpoint, sealed_secret.as_deref())
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    // Another request configured push first: its secret stands, not ours.
    let new_secret = new_secret.filter(|_| secret_stored);
    tracing::info!(workflow_id = %id, mode = endpoint.settings.mode.as_str(), push = endpoint.push(), "endpoint configured; takes effect on deploy");
    st.audit(
        &who.principal,
        "workflow",
        "endpoint.updated",
        Some(&id),
        format!(
            "set the endpoint of the draft: mode {}, sync timeout {} ms, async timeout {}, push {}",
            endpoint.settings.mode.as_str(),
            endpoint.settings.sync_timeout_ms,
            endpoint
                .settings
                .async_timeout_ms
                .map_or("none".to_string(), |t| format!("{t} ms")),
            if endpoint.push() { "on" } else { "off" }
        ),
    )
    .await;
    let mut v = view(&st, &id).await?;
    if let Some(s) = new_secret {
        // Shown this once; only a rotation shows another.
        v["signing_secret"] = json!(s);
    }
    Ok(Json(v))
}

/// `POST /v1/workflows/{id}/endpoint/rotate-secret`: a new signing secret,
/// shown once. Deliveries from now on (retries included) are signed with
/// it; the old one stops at once.
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/endpoint/rotate-secret",
    operation_id = "rotate_signing_secret",
    tag = "workflows",
    summary = "A new push signing secret, shown once; the old one stops at once (editors)",
    params(("id" = String, Path, description = "Workflow id")),
    responses(
        (status = 200, description = "`workflow_id` and the new `signing_secret`", body = Object),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 409, description = "`conflict`: push was never configured", body = ErrorBody),
    )
)]
pub async fn rotate_secret(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    st.role(&who, &id, Role::Editor).await?;
    let (_, secret_set) = st
        .store
        .get_endpoint(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("workflow"))?;
    let refuse = || {
        ApiError::new(
            ErrorCode::Conflict,
            format!("this workflow has no signing secret: configure push first (PUT /v1/workflows/{id}/endpoint)"),
        )
    };
    if !secret_set {
        return Err(refuse());
    }
    let secret = new_signing_secret();
    if !st
        .store
        .rotate_signing_secret(&id, &seal(&st, &secret)?)
        .await?
    {
        return Err(refuse());
    }
    tracing::info!(workflow_id = %id, "push signing secret rotated");
    st.audit(
        &who.principal,
        "workflow",
        "endpoint.secret_rotated",
        Some(&id),
        "rotated the push signing secret".into(),
    )
    .await;
    Ok(Json(json!({"workflow_id": id, "signing_secret": secret})))
}
