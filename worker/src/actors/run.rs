//! The run actor: walks one run's graph, starting a node actor for each node
//! whose inputs are ready, and reports the run's end.
//!
//! A node starts when every edge into it is resolved and at least one of them
//! is active (its source succeeded and, for a condition, chose that edge's
//! branch). A node whose incoming edges are all inactive is skipped, and so on
//! down the graph. The run succeeds when the output node does; it fails at the
//! first failed node; it times out at the workflow deadline, whichever node
//! is running.
//!
//! A `human` node starts no node actor: it waits. Once nothing else in the
//! run can progress (no node is running), the run **pauses**: the actor sends
//! a [`Checkpoint`] — the outputs of the nodes done, the nodes skipped, the
//! nodes waiting — to the coordinator and stops, freeing its slot. Another
//! branch still running is let finish first (it may fail the run, or reach
//! another human node, which then waits in the same pause). A run assigned
//! with a checkpoint starts from it: the answered human nodes succeed with
//! `{"value", "resumed_by", "resumed_at_ms"}` and their successors start.
//! While a human node waits on a worker (other branches running), its own
//! deadline is enforced here; once paused, by the coordinator.

use super::node::{NodeActor, NodeFinished, Stop};
use crate::metrics as m;
use crate::nodes::{Attempt, NodeEnv, RunInfo, Waiting};
use crate::timeouts::{self, Deadline};
use actix::prelude::*;
use serde_json::{json, Map, Value};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tokio::sync::mpsc;
use uuid::Uuid;
use weft_shared::error::ErrorCode;
use weft_shared::model::{
    Checkpoint, DoneNode, HumanConfig, HumanResume, HumanWait, ModelRun, NodeLog, NodeSpec,
    NodeStatus, RunError, RunStatus, Usage,
};
use weft_shared::time::{now_ms, TimeoutLevel};
use weft_shared::validate::Plan;
use weft_shared::wire::{EnvValue, RunCheckpoint, RunProgress, RunResult};

/// Stop the run (cancelled by the coordinator).
#[derive(Message)]
#[rtype(result = "()")]
pub struct CancelRun;

/// A node now waits for a callback.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NodeWaits(pub Waiting);

/// A registered node's call went out: the run is now `waiting`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct NowWaiting(pub usize);

/// A callback for a waiting node; answers `resumed`, `bad_token` or
/// `not_waiting`.
#[derive(Message)]
#[rtype(result = "String")]
pub struct ResumeNode {
    pub node_id: String,
    pub token: weft_shared::secret::SecretString,
    pub payload: Value,
}

/// Where a finished run goes, and who is told it is gone.
pub struct RunSink {
    /// Delivers a result until the coordinator acknowledges it (starts the
    /// delivery on the tokio runtime from the caller's thread).
    pub results: Box<dyn Fn(RunResult) + Send + Sync>,
    /// Status changes while running (`waiting`, back to `running`).
    pub progress: mpsc::UnboundedSender<RunProgress>,
    /// Runs paused at human nodes, handed back to the coordinator.
    pub checkpoints: Box<dyn Fn(RunCheckpoint) + Send + Sync>,
    /// Called once when the run ends, whatever the way.
    pub on_end: Box<dyn Fn(Uuid) + Send + Sync>,
}

enum NodeState {
    Waiting,
    Running(Addr<NodeActor>, Arc<AtomicBool>),
    /// A human node that is ready: it waits for a person.
    Human(HumanWait),
    Done,
    Skipped,
}

