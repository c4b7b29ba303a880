//! The baselines Weft is judged against, measured with the same driver and
//! report as Weft's own runs:
//!
//! - **NATS request/reply** between two processes through the same server —
//!   the transport's limit: a child process (`weft-load nats-echo`) answers
//!   every request with its payload; the parent sends ~200-byte requests.
//! - **HTTP hello** on the same HTTP stack (axum, hyper, tokio) — the HTTP
//!   limit: a child process (`weft-load http-hello`) serves `GET /hello`; the
//!   parent calls it with the same client as the scenarios.
//!
//! Children are this binary started again in a hidden mode. They print one
//! line on stdout when ready (`ready`, or the port they listen on) and stop
//! when their stdin closes, so they never outlive the parent.

use crate::driver::Op;
use crate::error::LoadError;
use crate::recorder::Outcome;
use bytes::Bytes;
use futures::StreamExt;
use std::borrow::Cow;
use std::future::Future;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// Size of a NATS baseline request, about a run submission's.
pub const PAYLOAD_BYTES: usize = 200;

/// How long a child has to say it is ready.
const CHILD_READY: Duration = Duration::from_secs(15);

/// This binary, started again in a hidden mode.
pub struct Helper {
    child: Child,
    /// Closing it tells the child to stop.
    stdin: Option<ChildStdin>,
    /// The first line the child printed.
    pub ready_line: String,
}

impl Helper {
    /// Starts `current_exe args…` and waits for its first line on stdout.
    pub async fn start(args: &[&str]) -> Result<Helper, LoadError> {
        let exe = std::env::current_exe()
            .map_err(|e| LoadError::Child(format!("cannot find this program: {e}")))?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| LoadError::Child(format!("cannot start {args:?}: {e}")))?;
        let stdin = child.stdin.take();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| LoadError::Child("no stdout".into()))?;
        let mut line = String::new();
        let read =
            tokio::time::timeout(CHILD_READY, BufReader::new(stdout).read_line(&mut line)).await;
        match read {
            Ok(Ok(n)) if n > 0 => Ok(Helper {
                child,
                stdin,
                ready_line: line.trim().to_string(),
            }),
            Ok(Ok(_)) => Err(LoadError::Child(format!(
                "{args:?} exited before it was ready"
            ))),
            Ok(Err(e)) => Err(LoadError::Child(format!("reading from {args:?}: {e}"))),
            Err(_) => Err(LoadError::Child(format!(
                "{args:?} was not ready within {CHILD_READY:?}"
            ))),
        }
    }

    /// Closes the child's stdin and waits for it to exit (killing it after 5 s).
    pub async fn stop(mut self) {
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Completes when stdin reaches its end (the parent closed it or died).
///
/// A plain thread does the blocking read (tokio's stdin is a feature the
/// workspace does not build).
pub fn stdin_closed() -> impl Future<Output = ()> + Send + 'static {
    let (closed, on_close) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 256];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = closed.send(());
    });
    async move {
        let _ = on_close.await;
    }
}

/// `nats-echo`: answers every request on `subject` with its payload until
/// stdin closes. Prints `ready` once subscribed.
pub async fn nats_echo(nats_url: &str, subject: &str) -> Result<(), LoadError> {
    let client = async_nats::connect(nats_url)
        .await
        .map_err(|e| LoadError::Nats(format!("cannot connect to {nats_url}: {e}")))?;
    let mut requests = client
        .subscribe(subject.to_string())
        .await
        .map_err(|e| LoadError::Nats(e.to_string()))?;
    client
        .flush()
        .await
        .map_err(|e| LoadError::Nats(e.to_string()))?;
    println!("ready");
    let stop = stdin_closed();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            message = requests.next() => {
                let Some(message) = message else { break };
                if let Some(reply) = message.reply {
                    if let Err(e) = client.publish(reply, message.payload).await {
                        return Err(LoadError::Nats(format!("reply: {e}")));
                    }
                }
            }
        }
    }
    let _ = client.flush().await;
    Ok(())
}

