//! `weft-load`'s command line and what each command does.
//!
//! ```text
//! weft-load run --scenario trivial|async|ai|fanout [--url …] [--duration 10s]
//!               [--rate N | --connections N] [--warmup 2s] [--json report.json]
//! weft-load nats-baseline [--nats-url nats://127.0.0.1:4222] [--connections N] …
//! weft-load http-baseline [--connections N] …
//! weft-load capacity --model-url … --worker-pid PID [--worker-id ID] --runs N
//! weft-load chaos [--duration 40s] [--rate 150] [--fault-every 8s] [--json chaos.json]
//! weft-load report --inputs a.json b.json … [--json combined.json]
//! weft-load definition --scenario fanout
//! ```
//!
//! Tables go to stdout, the progress line to stderr.

use crate::api::{http_client, AsyncRun, SyncRun, Weft};
use crate::baseline::{self, Helper, HttpHello, NatsRequest};
use crate::capacity::{capacity, CapacityParams};
use crate::chaos::{chaos, default_fault_every, ChaosParams};
use crate::driver::{drive, LoadParams, Op, Plan};
use crate::duration;
use crate::error::LoadError;
use crate::report::{Baseline, Combined, LoadReport, Report};
use crate::scenario::{AiSettings, RunMode, Scenario};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Measures Weft against the limits of its own transport and HTTP stack.
#[derive(Debug, Parser)]
#[command(name = "weft-load")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Deploy a scenario's workflow and drive runs of it.
    Run(RunArgs),
    /// Raw NATS request/reply between two processes: the transport's limit.
    NatsBaseline(NatsBaselineArgs),
    /// A hello endpoint on the same HTTP stack (axum): the HTTP limit.
    HttpBaseline(HttpBaselineArgs),
    /// In-flight AI runs one worker holds while the model is slow, and its memory per run.
    Capacity(CapacityArgs),
    /// Own a cluster (NATS, coordinator, workers), load it and inject faults; nothing accepted may be lost.
    Chaos(ChaosArgs),
    /// Combine reports into one table, Weft's figures as ratios of the baselines.
    Report(ReportArgs),
    /// Print the workflow a scenario deploys.
    Definition(DefinitionArgs),
    /// (child of nats-baseline) Reply to requests on a subject with their payload.
    #[command(hide = true)]
    NatsEcho(NatsEchoArgs),
    /// (child of http-baseline) Serve GET /hello on 127.0.0.1:0; print the port.
    #[command(hide = true)]
    HttpHello,
}

/// How hard and how long, for every command that drives load.
#[derive(Clone, Debug, Args)]
pub struct LoadArgs {
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = duration::parse)]
    pub duration: Duration,
    /// Driven but not measured, before.
    #[arg(long, default_value = "2s", value_parser = duration::parse)]
    pub warmup: Duration,
    /// Open loop: requests per second on a fixed schedule, latency from the intended send time.
    #[arg(long, conflicts_with = "connections")]
    pub rate: Option<f64>,
    /// Closed loop: concurrent clients, each sending when its last request ended [default: 32].
    #[arg(long)]
    pub connections: Option<u32>,
    /// Open loop: requests outstanding at most; a request due beyond it counts as `overload`.
    #[arg(long, default_value_t = 10_000)]
    pub max_outstanding: u64,
    /// A request (or an async run, submission to end) slower than this is a `timeout`.
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    pub timeout: Duration,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

impl LoadArgs {
    pub fn plan(&self) -> Result<Plan, LoadError> {
        match (self.rate, self.connections) {
            (Some(rate), _) => {
                crate::schedule::Schedule::new(rate).map_err(LoadError::Usage)?;
                if self.max_outstanding == 0 {
                    return Err(LoadError::Usage(
                        "--max-outstanding must be at least 1".into(),
                    ));
                }
                Ok(Plan::Open {
                    rate,
                    max_outstanding: self.max_outstanding,
                })
            }
            (None, Some(0)) => Err(LoadError::Usage("--connections must be at least 1".into())),
            (None, connections) => Ok(Plan::Closed {
                connections: connections.unwrap_or(32),
            }),
        }
    }

