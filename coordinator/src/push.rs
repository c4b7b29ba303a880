//! Async push: when an asynchronous run of a version whose endpoint has push
//! configured ends, its record is POSTed to the callback URL, signed and
//! retried.
//!
//! - **Durable.** The delivery is written with the run's first record (see
//!   [`crate::store::Store::save_run_with_delivery`]), so a run never ends
//!   without one; each attempt is recorded. Pending deliveries of ended runs
//!   are picked up at start and every [`SWEEP`] (a notification dropped, a
//!   restart): nothing is lost on a crash. Delivery is at least once — a
//!   receiver deduplicates on `Weft-Delivery-Id`.
//! - **Off the hot path.** The dispatcher only notifies ([`PushHandle`],
//!   never blocking) once the run's final record is durable; one task owns
//!   the deliveries in hand (at most [`MAX_ACTIVE`], the rest wait in the
//!   store) and each delivery is its own task; `push_concurrency` bounds the
//!   requests in flight.
//! - **Retries.** A connection error, a timeout (`push_attempt_timeout_ms`)
//!   or a non-2xx answer is retried with exponential backoff and jitter
//!   (backon; `push_backoff_min_ms`..`push_backoff_max_ms`), honouring
//!   `Retry-After` (seconds) on 429 and 503, for `push_retry_for_ms` from the
//!   first attempt; then the delivery is `failed`. After a restart a pending
//!   delivery gets at least one more attempt.
//! - **Signed.** `Authorization: Bearer <access token>`, and
//!   `Weft-Signature: t=<unix s>,v1=<hex HMAC-SHA256(signing secret,
//!   "<t>.<body>")>`. Neither the token nor the secret is ever logged, stored
//!   in an error or put in a metric.

use crate::metrics as m;
use crate::secrets::Crypto;
use crate::store::{AttemptRecord, Delivery, Store, StoreError};
use backon::BackoffBuilder;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use weft_shared::secret::SecretString;
use weft_shared::time::now_ms;

/// How often pending deliveries of ended runs are looked for.
pub const SWEEP: Duration = Duration::from_secs(5);
/// Most deliveries held in memory (being sent or waiting to retry).
pub const MAX_ACTIVE: usize = 4096;
/// Room for run-ended notifications; when full, the sweep finds the rest.
const NOTIFY_QUEUE: usize = 4096;
/// Longest `last_error` kept.
const MAX_ERROR_LEN: usize = 300;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "weft-signature";

#[derive(Clone, Debug)]
pub struct PushConfig {
    /// Post to internal addresses too (`push_allow_private_targets`).
    pub allow_private: bool,
    pub retry_for: Duration,
    pub attempt_timeout: Duration,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    pub concurrency: usize,
}

impl PushConfig {
    pub fn from_config(c: &crate::CoordinatorConfig) -> PushConfig {
        PushConfig {
            allow_private: c.push_allow_private_targets,
            retry_for: Duration::from_millis(c.push_retry_for_ms),
            attempt_timeout: Duration::from_millis(c.push_attempt_timeout_ms),
            min_backoff: Duration::from_millis(c.push_backoff_min_ms),
            max_backoff: Duration::from_millis(c.push_backoff_max_ms),
            concurrency: c.push_concurrency,
        }
    }
}

/// Tells the deliverer that runs ended.
#[derive(Clone)]
pub struct PushHandle {
    tx: mpsc::Sender<Uuid>,
}

impl PushHandle {
    /// A run with a pending delivery ended, and its final record is durable.
    /// Never blocks: if the queue is full, the next sweep finds it.
    pub fn run_ended(&self, run_id: Uuid) {
        let _ = self.tx.try_send(run_id);
    }
}

struct Ctx {
    cfg: PushConfig,
    store: Store,
    crypto: Crypto,
    http: reqwest::Client,
    permits: Semaphore,
    stop: CancellationToken,
}

