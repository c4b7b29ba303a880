//! Endpoint configuration (the draft's, each version's, the workflow's
//! signing secret) and async-push deliveries in the store.

use super::{from_json, to_json, Store, StoreError};
use crate::endpoint::{Endpoint, EndpointSettings};
use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;
use uuid::Uuid;
use weft_shared::time::now_ms;

/// Where a sealed value lives, for key rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SealedAt {
    /// A draft's push access token.
    DraftToken(String),
    /// A version's push access token.
    VersionToken(String, u32),
    /// A workflow's signing secret.
    SigningSecret(String),
}

/// A delivery to write with a run's first record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewDelivery {
    pub run_id: Uuid,
    pub delivery_id: Uuid,
    pub workflow_id: String,
    pub version: u32,
}

/// A push delivery as stored; the run detail shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Delivery {
    /// Sent as `Weft-Delivery-Id`, the same on every attempt.
    pub id: Uuid,
    #[serde(skip)]
    pub run_id: Uuid,
    #[serde(skip)]
    pub workflow_id: String,
    #[serde(skip)]
    pub version: u32,
    /// `pending`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    /// The HTTP status of the last attempt; none if it got no answer.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    pub first_attempt_at_ms: Option<u64>,
    pub last_attempt_at_ms: Option<u64>,
    pub delivered_at_ms: Option<u64>,
}

/// One attempt's outcome, to record.
#[derive(Clone, Debug, PartialEq)]
pub struct AttemptRecord {
    /// `pending` (to be retried), `delivered` or `failed`.
    pub status: &'static str,
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub at_ms: u64,
}

fn endpoint_of(r: &SqliteRow) -> Result<Endpoint, StoreError> {
    let settings = match r.try_get::<Option<String>, _>("endpoint")? {
        Some(s) => from_json::<EndpointSettings>(&s)?,
        None => EndpointSettings::default(),
    };
    Ok(Endpoint {
        settings,
        push_token: r.try_get("push_token")?,
    })
}

pub(super) fn version_endpoint(r: &SqliteRow) -> Result<Endpoint, StoreError> {
    endpoint_of(r)
}

fn delivery_from_row(r: &SqliteRow) -> Result<Delivery, StoreError> {
    let uuid = |s: String| Uuid::parse_str(&s).map_err(|e| StoreError::Corrupt(e.to_string()));
    let opt_u64 = |c: &str| -> Result<Option<u64>, StoreError> {
        Ok(r.try_get::<Option<i64>, _>(c)?.map(|v| v as u64))
    };
    Ok(Delivery {
        id: uuid(r.try_get("delivery_id")?)?,
        run_id: uuid(r.try_get("run_id")?)?,
        workflow_id: r.try_get("workflow_id")?,
        version: r.try_get::<i64, _>("version")? as u32,
        status: r.try_get("status")?,
        attempts: r.try_get::<i64, _>("attempts")? as u32,
        last_status: r
            .try_get::<Option<i64>, _>("last_status")?
            .map(|v| v as u16),
        last_error: r.try_get("last_error")?,
        first_attempt_at_ms: opt_u64("first_attempt_at_ms")?,
        last_attempt_at_ms: opt_u64("last_attempt_at_ms")?,
        delivered_at_ms: opt_u64("delivered_at_ms")?,
    })
}

/// Writes a delivery (once: a second write of the same run is ignored).
pub(super) async fn insert_delivery<'e>(
    ex: impl sqlx::SqliteExecutor<'e>,
    d: &NewDelivery,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT OR IGNORE INTO push_deliveries (run_id, delivery_id, workflow_id, version, status, created_at_ms)
         VALUES (?, ?, ?, ?, 'pending', ?)",
    )
    .bind(d.run_id.to_string())
    .bind(d.delivery_id.to_string())
    .bind(&d.workflow_id)
    .bind(d.version as i64)
    .bind(now_ms() as i64)
    .execute(ex)
    .await?;
    Ok(())
}

impl Store {
    // ---- endpoint configuration -----------------------------------------

    /// The draft's endpoint and whether the workflow has a signing secret.
    /// `None` if there is no such workflow.
    pub async fn get_endpoint(&self, id: &str) -> Result<Option<(Endpoint, bool)>, StoreError> {
        let row = sqlx::query(
            "SELECT endpoint, push_token, push_signing_secret IS NOT NULL AS has_secret
             FROM workflows WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((endpoint_of(&r)?, r.try_get::<bool, _>("has_secret")?)))
            .transpose()
    }

