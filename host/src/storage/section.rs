//! `[storage]` of the serve config: which backend keeps the agents' KV data.

use serde::Deserialize;
use std::time::Duration;

use super::{RedisSettings, StorageBackend};

/// The environment variable that gives the Redis URL when the config does not.
pub const REDIS_URL_ENV: &str = "CHIMERA_REDIS_URL";

/// `[storage]`: `backend = "embedded"` (the default: `kv.redb` in the data
/// directory) or `"redis"` with `redis_url` (or `$CHIMERA_REDIS_URL`),
/// `key_prefix`, `pool_size` and `response_timeout_ms`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// `embedded` or `redis`.
    #[serde(default)]
    pub backend: BackendKind,
    /// `redis://[user:password@]host:port/db`.
    pub redis_url: Option<String>,
    /// Prepended to every Redis key (default `chimera:`).
    pub key_prefix: Option<String>,
    /// Connections to Redis (default 4).
    pub pool_size: Option<usize>,
    /// How long one Redis command may take before it fails (default 2000).
    pub response_timeout_ms: Option<u64>,
}

/// `[storage] backend`.
#[derive(Debug, Clone, Copy, Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// `kv.redb` in the data directory.
    #[default]
    Embedded,
    /// A Redis server.
    Redis,
}

impl StorageSection {
    /// The backend this section describes, with `env_url` (the value of
    /// `$CHIMERA_REDIS_URL`) standing in for a missing `redis_url`.
    pub fn backend(&self, env_url: Option<String>) -> Result<StorageBackend, String> {
        let redis_only = [
            ("redis_url", self.redis_url.is_some()),
            ("key_prefix", self.key_prefix.is_some()),
            ("pool_size", self.pool_size.is_some()),
            ("response_timeout_ms", self.response_timeout_ms.is_some()),
        ];
        if self.backend == BackendKind::Embedded {
            if let Some((key, _)) = redis_only.iter().find(|(_, set)| *set) {
                return Err(format!("[storage] {key} is set, but backend is \"embedded\": add backend = \"redis\""));
            }
            return Ok(StorageBackend::Embedded);
        }
        let url = self.redis_url.clone().or(env_url.filter(|u| !u.is_empty())).ok_or_else(|| {
            format!("[storage] backend = \"redis\" needs redis_url = \"redis://HOST:PORT/DB\" (or ${REDIS_URL_ENV})")
        })?;
        if !(url.starts_with("redis://") || url.starts_with("unix://") || url.starts_with("redis+unix://")) {
            return Err("[storage] redis_url must start with redis:// (or unix:// for a socket)".into());
        }
        let mut settings = RedisSettings::new(url);
        if let Some(prefix) = &self.key_prefix {
            if prefix.len() > 64 || prefix.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(
                    "[storage] key_prefix must be at most 64 characters, with no spaces or control characters".into()
                );
            }
            settings.key_prefix = prefix.clone();
        }
        match self.pool_size {
            Some(n) if !(1..=64).contains(&n) => return Err(format!("[storage] pool_size = {n} must be 1 to 64")),
            Some(n) => settings.pool_size = n,
            None => {}
        }
        match self.response_timeout_ms {
            Some(ms) if !(10..=60_000).contains(&ms) => {
                return Err(format!("[storage] response_timeout_ms = {ms} must be 10 to 60000"))
            }
            Some(ms) => settings.response_timeout = Duration::from_millis(ms),
            None => {}
        }
        Ok(StorageBackend::Redis(settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml: &str) -> StorageSection {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn embedded_is_the_default_and_redis_needs_a_url() {
        assert_eq!(section("").backend(None), Ok(StorageBackend::Embedded));
        assert_eq!(
            section("backend = \"redis\"").backend(None).unwrap_err(),
            "[storage] backend = \"redis\" needs redis_url = \"redis://HOST:PORT/DB\" (or $CHIMERA_REDIS_URL)"
        );
        let from_env = section("backend = \"redis\"").backend(Some("redis://127.0.0.1:6400/0".into())).unwrap();
        assert_eq!(from_env, StorageBackend::Redis(RedisSettings::new("redis://127.0.0.1:6400/0")));
        // The file's URL wins over the environment's.
        let both = section("backend = \"redis\"\nredis_url = \"redis://a:1/0\"").backend(Some("redis://b:2/0".into()));
        assert_eq!(both.unwrap(), StorageBackend::Redis(RedisSettings::new("redis://a:1/0")));
    }

    #[test]
    fn each_setting_is_checked_and_redis_settings_need_the_redis_backend() {
        let err = |t: &str| section(t).backend(None).unwrap_err();
        assert_eq!(
            err("redis_url = \"redis://x/0\""),
            "[storage] redis_url is set, but backend is \"embedded\": add backend = \"redis\""
        );
        let redis = "backend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379/0\"\n";
        assert_eq!(err(&format!("{redis}pool_size = 0")), "[storage] pool_size = 0 must be 1 to 64");
        assert_eq!(
            err(&format!("{redis}response_timeout_ms = 1")),
            "[storage] response_timeout_ms = 1 must be 10 to 60000"
        );
        assert!(err(&format!("{redis}key_prefix = \"a b\"")).contains("key_prefix"));
        assert!(err("backend = \"redis\"\nredis_url = \"http://x\"").contains("redis://"));
        assert!(toml::from_str::<StorageSection>("backend = \"postgres\"").is_err());
        let ok =
            section(&format!("{redis}key_prefix = \"prod:\"\npool_size = 8\nresponse_timeout_ms = 500")).backend(None);
        let StorageBackend::Redis(s) = ok.unwrap() else { panic!("redis") };
        assert_eq!((s.key_prefix.as_str(), s.pool_size, s.response_timeout), ("prod:", 8, Duration::from_millis(500)));
    }

    #[test]
    fn the_settings_never_print_a_password() {
        let s = RedisSettings::new("redis://user:s3cret@127.0.0.1:6379/0");
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cret") && shown.contains("redis://***@127.0.0.1:6379/0"), "{shown}");
    }
}
