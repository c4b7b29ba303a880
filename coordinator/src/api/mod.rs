//! The HTTP API (axum). One style of paths (`/v1/<collection>/{id}`), one
//! pagination (`?limit=&cursor=` → `{items, next_cursor}`), one error shape
//! ([`error::ApiError`]). Every `/v1` route but callbacks needs a user token
//! or an API key ([`auth`]); `/healthz`, `/readyz` and `/metrics` are open.
//!
//! | method and path | what |
//! | --- | --- |
//! | `POST /v1/workflows` | create (body: the definition) |
//! | `GET /v1/workflows` | list |
//! | `POST /v1/workflows/validate` | check a definition without saving it |
//! | `GET/PUT/DELETE /v1/workflows/{id}` | read, replace the draft, delete |
//! | `POST /v1/workflows/{id}/deploy` | publish the draft as the next version (redeploy: the same) |
//! | `POST /v1/workflows/{id}/undeploy` | take the endpoint offline (runs in flight finish) |
//! | `POST /v1/workflows/{id}/activate`, `…/deactivate` | the active switch |
//! | `GET /v1/workflows/{id}/versions` | deployed versions |
//! | `GET/PUT /v1/workflows/{id}/endpoint` | the endpoint configuration: mode, sync/async timeouts, async push target (the draft's; takes effect on deploy) |
//! | `POST /v1/workflows/{id}/endpoint/rotate-secret` | a new push signing secret (shown once; applies at once) |
//! | `GET /v1/workflows/{id}/export?version=N\|draft` | a version as a zip |
//! | `POST /v1/workflows/import`, `POST /v1/workflows/{id}/import` | a zip as a new workflow, or as a new draft |
//! | `GET /v1/workflows/{id}/backups` | drafts an import replaced |
//! | `GET /v1/templates`, `GET /v1/templates/{id}`, `POST /v1/workflows/from-template/{id}` | built-in templates |
//! | `POST /v1/workflows/{id}/runs?mode=sync\|async` | run the deployed version (409 `mode_disabled` for a mode its endpoint does not answer) |
//! | `GET /v1/runs`, `GET /v1/runs/{id}` | runs (filters: `workflow_id`, `status`, `trigger`, `from_ms`, `to_ms`; `sort=newest\|oldest`); the detail of a pushed run has its `delivery` |
//! | `GET /v1/workflows/{id}/monitor` | totals, P50/P90/P99, failure rate (same filters) |
//! | `POST /v1/runs/{id}/cancel` | cancel a run (a run paused at a human node too) |
//! | `POST /v1/runs/{id}/resume` | answer a human node: `{"node_id"?, "value"}`; the run goes on, on any worker |
//! | `POST/GET /v1/workflows/{id}/env`, `GET/PUT/DELETE …/env/{name}` | environment variables |
//! | `POST /v1/callbacks/{run_id}/{node_id}?token=` | resume an async API node (no bearer: the one-time token) |
//! | `GET /v1/me` | who the token belongs to |
//! | `POST/GET /v1/users`, `GET /v1/users/{id}` | users (admins create them; the answer holds the first token) |
//! | `POST/GET /v1/users/{id}/tokens`, `POST …/tokens/{token_id}/revoke` | a user's tokens |
//! | `POST/GET /v1/workflows/{id}/keys`, `POST …/keys/{key_id}/revoke` | a workflow's API keys |
//! | `GET /v1/workflows/{id}/shares`, `PUT/DELETE …/shares/{user_id}` | sharing (owner, editor, viewer) |
//! | `GET /v1/audit` | the audit log (filters: `from_ms`, `to_ms`, `category`, `event`, `user_id`, `workflow_id`) |
//! | `GET /v1/workers` | workers the coordinator knows |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | liveness, readiness, Prometheus |
//! | `GET /openapi.json` | this API as an OpenAPI 3.1 document ([`openapi`]) |
//!
//! Routes are declared once, in `route_table!` below.

pub mod auth;
mod callbacks;
mod endpoint;
mod env;
pub mod error;
pub mod export;
mod human;
mod monitor;
pub mod openapi;
mod runs;
mod system;
mod templates;
mod users;
mod workflows;

