//! Storage behind traits: [`KvBackend`] holds the agents' key-value data
//! (the embedded default is [`RedbKv`]); the scheduler's task store is
//! [`TaskStore`](crate::scheduler::TaskStore). Both are async, fallible and
//! shaped for a networked backend: every call may fail with
//! [`KvStoreError::Unavailable`], and none blocks an async worker thread.

mod redb_file;
mod redb_kv;
#[cfg(feature = "redis")]
mod redis_kv;
#[cfg(feature = "redis")]
pub(crate) mod redis_pool;
mod section;

pub(crate) use redb_file::open_database;

pub use redb_kv::RedbKv;
#[cfg(feature = "redis")]
pub use redis_kv::RedisKv;
pub use section::{BackendKind, StorageSection, REDIS_URL_ENV};

use crate::cpu::CpuMeter;
use std::time::Duration;

/// Where a host keeps the agents' KV data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageBackend {
    /// One redb file in the data directory (`kv.redb`): one host.
    #[default]
    Embedded,
    /// A Redis server, shared by every host configured with it (needs the
    /// `redis` feature).
    Redis(RedisSettings),
}

/// Where and how to reach Redis.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port/db`.
    pub url: String,
    /// Prepended to every key this host writes, so several deployments can
    /// share one Redis.
    pub key_prefix: String,
    /// Connections kept open; each carries many commands at once.
    pub pool_size: usize,
    /// How long one command may wait for Redis before it fails as
    /// unavailable (and the connection is re-established).
    pub response_timeout: Duration,
}

impl RedisSettings {
    /// Settings for `url` with the default prefix (`chimera:`), pool size (4)
    /// and response timeout (2 s).
    pub fn new(url: impl Into<String>) -> RedisSettings {
        RedisSettings {
            url: url.into(),
            key_prefix: "chimera:".into(),
            pool_size: 4,
            response_timeout: Duration::from_secs(2),
        }
    }
}

impl std::fmt::Debug for RedisSettings {
    // The URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let url = match (self.url.find("://"), self.url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => format!("{}://***{}", &self.url[..scheme], &self.url[at..]),
            _ => self.url.clone(),
        };
        f.debug_struct("RedisSettings")
            .field("url", &url)
            .field("key_prefix", &self.key_prefix)
            .field("pool_size", &self.pool_size)
            .field("response_timeout", &self.response_timeout)
            .finish()
    }
}

/// What a namespace holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamespaceTotals {
    /// Keys stored.
    pub keys: u64,
    /// Bytes of keys and values together.
    pub bytes: u64,
}

impl NamespaceTotals {
    /// One entry: its key and value.
    pub fn entry(key: &str, value_len: usize) -> NamespaceTotals {
        NamespaceTotals { keys: 1, bytes: key.len() as u64 + value_len as u64 }
    }

    /// Both totals added.
    pub fn plus(self, o: NamespaceTotals) -> NamespaceTotals {
        NamespaceTotals { keys: self.keys.saturating_add(o.keys), bytes: self.bytes.saturating_add(o.bytes) }
    }

    /// Both totals taken away.
    pub fn minus(self, o: NamespaceTotals) -> NamespaceTotals {
        NamespaceTotals { keys: self.keys.saturating_sub(o.keys), bytes: self.bytes.saturating_sub(o.bytes) }
    }
}

/// The namespace quota of the agent writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Most keys the namespace may hold.
    pub max_keys: u64,
    /// Most bytes of keys and values it may hold.
    pub max_bytes: u64,
}

impl Quota {
    /// Admits a write that takes the namespace from `before` to `after`
    /// unless it grows the keys or the bytes past the quota. A write that
    /// grows neither (an overwrite no larger, a delete) is always admitted,
    /// so a namespace over a lowered quota can still be cleaned up. A
    /// backend applies this atomically with the write.
    pub fn admit(&self, ns: &str, before: NamespaceTotals, after: NamespaceTotals) -> Result<(), KvStoreError> {
        let more_keys = after.keys.saturating_sub(before.keys);
        let more_bytes = after.bytes.saturating_sub(before.bytes);
        if (more_keys > 0 && after.keys > self.max_keys) || (more_bytes > 0 && after.bytes > self.max_bytes) {
            return Err(KvStoreError::QuotaExceeded(format!(
                "namespace `{ns}` is full: it holds {} keys / {} bytes of max_keys = {}, max_bytes = {}; \
                 this write would add {more_keys} {} / {more_bytes} bytes",
                before.keys,
                before.bytes,
                self.max_keys,
                self.max_bytes,
                if more_keys == 1 { "key" } else { "keys" },
            )));
        }
        Ok(())
    }
}

