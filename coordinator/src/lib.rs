//! The Weft coordinator: accepts runs over HTTP, stores them, places each on a
//! worker over NATS and reports the result.
//!
//! - [`api`]: the HTTP API (axum).
//! - [`store`]: workflows, versions and runs (sqlx; SQLite by default).
//! - [`dispatch`]: the worker registry, the queue and runs in flight.
//! - [`placement`]: the pure choice of worker.
//! - [`endpoint`]: a workflow's endpoint configuration (mode, timeouts, push).
//! - [`push`]: async-push delivery of run results, signed and retried.
//! - [`metrics`]: metric names and descriptions.
//!
//! [`run`] is the whole server; `main.rs` only parses flags and calls it.

pub mod access;
pub mod api;
pub mod config;
pub mod dispatch;
pub mod endpoint;
pub mod metrics;
pub mod model;
pub mod placement;
pub mod push;
pub mod secrets;
pub mod store;

pub use config::CoordinatorConfig;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use weft_shared::subjects::Subjects;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("nats: {0}")]
    Nats(String),
    #[error("http: {0}")]
    Http(#[from] std::io::Error),
    #[error("configuration: {0}")]
    Config(String),
}

/// Re-encrypts values sealed with a previous key under the current one.
async fn rotate_keys(
    store: &store::Store,
    crypto: &secrets::Crypto,
) -> Result<(), CoordinatorError> {
    let mut rotated = 0;
    for mut v in store.secure_env().await? {
        if !crypto.needs_rotation(&v.value) {
            continue;
        }
        let plain = crypto.decrypt(&v.value).map_err(|e| {
            CoordinatorError::Config(format!(
                "variable {} of workflow {}: {e}",
                v.name, v.workflow_id
            ))
        })?;
        v.value = crypto
            .encrypt(&plain)
            .map_err(|e| CoordinatorError::Config(e.to_string()))?;
        store.update_env(&v).await?;
        rotated += 1;
    }
    if rotated > 0 {
        tracing::info!(
            variables = rotated,
            "re-encrypted secure variables under the current key"
        );
    }
    // Push access tokens and signing secrets, the same way.
    let mut rotated = 0;
    for (at, sealed) in store.sealed_endpoint_values().await? {
        if !crypto.needs_rotation(&sealed) {
            continue;
        }
        let plain = crypto
            .decrypt(&sealed)
            .map_err(|e| CoordinatorError::Config(format!("endpoint secret {at:?}: {e}")))?;
        let resealed = crypto
            .encrypt(&plain)
            .map_err(|e| CoordinatorError::Config(e.to_string()))?;
        store.reseal_endpoint_value(&at, &resealed).await?;
        rotated += 1;
    }
    if rotated > 0 {
        tracing::info!(
            values = rotated,
            "re-encrypted endpoint secrets under the current key"
        );
    }
    Ok(())
}