/// Resolves push hosts to their public addresses only. The URL was checked
/// when configured, but a DNS name can point inside the network, or be
/// rebound there later: the connection is refused then, not just the URL.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let found: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<std::net::SocketAddr> = found
                .into_iter()
                .filter(|a| !crate::endpoint::is_internal(a.ip()))
                .collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves to no public address (push_allow_private_targets is off)"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Starts the deliverer; it stops with `stop`.
pub fn spawn(
    cfg: PushConfig,
    store: Store,
    crypto: Crypto,
    stop: CancellationToken,
) -> Result<PushHandle, String> {
    let mut http = reqwest::Client::builder()
        .user_agent(concat!("weft-coordinator/", env!("CARGO_PKG_VERSION")))
        // A redirect is an answer that is not 2xx: the token is not
        // carried anywhere else.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(cfg.attempt_timeout);
    if !cfg.allow_private {
        http = http.dns_resolver(Arc::new(PublicOnly));
    }
    let http = http.build().map_err(|e| format!("push HTTP client: {e}"))?;
    let (tx, rx) = mpsc::channel(NOTIFY_QUEUE);
    let ctx = Arc::new(Ctx {
        permits: Semaphore::new(cfg.concurrency.max(1)),
        cfg,
        store,
        crypto,
        http,
        stop,
    });
    tokio::spawn(run(ctx, rx));
    Ok(PushHandle { tx })
}

async fn run(ctx: Arc<Ctx>, mut rx: mpsc::Receiver<Uuid>) {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Uuid>();
    let mut active: HashSet<Uuid> = HashSet::new();
    // The first tick is at once: deliveries left pending by the last process.
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ctx.stop.cancelled() => break,
            Some(id) = done_rx.recv() => {
                active.remove(&id);
            }
            Some(id) = rx.recv() => start(&ctx, &mut active, &done_tx, id),
            _ = sweep.tick() => {
                // Awaited here, so no delivery ends unnoticed meanwhile: one
                // that finished has its final state in the store before it
                // leaves `active`.
                if active.len() < MAX_ACTIVE {
                    match ctx.store.due_deliveries(MAX_ACTIVE).await {
                        Ok(ids) => {
                            for id in ids {
                                start(&ctx, &mut active, &done_tx, id);
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "could not look for pending push deliveries"),
                    }
                }
            }
        }
        metrics::gauge!(m::PUSH_ACTIVE).set(active.len() as f64);
    }
}

fn start(
    ctx: &Arc<Ctx>,
    active: &mut HashSet<Uuid>,
    done: &mpsc::UnboundedSender<Uuid>,
    run_id: Uuid,
) {
    if active.len() >= MAX_ACTIVE || !active.insert(run_id) {
        return;
    }
    let ctx = ctx.clone();
    let done = done.clone();
    tokio::spawn(async move {
        deliver(&ctx, run_id).await;
        let _ = done.send(run_id);
    });
}

/// What one attempt came to.
enum Outcome {
    Delivered(u16),
    /// Worth another attempt.
    Retry {
        status: Option<u16>,
        error: String,
        retry_after: Option<Duration>,
    },
    /// Nothing can be sent (the version is gone, a secret cannot be opened).
    Permanent(String),
    /// The run has not ended (yet): nothing to send now.
    NotEnded,
}