    pub fn params(&self) -> Result<LoadParams, LoadError> {
        if self.duration.is_zero() {
            return Err(LoadError::Usage("--duration must be above zero".into()));
        }
        Ok(LoadParams {
            plan: self.plan()?,
            warmup: self.warmup,
            duration: self.duration,
            // A request in flight at the end has its own timeout to end.
            drain: self.timeout + Duration::from_secs(1),
            progress: !self.quiet,
        })
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// The coordinator's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// sync or async [default: async for the async scenario, else sync].
    #[arg(long, value_enum)]
    pub mode: Option<RunMode>,
    /// The mock model's base URL (…/v1), for the ai scenario.
    #[arg(long, default_value = "http://127.0.0.1:8089/v1")]
    pub model_url: String,
    /// An API key for the model, set as LLM_API_KEY.
    #[arg(long, env = "WEFT_LOAD_MODEL_API_KEY", hide_env_values = true)]
    pub model_api_key: Option<String>,
    /// The ai scenario: the AI node's model timeout (default: the
    /// workflow's, 60 s). Shorter than the mock's latency, every call times
    /// out — read how late in the workers' `weft_timeout_lateness_seconds`.
    #[arg(long, value_parser = duration::parse)]
    pub model_timeout: Option<Duration>,
    /// Async runs: time between status reads. Latency overstates the true
    /// one by up to this (half of it on average); each run in flight costs
    /// one GET per interval. At least 5ms.
    #[arg(long, default_value = "5ms", value_parser = duration::parse)]
    pub poll_interval: Duration,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Debug, Args)]
pub struct NatsBaselineArgs {
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Debug, Args)]
pub struct HttpBaselineArgs {
    #[command(flatten)]
    pub load: LoadArgs,
}

#[derive(Debug, Args)]
pub struct CapacityArgs {
    /// The coordinator's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The (slow) mock model's base URL (…/v1).
    #[arg(long, default_value = "http://127.0.0.1:8089/v1")]
    pub model_url: String,
    #[arg(long, env = "WEFT_LOAD_MODEL_API_KEY", hide_env_values = true)]
    pub model_api_key: Option<String>,
    /// The worker process whose memory is read.
    #[arg(long)]
    pub worker_pid: u32,
    /// That worker's id; needed when several workers are registered.
    #[arg(long)]
    pub worker_id: Option<String>,
    /// AI runs to submit.
    #[arg(long)]
    pub runs: u64,
    /// Submissions in flight at once.
    #[arg(long, default_value_t = 64)]
    pub submit_concurrency: usize,
    /// Longest wait for the runs to be placed.
    #[arg(long, default_value = "120s", value_parser = duration::parse)]
    pub settle: Duration,
    /// The workflow's timeout; longer than the mock's latency.
    #[arg(long, default_value = "300s", value_parser = duration::parse)]
    pub workflow_timeout: Duration,
    /// Leave the runs running instead of cancelling them once measured.
    #[arg(long)]
    pub keep_runs: bool,
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// How long the load runs (faults are injected meanwhile).
    #[arg(long, default_value = "40s", value_parser = duration::parse)]
    pub duration: Duration,
    /// Async run submissions per second.
    #[arg(long, default_value_t = 150.0)]
    pub rate: f64,
    /// Time between faults [default: duration ÷ 5, at most 10s].
    #[arg(long, value_parser = duration::parse)]
    pub fault_every: Option<Duration>,
    /// Longest wait, after the load, for every accepted run to end.
    #[arg(long, default_value = "60s", value_parser = duration::parse)]
    pub settle: Duration,
    /// A submission retried (same Idempotency-Key) for longer than this gives up.
    #[arg(long, default_value = "30s", value_parser = duration::parse)]
    pub submit_deadline: Duration,
    /// The nats-server binary (2.10+, JetStream).
    #[arg(long, env = "WEFT_NATS_SERVER", default_value = "nats-server")]
    pub nats_server: PathBuf,
    /// Where weft-coordinator and weft-worker are [default: beside weft-load].
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// NATS store, SQLite store and logs.
    #[arg(long, default_value = ".weft-local/chaos")]
    pub state_dir: PathBuf,
    /// The coordinator's port on 127.0.0.1 [default: a free one].
    #[arg(long)]
    pub http_port: Option<u16>,
    /// NATS's port on 127.0.0.1 [default: a free one].
    #[arg(long)]
    pub nats_port: Option<u16>,
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// How long the script node is busy, in ms.
    #[arg(long, default_value_t = 3)]
    pub busy_ms: u64,
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Report files written with --json.
    #[arg(long, num_args = 1.., required = true)]
    pub inputs: Vec<PathBuf>,
    /// Also write the combination as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DefinitionArgs {
    #[arg(long, value_enum)]
    pub scenario: Scenario,
}

