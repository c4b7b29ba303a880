//! The in-flight capacity probe: how many AI runs one worker holds at once
//! while the model is slow, and the worker's memory per in-flight run.
//!
//! The caller starts the mock model with a long latency (e.g.
//! `weft-mock-model --latency fixed:30s`), so every run sits in its AI node.
//! The probe reads the worker's VmRSS, submits N async `ai` runs, follows
//! `GET /v1/workers` (`assigned`: runs placed and not seen finish) and the
//! RSS until every accepted run is placed (or placement stalls for
//! [`STALL`]), and reports the most runs the worker held and
//! (peak RSS − RSS before) ÷ runs held. The runs are cancelled afterwards.
//!
//! What the figure includes: everything the worker keeps per run — the run
//! and node actors, the run's context, and the HTTP connection to the model
//! each waiting call holds open. A worker holds at most its `capacity`
//! (`WEFT_CAPACITY`, 1000 by default) runs, and each run holds a socket, so
//! raise the worker's open-file limit for large N.

use crate::api::Weft;
use crate::error::LoadError;
use crate::report::{command_line, CapacityReport};
use crate::scenario::{AiSettings, Scenario};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Placement that has not moved for this long is over.
const STALL: Duration = Duration::from_secs(5);
/// How often the worker list and the RSS are read.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// Sampling goes on this long after the last run is placed, for the RSS to
/// show the allocations of the last ones.
const SETTLE_AFTER: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct CapacityParams {
    pub url: String,
    pub model_url: String,
    pub model_api_key: Option<String>,
    pub worker_pid: u32,
    /// Which worker the pid is; may be left out when there is one worker.
    pub worker_id: Option<String>,
    pub runs: u64,
    /// Submissions in flight at once.
    pub submit_concurrency: usize,
    /// Longest wait for every run to be placed.
    pub settle: Duration,
    /// The workflow's (and the model call's) timeout: longer than the mock's latency.
    pub workflow_timeout: Duration,
    /// Cancel the runs once measured.
    pub cancel: bool,
}

/// The `VmRSS` of a `/proc/PID/status` text, in KiB.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => Some(value),
        _ => None,
    }
}

/// The resident set of process `pid`, in KiB.
pub fn read_rss_kib(pid: u32) -> Result<u64, LoadError> {
    let path = std::path::PathBuf::from(format!("/proc/{pid}/status"));
    let text = std::fs::read_to_string(&path).map_err(|source| LoadError::File {
        what: "reading the worker's memory from",
        path: path.clone(),
        source,
    })?;
    parse_vm_rss_kib(&text)
        .ok_or_else(|| LoadError::Other(format!("no VmRSS in {}", path.display())))
}

/// The worker `pid` is, by its id.
fn pick_worker(given: Option<&str>, listed: &[String]) -> Result<String, LoadError> {
    match given {
        Some(id) if listed.iter().any(|w| w == id) => Ok(id.to_string()),
        Some(id) => Err(LoadError::Usage(format!(
            "worker {id} is not registered (workers: {})",
            listed.join(", ")
        ))),
        None if listed.len() == 1 => Ok(listed[0].clone()),
        None if listed.is_empty() => Err(LoadError::Other("no worker is registered".into())),
        None => Err(LoadError::Usage(format!(
            "several workers ({}): name the one whose pid is given with --worker-id",
            listed.join(", ")
        ))),
    }
}

/// What the sampler saw.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// Runs on every worker, at the last sample.
    total_now: u64,
    /// The most runs on our worker, and when.
    held: u64,
    held_at: Option<Instant>,
    rss_peak: u64,
    error: Option<String>,
}

