//! `chimera:agent/kv`: a durable key-value store behind the host's
//! [`KvBackend`]. The namespace comes from the policy, so no key a guest can
//! spell reaches another agent's data.
//!
//! Every namespace has a quota (`max_keys`, `max_bytes` in
//! `[capabilities.kv]`), enforced by the backend atomically with each write:
//! a write that would take the namespace past the writer's quota is refused
//! with `too-large` and nothing of it is written.

use serde::{Deserialize, Serialize};
use std::sync::Arc;
use wasmtime::component::{Linker, WasmList};
use wasmtime::StoreContextMut;

use crate::bindings::chimera::agent::kv::{KeyPage, KvError};
use crate::capability::{
    to_json, Capability, Counters, CpuMeter, Decision, Interface, LoadContext, TaskContext, TaskHandle,
};
use crate::error::PolicyError;
use crate::guest_args::GuestStr;
use crate::policy::{check_name, check_range, PolicySection};
use crate::storage::{KvBackend, KvStoreError, PageBound, Quota};
use crate::task_data::TaskData;

/// Most key bytes one `list-keys` page carries; the instance's memory limit
/// may stop it sooner.
pub const MAX_PAGE_BYTES: u64 = 1 << 20;

/// Most value bytes one get-many call carries; the instance's memory limit
/// may stop it sooner.
pub const MAX_BATCH_BYTES: u64 = 64 << 20;

/// An oversized key whose decoding could cost at most this much is decoded
/// to report its exact size (no more than an accepted key can cost); a
/// larger one is refused from its length alone.
const DECODE_FOR_MESSAGE: usize = 64 << 10;

/// `[capabilities.kv]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KvGrant {
    /// The namespace all keys live in. Defaults to the agent's name.
    pub namespace: Option<String>,
    /// Only get and list-keys are allowed.
    pub read_only: bool,
    /// Longest key, in bytes.
    pub max_key_bytes: u64,
    /// Largest value, in bytes.
    pub max_value_bytes: u64,
    /// Most keys returned by one list-keys call (a page also stops at 1 MiB
    /// of keys, or sooner if the instance's memory limit leaves less).
    pub max_page_keys: u32,
    /// Most keys one get-many call may read.
    pub max_batch_keys: u32,
    /// Most keys the namespace may hold. Agents sharing a namespace share
    /// its contents: the quota of the agent writing applies to them.
    pub max_keys: u64,
    /// Most bytes the namespace may hold, keys and values together.
    pub max_bytes: u64,
}

impl Default for KvGrant {
    fn default() -> Self {
        KvGrant {
            namespace: None,
            read_only: false,
            max_key_bytes: 512,
            max_value_bytes: 64 << 10,
            max_page_keys: 256,
            max_batch_keys: 256,
            max_keys: 10_000,
            max_bytes: 64 << 20,
        }
    }
}

impl PolicySection for KvGrant {
    const SECTION: &'static str = "capabilities.kv";
}

impl KvGrant {
    /// The namespace of `agent` under this grant.
    pub fn namespace_of(&self, agent: &str) -> String {
        self.namespace.clone().unwrap_or_else(|| agent.to_string())
    }

    fn quota(&self) -> Quota {
        Quota { max_keys: self.max_keys, max_bytes: self.max_bytes }
    }
}

const INTERFACES: &[Interface] = &[Interface::new("chimera:agent", "kv", "0.1.0")];

const CALLS: usize = 0;
const READS: usize = 1;
const WRITES: usize = 2;

/// The `kv` capability.
#[derive(Debug, Default)]
pub struct Kv;

/// What every task of one agent shares: its backend, namespace and grant.
pub struct KvShared {
    backend: Arc<dyn KvBackend>,
    namespace: Arc<str>,
    grant: KvGrant,
}

/// The `kv` capability as one task sees it.
pub struct KvTask {
    shared: Arc<KvShared>,
    task: TaskHandle,
    counters: Counters,
}

impl Capability for Kv {
    type Grant = KvGrant;
    type AgentState = Arc<KvShared>;
    type TaskState = KvTask;

