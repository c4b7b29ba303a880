//! `weft-worker`: parse flags, load config, start logging, run.

use clap::Parser;

/// mimalloc: the services allocate many small, short-lived objects across
/// threads (messages, JSON, records), where it beats glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use serde::Serialize;
use std::path::PathBuf;
use weft_shared::config;
use weft_worker::WorkerConfig;

/// A Weft worker: executes runs placed on it over NATS.
/// Every setting can also come from a TOML file or a `WEFT_<NAME>` variable.
#[derive(Parser, Serialize)]
#[command(version)]
struct Cli {
    /// TOML config file.
    #[arg(long, env = "WEFT_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    #[serde(skip)]
    print_config: bool,
    /// Worker id (default: host name plus a random suffix).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    worker_id: Option<String>,
    /// NATS server URL.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_url: Option<String>,
    /// NATS subject prefix.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    subject_prefix: Option<String>,
    /// Runs held at once.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    capacity: Option<u32>,
    /// Metrics listen address ("" = off).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_addr: Option<String>,
    /// Log JSON lines.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_json: Option<bool>,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let cfg: WorkerConfig = config::load_or_exit(
        "weft-worker",
        cli.config.as_deref(),
        &cli,
        |c: &WorkerConfig| c.check(),
    );
    if cli.print_config {
        print!("{}", config::render(&cfg));
        return;
    }
    let telemetry =
        weft_shared::telemetry::start_or_exit("weft-worker", cfg.log_json, &cfg.otlp_endpoint);
    if let Err(e) = weft_worker::run(cfg, weft_shared::telemetry::shutdown_signal()).await {
        tracing::error!(error = %e, "worker failed");
        telemetry.shutdown();
        std::process::exit(1);
    }
    telemetry.shutdown();
}
