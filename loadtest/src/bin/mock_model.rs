//! `weft-mock-model`: the mock OpenAI-compatible model server
//! ([`weft_loadtest::mock_model`]) as a process, for load tests.
//!
//! ```text
//! weft-mock-model --listen 127.0.0.1:8089 --latency lognormal:500ms,0.5 --rate-429 0.01
//! ```
//!
//! Prints the base URL (`http://ADDR/v1`) on stdout once listening; logs go
//! to stderr (`RUST_LOG`). Stops on Ctrl-C or SIGTERM. Bad flags exit 64.

use clap::error::ErrorKind;
use clap::Parser;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use weft_loadtest::mock_model::{serve, Latency, MockModelConfig, Reply};

/// Exit code for bad flags (EX_USAGE).
const EXIT_USAGE: u8 = 64;

/// A mock OpenAI-compatible chat-completions server for load tests.
#[derive(Debug, Parser)]
#[command(name = "weft-mock-model")]
struct Cli {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// Latency before each answer: fixed:500ms | uniform:200ms..800ms | lognormal:500ms,0.5
    /// (units: us, ms, s, m).
    #[arg(long, default_value = "fixed:0ms", value_parser = parse_latency)]
    latency: Latency,
    /// Completion tokens reported in usage.
    #[arg(long, default_value_t = 16)]
    completion_tokens: u32,
    /// Prompt tokens reported in usage; default: characters of all messages / 4.
    #[arg(long)]
    prompt_tokens: Option<u32>,
    /// Probability of answering 429.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    rate_429: f64,
    /// Probability of answering 500.
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    rate_500: f64,
    /// Probability of never answering (the connection stays open).
    #[arg(long, default_value_t = 0.0, value_parser = parse_probability)]
    hang_rate: f64,
    /// The first N requests answer 500.
    #[arg(long, default_value_t = 0)]
    fail_first: u32,
    /// Seconds to put in Retry-After on 429 answers.
    #[arg(long)]
    retry_after: Option<u64>,
    /// Require `Authorization: Bearer <KEY>`.
    #[arg(long, env = "WEFT_MOCK_MODEL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// What to answer: echo (the last user message) | fixed:TEXT
    #[arg(long, default_value = "echo", value_parser = parse_reply)]
    reply: Reply,
}