pub struct RunActor {
    run_id: Uuid,
    attempt: u32,
    workflow_id: String,
    worker_id: String,
    plan: Arc<Plan>,
    /// What nodes see: `{"input", "steps": {id: {"output"}}, "env"}`, built
    /// once. A node starting gets the `Arc`; a node finishing writes into it
    /// (`Arc::make_mut`), which copies only while a node that started
    /// earlier still holds it — so each node sees the steps as they were
    /// when it started, and a linear run never copies its context.
    context: Arc<Value>,
    info: Option<Arc<RunInfo>>,
    callback_base: Option<String>,
    trace: Option<weft_shared::trace::TraceParent>,
    /// Span of this run; node spans are its children.
    span: tracing::Span,
    secrets: Vec<weft_shared::secret::SecretString>,
    /// Nodes waiting for a callback.
    waiting: Vec<Waiting>,
    model_runs: Vec<ModelRun>,
    usage: Usage,
    states: Vec<NodeState>,
    /// Incoming edges not yet resolved, per node.
    unresolved: Vec<usize>,
    /// Whether any incoming edge is active, per node.
    active_in: Vec<bool>,
    logs: Vec<NodeLog>,
    /// Where to start from, for a run resumed after a pause.
    continuation: Option<Checkpoint>,
    deadline: Deadline,
    /// The workflow deadline (Unix ms), for human waits.
    deadline_ms: u64,
    started_at_ms: u64,
    env: Arc<NodeEnv>,
    sink: Arc<RunSink>,
    /// The result, once sent; the drop guard sends one if this is still false.
    reported: bool,
}

