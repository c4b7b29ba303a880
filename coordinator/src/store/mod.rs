//! The store: workflows, their deployed versions, and runs. SQLite through sqlx
//! by default; every SQL statement lives in this module so PostgreSQL can
//! follow behind the same methods.
//!
//! Run writes go through one writer task that batches them into a transaction
//! (a group commit), so recording runs does not serialise the hot path: callers
//! that need durability (an async run before its 202, a result before its ack)
//! wait for their batch to commit; others only enqueue, and may wait a few
//! milliseconds to share a commit. Reads of one run are served from the
//! writer's memory while it is uncommitted, unfinished or recently ended.

mod access;
mod endpoints;
mod lifecycle;
mod writer;

use crate::model::{EnvVarRow, RunRecord, Workflow, WorkflowVersion};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;
use weft_shared::model::{ModelRun, RunStatus, WorkflowDefinition};
use weft_shared::time::now_ms;

pub use access::{AuditFilter, NewCredential, ShareRemoval};
pub use endpoints::{AttemptRecord, Delivery, NewDelivery, SealedAt};
pub use lifecycle::{DeleteOutcome, EnvWrite};
pub use writer::WriteError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Filters for listing runs.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub workflow_id: Option<String>,
    pub status: Option<RunStatus>,
    /// `sync` or `async`.
    pub trigger: Option<String>,
    /// Runs accepted at or after this time (Unix ms).
    pub from_ms: Option<u64>,
    /// Runs accepted before this time (Unix ms).
    pub to_ms: Option<u64>,
    /// Only runs of workflows shared with this user (a non-admin caller).
    pub visible_to: Option<String>,
    /// The cursor of the previous page: runs after it in the sort order.
    pub after: Option<Uuid>,
    /// Oldest first (default: newest first).
    pub oldest_first: bool,
    pub limit: u32,
}

/// Durations and outcomes the monitor summarises.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunSample {
    /// Ended runs' durations (acceptance to end) in ms, ascending.
    pub durations_ms: Vec<u64>,
    pub by_status: Vec<(RunStatus, u64)>,
}

/// Model calls the monitor summarises.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelSample {
    pub durations_ms: Vec<u64>,
    pub failed: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// Binds [`RUN_FILTER`]'s ?1..?6.
fn bind_filter<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    f: &'q RunFilter,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    q.bind(f.workflow_id.as_deref())
        .bind(f.status.map(|s| s.as_str()))
        .bind(f.trigger.as_deref())
        .bind(f.from_ms.map(|v| v as i64))
        .bind(f.to_ms.map(|v| v as i64))
        .bind(f.visible_to.as_deref())
}

/// The filter on `runs` shared by the list and the monitor; binds ?1..?6.
const RUN_FILTER: &str =
    "(?1 IS NULL OR runs.workflow_id = ?1) AND (?2 IS NULL OR runs.status = ?2)
     AND (?3 IS NULL OR runs.trigger = ?3) AND (?4 IS NULL OR runs.created_at_ms >= ?4)
     AND (?5 IS NULL OR runs.created_at_ms < ?5)
     AND (?6 IS NULL OR runs.workflow_id IN (SELECT workflow_id FROM workflow_shares WHERE user_id = ?6))";

#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    writer: mpsc::Sender<writer::Op>,
    memory: writer::RunMemory,
}