use crate::dispatch::DispatchHandle;
use crate::model::EnvVarRow;
use crate::store::Store;
use crate::CoordinatorConfig;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use error::ApiError;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;
use weft_shared::error::ErrorCode;
use weft_shared::model::WorkflowDefinition;
use weft_shared::secret::SecretString;
use weft_shared::validate::Plan;
use weft_shared::wire::{EnvValue, WireDefinition};

/// Whether a workflow can be run now, cached for the run hot path: its
/// deployed version, or why its runs are refused.
#[derive(Clone)]
enum Gate {
    Open(Arc<Deployed>),
    Closed(Refusal),
}

#[derive(Clone, Copy)]
enum Refusal {
    NeverDeployed,
    Undeployed,
    Inactive,
}

impl Refusal {
    fn error(self, workflow_id: &str) -> ApiError {
        let e = match self {
            Refusal::NeverDeployed => ApiError::new(
                ErrorCode::NotDeployed,
                "workflow has no deployed version; deploy it first",
            ),
            Refusal::Undeployed => ApiError::new(
                ErrorCode::NotDeployed,
                "workflow was undeployed and its endpoint is offline; deploy it again to run it",
            ),
            Refusal::Inactive => ApiError::new(
                ErrorCode::WorkflowInactive,
                format!("workflow is inactive; activate it (POST /v1/workflows/{workflow_id}/activate) to run it"),
            ),
        };
        e.details(serde_json::json!({"workflow_id": workflow_id}))
    }
}

/// A deployed version, validated once and kept for the run hot path.
pub struct Deployed {
    pub version: u32,
    pub definition: Arc<WorkflowDefinition>,
    /// The definition encoded for assignments, once per version.
    pub wire: WireDefinition,
    pub plan: Arc<Plan>,
    /// The environment variables it names: only these travel with its runs.
    pub env_refs: Vec<String>,
    /// The endpoint configuration it was deployed with.
    pub endpoint: crate::endpoint::EndpointRuntime,
}

pub struct AppState {
    pub config: CoordinatorConfig,
    pub store: Store,
    pub dispatch: DispatchHandle,
    pub nats: async_nats::Client,
    /// Set on the first shutdown signal: new runs are refused.
    pub shutting_down: AtomicBool,
    /// Per workflow id: the deployed version runs use, or why runs are
    /// refused (not deployed, undeployed, inactive).
    deployed: RwLock<HashMap<String, Gate>>,
    /// Bumped by every [`AppState::forget`]: a load from the store that began
    /// before it does not cache what it read, which may be stale.
    deployed_epoch: AtomicU64,
    /// Seals and opens secure variables.
    pub crypto: crate::secrets::Crypto,
    /// Variables per workflow id (as stored: secure ones still sealed).
    env: RwLock<HashMap<String, Arc<Vec<EnvVarRow>>>>,
    /// Resolves and meters the secrets requests carry.
    pub auth: crate::access::Auth,
}

impl AppState {
    pub fn new(
        config: CoordinatorConfig,
        store: Store,
        dispatch: DispatchHandle,
        nats: async_nats::Client,
        crypto: crate::secrets::Crypto,
    ) -> Self {
        AppState {
            auth: crate::access::Auth::new(
                config.api_key_rate_limit_per_s,
                config.api_key_rate_limit_burst,
            ),
            config,
            store,
            dispatch,
            nats,
            shutting_down: AtomicBool::new(false),
            deployed: RwLock::new(HashMap::new()),
            deployed_epoch: AtomicU64::new(0),
            crypto,
            env: RwLock::new(HashMap::new()),
        }
    }

    /// The values a run of this workflow needs, secure ones decrypted for it.
    pub async fn run_env(
        &self,
        workflow_id: &str,
        refs: &[String],
    ) -> Result<BTreeMap<String, EnvValue>, ApiError> {
        if refs.is_empty() {
            return Ok(BTreeMap::new());
        }
        let cached = self
            .env
            .read()
            .ok()
            .and_then(|m| m.get(workflow_id).cloned());
        let vars = match cached {
            Some(v) => v,
            None => {
                let v = Arc::new(self.store.list_env(workflow_id).await?);
                if let Ok(mut m) = self.env.write() {
                    m.insert(workflow_id.to_string(), v.clone());
                }
                v
            }
        };
        resolve_env(&self.crypto, &vars, refs).map_err(ApiError::internal)
    }