impl RunActor {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        run_id: Uuid,
        attempt: u32,
        workflow_id: String,
        worker_id: String,
        plan: Arc<Plan>,
        input: Value,
        deadline_ms: u64,
        variables: std::collections::BTreeMap<String, EnvValue>,
        callback_base: Option<String>,
        traceparent: Option<String>,
        checkpoint: Option<Checkpoint>,
        env: Arc<NodeEnv>,
        sink: Arc<RunSink>,
    ) -> Self {
        let n = plan.nodes.len();
        let unresolved = (0..n).map(|i| plan.in_edges[i].len()).collect();
        let env_values = Value::Object(
            variables
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.value.expose().to_string())))
                .collect(),
        );
        let secrets = variables
            .into_values()
            .filter(|v| v.secure)
            .map(|v| v.value)
            .collect();
        let trace = traceparent
            .as_deref()
            .and_then(weft_shared::trace::TraceParent::parse);
        let span = if weft_shared::telemetry::run_spans_wanted() {
            tracing::info_span!(
                "run",
                run_id = %run_id,
                attempt,
                workflow_id = %workflow_id,
                worker_id = %worker_id,
                trace_id = %trace.map(|t| t.trace_id_hex()).unwrap_or_default(),
            )
        } else {
            tracing::Span::none()
        };
        // The remote parent is read by the span exporter only.
        if let (Some(t), true) = (&trace, weft_shared::telemetry::exporting_spans()) {
            weft_shared::telemetry::set_remote_parent(&span, t);
        }
        RunActor {
            context: Arc::new(Value::Object(Map::from_iter([
                ("input".to_string(), input),
                ("steps".to_string(), Value::Object(Map::new())),
                ("env".to_string(), env_values),
            ]))),
            info: None,
            callback_base,
            trace,
            span,
            secrets,
            waiting: Vec::new(),
            model_runs: Vec::new(),
            usage: Usage::default(),
            run_id,
            attempt,
            workflow_id,
            worker_id,
            states: (0..n).map(|_| NodeState::Waiting).collect(),
            unresolved,
            active_in: vec![false; n],
            // One line per node at most, save a rerun's: sized once.
            logs: Vec::with_capacity(n),
            continuation: checkpoint,
            deadline: timeouts::workflow_deadline(deadline_ms),
            deadline_ms,
            started_at_ms: now_ms(),
            env,
            sink,
            reported: false,
            plan,
        }
    }

    /// The run's `steps`, for writing (copied first if a running node still
    /// reads the current context).
    fn steps(&mut self) -> &mut Map<String, Value> {
        Arc::make_mut(&mut self.context)["steps"]
            .as_object_mut()
            .expect("the context is built with a `steps` object")
    }

    /// Records a node's output in `steps`, keys in sorted order: objects keep
    /// insertion order, and parallel branches finish in any order, so a
    /// script reading `steps` sees the same order every run.
    fn record_step(&mut self, node_id: String, output: Value) {
        let mut step = Map::new();
        step.insert("output".into(), output);
        let steps = self.steps();
        steps.insert(node_id, Value::Object(step));
        steps.sort_keys();
    }

    fn info(&mut self, ctx: &mut Context<Self>) -> Arc<RunInfo> {
        if self.info.is_none() {
            self.info = Some(Arc::new(RunInfo {
                run_id: self.run_id,
                secrets: self.secrets.clone(),
                callback_base: self.callback_base.clone(),
                trace: self.trace,
                worker_id: self.worker_id.clone(),
                actor: ctx.address(),
            }));
        }
        self.info.clone().expect("set above")
    }

    fn progress(&self, status: RunStatus, node_id: Option<String>) {
        let _ = self.sink.progress.send(RunProgress {
            run_id: self.run_id,
            attempt: self.attempt,
            worker_id: self.worker_id.clone(),
            status,
            node_id,
        });
    }

    fn start_node(&mut self, idx: usize, ctx: &mut Context<Self>) {
        let plan = self.plan.clone();
        if let NodeSpec::Human(cfg) = &plan.nodes[idx].spec {
            self.start_human(idx, cfg, ctx);
            return;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let run = self.info(ctx);
        let node = &self.plan.nodes[idx];
        let attempt = Attempt {
            plan: self.plan.clone(),
            idx,
            context: self.context.clone(),
            deadline: timeouts::node_deadline(&self.deadline, node.timeout_ms),
            cancel: cancel.clone(),
            env: self.env.clone(),
            run,
            records: Default::default(),
        };
        let span = if self.span.is_none() {
            tracing::Span::none()
        } else {
            tracing::info_span!(parent: &self.span, "node", node_id = %node.id, kind = node.spec.kind())
        };
        let addr = NodeActor::new(
            attempt,
            self.workflow_id.clone(),
            ctx.address().recipient(),
            span,
        )
        .start();
        self.states[idx] = NodeState::Running(addr, cancel);
    }

    /// Resolves the edges out of `idx` and starts or skips what is ready.
    fn resolve(
        &mut self,
        idx: usize,
        branch: Option<&str>,
        succeeded: bool,
        ctx: &mut Context<Self>,
    ) {
        let mut work = vec![(idx, branch.map(str::to_string), succeeded)];
        let plan = self.plan.clone();
        while let Some((u, branch, ok)) = work.pop() {
            for &k in &plan.out_edges[u] {
                let e = &plan.edges[k];
                let active = ok && (e.branch.is_none() || e.branch.as_deref() == branch.as_deref());
                let t = e.to;
                self.unresolved[t] = self.unresolved[t].saturating_sub(1);
                self.active_in[t] |= active;
                if self.unresolved[t] == 0 && matches!(self.states[t], NodeState::Waiting) {
                    if self.active_in[t] {
                        self.start_node(t, ctx);
                        if self.reported {
                            return;
                        }
                    } else {
                        self.states[t] = NodeState::Skipped;
                        let now = now_ms();
                        self.log(t, NodeStatus::Skipped, now, now, 0, None);
                        if t == self.plan.output {
                            let err = RunError::new(
                                ErrorCode::OutputNotReached,
                                "no path reached the output node",
                            );
                            self.finish(RunStatus::Failed, None, Some(err), ctx);
                            return;
                        }
                        work.push((t, None, false));
                    }
                }
            }
        }
    }

    fn log(
        &mut self,
        idx: usize,
        status: NodeStatus,
        started: u64,
        ended: u64,
        attempts: u32,
        error: Option<RunError>,
    ) {
        let node = &self.plan.nodes[idx];
        self.logs.push(NodeLog {
            node_id: node.id.clone(),
            kind: node.spec.kind().to_string(),
            status,
            run_attempt: self.attempt,
            started_at_ms: started,
            ended_at_ms: ended,
            attempts,
            error,
            findings: Vec::new(),
            resumed_by: None,
            resumed_at_ms: None,
        });
    }

    fn finish(
        &mut self,
        status: RunStatus,
        output: Option<Value>,
        error: Option<RunError>,
        ctx: &mut Context<Self>,
    ) {
        if self.reported {
            return;
        }
        // Stop whatever is still running; their sandboxes see the cancel flag.
        let now = now_ms();
        for i in 0..self.states.len() {
            if let NodeState::Running(addr, cancel) =
                std::mem::replace(&mut self.states[i], NodeState::Done)
            {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                addr.do_send(Stop);
                let node_status = if status == RunStatus::TimedOut {
                    NodeStatus::TimedOut
                } else {
                    NodeStatus::Cancelled
                };
                let err = error.clone();
                self.log(i, node_status, self.started_at_ms, now, 0, err);
            }
        }
        // Human nodes still waiting end with the run (one that timed out was
        // logged already and is done): timed out with a workflow deadline,
        // else cut short.
        let workflow_timeout = status == RunStatus::TimedOut
            && error.as_ref().and_then(|e| e.level) == Some(TimeoutLevel::Workflow);
        for i in 0..self.states.len() {
            if let NodeState::Human(w) = std::mem::replace(&mut self.states[i], NodeState::Done) {
                let node_status = if workflow_timeout {
                    NodeStatus::TimedOut
                } else {
                    NodeStatus::Cancelled
                };
                self.log(i, node_status, w.since_ms, now, 0, error.clone());
            }
        }
        self.report(status, output, error);
        ctx.stop();
    }

    fn report(&mut self, status: RunStatus, output: Option<Value>, error: Option<RunError>) {
        if self.reported {
            return;
        }
        self.reported = true;
        metrics::counter!(m::RUNS_EXECUTED, "status" => status.as_str()).increment(1);
        (self.sink.results)(RunResult {
            run_id: self.run_id,
            attempt: self.attempt,
            worker_id: self.worker_id.clone(),
            status,
            output,
            error,
            nodes: std::mem::take(&mut self.logs),
            started_at_ms: self.started_at_ms,
            ended_at_ms: now_ms(),
            model_runs: std::mem::take(&mut self.model_runs),
            usage: self.usage,
        });
        (self.sink.on_end)(self.run_id);
    }
}