#[derive(Debug, Args)]
pub struct NatsEchoArgs {
    #[arg(long)]
    pub nats_url: String,
    #[arg(long)]
    pub subject: String,
}

/// Runs one command.
pub async fn run(cli: Cli) -> Result<(), LoadError> {
    match cli.command {
        Command::Run(args) => run_scenario(args).await,
        Command::NatsBaseline(args) => nats_baseline(args).await,
        Command::HttpBaseline(args) => http_baseline(args).await,
        Command::Capacity(args) => run_capacity(args).await,
        Command::Chaos(args) => run_chaos(args).await,
        Command::Report(args) => combine(args),
        Command::Definition(args) => {
            let definition = args.scenario.definition(&AiSettings::default());
            println!("{definition:#}");
            Ok(())
        }
        Command::NatsEcho(args) => baseline::nats_echo(&args.nats_url, &args.subject).await,
        Command::HttpHello => baseline::http_hello().await,
    }
}

async fn run_scenario(args: RunArgs) -> Result<(), LoadError> {
    let params = args.load.params()?;
    let scenario = args.scenario;
    let mode = args.mode.unwrap_or(scenario.default_mode());
    if scenario == Scenario::Async && mode == RunMode::Sync {
        return Err(LoadError::Usage(
            "the async scenario runs in async mode; use trivial for sync".into(),
        ));
    }
    if args.poll_interval < Duration::from_millis(5) {
        return Err(LoadError::Usage(
            "--poll-interval must be at least 5ms".into(),
        ));
    }
    let weft = Weft::new(&args.url, http_client(args.load.timeout)?);
    let ai = AiSettings {
        with_api_key: args.model_api_key.is_some(),
        model_timeout_ms: args.model_timeout.map(|d| d.as_millis().max(1) as u64),
        ..AiSettings::default()
    };
    let mut env = Vec::new();
    if scenario == Scenario::Ai {
        env.push(("LLM_BASE_URL", args.model_url.as_str()));
        if let Some(key) = &args.model_api_key {
            env.push(("LLM_API_KEY", key.as_str()));
        }
    }
    let workflow = weft.setup(&scenario.definition(&ai), &env).await?;
    eprintln!(
        "weft-load: deployed {} as workflow {workflow}; {} runs for {:?} after {:?} warmup",
        scenario.name(),
        mode.as_str(),
        params.duration,
        params.warmup
    );
    let url = weft.runs_url(&workflow, mode.as_str());
    let body = bytes::Bytes::from(scenario.run_body().to_string());
    let mut notes = vec![format!("workflow {workflow} at {}", weft.base())];
    let report = match mode {
        RunMode::Sync => {
            let op = SyncRun {
                http: weft.http().clone(),
                url: reqwest::Url::parse(&url)
                    .map_err(|e| LoadError::Usage(format!("--url: {e}")))?,
                body,
            };
            measure(scenario.name(), op, &params, &args.load).await?
        }
        RunMode::Async => {
            notes.push(format!(
                "async latency is submission to the status read that saw the end: it overstates \
                 the true latency by up to one poll interval ({:?}), half of one on average; \
                 the reads add runs in flight ÷ {:?} GETs per second to the coordinator's load",
                args.poll_interval, args.poll_interval
            ));
            let op = AsyncRun {
                weft: weft.clone(),
                url,
                body,
                poll: args.poll_interval,
                timeout: args.load.timeout,
            };
            measure(scenario.name(), op, &params, &args.load).await?
        }
    };
    let report = LoadReport {
        run_mode: Some(mode.as_str().into()),
        notes,
        ..report
    };
    emit(&Report::Load(report), args.load.json.as_deref())
}

