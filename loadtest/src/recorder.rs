//! What a load run observed: latencies in an HDR histogram (microseconds),
//! errors by kind, and counters for the progress line.
//!
//! Every request is recorded against the time it was *meant* to start (its
//! intended time in the open loop, its real start in the closed loop). Only
//! requests meant to start inside the measurement window — after the warmup,
//! before the end — count in the report; the counters behind the progress
//! line count everything.

use hdrhistogram::Histogram;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// An error's kind: `http_429`, `timeout`, `connect`, `run_failed`, `overload`…
pub type ErrorKind = Cow<'static, str>;

/// How one request ended: `Ok` is a latency sample, `Err` an error of a kind.
pub type Outcome = Result<(), ErrorKind>;

/// The largest latency the histogram holds, in microseconds (one hour);
/// larger values are clamped to it.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A histogram of latencies in microseconds, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds are valid")
}

/// Shared by every task of a load run.
pub struct Recorder {
    /// Requests meant to start from here on are measured.
    window_start: Instant,
    /// Requests meant to start from here on are not.
    window_end: Instant,
    /// Latencies of measured successes, microseconds.
    histogram: Mutex<Histogram<u64>>,
    /// Measured errors by kind.
    errors: Mutex<BTreeMap<ErrorKind, u64>>,
    /// Requests sent (all, for the progress line).
    sent: AtomicU64,
    /// Requests that ended, well or not (all, for the progress line).
    done: AtomicU64,
    /// Requests that ended in an error (all, for the progress line).
    failed: AtomicU64,
    /// Measured requests sent.
    measured_sent: AtomicU64,
    /// When the last measured request ended, in microseconds after
    /// `window_start`: throughput is measured up to there when it is later
    /// than the window's end (requests still finishing).
    last_done_us: AtomicU64,
}

/// What the progress line shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub sent: u64,
    pub done: u64,
    pub failed: u64,
}

/// The measured part of a run, once it is over.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Latencies of successes, microseconds.
    pub histogram: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
    /// Measured requests sent (overloads are not sent).
    pub sent: u64,
    /// The time throughput is computed over: the window, or longer when
    /// measured requests were still ending after it.
    pub elapsed: Duration,
}

impl Measured {
    /// Successes (latency samples).
    pub fn completed(&self) -> u64 {
        self.histogram.len()
    }

    /// Successes per second.
    pub fn throughput(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.completed() as f64 / secs
        } else {
            0.0
        }
    }
}

impl Recorder {
    /// Measures requests meant to start in `[start + warmup, start + warmup + duration)`.
    pub fn new(start: Instant, warmup: Duration, duration: Duration) -> Recorder {
        let window_start = start + warmup;
        Recorder {
            window_start,
            window_end: window_start + duration,
            histogram: Mutex::new(new_histogram()),
            errors: Mutex::new(BTreeMap::new()),
            sent: AtomicU64::new(0),
            done: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            measured_sent: AtomicU64::new(0),
            last_done_us: AtomicU64::new(0),
        }
    }

    pub fn window_start(&self) -> Instant {
        self.window_start
    }

    pub fn window_end(&self) -> Instant {
        self.window_end
    }

    fn measured(&self, intended: Instant) -> bool {
        intended >= self.window_start && intended < self.window_end
    }

    /// A request meant to start at `intended` was sent.
    pub fn sent(&self, intended: Instant) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        if self.measured(intended) {
            self.measured_sent.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request meant to start at `intended` ended now.
    pub fn record(&self, intended: Instant, outcome: Outcome) {
        self.record_at(intended, Instant::now(), outcome);
    }

    /// A request meant to start at `intended` ended at `ended`.
    pub fn record_at(&self, intended: Instant, ended: Instant, outcome: Outcome) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if outcome.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        if !self.measured(intended) {
            return;
        }
        let after_start = ended.saturating_duration_since(self.window_start);
        let after_start_us = u64::try_from(after_start.as_micros()).unwrap_or(u64::MAX);
        self.last_done_us
            .fetch_max(after_start_us, Ordering::Relaxed);
        match outcome {
            Ok(()) => {
                let latency = ended.saturating_duration_since(intended);
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                lock(&self.histogram).saturating_record(us.max(1));
            }
            Err(kind) => *lock(&self.errors).entry(kind).or_insert(0) += 1,
        }
    }

