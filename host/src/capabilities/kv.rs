//! `chimera:agent/kv`: a durable key-value store on redb. Keys are stored as
//! `(namespace, key)` tuples, and the namespace comes from the policy, so no
//! key a guest can spell reaches another agent's data.

use redb::{Database, ReadableTable, TableDefinition};
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::{Linker, WasmList, WasmStr};
use wasmtime::StoreContextMut;

use super::{CapabilityDecision, Grant};
use crate::bindings::chimera::agent::kv::{self, KeyPage, KvError};
use crate::error::HostError;
use crate::policy::{KvGrant, Policy};
use crate::state::TaskState;
use crate::usage::{Call, UsageCounters};

const TABLE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");

pub(crate) fn decide(policy: &Policy) -> CapabilityDecision {
    CapabilityDecision {
        capability: "kv",
        section: "[capabilities.kv]",
        grant: match &policy.capabilities.kv {
            Some(g) => Grant::Granted(format!(
                "namespace {}, {}keys up to {} bytes, values up to {} bytes",
                g.namespace.as_deref().map(|n| format!("`{n}`")).unwrap_or_else(|| "= agent name".into()),
                if g.read_only { "read-only, " } else { "" },
                g.max_key_bytes,
                g.max_value_bytes
            )),
            None => Grant::Refused("not granted; add a [capabilities.kv] section to the policy".into()),
        },
        link: link_checked,
    }
}

/// Reads a key from guest memory only if it is within the grant's size;
/// an oversized key is refused without being copied.
fn lift_key(store: &StoreContextMut<'_, TaskState>, key: &WasmStr) -> wasmtime::Result<Result<String, KvError>> {
    let key = key.to_str(store)?;
    let max = store.data().kv.as_ref().map_or(0, |kv| kv.grant.max_key_bytes);
    Ok(if key.len() as u64 > max {
        Err(KvError::TooLarge(format!("key is {} bytes; the limit is {max} (max_key_bytes)", key.len())))
    } else {
        Ok(key.into_owned())
    })
}

/// Copies a value out of guest memory only if it is within the grant's size.
fn lift_value(store: &StoreContextMut<'_, TaskState>, value: &WasmList<u8>) -> Result<Vec<u8>, KvError> {
    let max = store.data().kv.as_ref().map_or(0, |kv| kv.grant.max_value_bytes);
    if value.len() as u64 > max {
        return Err(KvError::TooLarge(format!("value is {} bytes; the limit is {max} (max_value_bytes)", value.len())));
    }
    Ok(value.as_le_slice(store).to_vec())
}

/// Refuses `Err` early, counting it, or goes on with the value.
macro_rules! lifted {
    ($store:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                $store.data().kv_denied(&e);
                return Ok((Err(e),));
            }
        }
    };
}

/// Links `kv`. Keys and values are taken as views of guest memory and
/// size-checked before the host copies them, so an oversized argument costs
/// the host no allocation; the operations themselves are in `kv::Host`.
fn link_checked(l: &mut Linker<TaskState>) -> wasmtime::Result<()> {
    use kv::Host as _;
    let mut i = l.instance("chimera:agent/kv@0.1.0")?;
    i.func_wrap_async("get", |mut store: StoreContextMut<'_, TaskState>, (key,): (WasmStr,)| {
        Box::new(async move {
            let key = lifted!(store, lift_key(&store, &key)?);
            Ok((store.data_mut().get(key).await?,))
        })
    })?;
    i.func_wrap_async("set", |mut store: StoreContextMut<'_, TaskState>, (key, value): (WasmStr, WasmList<u8>)| {
        Box::new(async move {
            let key = lifted!(store, lift_key(&store, &key)?);
            let value = lifted!(store, lift_value(&store, &value));
            Ok((store.data_mut().set(key, value).await?,))
        })
    })?;
    i.func_wrap_async("delete", |mut store: StoreContextMut<'_, TaskState>, (key,): (WasmStr,)| {
        Box::new(async move {
            let key = lifted!(store, lift_key(&store, &key)?);
            Ok((store.data_mut().delete(key).await?,))
        })
    })?;
    type ListParams = (WasmStr, Option<WasmStr>, u32);
    i.func_wrap_async(
        "list-keys",
        |mut store: StoreContextMut<'_, TaskState>, (prefix, cursor, limit): ListParams| {
            Box::new(async move {
                let prefix = lifted!(store, lift_key(&store, &prefix)?);
                let cursor = match cursor {
                    Some(c) => Some(lifted!(store, lift_key(&store, &c)?)),
                    None => None,
                };
                Ok((store.data_mut().list_keys(prefix, cursor, limit).await?,))
            })
        },
    )?;
    i.func_wrap_async("increment", |mut store: StoreContextMut<'_, TaskState>, (key, delta): (WasmStr, i64)| {
        Box::new(async move {
            let key = lifted!(store, lift_key(&store, &key)?);
            Ok((store.data_mut().increment(key, delta).await?,))
        })
    })?;
    type CasParams = (WasmStr, Option<WasmList<u8>>, WasmList<u8>);
    i.func_wrap_async(
        "compare-and-swap",
        |mut store: StoreContextMut<'_, TaskState>, (key, expected, new): CasParams| {
            Box::new(async move {
                let key = lifted!(store, lift_key(&store, &key)?);
                let expected = match expected {
                    Some(e) => Some(lifted!(store, lift_value(&store, &e))),
                    None => None,
                };
                let new = lifted!(store, lift_value(&store, &new));
                Ok((store.data_mut().compare_and_swap(key, expected, new).await?,))
            })
        },
    )?;
    Ok(())
}

