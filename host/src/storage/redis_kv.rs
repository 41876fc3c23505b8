//! The KV backend on Redis, for several hosts sharing one store.
//!
//! Each namespace is three Redis keys, named `{prefix}kv:d:{ns}` (a hash of
//! key → value), `{prefix}kv:i:{ns}` (a sorted set of the keys, all score 0,
//! so `ZRANGEBYLEX` lists them in byte order, as the embedded store does) and
//! `{prefix}kv:t:{ns}` (the namespace's totals: `keys`, `bytes`). The kind
//! letter comes before the namespace, so no namespace name can reach another's
//! keys. Every write is one Lua script: it reads the current value and the
//! totals, applies the writer's [`Quota`], and changes the value, the index
//! and the totals together, so a quota holds exactly however many hosts write
//! at once. Reads that carry values check their sizes in the script before
//! Redis sends them (`get-many`'s byte bound); a list page is cut in the
//! script at its key and byte bounds.

use redis::{Script, Value};
use std::sync::LazyLock;

use super::redis_pool::{Idempotent, RedisPool};
use super::{KeyPage, KvBackend, KvStoreError, NamespaceTotals, PageBound, Quota, RedisSettings};
use crate::cpu::CpuMeter;
use crate::error::HostError;

/// Adds `set` or compare-and-swap. KEYS: data, index, totals. ARGV: key,
/// value, max_keys, max_bytes, mode (`set`, `cas-absent`, `cas`), expected.
/// Returns {status, keys before, bytes before, keys after, bytes after}:
/// status 1 written, 0 not (the value was not the expected one), 2 refused
/// by the quota.
const WRITE: &str = r#"
local key, value = ARGV[1], ARGV[2]
local mode = ARGV[5]
local old = redis.call('HGET', KEYS[1], key)
if mode == 'cas' then
  if old ~= ARGV[6] then return {0, 0, 0, 0, 0} end
elseif mode == 'cas-absent' then
  if old then return {0, 0, 0, 0, 0} end
end
local t = redis.call('HMGET', KEYS[3], 'keys', 'bytes')
local keys, bytes = tonumber(t[1] or '0'), tonumber(t[2] or '0')
local nk, nb = keys + 1, bytes + #key + #value
if old then nk, nb = keys, bytes - #old + #value end
if (nk > keys and nk > tonumber(ARGV[3])) or (nb > bytes and nb > tonumber(ARGV[4])) then
  return {2, keys, bytes, nk, nb}
end
redis.call('HSET', KEYS[1], key, value)
if not old then redis.call('ZADD', KEYS[2], 0, key) end
redis.call('HSET', KEYS[3], 'keys', nk, 'bytes', nb)
return {1, keys, bytes, nk, nb}
"#;

/// Removes a key. KEYS: data, index, totals. ARGV: key. Returns 1 if it existed.
const DELETE: &str = r#"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local t = redis.call('HMGET', KEYS[3], 'keys', 'bytes')
local nk = tonumber(t[1] or '1') - 1
local nb = tonumber(t[2] or '0') - #ARGV[1] - #old
if nk <= 0 then redis.call('DEL', KEYS[3]) else redis.call('HSET', KEYS[3], 'keys', nk, 'bytes', nb) end
return 1
"#;

/// Adds to a decimal integer. KEYS: data, index, totals. ARGV: key, delta,
/// max_keys, max_bytes. The arithmetic is Redis's own 64-bit `HINCRBY` (Lua
/// numbers are doubles), on the value first written in the form HINCRBY
/// reads (sign, no leading zeros: what the embedded store accepts). Returns
/// {1, new value} or {2, keys before, bytes before, keys after, bytes after}
/// (the quota), {3} (not an integer) or {4} (overflow); on 2, 3 and 4 the
/// old value is put back.
const INCREMENT: &str = r#"
local key = ARGV[1]
local old = redis.call('HGET', KEYS[1], key)
local start = '0'
if old then
  local sign, digits = string.match(old, '^([+-]?)(%d+)$')
  if not digits then return {3} end
  digits = string.gsub(digits, '^0+', '')
  if #digits > 19 then return {3} end
  if digits == '' then start = '0' elseif sign == '-' then start = '-' .. digits else start = digits end
end
local function restore()
  if old then redis.call('HSET', KEYS[1], key, old) else redis.call('HDEL', KEYS[1], key) end
