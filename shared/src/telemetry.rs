//! Process set-up both binaries share: logging and the TLS crypto provider.

/// Installs the one rustls crypto provider the process uses (ring). async-nats
/// and any HTTP client must agree on it, or a `tls://` URL panics at connect.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Structured logs to stderr: text by default, JSON with `json = true`.
/// The filter comes from `RUST_LOG` (default `info`).
pub fn init_logging(json: bool) {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
}