    pub fn forget_env(&self, workflow_id: &str) {
        if let Ok(mut m) = self.env.write() {
            m.remove(workflow_id);
        }
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    /// The version a run of this workflow uses, from cache or store; or the
    /// refusal: 404 for no such workflow, 409 `workflow_inactive` when it is
    /// switched off, 409 `not_deployed` when it was never deployed or was
    /// undeployed. Every run request goes through here, so a lifecycle change
    /// followed by [`AppState::forget`] takes effect for the next request;
    /// runs already accepted are not affected.
    pub async fn deployed(&self, workflow_id: &str) -> Result<Arc<Deployed>, ApiError> {
        let cached = self
            .deployed
            .read()
            .ok()
            .and_then(|m| m.get(workflow_id).cloned());
        let gate = match cached {
            Some(g) => g,
            None => self.load_gate(workflow_id).await?,
        };
        match gate {
            Gate::Open(d) => Ok(d),
            Gate::Closed(r) => Err(r.error(workflow_id)),
        }
    }

    async fn load_gate(&self, workflow_id: &str) -> Result<Gate, ApiError> {
        let epoch = self.deployed_epoch.load(Ordering::SeqCst);
        let wf = self
            .store
            .get_workflow(workflow_id)
            .await?
            .ok_or_else(|| ApiError::not_found("workflow"))?;
        let gate = match (wf.active, wf.deployed_version) {
            (false, _) => Gate::Closed(Refusal::Inactive),
            (true, None) if wf.latest_version.is_some() => Gate::Closed(Refusal::Undeployed),
            (true, None) => Gate::Closed(Refusal::NeverDeployed),
            (true, Some(version)) => {
                let v = self
                    .store
                    .get_version(workflow_id, version)
                    .await?
                    .ok_or_else(|| ApiError::internal("deployed version missing"))?;
                let endpoint = crate::endpoint::EndpointRuntime::from(&v.endpoint);
                Gate::Open(Self::prepare(version, v.definition, endpoint)?)
            }
        };
        if let Ok(mut m) = self.deployed.write() {
            // Checked under the lock `forget` bumps it under.
            if self.deployed_epoch.load(Ordering::SeqCst) == epoch {
                m.insert(workflow_id.to_string(), gate.clone());
            }
        }
        Ok(gate)
    }

    /// Validates a deployed definition once and keeps what runs need.
    fn prepare(
        version: u32,
        def: WorkflowDefinition,
        endpoint: crate::endpoint::EndpointRuntime,
    ) -> Result<Arc<Deployed>, ApiError> {
        let plan = weft_shared::validate::validate(&def)
            .map_err(|_| ApiError::internal("a deployed version no longer validates"))?;
        let env_refs = weft_shared::validate::env_refs(&def).into_iter().collect();
        let wire = WireDefinition::encode(&def).map_err(ApiError::internal)?;
        Ok(Arc::new(Deployed {
            version,
            definition: Arc::new(def),
            wire,
            plan: Arc::new(plan),
            env_refs,
            endpoint,
        }))
    }

    /// Drops what is cached about a workflow's deployment: call it after
    /// every change to its lifecycle (deploy, undeploy, the active switch,
    /// delete), once the change is committed.
    pub fn forget(&self, workflow_id: &str) {
        if let Ok(mut m) = self.deployed.write() {
            self.deployed_epoch.fetch_add(1, Ordering::SeqCst);
            m.remove(workflow_id);
        }
    }
}

/// Picks the named variables out of `vars`, opening secure ones.
pub fn resolve_env(
    crypto: &crate::secrets::Crypto,
    vars: &[EnvVarRow],
    refs: &[String],
) -> Result<BTreeMap<String, EnvValue>, crate::secrets::CryptoError> {
    let mut out = BTreeMap::new();
    for v in vars.iter().filter(|v| refs.contains(&v.name)) {
        let value = if v.secure {
            crypto.decrypt(&v.value)?
        } else {
            v.value.clone()
        };
        out.insert(
            v.name.clone(),
            EnvValue {
                value: SecretString::new(value),
                secure: v.secure,
            },
        );
    }
    Ok(out)
}

/// The route table: each path with its methods and handlers. The router,
/// [`ROUTES`] and the OpenAPI document's operations ([`Operations`]) are all
/// built from it, so a route cannot be served undocumented: each handler needs
/// a `#[utoipa::path]` (`__path_<handler>`) or this does not compile, and the
/// suite checks that the document has exactly [`ROUTES`]. Routes are added
/// here and nowhere else (a test checks that too).
macro_rules! route_table {
    (
        authenticated { $($apath:literal => { $($amethod:ident: $($ahandler:ident)::+),+ $(,)? })+ }
        public { $($ppath:literal => { $($pmethod:ident: $($phandler:ident)::+),+ $(,)? })+ }
    ) => {
        /// `(method, path)` of every route the router serves.
        pub const ROUTES: &[(&str, &str)] = &[
            $($((stringify!($amethod), $apath)),+),+,
            $($((stringify!($pmethod), $ppath)),+),+
        ];

        /// The routes that need a user token or an API key.
        fn authenticated_routes(r: Router<Arc<AppState>>) -> Router<Arc<AppState>> {
            r$(.route($apath, axum::routing::MethodRouter::new()$(.$amethod($($ahandler)::+))+))+
        }

        /// The routes open without one (callbacks carry their own token).
        fn public_routes(r: Router<Arc<AppState>>) -> Router<Arc<AppState>> {
            r$(.route($ppath, axum::routing::MethodRouter::new()$(.$pmethod($($phandler)::+))+))+
        }

        /// The documented operations, one per route (see [`openapi`]).
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($($($ahandler)::+),+),+, $($($($phandler)::+),+),+))]
        pub(crate) struct Operations;
    };
}