    /// `n` measured requests never ended (still in flight when the run gave
    /// up waiting): errors of kind `unfinished`.
    pub fn unfinished(&self, n: u64) {
        if n > 0 {
            *lock(&self.errors)
                .entry(Cow::Borrowed("unfinished"))
                .or_insert(0) += n;
        }
    }

    pub fn progress(&self) -> Progress {
        Progress {
            sent: self.sent.load(Ordering::Relaxed),
            done: self.done.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// The measured figures so far.
    pub fn snapshot(&self) -> Measured {
        let window = self.window_end - self.window_start;
        let last = Duration::from_micros(self.last_done_us.load(Ordering::Relaxed));
        Measured {
            histogram: lock(&self.histogram).clone(),
            errors: lock(&self.errors)
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            sent: self.measured_sent.load(Ordering::Relaxed),
            elapsed: window.max(last),
        }
    }
}

/// A poisoned lock still holds consistent data here (a histogram or a map
/// updated in one call), so a panic elsewhere must not stop the recording.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_only_the_window() {
        let t0 = Instant::now();
        let rec = Recorder::new(t0, Duration::from_secs(1), Duration::from_secs(2));
        let ms = Duration::from_millis;
        // Warmup: counted for progress, not measured.
        rec.sent(t0);
        rec.record_at(t0, t0 + ms(5), Ok(()));
        // In the window: a success of 7 ms and two errors.
        let i = t0 + ms(1500);
        rec.sent(i);
        rec.sent(i);
        rec.sent(i);
        rec.record_at(i, i + ms(7), Ok(()));
        rec.record_at(i, i + ms(1), Err("http_500".into()));
        rec.record_at(i, i + ms(1), Err("http_500".into()));
        // Past the end: not measured.
        rec.record_at(t0 + ms(3000), t0 + ms(3001), Err("timeout".into()));
        rec.unfinished(2);

        assert_eq!(
            rec.progress(),
            Progress {
                sent: 4,
                done: 5,
                failed: 3
            }
        );
        let m = rec.snapshot();
        assert_eq!(m.sent, 3);
        assert_eq!(m.completed(), 1);
        assert_eq!(m.errors.get("http_500"), Some(&2));
        assert_eq!(m.errors.get("unfinished"), Some(&2));
        assert_eq!(m.errors.get("timeout"), None);
        let p50 = m.histogram.value_at_quantile(0.5);
        assert!((6_990..=7_010).contains(&p50), "{p50}");
        assert_eq!(m.elapsed, Duration::from_secs(2));
        assert!((m.throughput() - 0.5).abs() < 1e-9);
    }

    #[test]
    fn latency_counts_from_the_intended_time() {
        let t0 = Instant::now();
        let rec = Recorder::new(t0, Duration::ZERO, Duration::from_secs(1));
        // Meant at 100 ms, ended at 900 ms: 800 ms, however late it left.
        let intended = t0 + Duration::from_millis(100);
        rec.record_at(intended, t0 + Duration::from_millis(900), Ok(()));
        let max = rec.snapshot().histogram.max();
        assert!((799_000..=801_000).contains(&max), "{max}");
    }

    #[test]
    fn elapsed_stretches_to_the_last_measured_end() {
        let t0 = Instant::now();
        let rec = Recorder::new(t0, Duration::ZERO, Duration::from_secs(1));
        rec.record_at(t0, t0 + Duration::from_secs(4), Ok(()));
        assert_eq!(rec.snapshot().elapsed, Duration::from_secs(4));
        assert!((rec.snapshot().throughput() - 0.25).abs() < 1e-9);
    }
}
