//! The agent's key-value store. The namespace is the host's choice (from the
//! policy); keys here are relative to it.

use crate::bindings::chimera::agent::kv;
pub use kv::{KeyPage, KvError};

/// The value at `key`, if any.
pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    kv::get(key)
}

/// The value at `key` as UTF-8 text, if any.
pub fn get_string(key: &str) -> Result<Option<String>, KvError> {
    Ok(kv::get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// The values at `keys`, in order, in one host call (at most the policy's
/// `max_batch_keys` keys).
pub fn get_many<K: AsRef<str>>(keys: &[K]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
    let keys: Vec<String> = keys.iter().map(|k| k.as_ref().to_string()).collect();
    kv::get_many(&keys)
}

/// Stores `value` at `key`.
pub fn set(key: &str, value: impl AsRef<[u8]>) -> Result<(), KvError> {
    kv::set(key, value.as_ref())
}

/// Removes `key`; returns whether it existed.
pub fn delete(key: &str) -> Result<bool, KvError> {
    kv::delete(key)
}

/// One page of keys starting with `prefix`, after `cursor`.
pub fn list_page(prefix: &str, cursor: Option<&str>, limit: u32) -> Result<KeyPage, KvError> {
    kv::list_keys(prefix, cursor, limit)
}

/// Every key starting with `prefix`, fetched page by page.
pub fn list_keys(prefix: &str) -> Result<Vec<String>, KvError> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = kv::list_keys(prefix, cursor.as_deref(), 256)?;
        keys.extend(page.keys);
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
    }
}

/// Atomically adds `delta` to the integer at `key` (absent = 0); returns the new value.
pub fn increment(key: &str, delta: i64) -> Result<i64, KvError> {
    kv::increment(key, delta)
}

/// Sets `key` to `new` only if it currently holds `expected` (`None`: absent).
pub fn compare_and_swap(key: &str, expected: Option<&[u8]>, new: &[u8]) -> Result<bool, KvError> {
    kv::compare_and_swap(key, expected, new)
}