/// Delivers one run's result, retrying within the window.
async fn deliver(ctx: &Ctx, run_id: Uuid) {
    let d = match ctx.store.get_delivery(run_id).await {
        Ok(Some(d)) if d.status == "pending" => d,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(run_id = %run_id, error = %e, "could not read a push delivery");
            return;
        }
    };
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(ctx.cfg.min_backoff)
        .with_max_delay(ctx.cfg.max_backoff.max(ctx.cfg.min_backoff))
        .with_jitter()
        .with_jitter_seed(rand::random())
        .without_max_times()
        .build();
    // Resume the backoff where an earlier process left it.
    for _ in 1..d.attempts {
        delays.next();
    }
    let retry_for = ctx.cfg.retry_for.as_millis() as u64;
    let mut attempts = d.attempts;
    let mut first_at = d.first_attempt_at_ms;
    loop {
        let outcome = tokio::select! {
            o = attempt(ctx, &d, attempts + 1) => o,
            // Left pending: the next process tries again.
            _ = ctx.stop.cancelled() => return,
        };
        let now = now_ms();
        let window_end = first_at.get_or_insert(now).saturating_add(retry_for);
        let (http_status, error, retry_after) = match outcome {
            Outcome::NotEnded => return,
            Outcome::Permanent(error) => {
                tracing::warn!(run_id = %run_id, workflow_id = %d.workflow_id, error, "push delivery cannot be made; marked failed");
                if let Err(e) = ctx.store.fail_delivery(run_id, &error).await {
                    tracing::warn!(run_id = %run_id, error = %e, "could not record a push delivery");
                }
                metrics::counter!(m::PUSH_DELIVERIES, "outcome" => "failed").increment(1);
                return;
            }
            Outcome::Delivered(code) => (Some(code), None, None),
            Outcome::Retry {
                status,
                error,
                retry_after,
            } => (status, Some(error), retry_after),
        };
        attempts += 1;
        let status = match (&error, now >= window_end) {
            (None, _) => "delivered",
            (Some(_), true) => "failed",
            (Some(_), false) => "pending",
        };
        let rec = AttemptRecord {
            status,
            http_status,
            error,
            at_ms: now,
        };
        if let Err(e) = ctx.store.record_attempt(run_id, &rec).await {
            // Left as it was: the sweep takes it up again.
            tracing::warn!(run_id = %run_id, error = %e, "could not record a push attempt");
            return;
        }
        if status != "pending" {
            metrics::counter!(m::PUSH_DELIVERIES, "outcome" => status).increment(1);
            tracing::info!(run_id = %run_id, workflow_id = %d.workflow_id, attempts, outcome = status, "push delivery ended");
            return;
        }
        tracing::debug!(run_id = %run_id, attempt = attempts, error = rec.error.as_deref().unwrap_or(""), "push attempt failed; retrying");
        let delay = match retry_after {
            Some(ra) => ra.max(ctx.cfg.min_backoff),
            None => delays.next().unwrap_or(ctx.cfg.max_backoff),
        }
        // The last attempt at the end of the window, not past it.
        .min(Duration::from_millis(window_end.saturating_sub(now)));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ctx.stop.cancelled() => return,
        }
    }
}

/// What an attempt sends.
struct Prepared {
    url: String,
    token: SecretString,
    secret: SecretString,
    body: Vec<u8>,
}

async fn prepare(ctx: &Ctx, d: &Delivery) -> Result<Prepared, Outcome> {
    let store_err = |e: StoreError| {
        tracing::warn!(run_id = %d.run_id, error = %e, "push delivery: store read failed");
        Outcome::Retry {
            status: None,
            error: "the coordinator could not read the run from its store".into(),
            retry_after: None,
        }
    };
    let run = ctx
        .store
        .get_run(d.run_id)
        .await
        .map_err(store_err)?
        .ok_or_else(|| Outcome::Permanent("the run no longer exists".into()))?;
    if !run.status.is_terminal() {
        return Err(Outcome::NotEnded);
    }
    let endpoint = ctx
        .store
        .version_endpoint(&d.workflow_id, d.version)
        .await
        .map_err(store_err)?
        .ok_or_else(|| {
            Outcome::Permanent("the run's workflow version no longer exists (deleted)".into())
        })?;
    let (Some(url), Some(sealed)) = (endpoint.settings.push_url, endpoint.push_token) else {
        return Err(Outcome::Permanent(
            "the run's version has no push target".into(),
        ));
    };
    let token = ctx
        .crypto
        .decrypt(&sealed)
        .map_err(|e| Outcome::Permanent(format!("the access token cannot be opened: {e}")))?;
    let secret = ctx
        .store
        .signing_secret(&d.workflow_id)
        .await
        .map_err(store_err)?
        .ok_or_else(|| Outcome::Permanent("the workflow has no signing secret".into()))?;
    let secret = ctx
        .crypto
        .decrypt(&secret)
        .map_err(|e| Outcome::Permanent(format!("the signing secret cannot be opened: {e}")))?;
    let body = serde_json::to_vec(&run)
        .map_err(|e| Outcome::Permanent(format!("the run cannot be encoded: {e}")))?;
    Ok(Prepared {
        url,
        token: SecretString::new(token),
        secret: SecretString::new(secret),
        body,
    })
}

