//! A workflow's endpoint configuration: which calls it answers (`mode`), how
//! long a synchronous call waits, how long an asynchronous run may take, and
//! where an asynchronous run's result is pushed.
//!
//! The draft's configuration is edited with `PUT /v1/workflows/{id}/endpoint`
//! and takes effect on deploy: each version keeps the configuration it was
//! deployed with. The endpoint itself (`POST /v1/workflows/{id}/runs`) never
//! changes.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The longest sync timeout (5 min).
pub const SYNC_TIMEOUT_MAX_MS: u64 = 300_000;
/// The longest async timeout (10 min); `null` means none.
pub const ASYNC_TIMEOUT_MAX_MS: u64 = 600_000;
/// The shortest timeout users may set (1 min); the coordinator's
/// `endpoint_min_timeout_ms` can lower it (tests do).
pub const TIMEOUT_MIN_MS: u64 = 60_000;
/// Both timeouts by default (3 min).
pub const DEFAULT_TIMEOUT_MS: u64 = 180_000;
/// Longest push callback URL.
pub const MAX_URL_LEN: usize = 2048;
/// Longest push access token.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Which calls a deployed workflow answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointMode {
    /// `?mode=sync` and `?mode=async` (the default).
    #[default]
    Both,
    /// Only `?mode=sync`: the caller waits for the result.
    Sync,
    /// Only `?mode=async`: 202 and a status URL to poll, and the result
    /// pushed to the callback URL when push is configured.
    Async,
}

impl EndpointMode {
    pub const ALL: [&'static str; 3] = ["both", "sync", "async"];

    pub fn parse(s: &str) -> Option<EndpointMode> {
        match s {
            "both" => Some(EndpointMode::Both),
            "sync" => Some(EndpointMode::Sync),
            "async" => Some(EndpointMode::Async),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EndpointMode::Both => "both",
            EndpointMode::Sync => "sync",
            EndpointMode::Async => "async",
        }
    }

    /// Whether a call in this mode (`sync` true, `async` false) is answered.
    pub fn allows(self, sync: bool) -> bool {
        match self {
            EndpointMode::Both => true,
            EndpointMode::Sync => sync,
            EndpointMode::Async => !sync,
        }
    }

    /// The call modes answered, as `?mode=` spells them.
    pub fn enabled(self) -> &'static [&'static str] {
        match self {
            EndpointMode::Both => &["sync", "async"],
            EndpointMode::Sync => &["sync"],
            EndpointMode::Async => &["async"],
        }
    }
}

/// The endpoint configuration as stored (JSON), secrets apart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EndpointSettings {
    pub mode: EndpointMode,
    /// How long a synchronous call waits for its result.
    pub sync_timeout_ms: u64,
    /// Caps an asynchronous run's deadline (with the workflow's own
    /// timeout, whichever is sooner); `None`: only the workflow timeout.
    pub async_timeout_ms: Option<u64>,
    /// Where an asynchronous run's result is pushed; `None`: no push.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_url: Option<String>,
}

impl Default for EndpointSettings {
    fn default() -> Self {
        EndpointSettings {
            mode: EndpointMode::Both,
            sync_timeout_ms: DEFAULT_TIMEOUT_MS,
            async_timeout_ms: Some(DEFAULT_TIMEOUT_MS),
            push_url: None,
        }
    }
}

/// A draft's or a version's endpoint: the settings and the sealed push
/// access token (set exactly when `settings.push_url` is).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub settings: EndpointSettings,
    /// Ciphertext (see [`crate::secrets`]); never leaves the coordinator.
    pub push_token: Option<String>,
}

impl Endpoint {
    /// Whether asynchronous runs are pushed.
    pub fn push(&self) -> bool {
        self.settings.push_url.is_some() && self.push_token.is_some()
    }
}

/// What a deployed version's runs need of its endpoint, on the hot path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointRuntime {
    pub mode: EndpointMode,
    pub sync_timeout_ms: u64,
    pub async_timeout_ms: Option<u64>,
    pub push: bool,
}

impl From<&Endpoint> for EndpointRuntime {
    fn from(e: &Endpoint) -> Self {
        EndpointRuntime {
            mode: e.settings.mode,
            sync_timeout_ms: e.settings.sync_timeout_ms,
            async_timeout_ms: e.settings.async_timeout_ms,
            push: e.push(),
        }
    }
}

