//! The open-loop arrival schedule: request `i` is due `i / rate` seconds
//! after the start, whatever happened to the requests before it.
//!
//! Latency is measured from this *intended* send time, not from the moment
//! the request actually left: when the system under test (or the generator)
//! stalls, the requests that should have been sent meanwhile are late, and
//! their lateness is counted. Measuring from the actual send time would hide
//! exactly the queueing we want to see (coordinated omission).

use std::time::Duration;

/// A fixed arrival rate, in requests per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    rate: f64,
}

impl Schedule {
    /// A schedule of `rate` requests per second; the rate must be finite and
    /// above zero.
    pub fn new(rate: f64) -> Result<Schedule, String> {
        if rate.is_finite() && rate > 0.0 {
            Ok(Schedule { rate })
        } else {
            Err(format!("rate {rate} must be a number above zero"))
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// When request `i` (counted from 0) is due, after the start.
    pub fn offset(&self, i: u64) -> Duration {
        // Past what a Duration holds (centuries) the request never comes.
        Duration::try_from_secs_f64(i as f64 / self.rate).unwrap_or(Duration::MAX)
    }

    /// How many requests are due by `elapsed` (those with `offset(i) <= elapsed`).
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        self.count(|i| self.offset(i) <= elapsed, elapsed)
    }

    /// How many requests a run of `span` sends (those with `offset(i) < span`).
    pub fn total(&self, span: Duration) -> u64 {
        if span.is_zero() {
            return 0;
        }
        self.count(|i| self.offset(i) < span, span)
    }

    /// The number of leading `i` for which `due(i)` holds, starting from the
    /// float estimate and correcting its rounding against `offset` itself, so
    /// `due_by`, `total` and `offset` never disagree.
    fn count(&self, due: impl Fn(u64) -> bool, at: Duration) -> u64 {
        let estimate = (at.as_secs_f64() * self.rate).floor();
        let mut n = if estimate >= u64::MAX as f64 {
            u64::MAX - 1
        } else {
            estimate as u64
        };
        while n > 0 && !due(n - 1) {
            n -= 1;
        }
        while n < u64::MAX && due(n) {
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_rates_that_are_not_positive() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Schedule::new(bad).is_err(), "{bad}");
        }
        assert_eq!(Schedule::new(2.5).map(|s| s.rate()), Ok(2.5));
    }

    #[test]
    fn offsets_follow_the_rate() {
        let s = Schedule::new(1000.0).expect("rate");
        assert_eq!(s.offset(0), Duration::ZERO);
        assert_eq!(s.offset(1), Duration::from_millis(1));
        assert_eq!(s.offset(2500), Duration::from_millis(2500));
        let slow = Schedule::new(0.5).expect("rate");
        assert_eq!(slow.offset(3), Duration::from_secs(6));
    }

    #[test]
    fn due_counts_the_request_at_time_zero() {
        let s = Schedule::new(100.0).expect("rate");
        assert_eq!(s.due_by(Duration::ZERO), 1);
        assert_eq!(s.due_by(Duration::from_micros(9_999)), 1);
        assert_eq!(s.due_by(Duration::from_millis(10)), 2);
        assert_eq!(s.due_by(Duration::from_secs(1)), 101);
    }

    #[test]
    fn totals_exclude_the_end() {
        let s = Schedule::new(100.0).expect("rate");
        assert_eq!(s.total(Duration::ZERO), 0);
        assert_eq!(s.total(Duration::from_secs(1)), 100);
        assert_eq!(s.total(Duration::from_millis(1001)), 101);
        let third = Schedule::new(3.0).expect("rate");
        assert_eq!(third.total(Duration::from_secs(10)), 30);
        let fractional = Schedule::new(0.3).expect("rate");
        // Due at 0, 3.33 s, 6.67 s.
        assert_eq!(fractional.total(Duration::from_secs(10)), 3);
    }

    #[test]
    fn due_and_offset_agree_everywhere() {
        for rate in [1.0, 7.0, 333.3, 1000.0, 12_345.6] {
            let s = Schedule::new(rate).expect("rate");
            for i in 0..2_000u64 {
                let at = s.offset(i);
                assert!(s.due_by(at) > i, "rate {rate} i {i}");
                assert!(s.total(at) <= i, "rate {rate} i {i}");
                assert_eq!(
                    s.total(at + Duration::from_nanos(1)),
                    i + 1,
                    "rate {rate} i {i}"
                );
            }
        }
    }
}
