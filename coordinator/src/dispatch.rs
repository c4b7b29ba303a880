//! The dispatcher: one task that owns the worker registry, the queue of runs
//! waiting for capacity and every run in flight.
//!
//! Everything that changes that state arrives as a [`Cmd`] — from the HTTP
//! API (submit, cancel), from NATS (heartbeats, results, assignment replies)
//! and from a ticker (dead workers, deadlines, assignments left unanswered) —
//! so there are no locks and the order of events is the order they are
//! handled in.
//!
//! Assignments are published by the dispatcher itself at the end of each
//! pass, each with the reply subject `<p>.coordinator.<process>.assigned.
//! <run>.<seq>`: `seq` numbers the sending, so a late answer to an earlier
//! sending (to another worker) is never taken for the current one.
//!
//! A run moves: queued → (placed on a worker, which confirms) → running →
//! terminal. When a worker stops heart-beating it is declared dead and its
//! runs go back to the front of the queue with a new attempt (at-least-once).
//! A run that outlives its workflow deadline by `deadline_grace_ms` without a
//! word from its worker is ended `timed_out` here.
//!
//! A run that pauses at `human` nodes comes back from its worker as a
//! checkpoint and is *parked*: no worker holds it, and its wait's deadline —
//! the earliest of its waiting nodes', each already bounded by the workflow
//! deadline — is enforced here, on the dot (no worker will). A resume adds
//! the answer to the checkpoint and queues the run again; any worker takes
//! it from there. Parked runs are stored with their checkpoint, so a
//! restarted coordinator parks them again.

use crate::metrics as m;
use crate::model::RunRecord;
use crate::placement::{self, WorkerView};
use crate::store::{Store, WriteError};
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;
use weft_shared::error::ErrorCode;
use weft_shared::model::{
    HumanResume, NodeLog, NodeStatus, RunAttempt, RunError, RunStatus, WorkflowDefinition,
};
use weft_shared::secret::SecretString;
use weft_shared::subjects::Subjects;
use weft_shared::telemetry::bounded_label;
use weft_shared::time::{now_ms, TimeoutLevel};
use weft_shared::wire::{
    self, Assign, AssignReply, Cancel, EnvValue, Heartbeat, Resume, ResumeReply, RunCheckpoint,
    RunProgress, RunResult, WireDefinition,
};

/// How often dead workers and overdue runs are looked for.
const TICK: Duration = Duration::from_millis(100);
/// Longest the dispatcher waits for room in the NATS client's buffer.
const PUBLISH_WAIT: Duration = Duration::from_millis(100);
/// How long a worker that refused an assignment is skipped.
const BLOCK_AFTER_REFUSAL: Duration = Duration::from_millis(500);

/// A run handed to the dispatcher.
pub struct Submission {
    pub record: RunRecord,
    pub definition: Arc<WorkflowDefinition>,
    /// The same, encoded for assignments.
    pub wire: WireDefinition,
    /// Hears the run's final record (synchronous runs).
    pub waiter: Option<oneshot::Sender<RunRecord>>,
    pub traceparent: Option<String>,
    /// The variables the run names, decrypted for it.
    pub env: Arc<BTreeMap<String, EnvValue>>,
    /// Its result is pushed when it ends (its delivery is stored).
    pub push: bool,
}

pub enum Cmd {
    Submit(Box<Submission>),
    Heartbeat(Heartbeat),
    Deregister(String),
    /// A worker's result; the worker is acked once it is durable (or known).
    Result(Box<RunResult>, Ack),
    /// A run paused at human nodes, handed back by its worker; the worker
    /// is acked once it is durable (or known).
    Checkpoint(Box<RunCheckpoint>, Ack),
    /// Which waiting node a resume is for (`node_id`, or the only one), and
    /// the run's definition (to check the value against the node's schema).
    ResumeTarget {
        run_id: Uuid,
        node_id: Option<String>,
        reply: oneshot::Sender<Result<(String, Arc<WorkflowDefinition>), ResumeRefusal>>,
    },
    /// Resume a parked run at `node_id`, once; `reply` hears the run's record
    /// once the answer is durable.
    Resume {
        run_id: Uuid,
        node_id: String,
        value: serde_json::Value,
        by: String,
        reply: oneshot::Sender<Result<RunRecord, ResumeRefusal>>,
    },
    /// The answer of a `Resume` was written (or not).
    Resumed {
        record: Box<RunRecord>,
        written: Result<(), WriteError>,
        reply: oneshot::Sender<Result<RunRecord, ResumeRefusal>>,
    },
    /// A worker answered an assignment (or NATS said nobody listens);
    /// `seq` names the sending (see `LiveRun::assign_seq`).
    AssignDone {
        run_id: Uuid,
        seq: u64,
        outcome: Result<AssignReply, AssignFailure>,
    },
    /// Whether the worker holds the run of sending `seq` could not be
    /// learnt: ask again after another `assign_timeout`.
    AskAgain {
        run_id: Uuid,
        seq: u64,
    },
    Cancel(Uuid, oneshot::Sender<Option<RunRecord>>),
    /// The runs a worker says it holds (asked when it joined): adopt them.
    Adopt {
        worker_id: String,
        runs: Vec<(Uuid, u32)>,
    },
    /// Hear a live run's final record (a repeated idempotent sync request);
    /// the sender is dropped at once if the run is not live.
    Watch(Uuid, oneshot::Sender<RunRecord>),
    /// A run went `waiting` or back to `running` on its worker.
    Progress(RunProgress),
    /// A callback for a waiting node; `reply` hears the worker's verdict.
    Callback {
        run_id: Uuid,
        node_id: String,
        token: SecretString,
        payload: serde_json::Value,
        reply: oneshot::Sender<String>,
    },
    Workers(oneshot::Sender<Vec<WorkerInfo>>),
    Tick,
}

/// Why a resume was not taken.
#[derive(Debug)]
pub enum ResumeRefusal {
    /// Not a live run here (unknown, or ended).
    UnknownRun,
    /// The run is live but not paused at a human node.
    NotWaiting {
        status: RunStatus,
        waiting: Vec<String>,
    },
    /// The run waits, but not at this node.
    NodeNotWaiting {
        node_id: String,
        waiting: Vec<String>,
    },
    /// Several nodes wait and the request named none.
    Ambiguous { waiting: Vec<String> },
    /// The wait's deadline passed: the run has just ended `timed_out`.
    TimedOut,
    /// The answer could not be made durable.
    WriteFailed(String),
}

#[derive(Debug)]
pub enum AssignFailure {
    /// Nobody listens on the worker's subject (yet: it may be reconnecting).
    NoResponders,
    Other(String),
}

/// A worker as `GET /v1/workers` shows it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    pub worker_id: String,
    pub capacity: u32,
    /// Runs the coordinator has placed on it and not seen finish.
    pub assigned: usize,
    /// What the worker last reported.
    pub reported_inflight: u32,
    pub draining: bool,
    pub last_seen_ms_ago: u64,
}

/// Counters the HTTP layer reads without a round trip to the dispatcher.
#[derive(Default)]
pub struct Stats {
    pub pending: AtomicUsize,
    pub live_workers: AtomicUsize,
    pub inflight: AtomicUsize,
    /// Runs not yet ended, per workflow id (for the per-workflow limit).
    pub per_workflow: std::sync::Mutex<HashMap<String, usize>>,
}

impl Stats {
    pub fn live_runs_of(&self, workflow_id: &str) -> usize {
        self.per_workflow
            .lock()
            .map(|m| m.get(workflow_id).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn add_run(&self, workflow_id: &str) {
        if let Ok(mut m) = self.per_workflow.lock() {
            *m.entry(workflow_id.to_string()).or_default() += 1;
        }
    }

    /// Counts a new run of `workflow_id` among its live runs — unless
    /// `limit` (when not 0) are live already — in one step, so concurrent
    /// requests cannot all pass the limit. Dropping the claim uncounts it;
    /// [`DispatchHandle::submit`] keeps it for the run's life.
    pub fn claim_run(self: &Arc<Self>, workflow_id: &str, limit: usize) -> Option<RunClaim> {
        let mut m = self.per_workflow.lock().ok()?;
        let live = m.get(workflow_id).copied().unwrap_or(0);
        if limit > 0 && live >= limit {
            return None;
        }
        m.insert(workflow_id.to_string(), live + 1);
        Some(RunClaim {
            stats: self.clone(),
            workflow_id: Some(workflow_id.to_string()),
        })
    }

    fn end_run(&self, workflow_id: &str) {
        if let Ok(mut m) = self.per_workflow.lock() {
            if let Some(n) = m.get_mut(workflow_id) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(workflow_id);
                }
            }
        }
    }
}

