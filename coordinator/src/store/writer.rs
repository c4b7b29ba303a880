//! The run writer: one task that commits run records in batches.

use crate::model::RunRecord;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most records committed in one transaction.
const MAX_BATCH: usize = 512;
/// Room for writes waiting to be committed.
const QUEUE: usize = 65_536;

#[derive(Clone, Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the run writer has stopped")]
    Closed,
    #[error("could not write runs: {0}")]
    Failed(String),
}

pub(super) enum Op {
    /// A run's state; `Wait::Soon` when someone waits on it being durable.
    Upsert(Arc<RunRecord>, Wait),
    /// A push delivery, written with the run it belongs to (or before it).
    Delivery(
        Box<super::NewDelivery>,
        Option<oneshot::Sender<Result<(), WriteError>>>,
    ),
    Flush(oneshot::Sender<()>),
}

/// Told, from the writer's task, whether a run write is durable. It must not
/// hold the writer up: send on a channel, no more.
pub(super) type Then = Box<dyn FnOnce(Result<(), WriteError>) + Send + Sync>;

/// Who waits for a run write, and how long the writer may hold it.
pub(super) enum Wait {
    /// Nobody: it may wait up to [`LINGER`] to share a commit.
    No,
    /// Someone who should hear soon (a 202, a resume, an async run's result
    /// that a poller reads from the store): commit at once.
    Soon(Then),
    /// Someone who needs durability but not speed (a sync run's result ack:
    /// its caller was answered from memory): may linger like `No`.
    Later(Then),
}

/// How long writes nobody hurries for wait to share a commit. A short run's
/// accepted, running and ended states then usually commit as one row
/// instead of three, in one transaction instead of several.
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

impl Op {
    fn urgent(&self) -> bool {
        match self {
            Op::Upsert(_, Wait::Soon(_)) | Op::Delivery(_, Some(_)) | Op::Flush(_) => true,
            Op::Upsert(_, Wait::No | Wait::Later(_)) | Op::Delivery(_, None) => false,
        }
    }
}

/// Run states the store holds in memory, so reads of one run rarely touch
/// SQLite: every state enqueued and not yet committed (a caller answered from
/// memory who then asks for its run reads what it was told, not the state
/// before it), the last committed state of each unfinished run, and the last
/// [`RECENT`] runs that ended (async callers poll those). Runs change only
/// through the writer, so none of it is ever stale.
#[derive(Clone, Default)]
pub(super) struct RunMemory(Arc<Mutex<Held>>);

#[derive(Default)]
pub(super) struct Held {
    uncommitted: HashMap<Uuid, Arc<RunRecord>>,
    unfinished: HashMap<Uuid, Arc<RunRecord>>,
    ended: HashMap<Uuid, Arc<RunRecord>>,
    ended_order: VecDeque<Uuid>,
    /// Async runs accepted here without a push delivery: reading one needs
    /// no delivery lookup. Forgotten with the run's ended state.
    no_delivery: HashSet<Uuid>,
}

/// Ended runs kept in memory for reads.
const RECENT: usize = 8192;

impl RunMemory {
    pub(super) fn insert(&self, r: &Arc<RunRecord>) {
        if let Ok(mut m) = self.0.lock() {
            m.uncommitted.insert(r.id, r.clone());
        }
    }

    pub(super) fn note_no_delivery(&self, id: Uuid) {
        if let Ok(mut m) = self.0.lock() {
            m.no_delivery.insert(id);
        }
    }

    pub(super) fn has_no_delivery(&self, id: Uuid) -> bool {
        self.0.lock().is_ok_and(|m| m.no_delivery.contains(&id))
    }

    /// The run's latest state, if held; cloned by the caller, off the lock.
    pub(super) fn get(&self, id: Uuid) -> Option<Arc<RunRecord>> {
        let m = self.0.lock().ok()?;
        m.uncommitted
            .get(&id)
            .or_else(|| m.unfinished.get(&id))
            .or_else(|| m.ended.get(&id))
            .cloned()
    }

    /// Forgets the uncommitted states a batch wrote, unless a newer state
    /// came in since, and keeps the ended ones it committed.
    fn settle(&self, batch: &[Op], committed: bool) {
        let Ok(mut m) = self.0.lock() else {
            return;
        };
        let m = &mut *m;
        for op in batch {
            let Op::Upsert(r, _) = op else {
                continue;
            };
            if m.uncommitted.get(&r.id).is_some_and(|p| Arc::ptr_eq(p, r)) {
                m.uncommitted.remove(&r.id);
            }
            m.unfinished.remove(&r.id);
            if !committed {
                // The store is the truth; it does not hold this state.
                m.ended.remove(&r.id);
            } else if r.status.is_terminal() {
                if m.ended.insert(r.id, r.clone()).is_none() {
                    m.ended_order.push_back(r.id);
                }
                while m.ended_order.len() > RECENT {
                    if let Some(old) = m.ended_order.pop_front() {
                        m.ended.remove(&old);
                        m.no_delivery.remove(&old);
                    }
                }
            } else {
                m.ended.remove(&r.id);
                m.unfinished.insert(r.id, r.clone());
            }
        }
    }
}