impl EndpointRuntime {
    /// A run's timeout: the workflow's, capped for an asynchronous run by
    /// the async timeout.
    pub fn run_timeout_ms(&self, workflow_timeout_ms: u64, sync: bool) -> u64 {
        match (sync, self.async_timeout_ms) {
            (false, Some(a)) => a.min(workflow_timeout_ms),
            _ => workflow_timeout_ms,
        }
    }
}

/// A field that fails validation: which, why, and the allowed values.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
    pub details: Value,
}

/// Checks a timeout against `min_ms..=max_ms`.
pub fn check_timeout(
    field: &'static str,
    value: u64,
    min_ms: u64,
    max_ms: u64,
) -> Result<(), FieldError> {
    if (min_ms..=max_ms).contains(&value) {
        return Ok(());
    }
    Err(FieldError {
        field,
        message: format!(
            "{field} {value} is out of range: allowed {min_ms} to {max_ms} ms ({} to {} s)",
            secs(min_ms),
            secs(max_ms)
        ),
        details: json!({"field": field, "value": value, "min": min_ms, "max": max_ms}),
    })
}

/// Milliseconds as seconds, without a needless fraction (`60`, `0.1`).
fn secs(ms: u64) -> String {
    (ms as f64 / 1000.0).to_string()
}

/// Checks a mode name.
pub fn check_mode(value: &str) -> Result<EndpointMode, FieldError> {
    EndpointMode::parse(value).ok_or_else(|| FieldError {
        field: "mode",
        message: format!(
            "mode `{value}` is not one of {}",
            EndpointMode::ALL.join(", ")
        ),
        details: json!({"field": "mode", "value": value, "allowed": EndpointMode::ALL}),
    })
}

/// Checks the timeouts of `s` (`min_ms`: the shortest allowed).
pub fn check_settings(s: &EndpointSettings, min_ms: u64) -> Result<(), FieldError> {
    check_timeout(
        "sync_timeout_ms",
        s.sync_timeout_ms,
        min_ms,
        SYNC_TIMEOUT_MAX_MS,
    )?;
    if let Some(a) = s.async_timeout_ms {
        check_timeout("async_timeout_ms", a, min_ms, ASYNC_TIMEOUT_MAX_MS)?;
    }
    Ok(())
}

