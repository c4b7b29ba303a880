//! Starting, reading and cancelling runs.

use super::auth::{AuthUser, Caller};
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use super::{page_limit, Page, St};
use crate::access::Role;
use crate::dispatch::{Cmd, Submission};
use crate::metrics as m;
use crate::model::RunRecord;
use crate::store::{Delivery, NewDelivery, RunFilter};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;
use uuid::Uuid;
use weft_shared::error::ErrorCode;
use weft_shared::model::RunStatus;
use weft_shared::time::now_ms;

/// How a run is requested: `sync` waits for the result, `async` answers 202
/// with a status URL.
#[derive(Clone, Copy, Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    Sync,
    Async,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StartQuery {
    /// `sync` (default): wait for the result. `async`: 202 and a status URL.
    mode: Option<RunMode>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// The run's input; checked against the input node's schema. Default null.
    #[serde(default)]
    input: Value,
}

/// An accepted async run (or a replayed one still in flight).
#[derive(Serialize, utoipa::ToSchema)]
pub struct RunAccepted {
    pub run_id: Uuid,
    pub status: RunStatus,
    /// `GET` it for the run record.
    pub status_url: String,
}

fn reject(reason: &'static str, err: ApiError) -> ApiError {
    metrics::counter!(m::RUNS_REJECTED, "reason" => reason).increment(1);
    err
}

