//! Drives an operation under load, open or closed loop, into a [`Recorder`].
//!
//! - **Closed loop**: N clients, each sending its next request when the one
//!   before has ended. Latency is from the real start. It measures what N
//!   concurrent callers get, and the throughput they reach, but a stall slows
//!   the clients down with it, so queueing hides in lower throughput.
//! - **Open loop**: requests are due on a fixed schedule ([`Schedule`]),
//!   whether or not earlier ones have ended; latency is from the intended
//!   time. Requests outstanding are bounded (`max_outstanding`): a request due
//!   while the bound is reached is not sent and counts as an `overload` error,
//!   so a system that cannot keep up shows as errors and high latency rather
//!   than exhausting the generator.
//!
//! After the window ends no new request starts; those in flight get
//! `drain` to end, after which they are counted as `unfinished`.

use crate::recorder::{Measured, Outcome, Recorder};
use crate::schedule::Schedule;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// One request of a load run, e.g. a sync run over HTTP or a NATS request.
pub trait Op: Send + Sync + 'static {
    /// Sends one request and waits for its end.
    fn call(&self) -> impl Future<Output = Outcome> + Send;
}

/// Open or closed loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Plan {
    /// `connections` clients in a loop.
    Closed { connections: u32 },
    /// `rate` requests per second, at most `max_outstanding` at once.
    Open { rate: f64, max_outstanding: u64 },
}

/// How long and how hard to drive.
#[derive(Clone, Debug)]
pub struct LoadParams {
    pub plan: Plan,
    /// Driven but not measured, first.
    pub warmup: Duration,
    /// Measured.
    pub duration: Duration,
    /// How long requests in flight at the end may take to end.
    pub drain: Duration,
    /// Print a progress line on stderr once a second.
    pub progress: bool,
}

/// Pause of a closed-loop client after an error, so that a failing target
/// (connection refused answers in microseconds) is not hammered in a tight loop.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Runs `op` under `params` and returns what the window measured.
pub async fn drive<O: Op>(op: Arc<O>, params: &LoadParams) -> Result<Measured, String> {
    let start = Instant::now();
    let rec = Arc::new(Recorder::new(start, params.warmup, params.duration));
    let progress = params
        .progress
        .then(|| tokio::spawn(progress_lines(rec.clone(), start)));
    let result = match params.plan {
        Plan::Closed { connections } => {
            if connections == 0 {
                Err("connections must be at least 1".to_string())
            } else {
                closed_loop(op, rec.clone(), connections, params.drain).await;
                Ok(())
            }
        }
        Plan::Open {
            rate,
            max_outstanding,
        } => match Schedule::new(rate) {
            Ok(schedule) => {
                open_loop(op, rec.clone(), schedule, start, max_outstanding, params).await;
                Ok(())
            }
            Err(e) => Err(e),
        },
    };
    if let Some(progress) = progress {
        progress.abort();
    }
    result.map(|()| rec.snapshot())
}

