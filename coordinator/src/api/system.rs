//! Health, readiness, metrics and the worker list.

use super::St;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::json;
use std::sync::atomic::Ordering;

/// Liveness: the process answers.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Readiness: store and NATS reachable, not shutting down.
pub async fn readyz(st: St) -> impl IntoResponse {
    let nats = st.nats.connection_state() == async_nats::connection::State::Connected;
    let store = st.store.ping().await;
    let shutting = st.is_shutting_down();
    let ok = nats && store && !shutting;
    let body = Json(json!({
        "status": if ok { "ready" } else { "not_ready" },
        "nats": nats,
        "store": store,
        "shutting_down": shutting,
        "workers": st.dispatch.stats.live_workers.load(Ordering::Relaxed),
    }));
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

pub async fn metrics() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        weft_shared::telemetry::prometheus().render(),
    )
}

pub async fn workers(st: St, _who: super::auth::AuthUser) -> impl IntoResponse {
    Json(json!({"items": st.dispatch.workers().await}))
}