/// Starts a run: users with any role on the workflow, or its own API key.
#[utoipa::path(
    post,
    path = "/v1/workflows/{id}/runs",
    operation_id = "start_run",
    tag = "runs",
    summary = "Run the deployed version",
    description = "Sync (default): waits for the run and answers 200 with the run record, \
        whatever the run's outcome. Async: 202 once the run is durable, with its status URL. \
        With an `Idempotency-Key`, a repeat answers with the run the key first started.",
    params(
        ("id" = String, Path, description = "Workflow id"),
        StartQuery,
        // HTTP drops spaces and tabs around a header value; the key is what
        // is left: 1 to 255 characters, visible ASCII, spaces and tabs.
        ("Idempotency-Key" = Option<String>, Header, description = "Makes the request safe to repeat (per workflow, within `idempotency_retention_ms`): 1 to 255 characters of ASCII text (visible characters, spaces, tabs)",
            pattern = r"^[ \t]*[!-~](?:[ \t!-~]{0,253}[!-~])?[ \t]*$", nullable = false),
        ("traceparent" = Option<String>, Header, description = "W3C trace context: the run continues the caller's trace (ignored when malformed)", nullable = false),
    ),
    request_body(content = StartBody),
    responses(
        (status = 200, description = "Sync: the run, ended (any status)", body = RunRecord,
            headers(("idempotent-replayed" = String, description = "`true` on a repeat of an Idempotency-Key"))),
        (status = 202, description = "Async: accepted and durable", body = RunAccepted,
            headers(
                ("location" = String, description = "The status URL"),
                ("idempotent-replayed" = String, description = "`true` on a repeat of an Idempotency-Key"),
            )),
        (status = 400, description = "`invalid_input` (the fields in `details.fields`), `invalid_json` or `invalid_request`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such workflow", body = ErrorBody),
        (status = 409, description = "`not_deployed`, `workflow_inactive`, `idempotency_key_reused` or `idempotency_in_progress`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body over `max_body_bytes` or the input over `max_input_bytes`", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
        (status = 429, description = "`queue_full` or `concurrency_limit`", body = ErrorBody,
            headers(("retry-after" = u64, description = "Seconds"))),
        (status = 503, description = "`shutting_down`, or `no_workers` (sync)", body = ErrorBody,
            headers(("retry-after" = u64, description = "Seconds"))),
        (status = 504, description = "`sync_timeout`: still running; poll `details.status_url`", body = ErrorBody),
    )
)]
pub async fn start(
    st: St,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<StartQuery>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<StartBody>,
) -> Result<Response, ApiError> {
    let sync = matches!(q.mode, None | Some(RunMode::Sync));
    if st.is_shutting_down() {
        return Err(reject(
            "shutting_down",
            ApiError::new(
                ErrorCode::ShuttingDown,
                "the coordinator is shutting down; retry against another",
            )
            .retry_after(1),
        ));
    }
    st.may_run(&caller, &id).await?;
    let deployed = st.deployed(&id).await?;
    let endpoint = deployed.endpoint;
    if !endpoint.mode.allows(sync) {
        let mode = if sync { "sync" } else { "async" };
        return Err(reject(
            "mode_disabled",
            ApiError::new(
                ErrorCode::ModeDisabled,
                format!(
                    "this workflow's endpoint does not answer mode={mode}; it answers mode={} (set at PUT /v1/workflows/{id}/endpoint, effective on deploy)",
                    endpoint.mode.enabled().join(" and mode=")
                ),
            )
            .details(json!({"workflow_id": id, "mode": mode, "enabled": endpoint.mode.enabled()})),
        ));
    }
    let input_bytes = weft_shared::model::json_len(&body.input);
    if input_bytes > st.config.max_input_bytes {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "input is {input_bytes} bytes; the limit is {} (max_input_bytes)",
                st.config.max_input_bytes
            ),
        ));
    }
    if let Err(fields) = deployed.plan.check_input(&body.input) {
        let names: Vec<&str> = fields
            .iter()
            .map(|f| {
                if f.field.is_empty() {
                    "(input)"
                } else {
                    f.field.as_str()
                }
            })
            .collect();
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!(
                "input does not match the workflow's schema at {}",
                names.join(", ")
            ),
        )
        .details(json!({"fields": fields})));
    }
    let stats = &st.dispatch.stats;
    if stats.pending.load(Ordering::Relaxed) >= st.config.queue_capacity {
        return Err(reject(
            "queue_full",
            ApiError::new(
                ErrorCode::QueueFull,
                "all workers are busy and the queue is full; retry later",
            )
            .retry_after(1),
        ));
    }
    if sync && stats.live_workers.load(Ordering::Relaxed) == 0 {
        return Err(reject(
            "no_workers",
            ApiError::new(
                ErrorCode::NoWorkers,
                "no worker is available to run this workflow; retry later",
            )
            .retry_after(1),
        ));
    }

    let limit = st.config.max_concurrent_runs_per_workflow;
    // Counted from here; every return before the hand-off uncounts it.
    let Some(claim) = stats.claim_run(&id, limit) else {
        return Err(reject(
            "concurrency_limit",
            ApiError::new(
                ErrorCode::ConcurrencyLimit,
                format!("this workflow already has {limit} runs in flight (max_concurrent_runs_per_workflow); retry later"),
            )
            .retry_after(1),
        ));
    };

    let idempotency_key = headers
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_string))
        .transpose()
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                "Idempotency-Key must be visible ASCII",
            )
        })?;
    if idempotency_key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > 255)
    {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "Idempotency-Key must be 1 to 255 characters",
        ));
    }

    let now = now_ms();
    // An async run's deadline is also capped by the endpoint's async timeout.
    let deadline_ms = now + endpoint.run_timeout_ms(deployed.definition.timeout_ms, sync);
    // How long a sync caller waits: the endpoint's sync timeout, under the
    // coordinator's ceiling.
    let sync_wait_ms = endpoint.sync_timeout_ms.min(st.config.sync_timeout_ms);
    let record = RunRecord::new(
        Uuid::now_v7(),
        id.clone(),
        deployed.version,
        if sync { "sync" } else { "async" },
        body.input,
        deadline_ms,
    );
    let run_id = record.id;
    if let Some(key) = &idempotency_key {
        let hash = request_hash(sync, &record.input);
        if let Some((first, first_hash)) = st
            .store
            .claim_idempotency(&id, key, run_id, &hash, st.config.idempotency_retention_ms)
            .await?
        {
            if first_hash != hash {
                return Err(ApiError::new(
                    ErrorCode::IdempotencyKeyReused,
                    "this Idempotency-Key was used for a different request (input or mode) to this workflow",
                )
                .details(json!({"run_id": first})));
            }
            match replay(&st, first, sync, deadline_ms, sync_wait_ms).await? {
                Some(resp) => return Ok(resp),
                // The first request never recorded its run (the coordinator
                // stopped in between): the key is free again; take it.
                None => {
                    st.store.release_idempotency(&id, key).await?;
                    if st
                        .store
                        .claim_idempotency(
                            &id,
                            key,
                            run_id,
                            &hash,
                            st.config.idempotency_retention_ms,
                        )
                        .await?
                        .is_some()
                    {
                        return Err(ApiError::new(
                            ErrorCode::IdempotencyInProgress,
                            "another request with this Idempotency-Key is being accepted; retry",
                        )
                        .retry_after(1));
                    }
                }
            }
        }
    }
    let env = std::sync::Arc::new(st.run_env(&id, &deployed.env_refs).await?);
    // The caller's trace continues through the run; a run without one starts its own.
    let trace = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(weft_shared::trace::TraceParent::parse)
        .unwrap_or_else(weft_shared::trace::TraceParent::new_root);
    let traceparent = Some(trace.to_string());
    let mode = if sync { "sync" } else { "async" };
    if !weft_shared::telemetry::exporting_spans() {
        tracing::debug!(run_id = %run_id, workflow_id = %id, trace_id = %trace.trace_id_hex(), mode, "run accepted");
    } else {
        // Exported: the acceptance joins the caller's trace. Not made
        // otherwise — a span costs its fields' formatting even when no event
        // inside it is logged.
        let span = tracing::info_span!("accept_run", run_id = %run_id, workflow_id = %id, trace_id = %trace.trace_id_hex());
        weft_shared::telemetry::set_remote_parent(&span, &trace);
        span.in_scope(|| tracing::debug!(mode, "run accepted"));
    }
    let status_url = format!("/v1/runs/{run_id}");

    if !sync {
        // Durable before the 202, with its push delivery if any: a crash
        // after this loses nothing.
        let delivery = endpoint.push.then(|| NewDelivery {
            run_id,
            delivery_id: Uuid::now_v7(),
            workflow_id: id.clone(),
            version: deployed.version,
        });
        let push = delivery.is_some();
        st.store.save_run_with_delivery(&record, delivery).await?;
        st.dispatch.submit(
            Submission {
                record: record.clone(),
                definition: deployed.definition.clone(),
                wire: deployed.wire.clone(),
                waiter: None,
                traceparent,
                env,
                push,
            },
            claim,
        );
        let body = RunAccepted {
            run_id,
            status: RunStatus::Queued,
            status_url: status_url.clone(),
        };
        return Ok((StatusCode::ACCEPTED, [("location", status_url)], Json(body)).into_response());
    }

    st.store.enqueue_run(&record);
    let (tx, rx) = tokio::sync::oneshot::channel();
    st.dispatch.submit(
        Submission {
            record,
            definition: deployed.definition.clone(),
            wire: deployed.wire.clone(),
            waiter: Some(tx),
            traceparent,
            env,
            push: false,
        },
        claim,
    );
    // The run ends by its deadline (the coordinator enforces it after a
    // grace period), so waiting past deadline + grace only guards against a
    // bug; the sync timeout caps the wait either way.
    let until_deadline = Duration::from_millis(
        deadline_ms.saturating_sub(now_ms()) + st.config.deadline_grace_ms + 1_000,
    );
    let wait = until_deadline.min(Duration::from_millis(sync_wait_ms));
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(rec)) => Ok(Json(rec).into_response()),
        Ok(Err(_)) => Err(ApiError::internal("run waiter dropped")),
        Err(_) => Err(ApiError::new(
            ErrorCode::SyncTimeout,
            format!("the run did not finish within the sync timeout ({sync_wait_ms} ms); poll its status URL"),
        )
        .details(json!({"run_id": run_id, "status_url": status_url, "sync_timeout_ms": sync_wait_ms}))),
    }
}