pub async fn capacity(p: &CapacityParams, weft: &Weft) -> Result<CapacityReport, LoadError> {
    if p.runs == 0 || p.submit_concurrency == 0 {
        return Err(LoadError::Usage(
            "--runs and --submit-concurrency must be at least 1".into(),
        ));
    }
    let listed: Vec<String> = weft
        .workers()
        .await?
        .into_iter()
        .map(|w| w.worker_id)
        .collect();
    let worker_id = pick_worker(p.worker_id.as_deref(), &listed)?;
    let timeout_ms = u64::try_from(p.workflow_timeout.as_millis()).unwrap_or(u64::MAX);
    let ai = AiSettings {
        with_api_key: p.model_api_key.is_some(),
        timeout_ms,
        model_timeout_ms: None,
    };
    let mut env = vec![("LLM_BASE_URL", p.model_url.as_str())];
    if let Some(key) = &p.model_api_key {
        env.push(("LLM_API_KEY", key.as_str()));
    }
    let workflow = weft.setup(&Scenario::Ai.definition(&ai), &env).await?;
    let url = weft.runs_url(&workflow, "async");
    let body = bytes::Bytes::from(Scenario::Ai.run_body().to_string());

    let rss_before = read_rss_kib(p.worker_pid)?;
    let seen = Arc::new(Mutex::new(Seen {
        rss_peak: rss_before,
        ..Seen::default()
    }));
    let sampler = tokio::spawn(sample(
        weft.clone(),
        worker_id.clone(),
        p.worker_pid,
        seen.clone(),
    ));

    let started = Instant::now();
    let results: Vec<Result<String, _>> = futures::stream::iter(0..p.runs)
        .map(|_| weft.submit_async(&url, body.clone()))
        .buffer_unordered(p.submit_concurrency)
        .collect()
        .await;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids = Vec::new();
    for r in results {
        match r {
            Ok(id) => ids.push(id),
            Err(kind) => *errors.entry(kind.to_string()).or_insert(0) += 1,
        }
    }
    let accepted = ids.len() as u64;

    let give_up = Instant::now() + p.settle;
    let (mut last_total, mut last_change) = (u64::MAX, Instant::now());
    let all_placed = loop {
        tokio::time::sleep(SAMPLE_EVERY).await;
        let now = Instant::now();
        let total = lock(&seen).total_now;
        if total >= accepted {
            break true;
        }
        if total != last_total {
            (last_total, last_change) = (total, now);
        } else if now.duration_since(last_change) >= STALL {
            break false;
        }
        if now >= give_up {
            break false;
        }
    };
    tokio::time::sleep(SETTLE_AFTER).await;
    sampler.abort();
    let seen = lock(&seen).clone();

    if p.cancel {
        futures::stream::iter(&ids)
            .for_each_concurrent(p.submit_concurrency, |id| async move {
                let _ = weft.cancel(id).await;
            })
            .await;
    }
    if let Some(e) = seen.error {
        return Err(LoadError::Other(format!("sampling the worker: {e}")));
    }

    let mut notes = vec![format!(
        "runs held = the coordinator's `assigned` for {worker_id}; RSS from /proc/{}/status",
        p.worker_pid
    )];
    if !all_placed {
        notes.push(format!(
            "only {} of {accepted} accepted runs were placed when the probe stopped: \
             the workers' capacity (WEFT_CAPACITY) or the coordinator's queue bound them",
            seen.total_now
        ));
    }
    if listed.len() > 1 {
        notes.push(format!(
            "{} workers share the runs; only {worker_id}'s are counted",
            listed.len()
        ));
    }
    let growth = seen.rss_peak.saturating_sub(rss_before);
    Ok(CapacityReport {
        worker_id,
        worker_pid: p.worker_pid,
        runs: p.runs,
        accepted,
        held: seen.held,
        seconds_to_peak: seen
            .held_at
            .map_or(0.0, |t| t.duration_since(started).as_secs_f64()),
        rss_before_kib: rss_before,
        rss_peak_kib: seen.rss_peak,
        kib_per_run: (seen.held > 0).then(|| growth as f64 / seen.held as f64),
        errors,
        notes,
        command: command_line(),
    })
}

async fn sample(weft: Weft, worker_id: String, pid: u32, seen: Arc<Mutex<Seen>>) {
    loop {
        let workers = weft.workers().await;
        let rss = read_rss_kib(pid);
        {
            let mut s = lock(&seen);
            match (workers, rss) {
                (Ok(workers), Ok(rss)) => {
                    s.total_now = workers.iter().map(|w| w.assigned).sum();
                    let ours = workers
                        .iter()
                        .find(|w| w.worker_id == worker_id)
                        .map_or(0, |w| w.assigned);
                    if ours > s.held {
                        s.held = ours;
                        s.held_at = Some(Instant::now());
                    }
                    s.rss_peak = s.rss_peak.max(rss);
                }
                (Err(e), _) | (_, Err(e)) => s.error = Some(e.to_string()),
            }
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

/// The sampler only ever writes whole values; a poisoned lock is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\tweft-worker\nVmPeak:\t  900000 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss_kib(status), Some(12_345));
        assert_eq!(parse_vm_rss_kib("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS:\tlots kB\n"), None);
        assert_eq!(parse_vm_rss_kib("VmRSS:\t12 MB\n"), None);
        // Our own process has one.
        assert!(read_rss_kib(std::process::id()).expect("own rss") > 0);
    }

    #[test]
    fn picks_the_worker() {
        let one = vec!["worker-1".to_string()];
        let two = vec!["worker-1".to_string(), "worker-2".to_string()];
        assert_eq!(pick_worker(None, &one).expect("the only one"), "worker-1");
        assert_eq!(
            pick_worker(Some("worker-2"), &two).expect("named"),
            "worker-2"
        );
        assert!(matches!(pick_worker(None, &two), Err(LoadError::Usage(_))));
        assert!(matches!(
            pick_worker(Some("worker-9"), &two),
            Err(LoadError::Usage(_))
        ));
        assert!(pick_worker(None, &[]).is_err());
    }
}
