//! Reports: what one load run measured ([`LoadReport`]) or what the capacity
//! probe found ([`CapacityReport`]), as JSON and as readable tables, and the
//! combination of several into one table with Weft's figures stated as
//! ratios of the baselines ([`Combined`]).

use crate::driver::Plan;
use crate::duration::format_ms;
use crate::recorder::Measured;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One report file: `{"kind": "load", …}` or `{"kind": "capacity", …}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Report {
    Load(LoadReport),
    Capacity(CapacityReport),
}

/// Which limit a baseline measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// Raw NATS request/reply between two processes: the transport's limit.
    Nats,
    /// A hello endpoint on the same HTTP stack: the HTTP limit.
    Http,
}

impl Baseline {
    pub fn label(self) -> &'static str {
        match self {
            Baseline::Nats => "NATS request/reply",
            Baseline::Http => "HTTP hello",
        }
    }
}

/// Open or closed loop, as reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "loop", rename_all = "snake_case")]
pub enum LoopReport {
    Closed { connections: u32 },
    Open { rate: f64, max_outstanding: u64 },
}

impl From<Plan> for LoopReport {
    fn from(plan: Plan) -> Self {
        match plan {
            Plan::Closed { connections } => LoopReport::Closed { connections },
            Plan::Open {
                rate,
                max_outstanding,
            } => LoopReport::Open {
                rate,
                max_outstanding,
            },
        }
    }
}

impl LoopReport {
    /// `c=32` or `r=1000/s`.
    pub fn short(&self) -> String {
        match self {
            LoopReport::Closed { connections } => format!("c={connections}"),
            LoopReport::Open { rate, .. } => format!("r={rate}/s"),
        }
    }
}

/// Latency percentiles of the successes, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Latencies {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

/// What one load run measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// `trivial`, `async`, `ai`, `fanout`, `nats-baseline`, `http-baseline`.
    pub name: String,
    /// Set on baselines; Weft's own runs have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Baseline>,
    /// `sync` or `async` for Weft runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_mode: Option<String>,
    #[serde(flatten)]
    pub load: LoopReport,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// What throughput is computed over: the window, or longer when requests
    /// of the window were still ending after it.
    pub elapsed_s: f64,
    /// Requests of the window sent (requests refused as `overload` are not).
    pub sent: u64,
    /// Successes: the latency samples.
    pub completed: u64,
    /// Successes per second.
    pub throughput: f64,
    /// `None` when nothing succeeded.
    pub latency_ms: Option<Latencies>,
    /// Errors by kind: `http_429`, `timeout`, `connect`, `run_failed`, `overload`…
    pub errors: BTreeMap<String, u64>,
    /// How to read the figures (e.g. the poll interval's effect).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The command line that produced the report.
    #[serde(default)]
    pub command: String,
}

/// What the capacity probe found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CapacityReport {
    pub worker_id: String,
    pub worker_pid: u32,
    /// Runs asked for.
    pub runs: u64,
    /// Runs the coordinator accepted (202).
    pub accepted: u64,
    /// The most runs the worker held at once (the coordinator's `assigned`).
    pub held: u64,
    /// Seconds from the first submission until `held` reached its peak.
    pub seconds_to_peak: f64,
    /// The worker's VmRSS before submitting, KiB.
    pub rss_before_kib: u64,
    /// The worker's highest VmRSS while holding the runs, KiB.
    pub rss_peak_kib: u64,
    /// (peak − before) ÷ held, KiB; `None` when nothing was held.
    pub kib_per_run: Option<f64>,
    /// Submission errors by kind.
    pub errors: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    #[serde(default)]
    pub command: String,
}

impl Latencies {
    /// From a histogram in microseconds; `None` when it is empty.
    pub fn from_histogram(h: &hdrhistogram::Histogram<u64>) -> Option<Latencies> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Latencies {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        })
    }
}

impl LoadReport {
    /// A report of `measured`, with the rest to be filled in by the caller.
    pub fn new(
        name: &str,
        plan: Plan,
        warmup_s: f64,
        duration_s: f64,
        measured: &Measured,
    ) -> Self {
        LoadReport {
            name: name.to_string(),
            baseline: None,
            run_mode: None,
            load: plan.into(),
            warmup_s,
            duration_s,
            elapsed_s: measured.elapsed.as_secs_f64(),
            sent: measured.sent,
            completed: measured.completed(),
            throughput: measured.throughput(),
            latency_ms: Latencies::from_histogram(&measured.histogram),
            errors: measured.errors.clone(),
            notes: Vec::new(),
            command: command_line(),
        }
    }

    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The readable form, several lines.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let what = match self.baseline {
            Some(b) => format!("{} ({})", self.name, b.label()),
            None => self.name.clone(),
        };
        let how = match &self.load {
            LoopReport::Closed { connections } => {
                format!("closed loop, {connections} connections")
            }
            LoopReport::Open {
                rate,
                max_outstanding,
            } => format!("open loop, {rate} req/s, at most {max_outstanding} outstanding"),
        };
        let mode = self
            .run_mode
            .as_deref()
            .map(|m| format!(", {m}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{what}: {how}{mode}, {:.1} s measured after {:.1} s warmup",
            self.duration_s, self.warmup_s
        );
        let _ = writeln!(
            out,
            "  throughput   {:.1}/s  ({} completed of {} sent, over {:.2} s)",
            self.throughput, self.completed, self.sent, self.elapsed_s
        );
        match &self.latency_ms {
            Some(l) => {
                let _ = writeln!(
                    out,
                    "  latency ms   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {})",
                    format_ms(l.p50),
                    format_ms(l.p90),
                    format_ms(l.p99),
                    format_ms(l.p999),
                    format_ms(l.max),
                    format_ms(l.mean)
                );
            }
            None => {
                let _ = writeln!(out, "  latency ms   no successful request");
            }
        }
        let total = self.error_total();
        if total == 0 {
            let _ = writeln!(out, "  errors       none");
        } else {
            let attempts = self.completed + total;
            let kinds: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(
                out,
                "  errors       {total} ({:.2} %): {}",
                100.0 * total as f64 / attempts as f64,
                kinds.join(", ")
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        out
    }
}

impl CapacityReport {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "capacity: worker {} (pid {}), {} AI runs asked for, {} accepted",
            self.worker_id, self.worker_pid, self.runs, self.accepted
        );
        let _ = writeln!(
            out,
            "  in flight    {} runs held at once ({:.1} s to reach)",
            self.held, self.seconds_to_peak
        );
        let per_run = self
            .kib_per_run
            .map_or_else(|| "-".to_string(), |k| format!("{k:.1}"));
        let _ = writeln!(
            out,
            "  memory       RSS {} KiB before, {} KiB at peak: {per_run} KiB per in-flight run",
            self.rss_before_kib, self.rss_peak_kib
        );
        if !self.errors.is_empty() {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(out, "  errors       {}", kinds.join(", "));
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        out
    }
}

impl Report {
    pub fn table(&self) -> String {
        match self {
            Report::Load(r) => r.table(),
            Report::Capacity(r) => r.table(),
        }
    }
}

/// Weft's figure over a baseline's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    pub scenario: String,
    pub baseline: Baseline,
    /// Weft's throughput ÷ the baseline's; `None` when the baseline has none.
    pub throughput_ratio: Option<f64>,
    /// Weft's p50 ÷ the baseline's; `None` when either has no latency.
    pub p50_ratio: Option<f64>,
    /// The two runs' loops differ (e.g. `c=32` against `c=1`): the ratio
    /// compares unlike loads.
    pub same_load: bool,
}

/// Several reports and the ratios between them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Combined {
    pub reports: Vec<Report>,
    pub ratios: Vec<Ratio>,
}

/// `a / b`, or `None` when `b` is not above zero.
fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

impl Combined {
    /// Every Weft run against every baseline.
    pub fn new(reports: Vec<Report>) -> Combined {
        let loads: Vec<&LoadReport> = reports
            .iter()
            .filter_map(|r| match r {
                Report::Load(l) => Some(l),
                Report::Capacity(_) => None,
            })
            .collect();
        let mut ratios = Vec::new();
        for weft in loads.iter().filter(|l| l.baseline.is_none()) {
            for base in loads.iter().filter(|l| l.baseline.is_some()) {
                let Some(baseline) = base.baseline else {
                    continue;
                };
                let p50 = |l: &LoadReport| l.latency_ms.as_ref().map(|x| x.p50);
                ratios.push(Ratio {
                    scenario: weft.name.clone(),
                    baseline,
                    throughput_ratio: ratio(weft.throughput, base.throughput),
                    p50_ratio: p50(weft).zip(p50(base)).and_then(|(a, b)| ratio(a, b)),
                    same_load: weft.load == base.load,
                });
            }
        }
        Combined { reports, ratios }
    }

    /// One line per load run, then the capacity results, then the ratios.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let header = [
            "name",
            "load",
            "mode",
            "completed",
            "per s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors",
        ];
        let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
        for r in &self.reports {
            let Report::Load(l) = r else { continue };
            let lat = |f: fn(&Latencies) -> f64| {
                l.latency_ms
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |x| format_ms(f(x)))
            };
            let errors = if l.errors.is_empty() {
                "0".to_string()
            } else {
                l.errors
                    .iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            rows.push(vec![
                l.name.clone(),
                l.load.short(),
                l.run_mode.clone().unwrap_or_else(|| "-".into()),
                l.completed.to_string(),
                format!("{:.0}", l.throughput),
                lat(|x| x.p50),
                lat(|x| x.p90),
                lat(|x| x.p99),
                lat(|x| x.p999),
                lat(|x| x.max),
                errors,
            ]);
        }
        if rows.len() > 1 {
            out.push_str(&align(&rows));
        }
        for r in &self.reports {
            if let Report::Capacity(c) = r {
                out.push('\n');
                out.push_str(&c.table());
            }
        }
        if !self.ratios.is_empty() {
            out.push('\n');
        }
        for r in &self.ratios {
            out.push_str(&r.sentence());
            out.push('\n');
        }
        out
    }
}

impl Ratio {
    /// `trivial p50 = 2.1 × NATS request/reply p50; throughput = 0.08 × NATS request/reply`.
    pub fn sentence(&self) -> String {
        let label = self.baseline.label();
        let fmt = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}"));
        let caveat = if self.same_load {
            ""
        } else {
            " (at a different load)"
        };
        format!(
            "{} p50 = {} × {label} p50; throughput = {} × {label}{caveat}",
            self.scenario,
            fmt(self.p50_ratio),
            fmt(self.throughput_ratio)
        )
    }
}

/// Left-aligned columns, two spaces apart.
fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The command line of this process, for the report.
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::new_histogram;
    use std::time::Duration;

    fn load(name: &str, baseline: Option<Baseline>, throughput: f64, p50: f64) -> LoadReport {
        LoadReport {
            name: name.into(),
            baseline,
            run_mode: baseline.is_none().then(|| "sync".into()),
            load: LoopReport::Closed { connections: 32 },
            warmup_s: 2.0,
            duration_s: 10.0,
            elapsed_s: 10.0,
            sent: 1000,
            completed: 990,
            throughput,
            latency_ms: Some(Latencies {
                p50,
                p90: p50 * 2.0,
                p99: p50 * 4.0,
                p999: p50 * 8.0,
                max: p50 * 16.0,
                mean: p50,
            }),
            errors: BTreeMap::from([("http_429".to_string(), 10)]),
            notes: vec!["a note".into()],
            command: "weft-load run --scenario trivial".into(),
        }
    }

    fn capacity() -> CapacityReport {
        CapacityReport {
            worker_id: "worker-1".into(),
            worker_pid: 4242,
            runs: 10_000,
            accepted: 10_000,
            held: 8_000,
            seconds_to_peak: 3.5,
            rss_before_kib: 20_000,
            rss_peak_kib: 100_000,
            kib_per_run: Some(10.0),
            errors: BTreeMap::new(),
            notes: vec![],
            command: String::new(),
        }
    }

    #[test]
    fn latencies_come_from_the_histogram_in_ms() {
        assert_eq!(Latencies::from_histogram(&new_histogram()), None);
        let mut h = new_histogram();
        for us in 1..=1000u64 {
            h.record(us * 10).expect("in range");
        }
        let l = Latencies::from_histogram(&h).expect("samples");
        assert!((l.p50 - 5.0).abs() < 0.01, "{l:?}");
        assert!((l.p90 - 9.0).abs() < 0.01, "{l:?}");
        assert!((l.p99 - 9.9).abs() < 0.01, "{l:?}");
        assert!((l.max - 10.0).abs() < 0.01, "{l:?}");
        assert!((l.mean - 5.005).abs() < 0.01, "{l:?}");
    }

    #[test]
    fn reports_round_trip_through_json() {
        let reports = vec![
            Report::Load(load("trivial", None, 1234.5, 2.5)),
            Report::Load(LoadReport {
                load: LoopReport::Open {
                    rate: 500.0,
                    max_outstanding: 10_000,
                },
                latency_ms: None,
                ..load("nats-baseline", Some(Baseline::Nats), 0.0, 1.0)
            }),
            Report::Capacity(capacity()),
        ];
        for r in &reports {
            let text = serde_json::to_string_pretty(r).expect("serialises");
            let back: Report = serde_json::from_str(&text).expect("parses");
            assert_eq!(&back, r, "{text}");
        }
        let json = serde_json::to_value(&reports[1]).expect("value");
        assert_eq!(json["kind"], "load");
        assert_eq!(json["loop"], "open");
        assert_eq!(json["rate"], 500.0);
        assert_eq!(json["baseline"], "nats");
        assert_eq!(
            serde_json::to_value(&reports[2]).expect("value")["kind"],
            "capacity"
        );
        let combined = Combined::new(reports);
        let text = serde_json::to_string(&combined).expect("serialises");
        assert_eq!(
            serde_json::from_str::<Combined>(&text).expect("parses"),
            combined
        );
    }

    #[test]
    fn a_report_reads_as_a_table() {
        let t = load("trivial", None, 1234.5, 2.5).table();
        assert!(
            t.starts_with(
                "trivial: closed loop, 32 connections, sync, 10.0 s measured after 2.0 s warmup\n"
            ),
            "{t}"
        );
        assert!(
            t.contains("throughput   1234.5/s  (990 completed of 1000 sent"),
            "{t}"
        );
        assert!(
            t.contains("p50 2.50  p90 5.00  p99 10.0  p99.9 20.0  max 40.0"),
            "{t}"
        );
        assert!(t.contains("errors       10 (1.00 %): http_429 10"), "{t}");
        assert!(t.contains("note: a note"), "{t}");
        let mut quiet = load("x", Some(Baseline::Http), 1.0, 1.0);
        quiet.errors.clear();
        quiet.latency_ms = None;
        let t = quiet.table();
        assert!(t.starts_with("x (HTTP hello): "), "{t}");
        assert!(t.contains("errors       none"), "{t}");
        assert!(t.contains("no successful request"), "{t}");
        let c = capacity().table();
        assert!(c.contains("8000 runs held at once"), "{c}");
        assert!(
            c.contains("20000 KiB before, 100000 KiB at peak: 10.0 KiB per in-flight run"),
            "{c}"
        );
    }

    #[test]
    fn ratios_compare_every_run_to_every_baseline() {
        let combined = Combined::new(vec![
            Report::Load(load("nats-baseline", Some(Baseline::Nats), 40_000.0, 1.0)),
            Report::Load(load("http-baseline", Some(Baseline::Http), 20_000.0, 0.5)),
            Report::Load(load("trivial", None, 10_000.0, 2.1)),
            Report::Capacity(capacity()),
        ]);
        assert_eq!(combined.ratios.len(), 2);
        let nats = &combined.ratios[0];
        assert_eq!(nats.baseline, Baseline::Nats);
        assert!((nats.p50_ratio.expect("p50") - 2.1).abs() < 1e-9);
        assert!((nats.throughput_ratio.expect("tput") - 0.25).abs() < 1e-9);
        assert!(nats.same_load);
        assert_eq!(
            nats.sentence(),
            "trivial p50 = 2.10 × NATS request/reply p50; throughput = 0.25 × NATS request/reply"
        );
        let http = &combined.ratios[1];
        assert!((http.p50_ratio.expect("p50") - 4.2).abs() < 1e-9);
        assert!((http.throughput_ratio.expect("tput") - 0.5).abs() < 1e-9);

        let table = combined.table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("name "), "{table}");
        assert!(
            lines[1].starts_with("nats-baseline  c=32  -     990        40000  1.00"),
            "{table}"
        );
        assert!(lines[3].contains("trivial"), "{table}");
        assert!(table.contains("8000 runs held at once"), "{table}");
        assert!(
            table.contains("trivial p50 = 4.20 × HTTP hello p50"),
            "{table}"
        );
    }

    #[test]
    fn ratios_without_a_denominator_are_absent() {
        let mut dead = load("nats-baseline", Some(Baseline::Nats), 0.0, 1.0);
        dead.latency_ms = None;
        dead.load = LoopReport::Closed { connections: 1 };
        let combined = Combined::new(vec![
            Report::Load(load("trivial", None, 10.0, 2.0)),
            Report::Load(dead),
        ]);
        let r = &combined.ratios[0];
        assert_eq!(r.throughput_ratio, None);
        assert_eq!(r.p50_ratio, None);
        assert!(!r.same_load);
        assert!(
            r.sentence().ends_with("(at a different load)"),
            "{}",
            r.sentence()
        );
        assert!(r.sentence().contains("p50 = - ×"));
    }

    #[test]
    fn a_report_is_built_from_measurements() {
        let mut histogram = new_histogram();
        histogram.record(2_000).expect("in range");
        let m = Measured {
            histogram,
            errors: BTreeMap::from([("timeout".to_string(), 1)]),
            sent: 2,
            elapsed: Duration::from_secs(2),
        };
        let r = LoadReport::new("fanout", Plan::Closed { connections: 4 }, 1.0, 2.0, &m);
        assert_eq!(r.completed, 1);
        assert!((r.throughput - 0.5).abs() < 1e-9);
        assert_eq!(r.load, LoopReport::Closed { connections: 4 });
        assert_eq!(r.error_total(), 1);
        assert!((r.latency_ms.expect("latency").p50 - 2.0).abs() < 0.01);
    }
}