/// What makes two requests with the same Idempotency-Key the same request.
fn request_hash(sync: bool, input: &Value) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(if sync { b"sync:" as &[u8] } else { b"async:" });
    // Key order is not meaning: `{"a":1,"b":2}` and `{"b":2,"a":1}` are one
    // request (and hash as they did before objects kept their order).
    h.update(weft_shared::model::canonical_json(input).as_bytes());
    hex::encode(h.finalize())
}

/// Answers a repeated request with the run the key first started; `None`
/// if that run was never recorded.
async fn replay(
    st: &St,
    run_id: Uuid,
    sync: bool,
    deadline_ms: u64,
    sync_wait_ms: u64,
) -> Result<Option<Response>, ApiError> {
    let status_url = format!("/v1/runs/{run_id}");
    let replayed = [("idempotent-replayed", "true")];
    if sync {
        // Still running: wait for it like the first caller does.
        let (tx, rx) = tokio::sync::oneshot::channel();
        st.dispatch.send(Cmd::Watch(run_id, tx));
        let wait = Duration::from_millis(
            (deadline_ms.saturating_sub(now_ms()) + st.config.deadline_grace_ms + 1_000)
                .min(sync_wait_ms),
        );
        if let Ok(Ok(rec)) = tokio::time::timeout(wait, rx).await {
            return Ok(Some((replayed, Json(rec)).into_response()));
        }
    }
    // The first request may still be writing its run: give it a moment.
    let start = std::time::Instant::now();
    loop {
        if let Some(rec) = st.store.get_run(run_id).await? {
            return Ok(Some(if sync && rec.status.is_terminal() {
                (replayed, Json(rec)).into_response()
            } else {
                let body = RunAccepted {
                    run_id,
                    status: rec.status,
                    status_url: status_url.clone(),
                };
                (
                    StatusCode::ACCEPTED,
                    [("location", status_url.clone())],
                    replayed,
                    Json(body),
                )
                    .into_response()
            }));
        }
        if start.elapsed() > Duration::from_secs(2) {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn parse_run_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(id).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("run id `{id}` is not a UUID"),
        )
    })
}

