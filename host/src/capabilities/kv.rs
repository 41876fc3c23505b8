//! `chimera:agent/kv`: a durable key-value store on redb. Keys are stored as
//! `(namespace, key)` tuples, and the namespace comes from the policy, so no
//! key a guest can spell reaches another agent's data.
//!
//! Every namespace has a quota (`max_keys`, `max_bytes` in
//! `[capabilities.kv]`). Its totals — keys, and bytes of keys and values —
//! live in a second table, updated in the same write transaction as the data,
//! so they are exact whatever writes race: a write that would take the
//! namespace past the writer's quota is refused with `too-large` and nothing
//! of it is written.

use redb::{Database, ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use wasmtime::component::{Linker, WasmList};
use wasmtime::StoreContextMut;

use super::{CapabilityDecision, Grant};
use crate::bindings::chimera::agent::kv::{KeyPage, KvError};
use crate::error::HostError;
use crate::guest_args::GuestStr;
use crate::policy::{KvGrant, Policy};
use crate::state::TaskState;
use crate::usage::{Call, UsageCounters};

const TABLE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
/// Per namespace: (keys, bytes of keys and values).
const TOTALS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("kv_totals");

/// Most key bytes one `list-keys` page carries; the instance's memory limit
/// may stop it sooner.
pub const MAX_PAGE_BYTES: u64 = 1 << 20;

/// An oversized key whose decoding could cost at most this much is decoded
/// to report its exact size (no more than an accepted key can cost); a
/// larger one is refused from its length alone.
const DECODE_FOR_MESSAGE: usize = 64 << 10;

pub(crate) fn decide(policy: &Policy) -> CapabilityDecision {
    CapabilityDecision {
        capability: "kv",
        section: "[capabilities.kv]",
        grant: match &policy.capabilities.kv {
            Some(g) => Grant::Granted(format!(
                "namespace {}, {}keys up to {} bytes, values up to {} bytes, \
                 at most {} keys / {} bytes in the namespace",
                g.namespace.as_deref().map(|n| format!("`{n}`")).unwrap_or_else(|| "= agent name".into()),
                if g.read_only { "read-only, " } else { "" },
                g.max_key_bytes,
                g.max_value_bytes,
                g.max_keys,
                g.max_bytes
            )),
            None => Grant::Refused("not granted; add a [capabilities.kv] section to the policy".into()),
        },
        link: link_checked,
    }
}

/// Reads a key (or prefix, or cursor: `what`) from guest memory only if it
/// can be within the grant's size. One whose length alone puts it over the
/// limit is refused without being decoded, whatever its encoding, so a key
/// spanning the guest's whole memory in UTF-16 costs the host nothing.
fn lift_key(
    store: &StoreContextMut<'_, TaskState>,
    what: &str,
    key: &GuestStr,
) -> wasmtime::Result<Result<String, KvError>> {
    let max = store.data().kv.as_ref().map_or(0, |kv| kv.grant.max_key_bytes);
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let too_large = |size: String| KvError::TooLarge(format!("{what} is {size}; the limit is {max} (max_key_bytes)"));
    if key.min_len() > limit {
        return Ok(Err(too_large(if key.min_len() == key.max_len() {
            format!("{} bytes", key.min_len())
        } else if key.max_len() <= DECODE_FOR_MESSAGE {
            format!("{} bytes", key.decode(store)?.len())
        } else {
            format!("at least {} bytes", key.min_len())
        })));
    }
    // Within the limit by its length: decoding costs at most 3 × the limit.
    match key.decode_within(store, limit)? {
        Some(key) => Ok(Ok(key)),
        None => Ok(Err(too_large(format!("over {max} bytes as UTF-8")))),
    }
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
/// size-checked before the host copies (or decodes) them, so an oversized
/// argument costs the host no allocation; the operations themselves are the
/// `kv_*` methods of [`TaskState`].
fn link_checked(l: &mut Linker<TaskState>) -> wasmtime::Result<()> {
    let mut i = l.instance("chimera:agent/kv@0.1.0")?;
    i.func_wrap_async("get", |mut store: StoreContextMut<'_, TaskState>, (key,): (GuestStr,)| {
        Box::new(async move {
            let key = lifted!(store, lift_key(&store, "key", &key)?);
            Ok((store.data_mut().kv_get(key).await?,))
        })
    })?;
    i.func_wrap_async("set", |mut store: StoreContextMut<'_, TaskState>, (key, value): (GuestStr, WasmList<u8>)| {
        Box::new(async move {
            let key = lifted!(store, lift_key(&store, "key", &key)?);
            let value = lifted!(store, lift_value(&store, &value));
            Ok((store.data_mut().kv_set(key, value).await?,))
        })
    })?;
    i.func_wrap_async("delete", |mut store: StoreContextMut<'_, TaskState>, (key,): (GuestStr,)| {
        Box::new(async move {
            let key = lifted!(store, lift_key(&store, "key", &key)?);
            Ok((store.data_mut().kv_delete(key).await?,))
        })
    })?;
    type ListParams = (GuestStr, Option<GuestStr>, u32);
    i.func_wrap_async(
        "list-keys",
        |mut store: StoreContextMut<'_, TaskState>, (prefix, cursor, limit): ListParams| {
            Box::new(async move {
                let prefix = lifted!(store, lift_key(&store, "prefix", &prefix)?);
                let cursor = match cursor {
                    Some(c) => Some(lifted!(store, lift_key(&store, "cursor", &c)?)),
                    None => None,
                };
                Ok((store.data_mut().kv_list_keys(prefix, cursor, limit).await?,))
            })
        },
    )?;
    i.func_wrap_async("increment", |mut store: StoreContextMut<'_, TaskState>, (key, delta): (GuestStr, i64)| {
        Box::new(async move {
            let key = lifted!(store, lift_key(&store, "key", &key)?);
            Ok((store.data_mut().kv_increment(key, delta).await?,))
        })
    })?;
    type CasParams = (GuestStr, Option<WasmList<u8>>, WasmList<u8>);
    i.func_wrap_async(
        "compare-and-swap",
        |mut store: StoreContextMut<'_, TaskState>, (key, expected, new): CasParams| {
            Box::new(async move {
                let key = lifted!(store, lift_key(&store, "key", &key)?);
                let expected = match expected {
                    Some(e) => Some(lifted!(store, lift_value(&store, &e))),
                    None => None,
                };
                let new = lifted!(store, lift_value(&store, &new));
                Ok((store.data_mut().kv_compare_and_swap(key, expected, new).await?,))
            })
        },
    )?;
    Ok(())
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
    fn entry(key: &str, value_len: usize) -> NamespaceTotals {
        NamespaceTotals { keys: 1, bytes: key.len() as u64 + value_len as u64 }
    }

    fn plus(self, o: NamespaceTotals) -> NamespaceTotals {
        NamespaceTotals { keys: self.keys.saturating_add(o.keys), bytes: self.bytes.saturating_add(o.bytes) }
    }

    fn minus(self, o: NamespaceTotals) -> NamespaceTotals {
        NamespaceTotals { keys: self.keys.saturating_sub(o.keys), bytes: self.bytes.saturating_sub(o.bytes) }
    }
}

