//! The Weft worker: takes runs placed on it over NATS and executes each as an
//! actix actor, each node as a supervised child actor.
//!
//! - [`actors`]: the actor system, the run and node actors, the supervision policy.
//! - [`nodes`]: node kinds, one file each.
//! - [`timeouts`]: the deadline of each level.
//! - [`config`], [`metrics`].
//!
//! [`run`] is the whole worker; `main.rs` only parses flags and calls it.

pub mod actors;
pub mod config;
pub mod metrics;
pub mod nodes;
pub mod timeouts;

pub use config::WorkerConfig;

use actix::prelude::*;
use actors::run::{CancelRun, ResumeNode, RunActor, RunSink};
use actors::ActorRuntime;
use futures::StreamExt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;
use weft_shared::error::ErrorCode;
use weft_shared::model::{RunError, RunStatus};
use weft_shared::subjects::Subjects;
use weft_shared::time::now_ms;
use weft_shared::validate::Plan;
use weft_shared::wire::{
    self, Assign, AssignReply, Cancel, Deregister, Heartbeat, Resume, ResumeReply, RunCheckpoint,
    RunProgress, RunResult,
};

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("nats: {0}")]
    Nats(String),
    #[error("actor system: {0}")]
    Actors(#[from] std::io::Error),
    #[error("http client: {0}")]
    Http(String),
}

/// The queue group of a worker's arbiters on its assign subject.
const ARBITERS_QUEUE_GROUP: &str = "weft-worker-arbiters";

/// Plans kept per (workflow, version) by each arbiter, so a definition is
/// checked once per arbiter.
const PLAN_CACHE: usize = 1_024;

/// How long the answer to a run taken waits for the run's own result (or
/// checkpoint) to answer for it: see [`wire::ANSWER_TAKEN_WITHIN`].
const ANSWER_AFTER: Duration = wire::ANSWER_TAKEN_WITHIN;

/// Answers that fall due are sent together, at most this often.
const ANSWER_GRAIN: Duration = Duration::from_millis(5);

/// State the NATS side and the actors share.
struct Shared {
    worker_id: String,
    capacity: u32,
    inflight: AtomicU32,
    draining: AtomicBool,
    /// Runs (and attempts) whose result or checkpoint is sent and not yet
    /// acknowledged: waited for by the drain, reported as held to a
    /// coordinator that asks. An attempt reports once, so a set.
    unacked: Mutex<HashSet<(Uuid, u32)>>,
    /// Runs held, with their attempt numbers.
    runs: Mutex<HashMap<Uuid, (Addr<RunActor>, u32)>>,
}

/// A running worker, for tests that need its id.
pub struct WorkerInfo {
    pub worker_id: String,
}

/// Runs the worker until `shutdown` completes, then drains: stops taking runs,
/// lets those in flight finish within `drain_grace_ms`, deregisters and exits.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    run_with(config, shutdown, |_| {}).await
}