    fn name(&self) -> &'static str {
        "kv"
    }

    fn section(&self) -> &'static str {
        KvGrant::SECTION
    }

    fn interfaces(&self) -> &[Interface] {
        INTERFACES
    }

    fn counters(&self) -> &'static [&'static str] {
        &["calls", "reads", "writes"]
    }

    fn validate(&self, g: &KvGrant) -> Result<(), PolicyError> {
        if let Some(ns) = &g.namespace {
            check_name("capabilities.kv.namespace", ns)?;
        }
        check_range("capabilities.kv.max_key_bytes", g.max_key_bytes, 1, 64 << 10)?;
        check_range("capabilities.kv.max_value_bytes", g.max_value_bytes, 1, 64 << 20)?;
        check_range("capabilities.kv.max_page_keys", g.max_page_keys.into(), 1, 10_000)?;
        check_range("capabilities.kv.max_batch_keys", g.max_batch_keys.into(), 1, 10_000)?;
        check_range("capabilities.kv.max_keys", g.max_keys, 1, 100_000_000)?;
        check_range("capabilities.kv.max_bytes", g.max_bytes, 1, 64 << 30)
    }

    fn decide(&self, _: &Interface, grant: Option<&KvGrant>) -> Decision {
        match grant {
            Some(g) => Decision::Granted(format!(
                "namespace {}, {}keys up to {} bytes, values up to {} bytes, \
                 at most {} keys / {} bytes in the namespace",
                g.namespace.as_deref().map(|n| format!("`{n}`")).unwrap_or_else(|| "= agent name".into()),
                if g.read_only { "read-only, " } else { "" },
                g.max_key_bytes,
                g.max_value_bytes,
                g.max_keys,
                g.max_bytes
            )),
            None => Decision::Refused("not granted; add a [capabilities.kv] section to the policy".into()),
        }
    }

    fn describe(&self, g: &KvGrant, agent: &str) -> Vec<String> {
        vec![format!("kv namespace: {}{}", g.namespace_of(agent), if g.read_only { " (read-only)" } else { "" })]
    }

    fn diff(&self, old: &KvGrant, new: &KvGrant) -> Vec<String> {
        let mut out = Vec::new();
        match (old.read_only, new.read_only) {
            (false, true) => out.push("loses kv write (now read-only)".to_string()),
            (true, false) => out.push("gains kv write (was read-only)".to_string()),
            _ => {}
        }
        let rest = |g: &KvGrant| KvGrant { read_only: false, ..g.clone() };
        out.extend(crate::audit::diff_fields("kv", &to_json(&rest(old)), &to_json(&rest(new))));
        out
    }

    fn link(&self, interface: &Interface, linker: &mut Linker<TaskData>) -> wasmtime::Result<()> {
        link_checked(interface, linker)
    }

    fn load(&self, grant: Option<&KvGrant>, cx: &LoadContext<'_>) -> Result<Arc<KvShared>, String> {
        let grant = grant.cloned().unwrap_or_default();
        let namespace = grant.namespace_of(cx.agent()).into();
        Ok(Arc::new(KvShared { backend: cx.kv_backend()?, namespace, grant }))
    }

    fn instantiate(&self, shared: &Arc<KvShared>, cx: &TaskContext<'_>) -> KvTask {
        KvTask { shared: shared.clone(), task: cx.task().clone(), counters: cx.counters() }
    }
}

