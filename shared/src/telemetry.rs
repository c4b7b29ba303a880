//! Process set-up both binaries share: logging and the TLS crypto provider.

/// Installs the one rustls crypto provider the process uses (ring). async-nats
/// and any HTTP client must agree on it, or a `tls://` URL panics at connect.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The log filter: `RUST_LOG` (default `info`), with async-nats capped at
/// `info` whatever `RUST_LOG` asks — at `trace` it logs whole message
/// payloads, and a run's assignment carries its secure variables.
pub fn log_filter(default: &str) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    filter.add_directive("async_nats=info".parse().expect("a valid directive"))
}

/// Structured logs to stderr: text by default, JSON with `json = true`.
/// The filter is [`log_filter`].
pub fn init_logging(json: bool) {
    use tracing_subscriber::fmt;
    let filter = log_filter("info");
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
}

/// Most distinct values one label may take in this process; later values
/// are reported as `other`, so a flood of workflows or models cannot blow up
/// Prometheus. Set with `WEFT_METRIC_LABEL_CAP`.
pub fn label_cap() -> usize {
    static CAP: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CAP.get_or_init(|| {
        std::env::var("WEFT_METRIC_LABEL_CAP")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(500)
    })
}

/// `value` as a label of `kind` (`workflow`, `model`, …), or `other` once
/// the kind has [`label_cap`] distinct values.
pub fn bounded_label(kind: &'static str, value: &str) -> String {
    bounded_in(&LABELS, label_cap(), kind, value)
}

type Seen =
    std::sync::Mutex<std::collections::HashMap<&'static str, std::collections::HashSet<String>>>;
static LABELS: std::sync::LazyLock<Seen> = std::sync::LazyLock::new(Default::default);

fn bounded_in(seen: &Seen, cap: usize, kind: &'static str, value: &str) -> String {
    let Ok(mut m) = seen.lock() else {
        return "other".into();
    };
    let set = m.entry(kind).or_default();
    if set.contains(value) {
        return value.to_string();
    }
    if set.len() < cap {
        set.insert(value.to_string());
        return value.to_string();
    }
    "other".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_capped_per_kind() {
        let seen = Seen::default();
        assert_eq!(bounded_in(&seen, 2, "workflow", "a"), "a");
        assert_eq!(bounded_in(&seen, 2, "workflow", "b"), "b");
        assert_eq!(bounded_in(&seen, 2, "workflow", "c"), "other");
        assert_eq!(
            bounded_in(&seen, 2, "workflow", "a"),
            "a",
            "known values keep their label"
        );
        assert_eq!(
            bounded_in(&seen, 2, "model", "c"),
            "c",
            "each kind has its own cap"
        );
    }
}

/// Buckets for every `*_seconds` histogram: 1 ms to 10 min. Explicit buckets
/// make the exporter write histograms (which add up across workers), not
/// summaries (which do not).
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

static PROMETHEUS: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
    std::sync::OnceLock::new();

/// Installs the process's Prometheus recorder once and returns its handle
/// (render it for `/metrics`). Later calls return the same handle, so a
/// coordinator and workers in one test process share it.
pub fn prometheus() -> metrics_exporter_prometheus::PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}

/// Resolves on the first SIGTERM or Ctrl-C; a second one exits the process
/// at once (exit code 130), skipping the drain.
pub async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("signal received; draining (send it again to exit now)");
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        if let Ok(rt) = rt {
            rt.block_on(wait_for_signal());
            eprintln!("second signal: exiting now");
            std::process::exit(130);
        }
    });
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