pub(super) fn spawn(pool: SqlitePool, memory: RunMemory) -> mpsc::Sender<Op> {
    let (tx, mut rx) = mpsc::channel::<Op>(QUEUE);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            if !batch.iter().any(Op::urgent) {
                let until = tokio::time::Instant::now() + LINGER;
                while batch.len() < MAX_BATCH && !batch.iter().any(Op::urgent) {
                    let room = MAX_BATCH - batch.len();
                    match tokio::time::timeout_at(until, rx.recv_many(&mut batch, room)).await {
                        Ok(n) if n > 0 => {}
                        _ => break,
                    }
                }
            }
            let result = commit(&pool, &batch).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, records = batch.len(), "run batch write failed");
            }
            memory.settle(&batch, result.is_ok());
            for op in batch.drain(..) {
                match op {
                    Op::Upsert(_, Wait::Soon(then) | Wait::Later(then)) => then(result.clone()),
                    Op::Delivery(_, Some(done)) => {
                        let _ = done.send(result.clone());
                    }
                    Op::Flush(done) => {
                        let _ = done.send(());
                    }
                    Op::Upsert(_, Wait::No) | Op::Delivery(_, None) => {}
                }
            }
        }
    });
    tx
}

/// The records a batch must write: for a run written several times in one
/// batch (accepted, running, ended — common for short runs) only the last
/// state, which holds the earlier ones' fields. Model runs are kept from every
/// state (they are inserted idempotently).
fn latest_states(batch: &[Op]) -> Vec<&RunRecord> {
    let mut last: HashMap<Uuid, usize> = HashMap::new();
    let records: Vec<&RunRecord> = batch
        .iter()
        .filter_map(|op| match op {
            Op::Upsert(r, _) => Some(&**r),
            Op::Delivery(..) | Op::Flush(_) => None,
        })
        .collect();
    for (i, r) in records.iter().enumerate() {
        last.insert(r.id, i);
    }
    records
        .iter()
        .enumerate()
        .filter(|(i, r)| last.get(&r.id) == Some(i))
        .map(|(_, r)| *r)
        .collect()
}

/// Rows per INSERT statement: each statement is one round trip to SQLite's
/// thread (two thread wake-ups), so a batch is written in a few statements,
/// not one per record. 18 parameters a row stays far under SQLite's limit
/// of 32,766 per statement.
const ROWS_PER_STATEMENT: usize = 256;

async fn commit(pool: &SqlitePool, batch: &[Op]) -> Result<(), WriteError> {
    let fail = |e: sqlx::Error| WriteError::Failed(e.to_string());
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(fail)?;
    let records = latest_states(batch);
    for chunk in records.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO runs (id, workflow_id, version, status, trigger, input, output, error,
                               created_at_ms, started_at_ms, ended_at_ms, deadline_ms, attempts, nodes, usage,
                               waiting, resumes, checkpoint) ",
        );
        q.push_values(chunk, |mut row, r| {
            row.push_bind(r.id.to_string())
                .push_bind(r.workflow_id.clone())
                .push_bind(r.version as i64)
                .push_bind(r.status.as_str())
                .push_bind(r.trigger.clone())
                .push_bind(r.input.to_string())
                .push_bind(r.output.as_ref().map(|v| v.to_string()))
                .push_bind(r.error.as_ref().and_then(|e| serde_json::to_string(e).ok()))
                .push_bind(r.created_at_ms as i64)
                .push_bind(r.started_at_ms.map(|v| v as i64))
                .push_bind(r.ended_at_ms.map(|v| v as i64))
                .push_bind(r.deadline_ms as i64)
                .push_bind(serde_json::to_string(&r.attempts).unwrap_or_else(|_| "[]".into()))
                .push_bind(serde_json::to_string(&r.nodes).unwrap_or_else(|_| "[]".into()))
                .push_bind(serde_json::to_string(&r.usage).unwrap_or_else(|_| "{}".into()))
                .push_bind(serde_json::to_string(&r.waiting).unwrap_or_else(|_| "[]".into()))
                .push_bind(serde_json::to_string(&r.resumes).unwrap_or_else(|_| "[]".into()))
                .push_bind(
                    r.checkpoint
                        .as_ref()
                        .and_then(|c| serde_json::to_string(c).ok()),
                );
        });
        q.push(
            " ON CONFLICT (id) DO UPDATE SET
               status = excluded.status, output = excluded.output, error = excluded.error,
               started_at_ms = excluded.started_at_ms, ended_at_ms = excluded.ended_at_ms,
               attempts = excluded.attempts, nodes = excluded.nodes, usage = excluded.usage,
               waiting = excluded.waiting, resumes = excluded.resumes, checkpoint = excluded.checkpoint",
        );
        q.build().execute(&mut *tx).await.map_err(fail)?;
    }
    let model_runs: Vec<(&RunRecord, &weft_shared::model::ModelRun)> = records
        .iter()
        .flat_map(|r| r.model_runs.iter().map(move |m| (*r, m)))
        .collect();
    for chunk in model_runs.chunks(ROWS_PER_STATEMENT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT OR IGNORE INTO model_runs (request_id, run_id, workflow_id, node_id, model, connection, status,
                started_at_ms, ended_at_ms, prompt_tokens, completion_tokens, error) ",
        );
        q.push_values(chunk, |mut row, (r, m)| {
            row.push_bind(m.request_id.clone())
                .push_bind(r.id.to_string())
                .push_bind(r.workflow_id.clone())
                .push_bind(m.node_id.clone())
                .push_bind(m.model.clone())
                .push_bind(m.connection.clone())
                .push_bind(m.status.clone())
                .push_bind(m.started_at_ms as i64)
                .push_bind(m.ended_at_ms as i64)
                .push_bind(m.prompt_tokens as i64)
                .push_bind(m.completion_tokens as i64)
                .push_bind(m.error.clone());
        });
        q.build().execute(&mut *tx).await.map_err(fail)?;
    }
    for op in batch {
        if let Op::Delivery(d, _) = op {
            super::endpoints::insert_delivery(&mut *tx, d)
                .await
                .map_err(fail)?;
        }
    }
    tx.commit().await.map_err(fail)
}