/// A run counted among its workflow's live runs ([`Stats::claim_run`]);
/// uncounted when dropped unless the dispatcher took the run.
pub struct RunClaim {
    stats: Arc<Stats>,
    workflow_id: Option<String>,
}

impl Drop for RunClaim {
    fn drop(&mut self) {
        if let Some(w) = self.workflow_id.take() {
            self.stats.end_run(&w);
        }
    }
}

#[derive(Clone)]
pub struct DispatchHandle {
    tx: mpsc::UnboundedSender<Cmd>,
    pub stats: Arc<Stats>,
}

impl DispatchHandle {
    pub fn send(&self, cmd: Cmd) -> bool {
        self.tx.send(cmd).is_ok()
    }

    /// Hands a new run to the dispatcher, with the claim that counted it
    /// among its workflow's live runs before its caller was answered: the
    /// count is the dispatcher's to end from here (or the claim's, if the
    /// dispatcher is gone).
    pub fn submit(&self, s: Submission, mut claim: RunClaim) -> bool {
        let sent = self.send(Cmd::Submit(Box::new(s)));
        if sent {
            claim.workflow_id = None;
        }
        sent
    }

    pub async fn cancel(&self, run_id: Uuid) -> Option<RunRecord> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Cancel(run_id, tx));
        rx.await.ok().flatten()
    }

    pub async fn workers(&self) -> Vec<WorkerInfo> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Workers(tx));
        rx.await.unwrap_or_default()
    }
}

pub struct DispatchConfig {
    /// Set by the NATS client's event callback when it loses the server, so a
    /// short outage between two ticks is not missed.
    pub nats_disconnected: Arc<std::sync::Mutex<Option<Instant>>>,
    /// Base URL external systems call back on (async API nodes).
    pub callback_base: String,
    pub dead_after: Duration,
    pub assign_timeout: Duration,
    /// Where workers' answers to assignments come back: this subject, then
    /// `.<run id>.<seq>` (unique to this coordinator process).
    pub assign_replies: String,
    pub deadline_grace: Duration,
    /// Hears of ended runs whose result is pushed.
    pub push: Option<crate::push::PushHandle>,
}

struct WorkerEntry {
    capacity: u32,
    reported_inflight: u32,
    draining: bool,
    last_seen: Instant,
    started_at_ms: u64,
    blocked_until: Option<Instant>,
    assigned: HashSet<Uuid>,
}

enum Placement {
    Pending,
    Assigning(String),
    Running(String),
    /// Was running when the coordinator last stopped; a worker may still
    /// report it. Re-queued if none does within `dead_after`.
    Orphaned(Instant),
    /// Paused at human nodes: no worker holds it; its checkpoint is on the
    /// record and its wait's deadline in `Dispatcher::waits`.
    Parked,
    /// Parked, with an answer being made durable: queued once it is (a
    /// second answer is refused meanwhile; a failed write parks it again).
    Resuming,
}

struct LiveRun {
    record: RunRecord,
    definition: Arc<WorkflowDefinition>,
    wire: WireDefinition,
    waiters: Vec<oneshot::Sender<RunRecord>>,
    placement: Placement,
    traceparent: Option<String>,
    env: Arc<BTreeMap<String, EnvValue>>,
    push: bool,
    /// Which sending of an assignment the run waits to hear about: answers
    /// and timeouts of an earlier one (to another worker, or refused) are
    /// ignored.
    assign_seq: u64,
}

struct Dispatcher {
    cfg: DispatchConfig,
    store: Store,
    nats: async_nats::Client,
    subjects: Subjects,
    tx: mpsc::UnboundedSender<Cmd>,
    stats: Arc<Stats>,
    workers: HashMap<String, WorkerEntry>,
    runs: HashMap<Uuid, LiveRun>,
    pending: VecDeque<Uuid>,
    deadlines: BinaryHeap<Reverse<(u64, Uuid)>>,
    /// Deadlines of parked runs' waits (the earliest of each run's waiting
    /// nodes); entries of runs no longer parked are skipped when due.
    waits: BinaryHeap<Reverse<(u64, Uuid)>>,
    rotation: usize,
    /// When this coordinator's own NATS connection was last seen down. While
    /// it is down no heartbeat can arrive, so silence proves nothing; workers
    /// get `dead_after` from the reconnection to be heard again.
    nats_down_at: Option<Instant>,
    meters: Meters,
    /// Assignments to publish once this pass is over.
    outgoing: Vec<Outgoing>,
    /// Assignments sent, by when they must be answered (the timeout is
    /// fixed, so they are in order): (deadline, run, seq). Answered ones
    /// stay until their deadline, then no longer match their run.
    unconfirmed: VecDeque<(Instant, Uuid, u64)>,
    /// The last `LiveRun::assign_seq` given.
    assign_seq: u64,
}

/// Metric handles the dispatcher updates on every pass and every run,
/// registered once: updating a handle is an atomic operation, while a
/// `counter!` with labels builds its key and looks it up in the registry.
struct Meters {
    pending: metrics::Gauge,
    pending_oldest: metrics::Gauge,
    workers_ready: metrics::Gauge,
    workers_draining: metrics::Gauge,
    runs_waiting: metrics::Gauge,
    placement: metrics::Histogram,
    /// Per workflow id; forgotten all at once when it outgrows twice the
    /// label cap (deleted workflows), then rebuilt as runs come.
    workflows: HashMap<String, WorkflowMeters>,
}

struct WorkflowMeters {
    label: String,
    started: metrics::Counter,
    duration: metrics::Histogram,
    completed: Vec<(RunStatus, metrics::Counter)>,
}

impl Meters {
    fn new() -> Meters {
        Meters {
            pending: metrics::gauge!(m::PENDING_RUNS),
            pending_oldest: metrics::gauge!(m::PENDING_OLDEST_AGE),
            workers_ready: metrics::gauge!(m::WORKERS, "state" => "ready"),
            workers_draining: metrics::gauge!(m::WORKERS, "state" => "draining"),
            runs_waiting: metrics::gauge!(m::RUNS_WAITING),
            placement: metrics::histogram!(m::PLACEMENT_DURATION),
            workflows: HashMap::new(),
        }
    }

    fn workflow(&mut self, id: &str) -> &mut WorkflowMeters {
        if !self.workflows.contains_key(id) {
            if self.workflows.len() >= 2 * weft_shared::telemetry::label_cap() {
                self.workflows.clear();
            }
            let label = bounded_label("workflow", id);
            let meters = WorkflowMeters {
                started: metrics::counter!(m::RUNS_STARTED, "workflow" => label.clone()),
                duration: metrics::histogram!(m::RUN_DURATION, "workflow" => label.clone()),
                label,
                completed: Vec::new(),
            };
            self.workflows.insert(id.to_string(), meters);
        }
        self.workflows
            .get_mut(id)
            .expect("inserted above if it was missing")
    }

    fn run_completed(&mut self, workflow_id: &str, status: RunStatus, secs: f64) {
        let w = self.workflow(workflow_id);
        w.duration.record(secs);
        match w.completed.iter().find(|(s, _)| *s == status) {
            Some((_, c)) => c.increment(1),
            None => {
                let c = metrics::counter!(m::RUNS_COMPLETED, "workflow" => w.label.clone(), "status" => status.as_str());
                c.increment(1);
                w.completed.push((status, c));
            }
        }
    }
}

/// A run found unfinished in the store at start, with what it needs to run.
pub struct Recovered {
    pub record: RunRecord,
    pub definition: Arc<WorkflowDefinition>,
    pub wire: WireDefinition,
    pub env: Arc<BTreeMap<String, EnvValue>>,
    /// It has a pending push delivery.
    pub push: bool,
}