impl RunActor {
    /// A human node became ready: render its prompt and wait, under the
    /// earlier of its own deadline (from now) and the workflow's.
    fn start_human(&mut self, idx: usize, cfg: &HumanConfig, ctx: &mut Context<Self>) {
        let node = &self.plan.nodes[idx];
        let now = now_ms();
        let prompt = match weft_shared::template::render(&cfg.prompt, &self.context) {
            Ok(p) => weft_shared::secret::scrub(&p, &self.secrets),
            Err(e) => {
                let err = RunError::new(
                    ErrorCode::TemplateError,
                    weft_shared::secret::scrub(&format!("prompt: {e}"), &self.secrets),
                )
                .at_node(&node.id);
                self.states[idx] = NodeState::Done;
                self.log(idx, NodeStatus::Failed, now, now, 1, Some(err.clone()));
                self.finish(RunStatus::Failed, None, Some(err), ctx);
                return;
            }
        };
        let (deadline_ms, level) = match node.timeout_ms {
            Some(t) if now.saturating_add(t) < self.deadline_ms => {
                (now.saturating_add(t), TimeoutLevel::Node)
            }
            _ => (self.deadline_ms, TimeoutLevel::Workflow),
        };
        let wait = HumanWait {
            node_id: node.id.clone(),
            prompt,
            since_ms: now,
            deadline_ms,
            level,
        };
        self.wait_for(idx, wait, ctx);
    }

    /// Marks a human node waiting and arms its deadline (while the worker
    /// still holds the run).
    fn wait_for(&mut self, idx: usize, wait: HumanWait, ctx: &mut Context<Self>) {
        let after = std::time::Duration::from_millis(wait.deadline_ms.saturating_sub(now_ms()));
        self.states[idx] = NodeState::Human(wait);
        ctx.run_later(after, move |act, ctx| act.human_timed_out(idx, ctx));
    }

