//! Model calls over cleartext HTTP/2 with prior knowledge (h2c), straight on
//! hyper's HTTP/2 client.
//!
//! With `model_http2_prior_knowledge`, thousands of AI runs wait on a slow
//! model at once over one connection. Through reqwest each waiting call held
//! about 9 KiB — its client stack's boxed futures (pool checkout and connect
//! racing, redirect and retry layers), the retry layer's copy of the request,
//! two header maps — measured with heaptrack on the capacity probe. Here a
//! waiting call is its HTTP/2 stream and the small future that awaits it.
//!
//! One connection per origin (scheme, host, port), opened on first use by
//! one caller while the others wait for it, and opened again once it has
//! closed (the server went away, or sent GOAWAY). Connections are driven on
//! the worker's tokio runtime, not on the actor thread that happened to
//! open them. https model URLs still go through reqwest, where ALPN picks
//! HTTP/2 by itself.

use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2::SendRequest;
use hyper::header::{HeaderMap, CONTENT_LENGTH};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;

type Sender = SendRequest<Full<bytes::Bytes>>;
/// One origin's connection, if open; locked while a caller opens it.
type Slot = Arc<tokio::sync::Mutex<Option<Sender>>>;

/// While calls wait, the connection is pinged this often, and closed when a
/// ping goes unanswered this long.
const KEEP_ALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// A connect that takes longer is given up (callers waiting on it are bound
/// by their own deadlines; this bounds the attempt itself).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a call failed.
#[derive(Debug)]
pub enum H2cError {
    /// Connecting, or the request did not get an answer (worth another
    /// attempt).
    Send(String),
    /// The answer's body could not be read to the end (worth another attempt).
    Read(String),
    /// The answer's body is larger than the limit.
    TooLarge,
}

/// An answer: status, headers and the whole body.
pub struct H2cResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: bytes::Bytes,
}

/// The h2c client: a connection per origin, shared by every call to it.
pub struct H2c {
    runtime: Handle,
    /// Per origin, the connection (if open); the async lock is held while
    /// one caller connects.
    conns: Mutex<HashMap<String, Slot>>,
}

impl H2c {
    /// Connections will be driven on `runtime`.
    pub fn new(runtime: Handle) -> H2c {
        H2c {
            runtime,
            conns: Mutex::new(HashMap::new()),
        }
    }

    /// POSTs `body` to `uri` (an absolute `http://` URI) with `headers`, and
    /// reads the answer up to `limit` bytes.
    pub async fn post(
        &self,
        uri: Uri,
        headers: HeaderMap,
        body: bytes::Bytes,
        limit: usize,
    ) -> Result<H2cResponse, H2cError> {
        let mut sender = self.sender(&uri).await?;
        let mut req = Request::post(uri)
            .body(Full::new(body))
            .map_err(|e| H2cError::Send(e.to_string()))?;
        *req.headers_mut() = headers;
        // Beyond the server's stream limit, hyper queues the request. A call
        // lost to a connection closing under it fails retryable and the
        // node's retry policy decides; it is not resent here (holding the
        // request for that would cost every waiting call a copy of it).
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| H2cError::Send(super::api::error_chain(&e)))?;
        let (parts, body) = resp.into_parts();
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(H2cError::TooLarge);
        }
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    H2cError::TooLarge
                } else {
                    H2cError::Read(super::api::error_chain(&*e))
                }
            })?
            .to_bytes();
        Ok(H2cResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// The slot of `uri`'s origin (`host:port`).
    fn slot(&self, uri: &Uri) -> Result<(Slot, String, u16), H2cError> {
        if uri.scheme_str() != Some("http") {
            return Err(H2cError::Send(format!(
                "h2c needs an http:// URL, not {uri}"
            )));
        }
        let host = uri
            .host()
            .ok_or_else(|| H2cError::Send(format!("{uri} has no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(80);
        let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        let slot = conns.entry(format!("{host}:{port}")).or_default().clone();
        Ok((slot, host, port))
    }

    /// The open connection to `uri`'s origin, or a new one.
    async fn sender(&self, uri: &Uri) -> Result<Sender, H2cError> {
        let (slot, host, port) = self.slot(uri)?;
        let mut conn = slot.lock().await;
        if let Some(s) = conn.as_ref() {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let connect = async move {
            let tcp = tokio::time::timeout(
                CONNECT_TIMEOUT,
                tokio::net::TcpStream::connect((host.as_str(), port)),
            )
            .await
            .map_err(|_| H2cError::Send(format!("connecting to {host}:{port}: timed out")))?
            .map_err(|e| H2cError::Send(format!("connecting to {host}:{port}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let (sender, connection) =
                hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    // A server gone without a word (no FIN, no GOAWAY) is
                    // found by an unanswered ping, not by every waiting
                    // call's deadline.
                    .keep_alive_interval(KEEP_ALIVE_INTERVAL)
                    .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
                    .handshake(TokioIo::new(tcp))
                    .await
                    .map_err(|e| H2cError::Send(super::api::error_chain(&e)))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "h2c model connection ended");
                }
            });
            Ok::<_, H2cError>(sender)
        };
        let sender = self
            .runtime
            .spawn(connect)
            .await
            .map_err(|e| H2cError::Send(format!("connecting: {e}")))??;
        *conn = Some(sender.clone());
        Ok(sender)
    }
}
