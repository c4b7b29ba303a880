//! The run writer: one task that commits run records in batches.

use crate::model::RunRecord;
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

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
    Upsert(
        Box<RunRecord>,
        Option<oneshot::Sender<Result<(), WriteError>>>,
    ),
    /// A push delivery, written with the run it belongs to (or before it).
    Delivery(
        Box<super::NewDelivery>,
        Option<oneshot::Sender<Result<(), WriteError>>>,
    ),
    Flush(oneshot::Sender<()>),
}

pub(super) fn spawn(pool: SqlitePool) -> mpsc::Sender<Op> {
    let (tx, mut rx) = mpsc::channel::<Op>(QUEUE);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
            let result = commit(&pool, &batch).await;
            if let Err(e) = &result {
                tracing::error!(error = %e, records = batch.len(), "run batch write failed");
            }
            for op in batch.drain(..) {
                match op {
                    Op::Upsert(_, Some(done)) | Op::Delivery(_, Some(done)) => {
                        let _ = done.send(result.clone());
                    }
                    Op::Flush(done) => {
                        let _ = done.send(());
                    }
                    Op::Upsert(_, None) | Op::Delivery(_, None) => {}
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
    let mut last: std::collections::HashMap<uuid::Uuid, usize> = std::collections::HashMap::new();
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

async fn commit(pool: &SqlitePool, batch: &[Op]) -> Result<(), WriteError> {
    let fail = |e: sqlx::Error| WriteError::Failed(e.to_string());
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.map_err(fail)?;
    for r in latest_states(batch) {
        sqlx::query(
            "INSERT INTO runs (id, workflow_id, version, status, trigger, input, output, error,
                               created_at_ms, started_at_ms, ended_at_ms, deadline_ms, attempts, nodes, usage,
                               waiting, resumes, checkpoint)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET
               status = excluded.status, output = excluded.output, error = excluded.error,
               started_at_ms = excluded.started_at_ms, ended_at_ms = excluded.ended_at_ms,
               attempts = excluded.attempts, nodes = excluded.nodes, usage = excluded.usage,
               waiting = excluded.waiting, resumes = excluded.resumes, checkpoint = excluded.checkpoint",
        )
        .bind(r.id.to_string())
        .bind(&r.workflow_id)
        .bind(r.version as i64)
        .bind(r.status.as_str())
        .bind(&r.trigger)
        .bind(r.input.to_string())
        .bind(r.output.as_ref().map(|v| v.to_string()))
        .bind(r.error.as_ref().and_then(|e| serde_json::to_string(e).ok()))
        .bind(r.created_at_ms as i64)
        .bind(r.started_at_ms.map(|v| v as i64))
        .bind(r.ended_at_ms.map(|v| v as i64))
        .bind(r.deadline_ms as i64)
        .bind(serde_json::to_string(&r.attempts).unwrap_or_else(|_| "[]".into()))
        .bind(serde_json::to_string(&r.nodes).unwrap_or_else(|_| "[]".into()))
        .bind(serde_json::to_string(&r.usage).unwrap_or_else(|_| "{}".into()))
        .bind(serde_json::to_string(&r.waiting).unwrap_or_else(|_| "[]".into()))
        .bind(serde_json::to_string(&r.resumes).unwrap_or_else(|_| "[]".into()))
        .bind(
            r.checkpoint
                .as_ref()
                .and_then(|c| serde_json::to_string(c).ok()),
        )
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        for m in &r.model_runs {
            sqlx::query(
                "INSERT OR IGNORE INTO model_runs (request_id, run_id, workflow_id, node_id, model, connection, status,
                    started_at_ms, ended_at_ms, prompt_tokens, completion_tokens, error)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&m.request_id)
            .bind(r.id.to_string())
            .bind(&r.workflow_id)
            .bind(&m.node_id)
            .bind(&m.model)
            .bind(&m.connection)
            .bind(&m.status)
            .bind(m.started_at_ms as i64)
            .bind(m.ended_at_ms as i64)
            .bind(m.prompt_tokens as i64)
            .bind(m.completion_tokens as i64)
            .bind(&m.error)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        }
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