/// [`run`], calling `started` once the worker listens.
pub async fn run_with(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send,
    started: impl FnOnce(WorkerInfo),
) -> Result<(), WorkerError> {
    weft_shared::telemetry::install_crypto_provider();
    // The recorder first: descriptions given before it exists are lost.
    let prom = weft_shared::telemetry::prometheus();
    metrics::describe();
    let worker_id = config.resolved_worker_id();
    let subjects = Subjects::new(&config.subject_prefix);
    let nats = nats_options(format!("weft-worker-{worker_id}"))
        .connect(config.nats_url.as_str())
        .await
        .map_err(|e| WorkerError::Nats(e.to_string()))?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let actors = Arc::new(ActorRuntime::start(if config.arbiters == 0 {
        cores
    } else {
        config.arbiters
    })?);
    let shared = Arc::new(Shared {
        worker_id: worker_id.clone(),
        capacity: config.capacity,
        inflight: AtomicU32::new(0),
        draining: AtomicBool::new(false),
        unacked: Mutex::new(HashSet::new()),
        runs: Mutex::new(HashMap::new()),
    });
    let env = Arc::new(nodes::NodeEnv {
        script_memory_limit: config.script_memory_limit_bytes,
        script_permits: Arc::new(tokio::sync::Semaphore::new(
            if config.script_concurrency == 0 {
                cores
            } else {
                config.script_concurrency
            },
        )),
        fault_injection: config.fault_injection,
        max_output_bytes: config.max_output_bytes,
        http: http_client()?,
        model_h2c: config
            .model_http2_prior_knowledge
            .then(|| nodes::h2c::H2c::new(tokio::runtime::Handle::current())),
    });
    ::metrics::gauge!(metrics::WORKER_CAPACITY).set(config.capacity as f64);

    // Results, and runs paused at human nodes, go to the coordinator until
    // acknowledged. Each is recorded in `unacked` at once, then handed to the
    // lane of the thread of the actor that ended the run — its arbiter's
    // connection — or, off the arbiters, to the main connection's lane.
    let (main_lane, main_lane_task) = start_lane(&nats, &subjects, &shared, "main")
        .await
        .map_err(|e| WorkerError::Nats(e.to_string()))?;
    tokio::spawn(main_lane_task);
    let results = outbox::<RunResult>(subjects.results(), &shared, &main_lane, |r| {
        (r.run_id, r.attempt)
    });
    let checkpoints = outbox::<RunCheckpoint>(subjects.checkpoints(), &shared, &main_lane, |c| {
        (c.run_id, c.attempt)
    });
    // Progress (waiting / running again) is published as it happens.
    let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel::<RunProgress>();
    {
        let nats = nats.clone();
        let subject = subjects.progress();
        tokio::spawn(async move {
            while let Some(p) = progress_rx.recv().await {
                if let Ok(bytes) = wire::encode(&p) {
                    let _ = nats.publish(subject.clone(), bytes).await;
                }
            }
        });
    }
    let sink = {
        let shared = shared.clone();
        Arc::new(RunSink {
            results,
            progress: progress_tx,
            checkpoints,
            // Called once per run, right after its result (or checkpoint) was
            // handed to delivery, which counted it as unacknowledged *before*
            // the run stops counting as in flight here: otherwise a drain
            // could see both counters at 0 in between, exit, and lose the
            // last run's result.
            on_end: Box::new(move |run_id| {
                if let Ok(mut m) = shared.runs.lock() {
                    m.remove(&run_id);
                }
                let n = shared
                    .inflight
                    .fetch_sub(1, Ordering::SeqCst)
                    .saturating_sub(1);
                ::metrics::gauge!(metrics::WORKER_INFLIGHT).set(n as f64);
            }),
        })
    };

    // Assignments: each arbiter has its own NATS connection, its task on
    // the arbiter's thread, in one queue group on this worker's assign
    // subject. An assignment is decoded, its run actor started and its result
    // sent on one thread, with no hand-off between threads on the way.
    let mut arbiter_nats = Vec::new();
    {
        let mut ready = Vec::new();
        for (i, arbiter) in actors.arbiters().iter().enumerate() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let options = nats_options(format!("weft-worker-{worker_id}-a{i}"));
            let url = config.nats_url.clone();
            let subject = subjects.assign(&worker_id);
            let (subjects, lane_shared) = (subjects.clone(), shared.clone());
            let taker = Taker {
                shared: shared.clone(),
                env: env.clone(),
                sink: sink.clone(),
            };
            arbiter.spawn(async move {
                let subscribed = async {
                    let client = options.connect(url.as_str()).await?;
                    let assigns = client
                        .queue_subscribe(subject, ARBITERS_QUEUE_GROUP.into())
                        .await?;
                    let (lane, lane_task) =
                        start_lane(&client, &subjects, &lane_shared, &i.to_string()).await?;
                    actix_rt::spawn(lane_task);
                    // One round trip on this connection, so the server holds
                    // the subscription before the main connection announces
                    // the worker (across connections nothing is ordered).
                    // Nobody answers: "no responders" is the expected reply.
                    let _ = client
                        .request(client.new_inbox(), bytes::Bytes::new())
                        .await;
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>((client, assigns, lane))
                }
                .await;
                match subscribed {
                    Ok((client, assigns, lane)) => {
                        ARBITER_LANE.with(|l| *l.borrow_mut() = Some(lane));
                        let _ = tx.send(Ok(client.clone()));
                        take_assignments(client, assigns, taker).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
            ready.push(rx);
        }
        for rx in ready {
            match rx.await {
                Ok(Ok(client)) => arbiter_nats.push(client),
                Ok(Err(e)) => return Err(WorkerError::Nats(e)),
                Err(_) => return Err(WorkerError::Nats("an arbiter stopped at start".into())),
            }
        }
    }

    // Cancellations.
    let mut cancels = nats
        .subscribe(subjects.cancel(&worker_id))
        .await
        .map_err(|e| WorkerError::Nats(e.to_string()))?;
    {
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some(msg) = cancels.next().await {
                match wire::decode::<Cancel>(&msg.payload) {
                    Ok(c) => {
                        let addr = shared
                            .runs
                            .lock()
                            .ok()
                            .and_then(|m| m.get(&c.run_id).map(|(a, _)| a.clone()));
                        if let Some(addr) = addr {
                            addr.do_send(CancelRun);
                        }
                    }
                    Err(_) => ::metrics::counter!(metrics::WIRE_ERRORS, "subject" => "cancel")
                        .increment(1),
                }
            }
        });
    }

    // Callbacks for waiting nodes, forwarded by the coordinator.
    let mut resumes = nats
        .subscribe(subjects.resume(&worker_id))
        .await
        .map_err(|e| WorkerError::Nats(e.to_string()))?;
    {
        let shared = shared.clone();
        let nats = nats.clone();
        tokio::spawn(async move {
            while let Some(msg) = resumes.next().await {
                let outcome = match wire::decode::<Resume>(&msg.payload) {
                    Ok(r) => {
                        let addr = shared
                            .runs
                            .lock()
                            .ok()
                            .and_then(|m| m.get(&r.run_id).map(|(a, _)| a.clone()));
                        match addr {
                            Some(addr) => addr
                                .send(ResumeNode {
                                    node_id: r.node_id,
                                    token: r.token,
                                    payload: r.payload,
                                })
                                .await
                                .unwrap_or_else(|_| "unknown_run".into()),
                            None => "unknown_run".into(),
                        }
                    }
                    Err(_) => {
                        ::metrics::counter!(metrics::WIRE_ERRORS, "subject" => "resume")
                            .increment(1);
                        "bad_message".to_string()
                    }
                };
                if let (Some(to), Ok(bytes)) = (msg.reply, wire::encode(&ResumeReply { outcome })) {
                    let _ = nats.publish(to, bytes).await;
                }
            }
        });
    }

    // A coordinator that restarted asks what we hold, to adopt it.
    let mut held_queries = nats
        .subscribe(subjects.held_runs(&worker_id))
        .await
        .map_err(|e| WorkerError::Nats(e.to_string()))?;
    {
        let shared = shared.clone();
        let nats = nats.clone();
        tokio::spawn(async move {
            while let Some(msg) = held_queries.next().await {
                // Runs executing, and runs ended whose result (or checkpoint)
                // is not acknowledged yet: the outcome is here, so the run
                // must not be placed again.
                let mut runs: Vec<(Uuid, u32)> = shared
                    .runs
                    .lock()
                    .map(|m| m.iter().map(|(id, (_, attempt))| (*id, *attempt)).collect())
                    .unwrap_or_default();
                if let Ok(m) = shared.unacked.lock() {
                    runs.extend(m.iter().copied());
                }
                let reply = weft_shared::wire::HeldRuns {
                    worker_id: shared.worker_id.clone(),
                    runs,
                };
                if let (Some(to), Ok(bytes)) = (msg.reply, wire::encode(&reply)) {
                    let _ = nats.publish(to, bytes).await;
                }
            }
        });
    }

    // Heartbeats.
    let started_at_ms = now_ms();
    let interval = Duration::from_millis(config.heartbeat_interval_ms);
    let beat = {
        let nats = nats.clone();
        let subject = subjects.heartbeat();
        let shared = shared.clone();
        let seq = Arc::new(std::sync::atomic::AtomicU64::new(0));
        move || {
            let hb = Heartbeat {
                worker_id: shared.worker_id.clone(),
                capacity: shared.capacity,
                inflight: shared.inflight.load(Ordering::Relaxed),
                draining: shared.draining.load(Ordering::Relaxed),
                seq: seq.fetch_add(1, Ordering::Relaxed),
                started_at_ms,
                labels: Default::default(),
            };
            let nats = nats.clone();
            let subject = subject.clone();
            async move {
                if let Ok(bytes) = wire::encode(&hb) {
                    let _ = nats.publish(subject, bytes).await;
                }
            }
        }
    };
    let heart = {
        let beat = beat.clone();
        tokio::spawn(async move {
            let mut iv = tokio::time::interval(interval);
            loop {
                iv.tick().await;
                beat().await;
            }
        })
    };

    // /metrics, /healthz, /readyz.
    let metrics_server = if config.metrics_addr.is_empty() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&config.metrics_addr).await?;
        let shared = shared.clone();
        let nats = nats.clone();
        let arbiter_nats = arbiter_nats.clone();
        let app = axum::Router::new()
            .route(
                "/metrics",
                axum::routing::get(move || async move { prom.render() }),
            )
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .route(
                "/readyz",
                axum::routing::get(move || async move {
                    let connected = |c: &async_nats::Client| {
                        c.connection_state() == async_nats::connection::State::Connected
                    };
                    let ready = !shared.draining.load(Ordering::Relaxed)
                        && connected(&nats)
                        && arbiter_nats.iter().all(connected);
                    if ready {
                        (axum::http::StatusCode::OK, "ready")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }),
            );
        Some(tokio::spawn(
            async move { axum::serve(listener, app).await },
        ))
    };

    tracing::info!(worker_id = %worker_id, capacity = config.capacity, "worker ready");
    started(WorkerInfo {
        worker_id: worker_id.clone(),
    });
    shutdown.await;

    // Drain.
    tracing::info!(worker_id = %worker_id, "draining: no new runs; finishing runs in flight");
    shared.draining.store(true, Ordering::Relaxed);
    beat().await;
    let grace = Instant::now() + Duration::from_millis(config.drain_grace_ms);
    // `inflight` first: a run leaving it was counted in `unacked` before.
    let unacked = || shared.unacked.lock().map(|m| m.len()).unwrap_or(0);
    while (shared.inflight.load(Ordering::SeqCst) > 0 || unacked() > 0) && Instant::now() < grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = shared.inflight.load(Ordering::Relaxed);
    if left > 0 {
        tracing::warn!(
            runs = left,
            "drain grace over; the coordinator will place the remaining runs again"
        );
    }
    heart.abort();
    if let Ok(bytes) = wire::encode(&Deregister {
        worker_id: worker_id.clone(),
    }) {
        let _ = nats.publish(subjects.deregister(), bytes).await;
    }
    for c in &arbiter_nats {
        let _ = c.drain().await;
    }
    let _ = nats.drain().await;
    if let Some(s) = metrics_server {
        s.abort();
    }
    if let Ok(a) = Arc::try_unwrap(actors) {
        tokio::task::spawn_blocking(move || a.stop()).await.ok();
    }
    tracing::info!(worker_id = %worker_id, "worker stopped");
    Ok(())
}

