//! Users, credentials (user tokens and API keys), sharing and the audit log
//! in the store.

use super::{Store, StoreError};
use crate::access::Role;
use crate::model::{AuditEvent, Credential, CredentialKind, Share, User};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use uuid::Uuid;
use weft_shared::time::now_ms;

/// A credential to store: its public record and the hash of its secret.
pub struct NewCredential {
    pub record: Credential,
    pub secret_hash: String,
}

/// What [`Store::remove_share`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShareRemoval {
    Removed,
    NotShared,
    /// Refused: it is the workflow's last owner.
    LastOwner,
}

/// Filters for the audit log.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub category: Option<String>,
    pub event: Option<String>,
    pub user_id: Option<String>,
    pub workflow_id: Option<String>,
    /// Events before this sequence number (the previous page's cursor).
    pub before: Option<i64>,
    pub limit: u32,
}

pub(super) async fn write_share(
    conn: &mut SqliteConnection,
    workflow_id: &str,
    user_id: &str,
    role: Role,
    granted_by: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO workflow_shares (workflow_id, user_id, role, granted_at_ms, granted_by)
         VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (workflow_id, user_id) DO UPDATE SET role = excluded.role,
             granted_at_ms = excluded.granted_at_ms, granted_by = excluded.granted_by",
    )
    .bind(workflow_id)
    .bind(user_id)
    .bind(role.as_str())
    .bind(now_ms() as i64)
    .bind(granted_by)
    .execute(conn)
    .await?;
    Ok(())
}

fn user_from_row(r: &SqliteRow) -> Result<User, StoreError> {
    Ok(User {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        admin: r.try_get::<i64, _>("admin")? != 0,
        created_at_ms: r.try_get::<i64, _>("created_at_ms")? as u64,
    })
}

fn credential_from_row(r: &SqliteRow) -> Result<Credential, StoreError> {
    let kind: String = r.try_get("kind")?;
    let opt_ms = |c: &str| -> Result<Option<u64>, StoreError> {
        Ok(r.try_get::<Option<i64>, _>(c)?.map(|v| v as u64))
    };
    Ok(Credential {
        id: r.try_get("id")?,
        kind: CredentialKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("credential kind `{kind}`")))?,
        user_id: r.try_get("user_id")?,
        workflow_id: r.try_get("workflow_id")?,
        name: r.try_get("name")?,
        prefix: r.try_get("prefix")?,
        created_at_ms: r.try_get::<i64, _>("created_at_ms")? as u64,
        created_by: r.try_get("created_by")?,
        last_used_ms: opt_ms("last_used_ms")?,
        revoked_at_ms: opt_ms("revoked_at_ms")?,
    })
}

fn share_from_row(r: &SqliteRow) -> Result<Share, StoreError> {
    let role: String = r.try_get("role")?;
    Ok(Share {
        workflow_id: r.try_get("workflow_id")?,
        user_id: r.try_get("user_id")?,
        user_name: r.try_get("user_name")?,
        role: Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("role `{role}`")))?,
        granted_at_ms: r.try_get::<i64, _>("granted_at_ms")? as u64,
        granted_by: r.try_get("granted_by")?,
    })
}

fn audit_from_row(r: &SqliteRow) -> Result<AuditEvent, StoreError> {
    Ok(AuditEvent {
        seq: r.try_get("seq")?,
        at_ms: r.try_get::<i64, _>("at_ms")? as u64,
        category: r.try_get("category")?,
        event: r.try_get("event")?,
        user_id: r.try_get("user_id")?,
        user_name: r.try_get("user_name")?,
        workflow_id: r.try_get("workflow_id")?,
        description: r.try_get("description")?,
    })
}

impl Store {
    // ---- users -----------------------------------------------------------

    /// Creates a user; `None` if the name is taken.
    pub async fn create_user(
        &self,
        name: &str,
        admin: bool,
        created_by: Option<&str>,
    ) -> Result<Option<User>, StoreError> {
        let user = User {
            id: Uuid::now_v7().to_string(),
            name: name.to_string(),
            admin,
            created_at_ms: now_ms(),
        };
        let done = sqlx::query(
            "INSERT INTO users (id, name, admin, created_at_ms, created_by) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&user.id)
        .bind(&user.name)
        .bind(admin as i64)
        .bind(user.created_at_ms as i64)
        .bind(created_by)
        .execute(&self.pool)
        .await?;
        Ok((done.rows_affected() == 1).then_some(user))
    }

    pub async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query("SELECT * FROM users WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(user_from_row).transpose()
    }

    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(user_from_row).collect()
    }