    /// Replaces the draft's endpoint; with `new_secret` (sealed), also sets
    /// the workflow's signing secret if it has none yet. `None` if there is
    /// no such workflow, else whether `new_secret` was stored (of two
    /// concurrent first configurations, only one secret is kept and shown).
    pub async fn set_endpoint(
        &self,
        id: &str,
        e: &Endpoint,
        new_secret: Option<&str>,
    ) -> Result<Option<bool>, StoreError> {
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE workflows SET endpoint = ?, push_token = ?, updated_at_ms = ? WHERE id = ?",
        )
        .bind(to_json(&e.settings))
        .bind(&e.push_token)
        .bind(now_ms() as i64)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let mut stored = false;
        if let Some(secret) = new_secret {
            stored = sqlx::query(
                "UPDATE workflows SET push_signing_secret = ? WHERE id = ? AND push_signing_secret IS NULL",
            )
            .bind(secret)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
        }
        tx.commit().await?;
        Ok(Some(stored))
    }

    /// Replaces the workflow's signing secret (sealed), only if it has one.
    /// `false` if it has none (or there is no such workflow).
    pub async fn rotate_signing_secret(&self, id: &str, sealed: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE workflows SET push_signing_secret = ? WHERE id = ? AND push_signing_secret IS NOT NULL",
        )
        .bind(sealed)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A version's endpoint. `None` if there is no such version.
    pub async fn version_endpoint(
        &self,
        id: &str,
        version: u32,
    ) -> Result<Option<Endpoint>, StoreError> {
        let row = sqlx::query(
            "SELECT endpoint, push_token FROM workflow_versions WHERE workflow_id = ? AND version = ?",
        )
        .bind(id)
        .bind(version as i64)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| endpoint_of(&r)).transpose()
    }

    /// The workflow's signing secret (sealed).
    pub async fn signing_secret(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT push_signing_secret FROM workflows WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get("push_signing_secret")?,
            None => None,
        })
    }

    /// Every sealed endpoint value, for key rotation.
    pub async fn sealed_endpoint_values(&self) -> Result<Vec<(SealedAt, String)>, StoreError> {
        let mut out = Vec::new();
        for r in sqlx::query(
            "SELECT id, push_token, push_signing_secret FROM workflows
             WHERE push_token IS NOT NULL OR push_signing_secret IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?
        {
            let id: String = r.try_get("id")?;
            if let Some(t) = r.try_get::<Option<String>, _>("push_token")? {
                out.push((SealedAt::DraftToken(id.clone()), t));
            }
            if let Some(s) = r.try_get::<Option<String>, _>("push_signing_secret")? {
                out.push((SealedAt::SigningSecret(id), s));
            }
        }
        for r in sqlx::query(
            "SELECT workflow_id, version, push_token FROM workflow_versions WHERE push_token IS NOT NULL",
        )
        .fetch_all(&self.pool)
        .await?
        {
            out.push((
                SealedAt::VersionToken(
                    r.try_get("workflow_id")?,
                    r.try_get::<i64, _>("version")? as u32,
                ),
                r.try_get("push_token")?,
            ));
        }
        Ok(out)
    }

    /// Replaces one sealed endpoint value (key rotation).
    pub async fn reseal_endpoint_value(
        &self,
        at: &SealedAt,
        value: &str,
    ) -> Result<(), StoreError> {
        let q = match at {
            SealedAt::DraftToken(id) => {
                sqlx::query("UPDATE workflows SET push_token = ? WHERE id = ?")
                    .bind(value)
                    .bind(id)
            }
            SealedAt::SigningSecret(id) => {
                sqlx::query("UPDATE workflows SET push_signing_secret = ? WHERE id = ?")
                    .bind(value)
                    .bind(id)
            }
            SealedAt::VersionToken(id, v) => sqlx::query(
                "UPDATE workflow_versions SET push_token = ? WHERE workflow_id = ? AND version = ?",
            )
            .bind(value)
            .bind(id)
            .bind(*v as i64),
        };
        q.execute(&self.pool).await?;
        Ok(())
    }

    // ---- push deliveries -------------------------------------------------

    pub async fn get_delivery(&self, run_id: Uuid) -> Result<Option<Delivery>, StoreError> {
        if self.memory.has_no_delivery(run_id) {
            return Ok(None);
        }
        let row = sqlx::query("SELECT * FROM push_deliveries WHERE run_id = ?")
            .bind(run_id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| delivery_from_row(&r)).transpose()
    }

    /// Records an attempt: one more, its outcome, and the delivery's status.
    pub async fn record_attempt(&self, run_id: Uuid, a: &AttemptRecord) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE push_deliveries SET status = ?1, attempts = attempts + 1, last_status = ?2,
                 last_error = ?3, first_attempt_at_ms = COALESCE(first_attempt_at_ms, ?4),
                 last_attempt_at_ms = ?4,
                 delivered_at_ms = CASE WHEN ?1 = 'delivered' THEN ?4 ELSE delivered_at_ms END
             WHERE run_id = ?5",
        )
        .bind(a.status)
        .bind(a.http_status.map(|s| s as i64))
        .bind(&a.error)
        .bind(a.at_ms as i64)
        .bind(run_id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Ends a delivery as `failed` without an attempt (nothing to send it
    /// to any more, or its secrets cannot be opened).
    pub async fn fail_delivery(&self, run_id: Uuid, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE push_deliveries SET status = 'failed', last_error = ? WHERE run_id = ?",
        )
        .bind(error)
        .bind(run_id.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// RunMemory deliveries whose run has ended, oldest first: what to deliver
    /// (after a restart, or when a notification was dropped).
    pub async fn due_deliveries(&self, limit: usize) -> Result<Vec<Uuid>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.run_id FROM push_deliveries d JOIN runs r ON r.id = d.run_id
             WHERE d.status = 'pending'
               AND r.status IN ('succeeded', 'failed', 'timed_out', 'cancelled')
             ORDER BY d.run_id LIMIT ?",
        )
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(run_id_of).collect()
    }

    /// Runs with a pending delivery (recovered runs that must push on end).
    pub async fn pending_delivery_runs(
        &self,
    ) -> Result<std::collections::HashSet<Uuid>, StoreError> {
        let rows = sqlx::query("SELECT run_id FROM push_deliveries WHERE status = 'pending'")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(run_id_of).collect()
    }
}

/// The `run_id` column of a row.
fn run_id_of(r: &SqliteRow) -> Result<Uuid, StoreError> {
    Uuid::parse_str(&r.try_get::<String, _>("run_id")?)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}
