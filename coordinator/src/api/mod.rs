//! The HTTP API (axum). One style of paths (`/v1/<collection>/{id}`), one
//! pagination (`?limit=&cursor=` → `{items, next_cursor}`), one error shape
//! ([`error::ApiError`]).
//!
//! | method and path | what |
//! | --- | --- |
//! | `POST /v1/workflows` | create (body: the definition) |
//! | `GET /v1/workflows` | list |
//! | `POST /v1/workflows/validate` | check a definition without saving it |
//! | `GET/PUT/DELETE /v1/workflows/{id}` | read, replace the draft, delete |
//! | `POST /v1/workflows/{id}/deploy` | publish the draft as the next version |
//! | `GET /v1/workflows/{id}/versions` | deployed versions |
//! | `POST /v1/workflows/{id}/runs?mode=sync\|async` | run the newest version |
//! | `GET /v1/runs`, `GET /v1/runs/{id}` | runs (filters: `workflow_id`, `status`) |
//! | `POST /v1/runs/{id}/cancel` | cancel a run |
//! | `GET /v1/workers` | workers the coordinator knows |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | liveness, readiness, Prometheus |

pub mod error;
mod runs;
mod system;
mod workflows;

use crate::dispatch::DispatchHandle;
use crate::store::Store;
use crate::CoordinatorConfig;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use error::ApiError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use weft_shared::error::ErrorCode;
use weft_shared::model::WorkflowDefinition;
use weft_shared::validate::Plan;

/// A deployed version, validated once and kept for the run hot path.
pub struct Deployed {
    pub version: u32,
    pub definition: Arc<WorkflowDefinition>,
    pub plan: Arc<Plan>,
}

pub struct AppState {
    pub config: CoordinatorConfig,
    pub store: Store,
    pub dispatch: DispatchHandle,
    pub nats: async_nats::Client,
    /// Set on the first shutdown signal: new runs are refused.
    pub shutting_down: AtomicBool,
    /// Newest deployed version per workflow id.
    deployed: RwLock<HashMap<String, Arc<Deployed>>>,
}

impl AppState {
    pub fn new(
        config: CoordinatorConfig,
        store: Store,
        dispatch: DispatchHandle,
        nats: async_nats::Client,
    ) -> Self {
        AppState {
            config,
            store,
            dispatch,
            nats,
            shutting_down: AtomicBool::new(false),
            deployed: RwLock::new(HashMap::new()),
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// The newest deployed version of a workflow, from cache or store.
    pub async fn deployed(&self, workflow_id: &str) -> Result<Arc<Deployed>, ApiError> {
        if let Some(d) = self
            .deployed
            .read()
            .ok()
            .and_then(|m| m.get(workflow_id).cloned())
        {
            return Ok(d);
        }
        let wf = self
            .store
            .get_workflow(workflow_id)
            .await?
            .ok_or_else(|| ApiError::not_found("workflow"))?;
        let Some(version) = wf.latest_version else {
            return Err(ApiError::new(
                ErrorCode::NotDeployed,
                "workflow has no deployed version; deploy it first",
            ));
        };
        let v = self
            .store
            .get_version(workflow_id, version)
            .await?
            .ok_or_else(|| ApiError::internal("deployed version missing"))?;
        self.remember(workflow_id, version, v.definition)
    }

    pub fn remember(
        &self,
        workflow_id: &str,
        version: u32,
        def: WorkflowDefinition,
    ) -> Result<Arc<Deployed>, ApiError> {
        let plan = weft_shared::validate::validate(&def)
            .map_err(|_| ApiError::internal("a deployed version no longer validates"))?;
        let d = Arc::new(Deployed {
            version,
            definition: Arc::new(def),
            plan: Arc::new(plan),
        });
        if let Ok(mut m) = self.deployed.write() {
            m.insert(workflow_id.to_string(), d.clone());
        }
        Ok(d)
    }

    pub fn forget(&self, workflow_id: &str) {
        if let Ok(mut m) = self.deployed.write() {
            m.remove(workflow_id);
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        .route(
            "/v1/workflows",
            post(workflows::create).get(workflows::list),
        )
        .route("/v1/workflows/validate", post(workflows::validate))
        .route(
            "/v1/workflows/{id}",
            get(workflows::get)
                .put(workflows::update)
                .delete(workflows::delete),
        )
        .route("/v1/workflows/{id}/deploy", post(workflows::deploy))
        .route("/v1/workflows/{id}/versions", get(workflows::versions))
        .route("/v1/workflows/{id}/runs", post(runs::start))
        .route("/v1/runs", get(runs::list))
        .route("/v1/runs/{id}", get(runs::get))
        .route("/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/v1/workers", get(system::workers))
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .layer(axum::middleware::from_fn(track))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::new(ErrorCode::Internal, "internal error").into_response()
        }))
        .with_state(state)
}

/// Counts requests and their latency by route template (bounded labels).
async fn track(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::histogram!(crate::metrics::HTTP_DURATION, "route" => route.clone())
        .record(start.elapsed().as_secs_f64());
    metrics::counter!(crate::metrics::HTTP_REQUESTS, "route" => route, "status" => status)
        .increment(1);
    resp
}

pub(crate) type St = State<Arc<AppState>>;

/// `?limit=` bounded to 1..=500, default 50.
pub(crate) fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(50),
        Some(l) if (1..=500).contains(&l) => Ok(l),
        Some(l) => Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("limit {l} is out of range (1 to 500)"),
        )),
    }
}