/// The namespace quota of the agent writing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quota {
    pub max_keys: u64,
    pub max_bytes: u64,
}

impl Quota {
    pub fn of(grant: &KvGrant) -> Quota {
        Quota { max_keys: grant.max_keys, max_bytes: grant.max_bytes }
    }

    /// Admits a write that takes the namespace from `before` to `after`
    /// unless it grows the keys or the bytes past the quota. A write that
    /// grows neither (an overwrite no larger, a delete) is always admitted,
    /// so a namespace over a lowered quota can still be cleaned up.
    fn admit(&self, ns: &str, before: NamespaceTotals, after: NamespaceTotals) -> Result<(), KvError> {
        let more_keys = after.keys.saturating_sub(before.keys);
        let more_bytes = after.bytes.saturating_sub(before.bytes);
        if (more_keys > 0 && after.keys > self.max_keys) || (more_bytes > 0 && after.bytes > self.max_bytes) {
            return Err(KvError::TooLarge(format!(
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

/// What a write does to its key, decided from the current value.
enum Change {
    Keep,
    Put(Vec<u8>),
    Remove,
}

/// Host memory reserved for a task while a `list-keys` page is built.
struct Held<'a> {
    usage: &'a UsageCounters,
    bytes: u64,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.usage.release_host(self.bytes);
    }
}

/// The embedded durable store behind `kv`, shared by all agents of a host.
pub struct KvStore {
    db: Database,
}

impl KvStore {
    /// Opens (or creates) the store file at `path`. A store written before
    /// namespace totals were kept gets them computed here, once.
    pub fn open(path: &Path) -> Result<KvStore, HostError> {
        let err = |reason: String| HostError::DataDir { path: path.display().to_string(), reason };
        let db = Database::create(path).map_err(|e| err(format!("cannot open the KV store: {e}")))?;
        KvStore::with_database(db).map_err(err)
    }

    /// Creates the tables of a newly opened database, and the totals if the
    /// data has none.
    fn with_database(db: Database) -> Result<KvStore, String> {
        let tx = db.begin_write().map_err(|x| x.to_string())?;
        let has_totals = tx.list_tables().map_err(|x| x.to_string())?.any(|t| t.name() == TOTALS.name());
        {
            let data = tx.open_table(TABLE).map_err(|x| x.to_string())?;
            let mut totals = tx.open_table(TOTALS).map_err(|x| x.to_string())?;
            if !has_totals {
                let mut counted: BTreeMap<String, NamespaceTotals> = BTreeMap::new();
                for entry in data.iter().map_err(|x| x.to_string())? {
                    let (k, v) = entry.map_err(|x| x.to_string())?;
                    let (ns, key) = k.value();
                    let t = counted.entry(ns.to_string()).or_default();
                    *t = t.plus(NamespaceTotals::entry(key, v.value().len()));
                }
                for (ns, t) in counted {
                    totals.insert(ns.as_str(), (t.keys, t.bytes)).map_err(|x| x.to_string())?;
                }
            }
        }
        tx.commit().map_err(|x| x.to_string())?;
        Ok(KvStore { db })
    }

    /// The underlying database, shared with the task journal.
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// What `namespace` holds, as kept with the data.
    pub fn totals(&self, namespace: &str) -> Result<NamespaceTotals, String> {
        let tx = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = tx.open_table(TOTALS).map_err(|e| e.to_string())?;
        let row = table.get(namespace).map_err(|e| e.to_string())?;
        Ok(row.map(|r| r.value()).map(|(keys, bytes)| NamespaceTotals { keys, bytes }).unwrap_or_default())
    }

    /// What `namespace` holds, counted entry by entry (a check of
    /// [`Self::totals`]; it reads the whole namespace).
    pub fn recount(&self, namespace: &str) -> Result<NamespaceTotals, String> {
        let tx = self.db.begin_read().map_err(|e| e.to_string())?;
        let table = tx.open_table(TABLE).map_err(|e| e.to_string())?;
        let mut t = NamespaceTotals::default();
        let start = Bound::Included((namespace, ""));
        for entry in table.range::<(&str, &str)>((start, Bound::Unbounded)).map_err(|e| e.to_string())? {
            let (k, v) = entry.map_err(|e| e.to_string())?;
            let (ns, key) = k.value();
            if ns != namespace {
                break;
            }
            t = t.plus(NamespaceTotals::entry(key, v.value().len()));
        }
        Ok(t)
    }

    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let tx = self.db.begin_read().map_err(unavailable)?;
        let table = tx.open_table(TABLE).map_err(unavailable)?;
        Ok(table.get((ns, key)).map_err(unavailable)?.map(|v| v.value().to_vec()))
    }

    fn set(&self, ns: &str, key: &str, value: Vec<u8>, quota: Quota) -> Result<(), KvError> {
        self.update(ns, key, quota, |_| Ok((Change::Put(value), ())))
    }

    fn delete(&self, ns: &str, key: &str, quota: Quota) -> Result<bool, KvError> {
        self.update(ns, key, quota, |current| {
            Ok(if current.is_some() { (Change::Remove, true) } else { (Change::Keep, false) })
        })
    }

    fn increment(&self, ns: &str, key: &str, delta: i64, quota: Quota) -> Result<i64, KvError> {
        self.update(ns, key, quota, |current| {
            let current = match current {
                None => 0,
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| KvError::InvalidValue(format!("`{key}` does not hold a decimal integer")))?,
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| KvError::InvalidValue(format!("`{key}` would overflow a signed 64-bit integer")))?;
            Ok((Change::Put(next.to_string().into_bytes()), next))
        })
    }

    fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        quota: Quota,
    ) -> Result<bool, KvError> {
        self.update(ns, key, quota, |current| {
            Ok(if current == expected.as_deref() { (Change::Put(new), true) } else { (Change::Keep, false) })
        })
    }

    /// Changes one key as `decide` says from its current value, and the
    /// namespace totals with it, in one write transaction: committed only if
    /// the change is admitted by `quota`, aborted (nothing written) otherwise.
    fn update<R>(
        &self,
        ns: &str,
        key: &str,
        quota: Quota,
        decide: impl FnOnce(Option<&[u8]>) -> Result<(Change, R), KvError>,
    ) -> Result<R, KvError> {
        let tx = self.db.begin_write().map_err(unavailable)?;
        match Self::apply(&tx, ns, key, quota, decide) {
            Ok((true, r)) => {
                tx.commit().map_err(unavailable)?;
                Ok(r)
            }
            Ok((false, r)) => {
                tx.abort().map_err(unavailable)?;
                Ok(r)
            }
            Err(e) => {
                let _ = tx.abort();
                Err(e)
            }
        }
    }

    /// The body of [`Self::update`]; returns whether anything was written.
    fn apply<R>(
        tx: &WriteTransaction,
        ns: &str,
        key: &str,
        quota: Quota,
        decide: impl FnOnce(Option<&[u8]>) -> Result<(Change, R), KvError>,
    ) -> Result<(bool, R), KvError> {
        let mut data = tx.open_table(TABLE).map_err(unavailable)?;
        let mut totals = tx.open_table(TOTALS).map_err(unavailable)?;
        let (old_len, (change, r)) = {
            let current = data.get((ns, key)).map_err(unavailable)?;
            let value = current.as_ref().map(|v| v.value());
            (value.map(<[u8]>::len), decide(value)?)
        };
        let new_len = match &change {
            Change::Keep => return Ok((false, r)),
            Change::Put(v) => Some(v.len()),
            Change::Remove if old_len.is_none() => return Ok((false, r)),
            Change::Remove => None,
        };
        let before = totals
            .get(ns)
            .map_err(unavailable)?
            .map(|t| t.value())
            .map(|(keys, bytes)| NamespaceTotals { keys, bytes })
            .unwrap_or_default();
        let size = |len: Option<usize>| len.map(|l| NamespaceTotals::entry(key, l)).unwrap_or_default();
        let after = before.minus(size(old_len)).plus(size(new_len));
        quota.admit(ns, before, after)?;
        match change {
            Change::Put(v) => {
                data.insert((ns, key), v.as_slice()).map_err(unavailable)?;
            }
            Change::Remove => {
                data.remove((ns, key)).map_err(unavailable)?;
            }
            Change::Keep => unreachable!("returned above"),
        }
        if after.keys == 0 {
            totals.remove(ns).map_err(unavailable)?;
        } else {
            totals.insert(ns, (after.keys, after.bytes)).map_err(unavailable)?;
        }
        Ok((true, r))
    }

    /// One page of keys of `ns` starting with `prefix`, after `after`: at
    /// most `limit` keys and [`MAX_PAGE_BYTES`] of them, each held against
    /// the instance's memory limit while the page is built. A page cut short
    /// has a next-cursor; one whose first key does not fit is refused.
    fn list(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        usage: &UsageCounters,
    ) -> Result<KeyPage, KvError> {
        let tx = self.db.begin_read().map_err(unavailable)?;
        let table = tx.open_table(TABLE).map_err(unavailable)?;
        let start = match after {
            Some(cursor) if cursor >= prefix => Bound::Excluded((ns, cursor)),
            _ => Bound::Included((ns, prefix)),
        };
        let mut held = Held { usage, bytes: 0 };
        let mut keys = Vec::new();
        let mut more = false;
        for entry in table.range::<(&str, &str)>((start, Bound::Unbounded)).map_err(unavailable)? {
            let (k, _) = entry.map_err(unavailable)?;
            let (entry_ns, key) = k.value();
            // The range is ordered by namespace first: leaving it ends the scan.
            if entry_ns != ns || !key.starts_with(prefix) {
                break;
            }
            let n = key.len() as u64;
            if keys.len() == limit || held.bytes + n > MAX_PAGE_BYTES {
                more = true;
                break;
            }
            if !usage.try_hold_host(n) {
                if keys.is_empty() {
                    return Err(KvError::TooLarge(format!(
                        "the next key is {n} bytes; the instance's memory limit ([limits] memory_mib) \
                         leaves no room for it"
                    )));
                }
                more = true;
                break;
            }
            held.bytes += n;
            keys.push(key.to_string());
        }
        drop(held);
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
    /// redb's cache; a thread hop would cost more than the read). A refusal
    /// by the store (a full namespace) is counted like any other.
    async fn kv_op<R: Send + 'static>(
        &mut self,
        write: bool,
        op: impl FnOnce(&KvStore, &str, Quota) -> Result<R, KvError> + Send + 'static,
    ) -> wasmtime::Result<Result<R, KvError>> {
        self.usage.count_call(Call::Kv);
        let Some(kv) = &self.kv else {
            return Ok(Err(KvError::Denied("kv is not granted".into())));
        };
        UsageCounters::add(if write { &self.usage.kv_writes } else { &self.usage.kv_reads }, 1);
        let quota = Quota::of(&kv.grant);
        let result = if write {
            let store = kv.store.clone();
            let ns = kv.namespace.clone();
            let usage = self.usage.clone();
            tokio::task::spawn_blocking(move || crate::cpu::charged(&usage, || op(&store, &ns, quota)))
                .await
                .unwrap_or_else(|e| Err(KvError::Unavailable(format!("store task failed: {e}"))))
        } else {
            op(&kv.store, &kv.namespace, quota)
        };
        if let Err(e) = &result {
            self.kv_denied(e);
        }
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

/// The `kv` operations, on keys and values already lifted and size-checked.
impl TaskState {
    async fn kv_get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, KvError>> {
        check!(self, self.kv_grant().and_then(|kv| kv.check_key(&key)));
        self.kv_op(false, move |s, ns, _| s.get(ns, &key)).await
    }

    async fn kv_set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), KvError>> {
        check!(self, self.kv_grant().and_then(|kv| kv.check_key(&key).and_then(|_| kv.check_write(value.len()))));
        self.kv_op(true, move |s, ns, quota| s.set(ns, &key, value, quota)).await
    }

    async fn kv_delete(&mut self, key: String) -> wasmtime::Result<Result<bool, KvError>> {
        check!(self, self.kv_grant().and_then(|kv| kv.check_key(&key).and_then(|_| kv.check_write(0))));
        self.kv_op(true, move |s, ns, quota| s.delete(ns, &key, quota)).await
    }

    async fn kv_list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<KeyPage, KvError>> {
        let max = match self.kv_grant() {
            Ok(kv) => kv.grant.max_page_keys,
            Err(e) => return Ok(Err(e)),
        };
        let limit = limit.clamp(1, max) as usize;
        let usage = self.usage.clone();
        self.kv_op(false, move |s, ns, _| s.list(ns, &prefix, cursor.as_deref(), limit, &usage)).await
    }

    async fn kv_increment(&mut self, key: String, delta: i64) -> wasmtime::Result<Result<i64, KvError>> {
        check!(self, self.kv_grant().and_then(|kv| kv.check_key(&key).and_then(|_| kv.check_write(20))));
        self.kv_op(true, move |s, ns, quota| s.increment(ns, &key, delta, quota)).await
    }

    async fn kv_compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> wasmtime::Result<Result<bool, KvError>> {
        check!(self, self.kv_grant().and_then(|kv| kv.check_key(&key).and_then(|_| kv.check_write(new.len()))));
        self.kv_op(true, move |s, ns, quota| s.compare_and_swap(ns, &key, expected, new, quota)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::backends::InMemoryBackend;

    fn store() -> KvStore {
        KvStore::with_database(Database::builder().create_with_backend(InMemoryBackend::new()).unwrap()).unwrap()
    }

    const ROOMY: Quota = Quota { max_keys: 1_000, max_bytes: 1 << 30 };

    fn totals(keys: u64, bytes: u64) -> NamespaceTotals {
        NamespaceTotals { keys, bytes }
    }

    /// The kept totals of `ns`, checked against a recount.
    fn kept(s: &KvStore, ns: &str) -> NamespaceTotals {
        let t = s.totals(ns).unwrap();
        assert_eq!(t, s.recount(ns).unwrap(), "the kept totals of `{ns}` drifted from the data");
        t
    }

    fn too_large(r: Result<impl std::fmt::Debug, KvError>) -> String {
        match r {
            Err(KvError::TooLarge(m)) => m,
            other => panic!("expected too-large, got {other:?}"),
        }
    }

    #[test]
    fn totals_follow_every_kind_of_write_exactly() {
        let s = store();
        s.set("a", "k1", b"abc".to_vec(), ROOMY).unwrap();
        assert_eq!(kept(&s, "a"), totals(1, 5));
        s.set("a", "k2", vec![0; 10], ROOMY).unwrap();
        assert_eq!(kept(&s, "a"), totals(2, 17));
        // An overwrite counts the difference, larger or smaller.
        s.set("a", "k1", vec![0; 7], ROOMY).unwrap();
        assert_eq!(kept(&s, "a"), totals(2, 21));
        s.set("a", "k1", Vec::new(), ROOMY).unwrap();
        assert_eq!(kept(&s, "a"), totals(2, 14));
        // increment: a new key "1", then "10".
        assert_eq!(s.increment("a", "n", 1, ROOMY).unwrap(), 1);
        assert_eq!(kept(&s, "a"), totals(3, 16));
        assert_eq!(s.increment("a", "n", 9, ROOMY).unwrap(), 10);
        assert_eq!(kept(&s, "a"), totals(3, 17));
        // A refused increment changes nothing.
        assert!(matches!(s.increment("a", "k2", 1, ROOMY), Err(KvError::InvalidValue(_))));
        assert_eq!(kept(&s, "a"), totals(3, 17));
        // compare-and-swap: absent -> value, a mismatch, a match.
        assert!(s.compare_and_swap("a", "c", None, b"xy".to_vec(), ROOMY).unwrap());
        assert_eq!(kept(&s, "a"), totals(4, 20));
        assert!(!s.compare_and_swap("a", "c", None, b"zzzz".to_vec(), ROOMY).unwrap());
        assert_eq!(kept(&s, "a"), totals(4, 20));
        assert!(s.compare_and_swap("a", "c", Some(b"xy".to_vec()), b"xyz".to_vec(), ROOMY).unwrap());
        assert_eq!(kept(&s, "a"), totals(4, 21));
        // delete frees the key and its bytes; deleting nothing changes nothing.
        assert!(s.delete("a", "k2", ROOMY).unwrap());
        assert_eq!(kept(&s, "a"), totals(3, 9));
        assert!(!s.delete("a", "k2", ROOMY).unwrap());
        assert_eq!(kept(&s, "a"), totals(3, 9));
        // Another namespace is counted apart.
        s.set("b", "k1", b"abc".to_vec(), ROOMY).unwrap();
        assert_eq!((kept(&s, "a"), kept(&s, "b")), (totals(3, 9), totals(1, 5)));
        for key in ["k1", "n", "c"] {
            assert!(s.delete("a", key, ROOMY).unwrap());
        }
        assert_eq!(kept(&s, "a"), totals(0, 0));
    }

    #[test]
    fn a_write_past_the_quota_is_refused_and_writes_nothing() {
        let s = store();
        let quota = Quota { max_keys: 2, max_bytes: 20 };
        s.set("q", "a", vec![1; 4], quota).unwrap();
        s.set("q", "b", vec![1; 4], quota).unwrap();
        assert_eq!(
            too_large(s.set("q", "c", vec![1; 1], quota)),
            "namespace `q` is full: it holds 2 keys / 10 bytes of max_keys = 2, max_bytes = 20; \
             this write would add 1 key / 2 bytes"
        );
        assert_eq!(s.get("q", "c").unwrap(), None);
        // Growing an existing value past max_bytes: refused, the old value kept.
        assert_eq!(
            too_large(s.set("q", "a", vec![2; 15], quota)),
            "namespace `q` is full: it holds 2 keys / 10 bytes of max_keys = 2, max_bytes = 20; \
             this write would add 0 keys / 11 bytes"
        );
        assert_eq!(s.get("q", "a").unwrap(), Some(vec![1; 4]));
        too_large(s.increment("q", "n", 1, quota));
        too_large(s.compare_and_swap("q", "c", None, vec![0], quota));
        assert_eq!(kept(&s, "q"), totals(2, 10));
        // Up to the quota exactly is fine.
        s.set("q", "a", vec![2; 14], quota).unwrap();
        assert_eq!(kept(&s, "q"), totals(2, 20));
        // A namespace over a smaller quota (another agent's, or a lowered
        // one) can still shrink: overwrites no larger, deletes.
        let small = Quota { max_keys: 1, max_bytes: 5 };
        s.set("q", "a", vec![2; 3], small).unwrap();
        assert!(s.delete("q", "b", small).unwrap());
        assert_eq!(kept(&s, "q"), totals(1, 4));
        // A freed key makes room again.
        s.set("q", "b", vec![1; 4], quota).unwrap();
        assert_eq!(kept(&s, "q"), totals(2, 9));
    }

    #[test]
    fn a_store_without_totals_gets_them_counted_at_open() {
        let db = Database::builder().create_with_backend(InMemoryBackend::new()).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(TABLE).unwrap();
            t.insert(("a", "one"), b"1".as_slice()).unwrap();
            t.insert(("a", "two"), b"22".as_slice()).unwrap();
            t.insert(("b", "x"), vec![0u8; 100].as_slice()).unwrap();
        }
        tx.commit().unwrap();
        let s = KvStore::with_database(db).unwrap();
        assert_eq!((kept(&s, "a"), kept(&s, "b"), kept(&s, "c")), (totals(2, 9), totals(1, 101), totals(0, 0)));
        // Writes go on from the counted totals.
        s.set("a", "three", b"333".to_vec(), ROOMY).unwrap();
        assert_eq!(kept(&s, "a"), totals(3, 17));
    }

    #[test]
    fn a_list_page_stops_at_its_byte_bound_and_at_the_memory_limit() {
        let s = store();
        let big = Quota { max_keys: 100, max_bytes: 1 << 30 };
        let key = |i: u32| format!("{i:08x}{}", "x".repeat(65528));
        for i in 0..20 {
            s.set("l", &key(i), Vec::new(), big).unwrap();
        }
        let usage = UsageCounters::new(1 << 30);
        let page = s.list("l", "", None, 10_000, &usage).unwrap();
        assert_eq!(page.keys.len(), 16);
        assert_eq!(page.next_cursor.as_deref(), Some(key(15).as_str()));
        assert_eq!(usage.peak_host_bytes.load(std::sync::atomic::Ordering::Relaxed), MAX_PAGE_BYTES);
        assert_eq!(usage.host_bytes.load(std::sync::atomic::Ordering::Relaxed), 0, "the page was not released");
        let page = s.list("l", "", page.next_cursor.as_deref(), 10_000, &usage).unwrap();
        assert_eq!((page.keys.len(), page.next_cursor), (4, None));

        // Room for 5 keys under the memory limit.
        let usage = UsageCounters::new(5 * 65536 + 100);
        let page = s.list("l", "", None, 10_000, &usage).unwrap();
        assert_eq!((page.keys.len(), page.next_cursor.as_deref()), (5, Some(key(4).as_str())));
        assert_eq!(usage.host_bytes.load(std::sync::atomic::Ordering::Relaxed), 0);
        // No room for one.
        let usage = UsageCounters::new(65535);
        assert_eq!(
            too_large(s.list("l", "", None, 10_000, &usage)),
            "the next key is 65536 bytes; the instance's memory limit ([limits] memory_mib) leaves no room for it"
        );
        // The key-count limit still applies.
        let page = s.list("l", "", None, 3, &UsageCounters::new(1 << 30)).unwrap();
        assert_eq!((page.keys.len(), page.next_cursor.as_deref()), (3, Some(key(2).as_str())));
    }
}