route_table! {
    authenticated {
        "/v1/workflows" => { post: workflows::create, get: workflows::list }
        "/v1/workflows/validate" => { post: workflows::validate }
        "/v1/workflows/{id}" => { get: workflows::get, put: workflows::update, delete: workflows::delete }
        "/v1/workflows/{id}/deploy" => { post: workflows::deploy }
        "/v1/workflows/{id}/undeploy" => { post: workflows::undeploy }
        "/v1/workflows/{id}/activate" => { post: workflows::activate }
        "/v1/workflows/{id}/deactivate" => { post: workflows::deactivate }
        "/v1/workflows/{id}/versions" => { get: workflows::versions }
        "/v1/workflows/{id}/endpoint" => { get: endpoint::get, put: endpoint::put }
        "/v1/workflows/{id}/endpoint/rotate-secret" => { post: endpoint::rotate_secret }
        "/v1/workflows/{id}/export" => { get: export::export }
        "/v1/workflows/import" => { post: export::import_new }
        "/v1/workflows/{id}/import" => { post: export::import_into }
        "/v1/workflows/{id}/backups" => { get: export::backups }
        "/v1/workflows/from-template/{template_id}" => { post: templates::create_from }
        "/v1/templates" => { get: templates::list }
        "/v1/templates/{id}" => { get: templates::get }
        "/v1/workflows/{id}/monitor" => { get: monitor::monitor }
        "/v1/workflows/{id}/runs" => { post: runs::start }
        "/v1/workflows/{id}/env" => { post: env::create, get: env::list }
        "/v1/workflows/{id}/env/{name}" => { get: env::get, put: env::update, delete: env::delete }
        "/v1/workflows/{id}/keys" => { post: users::create_key, get: users::list_keys }
        "/v1/workflows/{id}/keys/{key_id}/revoke" => { post: users::revoke_key }
        "/v1/workflows/{id}/shares" => { get: users::list_shares }
        "/v1/workflows/{id}/shares/{user_id}" => { put: users::put_share, delete: users::delete_share }
        "/v1/runs" => { get: runs::list }
        "/v1/runs/{id}" => { get: runs::get }
        "/v1/runs/{id}/cancel" => { post: runs::cancel }
        "/v1/runs/{id}/resume" => { post: human::resume }
        "/v1/workers" => { get: system::workers }
        "/v1/me" => { get: users::me }
        "/v1/users" => { post: users::create_user, get: users::list_users }
        "/v1/users/{id}" => { get: users::get_user }
        "/v1/users/{id}/tokens" => { post: users::create_token, get: users::list_tokens }
        "/v1/users/{id}/tokens/{token_id}/revoke" => { post: users::revoke_token }
        "/v1/audit" => { get: users::audit }
    }
    public {
        "/v1/callbacks/{run_id}/{node_id}" => { post: callbacks::callback }
        "/healthz" => { get: system::healthz }
        "/readyz" => { get: system::readyz }
        "/metrics" => { get: system::metrics }
        "/openapi.json" => { get: openapi::serve }
    }
}