/// Starts the dispatcher. `recovered` are runs the store holds unfinished
/// (the coordinator restarted): they wait for the workers, asked as they
/// join, to say which they hold; the others are placed again after `dead_after`.
pub fn spawn(
    cfg: DispatchConfig,
    store: Store,
    nats: async_nats::Client,
    subjects: Subjects,
    recovered: Vec<Recovered>,
    stop: tokio_util::sync::CancellationToken,
) -> DispatchHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let stats = Arc::new(Stats::default());
    let mut d = Dispatcher {
        cfg,
        store,
        nats,
        subjects,
        tx: tx.clone(),
        stats: stats.clone(),
        workers: HashMap::new(),
        runs: HashMap::new(),
        pending: VecDeque::new(),
        deadlines: BinaryHeap::new(),
        waits: BinaryHeap::new(),
        rotation: 0,
        nats_down_at: None,
        meters: Meters::new(),
        outgoing: Vec::new(),
        unconfirmed: VecDeque::new(),
        assign_seq: 0,
    };
    for Recovered {
        record,
        definition,
        wire,
        env,
        push,
    } in recovered
    {
        // Even a run stored as queued may be on a worker (its assignment
        // went out before the status change was durable): every recovered run
        // waits for the workers to say what they hold, and is placed again
        // only if none claims it within `dead_after`. A run paused at human
        // nodes is on no worker: it is parked again, its wait's deadline kept.
        let parked = record.status == RunStatus::Waiting && record.checkpoint.is_some();
        let placement = if parked {
            if let Some(at) = record.waiting.iter().map(|w| w.deadline_ms).min() {
                d.waits.push(Reverse((at, record.id)));
            }
            Placement::Parked
        } else {
            Placement::Orphaned(Instant::now())
        };
        d.deadlines.push(Reverse((record.deadline_ms, record.id)));
        d.stats.add_run(&record.workflow_id);
        d.runs.insert(
            record.id,
            LiveRun {
                record,
                definition,
                wire,
                waiters: Vec::new(),
                placement,
                traceparent: None,
                env,
                push,
                assign_seq: 0,
            },
        );
    }
    let ticker = tx.clone();
    let stop2 = stop.clone();
    tokio::spawn(async move {
        let mut iv = tokio::time::interval(TICK);
        iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop2.cancelled() => break,
                _ = iv.tick() => {}
            }
            if ticker.send(Cmd::Tick).is_err() {
                break;
            }
        }
    });
    tokio::spawn(d.run(rx, stop));
    DispatchHandle { tx, stats }
}