/// The embedded durable store behind `kv`, shared by all agents of a host.
pub struct KvStore {
    db: Database,
}

impl KvStore {
    /// Opens (or creates) the store file at `path`.
    pub fn open(path: &Path) -> Result<KvStore, HostError> {
        let err = |reason: String| HostError::DataDir { path: path.display().to_string(), reason };
        let db = Database::create(path).map_err(|e| err(format!("cannot open the KV store: {e}")))?;
        let tx = db.begin_write().map_err(|e| err(e.to_string()))?;
        tx.open_table(TABLE).map_err(|e| err(e.to_string()))?;
        tx.commit().map_err(|e| err(e.to_string()))?;
        Ok(KvStore { db })
    }

    /// The underlying database, shared with the task journal.
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let tx = self.db.begin_read().map_err(unavailable)?;
        let table = tx.open_table(TABLE).map_err(unavailable)?;
        Ok(table.get((ns, key)).map_err(unavailable)?.map(|v| v.value().to_vec()))
    }

    /// Runs `f` on the table in one write transaction and commits it.
    fn write<R>(
        &self,
        f: impl FnOnce(&mut redb::Table<(&str, &str), &[u8]>) -> Result<R, KvError>,
    ) -> Result<R, KvError> {
        let tx = self.db.begin_write().map_err(unavailable)?;
        let result = {
            let mut table = tx.open_table(TABLE).map_err(unavailable)?;
            f(&mut table)?
        };
        tx.commit().map_err(unavailable)?;
        Ok(result)
    }

    fn list(&self, ns: &str, prefix: &str, after: Option<&str>, limit: usize) -> Result<KeyPage, KvError> {
        let tx = self.db.begin_read().map_err(unavailable)?;
        let table = tx.open_table(TABLE).map_err(unavailable)?;
        let start = match after {
            Some(cursor) if cursor >= prefix => Bound::Excluded((ns, cursor)),
            _ => Bound::Included((ns, prefix)),
        };
        let mut keys = Vec::new();
        let mut more = false;
        for entry in table.range::<(&str, &str)>((start, Bound::Unbounded)).map_err(unavailable)? {
            let (k, _) = entry.map_err(unavailable)?;
            let (entry_ns, key) = k.value();
            // The range is ordered by namespace first: leaving it ends the scan.
            if entry_ns != ns || !key.starts_with(prefix) {
                break;
            }
            if keys.len() == limit {
                more = true;
                break;
            }
            keys.push(key.to_string());
        }
        let next_cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, next_cursor })
    }
}

fn unavailable(e: impl std::fmt::Display) -> KvError {
    KvError::Unavailable(e.to_string())
}

/// The `kv` capability as one task sees it.
pub(crate) struct KvTaskState {
    pub store: Arc<KvStore>,
    pub namespace: Arc<str>,
    pub grant: KvGrant,
}

impl KvTaskState {
    fn check_key(&self, key: &str) -> Result<(), KvError> {
        if key.is_empty() {
            return Err(KvError::InvalidKey("the key is empty".into()));
        }
        if key.len() as u64 > self.grant.max_key_bytes {
            return Err(KvError::TooLarge(format!(
                "key is {} bytes; the limit is {} (max_key_bytes)",
                key.len(),
                self.grant.max_key_bytes
            )));
        }
        Ok(())
    }

    fn check_write(&self, value_len: usize) -> Result<(), KvError> {
        if self.grant.read_only {
            return Err(KvError::Denied("this agent's KV grant is read-only".into()));
        }
        if value_len as u64 > self.grant.max_value_bytes {
            return Err(KvError::TooLarge(format!(
                "value is {value_len} bytes; the limit is {} (max_value_bytes)",
                self.grant.max_value_bytes
            )));
        }
        Ok(())
    }
}