    /// The first admin, from configuration: the user `name` (created if
    /// missing, made admin if not) holds exactly one configured token, the
    /// one hashing to `secret_hash`; a token configured before is revoked.
    pub async fn ensure_admin(&self, name: &str, secret_hash: &str) -> Result<User, StoreError> {
        let mut tx = self.write_tx().await?;
        let now = now_ms() as i64;
        sqlx::query(
            "INSERT INTO users (id, name, admin, created_at_ms) VALUES (?, ?, 1, ?)
             ON CONFLICT (name) DO UPDATE SET admin = 1",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query("SELECT * FROM users WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        let user = user_from_row(&row)?;
        sqlx::query(
            "UPDATE credentials SET revoked_at_ms = ? WHERE user_id = ? AND name = 'configured'
             AND secret_hash <> ? AND revoked_at_ms IS NULL",
        )
        .bind(now)
        .bind(&user.id)
        .bind(secret_hash)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO credentials (id, kind, user_id, name, prefix, secret_hash, created_at_ms)
             VALUES (?, 'user_token', ?, 'configured', '(from configuration)', ?, ?)
             ON CONFLICT (secret_hash) DO UPDATE SET revoked_at_ms = NULL, user_id = excluded.user_id",
        )
        .bind(Uuid::now_v7().to_string())
        .bind(&user.id)
        .bind(secret_hash)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    // ---- credentials -----------------------------------------------------

    pub async fn create_credential(&self, c: &NewCredential) -> Result<(), StoreError> {
        let r = &c.record;
        sqlx::query(
            "INSERT INTO credentials (id, kind, user_id, workflow_id, name, prefix, secret_hash, created_at_ms, created_by)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(r.kind.as_str())
        .bind(&r.user_id)
        .bind(&r.workflow_id)
        .bind(&r.name)
        .bind(&r.prefix)
        .bind(&c.secret_hash)
        .bind(r.created_at_ms as i64)
        .bind(&r.created_by)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The credential whose secret hashes to `secret_hash` (revoked ones
    /// included), with its user for a user token.
    pub async fn find_credential(
        &self,
        secret_hash: &str,
    ) -> Result<Option<(Credential, Option<User>)>, StoreError> {
        let row = sqlx::query("SELECT * FROM credentials WHERE secret_hash = ?")
            .bind(secret_hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let cred = credential_from_row(&row)?;
        let user = match &cred.user_id {
            Some(id) => self.get_user(id).await?,
            None => None,
        };
        Ok(Some((cred, user)))
    }

    /// A workflow's API keys (`Some(workflow)`), or a user's tokens.
    pub async fn list_credentials(
        &self,
        workflow_id: Option<&str>,
        user_id: Option<&str>,
    ) -> Result<Vec<Credential>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM credentials WHERE (?1 IS NOT NULL AND workflow_id = ?1)
             OR (?2 IS NOT NULL AND user_id = ?2) ORDER BY id",
        )
        .bind(workflow_id)
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(credential_from_row).collect()
    }

    /// Revokes a credential of this workflow or user; returns it as it now
    /// stands (already revoked ones unchanged), `None` if there is none.
    pub async fn revoke_credential(
        &self,
        id: &str,
        workflow_id: Option<&str>,
        user_id: Option<&str>,
    ) -> Result<Option<Credential>, StoreError> {
        let scope = "id = ?1 AND ((?2 IS NOT NULL AND workflow_id = ?2) OR (?3 IS NOT NULL AND user_id = ?3))";
        sqlx::query(&format!(
            "UPDATE credentials SET revoked_at_ms = ?4 WHERE {scope} AND revoked_at_ms IS NULL"
        ))
        .bind(id)
        .bind(workflow_id)
        .bind(user_id)
        .bind(now_ms() as i64)
        .execute(&self.pool)
        .await?;
        let row = sqlx::query(&format!("SELECT * FROM credentials WHERE {scope}"))
            .bind(id)
            .bind(workflow_id)
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(credential_from_row).transpose()
    }

    /// Records when a credential was last used.
    pub async fn touch_credential(&self, id: &str, at_ms: u64) -> Result<(), StoreError> {
        sqlx::query("UPDATE credentials SET last_used_ms = ? WHERE id = ?")
            .bind(at_ms as i64)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    // ---- sharing ---------------------------------------------------------

    /// The role a workflow is shared with a user as, if any.
    pub async fn role_of(
        &self,
        user_id: &str,
        workflow_id: &str,
    ) -> Result<Option<Role>, StoreError> {
        let role: Option<String> = sqlx::query_scalar(
            "SELECT role FROM workflow_shares WHERE user_id = ? AND workflow_id = ?",
        )
        .bind(user_id)
        .bind(workflow_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(role.as_deref().and_then(Role::parse))
    }

    pub async fn list_shares(&self, workflow_id: &str) -> Result<Vec<Share>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.*, u.name AS user_name FROM workflow_shares s JOIN users u ON u.id = s.user_id
             WHERE s.workflow_id = ? ORDER BY u.name",
        )
        .bind(workflow_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(share_from_row).collect()
    }

    /// Shares a workflow with a user as `role` (replacing the role it had).
    /// Refuses (false) to demote the workflow's last owner.
    pub async fn set_share(
        &self,
        workflow_id: &str,
        user_id: &str,
        role: Role,
        granted_by: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        if role != Role::Owner && last_owner(&mut tx, workflow_id, user_id).await? {
            return Ok(false);
        }
        write_share(&mut tx, workflow_id, user_id, role, Some(granted_by)).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn remove_share(
        &self,
        workflow_id: &str,
        user_id: &str,
    ) -> Result<ShareRemoval, StoreError> {
        let mut tx = self.write_tx().await?;
        if last_owner(&mut tx, workflow_id, user_id).await? {
            return Ok(ShareRemoval::LastOwner);
        }
        let done = sqlx::query("DELETE FROM workflow_shares WHERE workflow_id = ? AND user_id = ?")
            .bind(workflow_id)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(if done.rows_affected() == 1 {
            ShareRemoval::Removed
        } else {
            ShareRemoval::NotShared
        })
    }

    // ---- audit -----------------------------------------------------------

    /// Appends an event (the table refuses updates and deletes).
    pub async fn append_audit(&self, e: &AuditEvent) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_log (at_ms, category, event, user_id, user_name, workflow_id, description)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.at_ms as i64)
        .bind(&e.category)
        .bind(&e.event)
        .bind(&e.user_id)
        .bind(&e.user_name)
        .bind(&e.workflow_id)
        .bind(&e.description)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Events newest first.
    pub async fn list_audit(&self, f: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM audit_log WHERE (?1 IS NULL OR at_ms >= ?1) AND (?2 IS NULL OR at_ms < ?2)
             AND (?3 IS NULL OR category = ?3) AND (?4 IS NULL OR event = ?4)
             AND (?5 IS NULL OR user_id = ?5) AND (?6 IS NULL OR workflow_id = ?6)
             AND (?7 IS NULL OR seq < ?7) ORDER BY seq DESC LIMIT ?8",
        )
        .bind(f.from_ms.map(|v| v as i64))
        .bind(f.to_ms.map(|v| v as i64))
        .bind(f.category.as_deref())
        .bind(f.event.as_deref())
        .bind(f.user_id.as_deref())
        .bind(f.workflow_id.as_deref())
        .bind(f.before)
        .bind(f.limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from_row).collect()
    }
}

/// Whether `user_id` is the only owner of the workflow.
async fn last_owner(
    conn: &mut SqliteConnection,
    workflow_id: &str,
    user_id: &str,
) -> Result<bool, StoreError> {
    let owners: Vec<String> = sqlx::query_scalar(
        "SELECT user_id FROM workflow_shares WHERE workflow_id = ? AND role = 'owner'",
    )
    .bind(workflow_id)
    .fetch_all(conn)
    .await?;
    Ok(owners.len() == 1 && owners[0] == user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_audit_log_refuses_updates_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        let e = crate::access::event(None, "system", "test.event", None, "one".into());
        store.append_audit(&e).await.unwrap();
        for sql in [
            "UPDATE audit_log SET description = 'rewritten'",
            "DELETE FROM audit_log",
        ] {
            let err = sqlx::query(sql).execute(&store.pool).await.unwrap_err();
            assert!(err.to_string().contains("append-only"), "{sql}: {err}");
        }
        let f = AuditFilter {
            limit: 10,
            ..Default::default()
        };
        let got = store.list_audit(&f).await.unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].description, "one");
    }

    #[tokio::test]
    async fn the_configured_admin_token_replaces_the_one_before() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::open(&url).await.unwrap();
        let a = store.ensure_admin("root", "hash-one").await.unwrap();
        assert!(a.admin);
        let b = store.ensure_admin("root", "hash-two").await.unwrap();
        assert_eq!(a.id, b.id);
        let (old, _) = store.find_credential("hash-one").await.unwrap().unwrap();
        assert!(
            old.revoked_at_ms.is_some(),
            "the old configured token is revoked"
        );
        let (new, user) = store.find_credential("hash-two").await.unwrap().unwrap();
        assert!(new.revoked_at_ms.is_none());
        assert_eq!(user.unwrap().name, "root");
        // Configuring the first token again brings it back.
        store.ensure_admin("root", "hash-one").await.unwrap();
        let (again, _) = store.find_credential("hash-one").await.unwrap().unwrap();
        assert!(again.revoked_at_ms.is_none());
    }
}