    fn human_timed_out(&mut self, idx: usize, ctx: &mut Context<Self>) {
        if self.reported {
            return;
        }
        let NodeState::Human(w) = std::mem::replace(&mut self.states[idx], NodeState::Done) else {
            return;
        };
        timeouts::record_fired(&Deadline::new(
            weft_shared::time::instant_from_unix_ms(w.deadline_ms),
            w.level,
        ));
        let mut err = RunError::timed_out(w.level).at_node(&w.node_id);
        err.message = format!(
            "{} timeout fired while the node waited for a person",
            w.level.as_str()
        );
        self.log(
            idx,
            NodeStatus::TimedOut,
            w.since_ms,
            now_ms(),
            0,
            Some(err.clone()),
        );
        self.finish(RunStatus::TimedOut, None, Some(err), ctx);
    }

    /// A person's answer: the human node succeeds and its successors start.
    fn complete_human(&mut self, idx: usize, r: HumanResume, ctx: &mut Context<Self>) {
        let NodeState::Human(w) = std::mem::replace(&mut self.states[idx], NodeState::Done) else {
            return;
        };
        let output = json!({
            "value": r.value,
            "resumed_by": r.resumed_by,
            "resumed_at_ms": r.resumed_at_ms,
        });
        self.log(
            idx,
            NodeStatus::Succeeded,
            w.since_ms,
            r.resumed_at_ms,
            1,
            None,
        );
        if let Some(l) = self.logs.last_mut() {
            l.resumed_by = Some(r.resumed_by);
            l.resumed_at_ms = Some(r.resumed_at_ms);
        }
        self.record_step(w.node_id, output);
        self.resolve(idx, None, true, ctx);
    }

    /// Rebuilds a paused run from its checkpoint and applies the answers.
    fn restore(&mut self, cp: Checkpoint, ctx: &mut Context<Self>) -> Result<(), String> {
        let plan = self.plan.clone();
        let index = |id: &str| {
            plan.index_of(id).ok_or_else(|| {
                format!("the checkpoint names node `{id}`, which the workflow does not have")
            })
        };
        let mut branch: Vec<Option<String>> = vec![None; plan.nodes.len()];
        for d in cp.done {
            let i = index(&d.node_id)?;
            self.states[i] = NodeState::Done;
            branch[i] = d.branch.clone();
            self.record_step(d.node_id, d.output);
        }
        for id in &cp.skipped {
            self.states[index(id)?] = NodeState::Skipped;
        }
        // Edges out of finished nodes were resolved when they finished.
        for e in &plan.edges {
            match self.states[e.from] {
                NodeState::Done => {
                    self.unresolved[e.to] = self.unresolved[e.to].saturating_sub(1);
                    self.active_in[e.to] |=
                        e.branch.is_none() || e.branch.as_deref() == branch[e.from].as_deref();
                }
                NodeState::Skipped => {
                    self.unresolved[e.to] = self.unresolved[e.to].saturating_sub(1);
                }
                _ => {}
            }
        }
        for w in cp.waiting {
            let i = index(&w.node_id)?;
            if !matches!(plan.nodes[i].spec, NodeSpec::Human(_)) {
                return Err(format!(
                    "the checkpoint has `{}` waiting, which is not a human node",
                    w.node_id
                ));
            }
            self.wait_for(i, w, ctx);
        }
        for r in cp.resumed {
            let i = index(&r.node_id)?;
            self.complete_human(i, r, ctx);
            if self.reported {
                return Ok(());
            }
        }
        let moving = self
            .states
            .iter()
            .any(|s| matches!(s, NodeState::Running(..) | NodeState::Human(_)));
        if !moving {
            return Err("the checkpoint leaves nothing to run".into());
        }
        Ok(())
    }