/// Reads a key (or prefix, or cursor: `what`) from guest memory only if it
/// can be within the grant's size. One whose length alone puts it over the
/// limit is refused without being decoded, whatever its encoding, so a key
/// spanning the guest's whole memory in UTF-16 costs the host nothing.
fn lift_key(
    store: &StoreContextMut<'_, TaskData>,
    what: &str,
    key: &GuestStr,
) -> wasmtime::Result<Result<String, KvError>> {
    let max = store.data().state_ref::<KvTask>().shared.grant.max_key_bytes;
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

/// Reads the keys of a get-many call: their count checked against
/// `max_batch_keys` before any is read, each key as [`lift_key`] reads it,
/// and the decoded keys held against the instance's memory limit (the
/// caller releases them).
fn lift_keys(
    store: &mut StoreContextMut<'_, TaskData>,
    keys: &WasmList<GuestStr>,
) -> wasmtime::Result<Result<Vec<String>, KvError>> {
    let max = store.data().state_ref::<KvTask>().shared.grant.max_batch_keys as usize;
    if keys.len() > max {
        return Ok(Err(KvError::TooLarge(format!(
            "get-many asked for {} keys; the limit is {max} (max_batch_keys)",
            keys.len()
        ))));
    }
    let guest_keys: Vec<GuestStr> =
        (0..keys.len()).filter_map(|i| keys.get(&mut *store, i)).collect::<Result<_, _>>()?;
    let mut lifted: Vec<String> = Vec::with_capacity(guest_keys.len());
    let mut refusal = None;
    for (i, key) in guest_keys.iter().enumerate() {
        match lift_key(store, &format!("key {i}"), key) {
            Ok(Ok(key)) if store.data().state_ref::<KvTask>().task.try_hold_memory(key.len() as u64) => {
                lifted.push(key)
            }
            Ok(Ok(_)) => {
                refusal = Some(Ok(Err(KvError::TooLarge(
                    "the keys come to more than the instance's memory limit ([limits] memory_mib) leaves".into(),
                ))));
                break;
            }
            Ok(Err(e)) => {
                refusal = Some(Ok(Err(e)));
                break;
            }
            Err(trap) => {
                refusal = Some(Err(trap));
                break;
            }
        }
    }
    match refusal {
        None => Ok(Ok(lifted)),
        Some(r) => {
            store.data().state_ref::<KvTask>().task.release_memory(lifted.iter().map(|k| k.len() as u64).sum());
            r
        }
    }
}

/// Copies a value out of guest memory only if it is within the grant's size.
fn lift_value(store: &StoreContextMut<'_, TaskData>, value: &WasmList<u8>) -> Result<Vec<u8>, KvError> {
    let max = store.data().state_ref::<KvTask>().shared.grant.max_value_bytes;
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
                $store.data().state_ref::<KvTask>().denied(&e);
                return Ok((Err(e),));
            }
        }
    };
}

/// Links `kv`. Keys and values are taken as views of guest memory and
/// size-checked before the host copies (or decodes) them, so an oversized
/// argument costs the host no allocation; the operations themselves are
/// methods of [`KvTask`].
fn link_checked(interface: &Interface, l: &mut Linker<TaskData>) -> wasmtime::Result<()> {
    let mut i = l.instance(&interface.qualified())?;
    i.func_wrap_async("get", |mut store: StoreContextMut<'_, TaskData>, (key,): (GuestStr,)| {
        Box::new(async move {
            let key = lifted!(store, lift_key(&store, "key", &key)?);
            Ok((store.data_mut().state::<KvTask>().get(key).await?,))
        })
    })?;
    i.func_wrap_async("get-many", |mut store: StoreContextMut<'_, TaskData>, (keys,): (WasmList<GuestStr>,)| {
        Box::new(async move {
            let keys = lifted!(store, lift_keys(&mut store, &keys)?);
            let task = store.data_mut().state::<KvTask>();
            let result = task.get_many(&keys).await;
            task.task.release_memory(keys.iter().map(|k| k.len() as u64).sum());
            Ok((result?,))
        })
    })?;
    i.func_wrap_async("set", |mut store: StoreContextMut<'_, TaskData>, (key, value): (GuestStr, WasmList<u8>)| {
        Box::new(async move {
            let key = lifted!(store, lift_key(&store, "key", &key)?);
            let value = lifted!(store, lift_value(&store, &value));
            Ok((store.data_mut().state::<KvTask>().set(key, value).await?,))
        })
    })?;
    i.func_wrap_async("delete", |mut store: StoreContextMut<'_, TaskData>, (key,): (GuestStr,)| {
        Box::new(async move {
            let key = lifted!(store, lift_key(&store, "key", &key)?);
            Ok((store.data_mut().state::<KvTask>().delete(key).await?,))
        })
    })?;
    type ListParams = (GuestStr, Option<GuestStr>, u32);
    i.func_wrap_async("list-keys", |mut store: StoreContextMut<'_, TaskData>, (prefix, cursor, limit): ListParams| {
        Box::new(async move {
            let prefix = lifted!(store, lift_key(&store, "prefix", &prefix)?);
            let cursor = match cursor {
                Some(c) => Some(lifted!(store, lift_key(&store, "cursor", &c)?)),
                None => None,
            };
            Ok((store.data_mut().state::<KvTask>().list_keys(prefix, cursor, limit).await?,))
        })
    })?;
    i.func_wrap_async("increment", |mut store: StoreContextMut<'_, TaskData>, (key, delta): (GuestStr, i64)| {
        Box::new(async move {
            let key = lifted!(store, lift_key(&store, "key", &key)?);
            Ok((store.data_mut().state::<KvTask>().increment(key, delta).await?,))
        })
    })?;
    type CasParams = (GuestStr, Option<WasmList<u8>>, WasmList<u8>);
    i.func_wrap_async(
        "compare-and-swap",
        |mut store: StoreContextMut<'_, TaskData>, (key, expected, new): CasParams| {
            Box::new(async move {
                let key = lifted!(store, lift_key(&store, "key", &key)?);
                let expected = match expected {
                    Some(e) => Some(lifted!(store, lift_value(&store, &e))),
                    None => None,
                };
                let new = lifted!(store, lift_value(&store, &new));
                Ok((store.data_mut().state::<KvTask>().compare_and_swap(key, expected, new).await?,))
            })
        },
    )?;
    Ok(())
}