/// How every connection of the worker to NATS is made.
fn nats_options(name: String) -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        // Back within a second after a NATS restart: the heartbeat deadline
        // (a few seconds) must not be spent waiting to reconnect.
        .reconnect_delay_callback(|attempts| {
            std::time::Duration::from_millis((attempts as u64 * 100).min(1_000))
        })
}

thread_local! {
    /// The lane of the arbiter this thread runs, if it is one: results of
    /// runs ending here are sent on its connection, from this thread.
    static ARBITER_LANE: std::cell::RefCell<Option<Lane>> =
        const { std::cell::RefCell::new(None) };

    /// Runs this arbiter took whose assignment is not answered yet: a result
    /// or checkpoint sent first answers for it (see [`ANSWER_AFTER`]).
    static UNANSWERED: std::cell::RefCell<HashSet<(Uuid, u32)>> =
        std::cell::RefCell::new(HashSet::new());
}

/// What taking an assignment needs, one per arbiter.
struct Taker {
    shared: Arc<Shared>,
    env: Arc<nodes::NodeEnv>,
    sink: Arc<RunSink>,
}

/// An arbiter's loop: takes (or refuses) each assignment it is handed,
/// starting the run on this arbiter, and answers. A refusal is answered at
/// once; a run taken is answered after [`ANSWER_AFTER`] unless its result or
/// checkpoint went first (the coordinator takes either as the answer).
async fn take_assignments(
    nats: async_nats::Client,
    mut assigns: async_nats::Subscriber,
    taker: Taker,
) {
    let mut plans: HashMap<(String, u32), Arc<Plan>> = HashMap::new();
    // (due, run, started at, reply subject), in the order taken.
    let mut unanswered: VecDeque<(Instant, (Uuid, u32), u64, async_nats::Subject)> =
        VecDeque::new();
    let sweep = tokio::time::sleep(ANSWER_AFTER);
    tokio::pin!(sweep);
    loop {
        tokio::select! {
            // Answers due first: a flood of assignments does not hold them.
            biased;
            () = &mut sweep, if !unanswered.is_empty() => {
                let now = Instant::now();
                while unanswered.front().is_some_and(|(due, ..)| *due <= now) {
                    if let Some((_, run, started, to)) = unanswered.pop_front() {
                        answer_taken(&nats, run, started, to).await;
                    }
                }
                if let Some((due, ..)) = unanswered.front() {
                    sweep.as_mut().reset((*due).max(now + ANSWER_GRAIN).into());
                }
            }
            msg = assigns.next() => {
                let Some(msg) = msg else { break };
                let to = msg.reply;
                let reply = match wire::decode::<Assign>(&msg.payload) {
                    Ok(a) => {
                        let run = (a.run_id, a.attempt);
                        match accept(a, &taker, &mut plans) {
                            Taken::Answer(reply) => reply,
                            Taken::Started => {
                                if let Some(to) = to {
                                    let due = Instant::now() + ANSWER_AFTER;
                                    if unanswered.is_empty() {
                                        sweep.as_mut().reset(due.into());
                                    }
                                    UNANSWERED.with(|u| u.borrow_mut().insert(run));
                                    unanswered.push_back((due, run, now_ms(), to));
                                }
                                continue;
                            }
                        }
                    }
                    Err(e) => {
                        ::metrics::counter!(metrics::WIRE_ERRORS, "subject" => "assign").increment(1);
                        tracing::debug!(error = %e, "dropped bad assignment");
                        AssignReply::refused(format!("bad message: {e}"))
                    }
                };
                if let (Some(to), Ok(bytes)) = (to, wire::encode(&reply)) {
                    let _ = nats.publish(to, bytes).await;
                }
            }
        }
    }
    // The subscription ended (the worker drains): answer what is left now.
    for (_, run, started, to) in unanswered {
        answer_taken(&nats, run, started, to).await;
    }
}