    /// Pauses the run if human nodes wait and nothing else is running: hands
    /// the checkpoint to the coordinator and stops, freeing the slot.
    fn maybe_pause(&mut self, ctx: &mut Context<Self>) {
        if self.reported {
            return;
        }
        let mut waiting = Vec::new();
        for s in &self.states {
            match s {
                NodeState::Running(..) => return,
                NodeState::Human(w) => waiting.push(w.clone()),
                _ => {}
            }
        }
        if waiting.is_empty() {
            return;
        }
        // What succeeded is in `steps`; a condition's output names its branch.
        // The run stops here, so its steps move into the checkpoint.
        let mut steps = std::mem::take(self.steps());
        let mut done = Vec::new();
        let mut skipped = Vec::new();
        for (i, s) in self.states.iter().enumerate() {
            let node = &self.plan.nodes[i];
            match s {
                NodeState::Skipped => skipped.push(node.id.clone()),
                NodeState::Done => {
                    if let Some(Value::Object(mut step)) = steps.remove(&node.id) {
                        let output = step.remove("output").unwrap_or(Value::Null);
                        let branch = match node.spec {
                            NodeSpec::Condition(_) => output["branch"].as_str().map(str::to_string),
                            _ => None,
                        };
                        done.push(DoneNode {
                            node_id: node.id.clone(),
                            output,
                            branch,
                        });
                    }
                }
                _ => {}
            }
        }
        let checkpoint = Checkpoint {
            done,
            skipped,
            waiting,
            resumed: Vec::new(),
        };
        let _e = self.span.clone().entered();
        tracing::debug!(
            waiting = ?checkpoint.waiting.iter().map(|w| w.node_id.as_str()).collect::<Vec<_>>(),
            "run paused at human nodes; handing it back"
        );
        self.reported = true;
        metrics::counter!(m::RUNS_EXECUTED, "status" => RunStatus::Waiting.as_str()).increment(1);
        (self.sink.checkpoints)(RunCheckpoint {
            run_id: self.run_id,
            attempt: self.attempt,
            worker_id: self.worker_id.clone(),
            checkpoint,
            nodes: std::mem::take(&mut self.logs),
            model_runs: std::mem::take(&mut self.model_runs),
            usage: self.usage,
            started_at_ms: self.started_at_ms,
            ended_at_ms: now_ms(),
        });
        (self.sink.on_end)(self.run_id);
        ctx.stop();
    }
}

impl Actor for RunActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let _e = self.span.clone().entered();
        tracing::debug!("run started");
        // The workflow deadline, whatever the nodes are doing.
        let remaining = self.deadline.remaining();
        let deadline = self.deadline;
        ctx.run_later(remaining, move |act, ctx| {
            timeouts::record_fired(&deadline);
            act.finish(
                RunStatus::TimedOut,
                None,
                Some(RunError::timed_out(TimeoutLevel::Workflow)),
                ctx,
            );
        });
        if self.deadline.passed() {
            return;
        }
        match self.continuation.take() {
            None => self.start_node(self.plan.input, ctx),
            Some(cp) => {
                if let Err(msg) = self.restore(cp, ctx) {
                    tracing::error!(run_id = %self.run_id, error = %msg, "cannot resume the run from its checkpoint");
                    self.finish(
                        RunStatus::Failed,
                        None,
                        Some(RunError::new(ErrorCode::Internal, msg)),
                        ctx,
                    );
                    return;
                }
            }
        }
        self.maybe_pause(ctx);
    }
}

impl Handler<NodeFinished> for RunActor {
    type Result = ();