async fn measure<O: Op>(
    name: &str,
    op: O,
    params: &LoadParams,
    load: &LoadArgs,
) -> Result<LoadReport, LoadError> {
    let measured = drive(Arc::new(op), params)
        .await
        .map_err(LoadError::Usage)?;
    Ok(LoadReport::new(
        name,
        params.plan,
        load.warmup.as_secs_f64(),
        load.duration.as_secs_f64(),
        &measured,
    ))
}

async fn nats_baseline(args: NatsBaselineArgs) -> Result<(), LoadError> {
    let params = args.load.params()?;
    let subject = format!("weft.load.echo.{}", uuid::Uuid::now_v7().simple());
    let echo = Helper::start(&[
        "nats-echo",
        "--nats-url",
        &args.nats_url,
        "--subject",
        &subject,
    ])
    .await?;
    let op = NatsRequest::connect(&args.nats_url, &subject, args.load.timeout).await;
    let result = match op {
        Ok(op) => measure("nats-baseline", op, &params, &args.load).await,
        Err(e) => Err(e),
    };
    echo.stop().await;
    let report = LoadReport {
        baseline: Some(Baseline::Nats),
        notes: vec![format!(
            "{}-byte requests from one connection to an echo in another process, through {}",
            baseline::PAYLOAD_BYTES,
            args.nats_url
        )],
        ..result?
    };
    emit(&Report::Load(report), args.load.json.as_deref())
}

async fn http_baseline(args: HttpBaselineArgs) -> Result<(), LoadError> {
    let params = args.load.params()?;
    let server = Helper::start(&["http-hello"]).await?;
    let port: Result<u16, _> = server.ready_line.parse();
    let result = match port {
        Ok(port) => match http_client(args.load.timeout) {
            Ok(http) => {
                let op = HttpHello {
                    http,
                    url: reqwest::Url::parse(&format!("http://127.0.0.1:{port}/hello"))
                        .map_err(|e| LoadError::Other(format!("hello url: {e}")))?,
                };
                measure("http-baseline", op, &params, &args.load).await
            }
            Err(e) => Err(e),
        },
        Err(_) => Err(LoadError::Child(format!(
            "http-hello printed {:?}, not a port",
            server.ready_line
        ))),
    };
    server.stop().await;
    let report = LoadReport {
        baseline: Some(Baseline::Http),
        notes: vec!["GET /hello on axum in another process, same client as the scenarios".into()],
        ..result?
    };
    emit(&Report::Load(report), args.load.json.as_deref())
}

async fn run_capacity(args: CapacityArgs) -> Result<(), LoadError> {
    let weft = Weft::new(&args.url, http_client(Duration::from_secs(30))?);
    let params = CapacityParams {
        url: args.url,
        model_url: args.model_url,
        model_api_key: args.model_api_key,
        worker_pid: args.worker_pid,
        worker_id: args.worker_id,
        runs: args.runs,
        submit_concurrency: args.submit_concurrency,
        settle: args.settle,
        workflow_timeout: args.workflow_timeout,
        cancel: !args.keep_runs,
    };
    let report = capacity(&params, &weft).await?;
    emit(&Report::Capacity(report), args.json.as_deref())
}