/// A page of a list, newest first: `next_cursor` is the `cursor` that gets the
/// next page, null on the last one.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The whole list in one page.
    pub fn all(items: Vec<T>) -> Self {
        Page {
            items,
            next_cursor: None,
        }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.config.max_body_bytes;
    Router::new()
        // Every route here needs a user token or an API key.
        .merge(authenticated_routes(Router::new()).route_layer(
            axum::middleware::from_fn_with_state(state.clone(), auth::authenticate),
        ))
        .merge(public_routes(Router::new()))
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                ErrorCode::MethodNotAllowed,
                "method not allowed on this route",
            )
        })
        .layer(axum::middleware::from_fn(track))
        // A span per request, named by route template: the raw URI is not
        // recorded (callback URLs carry one-time tokens).
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let route = req
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or("unmatched", |p| p.as_str());
                tracing::info_span!("http", method = req.method().as_str(), route)
            }),
        )
        .layer(DefaultBodyLimit::max(max_body))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            ApiError::new(ErrorCode::Internal, "internal error").into_response()
        }))
        .with_state(state)
}

/// Counts requests and their latency by route template (bounded labels).
async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let start = Instant::now();
    let resp = next.run(req).await;
    let elapsed = start.elapsed().as_secs_f64();
    let route = route.as_ref().map_or("unmatched", |p| p.as_str());
    ROUTE_METERS.with_borrow_mut(|meters| {
        if !meters.contains_key(route) {
            meters.insert(
                route.to_string(),
                RouteMeters {
                    duration: metrics::histogram!(crate::metrics::HTTP_DURATION, "route" => route.to_string()),
                    requests: Vec::new(),
                },
            );
        }
        if let Some(m) = meters.get_mut(route) {
            m.duration.record(elapsed);
            let status = resp.status().as_u16();
            match m.requests.iter().find(|(s, _)| *s == status) {
                Some((_, c)) => c.increment(1),
                None => {
                    let c = metrics::counter!(crate::metrics::HTTP_REQUESTS, "route" => route.to_string(), "status" => status.to_string());
                    c.increment(1);
                    m.requests.push((status, c));
                }
            }
        }
    });
    resp
}

/// A route's metric handles, registered on its first request: updating a
/// handle is an atomic operation, a `counter!` with labels a registry lookup.
/// Bounded: routes are templates, statuses a few codes.
struct RouteMeters {
    duration: metrics::Histogram,
    requests: Vec<(u16, metrics::Counter)>,
}

thread_local! {
    /// Per runtime thread, so no lock is taken.
    static ROUTE_METERS: std::cell::RefCell<HashMap<String, RouteMeters>> =
        std::cell::RefCell::new(HashMap::new());
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

/// `from_ms`/`to_ms` filters: each fits the store's integers (i64; beyond,
/// it would wrap around and match the wrong rows), and `from_ms` < `to_ms`.
pub(crate) fn check_time_range(from_ms: Option<u64>, to_ms: Option<u64>) -> Result<(), ApiError> {
    for (name, v) in [("from_ms", from_ms), ("to_ms", to_ms)] {
        if v.is_some_and(|v| i64::try_from(v).is_err()) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                format!("{name} is out of range (0 to {})", i64::MAX),
            ));
        }
    }
    if let (Some(f), Some(t)) = (from_ms, to_ms) {
        if f >= t {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "from_ms must be before to_ms",
            ));
        }
    }
    Ok(())
}
