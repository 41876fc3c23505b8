//! Secrets the host holds for agents and never shows them.
//!
//! The host config names each secret and where its value comes from (an
//! environment variable or a file on the host); policies never hold a value,
//! only a secret's name and where it may go (a header the host adds to
//! requests that match one outbound-http allow rule). The agent cannot read
//! a value through any interface, and the host writes values nowhere: not
//! in the journal, task records, logs, metrics, audit output or error
//! messages, which name a secret only by its name.

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest secret value accepted, in bytes.
pub const MAX_SECRET_BYTES: usize = 8 << 10;

/// The host's secrets by name. Cheap to clone; `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct Secrets {
    values: Arc<HashMap<String, SecretString>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets").field("names", &self.names()).finish_non_exhaustive()
    }
}

/// Why a secret could not be defined. Messages name the secret, the
/// variable or the file, never the value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The name is not 1–64 characters of `a-z A-Z 0-9 - _ .`.
    #[error("secret name {0:?} is not valid; use 1-64 characters from a-z, A-Z, 0-9, '-', '_', '.'")]
    BadName(String),
    /// Neither or both of `env` and `file`.
    #[error("secret `{0}`: give exactly one of env = \"VARIABLE\" or file = \"PATH\"")]
    NoSource(String),
    /// The environment variable is not set (or not UTF-8).
    #[error(
        "secret `{name}`: the environment variable {var} is not set (or not UTF-8); set it before starting the host"
    )]
    MissingEnv {
        /// The secret.
        name: String,
        /// The variable.
        var: String,
    },
    /// The file cannot be read.
    #[error("secret `{name}`: cannot read {path}: {reason}")]
    File {
        /// The secret.
        name: String,
        /// The file.
        path: String,
        /// Why not.
        reason: String,
    },
    /// The value is empty, too long, or holds bytes no HTTP header may carry.
    #[error("secret `{name}`: the value {problem}")]
    BadValue {
        /// The secret.
        name: String,
        /// What is wrong with it (never the value).
        problem: String,
    },
}

impl Secrets {
    /// No secrets.
    pub fn new() -> Secrets {
        Secrets::default()
    }

    /// Adds (or replaces) the secret `name`. The value must be 1 to
    /// [`MAX_SECRET_BYTES`] bytes of visible ASCII, spaces or tabs (what an
    /// HTTP header value may hold).
    pub fn insert(&mut self, name: &str, value: impl Into<String>) -> Result<(), SecretError> {
        check_secret_name(name)?;
        let value: SecretString = value.into().into();
        check_value(name, value.expose_secret())?;
        Arc::make_mut(&mut self.values).insert(name.to_string(), value);
        Ok(())
    }

    /// Whether the secret `name` is defined.
    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The names defined, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.values.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The value, for the host code that sends it (never for an agent).
    pub(crate) fn get(&self, name: &str) -> Option<&SecretString> {
        self.values.get(name)
    }

    /// Reads every secret `sources` names; relative files are taken from `base`.
    pub fn read(sources: &BTreeMap<String, SecretSource>, base: &Path) -> Result<Secrets, SecretError> {
        let mut secrets = Secrets::new();
        for (name, source) in sources {
            check_secret_name(name)?;
            let value = match (&source.env, &source.file) {
                (Some(var), None) => {
                    std::env::var(var).map_err(|_| SecretError::MissingEnv { name: name.clone(), var: var.clone() })?
                }
                (None, Some(file)) => {
                    let path = base.join(file);
                    let bad = |reason: String| SecretError::File {
                        name: name.clone(),
                        path: path.display().to_string(),
                        reason,
                    };
                    let len = std::fs::metadata(&path).map_err(|e| bad(e.to_string()))?.len();
                    // Checked before reading: a secret file is small.
                    if len > MAX_SECRET_BYTES as u64 + 2 {
                        return Err(bad(format!("it is {len} bytes; a secret is at most {MAX_SECRET_BYTES}")));
                    }
                    let text = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
                    let text = String::from_utf8(text).map_err(|_| bad("it is not UTF-8 text".into()))?;
                    // One trailing newline is how files end, not part of the value.
                    let trimmed = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t));
                    trimmed.map(str::to_string).unwrap_or(text)
                }
                _ => return Err(SecretError::NoSource(name.clone())),
            };
            secrets.insert(name, value)?;
        }
        Ok(secrets)
    }
}