impl Cli {
    fn into_config(self) -> Result<(SocketAddr, MockModelConfig), String> {
        if self.rate_429 + self.rate_500 + self.hang_rate > 1.0 {
            return Err("--rate-429 + --rate-500 + --hang-rate must be at most 1".into());
        }
        if self.api_key.as_deref().is_some_and(str::is_empty) {
            return Err("--api-key must not be empty".into());
        }
        let config = MockModelConfig {
            latency: self.latency,
            completion_tokens: self.completion_tokens,
            prompt_tokens: self.prompt_tokens,
            rate_429: self.rate_429,
            rate_500: self.rate_500,
            hang_rate: self.hang_rate,
            fail_first: self.fail_first,
            retry_after_secs: self.retry_after,
            api_key: self.api_key,
            reply: self.reply,
        };
        Ok((self.listen, config))
    }
}

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
    let (listen, config) = match cli.into_config() {
        Ok(parts) => parts,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();

    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("error: cannot listen on {listen}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(listen);
    let shutdown = shutdown_signal();
    println!("http://{addr}/v1");
    tracing::info!(%addr, ?config.latency, "mock model listening");
    match serve(listener, config, shutdown).await {
        Ok(()) => {
            tracing::info!("mock model stopped");
            ExitCode::SUCCESS
        }
        Err(error) => {
            tracing::error!(%error, "mock model failed");
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: a signal sent as soon as the
/// URL is printed (and a request answered) is not missed, which would kill
/// the process instead of stopping it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (int, term) = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            async fn recv(s: Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                () = recv(int) => {}
                () = recv(term) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down");
    }
}

/// `500ms`, `1.5s`, `250us`, `2m` (the load generator's parser).
fn parse_duration(s: &str) -> Result<Duration, String> {
    weft_loadtest::duration::parse(s)
}

/// `fixed:500ms`, `uniform:200ms..800ms`, `lognormal:500ms,0.5`.
fn parse_latency(s: &str) -> Result<Latency, String> {
    const FORMS: &str = "expected fixed:500ms, uniform:200ms..800ms or lognormal:500ms,0.5";
    let (kind, rest) = s.split_once(':').ok_or_else(|| FORMS.to_string())?;
    match kind {
        "fixed" => Ok(Latency::Fixed(parse_duration(rest)?)),
        "uniform" => {
            let (min, max) = rest.split_once("..").ok_or_else(|| FORMS.to_string())?;
            let (min, max) = (parse_duration(min)?, parse_duration(max)?);
            if min > max {
                return Err(format!("uniform latency {rest:?} has min above max"));
            }
            Ok(Latency::Uniform { min, max })
        }
        "lognormal" => {
            let (median, sigma) = rest.split_once(',').ok_or_else(|| FORMS.to_string())?;
            let sigma: f64 = sigma
                .trim()
                .parse()
                .map_err(|_| format!("lognormal sigma {sigma:?} is not a number"))?;
            if !sigma.is_finite() || sigma < 0.0 {
                return Err(format!("lognormal sigma {sigma} must be zero or more"));
            }
            Ok(Latency::LogNormal {
                median: parse_duration(median)?,
                sigma,
            })
        }
        _ => Err(format!("unknown latency kind {kind:?}; {FORMS}")),
    }
}

/// `echo` or `fixed:TEXT`.
fn parse_reply(s: &str) -> Result<Reply, String> {
    match s.split_once(':') {
        _ if s == "echo" => Ok(Reply::Echo),
        Some(("fixed", text)) => Ok(Reply::Fixed(text.to_string())),
        _ => Err("expected echo or fixed:TEXT".into()),
    }
}

/// A number between 0 and 1.
fn parse_probability(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(format!("{p} is not a probability between 0 and 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("weft-mock-model").chain(args.iter().copied()))
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["500", "ms", "5h", "-1s", "x5ms"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn latencies() {
        assert!(matches!(
            parse_latency("fixed:500ms"),
            Ok(Latency::Fixed(d)) if d == Duration::from_millis(500)
        ));
        assert!(matches!(
            parse_latency("uniform:200ms..800ms"),
            Ok(Latency::Uniform { min, max })
                if min == Duration::from_millis(200) && max == Duration::from_millis(800)
        ));
        assert!(matches!(
            parse_latency("lognormal:500ms,0.5"),
            Ok(Latency::LogNormal { median, sigma })
                if median == Duration::from_millis(500) && sigma == 0.5
        ));
        for bad in [
            "500ms",
            "fixed:",
            "uniform:800ms..200ms",
            "uniform:200ms",
            "lognormal:500ms",
            "lognormal:500ms,-1",
            "gaussian:1s",
        ] {
            assert!(parse_latency(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replies_and_probabilities() {
        assert!(matches!(parse_reply("echo"), Ok(Reply::Echo)));
        assert!(matches!(parse_reply("fixed:a:b"), Ok(Reply::Fixed(t)) if t == "a:b"));
        assert!(parse_reply("loud").is_err());
        assert_eq!(parse_probability("0.25"), Ok(0.25));
        assert!(parse_probability("1.5").is_err());
        assert!(parse_probability("x").is_err());
    }

    #[test]
    fn flags() {
        let cli = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--latency",
            "uniform:1ms..2ms",
            "--completion-tokens",
            "7",
            "--prompt-tokens",
            "3",
            "--rate-429",
            "0.1",
            "--rate-500",
            "0.2",
            "--hang-rate",
            "0.3",
            "--retry-after",
            "2",
            "--api-key",
            "sk-x",
            "--reply",
            "fixed:hi",
        ])
        .expect("flags parse");
        let (listen, config) = cli.into_config().expect("valid config");
        assert_eq!(listen.port(), 0);
        assert_eq!(config.completion_tokens, 7);
        assert_eq!(config.prompt_tokens, Some(3));
        assert_eq!(config.retry_after_secs, Some(2));
        assert_eq!(config.api_key.as_deref(), Some("sk-x"));
        assert!(matches!(config.reply, Reply::Fixed(ref t) if t == "hi"));

        let defaults = parse(&[]).expect("no flags parse");
        assert_eq!(defaults.listen, "127.0.0.1:8089".parse().expect("addr"));
        assert!(matches!(defaults.latency, Latency::Fixed(d) if d.is_zero()));

        for bad in [
            &["--latency", "soon"][..],
            &["--rate-429", "2"],
            &["--listen", "nowhere"],
            &["--reply", "shout"],
            &["--unknown"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let too_likely = parse(&["--rate-429", "0.6", "--rate-500", "0.6"]).expect("parses");
        assert!(too_likely.into_config().is_err());
    }
}