/// The guest's error for a store's refusal.
fn to_wit(e: KvStoreError, page_bytes: u64) -> KvError {
    match e {
        KvStoreError::QuotaExceeded(m) => KvError::TooLarge(m),
        KvStoreError::InvalidValue(m) => KvError::InvalidValue(m),
        KvStoreError::PageTooSmall { next_key_bytes } if page_bytes < MAX_PAGE_BYTES => KvError::TooLarge(format!(
            "the next key is {next_key_bytes} bytes; the instance's memory limit ([limits] memory_mib) leaves no room for it"
        )),
        KvStoreError::BatchTooLarge { max_bytes } => KvError::TooLarge(format!(
            "the values come to more than {max_bytes} bytes, what one get-many call may carry within the \
             instance's memory limit ([limits] memory_mib); read fewer keys at once"
        )),
        KvStoreError::PageTooSmall { next_key_bytes } => {
            KvError::TooLarge(format!("the next key is {next_key_bytes} bytes; a page holds at most {MAX_PAGE_BYTES}"))
        }
        other => KvError::Unavailable(other.to_string()),
    }
}

impl KvTask {
    fn check_key(&self, key: &str) -> Result<(), KvError> {
        let max = self.shared.grant.max_key_bytes;
        if key.is_empty() {
            return Err(KvError::InvalidKey("the key is empty".into()));
        }
        if key.len() as u64 > max {
            return Err(KvError::TooLarge(format!("key is {} bytes; the limit is {max} (max_key_bytes)", key.len())));
        }
        Ok(())
    }

    fn check_write(&self, value_len: usize) -> Result<(), KvError> {
        let g = &self.shared.grant;
        if g.read_only {
            return Err(KvError::Denied("this agent's KV grant is read-only".into()));
        }
        if value_len as u64 > g.max_value_bytes {
            return Err(KvError::TooLarge(format!(
                "value is {value_len} bytes; the limit is {} (max_value_bytes)",
                g.max_value_bytes
            )));
        }
        Ok(())
    }

    /// Counts a refused call under a fixed reason label.
    fn denied(&self, e: &KvError) {
        let reason = match e {
            KvError::Denied(_) => "denied",
            KvError::TooLarge(_) => "too-large",
            KvError::InvalidKey(_) => "invalid-key",
            KvError::InvalidValue(_) | KvError::Unavailable(_) => return,
        };
        self.task.count_denial("kv", reason);
    }