/// Answers a taken assignment, unless the run's result or checkpoint did.
async fn answer_taken(
    nats: &async_nats::Client,
    run: (Uuid, u32),
    started_at_ms: u64,
    to: async_nats::Subject,
) {
    if !UNANSWERED.with(|u| u.borrow_mut().remove(&run)) {
        return;
    }
    if let Ok(bytes) = wire::encode(&AssignReply::taken(Some(started_at_ms))) {
        let _ = nats.publish(to, bytes).await;
    }
}

fn http_client() -> Result<reqwest::Client, WorkerError> {
    reqwest::Client::builder()
        .user_agent(nodes::USER_AGENT)
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| WorkerError::Http(e.to_string()))
}

/// What became of an assignment.
enum Taken {
    /// Its run started on this arbiter; the answer can wait.
    Started,
    /// Refused, a repeat, or ended at once: answer now.
    Answer(AssignReply),
}

/// Takes or refuses an assignment; a run taken starts on this arbiter.
fn accept(a: Assign, taker: &Taker, plans: &mut HashMap<(String, u32), Arc<Plan>>) -> Taken {
    let Taker { shared, env, sink } = taker;
    let refuse = |reason: &str| Taken::Answer(AssignReply::refused(reason));
    if shared.draining.load(Ordering::Relaxed) {
        return refuse("draining");
    }
    // Decided and registered under one lock: every arbiter takes
    // assignments, so a repeated assignment arriving on two of them, or the
    // last free slot asked for by two, is decided once. It is the lock a run
    // is removed under (`on_end`), so a run that ends — or pauses at a human
    // node — at once does not stay registered, and its next assignment here
    // is not taken for a repeat of this one.
    let Ok(mut runs) = shared.runs.lock() else {
        return refuse("worker state unavailable");
    };
    // A repeated assignment of a run already here — executing, or ended
    // with its outcome not yet acknowledged: confirm it again.
    let ended_here = || {
        shared
            .unacked
            .lock()
            .is_ok_and(|u| u.contains(&(a.run_id, a.attempt)))
    };
    if runs.contains_key(&a.run_id) || ended_here() {
        return Taken::Answer(AssignReply::taken(None));
    }
    if shared.inflight.load(Ordering::Relaxed) >= shared.capacity {
        return refuse("at capacity");
    }
    // Checked once per (workflow, version); a hit costs a lookup only.
    let key = (a.workflow_id.clone(), a.version);
    let plan = match plans.get(&key) {
        Some(p) => Ok(p.clone()),
        None => a
            .definition
            .decode()
            .map_err(|e| {
                vec![weft_shared::validate::ValidationError {
                    node_id: None,
                    code: "undecodable_definition",
                    message: e.to_string(),
                }]
            })
            .and_then(|d| weft_shared::validate::validate(&d))
            .map(|p| {
                let p = Arc::new(p);
                if plans.len() >= PLAN_CACHE {
                    plans.clear();
                }
                plans.insert(key, p.clone());
                p
            }),
    };
    let n = shared.inflight.fetch_add(1, Ordering::Relaxed) + 1;
    ::metrics::gauge!(metrics::WORKER_INFLIGHT).set(n as f64);
    let plan = match plan {
        Ok(p) => p,
        Err(errors) => {
            // Cannot happen for a definition the coordinator deployed, unless
            // versions disagree; fail the run rather than the worker.
            drop(runs);
            let msg = errors
                .iter()
                .map(|e| e.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            (sink.results)(RunResult {
                run_id: a.run_id,
                attempt: a.attempt,
                worker_id: shared.worker_id.clone(),
                status: RunStatus::Failed,
                output: None,
                error: Some(RunError::new(ErrorCode::InvalidDefinition, msg)),
                nodes: vec![],
                started_at_ms: now_ms(),
                ended_at_ms: now_ms(),
                model_runs: vec![],
                usage: Default::default(),
            });
            (sink.on_end)(a.run_id);
            return Taken::Answer(AssignReply::taken(None));
        }
    };
    let (env, sink) = (env.clone(), sink.clone());
    let worker_id = shared.worker_id.clone();
    let run_id = a.run_id;
    let attempt = a.attempt;
    let start = move |_: &mut actix::Context<RunActor>| {
        RunActor::new(
            run_id,
            a.attempt,
            a.workflow_id,
            worker_id,
            plan,
            a.input,
            a.deadline_ms,
            a.env,
            a.callback_base,
            a.traceparent,
            a.checkpoint,
            env,
            sink,
        )
    };
    let addr = RunActor::create(start);
    runs.insert(run_id, (addr, attempt));
    Taken::Started
}

/// What an actor calls to hand a result (or a checkpoint) over: counts it in
/// `unacked`, encodes it, and hands it to the lane of this arbiter (or, off
/// the arbiters, the main connection's).
fn outbox<T: wire::Message + Send + 'static>(
    subject: String,
    shared: &Arc<Shared>,
    main_lane: &Lane,
    run_of: fn(&T) -> (Uuid, u32),
) -> Box<dyn Fn(T) + Send + Sync> {
    let (shared, main_lane) = (shared.clone(), main_lane.clone());
    let subject = async_nats::Subject::from(subject);
    Box::new(move |m| {
        let run = run_of(&m);
        let bytes = match wire::encode(&m) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(run_id = %run.0, error = %e, "result does not encode; not sent");
                return;
            }
        };
        if let Ok(mut u) = shared.unacked.lock() {
            u.insert(run);
        }
        let out = Outgoing {
            subject: subject.clone(),
            run,
            bytes,
        };
        let out = ARBITER_LANE.with(|l| match &*l.borrow() {
            // On an arbiter: the run was taken here, so this answers its
            // assignment if nothing did yet.
            Some(lane) => {
                UNANSWERED.with(|u| u.borrow_mut().remove(&run));
                lane.send(out).err().map(|e| e.0)
            }
            None => Some(out),
        });
        if let Some(out) = out {
            if main_lane.send(out).is_err() {
                tracing::warn!(run_id = %run.0, "worker stopping: result not sent");
                acked(&shared, run);
            }
        }
    })
}

