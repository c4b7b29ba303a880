//! Who is calling and what they may do.
//!
//! Every `/v1` request carries a secret, as `Authorization: Bearer <secret>`
//! or `x-api-key: <secret>`. A secret is either a **user token** (acts as
//! that user) or a workflow's **API key** (may only start runs of that
//! workflow and read those runs). Only a SHA-256 of each secret is stored;
//! resolved secrets are cached here so the run hot path does not touch the
//! database, and a revocation updates the cache at once.
//!
//! Users see the workflows shared with them, as `owner`, `editor` or
//! `viewer` ([`Role`]); admins see everything. The first admin comes from
//! configuration (`admin_token`).

use crate::model::{AuditEvent, Credential, CredentialKind, User};
use crate::store::{Store, StoreError};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;
use weft_shared::time::now_ms;

/// What a user may do with a workflow shared with them; each role includes
/// the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read it, its versions and runs; run it; resume its paused runs.
    Viewer,
    /// Also: change the draft and variables, deploy, undeploy, switch it on
    /// and off, export, import over it, manage its API keys, cancel runs,
    /// delete it when it is not deployed.
    Editor,
    /// Also: share it.
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "editor" => Some(Role::Editor),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

/// A new secret: `weft_<u|k>_` and 256 random bits, base64url. Returned to
/// its creator once; only [`hash_secret`] of it is stored.
pub fn new_secret(kind: CredentialKind) -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let tag = match kind {
        CredentialKind::UserToken => "u",
        CredentialKind::ApiKey => "k",
    };
    format!(
        "weft_{tag}_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The first characters of a secret, shown in lists to tell them apart.
pub fn secret_prefix(secret: &str) -> String {
    secret.chars().take(14).collect()
}

/// SHA-256, hex. Secrets carry 256 random bits, so a slow password hash
/// would add nothing but latency to every request.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A resolved secret: the credential and, for a user token, its user.
pub struct Principal {
    pub credential: Credential,
    pub user: Option<User>,
    /// When `last_used_ms` was last written (throttles the writes).
    last_touch_ms: AtomicU64,
    /// When a `token_used` audit event was last written.
    last_audit_ms: AtomicU64,
    bucket: Mutex<Bucket>,
}

impl Principal {
    pub fn is_api_key(&self) -> bool {
        self.credential.kind == CredentialKind::ApiKey
    }

    pub fn is_admin(&self) -> bool {
        self.user.as_ref().is_some_and(|u| u.admin)
    }
}

/// A token bucket: `rate` tokens a second, up to `burst`.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Why a secret was not accepted.
pub enum Rejection {
    Unknown,
    Revoked,
    /// An API key over its rate limit: retry after this many seconds.
    RateLimited(u64),
}

/// Resolves secrets, caches them, and meters API keys.
pub struct Auth {
    cache: RwLock<HashMap<String, Arc<Principal>>>,
    /// Bumped (under the cache's write lock) by every forget: a credential
    /// read from the store before a revocation is not cached after it.
    epoch: AtomicU64,
    /// API key requests a second (0: no limit) and burst.
    rate_per_s: f64,
    burst: f64,
}

/// Cached principals beyond this are dropped wholesale (a bound on memory
/// against a flood of distinct valid tokens; they reload from the store).
const CACHE_CAP: usize = 100_000;
/// `last_used_ms` is written at most this often per credential.
const TOUCH_EVERY_MS: u64 = 1_000;
/// A `token_used` audit event is written at most this often per credential.
const AUDIT_USE_EVERY_MS: u64 = 60_000;

impl Auth {
    pub fn new(rate_per_s: u32, burst: u32) -> Auth {
        Auth {
            cache: RwLock::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            rate_per_s: rate_per_s as f64,
            burst: burst.max(1) as f64,
        }
    }

    /// The principal a secret stands for, or why it is refused.
    pub async fn resolve(
        &self,
        store: &Store,
        secret: &str,
    ) -> Result<Result<Arc<Principal>, Rejection>, StoreError> {
        let hash = hash_secret(secret);
        let cached = self.cache.read().ok().and_then(|m| m.get(&hash).cloned());
        let p = match cached {
            Some(p) => p,
            None => {
                let epoch = self.epoch.load(Ordering::SeqCst);
                let Some((credential, user)) = store.find_credential(&hash).await? else {
                    return Ok(Err(Rejection::Unknown));
                };
                let p = Arc::new(Principal {
                    last_touch_ms: AtomicU64::new(credential.last_used_ms.unwrap_or(0)),
                    last_audit_ms: AtomicU64::new(0),
                    credential,
                    user,
                    bucket: Mutex::new(Bucket {
                        tokens: self.burst,
                        at: Instant::now(),
                    }),
                });
                match self.cache.write() {
                    // Checked under the lock `forget` bumps it under.
                    Ok(mut m) if self.epoch.load(Ordering::SeqCst) == epoch => {
                        if m.len() >= CACHE_CAP {
                            m.clear();
                        }
                        m.entry(hash).or_insert(p).clone()
                    }
                    _ => p,
                }
            }
        };
        if p.credential.revoked_at_ms.is_some() {
            return Ok(Err(Rejection::Revoked));
        }
        if p.is_api_key() && self.rate_per_s > 0.0 {
            if let Some(wait_s) = self.take(&p) {
                return Ok(Err(Rejection::RateLimited(wait_s)));
            }
        }
        Ok(Ok(p))
    }

    /// Takes a token from the key's bucket; `Some(seconds to wait)` if empty.
    fn take(&self, p: &Principal) -> Option<u64> {
        let Ok(mut b) = p.bucket.lock() else {
            return None;
        };
        let now = Instant::now();
        let refill = now.duration_since(b.at).as_secs_f64() * self.rate_per_s;
        b.tokens = (b.tokens + refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            None
        } else {
            Some(((1.0 - b.tokens) / self.rate_per_s).ceil().max(1.0) as u64)
        }
    }

    /// Forgets a credential (after a revocation): the next request with it
    /// reloads it from the store.
    pub fn forget(&self, credential_id: &str) {
        if let Ok(mut m) = self.cache.write() {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            m.retain(|_, p| p.credential.id != credential_id);
        }
    }

    /// Forgets every credential of a workflow (it was deleted).
    pub fn forget_workflow(&self, workflow_id: &str) {
        if let Ok(mut m) = self.cache.write() {
            self.epoch.fetch_add(1, Ordering::SeqCst);
            m.retain(|_, p| p.credential.workflow_id.as_deref() != Some(workflow_id));
        }
    }

    /// Records a use: `last_used_ms` (at most once a second) and a
    /// `token_used` audit event (at most once a minute per credential).
    pub fn record_use(&self, store: &Store, p: &Arc<Principal>) {
        let now = now_ms();
        let touch = throttle(&p.last_touch_ms, now, TOUCH_EVERY_MS);
        let audit = throttle(&p.last_audit_ms, now, AUDIT_USE_EVERY_MS);
        if !touch && !audit {
            return;
        }
        let store = store.clone();
        let p = p.clone();
        tokio::spawn(async move {
            if touch {
                if let Err(e) = store.touch_credential(&p.credential.id, now).await {
                    tracing::warn!(error = %e, "could not record a credential's last use");
                }
            }
            if audit {
                let c = &p.credential;
                let what = match c.kind {
                    CredentialKind::UserToken => format!("token `{}` ({}) used", c.name, c.prefix),
                    CredentialKind::ApiKey => format!("API key `{}` ({}) used", c.name, c.prefix),
                };
                let e = event(
                    Some(&p),
                    "auth",
                    "auth.token_used",
                    c.workflow_id.as_deref(),
                    what,
                );
                append(&store, e).await;
            }
        });
    }
}

/// True (and the stamp moved to `now`) if `every` ms have passed since it.
fn throttle(stamp: &AtomicU64, now: u64, every: u64) -> bool {
    let last = stamp.load(Ordering::Relaxed);
    now.saturating_sub(last) >= every
        && stamp
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// An audit event by `who` (none: the system).
pub fn event(
    who: Option<&Principal>,
    category: &str,
    event: &str,
    workflow_id: Option<&str>,
    description: String,
) -> AuditEvent {
    let (user_id, user_name) = match who {
        Some(p) => match &p.user {
            Some(u) => (Some(u.id.clone()), Some(u.name.clone())),
            None => (None, Some(format!("api key {}", p.credential.prefix))),
        },
        None => (None, None),
    };
    AuditEvent {
        seq: 0,
        at_ms: now_ms(),
        category: category.into(),
        event: event.into(),
        user_id,
        user_name,
        workflow_id: workflow_id.map(str::to_string),
        description,
    }
}

/// Appends to the audit log; a failure is logged and counted, never hidden.
pub async fn append(store: &Store, e: AuditEvent) {
    if let Err(err) = store.append_audit(&e).await {
        metrics::counter!(crate::metrics::AUDIT_WRITE_ERRORS).increment(1);
        tracing::error!(error = %err, event = %e.event, "could not append to the audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_prefixed_and_hash_stably() {
        let a = new_secret(CredentialKind::ApiKey);
        let b = new_secret(CredentialKind::ApiKey);
        assert_ne!(a, b);
        assert!(a.starts_with("weft_k_") && a.len() == 7 + 43, "{a}");
        assert!(new_secret(CredentialKind::UserToken).starts_with("weft_u_"));
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
        assert_eq!(secret_prefix(&a).len(), 14);
    }

    #[test]
    fn roles_are_ordered() {
        assert!(Role::Owner > Role::Editor && Role::Editor > Role::Viewer);
        for r in [Role::Viewer, Role::Editor, Role::Owner] {
            assert_eq!(Role::parse(r.as_str()), Some(r));
        }
        assert_eq!(Role::parse("admin"), None);
    }

    #[test]
    fn throttle_lets_one_through_per_period() {
        let stamp = AtomicU64::new(0);
        assert!(throttle(&stamp, 10_000, 1_000));
        assert!(!throttle(&stamp, 10_500, 1_000));
        assert!(throttle(&stamp, 11_000, 1_000));
    }
}