impl Dispatcher {
    async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Cmd>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        loop {
            let cmd = tokio::select! {
                _ = stop.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    Some(c) => c,
                    None => break,
                },
            };
            self.handle(cmd);
            // Drain what else is waiting before placing, so a burst of
            // submissions is placed in one pass.
            while let Ok(cmd) = rx.try_recv() {
                self.handle(cmd);
            }
            self.try_place();
            self.publish_stats();
            self.send_assignments().await;
        }
    }

    /// Publishes the assignments of this pass straight from the dispatcher:
    /// no task per assignment, no per-request inbox. Answers come back on
    /// this coordinator's reply subject ([`listen`]); silence is noticed by
    /// [`Dispatcher::tick`]. Never waits on NATS for long: while the client
    /// is not connected (or its outgoing buffer stays full for
    /// [`PUBLISH_WAIT`]) the assignments fail at once and their runs wait
    /// in the queue, so commands, ticks and deadlines keep being handled.
    async fn send_assignments(&mut self) {
        if self.outgoing.is_empty() {
            return;
        }
        let deadline = Instant::now() + self.cfg.assign_timeout;
        let mut blocked = (self.nats.connection_state()
            != async_nats::connection::State::Connected)
            .then(|| "NATS is not connected".to_string());
        for a in std::mem::take(&mut self.outgoing) {
            if blocked.is_none() {
                let publish = self.nats.publish_with_reply(a.subject, a.reply, a.message);
                match tokio::time::timeout(PUBLISH_WAIT, publish).await {
                    Ok(Ok(())) => {
                        self.unconfirmed.push_back((deadline, a.run_id, a.seq));
                        continue;
                    }
                    Ok(Err(e)) => blocked = Some(e.to_string()),
                    Err(_) => blocked = Some("NATS is not taking messages".to_string()),
                }
            }
            let why = blocked.clone().unwrap_or_default();
            self.assignment_answered(a.run_id, a.seq, Err(AssignFailure::Other(why)));
        }
    }

    /// The outcome of a run's assignment `seq` — taken only if the run still
    /// waits to hear about that sending, which names its worker and attempt.
    fn assignment_answered(
        &mut self,
        run_id: Uuid,
        seq: u64,
        outcome: Result<AssignReply, AssignFailure>,
    ) {
        if let Some((w, attempt)) = self.awaiting(run_id, seq) {
            self.assign_done(run_id, attempt, w, outcome);
        }
    }

    /// The worker and attempt of the run's sending `seq`, if the run still
    /// waits to hear about that sending.
    fn awaiting(&self, run_id: Uuid, seq: u64) -> Option<(String, u32)> {
        match self.runs.get(&run_id)? {
            LiveRun {
                placement: Placement::Assigning(w),
                assign_seq,
                record,
                ..
            } if *assign_seq == seq => Some((w.clone(), record.attempts.len() as u32)),
            _ => None,
        }
    }

    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Submit(s) => self.submit(*s),
            Cmd::Heartbeat(hb) => self.heartbeat(hb),
            Cmd::Deregister(id) => {
                tracing::info!(worker_id = %id, "worker deregistered");
                self.remove_worker(&id, "worker_deregistered");
            }
            Cmd::Result(r, persisted) => self.result(*r, persisted),
            Cmd::Checkpoint(c, persisted) => self.checkpoint(*c, persisted),
            Cmd::ResumeTarget {
                run_id,
                node_id,
                reply,
            } => {
                let target = self
                    .resume_target(run_id, node_id.as_deref())
                    .and_then(|n| {
                        let run = self.runs.get(&run_id).ok_or(ResumeRefusal::UnknownRun)?;
                        Ok((n, run.definition.clone()))
                    });
                let _ = reply.send(target);
            }
            Cmd::Resume {
                run_id,
                node_id,
                value,
                by,
                reply,
            } => self.resume(run_id, node_id, value, by, reply),
            Cmd::Resumed {
                record,
                written,
                reply,
            } => self.resumed(*record, written, reply),
            Cmd::AssignDone {
                run_id,
                seq,
                outcome,
            } => self.assignment_answered(run_id, seq, outcome),
            Cmd::AskAgain { run_id, seq } => {
                if self.awaiting(run_id, seq).is_some() {
                    let deadline = Instant::now() + self.cfg.assign_timeout;
                    self.unconfirmed.push_back((deadline, run_id, seq));
                }
            }
            Cmd::Cancel(run_id, reply) => {
                let rec = self.finish_here(
                    run_id,
                    RunStatus::Cancelled,
                    RunError::new(ErrorCode::Cancelled, "run cancelled"),
                    None,
                );
                let _ = reply.send(rec);
            }
            Cmd::Workers(reply) => {
                let now = Instant::now();
                let mut list: Vec<WorkerInfo> = self
                    .workers
                    .iter()
                    .map(|(id, w)| WorkerInfo {
                        worker_id: id.clone(),
                        capacity: w.capacity,
                        assigned: w.assigned.len(),
                        reported_inflight: w.reported_inflight,
                        draining: w.draining,
                        last_seen_ms_ago: now.duration_since(w.last_seen).as_millis() as u64,
                    })
                    .collect();
                list.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
                let _ = reply.send(list);
            }
            Cmd::Progress(p) => self.progress(p),
            Cmd::Adopt { worker_id, runs } => self.adopt(worker_id, runs),
            Cmd::Watch(run_id, waiter) => {
                if let Some(run) = self.runs.get_mut(&run_id) {
                    run.waiters.push(waiter);
                }
            }
            Cmd::Callback {
                run_id,
                node_id,
                token,
                payload,
                reply,
            } => self.callback(run_id, node_id, token, payload, reply),
            Cmd::Tick => self.tick(),
        }
    }

    fn progress(&mut self, p: RunProgress) {
        let Some(run) = self.runs.get_mut(&p.run_id) else {
            return;
        };
        // Progress can overtake the assignment's confirmation: it confirms too.
        if matches!(&run.placement, Placement::Assigning(w) if *w == p.worker_id) {
            run.placement = Placement::Running(p.worker_id.clone());
            run.record.started_at_ms.get_or_insert(now_ms());
        }
        let current = matches!(&run.placement, Placement::Running(w) if *w == p.worker_id);
        if !current
            || !matches!(p.status, RunStatus::Waiting | RunStatus::Running)
            || run.record.status == p.status
        {
            return;
        }
        run.record.status = p.status;
        self.store.enqueue_run(&run.record);
    }

    fn callback(
        &mut self,
        run_id: Uuid,
        node_id: String,
        token: SecretString,
        payload: serde_json::Value,
        reply: oneshot::Sender<String>,
    ) {
        let worker = match self.runs.get(&run_id).map(|r| &r.placement) {
            Some(Placement::Running(w)) => w.clone(),
            Some(_) => {
                let _ = reply.send("not_waiting".into());
                return;
            }
            None => {
                let _ = reply.send("unknown_run".into());
                return;
            }
        };
        let nats = self.nats.clone();
        let subject = self.subjects.resume(&worker);
        let timeout = self.cfg.assign_timeout;
        tokio::spawn(async move {
            let msg = Resume {
                run_id,
                node_id,
                token,
                payload,
            };
            let outcome = match wire::encode(&msg) {
                Ok(bytes) => {
                    match tokio::time::timeout(timeout, nats.request(subject, bytes)).await {
                        Ok(Ok(r)) => wire::decode::<ResumeReply>(&r.payload)
                            .map(|r| r.outcome)
                            .unwrap_or_else(|e| e.to_string()),
                        Ok(Err(e)) => e.to_string(),
                        Err(_) => "the worker did not answer in time".into(),
                    }
                }
                Err(e) => e.to_string(),
            };
            let _ = reply.send(outcome);
        });
    }

    /// A run paused at human nodes: park it (no worker holds it now).
    fn checkpoint(&mut self, cp: RunCheckpoint, persisted: Ack) {
        let Some(run) = self.runs.get_mut(&cp.run_id) else {
            // Ended already (cancelled, timed out): nothing to keep.
            persisted.send(true);
            return;
        };
        let current = match &run.placement {
            Placement::Running(w) | Placement::Assigning(w) => {
                *w == cp.worker_id && run.record.attempts.len() as u32 == cp.attempt
            }
            // The coordinator restarted since it was placed: no one else has it.
            Placement::Orphaned(_) => true,
            Placement::Pending | Placement::Parked | Placement::Resuming => false,
        };
        // The same checkpoint again (its first write failed, so the worker
        // heard no ack): write the parked run again and ack once durable —
        // acking at once could leave no checkpoint in the store.
        let repeated = matches!(run.placement, Placement::Parked)
            && run
                .record
                .attempts
                .last()
                .is_some_and(|a| a.attempt == cp.attempt && a.worker_id == cp.worker_id);
        if repeated {
            self.store
                .enqueue_run_then(&run.record, move |w| persisted.send(w.is_ok()));
            return;
        }
        if !current {
            // An attempt other than the current one: the current one stands.
            tracing::debug!(run_id = %cp.run_id, worker_id = %cp.worker_id, "stale checkpoint ignored");
            persisted.send(true);
            return;
        }
        if let Placement::Running(w) | Placement::Assigning(w) = &run.placement {
            if let Some(w) = self.workers.get_mut(w) {
                w.assigned.remove(&cp.run_id);
            }
        }
        let Some(wait_until) = cp.checkpoint.waiting.iter().map(|w| w.deadline_ms).min() else {
            persisted.send(true);
            self.finish_here(
                cp.run_id,
                RunStatus::Failed,
                RunError::new(ErrorCode::Internal, "a checkpoint with no waiting node"),
                None,
            );
            return;
        };
        if let Some(a) = run
            .record
            .attempts
            .iter_mut()
            .rev()
            .find(|a| a.attempt == cp.attempt)
        {
            a.ended_at_ms = Some(cp.ended_at_ms);
            a.outcome = Some(RunStatus::Waiting.as_str().to_string());
        }
        run.placement = Placement::Parked;
        run.record.status = RunStatus::Waiting;
        run.record.started_at_ms.get_or_insert(cp.started_at_ms);
        run.record.nodes.extend(cp.nodes);
        run.record.usage.add(&cp.usage);
        run.record.model_runs.extend(cp.model_runs);
        run.record.waiting = cp.checkpoint.waiting.clone();
        run.record.checkpoint = Some(cp.checkpoint);
        self.waits.push(Reverse((wait_until, cp.run_id)));
        tracing::info!(
            run_id = %cp.run_id,
            waiting = ?run.record.waiting.iter().map(|w| w.node_id.as_str()).collect::<Vec<_>>(),
            "run paused at human nodes"
        );
        self.store
            .enqueue_run_then(&run.record, move |w| persisted.send(w.is_ok()));
        // A synchronous caller hears that the run now waits for a person.
        for w in run.waiters.drain(..) {
            let _ = w.send(run.record.clone());
        }
    }

    /// The node a resume is for: the one named if it waits, else the only
    /// one waiting.
    fn resume_target(&self, run_id: Uuid, node_id: Option<&str>) -> Result<String, ResumeRefusal> {
        let run = self.runs.get(&run_id).ok_or(ResumeRefusal::UnknownRun)?;
        let waiting: Vec<String> = run
            .record
            .waiting
            .iter()
            .map(|w| w.node_id.clone())
            .collect();
        if !matches!(run.placement, Placement::Parked) {
            return Err(ResumeRefusal::NotWaiting {
                status: run.record.status,
                waiting,
            });
        }
        match node_id {
            Some(n) if waiting.iter().any(|w| w == n) => Ok(n.to_string()),
            Some(n) => Err(ResumeRefusal::NodeNotWaiting {
                node_id: n.to_string(),
                waiting,
            }),
            None if waiting.len() == 1 => Ok(waiting[0].clone()),
            None => Err(ResumeRefusal::Ambiguous { waiting }),
        }
    }

    /// Resumes a parked run at one node: the answer joins the checkpoint and
    /// the run is queued again, for any worker. Only one resume of a node can
    /// get here while the run is parked: the first moves it on.
    fn resume(
        &mut self,
        run_id: Uuid,
        node_id: String,
        value: serde_json::Value,
        by: String,
        reply: oneshot::Sender<Result<RunRecord, ResumeRefusal>>,
    ) {
        if let Err(e) = self.resume_target(run_id, Some(&node_id)) {
            let _ = reply.send(Err(e));
            return;
        }
        let now = now_ms();
        // Answered too late: the wait is over, whether or not the tick saw it.
        if self.wait_expired(run_id, now) {
            let _ = reply.send(Err(ResumeRefusal::TimedOut));
            return;
        }
        let Some(run) = self.runs.get_mut(&run_id) else {
            let _ = reply.send(Err(ResumeRefusal::UnknownRun));
            return;
        };
        let answer = HumanResume {
            node_id: node_id.clone(),
            value,
            resumed_by: by,
            resumed_at_ms: now,
        };
        // The answer takes effect only once it is durable: a caller told it
        // failed must not find the run going on with it.
        let mut record = run.record.clone();
        record.resumes.push(answer.clone());
        record.waiting.retain(|w| w.node_id != node_id);
        if let Some(cp) = record.checkpoint.as_mut() {
            cp.resumed.push(answer);
        }
        record.status = RunStatus::Queued;
        run.placement = Placement::Resuming;
        let back = self.tx.clone();
        let written_record = record.clone();
        self.store
            .enqueue_run_then(&written_record, move |written| {
                let _ = back.send(Cmd::Resumed {
                    record: Box::new(record),
                    written,
                    reply,
                });
            });
    }

    /// The answer of [`Dispatcher::resume`] is durable (or could not be
    /// made so): the run goes on (or stays parked).
    fn resumed(
        &mut self,
        record: RunRecord,
        written: Result<(), WriteError>,
        reply: oneshot::Sender<Result<RunRecord, ResumeRefusal>>,
    ) {
        let run_id = record.id;
        // Cancelled meanwhile: its end was written after the answer.
        let Some(run) = self
            .runs
            .get_mut(&run_id)
            .filter(|r| matches!(r.placement, Placement::Resuming))
        else {
            let _ = reply.send(Err(ResumeRefusal::UnknownRun));
            return;
        };
        if let Err(e) = written {
            run.placement = Placement::Parked;
            let _ = reply.send(Err(ResumeRefusal::WriteFailed(e.to_string())));
            return;
        }
        run.record = record;
        run.placement = Placement::Pending;
        self.pending.push_back(run_id);
        metrics::counter!(m::RUNS_RESUMED).increment(1);
        tracing::info!(run_id = %run_id, "run resumed");
        let _ = reply.send(Ok(run.record.clone()));
        self.try_place();
    }

    /// Ends a parked run whose earliest wait is over (`timed_out`, at that
    /// node, naming the level of its deadline). True if it ended it.
    fn wait_expired(&mut self, run_id: Uuid, now: u64) -> bool {
        let Some(run) = self.runs.get(&run_id) else {
            return false;
        };
        if !matches!(run.placement, Placement::Parked) {
            return false;
        }
        let Some(w) = run.record.waiting.iter().min_by_key(|w| w.deadline_ms) else {
            return false;
        };
        if w.deadline_ms > now {
            return false;
        }
        let mut err = RunError::timed_out(w.level).at_node(&w.node_id);
        err.message = format!(
            "{} timeout fired while the node waited for a person",
            w.level.as_str()
        );
        tracing::info!(run_id = %run_id, node_id = %w.node_id, level = w.level.as_str(), "human wait timed out");
        self.finish_here(run_id, RunStatus::TimedOut, err, None)
            .is_some()
    }

    fn submit(&mut self, s: Submission) {
        let id = s.record.id;
        // Counted in the workflow's live runs by its claim (`Stats::claim_run`).
        self.meters
            .workflow(&s.record.workflow_id)
            .started
            .increment(1);
        self.deadlines.push(Reverse((s.record.deadline_ms, id)));
        self.runs.insert(
            id,
            LiveRun {
                record: s.record,
                definition: s.definition,
                wire: s.wire,
                waiters: s.waiter.into_iter().collect(),
                placement: Placement::Pending,
                traceparent: s.traceparent,
                env: s.env,
                push: s.push,
                assign_seq: 0,
            },
        );
        self.pending.push_back(id);
    }

    fn heartbeat(&mut self, hb: Heartbeat) {
        if !weft_shared::subjects::valid_worker_id(&hb.worker_id) {
            metrics::counter!(m::WIRE_ERRORS, "subject" => "heartbeat").increment(1);
            return;
        }
        let now = Instant::now();
        match self.workers.get_mut(&hb.worker_id) {
            Some(w) if w.started_at_ms == hb.started_at_ms => {
                w.capacity = hb.capacity;
                w.reported_inflight = hb.inflight;
                w.draining = hb.draining;
                w.last_seen = now;
            }
            Some(_) => {
                // Same id, new process: the old one's runs are lost.
                tracing::warn!(worker_id = %hb.worker_id, "worker restarted; placing its runs again");
                self.remove_worker(&hb.worker_id, "worker_lost");
                self.add_worker(hb, now);
            }
            None => {
                tracing::info!(worker_id = %hb.worker_id, capacity = hb.capacity, "worker joined");
                self.add_worker(hb, now);
            }
        }
    }

    fn add_worker(&mut self, hb: Heartbeat, now: Instant) {
        self.query_held_runs(hb.worker_id.clone());
        self.workers.insert(
            hb.worker_id,
            WorkerEntry {
                capacity: hb.capacity,
                reported_inflight: hb.inflight,
                draining: hb.draining,
                last_seen: now,
                started_at_ms: hb.started_at_ms,
                blocked_until: None,
                assigned: HashSet::new(),
            },
        );
    }

    /// Asks a worker that just joined which runs it holds: after this
    /// coordinator restarted, those are runs it recovered as orphans (or
    /// queued again), and must not be placed a second time.
    fn query_held_runs(&self, worker_id: String) {
        let nats = self.nats.clone();
        let subject = self.subjects.held_runs(&worker_id);
        let tx = self.tx.clone();
        let timeout = self.cfg.assign_timeout;
        tokio::spawn(async move {
            let Ok(bytes) = wire::encode(&weft_shared::wire::HeldRunsQuery {}) else {
                return;
            };
            if let Ok(Ok(msg)) = tokio::time::timeout(timeout, nats.request(subject, bytes)).await {
                if let Ok(h) = wire::decode::<weft_shared::wire::HeldRuns>(&msg.payload) {
                    if !h.runs.is_empty() {
                        let _ = tx.send(Cmd::Adopt {
                            worker_id,
                            runs: h.runs,
                        });
                    }
                }
            }
        });
    }

    /// Assignments to `worker_id` got no answer within `assign_timeout`. A
    /// worker answers a run it took only if the run outlives
    /// [`wire::ANSWER_TAKEN_WITHIN`] (its result answers otherwise), so silence
    /// can also be a result still on its way: the worker is asked which runs
    /// it holds — executing, or ended with the result not yet acknowledged.
    /// Those it holds stand as taken; the others are placed again, as are
    /// all if nobody listens for the question (the worker is gone). If the
    /// question goes unanswered (NATS trouble), nothing is decided: the runs
    /// are asked about again after another `assign_timeout`, and a worker
    /// that is gone is found by its missing heartbeats.
    fn ask_before_placing_again(&self, worker_id: String, runs: Vec<(Uuid, u64, u32)>) {
        let nats = self.nats.clone();
        let subject = self.subjects.held_runs(&worker_id);
        let tx = self.tx.clone();
        let timeout = self.cfg.assign_timeout;
        tokio::spawn(async move {
            let query = wire::encode(&weft_shared::wire::HeldRunsQuery {});
            let answer = match query {
                Ok(q) => tokio::time::timeout(timeout, nats.request(subject, q)).await,
                Err(_) => return,
            };
            let held: Option<HashSet<(Uuid, u32)>> = match answer {
                Ok(Ok(msg)) => match wire::decode::<weft_shared::wire::HeldRuns>(&msg.payload) {
                    Ok(h) => Some(h.runs.into_iter().collect()),
                    Err(_) => None,
                },
                Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                    Some(HashSet::new())
                }
                Ok(Err(_)) | Err(_) => None,
            };
            for (run_id, seq, attempt) in runs {
                let cmd = match &held {
                    None => Cmd::AskAgain { run_id, seq },
                    Some(h) if h.contains(&(run_id, attempt)) => {
                        tracing::debug!(run_id = %run_id, worker_id, "assignment not answered in time, but the worker holds the run");
                        Cmd::AssignDone {
                            run_id,
                            seq,
                            outcome: Ok(AssignReply::taken(None)),
                        }
                    }
                    Some(_) => Cmd::AssignDone {
                        run_id,
                        seq,
                        outcome: Err(AssignFailure::Other(
                            "assignment not confirmed in time; the worker does not hold the run"
                                .into(),
                        )),
                    },
                };
                let _ = tx.send(cmd);
            }
        });
    }

    fn adopt(&mut self, worker_id: String, runs: Vec<(Uuid, u32)>) {
        let Some(w) = self.workers.get_mut(&worker_id) else {
            return;
        };
        let mut adopted = 0;
        for (run_id, attempt) in runs {
            let Some(run) = self.runs.get_mut(&run_id) else {
                continue;
            };
            match run.placement {
                Placement::Orphaned(_) => {}
                Placement::Pending => self.pending.retain(|id| *id != run_id),
                // Placed again elsewhere already: that attempt stands.
                _ => continue,
            }
            run.placement = Placement::Running(worker_id.clone());
            w.assigned.insert(run_id);
            if run.record.status == RunStatus::Queued {
                run.record.status = RunStatus::Running;
            }
            let known = run
                .record
                .attempts
                .iter()
                .any(|a| a.attempt == attempt && a.worker_id == worker_id);
            if !known {
                run.record.attempts.push(RunAttempt {
                    attempt,
                    worker_id: worker_id.clone(),
                    placed_at_ms: now_ms(),
                    ended_at_ms: None,
                    outcome: None,
                });
            } else if let Some(a) = run
                .record
                .attempts
                .iter_mut()
                .find(|a| a.attempt == attempt && a.worker_id == worker_id)
            {
                // It was marked ended when it was orphaned; it is not.
                a.ended_at_ms = None;
                a.outcome = None;
            }
            self.store.enqueue_run(&run.record);
            adopted += 1;
        }
        if adopted > 0 {
            tracing::info!(worker_id = %worker_id, runs = adopted, "adopted runs the worker still holds");
        }
    }

    /// Removes a worker; its runs go back to the front of the queue.
    fn remove_worker(&mut self, worker_id: &str, outcome: &str) {
        let Some(w) = self.workers.remove(worker_id) else {
            return;
        };
        let mut lost: Vec<Uuid> = w.assigned.into_iter().collect();
        lost.sort(); // oldest first (UUIDv7)
        for run_id in lost.into_iter().rev() {
            let Some(run) = self.runs.get_mut(&run_id) else {
                continue;
            };
            if let Some(a) = run.record.attempts.last_mut() {
                a.ended_at_ms = Some(now_ms());
                a.outcome = Some(outcome.to_string());
            }
            run.record.status = RunStatus::Queued;
            run.placement = Placement::Pending;
            self.store.enqueue_run(&run.record);
            self.pending.push_front(run_id);
            tracing::warn!(run_id = %run_id, worker_id, "run placed again after worker loss");
        }
    }

    fn try_place(&mut self) {
        if self.pending.is_empty() || self.workers.is_empty() {
            return;
        }
        // Nothing could be sent: the runs wait in the queue, in order.
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            return;
        }
        let now = Instant::now();
        let mut ids: Vec<String> = Vec::with_capacity(self.workers.len());
        let mut views: Vec<WorkerView> = Vec::with_capacity(self.workers.len());
        for (id, w) in &self.workers {
            ids.push(id.clone());
            views.push(WorkerView {
                capacity: w.capacity,
                inflight: w.assigned.len() as u32,
                draining: w.draining,
                blocked: w.blocked_until.is_some_and(|t| t > now),
            });
        }
        while let Some(&run_id) = self.pending.front() {
            let started = Instant::now();
            let Some(i) = placement::place(&views, self.rotation) else {
                break;
            };
            self.rotation = self.rotation.wrapping_add(1);
            self.pending.pop_front();
            let Some(run) = self.runs.get_mut(&run_id) else {
                continue;
            };
            views[i].inflight += 1;
            let worker_id = ids[i].clone();
            let attempt = run.record.attempts.len() as u32 + 1;
            run.record.attempts.push(RunAttempt {
                attempt,
                worker_id: worker_id.clone(),
                placed_at_ms: now_ms(),
                ended_at_ms: None,
                outcome: None,
            });
            run.placement = Placement::Assigning(worker_id.clone());
            self.assign_seq += 1;
            run.assign_seq = self.assign_seq;
            if let Some(w) = self.workers.get_mut(&worker_id) {
                w.assigned.insert(run_id);
            }
            let msg = Assign {
                run_id,
                attempt,
                workflow_id: run.record.workflow_id.clone(),
                version: run.record.version,
                definition: run.wire.clone(),
                input: run.record.input.clone(),
                deadline_ms: run.record.deadline_ms,
                traceparent: run.traceparent.clone(),
                env: (*run.env).clone(),
                callback_base: Some(self.cfg.callback_base.clone()),
                checkpoint: run.record.checkpoint.clone(),
            };
            self.meters
                .placement
                .record(started.elapsed().as_secs_f64());
            self.send_assign(worker_id, msg, self.assign_seq);
        }
    }

    fn send_assign(&mut self, worker_id: String, msg: Assign, seq: u64) {
        let run_id = msg.run_id;
        match wire::encode(&msg) {
            Ok(message) => self.outgoing.push(Outgoing {
                subject: self.subjects.assign(&worker_id),
                reply: format!("{}.{}.{}", self.cfg.assign_replies, run_id, seq),
                message,
                run_id,
                seq,
            }),
            // Heard after this pass, so the run is not placed again in it.
            Err(e) => {
                let _ = self.tx.send(Cmd::AssignDone {
                    run_id,
                    seq,
                    outcome: Err(AssignFailure::Other(e.to_string())),
                });
            }
        }
    }

    fn assign_done(
        &mut self,
        run_id: Uuid,
        attempt: u32,
        worker_id: String,
        outcome: Result<AssignReply, AssignFailure>,
    ) {
        let Some(run) = self.runs.get_mut(&run_id) else {
            return;
        };
        let current = matches!(&run.placement, Placement::Assigning(w) if *w == worker_id)
            && run.record.attempts.len() as u32 == attempt;
        if !current {
            return;
        }
        match outcome {
            Ok(AssignReply {
                accepted: true,
                started_at_ms,
                ..
            }) => {
                run.placement = Placement::Running(worker_id);
                run.record.status = RunStatus::Running;
                run.record
                    .started_at_ms
                    .get_or_insert(started_at_ms.unwrap_or_else(now_ms));
                self.store.enqueue_run(&run.record);
            }
            other => {
                let reason = match &other {
                    Ok(r) => r.reason.clone().unwrap_or_else(|| "refused".into()),
                    Err(AssignFailure::NoResponders) => "worker is not listening".into(),
                    Err(AssignFailure::Other(e)) => e.clone(),
                };
                tracing::debug!(run_id = %run_id, worker_id, reason, "assignment not taken; queueing again");
                run.record.attempts.pop();
                run.placement = Placement::Pending;
                self.pending.push_front(run_id);
                if let Some(w) = self.workers.get_mut(&worker_id) {
                    w.assigned.remove(&run_id);
                    w.blocked_until = Some(Instant::now() + BLOCK_AFTER_REFUSAL);
                }
                // "No responders" is not death: right after a NATS restart a
                // live worker's subscriptions take a moment to come back.
                // The worker is skipped briefly; heartbeats decide if it is gone.
            }
        }
    }

    fn result(&mut self, r: RunResult, persisted: Ack) {
        let Some(mut run) = self.runs.remove(&r.run_id) else {
            // Already ended (a duplicate, or ended here first): nothing to keep.
            persisted.send(true);
            return;
        };
        self.release(&run);
        if let Some(a) = run
            .record
            .attempts
            .iter_mut()
            .rev()
            .find(|a| a.attempt == r.attempt)
        {
            a.ended_at_ms = Some(r.ended_at_ms);
            a.outcome = Some(r.status.as_str().to_string());
        }
        // A result from a worker other than the current one (declared dead, yet
        // it finished): the first result wins; stop the other attempt.
        if let Placement::Running(w) | Placement::Assigning(w) = &run.placement {
            if *w != r.worker_id {
                self.send_cancel(w, r.run_id);
            }
        }
        run.record.status = r.status;
        run.record.output = r.output;
        run.record.error = r.error;
        run.record.checkpoint = None;
        run.record.waiting.clear();
        run.record.started_at_ms.get_or_insert(r.started_at_ms);
        run.record.ended_at_ms = Some(r.ended_at_ms);
        run.record.nodes.extend(r.nodes);
        run.record.usage.add(&r.usage);
        run.record.model_runs.extend(r.model_runs);
        let push = self.push_on_end(&run);
        if run.record.trigger == "sync"
            && push.is_none()
            && run.waiters.iter().any(|w| !w.is_closed())
        {
            // Its caller is answered from memory below; only the worker's
            // ack waits for this write, which may share a later commit.
            self.store
                .enqueue_run_unhurried(&run.record, move |w| persisted.send(w.is_ok()));
        } else {
            self.store.enqueue_run_then(&run.record, move |w| {
                persisted.send(w.is_ok());
                if let (true, Some((p, id))) = (w.is_ok(), push) {
                    p.run_ended(id);
                }
            });
        }
        self.complete(run);
    }

    /// Ends a run here (cancel, or deadline passed without a report).
    fn finish_here(
        &mut self,
        run_id: Uuid,
        status: RunStatus,
        error: RunError,
        only_if_past: Option<u64>,
    ) -> Option<RunRecord> {
        let run = self.runs.get(&run_id)?;
        if let Some(now) = only_if_past {
            if run.record.deadline_ms + self.cfg.deadline_grace.as_millis() as u64 > now {
                return None;
            }
        }
        let mut run = self.runs.remove(&run_id)?;
        self.release(&run);
        match &run.placement {
            Placement::Running(w) | Placement::Assigning(w) => {
                self.send_cancel(w, run_id);
                if let Some(a) = run.record.attempts.last_mut() {
                    a.ended_at_ms = Some(now_ms());
                    a.outcome = Some(status.as_str().to_string());
                }
            }
            Placement::Pending => self.pending.retain(|id| *id != run_id),
            Placement::Orphaned(_) => {}
            Placement::Parked | Placement::Resuming => {
                // The waiting nodes end with the run, in its node log.
                let now = now_ms();
                let attempt = run.record.attempts.last().map_or(0, |a| a.attempt);
                let waiting = std::mem::take(&mut run.record.waiting);
                for w in waiting {
                    // The node whose deadline fired (or all, at the workflow's)
                    // timed out; others were cut short.
                    let fired = error.node_id.as_deref() == Some(w.node_id.as_str())
                        || error.level == Some(TimeoutLevel::Workflow);
                    let node_status = if status == RunStatus::TimedOut && fired {
                        NodeStatus::TimedOut
                    } else {
                        NodeStatus::Cancelled
                    };
                    run.record.nodes.push(NodeLog {
                        node_id: w.node_id,
                        kind: "human".into(),
                        status: node_status,
                        run_attempt: attempt,
                        started_at_ms: w.since_ms,
                        ended_at_ms: now,
                        attempts: 0,
                        error: Some(error.clone()),
                        findings: Vec::new(),
                        resumed_by: None,
                        resumed_at_ms: None,
                    });
                }
            }
        }
        run.record.status = status;
        run.record.error = Some(error);
        run.record.ended_at_ms = Some(now_ms());
        run.record.checkpoint = None;
        run.record.waiting.clear();
        match self.push_on_end(&run) {
            Some((p, id)) => self.store.enqueue_run_then(&run.record, move |w| {
                if w.is_ok() {
                    p.run_ended(id);
                }
            }),
            None => self.store.enqueue_run(&run.record),
        }
        let rec = run.record.clone();
        self.complete(run);
        Some(rec)
    }

    /// Whom to tell once an ended run's record is durable, if its result
    /// is pushed. (A notification lost to a crash is made up by the
    /// deliverer's sweep.)
    fn push_on_end(&self, run: &LiveRun) -> Option<(crate::push::PushHandle, Uuid)> {
        if !run.push {
            return None;
        }
        self.cfg.push.clone().map(|p| (p, run.record.id))
    }

    fn release(&mut self, run: &LiveRun) {
        if let Placement::Running(w) | Placement::Assigning(w) = &run.placement {
            if let Some(w) = self.workers.get_mut(w) {
                w.assigned.remove(&run.record.id);
            }
        }
    }

    fn complete(&mut self, run: LiveRun) {
        let rec = &run.record;
        self.stats.end_run(&rec.workflow_id);
        let secs = rec
            .ended_at_ms
            .unwrap_or_else(now_ms)
            .saturating_sub(rec.created_at_ms) as f64
            / 1000.0;
        self.meters
            .run_completed(&rec.workflow_id, rec.status, secs);
        if rec.status == RunStatus::TimedOut {
            if let Some(level) = rec.error.as_ref().and_then(|e| e.level) {
                metrics::counter!(m::TIMEOUTS, "level" => level.as_str()).increment(1);
            }
        }
        // The last waiter (usually the only one) gets the record itself.
        let mut waiters = run.waiters;
        let last = waiters.pop();
        for w in waiters {
            let _ = w.send(run.record.clone());
        }
        if let Some(w) = last {
            let _ = w.send(run.record);
        }
    }

    fn send_cancel(&self, worker_id: &str, run_id: Uuid) {
        if let Ok(bytes) = wire::encode(&Cancel { run_id }) {
            let nats = self.nats.clone();
            let subject = self.subjects.cancel(worker_id);
            tokio::spawn(async move {
                let _ = nats.publish(subject, bytes).await;
            });
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        // Assignments unanswered in time, by worker: each worker is asked
        // what it holds before its runs are placed again.
        let mut unanswered: HashMap<String, Vec<(Uuid, u64, u32)>> = HashMap::new();
        while let Some(&(deadline, run_id, seq)) = self.unconfirmed.front() {
            if deadline > now {
                break;
            }
            self.unconfirmed.pop_front();
            if let Some((w, attempt)) = self.awaiting(run_id, seq) {
                unanswered
                    .entry(w)
                    .or_default()
                    .push((run_id, seq, attempt));
            }
        }
        for (worker_id, runs) in unanswered {
            self.ask_before_placing_again(worker_id, runs);
        }
        if self.nats.connection_state() != async_nats::connection::State::Connected {
            self.nats_down_at = Some(now);
        }
        if let Some(t) = self
            .cfg
            .nats_disconnected
            .lock()
            .ok()
            .and_then(|mut g| g.take())
        {
            self.nats_down_at = Some(self.nats_down_at.map_or(t, |d| d.max(t)));
        }
        let heard_floor = self.nats_down_at;
        let dead: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                let since = heard_floor.map_or(w.last_seen, |t| t.max(w.last_seen));
                now.duration_since(since) > self.cfg.dead_after
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            tracing::warn!(worker_id = %id, "worker stopped heart-beating; declared dead");
            metrics::counter!(m::WORKERS_LOST).increment(1);
            self.remove_worker(&id, "worker_lost");
        }
        // Runs recovered at start that no worker has claimed.
        let orphans: Vec<Uuid> = self
            .runs
            .iter()
            .filter(|(_, r)| matches!(r.placement, Placement::Orphaned(t) if now.duration_since(t) > self.cfg.dead_after))
            .map(|(id, _)| *id)
            .collect();
        for id in orphans {
            if let Some(run) = self.runs.get_mut(&id) {
                if let Some(a) = run.record.attempts.last_mut() {
                    a.ended_at_ms.get_or_insert(now_ms());
                    a.outcome
                        .get_or_insert_with(|| "coordinator_restarted".into());
                }
                run.record.status = RunStatus::Queued;
                run.placement = Placement::Pending;
                self.pending.push_back(id);
            }
        }
        // Parked runs whose wait is over: no worker holds them, so no grace.
        let wall = now_ms();
        while let Some(Reverse((deadline, id))) = self.waits.peek().copied() {
            if deadline > wall {
                break;
            }
            self.waits.pop();
            self.wait_expired(id, wall);
        }
        self.meters.runs_waiting.set(
            self.runs
                .values()
                .filter(|r| matches!(r.placement, Placement::Parked | Placement::Resuming))
                .count() as f64,
        );
        // Overdue runs.
        let grace = self.cfg.deadline_grace.as_millis() as u64;
        while let Some(Reverse((deadline, id))) = self.deadlines.peek().copied() {
            if deadline + grace > wall {
                break;
            }
            self.deadlines.pop();
            let mut err = RunError::timed_out(TimeoutLevel::Workflow);
            if matches!(
                self.runs.get(&id).map(|r| &r.placement),
                Some(Placement::Pending)
            ) {
                err.message = "workflow timeout fired while the run waited for a worker".into();
            }
            self.finish_here(id, RunStatus::TimedOut, err, Some(wall));
        }
    }

    fn publish_stats(&self) {
        let live = self.workers.len();
        let draining = self.workers.values().filter(|w| w.draining).count();
        self.stats
            .pending
            .store(self.pending.len(), Ordering::Relaxed);
        self.stats
            .live_workers
            .store(live - draining, Ordering::Relaxed);
        self.stats
            .inflight
            .store(self.runs.len() - self.pending.len(), Ordering::Relaxed);
        self.meters.pending.set(self.pending.len() as f64);
        let oldest = self
            .pending
            .front()
            .and_then(|id| self.runs.get(id))
            .map(|r| now_ms().saturating_sub(r.record.created_at_ms) as f64 / 1000.0)
            .unwrap_or(0.0);
        self.meters.pending_oldest.set(oldest);
        self.meters.workers_ready.set((live - draining) as f64);
        self.meters.workers_draining.set(draining as f64);
    }
}