/// `t=<unix s>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

async fn attempt(ctx: &Ctx, d: &Delivery, n: u32) -> Outcome {
    let p = match prepare(ctx, d).await {
        Ok(p) => p,
        Err(o) => return o,
    };
    let Ok(mut auth) =
        reqwest::header::HeaderValue::from_str(&format!("Bearer {}", p.token.expose()))
    else {
        return Outcome::Permanent("the access token is not a valid header value".into());
    };
    auth.set_sensitive(true);
    let t = now_ms() / 1000;
    let sig = signature(p.secret.expose(), t, &p.body);
    let req = ctx
        .http
        .post(&p.url)
        .timeout(ctx.cfg.attempt_timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::AUTHORIZATION, auth)
        .header(SIGNATURE_HEADER, sig)
        .header("weft-delivery-id", d.id.to_string())
        .header("weft-run-id", d.run_id.to_string())
        .header("weft-attempt", n.to_string())
        .body(p.body);
    let Ok(_permit) = ctx.permits.acquire().await else {
        return Outcome::NotEnded;
    };
    let started = Instant::now();
    let res = req.send().await;
    metrics::histogram!(m::PUSH_DURATION).record(started.elapsed().as_secs_f64());
    let (result, outcome) = match res {
        Ok(r) if r.status().is_success() => ("success", Outcome::Delivered(r.status().as_u16())),
        Ok(r) => {
            let code = r.status().as_u16();
            let retry_after = matches!(code, 429 | 503)
                .then(|| r.headers().get(reqwest::header::RETRY_AFTER))
                .flatten()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            (
                "http_error",
                Outcome::Retry {
                    status: Some(code),
                    error: format!("the receiver answered {}", r.status()),
                    retry_after,
                },
            )
        }
        Err(e) if e.is_timeout() => (
            "timeout",
            Outcome::Retry {
                status: None,
                error: format!(
                    "no answer within {} ms (push_attempt_timeout_ms)",
                    ctx.cfg.attempt_timeout.as_millis()
                ),
                retry_after: None,
            },
        ),
        Err(e) => (
            "network_error",
            Outcome::Retry {
                status: None,
                // Without the URL: it may carry credentials of its own.
                error: describe(&e.without_url()),
                retry_after: None,
            },
        ),
    };
    metrics::counter!(m::PUSH_ATTEMPTS, "result" => result).increment(1);
    outcome
}

/// An error and its causes on one line, bounded.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        source = c.source();
    }
    if s.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_that_resolve_inside_the_network_are_refused() {
        use reqwest::dns::Resolve;
        use std::str::FromStr;
        let name = reqwest::dns::Name::from_str("localhost").unwrap();
        let err = PublicOnly
            .resolve(name)
            .await
            .err()
            .expect("localhost is refused");
        assert!(err.to_string().contains("no public address"), "{err}");
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_t_dot_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let sig = signature("Jefe", 0, b"what do ya want for nothing?");
        // The data signed is "0." + body, so compute the expected value the same way.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"0.what do ya want for nothing?");
        let want = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sig, format!("t=0,v1={want}"));
        // And the primitive itself against the RFC's vector.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn errors_are_one_bounded_line() {
        let e = std::io::Error::other("x".repeat(1000));
        let s = describe(&e);
        assert!(s.chars().count() <= MAX_ERROR_LEN + 1);
    }
}
