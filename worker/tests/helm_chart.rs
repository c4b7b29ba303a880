//! The Helm chart agrees with the binaries: `helm/tests/check_chart.py` lints
//! and renders the chart offline with several value sets, validates the
//! manifests against Kubernetes schemas and checks env names and ports against
//! the binaries' `--print-config`; then this test starts the real binaries and
//! GETs every probe and metrics path the chart uses.

use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn binaries() -> (PathBuf, PathBuf) {
    let worker = PathBuf::from(env!("CARGO_BIN_EXE_weft-worker"));
    let coordinator = worker.with_file_name("weft-coordinator");
    assert!(
        coordinator.exists(),
        "{} is missing: build the workspace's binaries first (cargo build --workspace, or run .ci/run)",
        coordinator.display()
    );
    (coordinator, worker)
}

fn checker() -> Command {
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("helm/tests/check_chart.py"))
        .current_dir(repo());
    cmd
}

#[test]
fn the_chart_lints_renders_and_validates_against_the_binaries() {
    let (coordinator, worker) = binaries();
    let out = checker()
        .arg("--coordinator-bin")
        .arg(&coordinator)
        .arg("--worker-bin")
        .arg(&worker)
        .output()
        .expect("python3 runs (install the checks' packages with .ci/install)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "chart checks failed:\n{text}");
    assert!(text.contains("all checks passed"), "{text}");
}

fn get(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn every_path_the_chart_probes_is_served_by_the_real_binaries() {
    let (coordinator, worker) = binaries();
    let out = checker()
        .arg("--facts-json")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let facts: Value = serde_json::from_slice(&out.stdout).expect("facts are JSON");
    let nats = weft_shared::testutil::NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (cport, wport) = (
        weft_shared::testutil::free_port(),
        weft_shared::testutil::free_port(),
    );
    let mut children = vec![
        Command::new(&coordinator)
            .env("WEFT_NATS_URL", nats.url())
            .env("WEFT_HTTP_ADDR", format!("127.0.0.1:{cport}"))
            .env(
                "WEFT_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("c.db").display()),
            )
            .env("WEFT_ADMIN_TOKEN", "helm-chart-test-admin-token-0123")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        Command::new(&worker)
            .env("WEFT_NATS_URL", nats.url())
            .env("WEFT_METRICS_ADDR", format!("127.0.0.1:{wport}"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ];
    for (who, port) in [("coordinator", cport), ("worker", wport)] {
        let paths = facts[who]["paths"].as_array().expect("paths");
        assert!(!paths.is_empty());
        for p in paths {
            let p = p.as_str().unwrap();
            let start = Instant::now();
            let status = loop {
                match get(port, p) {
                    Some(s) if s == 200 || start.elapsed() > Duration::from_secs(10) => break s,
                    _ if start.elapsed() > Duration::from_secs(10) => break 0,
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            };
            assert_eq!(status, 200, "{who} {p}");
        }
    }
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
}