impl TaskState {
    /// Runs a store operation: a write off the async workers (a commit syncs
    /// to disk), a read in place (a read transaction takes microseconds from
    /// redb's cache; a thread hop would cost more than the read).
    async fn kv_op<R: Send + 'static>(
        &mut self,
        write: bool,
        op: impl FnOnce(&KvStore, &str) -> Result<R, KvError> + Send + 'static,
    ) -> wasmtime::Result<Result<R, KvError>> {
        self.usage.count_call(Call::Kv);
        let Some(kv) = &self.kv else {
            return Ok(Err(KvError::Denied("kv is not granted".into())));
        };
        UsageCounters::add(if write { &self.usage.kv_writes } else { &self.usage.kv_reads }, 1);
        if !write {
            return Ok(op(&kv.store, &kv.namespace));
        }
        let store = kv.store.clone();
        let ns = kv.namespace.clone();
        let result = tokio::task::spawn_blocking(move || op(&store, &ns))
            .await
            .unwrap_or_else(|e| Err(KvError::Unavailable(format!("store task failed: {e}"))));
        Ok(result)
    }

    /// Counts a refused call under a fixed reason label.
    pub(crate) fn kv_denied(&self, e: &KvError) {
        let reason = match e {
            KvError::Denied(_) => "denied",
            KvError::TooLarge(_) => "too-large",
            KvError::InvalidKey(_) => "invalid-key",
            KvError::InvalidValue(_) | KvError::Unavailable(_) => return,
        };
        self.metrics.denied(&self.log.agent, "kv", reason);
    }

    fn kv_grant(&self) -> Result<&KvTaskState, KvError> {
        self.kv.as_ref().ok_or_else(|| KvError::Denied("kv is not granted".into()))
    }
}

macro_rules! check {
    ($self:ident, $e:expr) => {
        if let Err(e) = $e {
            $self.kv_denied(&e);
            return Ok(Err(e));
        }
    };
}

impl kv::Host for TaskState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, KvError>> {
        check!(self, self.kv_grant().and_then(|kv| kv.check_key(&key)));
        self.kv_op(false, move |s, ns| s.get(ns, &key)).await
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), KvError>> {
        check!(self, self.kv_grant().and_then(|kv| kv.check_key(&key).and_then(|_| kv.check_write(value.len()))));
        self.kv_op(true, move |s, ns| {
            s.write(|t| {
                t.insert((ns, key.as_str()), value.as_slice()).map_err(unavailable)?;
                Ok(())
            })
        })
        .await
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, KvError>> {
        check!(self, self.kv_grant().and_then(|kv| kv.check_key(&key).and_then(|_| kv.check_write(0))));
        self.kv_op(true, move |s, ns| s.write(|t| Ok(t.remove((ns, key.as_str())).map_err(unavailable)?.is_some())))
            .await
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<KeyPage, KvError>> {
        let max = match self.kv_grant() {
            Ok(kv) => kv.grant.max_page_keys,
            Err(e) => return Ok(Err(e)),
        };
        if prefix.len() as u64 > self.kv.as_ref().map_or(0, |k| k.grant.max_key_bytes) {
            return Ok(Err(KvError::TooLarge("prefix is longer than the longest allowed key".into())));
        }
        let limit = limit.clamp(1, max) as usize;
        self.kv_op(false, move |s, ns| s.list(ns, &prefix, cursor.as_deref(), limit)).await
    }

    async fn increment(&mut self, key: String, delta: i64) -> wasmtime::Result<Result<i64, KvError>> {
        check!(self, self.kv_grant().and_then(|kv| kv.check_key(&key).and_then(|_| kv.check_write(20))));
        self.kv_op(true, move |s, ns| {
            s.write(|t| {
                let current = match t.get((ns, key.as_str())).map_err(unavailable)? {
                    None => 0,
                    Some(v) => std::str::from_utf8(v.value())
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .ok_or_else(|| KvError::InvalidValue(format!("`{key}` does not hold a decimal integer")))?,
                };
                let next = current
                    .checked_add(delta)
                    .ok_or_else(|| KvError::InvalidValue(format!("`{key}` would overflow a signed 64-bit integer")))?;
                t.insert((ns, key.as_str()), next.to_string().as_bytes()).map_err(unavailable)?;
                Ok(next)
            })
        })
        .await
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> wasmtime::Result<Result<bool, KvError>> {
        check!(self, self.kv_grant().and_then(|kv| kv.check_key(&key).and_then(|_| kv.check_write(new.len()))));
        self.kv_op(true, move |s, ns| {
            s.write(|t| {
                let current = t.get((ns, key.as_str())).map_err(unavailable)?.map(|v| v.value().to_vec());
                if current != expected {
                    return Ok(false);
                }
                t.insert((ns, key.as_str()), new.as_slice()).map_err(unavailable)?;
                Ok(true)
            })
        })
        .await
    }
}
