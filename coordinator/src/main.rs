//! `weft-coordinator`: parse flags, load config, start logging, run.

use clap::Parser;

/// mimalloc: the services allocate many small, short-lived objects across
/// threads (messages, JSON, records), where it beats glibc's malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use serde::Serialize;
use std::path::PathBuf;
use weft_coordinator::CoordinatorConfig;
use weft_shared::config::{self, EXIT_CONFIG};

/// The Weft coordinator: HTTP API, run store, placement over NATS.
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
    /// HTTP listen address.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    http_addr: Option<String>,
    /// NATS server URL.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    nats_url: Option<String>,
    /// Store URL (sqlite://FILE).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    database_url: Option<String>,
    /// NATS subject prefix.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    subject_prefix: Option<String>,
    /// Log JSON lines.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    log_json: Option<bool>,
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let cfg: CoordinatorConfig = config::load_or_exit(
        "weft-coordinator",
        cli.config.as_deref(),
        &cli,
        |c: &CoordinatorConfig| c.check(),
    );
    if cli.print_config {
        print!("{}", config::render(&cfg));
        return;
    }
    let telemetry =
        weft_shared::telemetry::start_or_exit("weft-coordinator", cfg.log_json, &cfg.otlp_endpoint);
    let listener = match tokio::net::TcpListener::bind(&cfg.http_addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("weft-coordinator: cannot listen on {}: {e}", cfg.http_addr);
            std::process::exit(EXIT_CONFIG);
        }
    };
    if let Err(e) =
        weft_coordinator::run(cfg, listener, weft_shared::telemetry::shutdown_signal()).await
    {
        tracing::error!(error = %e, "coordinator failed");
        telemetry.shutdown();
        std::process::exit(1);
    }
    telemetry.shutdown();
}