/// One NATS request/reply, checked to come back intact.
pub struct NatsRequest {
    pub client: async_nats::Client,
    pub subject: async_nats::Subject,
    pub payload: Bytes,
}

impl NatsRequest {
    /// Connects with `timeout` per request.
    pub async fn connect(
        nats_url: &str,
        subject: &str,
        timeout: Duration,
    ) -> Result<NatsRequest, LoadError> {
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(timeout))
            .connect(nats_url)
            .await
            .map_err(|e| LoadError::Nats(format!("cannot connect to {nats_url}: {e}")))?;
        Ok(NatsRequest {
            client,
            subject: async_nats::Subject::from(subject),
            payload: payload(),
        })
    }
}

/// [`PAYLOAD_BYTES`] of JSON-looking text.
pub fn payload() -> Bytes {
    let mut text = String::from(r#"{"input":{"text":""#);
    while text.len() < PAYLOAD_BYTES - 3 {
        text.push('x');
    }
    text.push_str(r#""}}"#);
    Bytes::from(text)
}

impl Op for NatsRequest {
    fn call(&self) -> impl Future<Output = Outcome> + Send {
        let client = self.client.clone();
        let subject = self.subject.clone();
        let payload = self.payload.clone();
        async move {
            let expected = payload.len();
            match client.request(subject, payload).await {
                Ok(reply) if reply.payload.len() == expected => Ok(()),
                Ok(_) => Err(Cow::Borrowed("bad_reply")),
                Err(e) => Err(match e.kind() {
                    async_nats::RequestErrorKind::TimedOut => Cow::Borrowed("timeout"),
                    async_nats::RequestErrorKind::NoResponders => Cow::Borrowed("no_responders"),
                    _ => Cow::Borrowed("nats_request"),
                }),
            }
        }
    }
}

/// `http-hello`: serves `GET /hello` on `127.0.0.1:0`, prints the port, and
/// stops when stdin closes.
pub async fn http_hello() -> Result<(), LoadError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(|e| LoadError::Other(format!("cannot listen: {e}")))?;
    let port = listener
        .local_addr()
        .map_err(|e| LoadError::Other(e.to_string()))?
        .port();
    println!("{port}");
    serve_hello(listener, stdin_closed()).await
}

/// The hello server on `listener` until `shutdown` completes.
pub async fn serve_hello(
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), LoadError> {
    let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| LoadError::Other(format!("hello server: {e}")))
}

/// One `GET /hello`.
pub struct HttpHello {
    pub http: reqwest::Client,
    /// Parsed once, as [`crate::api::SyncRun`]'s.
    pub url: reqwest::Url,
}

impl Op for HttpHello {
    fn call(&self) -> impl Future<Output = Outcome> + Send {
        let request = self.http.get(self.url.clone());
        async move {
            let response = request
                .send()
                .await
                .map_err(|e| crate::api::transport_kind(&e))?;
            let status = response.status();
            if !status.is_success() {
                return Err(crate::api::status_kind("http_", status.as_u16()));
            }
            response
                .bytes()
                .await
                .map(|_| ())
                .map_err(|e| crate::api::transport_kind(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_about_200_bytes() {
        let p = payload();
        assert_eq!(p.len(), PAYLOAD_BYTES);
        assert!(serde_json::from_slice::<serde_json::Value>(&p).is_ok());
    }

    #[tokio::test]
    async fn hello_answers() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binds");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_hello(listener, async move {
            let _ = stopped.await;
        }));
        let hello = HttpHello {
            http: crate::api::http_client(Duration::from_secs(5)).expect("client"),
            url: format!("http://127.0.0.1:{port}/hello").parse().unwrap(),
        };
        assert_eq!(hello.call().await, Ok(()));
        let missing = HttpHello {
            url: format!("http://127.0.0.1:{port}/nope").parse().unwrap(),
            ..hello
        };
        assert_eq!(missing.call().await, Err("http_404".into()));
        let _ = stop.send(());
        server.await.expect("joins").expect("serves");
    }
}