/// Subscribes to the subjects the coordinator listens on and feeds the
/// dispatcher. Garbage is counted and dropped.
pub async fn listen(
    nats: async_nats::Client,
    subjects: &Subjects,
    assign_replies: &str,
    handle: DispatchHandle,
) -> Result<(), async_nats::SubscribeError> {
    let group = || weft_shared::subjects::RESULTS_QUEUE_GROUP.to_string();
    // Answers to assignments, first: a heartbeat heard below may place runs.
    {
        use futures::StreamExt;
        let mut replies = nats.subscribe(format!("{assign_replies}.>")).await?;
        let h = handle.clone();
        let prefix = assign_replies.to_string();
        tokio::spawn(async move {
            while let Some(msg) = replies.next().await {
                let Some((run_id, seq)) = parse_assign_reply(&prefix, &msg.subject) else {
                    continue;
                };
                let outcome = if msg.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
                    Err(AssignFailure::NoResponders)
                } else {
                    wire::decode::<AssignReply>(&msg.payload).map_err(|e| {
                        metrics::counter!(m::WIRE_ERRORS, "subject" => "assign_reply").increment(1);
                        AssignFailure::Other(e.to_string())
                    })
                };
                h.send(Cmd::AssignDone {
                    run_id,
                    seq,
                    outcome,
                });
            }
        });
    }
    let h = handle.clone();
    forward::<Heartbeat>(
        nats.subscribe(subjects.heartbeat()).await?,
        "heartbeat",
        move |beat, _| {
            h.send(Cmd::Heartbeat(beat));
        },
    );
    let h = handle.clone();
    forward::<weft_shared::wire::Deregister>(
        nats.subscribe(subjects.deregister()).await?,
        "deregister",
        move |d, _| {
            h.send(Cmd::Deregister(d.worker_id));
        },
    );
    let h = handle.clone();
    forward::<RunProgress>(
        nats.queue_subscribe(subjects.progress(), group()).await?,
        "progress",
        move |p, _| {
            h.send(Cmd::Progress(p));
        },
    );
    let (acker, acks) = mpsc::unbounded_channel();
    tokio::spawn(send_acks(nats.clone(), acks));
    let (h, a) = (handle.clone(), acker.clone());
    forward::<RunCheckpoint>(
        nats.queue_subscribe(subjects.checkpoints(), group())
            .await?,
        "checkpoints",
        move |c, reply| {
            let ack = Ack {
                acker: a.clone(),
                reply,
                run: (c.run_id, c.attempt),
            };
            h.send(Cmd::Checkpoint(Box::new(c), ack));
        },
    );
    forward::<RunResult>(
        nats.queue_subscribe(subjects.results(), group()).await?,
        "results",
        move |r, reply| {
            let ack = Ack {
                acker: acker.clone(),
                reply,
                run: (r.run_id, r.attempt),
            };
            handle.send(Cmd::Result(Box::new(r), ack));
        },
    );
    Ok(())
}