/// The run detail: the run, and for a pushed run its delivery.
#[derive(Serialize)]
struct RunDetail {
    #[serde(flatten)]
    run: RunRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<Delivery>,
}

/// A run: for users who can see its workflow, or its workflow's API key.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}",
    operation_id = "get_run",
    tag = "runs",
    summary = "Read a run: status, input, output, error, attempts, node log, model calls",
    description = "Users who can see its workflow, or that workflow's API key. A pushed run also has `delivery` (status, attempts, last error).",
    params(("id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = RunRecord),
        (status = 400, description = "`invalid_request`: the id is not a UUID", body = ErrorBody),
        (status = 404, description = "`not_found`: no such run (or not one the caller may see)", body = ErrorBody),
    )
)]
pub async fn get(
    st: St,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_run_id(&id)?;
    let run = st
        .store
        .get_run(id)
        .await?
        .ok_or_else(|| ApiError::not_found("run"))?;
    // Another workflow's key is told 404, as a stranger is: a 403 would
    // tell it which run ids exist.
    st.may_run(&caller, &run.workflow_id)
        .await
        .map_err(|e| match e.code {
            ErrorCode::NotFound | ErrorCode::Forbidden => ApiError::not_found("run"),
            _ => e,
        })?;
    // Only async runs are pushed.
    let delivery = if run.trigger == "async" {
        st.store.get_delivery(id).await?
    } else {
        None
    };
    Ok(Json(RunDetail { run, delivery }))
}

/// The filters the run list and the monitor share.
#[derive(Deserialize, Default, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FilterQuery {
    /// Runs of this workflow only.
    pub workflow_id: Option<String>,
    /// Runs in this status only.
    #[param(value_type = Option<RunStatus>)]
    pub status: Option<String>,
    /// `sync` or `async`.
    #[param(value_type = Option<RunMode>)]
    pub trigger: Option<String>,
    /// Accepted at or after (Unix ms).
    #[param(maximum = 9223372036854775807_u64)]
    pub from_ms: Option<u64>,
    /// Accepted before (Unix ms); after `from_ms`.
    #[param(maximum = 9223372036854775807_u64)]
    pub to_ms: Option<u64>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// `next_cursor` of the page before (a run id).
    #[param(value_type = Option<Uuid>)]
    pub cursor: Option<String>,
    /// `newest` (default) or `oldest` first.
    pub sort: Option<String>,
}

