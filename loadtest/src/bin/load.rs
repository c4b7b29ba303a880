//! `weft-load`: the load generator ([`weft_loadtest::cli`] has the commands).
//!
//! ```text
//! weft-load run --scenario trivial --connections 32 --duration 10s --json trivial.json
//! weft-load nats-baseline --connections 32 --json nats.json
//! weft-load http-baseline --connections 32 --json http.json
//! weft-load report --inputs nats.json http.json trivial.json
//! ```
//!
//! Bad flags exit 64; a command that cannot do its job exits 1. Errors
//! measured under load are in the report, not in the exit code.

use clap::error::ErrorKind;
use clap::Parser;
use std::process::ExitCode;
use weft_loadtest::cli::{run, Cli};
use weft_loadtest::error::LoadError;

/// Exit code for bad flags (EX_USAGE).
const EXIT_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => ExitCode::SUCCESS,
                _ => ExitCode::from(EXIT_USAGE),
            };
        }
    };
    // reqwest and async-nats share ring's provider (reqwest has none built in).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ LoadError::Usage(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