/// The run and sending an assignment's reply subject names
/// (`<assign_replies>.<run id>.<seq>`).
fn parse_assign_reply(prefix: &str, subject: &str) -> Option<(Uuid, u64)> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let (run, seq) = rest.split_once('.')?;
    Some((run.parse().ok()?, seq.parse().ok()?))
}

/// An assignment encoded in a pass, sent at its end.
struct Outgoing {
    subject: String,
    reply: String,
    message: bytes::Bytes,
    run_id: Uuid,
    seq: u64,
}

/// Decodes every message of `sub` as a `T` and hands it (with its reply
/// subject) to `on`; garbage is counted under `subject` and dropped.
fn forward<T: wire::Message + Send + 'static>(
    mut sub: async_nats::Subscriber,
    subject: &'static str,
    mut on: impl FnMut(T, Option<async_nats::Subject>) + Send + 'static,
) {
    use futures::StreamExt;
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            match wire::decode::<T>(&msg.payload) {
                Ok(t) => on(t, msg.reply),
                Err(e) => {
                    metrics::counter!(m::WIRE_ERRORS, "subject" => subject).increment(1);
                    tracing::debug!(error = %e, subject, "dropped a message that does not decode");
                }
            }
        }
    });
}

/// Tells a worker its result (or checkpoint) is durable, on the message's
/// reply subject, once whoever learns of the write calls [`Ack::send`]. Not
/// durable, or dropped: no ack, and the worker sends again.
pub struct Ack {
    acker: Acker,
    reply: Option<async_nats::Subject>,
    run: (Uuid, u32),
}