    fn handle(&mut self, msg: NodeFinished, ctx: &mut Context<Self>) {
        if self.reported || !matches!(self.states[msg.idx], NodeState::Running(..)) {
            return;
        }
        self.states[msg.idx] = NodeState::Done;
        let node_id = self.plan.nodes[msg.idx].id.clone();
        self.waiting.retain(|w| w.idx != msg.idx);
        let records = msg.records;
        self.model_runs.extend(records.model_runs);
        self.usage.add(&records.usage);
        let (status, error) = match &msg.result {
            Ok(_) => (NodeStatus::Succeeded, None),
            Err(e) => (
                match e.code {
                    ErrorCode::TimedOut => NodeStatus::TimedOut,
                    ErrorCode::Cancelled => NodeStatus::Cancelled,
                    _ => NodeStatus::Failed,
                },
                Some(e.to_run_error(&node_id)),
            ),
        };
        self.log(
            msg.idx,
            status,
            msg.started_at_ms,
            msg.ended_at_ms,
            msg.attempts,
            error.clone(),
        );
        if let Some(l) = self.logs.last_mut() {
            l.findings = records.findings;
        }
        match msg.result {
            Ok(out) => {
                if msg.idx == self.plan.output {
                    let size = weft_shared::model::json_len(&out.value);
                    if size > self.env.max_output_bytes {
                        let err = RunError::new(
                            ErrorCode::OutputTooLarge,
                            format!(
                                "the output is {size} bytes; the limit is {} (max_output_bytes)",
                                self.env.max_output_bytes
                            ),
                        )
                        .at_node(&self.plan.nodes[msg.idx].id);
                        self.finish(RunStatus::Failed, None, Some(err), ctx);
                    } else {
                        self.finish(RunStatus::Succeeded, Some(out.value), None, ctx);
                    }
                    return;
                }
                self.record_step(node_id, out.value);
                self.resolve(msg.idx, out.branch.as_deref(), true, ctx);
                self.maybe_pause(ctx);
            }
            Err(_) => {
                let run_status = match status {
                    NodeStatus::TimedOut => RunStatus::TimedOut,
                    NodeStatus::Cancelled => RunStatus::Cancelled,
                    _ => RunStatus::Failed,
                };
                self.finish(run_status, None, error, ctx);
            }
        }
    }
}

impl Handler<NodeWaits> for RunActor {
    type Result = ();
    fn handle(&mut self, msg: NodeWaits, _: &mut Context<Self>) {
        if self.reported {
            return;
        }
        let idx = msg.0.idx;
        self.waiting.retain(|w| w.idx != idx);
        self.waiting.push(msg.0);
    }
}

impl Handler<NowWaiting> for RunActor {
    type Result = ();
    fn handle(&mut self, msg: NowWaiting, _: &mut Context<Self>) {
        // Only if the callback has not already come.
        if !self.reported && self.waiting.iter().any(|w| w.idx == msg.0) {
            self.progress(RunStatus::Waiting, Some(self.plan.nodes[msg.0].id.clone()));
        }
    }
}

impl Handler<ResumeNode> for RunActor {
    type Result = String;
    fn handle(&mut self, msg: ResumeNode, _: &mut Context<Self>) -> String {
        let Some(pos) = self
            .waiting
            .iter()
            .position(|w| self.plan.nodes[w.idx].id == msg.node_id)
        else {
            return "not_waiting".into();
        };
        // Constant-time compare: the token is a credential.
        let want = self.waiting[pos].token.expose().as_bytes();
        let got = msg.token.expose().as_bytes();
        let same = want.len() == got.len()
            && want.iter().zip(got).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if !same {
            return "bad_token".into();
        }
        // One-time: the waiter is consumed.
        let w = self.waiting.swap_remove(pos);
        let _ = w.payload.send(msg.payload);
        if self.waiting.is_empty() {
            self.progress(RunStatus::Running, None);
        }
        "resumed".into()
    }
}

impl Handler<CancelRun> for RunActor {
    type Result = ();
    fn handle(&mut self, _: CancelRun, ctx: &mut Context<Self>) {
        self.finish(
            RunStatus::Cancelled,
            None,
            Some(RunError::new(ErrorCode::Cancelled, "run cancelled")),
            ctx,
        );
    }
}

impl Drop for RunActor {
    fn drop(&mut self) {
        // Stopped without reporting (a panic in the actor, or its arbiter
        // went away): the coordinator must still hear.
        if !self.reported {
            for s in &self.states {
                if let NodeState::Running(_, cancel) = s {
                    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            self.report(
                RunStatus::Failed,
                None,
                Some(RunError::new(
                    ErrorCode::Internal,
                    "run actor stopped unexpectedly",
                )),
            );
        }
    }
}