/// `run`'s outcome is acknowledged (or can no longer be sent).
fn acked(shared: &Shared, run: (Uuid, u32)) {
    if let Ok(mut u) = shared.unacked.lock() {
        u.remove(&run);
    }
}

/// A result or checkpoint for a lane to send.
struct Outgoing {
    subject: async_nats::Subject,
    run: (Uuid, u32),
    bytes: bytes::Bytes,
}

/// Hands results and checkpoints to a lane's task.
type Lane = tokio::sync::mpsc::UnboundedSender<Outgoing>;

/// How long a lane waits for the ack of what it sent before sending again.
const ACK_WAIT: Duration = Duration::from_secs(5);

/// How often a lane looks for what to send again.
const RESEND_SWEEP: Duration = Duration::from_millis(50);

/// Subscribes to the acks of one NATS connection (`lane`: `main`, or an
/// arbiter's number) and returns the lane with its task, for the caller to
/// spawn where the connection is used (an arbiter's on the arbiter's thread).
async fn start_lane(
    nats: &async_nats::Client,
    subjects: &Subjects,
    shared: &Arc<Shared>,
    lane: &str,
) -> Result<(Lane, impl Future<Output = ()> + Send + 'static), async_nats::SubscribeError> {
    let ack_subject = subjects.acks(&shared.worker_id, lane);
    let acks = nats.subscribe(ack_subject.clone()).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let task = run_lane(nats.clone(), ack_subject.into(), acks, rx, shared.clone());
    Ok((tx, task))
}