/// `[secrets.NAME]` in the host config: where the value comes from.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    /// An environment variable of the host process.
    pub env: Option<String>,
    /// A file on the host (one trailing newline is dropped).
    pub file: Option<PathBuf>,
}

fn check_secret_name(name: &str) -> Result<(), SecretError> {
    crate::policy::check_name("secrets", name).map_err(|_| SecretError::BadName(name.to_string()))
}

fn check_value(name: &str, value: &str) -> Result<(), SecretError> {
    let problem = if value.is_empty() {
        "is empty".to_string()
    } else if value.len() > MAX_SECRET_BYTES {
        format!("is {} bytes; a secret is at most {MAX_SECRET_BYTES}", value.len())
    } else if !value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        "holds a control character or a non-ASCII byte, which no HTTP header may carry".to_string()
    } else {
        return Ok(());
    };
    Err(SecretError::BadValue { name: name.to_string(), problem })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALUE: &str = "sk-test-4b1d9e2f";

    #[test]
    fn values_come_from_the_environment_or_a_file_and_never_show() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), format!("{VALUE}\n")).unwrap();
        let var = "CHIMERA_SECRETS_TEST_VALUE";
        std::env::set_var(var, VALUE);
        let sources = BTreeMap::from([
            ("from-env".to_string(), SecretSource { env: Some(var.into()), file: None }),
            ("from-file".to_string(), SecretSource { env: None, file: Some("key".into()) }),
        ]);
        let secrets = Secrets::read(&sources, dir.path()).unwrap();
        assert_eq!(secrets.get("from-env").unwrap().expose_secret(), VALUE);
        assert_eq!(secrets.get("from-file").unwrap().expose_secret(), VALUE);
        assert_eq!(secrets.names(), ["from-env", "from-file"]);
        let shown = format!("{secrets:?} {:?}", secrets.get("from-env"));
        assert!(!shown.contains(VALUE) && shown.contains("from-env"), "{shown}");
    }

    #[test]
    fn bad_definitions_name_the_secret_not_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let read = |name: &str, source: SecretSource| {
            Secrets::read(&BTreeMap::from([(name.to_string(), source)]), dir.path()).unwrap_err()
        };
        let env = |v: &str| SecretSource { env: Some(v.into()), file: None };
        assert_eq!(
            read("k", env("CHIMERA_SECRETS_TEST_UNSET")),
            SecretError::MissingEnv { name: "k".into(), var: "CHIMERA_SECRETS_TEST_UNSET".into() }
        );
        assert_eq!(read("k", SecretSource { env: None, file: None }), SecretError::NoSource("k".into()));
        assert_eq!(read("a b", env("X")), SecretError::BadName("a b".into()));
        let missing = read("k", SecretSource { env: None, file: Some("absent".into()) }).to_string();
        assert!(missing.starts_with("secret `k`: cannot read ") && missing.contains("absent"), "{missing}");
        std::fs::write(dir.path().join("big"), vec![b'a'; MAX_SECRET_BYTES + 10]).unwrap();
        let big = read("k", SecretSource { env: None, file: Some("big".into()) }).to_string();
        assert!(big.contains("a secret is at most 8192"), "{big}");
        let mut secrets = Secrets::new();
        for (value, problem) in [
            ("", "is empty"),
            ("line\r\nX-Injected: 1", "holds a control character"),
            ("caf\u{e9}", "holds a control character or a non-ASCII byte"),
        ] {
            let e = secrets.insert("k", value).unwrap_err().to_string();
            assert!(e.starts_with(&format!("secret `k`: the value {problem}")), "{e}");
            assert!(value.is_empty() || !e.contains(value), "{e}");
        }
        assert!(!secrets.contains("k"));
    }
}
