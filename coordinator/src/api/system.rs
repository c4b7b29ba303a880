//! Health, readiness, metrics and the worker list.

use super::{Page, St};
use crate::dispatch::WorkerInfo;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;
use std::sync::atomic::Ordering;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`.
    status: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "system",
    summary = "Liveness",
    responses((status = 200, description = "The process answers", body = Health))
)]
pub async fn healthz() -> impl IntoResponse {
    Json(Health { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// Connected to NATS.
    nats: bool,
    /// The store answers.
    store: bool,
    shutting_down: bool,
    /// Live workers.
    workers: usize,
}

/// Readiness: store and NATS reachable, not shutting down.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "system",
    summary = "Readiness: store and NATS reachable, not shutting down",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready (which part, in the body)", body = Readiness),
    )
)]
pub async fn readyz(st: St) -> impl IntoResponse {
    let nats = st.nats.connection_state() == async_nats::connection::State::Connected;
    let store = st.store.ping().await;
    let shutting = st.is_shutting_down();
    let ok = nats && store && !shutting;
    let body = Json(Readiness {
        status: if ok { "ready" } else { "not_ready" },
        nats,
        store,
        shutting_down: shutting,
        workers: st.dispatch.stats.live_workers.load(Ordering::Relaxed),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "system",
    summary = "Prometheus metrics",
    responses((status = 200, description = "The Prometheus text format", content_type = "text/plain; version=0.0.4; charset=utf-8", body = String))
)]
pub async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        weft_shared::telemetry::prometheus().render(),
    )
}

#[utoipa::path(
    get,
    path = "/v1/workers",
    operation_id = "list_workers",
    tag = "system",
    summary = "Workers the coordinator knows (one page)",
    responses((status = 200, description = "Every worker", body = Page<WorkerInfo>))
)]
pub async fn workers(st: St, _who: super::auth::AuthUser) -> impl IntoResponse {
    Json(Page::all(st.dispatch.workers().await))
}