end
redis.call('HSET', KEYS[1], key, start)
local r = redis.pcall('HINCRBY', KEYS[1], key, ARGV[2])
if type(r) == 'table' and r.err then
  restore()
  if string.find(r.err, 'overflow') then return {4} end
  return {3}
end
local new = redis.call('HGET', KEYS[1], key)
local t = redis.call('HMGET', KEYS[3], 'keys', 'bytes')
local keys, bytes = tonumber(t[1] or '0'), tonumber(t[2] or '0')
local nk, nb = keys + 1, bytes + #key + #new
if old then nk, nb = keys, bytes - #old + #new end
if (nk > keys and nk > tonumber(ARGV[3])) or (nb > bytes and nb > tonumber(ARGV[4])) then
  restore()
  return {2, keys, bytes, nk, nb}
end
if not old then redis.call('ZADD', KEYS[2], 0, key) end
redis.call('HSET', KEYS[3], 'keys', nk, 'bytes', nb)
return {1, new}
"#;

/// Reads several values, sizes first. KEYS: data. ARGV: max bytes, keys...
/// Returns 0 when the values come to more than the bound, else the values.
const GET_MANY: &str = r#"
local max, total = tonumber(ARGV[1]), 0
for i = 2, #ARGV do
  total = total + redis.call('HSTRLEN', KEYS[1], ARGV[i])
  if total > max then return 0 end
end
local values = {}
for i = 2, #ARGV do values[i - 1] = redis.call('HGET', KEYS[1], ARGV[i]) end
return values
"#;

/// One page of keys. KEYS: index. ARGV: start (a ZRANGEBYLEX bound), stop,
/// max keys, max bytes. Returns {more (0/1), {keys}} or {-1, size of the
/// first key} when the first key alone does not fit.
const LIST: &str = r#"
local start, stop = ARGV[1], ARGV[2]
local max_keys, max_bytes = tonumber(ARGV[3]), tonumber(ARGV[4])
local keys, bytes = {}, 0
while true do
  local batch = redis.call('ZRANGEBYLEX', KEYS[1], start, stop, 'LIMIT', 0, 256)
  for _, k in ipairs(batch) do
    if #keys == max_keys or bytes + #k > max_bytes then
      if #keys == 0 then return {-1, #k} end
      return {1, keys}
    end
    bytes = bytes + #k
    keys[#keys + 1] = k
  end
  if #batch < 256 then return {0, keys} end
  start = '(' .. batch[#batch]
end
"#;

struct Scripts {
    write: Script,
    delete: Script,
    increment: Script,
    get_many: Script,
    list: Script,
}

static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    write: Script::new(WRITE),
    delete: Script::new(DELETE),
    increment: Script::new(INCREMENT),
    get_many: Script::new(GET_MANY),
    list: Script::new(LIST),
});

/// The KV backend on Redis: several hosts on one Redis share every
/// namespace, its data and its quota. Connections are made lazily and
/// re-made with backoff after Redis goes away; meanwhile every call fails
/// with [`KvStoreError::Unavailable`] naming the server (never its password).
pub struct RedisKv {
    redis: RedisPool,
    prefix: String,
}

impl RedisKv {
    /// Sets up the connections to `settings.url` (made on first use; must be
    /// called inside a tokio runtime). Fails only on a malformed URL.
    pub fn open(settings: &RedisSettings) -> Result<RedisKv, HostError> {
        let redis = RedisPool::open(settings).map_err(HostError::Config)?;
        Ok(RedisKv { redis, prefix: settings.key_prefix.clone() })
    }

    /// The server, as errors name it: `host:port/db`.
    pub fn server(&self) -> &str {
        self.redis.server()
    }

    /// Runs a read, once more if the connection had dropped.
    async fn read<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, KvStoreError> {
        self.redis.query(cmd, Idempotent::Yes).await.map_err(|e| self.unavailable(e))
    }