impl FilterQuery {
    pub fn to_filter(&self) -> Result<RunFilter, ApiError> {
        let status = match self.status.as_deref() {
            None => None,
            Some(s) => Some(RunStatus::parse(s).ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidRequest, format!("unknown status `{s}`"))
            })?),
        };
        if let Some(t) = self.trigger.as_deref() {
            if t != "sync" && t != "async" {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("trigger `{t}` is not `sync` or `async`"),
                ));
            }
        }
        super::check_time_range(self.from_ms, self.to_ms)?;
        let oldest_first = match self.sort.as_deref() {
            None | Some("newest") => false,
            Some("oldest") => true,
            Some(other) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("sort `{other}` is not `newest` or `oldest`"),
                ))
            }
        };
        Ok(RunFilter {
            workflow_id: self.workflow_id.clone(),
            status,
            trigger: self.trigger.clone(),
            from_ms: self.from_ms,
            to_ms: self.to_ms,
            visible_to: None,
            after: self.cursor.as_deref().map(parse_run_id).transpose()?,
            oldest_first,
            limit: page_limit(self.limit)?,
        })
    }
}

/// Runs of the workflows the caller can see.
#[utoipa::path(
    get,
    path = "/v1/runs",
    operation_id = "list_runs",
    tag = "runs",
    summary = "List runs, newest first (model calls left out)",
    params(FilterQuery),
    responses(
        (status = 200, description = "A page of runs", body = Page<RunRecord>),
        (status = 400, description = "`invalid_request`: a bad filter, limit or cursor, or an unknown parameter", body = ErrorBody),
    )
)]
pub async fn list(
    st: St,
    who: AuthUser,
    ApiQuery(q): ApiQuery<FilterQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let mut filter = q.to_filter()?;
    match &filter.workflow_id {
        Some(wf) => {
            st.role(&who, wf, Role::Viewer).await?;
        }
        None => filter.visible_to = who.visibility(),
    }
    let items = st.store.list_runs(&filter).await?;
    let next = (items.len() == filter.limit as usize)
        .then(|| items.last().map(|r| r.id))
        .flatten();
    Ok(Json(Page {
        items,
        next_cursor: next.map(|id| id.to_string()),
    }))
}

/// Cancels a run (editors and owners of its workflow).
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/cancel",
    operation_id = "cancel_run",
    tag = "runs",
    summary = "Cancel a run; the worker stops the work",
    params(("id" = Uuid, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run, cancelled", body = RunRecord),
        (status = 400, description = "`invalid_request`: the id is not a UUID", body = ErrorBody),
        (status = 404, description = "`not_found`: no such run", body = ErrorBody),
        (status = 409, description = "`conflict`: the run already ended (its status in `details.status`)", body = ErrorBody),
    )
)]
pub async fn cancel(
    st: St,
    who: AuthUser,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_run_id(&id)?;
    let run = st
        .store
        .get_run(id)
        .await?
        .ok_or_else(|| ApiError::not_found("run"))?;
    st.role(&who, &run.workflow_id, Role::Editor)
        .await
        .map_err(|e| match e.code {
            ErrorCode::NotFound => ApiError::not_found("run"),
            _ => e,
        })?;
    if let Some(rec) = st.dispatch.cancel(id).await {
        st.audit(
            &who.principal,
            "run",
            "run.cancelled",
            Some(&rec.workflow_id),
            format!("cancelled run {id}"),
        )
        .await;
        return Ok(Json(rec));
    }
    let run = st
        .store
        .get_run(id)
        .await?
        .ok_or_else(|| ApiError::not_found("run"))?;
    Err(ApiError::new(
        ErrorCode::Conflict,
        format!("run already ended ({})", run.status.as_str()),
    )
    .details(json!({"status": run.status})))
}