/// Checks a push callback URL: absolute `http` or `https` with a host.
pub fn check_push_url(url: &str, allow_private: bool) -> Result<(), FieldError> {
    let bad = |why: &str| FieldError {
        field: "push.url",
        message: format!("push.url {why}"),
        details: json!({"field": "push.url"}),
    };
    if url.len() > MAX_URL_LEN {
        return Err(bad(&format!("is longer than {MAX_URL_LEN} characters")));
    }
    let parsed =
        reqwest::Url::parse(url).map_err(|e| bad(&format!("is not an absolute URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("must be an http or https URL"));
    }
    let host = match parsed.host_str() {
        None | Some("") => return Err(bad("has no host")),
        Some(h) => h.trim_start_matches('[').trim_end_matches(']'),
    };
    let internal = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => is_internal(ip),
        Err(_) => {
            let d = host.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
    };
    if internal && !allow_private {
        return Err(bad(
            "points at a loopback, private or link-local address; the coordinator will not post results inside its own network unless push_allow_private_targets is set",
        ));
    }
    Ok(())
}

/// An address inside the coordinator's own network, which push does not
/// post to unless `push_allow_private_targets`: loopback, private, unique
/// local, link-local (cloud metadata), shared, unspecified, multicast.
pub fn is_internal(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(ip) => internal_v4(ip),
        std::net::IpAddr::V6(ip) => {
            ip.to_ipv4_mapped().is_some_and(internal_v4)
                || ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                // fc00::/7 (unique local) and fe80::/10 (link-local).
                || (ip.segments()[0] & 0xfe00) == 0xfc00
                || (ip.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Loopback, private, link-local (cloud metadata), shared, unspecified,
/// broadcast or multicast.
fn internal_v4(ip: std::net::Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || (a == 100 && (64..128).contains(&b))
}

/// Checks a push access token: 1 to 4096 visible ASCII characters (it is
/// sent as `Authorization: Bearer <token>`). The message never holds it.
pub fn check_token(token: &str) -> Result<(), FieldError> {
    if token.is_empty()
        || token.len() > MAX_TOKEN_LEN
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(FieldError {
            field: "push.access_token",
            message: format!(
                "push.access_token must be 1 to {MAX_TOKEN_LEN} visible ASCII characters (no spaces)"
            ),
            details: json!({"field": "push.access_token"}),
        });
    }
    Ok(())
}

/// A new signing secret: `whsec_` and 32 random bytes in hex. The whole
/// string, as bytes, is the HMAC key.
pub fn new_signing_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("whsec_{}", hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_gate_calls() {
        assert!(EndpointMode::Both.allows(true) && EndpointMode::Both.allows(false));
        assert!(EndpointMode::Sync.allows(true) && !EndpointMode::Sync.allows(false));
        assert!(!EndpointMode::Async.allows(true) && EndpointMode::Async.allows(false));
        for m in EndpointMode::ALL {
            assert_eq!(EndpointMode::parse(m).unwrap().as_str(), m);
        }
        assert_eq!(check_mode("poll").unwrap_err().field, "mode");
    }

    #[test]
    fn timeouts_are_bounded_and_name_the_field() {
        let mut s = EndpointSettings::default();
        assert!(check_settings(&s, TIMEOUT_MIN_MS).is_ok());
        s.sync_timeout_ms = 59_000;
        let e = check_settings(&s, TIMEOUT_MIN_MS).unwrap_err();
        assert_eq!(e.field, "sync_timeout_ms");
        assert!(e.message.contains("60 to 300 s"), "{}", e.message);
        s.sync_timeout_ms = 300_001;
        assert!(check_settings(&s, TIMEOUT_MIN_MS).is_err());
        s.sync_timeout_ms = 300_000;
        s.async_timeout_ms = Some(600_001);
        assert_eq!(
            check_settings(&s, TIMEOUT_MIN_MS).unwrap_err().field,
            "async_timeout_ms"
        );
        s.async_timeout_ms = None;
        assert!(check_settings(&s, TIMEOUT_MIN_MS).is_ok());
        s.sync_timeout_ms = 100;
        assert!(check_settings(&s, 100).is_ok(), "a lowered floor");
    }

    #[test]
    fn the_async_timeout_caps_only_async_runs() {
        let mut rt = EndpointRuntime::from(&Endpoint::default());
        rt.async_timeout_ms = Some(500);
        assert_eq!(rt.run_timeout_ms(10_000, false), 500);
        assert_eq!(rt.run_timeout_ms(300, false), 300);
        assert_eq!(rt.run_timeout_ms(10_000, true), 10_000);
        rt.async_timeout_ms = None;
        assert_eq!(rt.run_timeout_ms(10_000, false), 10_000);
    }

    #[test]
    fn urls_and_tokens() {
        assert!(check_push_url("https://hooks.example/weft?x=1", false).is_ok());
        assert!(check_push_url("https://203.0.113.7/cb", false).is_ok());
        for internal in [
            "http://127.0.0.1:9/cb",
            "http://localhost/cb",
            "http://api.localhost./cb",
            "http://10.1.2.3/cb",
            "http://192.168.0.1/cb",
            "http://169.254.169.254/latest/meta-data",
            "http://100.64.0.1/cb",
            "http://[::1]/cb",
            "http://[fd00::1]/cb",
            "http://[fe80::1]/cb",
            "http://[::ffff:10.0.0.1]/cb",
            "http://0.0.0.0/cb",
        ] {
            assert!(check_push_url(internal, false).is_err(), "{internal}");
            assert!(check_push_url(internal, true).is_ok(), "{internal}");
        }
        assert!(check_push_url("ftp://example/cb", true).is_err());
        assert!(check_push_url("/relative", true).is_err());
        assert!(check_token("abc.DEF-123_~").is_ok());
        let e = check_token("has space").unwrap_err();
        assert!(!e.message.contains("has space"));
        assert!(check_token("").is_err());
        let s = new_signing_secret();
        assert!(s.starts_with("whsec_") && s.len() == 6 + 64);
        assert_ne!(s, new_signing_secret());
    }

    #[test]
    fn stored_settings_round_trip_and_fill_defaults() {
        let s = EndpointSettings {
            mode: EndpointMode::Async,
            sync_timeout_ms: 60_000,
            async_timeout_ms: None,
            push_url: Some("https://x.example/cb".into()),
        };
        let back: EndpointSettings =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        let partial: EndpointSettings = serde_json::from_str(r#"{"mode":"sync"}"#).unwrap();
        assert_eq!(partial.sync_timeout_ms, DEFAULT_TIMEOUT_MS);
        assert_eq!(partial.async_timeout_ms, Some(DEFAULT_TIMEOUT_MS));
    }
}
