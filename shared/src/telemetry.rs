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

/// Structured logs to stderr (text, or JSON lines with `json`), filtered by
/// [`log_filter`], and — when `otlp_endpoint` is set (an OTLP/HTTP collector's
/// base URL, e.g. `http://otel-collector:4318`) — spans exported over OTLP.
/// Keep the returned [`Telemetry`] and call [`Telemetry::shutdown`] at exit so
/// the last spans are sent.
pub fn init(service: &'static str, json: bool, otlp_endpoint: &str) -> Result<Telemetry, String> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt_layer = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .compact()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let (otel_layer, provider) = if otlp_endpoint.is_empty() {
        (None, None)
    } else {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{}/v1/traces", otlp_endpoint.trim_end_matches('/')))
            .build()
            .map_err(|e| format!("otlp exporter: {e}"))?;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build();
        let tracer = provider.tracer(service);
        (
            Some(tracing_opentelemetry::layer().with_tracer(tracer)),
            Some(provider),
        )
    };
    let exporting = otel_layer.is_some();
    tracing_subscriber::registry()
        .with(log_filter("info"))
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .map_err(|e| format!("logging: {e}"))?;
    EXPORTING.store(exporting, std::sync::atomic::Ordering::Relaxed);
    Ok(Telemetry { provider })
}

static EXPORTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process exports spans (over OTLP). Spans that only an
/// exporter would read are made only then: a span costs the formatting of
/// its fields by the log layer even when nothing inside it is logged.
pub fn exporting_spans() -> bool {
    EXPORTING.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether per-run and per-node spans are worth making: when spans are
/// exported, or debug events (which the spans give their context) are
/// logged. Otherwise a span only costs the log layer's formatting of its
/// fields, on every run and node; the few events above debug inside a run
/// name their run themselves.
pub fn run_spans_wanted() -> bool {
    // The most verbose level any filter directive enables, whatever its
    // target (`RUST_LOG=info,weft_worker=debug` counts).
    exporting_spans()
        || tracing::level_filters::LevelFilter::current()
            >= tracing::level_filters::LevelFilter::DEBUG
}

/// For a binary's `main`: the crypto provider, then [`init`]; on failure
/// prints `<service>: <error>` and exits with the config exit code.
pub fn start_or_exit(service: &'static str, json: bool, otlp_endpoint: &str) -> Telemetry {
    install_crypto_provider();
    match init(service, json, otlp_endpoint) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{service}: {e}");
            std::process::exit(crate::config::EXIT_CONFIG);
        }
    }
}

/// Holds the span exporter, if any.
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered and stops the exporter. Blocking.
    pub fn shutdown(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
    }
}

/// Makes `span` a child of the caller's trace, so exported spans join it.
pub fn set_remote_parent(span: &tracing::Span, parent: &crate::trace::TraceParent) {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let sc = SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(sc));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_spans_are_made_only_for_debug_logs_or_an_exporter() {
        let at = |level| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(level)
                .with_writer(std::io::sink)
                .finish();
            tracing::subscriber::with_default(subscriber, run_spans_wanted)
        };
        assert!(!at(tracing::Level::INFO));
        assert!(at(tracing::Level::DEBUG));
        // Debug for the worker's own target only counts too.
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,weft_worker=debug"))
            .with_writer(std::io::sink)
            .finish();
        assert!(tracing::subscriber::with_default(
            subscriber,
            run_spans_wanted
        ));
    }

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
