//! Why a command of `weft-load` could not do its job (as opposed to the
//! errors it measures, which are counted by kind in the report).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Flags that parse but cannot work together; the binary exits 64.
    #[error("{0}")]
    Usage(String),
    /// Setting up the scenario through Weft's API failed.
    #[error("{what}: {message}")]
    Api { what: String, message: String },
    #[error("{what} {}: {source}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a report: {source}", path.display())]
    NotAReport {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("nats: {0}")]
    Nats(String),
    /// A helper child process (the NATS echo, the hello server) failed.
    #[error("child process: {0}")]
    Child(String),
    #[error("{0}")]
    Other(String),
}

impl LoadError {
    pub fn api(what: impl Into<String>, message: impl ToString) -> LoadError {
        LoadError::Api {
            what: what.into(),
            message: message.to_string(),
        }
    }
}