async fn run_chaos(args: ChaosArgs) -> Result<(), LoadError> {
    if args.duration.is_zero() {
        return Err(LoadError::Usage("--duration must be above zero".into()));
    }
    crate::schedule::Schedule::new(args.rate).map_err(LoadError::Usage)?;
    if args.workers == 0 {
        return Err(LoadError::Usage("--workers must be at least 1".into()));
    }
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .ok_or_else(|| {
                LoadError::Usage("cannot tell where weft-load is; give --bin-dir".into())
            })?,
    };
    let params = ChaosParams {
        duration: args.duration,
        rate: args.rate,
        fault_every: args
            .fault_every
            .unwrap_or_else(|| default_fault_every(args.duration)),
        settle: args.settle,
        submit_deadline: args.submit_deadline,
        nats_server: args.nats_server,
        bin_dir,
        state_dir: args.state_dir,
        http_port: match args.http_port {
            Some(p) => p,
            None => crate::chaos::free_port()?,
        },
        nats_port: match args.nats_port {
            Some(p) => p,
            None => crate::chaos::free_port()?,
        },
        workers: args.workers,
        busy_ms: args.busy_ms,
        progress: !args.quiet,
    };
    let report = chaos(params).await?;
    print!("{}", report.table());
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    if report.passed() {
        Ok(())
    } else {
        Err(LoadError::Other(format!(
            "{} accepted runs were lost",
            report.lost
        )))
    }
}

/// Reads report files.
pub fn read_reports(paths: &[PathBuf]) -> Result<Vec<Report>, LoadError> {
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).map_err(|source| LoadError::File {
                what: "reading",
                path: path.clone(),
                source,
            })?;
            serde_json::from_str(&text).map_err(|source| LoadError::NotAReport {
                path: path.clone(),
                source,
            })
        })
        .collect()
}

fn combine(args: ReportArgs) -> Result<(), LoadError> {
    let combined = Combined::new(read_reports(&args.inputs)?);
    print!("{}", combined.table());
    if let Some(path) = &args.json {
        write_json(path, &combined)?;
    }
    Ok(())
}

