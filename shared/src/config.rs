//! Layered configuration: defaults → TOML file → `WEFT_` environment → CLI flags.
//!
//! Each binary has its own config struct (serde, with defaults); this module
//! merges the layers and reports a bad value clearly. Binaries exit with
//! [`EXIT_CONFIG`] (64, `EX_USAGE`) when it fails, and print the effective
//! config with `--print-config`.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

/// Exit code for bad configuration (`EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl From<String> for ConfigError {
    fn from(s: String) -> Self {
        ConfigError(s)
    }
}

/// Merges the layers into `T`. `cli` holds only the flags given (serialize
/// `None` fields away with `skip_serializing_if`).
pub fn load<T, C>(file: Option<&Path>, cli: &C) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned + Default,
    C: Serialize,
{
    let mut fig = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError(format!(
                "config file {} does not exist",
                path.display()
            )));
        }
        fig = fig.merge(Toml::file(path));
    }
    // Only the env vars this binary knows: the coordinator and the workers
    // may share an environment, and each ignores the other's settings.
    let known: Vec<String> = match serde_json::to_value(T::default()) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        _ => Vec::new(),
    };
    fig = fig
        .merge(
            Env::prefixed("WEFT_")
                .filter(move |k| known.iter().any(|n| k.as_str().eq_ignore_ascii_case(n))),
        )
        .merge(Serialized::defaults(cli));
    fig.extract().map_err(|e| {
        let mut msg = e.to_string();
        if let Some(src) = e.metadata.as_ref().map(|m| m.name.to_string()) {
            msg = format!("{msg} (from {src})");
        }
        ConfigError(msg)
    })
}

/// For a binary's `main`: loads the config, applies `check`, and on failure
/// prints `<binary>: <error>` and exits with [`EXIT_CONFIG`].
pub fn load_or_exit<T, C>(
    binary: &str,
    file: Option<&Path>,
    cli: &C,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> T
where
    T: Serialize + DeserializeOwned + Default,
    C: Serialize,
{
    match load::<T, C>(file, cli).and_then(|c| check(&c).map(|_| c).map_err(ConfigError)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{binary}: {e}");
            std::process::exit(EXIT_CONFIG);
        }
    }
}

/// The effective config as TOML-like text for `--print-config`. Settings
/// whose name ends in `key(s)`, `secret(s)`, `password(s)` or `token(s)`
/// (`encryption_key`, `admin_token`) print as `"[redacted]"` when set;
/// `api_key_rate_limit_per_s` is not a secret and prints.
pub fn render<T: Serialize>(config: &T) -> String {
    let secret = |k: &str| {
        let last = k.rsplit('_').next().unwrap_or(k);
        let last = last.strip_suffix('s').unwrap_or(last);
        ["key", "secret", "password", "token"].contains(&last)
    };
    match serde_json::to_value(config) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| {
                let empty = v.as_str() == Some("") || v.as_array().is_some_and(|a| a.is_empty());
                if secret(&k) && !empty {
                    format!("{k} = \"[redacted]\"\n")
                } else {
                    format!("{k} = {v}\n")
                }
            })
            .collect(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Cfg {
        a: u32,
        b: String,
        c: bool,
    }
    impl Default for Cfg {
        fn default() -> Self {
            Cfg {
                a: 1,
                b: "x".into(),
                c: false,
            }
        }
    }
    #[derive(Serialize, Default)]
    struct Cli {
        #[serde(skip_serializing_if = "Option::is_none")]
        a: Option<u32>,
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile_dir();
        let file = dir.join("c.toml");
        std::fs::write(&file, "a = 5\nb = \"file\"\n").unwrap();
        let c: Cfg = load(Some(&file), &Cli::default()).unwrap();
        assert_eq!(
            c,
            Cfg {
                a: 5,
                b: "file".into(),
                c: false
            }
        );
        let c: Cfg = load(Some(&file), &Cli { a: Some(9) }).unwrap();
        assert_eq!(c.a, 9);
        std::fs::write(&file, "a = \"many\"\n").unwrap();
        let err = load::<Cfg, _>(Some(&file), &Cli::default()).unwrap_err();
        assert!(err.to_string().contains("a"), "{err}");
        assert!(load::<Cfg, _>(Some(&dir.join("missing.toml")), &Cli::default()).is_err());
        // A typo in the file is an error, not a silent default.
        std::fs::write(&file, "aa = 5\n").unwrap();
        assert!(load::<Cfg, _>(Some(&file), &Cli::default()).is_err());
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("weft-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