impl Store {
    /// Opens (creating if needed) the database and runs migrations.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .pragma("cache_size", "-32768")
            .pragma("mmap_size", "268435456");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let memory = writer::RunMemory::default();
        let writer = writer::spawn(pool.clone(), memory.clone());
        Ok(Store {
            pool,
            writer,
            memory,
        })
    }

    /// A transaction that takes the write lock at once (`BEGIN IMMEDIATE`).
    /// A deferred one that reads first and writes later fails with a busy
    /// error, which no busy timeout retries, if the run writer commits in
    /// between (WAL mode); taking the lock first makes it wait instead.
    pub(crate) async fn write_tx(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    // ---- workflows -------------------------------------------------------

    /// Creates a workflow (a draft, not deployed), owned by `owner`.
    pub async fn create_workflow(
        &self,
        def: &WorkflowDefinition,
        owner: Option<&str>,
    ) -> Result<Workflow, StoreError> {
        self.import_workflow(def, &[], None, owner).await
    }

    pub async fn get_workflow(&self, id: &str) -> Result<Option<Workflow>, StoreError> {
        let row = sqlx::query("SELECT * FROM workflows WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| workflow_from_row(&r)).transpose()
    }

    /// Workflows newest first, after `before` (a cursor) when given; only
    /// those shared with `visible_to` when given (a non-admin caller).
    pub async fn list_workflows(
        &self,
        before: Option<&str>,
        limit: u32,
        visible_to: Option<&str>,
    ) -> Result<Vec<Workflow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM workflows WHERE (?1 IS NULL OR id < ?1)
             AND (?3 IS NULL OR id IN (SELECT workflow_id FROM workflow_shares WHERE user_id = ?3))
             ORDER BY id DESC LIMIT ?2",
        )
        .bind(before)
        .bind(limit as i64)
        .bind(visible_to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(workflow_from_row).collect()
    }

    /// Replaces the draft. `None` when there is no such workflow.
    pub async fn update_workflow(
        &self,
        id: &str,
        def: &WorkflowDefinition,
    ) -> Result<Option<Workflow>, StoreError> {
        Ok(self
            .import_draft(id, def, false, &[], None)
            .await?
            .map(|(w, _)| w))
    }

    /// Deletes a workflow, its versions and draft backups, unless it is
    /// deployed (checked in the same transaction); its runs stay.
    pub async fn delete_workflow(&self, id: &str) -> Result<DeleteOutcome, StoreError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query("DELETE FROM workflows WHERE id = ? AND deployed_version IS NULL")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            let exists = sqlx::query("SELECT 1 FROM workflows WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            return Ok(if exists {
                DeleteOutcome::Deployed
            } else {
                DeleteOutcome::NotFound
            });
        }
        sqlx::query("DELETE FROM workflow_versions WHERE workflow_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM draft_backups WHERE workflow_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        // Its keys stop working and its sharing goes with it.
        sqlx::query("DELETE FROM workflow_shares WHERE workflow_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE credentials SET revoked_at_ms = ? WHERE workflow_id = ? AND revoked_at_ms IS NULL")
            .bind(now_ms() as i64)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(DeleteOutcome::Deleted)
    }

    /// Publishes the draft as the next immutable version and makes it the
    /// deployed one (a redeploy, or a deploy after an undeploy, is the same
    /// step). `None` if absent.
    pub async fn deploy(&self, id: &str) -> Result<Option<WorkflowVersion>, StoreError> {
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(
            "SELECT definition, latest_version, endpoint, push_token FROM workflows WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let definition: String = row.try_get("definition")?;
        let version = row.try_get::<i64, _>("latest_version")? + 1;
        let now = now_ms() as i64;
        // The draft's endpoint configuration goes with it: it takes effect now.
        sqlx::query("INSERT INTO workflow_versions (workflow_id, version, definition, created_at_ms, endpoint, push_token) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(id)
            .bind(version)
            .bind(&definition)
            .bind(now)
            .bind(row.try_get::<Option<String>, _>("endpoint")?)
            .bind(row.try_get::<Option<String>, _>("push_token")?)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE workflows SET latest_version = ?1, deployed_version = ?1 WHERE id = ?2",
        )
        .bind(version)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(WorkflowVersion {
            workflow_id: id.to_string(),
            version: version as u32,
            definition: from_json(&definition)?,
            created_at_ms: now as u64,
            endpoint: endpoints::version_endpoint(&row)?,
        }))
    }

    pub async fn get_version(
        &self,
        id: &str,
        version: u32,
    ) -> Result<Option<WorkflowVersion>, StoreError> {
        let row =
            sqlx::query("SELECT * FROM workflow_versions WHERE workflow_id = ? AND version = ?")
                .bind(id)
                .bind(version as i64)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| version_from_row(&r)).transpose()
    }

    pub async fn list_versions(&self, id: &str) -> Result<Vec<WorkflowVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM workflow_versions WHERE workflow_id = ? ORDER BY version DESC",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    // ---- runs ------------------------------------------------------------

    /// Records a run's current state and waits until it is durable.
    pub async fn save_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let run = Arc::new(run.clone());
        self.memory.insert(&run);
        let then: writer::Then = Box::new(move |r| {
            let _ = tx.send(r);
        });
        self.writer
            .send(writer::Op::Upsert(run, writer::Wait::Soon(then)))
            .await
            .map_err(|_| WriteError::Closed)?;
        rx.await.map_err(|_| WriteError::Closed)??;
        Ok(())
    }

    /// Records a new asynchronous run and, when its result is to be pushed,
    /// its delivery, and waits until both are durable. The delivery is
    /// queued first, so it commits in the same batch as the run or before;
    /// if its batch fails, the caller hears it (no run goes unpushed
    /// silently).
    pub async fn save_run_with_delivery(
        &self,
        run: &RunRecord,
        delivery: Option<NewDelivery>,
    ) -> Result<(), StoreError> {
        let mut delivered = None;
        if delivery.is_none() {
            self.memory.note_no_delivery(run.id);
        }
        if let Some(d) = delivery {
            let (tx, rx) = oneshot::channel();
            self.writer
                .send(writer::Op::Delivery(Box::new(d), Some(tx)))
                .await
                .map_err(|_| WriteError::Closed)?;
            delivered = Some(rx);
        }
        let saved = self.save_run(run).await;
        if let Some(rx) = delivered {
            rx.await.map_err(|_| WriteError::Closed)??;
        }
        saved
    }

    /// Records a run's current state without waiting. Writes keep the order
    /// they were enqueued in.
    pub fn enqueue_run(&self, run: &RunRecord) {
        self.enqueue(writer::Op::Upsert(Arc::new(run.clone()), writer::Wait::No));
    }

    /// As [`Store::enqueue_run`], committed soon; `then` is told from the
    /// writer (which it must not hold up) whether the write is durable.
    pub fn enqueue_run_then(
        &self,
        run: &RunRecord,
        then: impl FnOnce(Result<(), WriteError>) + Send + Sync + 'static,
    ) {
        self.enqueue(writer::Op::Upsert(
            Arc::new(run.clone()),
            writer::Wait::Soon(Box::new(then)),
        ));
    }

    /// As [`Store::enqueue_run_then`], for a waiter who needs durability but
    /// not speed: the write may wait a few milliseconds to share a commit.
    pub fn enqueue_run_unhurried(
        &self,
        run: &RunRecord,
        then: impl FnOnce(Result<(), WriteError>) + Send + Sync + 'static,
    ) {
        self.enqueue(writer::Op::Upsert(
            Arc::new(run.clone()),
            writer::Wait::Later(Box::new(then)),
        ));
    }

    fn enqueue(&self, op: writer::Op) {
        if let writer::Op::Upsert(r, _) = &op {
            self.memory.insert(r);
        }
        if let Err(e) = self.writer.try_send(op) {
            // The queue is large; if it is full, wait for room on a task rather
            // than dropping the write.
            let writer = self.writer.clone();
            let op = match e {
                mpsc::error::TrySendError::Full(op) | mpsc::error::TrySendError::Closed(op) => op,
            };
            tokio::spawn(async move {
                let _ = writer.send(op).await;
            });
        }
    }

    /// A run with its model runs.
    pub async fn get_run(&self, id: Uuid) -> Result<Option<RunRecord>, StoreError> {
        if let Some(run) = self.memory.get(id) {
            return Ok(Some((*run).clone()));
        }
        self.load_run(id).await
    }

    /// A run as committed to SQLite, past the in-memory states.
    async fn load_run(&self, id: Uuid) -> Result<Option<RunRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        let Some(mut run) = row.map(|r| run_from_row(&r)).transpose()? else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT * FROM model_runs WHERE run_id = ? ORDER BY started_at_ms, request_id",
        )
        .bind(id.to_string())
        .fetch_all(&self.pool)
        .await?;
        run.model_runs = rows
            .iter()
            .map(model_run_from_row)
            .collect::<Result<_, _>>()?;
        Ok(Some(run))
    }

    // ---- idempotency keys -----------------------------------------------

    /// Claims `key` for `run_id`, or returns the run and request hash that
    /// claimed it first within `retention_ms`. Durable when it returns.
    pub async fn claim_idempotency(
        &self,
        workflow_id: &str,
        key: &str,
        run_id: Uuid,
        request_hash: &str,
        retention_ms: u64,
    ) -> Result<Option<(Uuid, String)>, StoreError> {
        let now = now_ms() as i64;
        let mut tx = self.write_tx().await?;
        // Expired claims no longer count.
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE workflow_id = ? AND key = ? AND created_at_ms < ?",
        )
        .bind(workflow_id)
        .bind(key)
        .bind(now - retention_ms as i64)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO idempotency_keys (workflow_id, key, run_id, request_hash, created_at_ms) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(workflow_id)
        .bind(key)
        .bind(run_id.to_string())
        .bind(request_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let existing = if inserted {
            None
        } else {
            let row = sqlx::query("SELECT run_id, request_hash FROM idempotency_keys WHERE workflow_id = ? AND key = ?")
                .bind(workflow_id)
                .bind(key)
                .fetch_one(&mut *tx)
                .await?;
            let id: String = row.try_get("run_id")?;
            Some((
                Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                row.try_get("request_hash")?,
            ))
        };
        tx.commit().await?;
        Ok(existing)
    }

    /// Drops a claim whose run was never recorded (the coordinator stopped
    /// between the claim and the run's write).
    pub async fn release_idempotency(
        &self,
        workflow_id: &str,
        key: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM idempotency_keys WHERE workflow_id = ? AND key = ?")
            .bind(workflow_id)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- environment variables ------------------------------------------

    /// Adds a variable; `false` if one of that name exists.
    pub async fn create_env(&self, v: &EnvVarRow) -> Result<bool, StoreError> {
        lifecycle::write_env(&self.pool, &EnvWrite::Create(v.clone())).await
    }

    pub async fn list_env(&self, workflow_id: &str) -> Result<Vec<EnvVarRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM env_vars WHERE workflow_id = ? ORDER BY name")
            .bind(workflow_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(env_from_row).collect()
    }

    pub async fn get_env(
        &self,
        workflow_id: &str,
        name: &str,
    ) -> Result<Option<EnvVarRow>, StoreError> {
        let row = sqlx::query("SELECT * FROM env_vars WHERE workflow_id = ? AND name = ?")
            .bind(workflow_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| env_from_row(&r)).transpose()
    }

    /// Replaces a variable's value, secure flag and notes.
    pub async fn update_env(&self, v: &EnvVarRow) -> Result<bool, StoreError> {
        lifecycle::write_env(&self.pool, &EnvWrite::Replace(v.clone())).await
    }

    pub async fn delete_env(&self, workflow_id: &str, name: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM env_vars WHERE workflow_id = ? AND name = ?")
            .bind(workflow_id)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Every secure variable, for key rotation at start.
    pub async fn secure_env(&self) -> Result<Vec<EnvVarRow>, StoreError> {
        let rows = sqlx::query("SELECT * FROM env_vars WHERE secure = 1")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(env_from_row).collect()
    }

    /// Runs newest first, or oldest first (run ids are time-ordered).
    pub async fn list_runs(&self, f: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let (cmp, order) = if f.oldest_first {
            (">", "ASC")
        } else {
            ("<", "DESC")
        };
        let rows = bind_filter(sqlx::query(&format!(
            "SELECT * FROM runs WHERE {RUN_FILTER} AND (?7 IS NULL OR id {cmp} ?7) ORDER BY id {order} LIMIT ?8"
        )), f)
        .bind(f.after.map(|u| u.to_string()))
        .bind(f.limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Every ended run matching the filter (cursor and limit ignored): its
    /// duration, sorted, and counts by status. Exact, not sampled.
    pub async fn run_sample(&self, f: &RunFilter) -> Result<RunSample, StoreError> {
        let rows = bind_filter(
            sqlx::query(&format!(
                "SELECT ended_at_ms - created_at_ms AS d FROM runs
             WHERE {RUN_FILTER} AND ended_at_ms IS NOT NULL ORDER BY d"
            )),
            f,
        )
        .fetch_all(&self.pool)
        .await?;
        let durations_ms = rows
            .iter()
            .map(|r| r.try_get::<i64, _>("d").map(|d| d.max(0) as u64))
            .collect::<Result<_, _>>()?;
        let rows = bind_filter(
            sqlx::query(&format!(
                "SELECT status, COUNT(*) AS n FROM runs WHERE {RUN_FILTER} GROUP BY status"
            )),
            f,
        )
        .fetch_all(&self.pool)
        .await?;
        let mut by_status = Vec::new();
        for r in &rows {
            let s: String = r.try_get("status")?;
            if let Some(st) = RunStatus::parse(&s) {
                by_status.push((st, r.try_get::<i64, _>("n")? as u64));
            }
        }
        Ok(RunSample {
            durations_ms,
            by_status,
        })
    }

    /// Model calls of runs matching the filter.
    pub async fn model_sample(&self, f: &RunFilter) -> Result<ModelSample, StoreError> {
        let rows = bind_filter(sqlx::query(&format!(
            "SELECT m.ended_at_ms - m.started_at_ms AS d, m.status, m.prompt_tokens, m.completion_tokens
             FROM model_runs m JOIN runs ON runs.id = m.run_id
             WHERE {RUN_FILTER} ORDER BY d"
        )), f)
        .fetch_all(&self.pool)
        .await?;
        let mut out = ModelSample::default();
        for r in &rows {
            out.durations_ms
                .push(r.try_get::<i64, _>("d")?.max(0) as u64);
            if r.try_get::<String, _>("status")? != "succeeded" {
                out.failed += 1;
            }
            out.prompt_tokens += r.try_get::<i64, _>("prompt_tokens")? as u64;
            out.completion_tokens += r.try_get::<i64, _>("completion_tokens")? as u64;
        }
        Ok(out)
    }

    /// Runs that had not ended when the coordinator last stopped.
    pub async fn unfinished_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM runs WHERE status IN ('queued', 'running', 'waiting') ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_from_row).collect()
    }

    /// Waits until every write enqueued so far is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(writer::Op::Flush(tx))
            .await
            .map_err(|_| WriteError::Closed)?;
        rx.await.map_err(|_| WriteError::Closed)?;
        Ok(())
    }

    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn opt_json<T: serde::de::DeserializeOwned>(s: Option<String>) -> Result<Option<T>, StoreError> {
    s.map(|s| from_json(&s)).transpose()
}

fn workflow_from_row(r: &SqliteRow) -> Result<Workflow, StoreError> {
    let latest: i64 = r.try_get("latest_version")?;
    let deployed_version = r
        .try_get::<Option<i64>, _>("deployed_version")?
        .map(|v| v as u32);
    Ok(Workflow {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        description: r.try_get("description")?,
        definition: from_json(&r.try_get::<String, _>("definition")?)?,
        latest_version: (latest > 0).then_some(latest as u32),
        deployed: deployed_version.is_some(),
        deployed_version,
        active: r.try_get::<bool, _>("active")?,
        created_at_ms: r.try_get::<i64, _>("created_at_ms")? as u64,
        updated_at_ms: r.try_get::<i64, _>("updated_at_ms")? as u64,
    })
}

fn version_from_row(r: &SqliteRow) -> Result<WorkflowVersion, StoreError> {
    Ok(WorkflowVersion {
        workflow_id: r.try_get("workflow_id")?,
        version: r.try_get::<i64, _>("version")? as u32,
        definition: from_json(&r.try_get::<String, _>("definition")?)?,
        created_at_ms: r.try_get::<i64, _>("created_at_ms")? as u64,
        endpoint: endpoints::version_endpoint(r)?,
    })
}

fn env_from_row(r: &SqliteRow) -> Result<EnvVarRow, StoreError> {
    Ok(EnvVarRow {
        workflow_id: r.try_get("workflow_id")?,
        name: r.try_get("name")?,
        value: r.try_get("value")?,
        secure: r.try_get::<bool, _>("secure")?,
        notes: r.try_get("notes")?,
        created_at_ms: r.try_get::<i64, _>("created_at_ms")? as u64,
        updated_at_ms: r.try_get::<i64, _>("updated_at_ms")? as u64,
    })
}

fn model_run_from_row(r: &SqliteRow) -> Result<ModelRun, StoreError> {
    Ok(ModelRun {
        request_id: r.try_get("request_id")?,
        node_id: r.try_get("node_id")?,
        model: r.try_get("model")?,
        connection: r.try_get("connection")?,
        status: r.try_get("status")?,
        started_at_ms: r.try_get::<i64, _>("started_at_ms")? as u64,
        ended_at_ms: r.try_get::<i64, _>("ended_at_ms")? as u64,
        response_ms: (r.try_get::<i64, _>("ended_at_ms")? - r.try_get::<i64, _>("started_at_ms")?)
            .max(0) as u64,
        prompt_tokens: r.try_get::<i64, _>("prompt_tokens")? as u64,
        completion_tokens: r.try_get::<i64, _>("completion_tokens")? as u64,
        error: r.try_get("error")?,
    })
}

fn run_from_row(r: &SqliteRow) -> Result<RunRecord, StoreError> {
    let id: String = r.try_get("id")?;
    let status: String = r.try_get("status")?;
    let input: String = r.try_get("input")?;
    Ok(RunRecord {
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        workflow_id: r.try_get("workflow_id")?,
        version: r.try_get::<i64, _>("version")? as u32,
        status: RunStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("status {status}")))?,
        trigger: r.try_get("trigger")?,
        input: from_json::<Value>(&input)?,
        output: opt_json(r.try_get("output")?)?,
        error: opt_json(r.try_get("error")?)?,
        created_at_ms: r.try_get::<i64, _>("created_at_ms")? as u64,
        started_at_ms: r
            .try_get::<Option<i64>, _>("started_at_ms")?
            .map(|v| v as u64),
        ended_at_ms: r
            .try_get::<Option<i64>, _>("ended_at_ms")?
            .map(|v| v as u64),
        deadline_ms: r.try_get::<i64, _>("deadline_ms")? as u64,
        attempts: from_json(&r.try_get::<String, _>("attempts")?)?,
        nodes: from_json(&r.try_get::<String, _>("nodes")?)?,
        usage: from_json(&r.try_get::<String, _>("usage")?)?,
        model_runs: Vec::new(),
        waiting: from_json(&r.try_get::<String, _>("waiting")?)?,
        resumes: from_json(&r.try_get::<String, _>("resumes")?)?,
        checkpoint: opt_json(r.try_get("checkpoint")?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def() -> WorkflowDefinition {
        serde_json::from_value(json!({"name": "w", "nodes": [], "edges": []})).unwrap()
    }

    fn run(wf: &str) -> RunRecord {
        RunRecord::new(Uuid::now_v7(), wf.into(), 1, "async", json!({"a": 1}), 10)
    }

    #[tokio::test]
    async fn a_run_reads_as_last_enqueued_before_and_after_its_unhurried_commit() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        let mut r = run("wf");
        r.trigger = "sync".into();
        // Nobody waits on these writes; the reader sees each state at once.
        store.enqueue_run(&r);
        assert_eq!(store.get_run(r.id).await.unwrap().unwrap(), r);
        r.status = RunStatus::Running;
        store.enqueue_run(&r);
        assert_eq!(store.get_run(r.id).await.unwrap().unwrap(), r);
        // A sync run's result: durable when its waiter hears, not sooner.
        r.status = RunStatus::Succeeded;
        r.output = Some(json!({"n": 42}));
        let (tx, rx) = oneshot::channel();
        store.enqueue_run_unhurried(&r, move |written| {
            let _ = tx.send(written.is_ok());
        });
        assert_eq!(store.get_run(r.id).await.unwrap().unwrap(), r);
        assert!(rx.await.unwrap(), "the write failed");
        assert_eq!(store.load_run(r.id).await.unwrap().unwrap(), r);
        // Ended runs are still read from memory, identical to the store.
        assert_eq!(store.get_run(r.id).await.unwrap().unwrap(), r);
        // An async run accepted without a push needs no delivery lookup, and
        // one accepted with a push finds its delivery.
        let a = run("wf");
        store.save_run_with_delivery(&a, None).await.unwrap();
        assert!(store.get_delivery(a.id).await.unwrap().is_none());
        let b = run("wf");
        store
            .save_run_with_delivery(
                &b,
                Some(NewDelivery {
                    run_id: b.id,
                    delivery_id: Uuid::now_v7(),
                    workflow_id: "wf".into(),
                    version: 1,
                }),
            )
            .await
            .unwrap();
        assert!(store.get_delivery(b.id).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn workflows_versions_and_runs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        let wf = store.create_workflow(&def(), None).await.unwrap();
        assert_eq!(store.deploy(&wf.id).await.unwrap().unwrap().version, 1);
        assert_eq!(store.deploy(&wf.id).await.unwrap().unwrap().version, 2);
        assert_eq!(
            store
                .get_workflow(&wf.id)
                .await
                .unwrap()
                .unwrap()
                .latest_version,
            Some(2)
        );

        let mut r = run(&wf.id);
        store.save_run(&r).await.unwrap();
        r.status = RunStatus::Succeeded;
        r.output = Some(json!({"ok": true}));
        store.enqueue_run(&r);
        store.flush().await.unwrap();
        assert_eq!(store.load_run(r.id).await.unwrap().unwrap(), r);
        assert_eq!(store.get_run(r.id).await.unwrap().unwrap(), r);

        // A run paused at a human node keeps its checkpoint and answers.
        use weft_shared::model::{Checkpoint, DoneNode, HumanResume, HumanWait};
        let mut paused = run("wf-human");
        paused.status = RunStatus::Waiting;
        paused.waiting = vec![HumanWait {
            node_id: "ask".into(),
            prompt: "ok?".into(),
            since_ms: 1,
            deadline_ms: 2,
            level: weft_shared::time::TimeoutLevel::Node,
        }];
        paused.resumes = vec![HumanResume {
            node_id: "earlier".into(),
            value: json!({"approved": [true, null]}),
            resumed_by: "alice".into(),
            resumed_at_ms: 3,
        }];
        paused.checkpoint = Some(Checkpoint {
            done: vec![DoneNode {
                node_id: "in".into(),
                output: json!({"a": 1}),
                branch: None,
            }],
            skipped: vec!["other".into()],
            waiting: paused.waiting.clone(),
            resumed: vec![],
        });
        store.save_run(&paused).await.unwrap();
        assert_eq!(store.load_run(paused.id).await.unwrap().unwrap(), paused);
        assert!(store
            .unfinished_runs()
            .await
            .unwrap()
            .iter()
            .any(|u| u.id == paused.id && u.checkpoint.is_some()));
        paused.status = RunStatus::Cancelled;
        paused.waiting.clear();
        paused.checkpoint = None;
        store.save_run(&paused).await.unwrap();
        assert_eq!(store.load_run(paused.id).await.unwrap().unwrap(), paused);

        for _ in 0..5 {
            store.enqueue_run(&run(&wf.id));
        }
        store.flush().await.unwrap();
        let page = store
            .list_runs(&RunFilter {
                workflow_id: Some(wf.id.clone()),
                limit: 4,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.len(), 4);
        let rest = store
            .list_runs(&RunFilter {
                workflow_id: Some(wf.id.clone()),
                limit: 4,
                after: Some(page[3].id),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(rest.len(), 2);
        assert_eq!(store.unfinished_runs().await.unwrap().len(), 5);

        // Reopening keeps everything (migrations are not re-run destructively).
        drop(store);
        let store = Store::open(&url).await.unwrap();
        assert!(store.get_run(r.id).await.unwrap().is_some());
    }
}