async fn closed_loop<O: Op>(op: Arc<O>, rec: Arc<Recorder>, connections: u32, drain: Duration) {
    let end = rec.window_end();
    let mut clients = JoinSet::new();
    for _ in 0..connections {
        let (op, rec) = (op.clone(), rec.clone());
        clients.spawn(async move {
            loop {
                let started = Instant::now();
                if started >= end {
                    break;
                }
                rec.sent(started);
                let outcome = op.call().await;
                let failed = outcome.is_err();
                rec.record(started, outcome);
                if failed {
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            }
        });
    }
    let give_up = tokio::time::Instant::from_std(end + drain);
    while !clients.is_empty() {
        match tokio::time::timeout_at(give_up, clients.join_next()).await {
            Ok(_) => {}
            Err(_) => {
                // Each client still running has one request in flight, started
                // before the end.
                rec.unfinished(clients.len() as u64);
                clients.abort_all();
                break;
            }
        }
    }
}

async fn open_loop<O: Op>(
    op: Arc<O>,
    rec: Arc<Recorder>,
    schedule: Schedule,
    start: Instant,
    max_outstanding: u64,
    params: &LoadParams,
) {
    let total = schedule.total(params.warmup + params.duration);
    let outstanding = Arc::new(AtomicU64::new(0));
    let mut i = 0;
    while i < total {
        let next = start + schedule.offset(i);
        tokio::time::sleep_until(tokio::time::Instant::from_std(next)).await;
        // The timer has millisecond granularity: send everything due by now.
        let due = schedule.due_by(start.elapsed()).min(total);
        while i < due {
            let intended = start + schedule.offset(i);
            i += 1;
            if outstanding.load(Ordering::Relaxed) >= max_outstanding {
                rec.record(intended, Err("overload".into()));
                continue;
            }
            outstanding.fetch_add(1, Ordering::Relaxed);
            rec.sent(intended);
            let (op, rec, outstanding) = (op.clone(), rec.clone(), outstanding.clone());
            tokio::spawn(async move {
                let outcome = op.call().await;
                rec.record(intended, outcome);
                outstanding.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
    let give_up = Instant::now() + params.drain;
    while outstanding.load(Ordering::Relaxed) > 0 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Requests still out were all meant to start in the run; those of the
    // warmup are few (they had the whole window to end) and counted too.
    rec.unfinished(outstanding.load(Ordering::Relaxed));
}

/// Prints `elapsed, sent, done, errors, current rate` on stderr once a second.
async fn progress_lines(rec: Arc<Recorder>, start: Instant) {
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::from_std(start + Duration::from_secs(1)),
        Duration::from_secs(1),
    );
    let mut before = rec.progress();
    let mut before_at = start;
    loop {
        tick.tick().await;
        let now = Instant::now();
        let p = rec.progress();
        let secs = now.duration_since(before_at).as_secs_f64();
        let rate = if secs > 0.0 {
            (p.done - before.done) as f64 / secs
        } else {
            0.0
        };
        let phase = if now < rec.window_start() {
            " (warmup)"
        } else if now >= rec.window_end() {
            " (draining)"
        } else {
            ""
        };
        eprintln!(
            "weft-load: {:>5.1}s  sent {}  done {}  errors {}  rate {:.0}/s{}",
            now.duration_since(start).as_secs_f64(),
            p.sent,
            p.done,
            p.failed,
            rate,
            phase
        );
        before = p;
        before_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    /// Sleeps `delay`; every `fail_every`-th call fails.
    struct Fake {
        delay: Duration,
        calls: AtomicU64,
        fail_every: u64,
    }

    impl Op for Fake {
        fn call(&self) -> impl Future<Output = Outcome> + Send {
            let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
            let delay = self.delay;
            let fail = n.checked_rem(self.fail_every) == Some(0);
            async move {
                tokio::time::sleep(delay).await;
                if fail {
                    Err(Cow::Borrowed("http_500"))
                } else {
                    Ok(())
                }
            }
        }
    }

    fn fake(delay_ms: u64, fail_every: u64) -> Arc<Fake> {
        Arc::new(Fake {
            delay: Duration::from_millis(delay_ms),
            calls: AtomicU64::new(0),
            fail_every,
        })
    }

    fn params(plan: Plan, duration_ms: u64) -> LoadParams {
        LoadParams {
            plan,
            warmup: Duration::from_millis(50),
            duration: Duration::from_millis(duration_ms),
            drain: Duration::from_secs(2),
            progress: false,
        }
    }

    #[tokio::test]
    async fn open_loop_sends_on_schedule() {
        let op = fake(1, 0);
        let p = params(
            Plan::Open {
                rate: 200.0,
                max_outstanding: 1000,
            },
            500,
        );
        let m = drive(op.clone(), &p).await.expect("runs");
        // 0.55 s at 200/s = 110 sent, of which the window's 100 are measured.
        assert_eq!(op.calls.load(Ordering::Relaxed), 110);
        assert_eq!(m.sent, 100);
        assert_eq!(m.completed(), 100);
        assert!(m.errors.is_empty(), "{:?}", m.errors);
    }

    #[tokio::test]
    async fn open_loop_counts_overload_beyond_the_bound() {
        // Each call takes 300 ms; at 100/s at most 2 may be out: most overload.
        let op = fake(300, 0);
        let p = params(
            Plan::Open {
                rate: 100.0,
                max_outstanding: 2,
            },
            300,
        );
        let m = drive(op, &p).await.expect("runs");
        let overload = m.errors.get("overload").copied().unwrap_or(0);
        assert!(overload >= 25, "{:?}", m.errors);
        assert_eq!(m.completed() + overload, 30);
    }

    #[tokio::test]
    async fn closed_loop_keeps_n_in_flight_and_counts_errors() {
        let op = fake(10, 4);
        let m = drive(op, &params(Plan::Closed { connections: 4 }, 300))
            .await
            .expect("runs");
        let errors = m.errors.get("http_500").copied().unwrap_or(0);
        assert!(m.completed() > 40, "{}", m.completed());
        assert!(errors > 10, "{:?}", m.errors);
        let p50 = m.histogram.value_at_quantile(0.5);
        assert!((9_000..60_000).contains(&p50), "{p50}");
    }

    #[tokio::test]
    async fn unfinished_requests_are_counted_after_the_drain() {
        let op = fake(5_000, 0);
        let mut p = params(Plan::Closed { connections: 3 }, 100);
        p.warmup = Duration::ZERO;
        p.drain = Duration::from_millis(100);
        let m = drive(op, &p).await.expect("runs");
        assert_eq!(m.errors.get("unfinished"), Some(&3));
        assert_eq!(m.completed(), 0);
    }

    #[tokio::test]
    async fn bad_plans_are_refused() {
        let op = fake(0, 0);
        assert!(
            drive(op.clone(), &params(Plan::Closed { connections: 0 }, 10))
                .await
                .is_err()
        );
        let open = Plan::Open {
            rate: 0.0,
            max_outstanding: 1,
        };
        assert!(drive(op, &params(open, 10)).await.is_err());
    }
}