impl Ack {
    fn send(self, durable: bool) {
        if let (true, Some(reply)) = (durable, self.reply) {
            let _ = self.acker.send((reply, self.run));
        }
    }
}

/// Acks on their way to [`send_acks`].
type Acker = mpsc::UnboundedSender<(async_nats::Subject, (Uuid, u32))>;

/// Sends acks in batches: whatever is ready when it wakes — typically all
/// that one commit of the run writer made durable — goes as one
/// [`ResultAcks`](weft_shared::wire::ResultAcks) per reply subject, which a
/// worker keeps per NATS connection: one message for many results instead
/// of one each. A reply subject that is a request inbox (a worker from before
/// `ResultAcks`) gets a `ResultAck` per result, as it expects.
async fn send_acks(
    nats: async_nats::Client,
    mut rx: mpsc::UnboundedReceiver<(async_nats::Subject, (Uuid, u32))>,
) {
    use weft_shared::wire::{ResultAck, ResultAcks, MAX_ACKS_PER_MESSAGE};
    let mut ready: Vec<(async_nats::Subject, (Uuid, u32))> = Vec::new();
    while let Some(first) = rx.recv().await {
        ready.push(first);
        while let Ok(next) = rx.try_recv() {
            ready.push(next);
        }
        // Grouped by reply subject, in the order each became durable.
        ready.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        for group in ready.chunk_by(|a, b| a.0 == b.0) {
            let reply = &group[0].0;
            if reply.starts_with("_INBOX.") {
                for (_, (run_id, _)) in group {
                    if let Ok(bytes) = wire::encode(&ResultAck { run_id: *run_id }) {
                        let _ = nats.publish(reply.clone(), bytes).await;
                    }
                }
                continue;
            }
            for chunk in group.chunks(MAX_ACKS_PER_MESSAGE) {
                let acks = ResultAcks {
                    runs: chunk.iter().map(|(_, run)| *run).collect(),
                };
                if let Ok(bytes) = wire::encode(&acks) {
                    let _ = nats.publish(reply.clone(), bytes).await;
                }
            }
        }
        ready.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::parse_assign_reply;

    #[test]
    fn an_assignment_reply_subject_names_run_and_sending() {
        let run = uuid::Uuid::now_v7();
        let p = "weft.coordinator.c1.assigned";
        assert_eq!(
            parse_assign_reply(p, &format!("{p}.{run}.17")),
            Some((run, 17))
        );
        for bad in [
            format!("{p}.{run}"),
            format!("{p}.{run}.17.9"),
            format!("{p}.not-a-uuid.17"),
            format!("{p}.{run}.x"),
            format!("{p}x.{run}.17"),
            format!("weft.coordinator.c2.assigned.{run}.17"),
        ] {
            assert_eq!(parse_assign_reply(p, &bad), None, "{bad}");
        }
    }
}