/// Prints the table on stdout and writes the JSON file when asked.
fn emit(report: &Report, json: Option<&Path>) -> Result<(), LoadError> {
    print!("{}", report.table());
    if let Some(path) = json {
        write_json(path, report)?;
    }
    Ok(())
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<(), LoadError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| LoadError::Other(format!("serialising the report: {e}")))?;
    std::fs::write(path, text + "\n").map_err(|source| LoadError::File {
        what: "writing",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("weft-load").chain(args.iter().copied()))
    }

    #[test]
    fn run_flags() {
        let cli = parse(&[
            "run",
            "--scenario",
            "trivial",
            "--duration",
            "10s",
            "--warmup",
            "500ms",
            "--connections",
            "32",
            "--json",
            "r.json",
        ])
        .expect("parses");
        let Command::Run(run) = cli.command else {
            panic!("not run");
        };
        assert_eq!(run.scenario, Scenario::Trivial);
        assert_eq!(run.url, "http://127.0.0.1:8080");
        assert_eq!(run.load.duration, Duration::from_secs(10));
        assert_eq!(run.load.warmup, Duration::from_millis(500));
        assert_eq!(run.load.json.as_deref(), Some(Path::new("r.json")));
        assert_eq!(
            run.load.plan().expect("plan"),
            Plan::Closed { connections: 32 }
        );
        assert_eq!(run.poll_interval, Duration::from_millis(5));
        let params = run.load.params().expect("params");
        assert_eq!(params.drain, Duration::from_secs(61));

        let open = parse(&[
            "run",
            "--scenario",
            "ai",
            "--mode",
            "async",
            "--rate",
            "250",
            "--duration",
            "1.5s",
            "--model-timeout",
            "100ms",
        ])
        .expect("parses");
        let Command::Run(open) = open.command else {
            panic!("not run");
        };
        assert_eq!(open.mode, Some(RunMode::Async));
        assert_eq!(
            open.load.plan().expect("plan"),
            Plan::Open {
                rate: 250.0,
                max_outstanding: 10_000
            }
        );
        assert_eq!(open.load.duration, Duration::from_millis(1500));
        assert_eq!(open.model_timeout, Some(Duration::from_millis(100)));
        assert_eq!(run.model_timeout, None);
    }

    #[test]
    fn bad_run_flags() {
        for bad in [
            &["run"][..],
            &["run", "--scenario", "huge"],
            &["run", "--scenario", "trivial", "--duration", "10"],
            &[
                "run",
                "--scenario",
                "trivial",
                "--rate",
                "5",
                "--connections",
                "2",
            ],
            &["run", "--scenario", "trivial", "--mode", "later"],
            &["frobnicate"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        for unworkable in [
            &["run", "--scenario", "trivial", "--rate", "0"][..],
            &["run", "--scenario", "trivial", "--connections", "0"],
            &["run", "--scenario", "trivial", "--duration", "0s"],
        ] {
            let Command::Run(run) = parse(unworkable).expect("parses").command else {
                panic!("not run");
            };
            assert!(
                matches!(run.load.params(), Err(LoadError::Usage(_))),
                "{unworkable:?}"
            );
        }
    }

    #[test]
    fn other_commands() {
        let Command::NatsBaseline(n) = parse(&["nats-baseline", "--connections", "1"])
            .expect("parses")
            .command
        else {
            panic!("not nats-baseline");
        };
        assert_eq!(n.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(
            n.load.plan().expect("plan"),
            Plan::Closed { connections: 1 }
        );
        assert!(matches!(
            parse(&["http-baseline"]).expect("parses").command,
            Command::HttpBaseline(_)
        ));
        let Command::Capacity(c) = parse(&["capacity", "--worker-pid", "42", "--runs", "10000"])
            .expect("parses")
            .command
        else {
            panic!("not capacity");
        };
        assert_eq!((c.worker_pid, c.runs, c.worker_id), (42, 10_000, None));
        assert!(parse(&["capacity", "--runs", "5"]).is_err());
        let Command::Report(r) = parse(&["report", "--inputs", "a.json", "b.json"])
            .expect("parses")
            .command
        else {
            panic!("not report");
        };
        assert_eq!(r.inputs.len(), 2);
        assert!(parse(&["report"]).is_err());
        assert!(matches!(
            parse(&["http-hello"]).expect("parses").command,
            Command::HttpHello
        ));
        assert!(matches!(
            parse(&["definition", "--scenario", "fanout"])
                .expect("parses")
                .command,
            Command::Definition(DefinitionArgs {
                scenario: Scenario::Fanout
            })
        ));
    }

    #[test]
    fn reports_are_read_back_from_files() {
        let dir = std::env::temp_dir().join(format!("weft-load-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let m = crate::recorder::Measured {
            histogram: crate::recorder::new_histogram(),
            errors: Default::default(),
            sent: 0,
            elapsed: Duration::from_secs(1),
        };
        let report = Report::Load(LoadReport::new(
            "trivial",
            Plan::Closed { connections: 1 },
            0.0,
            1.0,
            &m,
        ));
        let path = dir.join("r.json");
        write_json(&path, &report).expect("writes");
        assert_eq!(
            read_reports(std::slice::from_ref(&path)).expect("reads"),
            vec![report]
        );
        std::fs::write(&path, "{}").expect("writes");
        assert!(matches!(
            read_reports(&[path]),
            Err(LoadError::NotAReport { .. })
        ));
        assert!(matches!(
            read_reports(&[dir.join("missing.json")]),
            Err(LoadError::File { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