    /// Counts the call, checks it, and hands the store's answer back with
    /// refusals counted.
    async fn op<R>(
        &mut self,
        write: bool,
        check: Result<(), KvError>,
        page_bytes: u64,
        op: impl std::future::Future<Output = Result<R, KvStoreError>>,
    ) -> wasmtime::Result<Result<R, KvError>> {
        let result = match check {
            Ok(()) => {
                self.counters.add(CALLS, 1);
                self.counters.add(if write { WRITES } else { READS }, 1);
                op.await.map_err(|e| to_wit(e, page_bytes))
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.denied(e);
        }
        Ok(result)
    }

    fn parts(&self) -> (Arc<KvShared>, CpuMeter) {
        (self.shared.clone(), self.task.cpu())
    }

    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, KvError>> {
        let (s, cpu) = self.parts();
        let check = self.check_key(&key);
        self.op(false, check, 0, async { s.backend.get(&s.namespace, &key, &cpu).await }).await
    }

    async fn get_many(&mut self, keys: &[String]) -> wasmtime::Result<Result<Vec<Option<Vec<u8>>>, KvError>> {
        let (s, cpu) = self.parts();
        let check = keys.iter().try_for_each(|k| self.check_key(k));
        // The values are host memory held for the instance until they are
        // in its memory: at most what its limit leaves, and 64 MiB.
        let usage = &self.task.usage;
        let max_bytes = usage.memory_limit.saturating_sub(usage.current_bytes()).min(MAX_BATCH_BYTES);
        let task = self.task.clone();
        if check.is_ok() {
            // One call, a read per key (`op` counts the first).
            self.counters.add(READS, keys.len().saturating_sub(1) as u64);
        }
        self.op(false, check, 0, async {
            let values = s.backend.get_many(&s.namespace, keys, max_bytes, &cpu).await?;
            let bytes: u64 = values.iter().flatten().map(|v| v.len() as u64).sum();
            if !task.try_hold_memory(bytes) {
                return Err(KvStoreError::BatchTooLarge { max_bytes });
            }
            task.release_memory(bytes);
            Ok(values)
        })
        .await
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), KvError>> {
        let (s, cpu) = self.parts();
        let check = self.check_key(&key).and_then(|_| self.check_write(value.len()));
        let quota = s.grant.quota();
        self.op(true, check, 0, async { s.backend.set(&s.namespace, &key, value, quota, &cpu).await }).await
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, KvError>> {
        let (s, cpu) = self.parts();
        let check = self.check_key(&key).and_then(|_| self.check_write(0));
        self.op(true, check, 0, async { s.backend.delete(&s.namespace, &key, &cpu).await }).await
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        cursor: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<KeyPage, KvError>> {
        let (s, cpu) = self.parts();
        let max_keys = limit.clamp(1, s.grant.max_page_keys) as usize;
        // A page is host memory held for the instance: at most what its
        // memory limit leaves, and 1 MiB.
        let usage = &self.task.usage;
        let max_bytes = usage.memory_limit.saturating_sub(usage.current_bytes()).min(MAX_PAGE_BYTES);
        let bound = PageBound { max_keys, max_bytes };
        let task = self.task.clone();
        self.op(false, Ok(()), max_bytes, async {
            let page = s.backend.list_keys(&s.namespace, &prefix, cursor.as_deref(), bound, &cpu).await?;
            let bytes: u64 = page.keys.iter().map(|k| k.len() as u64).sum();
            if !task.try_hold_memory(bytes) {
                return Err(KvStoreError::PageTooSmall { next_key_bytes: bytes });
            }
            task.release_memory(bytes);
            Ok(KeyPage { keys: page.keys, next_cursor: page.next_cursor })
        })
        .await
    }

    async fn increment(&mut self, key: String, delta: i64) -> wasmtime::Result<Result<i64, KvError>> {
        let (s, cpu) = self.parts();
        let check = self.check_key(&key).and_then(|_| self.check_write(20));
        let quota = s.grant.quota();
        self.op(true, check, 0, async { s.backend.increment(&s.namespace, &key, delta, quota, &cpu).await }).await
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> wasmtime::Result<Result<bool, KvError>> {
        let (s, cpu) = self.parts();
        let check = self.check_key(&key).and_then(|_| self.check_write(new.len()));
        let quota = s.grant.quota();
        self.op(true, check, 0, async {
            s.backend.compare_and_swap(&s.namespace, &key, expected, new, quota, &cpu).await
        })
        .await
    }
}