/// Something a lane sent and waits to hear is durable.
struct Unacked {
    subject: async_nats::Subject,
    bytes: bytes::Bytes,
    sent: Instant,
    /// Once NATS has said nobody listens: the delays between sends, and
    /// the current one.
    backoff: Option<(backon::ExponentialBackoff, Duration)>,
}

/// Delays between sends while no coordinator listens: 50 ms doubling to
/// 5 s, jittered so that a coordinator coming back is not met by every
/// result at once.
fn resend_delays() -> (backon::ExponentialBackoff, Duration) {
    use backon::BackoffBuilder;
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(50))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build();
    let first = delays.next().unwrap_or(ACK_WAIT);
    (delays, first)
}

/// A lane's task: sends what it is handed with its ack subject as the reply
/// subject, and keeps it until a [`wire::ResultAcks`] names it (the
/// coordinator acks once it is durable, a batch at a time). Unacked after
/// [`ACK_WAIT`], it is sent again; while NATS says no coordinator listens,
/// sooner — after 50 ms, doubling to 5 s. Gives up only when the process ends.
async fn run_lane(
    nats: async_nats::Client,
    ack_subject: async_nats::Subject,
    mut acks: async_nats::Subscriber,
    mut outgoing: tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
    shared: Arc<Shared>,
) {
    let mut unacked: HashMap<(Uuid, u32), Unacked> = HashMap::new();
    // Since NATS last said nobody listens on the results subject, and no
    // ack came since.
    let mut nobody_listens = false;
    let sweep = tokio::time::sleep(RESEND_SWEEP);
    tokio::pin!(sweep);
    loop {
        tokio::select! {
            out = outgoing.recv() => {
                let Some(out) = out else { break };
                let _ = nats
                    .publish_with_reply(out.subject.clone(), ack_subject.clone(), out.bytes.clone())
                    .await;
                if unacked.is_empty() {
                    sweep.as_mut().reset((Instant::now() + RESEND_SWEEP).into());
                }
                unacked.insert(
                    out.run,
                    Unacked {
                        subject: out.subject,
                        bytes: out.bytes,
                        sent: Instant::now(),
                        backoff: None,
                    },
                );
            }
            msg = acks.next() => {
                let Some(msg) = msg else { break };
                if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                    nobody_listens = true;
                    continue;
                }
                match wire::decode::<wire::ResultAcks>(&msg.payload) {
                    Ok(a) => {
                        nobody_listens = false;
                        for run in a.runs {
                            if unacked.remove(&run).is_some() {
                                acked(&shared, run);
                            }
                        }
                    }
                    // A coordinator from before `ResultAcks` answers each
                    // result with a `ResultAck` naming its run.
                    Err(e) => match wire::decode::<wire::ResultAck>(&msg.payload) {
                        Ok(a) => {
                            nobody_listens = false;
                            let of_run: Vec<_> =
                                unacked.keys().filter(|k| k.0 == a.run_id).copied().collect();
                            for run in of_run {
                                unacked.remove(&run);
                                acked(&shared, run);
                            }
                        }
                        Err(_) => {
                            ::metrics::counter!(metrics::WIRE_ERRORS, "subject" => "acks").increment(1);
                            tracing::debug!(error = %e, "dropped a bad ack");
                        }
                    },
                }
            }
            () = &mut sweep, if !unacked.is_empty() => {
                let now = Instant::now();
                for u in unacked.values_mut() {
                    let wait = if nobody_listens {
                        u.backoff.get_or_insert_with(resend_delays).1
                    } else {
                        ACK_WAIT
                    };
                    if now.duration_since(u.sent) < wait {
                        continue;
                    }
                    ::metrics::counter!(metrics::RESULT_RETRIES).increment(1);
                    let _ = nats
                        .publish_with_reply(u.subject.clone(), ack_subject.clone(), u.bytes.clone())
                        .await;
                    u.sent = Instant::now();
                    if let Some((delays, wait)) = &mut u.backoff {
                        *wait = delays.next().unwrap_or(ACK_WAIT);
                    }
                }
                sweep.as_mut().reset((now + RESEND_SWEEP).into());
            }
        }
    }
    // The connection is closing (the process ends): what is still unacked
    // cannot be sent from here; the drain is not held up for it, and the
    // coordinator places those runs again when this worker is gone.
    if !unacked.is_empty() {
        tracing::warn!(
            results = unacked.len(),
            "results unacknowledged at shutdown"
        );
    }
    for run in unacked.into_keys() {
        acked(&shared, run);
    }
}