/// Runs the coordinator on `listener` until `shutdown` completes, then drains:
/// new runs are refused, requests in flight get up to `shutdown_grace_ms`.
pub async fn run(
    config: CoordinatorConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CoordinatorError> {
    // The recorder first: descriptions given before it exists are lost.
    let _ = weft_shared::telemetry::prometheus();
    metrics::describe();
    // The push client and async-nats must share one rustls provider.
    weft_shared::telemetry::install_crypto_provider();
    let crypto = secrets::Crypto::new(&config.encryption_key, &config.previous_encryption_keys)
        .map_err(|e| CoordinatorError::Config(e.to_string()))?;
    let store = store::Store::open(&config.database_url).await?;
    rotate_keys(&store, &crypto).await?;
    let admin = store
        .ensure_admin(
            config.admin_name.trim(),
            &access::hash_secret(config.admin_token.trim()),
        )
        .await?;
    tracing::info!(user = %admin.name, "admin token from configuration installed");
    access::append(
        &store,
        access::event(
            None,
            "system",
            "coordinator.started",
            None,
            format!(
                "coordinator started; `{}` is admin by configuration",
                admin.name
            ),
        ),
    )
    .await;
    let nats_disconnected: Arc<std::sync::Mutex<Option<std::time::Instant>>> = Arc::default();
    let on_event = nats_disconnected.clone();
    let nats = async_nats::ConnectOptions::new()
        .name("weft-coordinator")
        .event_callback(move |event| {
            let on_event = on_event.clone();
            async move {
                if matches!(event, async_nats::Event::Disconnected) {
                    tracing::warn!("lost the NATS server; reconnecting");
                    if let Ok(mut g) = on_event.lock() {
                        *g = Some(std::time::Instant::now());
                    }
                }
            }
        })
        .retry_on_initial_connect()
        // Back within a second after a NATS restart: the heartbeat deadline
        // (a few seconds) must not be spent waiting to reconnect.
        .reconnect_delay_callback(|attempts| {
            std::time::Duration::from_millis((attempts as u64 * 100).min(1_000))
        })
        .connect(config.nats_url.as_str())
        .await
        .map_err(|e| CoordinatorError::Nats(e.to_string()))?;
    let subjects = Subjects::new(&config.subject_prefix);

    // Runs that had not ended when the coordinator last stopped; those with
    // a pending push delivery are pushed when they end.
    let pushed = store.pending_delivery_runs().await?;
    let mut recovered = Vec::new();
    let mut defs = HashMap::new();
    for rec in store.unfinished_runs().await? {
        let key = (rec.workflow_id.clone(), rec.version);
        if !defs.contains_key(&key) {
            if let Some(v) = store.get_version(&rec.workflow_id, rec.version).await? {
                let refs: Vec<String> = weft_shared::validate::env_refs(&v.definition)
                    .into_iter()
                    .collect();
                let vars = store.list_env(&rec.workflow_id).await?;
                let env = api::resolve_env(&crypto, &vars, &refs)
                    .map_err(|e| CoordinatorError::Config(e.to_string()))?;
                match weft_shared::wire::WireDefinition::encode(&v.definition) {
                    Ok(wire) => {
                        defs.insert(key.clone(), (Arc::new(v.definition), wire, Arc::new(env)));
                    }
                    Err(e) => {
                        tracing::error!(workflow_id = %rec.workflow_id, version = rec.version, error = %e, "cannot encode a stored definition")
                    }
                }
            }
        }
        match defs.get(&key) {
            Some((d, wire, env)) => recovered.push(dispatch::Recovered {
                push: pushed.contains(&rec.id),
                record: rec,
                definition: d.clone(),
                wire: wire.clone(),
                env: env.clone(),
            }),
            None => {
                tracing::warn!(run_id = %rec.id, "unfinished run's workflow version is gone; leaving it")
            }
        }
    }
    if !recovered.is_empty() {
        tracing::info!(runs = recovered.len(), "recovered unfinished runs");
    }

    // Stops the dispatcher when the server is done (the process may go on,
    // as in tests that restart a coordinator).
    let tasks = tokio_util::sync::CancellationToken::new();
    let push = push::spawn(
        push::PushConfig::from_config(&config),
        store.clone(),
        secrets::Crypto::new(&config.encryption_key, &config.previous_encryption_keys)
            .map_err(|e| CoordinatorError::Config(e.to_string()))?,
        tasks.clone(),
    )
    .map_err(CoordinatorError::Config)?;
    let assign_replies = subjects.assign_replies(&uuid::Uuid::now_v7().simple().to_string());
    let dispatch = dispatch::spawn(
        dispatch::DispatchConfig {
            nats_disconnected,
            callback_base: config.callback_base(listener.local_addr()?),
            dead_after: Duration::from_millis(config.worker_dead_after_ms),
            assign_timeout: Duration::from_millis(config.assign_timeout_ms),
            assign_replies: assign_replies.clone(),
            deadline_grace: Duration::from_millis(config.deadline_grace_ms),
            push: Some(push),
        },
        store.clone(),
        nats.clone(),
        subjects.clone(),
        recovered,
        tasks.clone(),
    );
    dispatch::listen(nats.clone(), &subjects, &assign_replies, dispatch.clone())
        .await
        .map_err(|e| CoordinatorError::Nats(e.to_string()))?;

    let grace = Duration::from_millis(config.shutdown_grace_ms);
    let state = Arc::new(api::AppState::new(
        config,
        store.clone(),
        dispatch,
        nats.clone(),
        crypto,
    ));
    let app = api::router(state.clone());
    tracing::info!(addr = %listener.local_addr()?, "coordinator listening");

    let stop = tokio_util::sync::CancellationToken::new();
    let stop2 = stop.clone();
    let st2 = state.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: refusing new runs, finishing requests in flight");
        st2.shutting_down.store(true, Ordering::Relaxed);
        stop2.cancel();
    });
    let stop3 = stop.clone();
    let server =
        axum::serve(listener, app).with_graceful_shutdown(async move { stop3.cancelled().await });
    tokio::select! {
        r = server => r?,
        _ = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("shutdown grace period over; closing remaining requests");
        }
    }
    let _ = store.flush().await;
    tasks.cancel();
    let _ = nats.drain().await;
    tracing::info!("coordinator stopped");
    Ok(())
}