    /// Runs a script: once more after a dropped connection if it only
    /// reads (`Idempotent::Yes`).
    async fn run<T: redis::FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
        again: Idempotent,
    ) -> Result<T, KvStoreError> {
        self.redis.invoke(call, again).await.map_err(|e| self.unavailable(e))
    }

    fn key(&self, kind: char, ns: &str) -> String {
        format!("{}kv:{kind}:{ns}", self.prefix)
    }

    fn keys(&self, ns: &str) -> [String; 3] {
        [self.key('d', ns), self.key('i', ns), self.key('t', ns)]
    }

    fn unavailable(&self, e: redis::RedisError) -> KvStoreError {
        KvStoreError::Unavailable(format!("the KV store (Redis at {}) did not answer: {e}", self.server()))
    }

    fn malformed(&self, what: &str) -> KvStoreError {
        KvStoreError::Unavailable(format!("the KV store (Redis at {}) sent a malformed {what} reply", self.server()))
    }

    async fn write(
        &self,
        ns: &str,
        key: &str,
        value: &[u8],
        quota: Quota,
        mode: &str,
        expected: &[u8],
    ) -> Result<bool, KvStoreError> {
        let [d, i, t] = self.keys(ns);
        let mut call = SCRIPTS.write.key(d);
        call.key(i).key(t).arg(key).arg(value).arg(quota.max_keys).arg(quota.max_bytes).arg(mode).arg(expected);
        let reply: Vec<u64> = self.run(&call, Idempotent::No).await?;
        match reply.as_slice() {
            [1, ..] => Ok(true),
            [0, ..] => Ok(false),
            [2, keys, bytes, nk, nb] => Err(refusal(ns, quota, (*keys, *bytes), (*nk, *nb))),
            _ => Err(self.malformed("write")),
        }
    }
}

/// The quota's own message for a refusal the script found.
fn refusal(ns: &str, quota: Quota, before: (u64, u64), after: (u64, u64)) -> KvStoreError {
    let before = NamespaceTotals { keys: before.0, bytes: before.1 };
    let after = NamespaceTotals { keys: after.0, bytes: after.1 };
    quota
        .admit(ns, before, after)
        .err()
        .unwrap_or_else(|| KvStoreError::QuotaExceeded(format!("namespace `{ns}` is full")))
}

/// The `ZRANGEBYLEX` bounds of the keys starting with `prefix`, after
/// `after`. Compared here, in Rust's byte order (Redis's Lua compares
/// strings by locale). Keys are UTF-8, which never holds the byte 0xFF, so
/// `prefix` + 0xFF is above every key that starts with `prefix`.
fn lex_range(prefix: &str, after: Option<&str>) -> (Vec<u8>, Vec<u8>) {
    let start = match after {
        Some(cursor) if cursor >= prefix => [b"(", cursor.as_bytes()].concat(),
        _ => [b"[", prefix.as_bytes()].concat(),
    };
    let stop = if prefix.is_empty() { b"+".to_vec() } else { [b"(", prefix.as_bytes(), &[0xff]].concat() };
    (start, stop)
}

#[async_trait::async_trait]
impl KvBackend for RedisKv {
    async fn get(&self, ns: &str, key: &str, _cpu: &CpuMeter) -> Result<Option<Vec<u8>>, KvStoreError> {
        self.read(redis::cmd("HGET").arg(self.key('d', ns)).arg(key)).await
    }

    async fn get_many(
        &self,
        ns: &str,
        keys: &[String],
        max_bytes: u64,
        _cpu: &CpuMeter,
    ) -> Result<Vec<Option<Vec<u8>>>, KvStoreError> {
        let mut call = SCRIPTS.get_many.key(self.key('d', ns));
        call.arg(max_bytes);
        for key in keys {
            call.arg(key);
        }
        let reply: Value = self.run(&call, Idempotent::Yes).await?;
        match reply {
            Value::Int(0) => Err(KvStoreError::BatchTooLarge { max_bytes }),
            Value::Array(values) if values.len() == keys.len() => values
                .into_iter()
                .map(|v| match v {
                    Value::Nil => Ok(None),
                    Value::BulkString(bytes) => Ok(Some(bytes)),
                    _ => Err(self.malformed("get-many")),
                })
                .collect(),
            _ => Err(self.malformed("get-many")),
        }
    }

    async fn set(
        &self,
        ns: &str,
        key: &str,
        value: Vec<u8>,
        quota: Quota,
        _cpu: &CpuMeter,
    ) -> Result<(), KvStoreError> {
        self.write(ns, key, &value, quota, "set", b"").await.map(drop)
    }

    async fn delete(&self, ns: &str, key: &str, _cpu: &CpuMeter) -> Result<bool, KvStoreError> {
        let [d, i, t] = self.keys(ns);
        let mut call = SCRIPTS.delete.key(d);
        call.key(i).key(t).arg(key);
        // Deleting twice ends as deleting once; only the answer could differ.
        let existed: i64 = self.run(&call, Idempotent::No).await?;
        Ok(existed == 1)
    }

