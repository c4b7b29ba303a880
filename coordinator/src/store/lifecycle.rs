//! The workflow lifecycle in the store: undeploy, the active switch, imports
//! (a new workflow, or a new draft with an optional backup of the old one)
//! and draft backups. Each change is one transaction.

use super::{from_json, to_json, workflow_from_row, Store, StoreError};
use crate::endpoint::EndpointSettings;
use crate::model::{DraftBackup, EnvVarRow, Workflow};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;
use weft_shared::model::WorkflowDefinition;
use weft_shared::time::now_ms;

/// What [`Store::delete_workflow`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    /// Refused: the workflow is deployed; undeploy it first.
    Deployed,
}

/// A variable an import writes.
#[derive(Clone, Debug, PartialEq)]
pub enum EnvWrite {
    /// A name the workflow lacks.
    Create(EnvVarRow),
    /// A name it has: value, secure flag and notes are replaced.
    Replace(EnvVarRow),
}

impl Store {
    /// Takes the endpoint offline: no version is deployed any more (versions
    /// stay). `None` if there is no such workflow.
    pub async fn undeploy(&self, id: &str) -> Result<Option<Workflow>, StoreError> {
        let done = sqlx::query("UPDATE workflows SET deployed_version = NULL WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.get_workflow(id).await
    }

    /// Turns the active switch. `None` if there is no such workflow.
    pub async fn set_active(&self, id: &str, active: bool) -> Result<Option<Workflow>, StoreError> {
        let done = sqlx::query("UPDATE workflows SET active = ? WHERE id = ?")
            .bind(active)
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        self.get_workflow(id).await
    }

    /// Creates a workflow (a draft, not deployed) with its variables and,
    /// if given, its endpoint's mode and timeouts (never a push target),
    /// shared with `owner` (a user id) as its owner.
    pub async fn import_workflow(
        &self,
        def: &WorkflowDefinition,
        env: &[EnvVarRow],
        endpoint: Option<&EndpointSettings>,
        owner: Option<&str>,
    ) -> Result<Workflow, StoreError> {
        let id = Uuid::now_v7().to_string();
        let now = now_ms() as i64;
        let endpoint = endpoint.map(|e| {
            to_json(&EndpointSettings {
                push_url: None,
                ..e.clone()
            })
        });
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO workflows (id, name, description, definition, latest_version, created_at_ms, updated_at_ms, endpoint)
             VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
        )
        .bind(&id)
        .bind(&def.name)
        .bind(&def.description)
        .bind(to_json(def))
        .bind(now)
        .bind(now)
        .bind(endpoint)
        .execute(&mut *tx)
        .await?;
        for v in env {
            let v = EnvVarRow {
                workflow_id: id.clone(),
                ..v.clone()
            };
            write_env(&mut *tx, &EnvWrite::Create(v)).await?;
        }
        if let Some(user) = owner {
            super::access::write_share(&mut tx, &id, user, crate::access::Role::Owner, Some(user))
                .await?;
        }
        let row = sqlx::query("SELECT * FROM workflows WHERE id = ?")
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        workflow_from_row(&row)
    }

    /// Replaces a workflow's draft with `def` and writes `env`; with
    /// `backup`, the replaced draft is saved first; with `endpoint`, the
    /// draft endpoint's mode and timeouts are replaced (its push target is
    /// kept). `None` if absent.
    pub async fn import_draft(
        &self,
        id: &str,
        def: &WorkflowDefinition,
        backup: bool,
        env: &[EnvWrite],
        endpoint: Option<&EndpointSettings>,
    ) -> Result<Option<(Workflow, Option<DraftBackup>)>, StoreError> {
        let now = now_ms() as i64;
        let mut tx = self.write_tx().await?;
        let Some(old) = sqlx::query("SELECT definition, endpoint FROM workflows WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        if let Some(e) = endpoint {
            let current: EndpointSettings = match old.try_get::<Option<String>, _>("endpoint")? {
                Some(s) => from_json(&s)?,
                None => EndpointSettings::default(),
            };
            let merged = EndpointSettings {
                push_url: current.push_url,
                ..e.clone()
            };
            sqlx::query("UPDATE workflows SET endpoint = ? WHERE id = ?")
                .bind(to_json(&merged))
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let saved = if backup {
            let b = DraftBackup {
                id: Uuid::now_v7().to_string(),
                workflow_id: id.to_string(),
                reason: "import".into(),
                definition: from_json(&old.try_get::<String, _>("definition")?)?,
                created_at_ms: now as u64,
            };
            sqlx::query(
                "INSERT INTO draft_backups (id, workflow_id, definition, reason, created_at_ms) VALUES (?, ?, ?, ?, ?)",
            )
            .bind(&b.id)
            .bind(id)
            .bind(old.try_get::<String, _>("definition")?)
            .bind(&b.reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Some(b)
        } else {
            None
        };
        sqlx::query(
            "UPDATE workflows SET name = ?, description = ?, definition = ?, updated_at_ms = ? WHERE id = ?",
        )
        .bind(&def.name)
        .bind(&def.description)
        .bind(to_json(def))
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        for w in env {
            write_env(&mut *tx, w).await?;
        }
        let row = sqlx::query("SELECT * FROM workflows WHERE id = ?")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some((workflow_from_row(&row)?, saved)))
    }

    /// A workflow's draft backups, newest first.
    pub async fn list_backups(&self, workflow_id: &str) -> Result<Vec<DraftBackup>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM draft_backups WHERE workflow_id = ? ORDER BY id DESC")
                .bind(workflow_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(backup_from_row).collect()
    }
}

/// Writes one variable; `false` if nothing changed (a name that exists, on
/// create; one that does not, on replace).
pub(super) async fn write_env<'e>(
    ex: impl sqlx::SqliteExecutor<'e>,
    w: &EnvWrite,
) -> Result<bool, StoreError> {
    let done = match w {
        EnvWrite::Create(v) => {
            sqlx::query(
                "INSERT OR IGNORE INTO env_vars (workflow_id, name, value, secure, notes, created_at_ms, updated_at_ms)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&v.workflow_id)
            .bind(&v.name)
            .bind(&v.value)
            .bind(v.secure)
            .bind(&v.notes)
            .bind(v.created_at_ms as i64)
            .bind(v.updated_at_ms as i64)
            .execute(ex)
            .await?
        }
        EnvWrite::Replace(v) => {
            sqlx::query(
                "UPDATE env_vars SET value = ?, secure = ?, notes = ?, updated_at_ms = ? WHERE workflow_id = ? AND name = ?",
            )
            .bind(&v.value)
            .bind(v.secure)
            .bind(&v.notes)
            .bind(v.updated_at_ms as i64)
            .bind(&v.workflow_id)
            .bind(&v.name)
            .execute(ex)
            .await?
        }
    };
    Ok(done.rows_affected() == 1)
}

fn backup_from_row(r: &SqliteRow) -> Result<DraftBackup, StoreError> {
    Ok(DraftBackup {
        id: r.try_get("id")?,
        workflow_id: r.try_get("workflow_id")?,
        reason: r.try_get("reason")?,
        definition: from_json(&r.try_get::<String, _>("definition")?)?,
        created_at_ms: r.try_get::<i64, _>("created_at_ms")? as u64,
    })
}