/// One page of keys, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPage {
    /// The keys.
    pub keys: Vec<String>,
    /// Where the next page starts (pass as `after`); `None` when done.
    pub next_cursor: Option<String>,
}

/// How large a page of keys may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageBound {
    /// Most keys.
    pub max_keys: usize,
    /// Most bytes of keys together.
    pub max_bytes: u64,
}

/// Why a store operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KvStoreError {
    /// The write would take the namespace past its quota; nothing was written.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The stored value is not what the operation expects (not an integer, an overflow).
    #[error("{0}")]
    InvalidValue(String),
    /// The first key of a page is larger than the page may be.
    #[error("the next key is {next_key_bytes} bytes, more than the page allows")]
    PageTooSmall {
        /// Its size.
        next_key_bytes: u64,
    },
    /// The values of a batch read come to more bytes than the call may carry.
    #[error("the values come to more than {max_bytes} bytes")]
    BatchTooLarge {
        /// What the call could carry.
        max_bytes: u64,
    },
    /// The store failed; the operation may be retried.
    #[error("{0}")]
    Unavailable(String),
}

/// A key-value store shared by all agents of a host, keyed by namespace:
/// the host binds each agent's namespace from its policy, so no key a guest
/// can spell reaches another namespace. Writes enforce the writer's
/// [`Quota`] atomically with the data. `cpu` charges CPU the backend spends
/// on another thread to the task it works for.
#[async_trait::async_trait]
pub trait KvBackend: Send + Sync + 'static {
    /// The value at `key`.
    async fn get(&self, ns: &str, key: &str, cpu: &CpuMeter) -> Result<Option<Vec<u8>>, KvStoreError>;

    /// The values at `keys`, in order, in one round trip where the backend
    /// can (one read transaction, one `MGET`). Fails with
    /// [`KvStoreError::BatchTooLarge`], having copied no more than
    /// `max_bytes`, when the values together come to more than that. The
    /// default reads key by key.
    async fn get_many(
        &self,
        ns: &str,
        keys: &[String],
        max_bytes: u64,
        cpu: &CpuMeter,
    ) -> Result<Vec<Option<Vec<u8>>>, KvStoreError> {
        let mut values = Vec::with_capacity(keys.len());
        let mut total = 0u64;
        for key in keys {
            let value = self.get(ns, key, cpu).await?;
            total = total.saturating_add(value.as_ref().map_or(0, |v| v.len() as u64));
            if total > max_bytes {
                return Err(KvStoreError::BatchTooLarge { max_bytes });
            }
            values.push(value);
        }
        Ok(values)
    }

    /// Stores `value` at `key`.
    async fn set(&self, ns: &str, key: &str, value: Vec<u8>, quota: Quota, cpu: &CpuMeter) -> Result<(), KvStoreError>;

    /// Removes `key`; whether it existed.
    async fn delete(&self, ns: &str, key: &str, cpu: &CpuMeter) -> Result<bool, KvStoreError>;

    /// Adds `delta` to the decimal integer at `key` (absent: 0); the new value.
    async fn increment(
        &self,
        ns: &str,
        key: &str,
        delta: i64,
        quota: Quota,
        cpu: &CpuMeter,
    ) -> Result<i64, KvStoreError>;

    /// Sets `key` to `new` if its value is `expected` (`None`: absent); whether it did.
    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        quota: Quota,
        cpu: &CpuMeter,
    ) -> Result<bool, KvStoreError>;

    /// Keys of `ns` starting with `prefix`, after `after`, in order, within
    /// `bound`. A page cut short has a next cursor; one whose first key
    /// alone is over `bound.max_bytes` fails with [`KvStoreError::PageTooSmall`].
    async fn list_keys(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        bound: PageBound,
        cpu: &CpuMeter,
    ) -> Result<KeyPage, KvStoreError>;

    /// What `ns` holds, as kept with the data.
    async fn totals(&self, ns: &str) -> Result<NamespaceTotals, KvStoreError>;

    /// Checks that the store answers (a networked one: a round trip).
    async fn ping(&self) -> Result<(), KvStoreError> {
        Ok(())
    }
}