    async fn increment(
        &self,
        ns: &str,
        key: &str,
        delta: i64,
        quota: Quota,
        _cpu: &CpuMeter,
    ) -> Result<i64, KvStoreError> {
        let [d, i, t] = self.keys(ns);
        let mut call = SCRIPTS.increment.key(d);
        call.key(i).key(t).arg(key).arg(delta).arg(quota.max_keys).arg(quota.max_bytes);
        let reply: Value = self.run(&call, Idempotent::No).await?;
        let Value::Array(items) = reply else { return Err(self.malformed("increment")) };
        let int = |v: &Value| match v {
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        };
        match items.as_slice() {
            [Value::Int(1), Value::BulkString(new)] => std::str::from_utf8(new)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or_else(|| self.malformed("increment")),
            [Value::Int(2), rest @ ..] => match rest.iter().map(int).collect::<Option<Vec<u64>>>().as_deref() {
                Some(&[keys, bytes, nk, nb]) => Err(refusal(ns, quota, (keys, bytes), (nk, nb))),
                _ => Err(self.malformed("increment")),
            },
            [Value::Int(3)] => Err(KvStoreError::InvalidValue(format!("`{key}` does not hold a decimal integer"))),
            [Value::Int(4)] => {
                Err(KvStoreError::InvalidValue(format!("`{key}` would overflow a signed 64-bit integer")))
            }
            _ => Err(self.malformed("increment")),
        }
    }

    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        quota: Quota,
        _cpu: &CpuMeter,
    ) -> Result<bool, KvStoreError> {
        match expected {
            Some(expected) => self.write(ns, key, &new, quota, "cas", &expected).await,
            None => self.write(ns, key, &new, quota, "cas-absent", b"").await,
        }
    }

    async fn list_keys(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        bound: PageBound,
        _cpu: &CpuMeter,
    ) -> Result<KeyPage, KvStoreError> {
        let (start, stop) = lex_range(prefix, after);
        let mut call = SCRIPTS.list.key(self.key('i', ns));
        call.arg(start).arg(stop).arg(bound.max_keys).arg(bound.max_bytes);
        let reply: Value = self.run(&call, Idempotent::Yes).await?;
        let Value::Array(items) = reply else { return Err(self.malformed("list-keys")) };
        match items.as_slice() {
            [Value::Int(-1), Value::Int(n)] => Err(KvStoreError::PageTooSmall { next_key_bytes: *n as u64 }),
            [Value::Int(more), Value::Array(keys)] => {
                let keys = keys
                    .iter()
                    .map(|k| match k {
                        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(|_| self.malformed("list-keys")),
                        _ => Err(self.malformed("list-keys")),
                    })
                    .collect::<Result<Vec<String>, _>>()?;
                let next_cursor = if *more == 1 { keys.last().cloned() } else { None };
                Ok(KeyPage { keys, next_cursor })
            }
            _ => Err(self.malformed("list-keys")),
        }
    }

    async fn ping(&self) -> Result<(), KvStoreError> {
        // Every connection: a check that passes means each call will find Redis.
        for con in self.redis.connections() {
            let ping = self.redis.query_on(con, &redis::cmd("PING"), Idempotent::Yes).await;
            let _: String = ping.map_err(|e| self.unavailable(e))?;
        }
        Ok(())
    }

    async fn totals(&self, ns: &str) -> Result<NamespaceTotals, KvStoreError> {
        let (keys, bytes): (Option<u64>, Option<u64>) =
            self.read(redis::cmd("HMGET").arg(self.key('t', ns)).arg("keys").arg("bytes")).await?;
        Ok(NamespaceTotals { keys: keys.unwrap_or(0), bytes: bytes.unwrap_or(0) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_range_covers_exactly_the_keys_with_the_prefix_after_the_cursor() {
        assert_eq!(lex_range("", None), (b"[".to_vec(), b"+".to_vec()));
        assert_eq!(lex_range("ab", None), (b"[ab".to_vec(), b"(ab\xff".to_vec()));
        // A cursor at or past the prefix starts after it; one before it, at the prefix.
        assert_eq!(lex_range("ab", Some("abc")).0, b"(abc".to_vec());
        assert_eq!(lex_range("ab", Some("aa")).0, b"[ab".to_vec());
    }
}
