//! The embedded KV backend on redb. Keys are stored as `(namespace, key)`
//! tuples. Every namespace's totals — keys, and bytes of keys and values —
//! live in a second table, updated in the same write transaction as the
//! data, so they are exact whatever writes race: a write that would take
//! the namespace past the writer's quota is refused and nothing of it is
//! written. No operation runs on an async worker: a commit (it syncs to
//! disk) runs on the blocking pool, and a read either there or in place
//! after its worker has handed its other tasks on (see `RedbKv::read`).

use redb::{Database, ReadableTable, TableDefinition, TableHandle, WriteTransaction};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;

use super::{KeyPage, KvBackend, KvStoreError, NamespaceTotals, PageBound, Quota};
use crate::cpu::CpuMeter;
use crate::error::HostError;

const TABLE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
/// Per namespace: (keys, bytes of keys and values).
const TOTALS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("kv_totals");

/// The KV store's page cache: room for the hot keys of every namespace.
const KV_CACHE_BYTES: usize = 64 << 20;

/// What a write does to its key, decided from the current value.
enum Change {
    Keep,
    Put(Vec<u8>),
    Remove,
}

/// The embedded KV backend: one redb file, shared by all agents of a host.
#[derive(Clone)]
pub struct RedbKv {
    db: Arc<Database>,
}

impl RedbKv {
    /// Opens (or creates) the store file at `path`. A store written before
    /// namespace totals were kept gets them computed here, once.
    pub fn open(path: &Path) -> Result<RedbKv, HostError> {
        let err = |reason: String| HostError::DataDir { path: path.display().to_string(), reason };
        let db = super::open_database(path, "the KV store", KV_CACHE_BYTES).map_err(HostError::StoreFile)?;
        RedbKv::with_database(db).map_err(err)
    }

    /// Creates the tables of a newly opened database, and the totals if the
    /// data has none.
    pub(crate) fn with_database(db: Database) -> Result<RedbKv, String> {
        let tx = db.begin_write().map_err(|x| x.to_string())?;
        let names: Vec<String> = tx.list_tables().map_err(|x| x.to_string())?.map(|t| t.name().to_string()).collect();
        let has_totals = names.iter().any(|n| n == TOTALS.name());
        let has_journal = names.iter().any(|n| n == "journal_tasks");
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
        if has_journal {
            tracing::warn!("this KV store also holds a task journal written by an older version; the scheduler now keeps its journal in journal.redb and does not read that one");
        }
        Ok(RedbKv { db: Arc::new(db) })
    }

    /// What `namespace` holds, as kept with the data.
    pub fn totals_now(&self, namespace: &str) -> Result<NamespaceTotals, String> {
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

    pub(crate) fn get_now(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, KvStoreError> {
        let tx = self.db.begin_read().map_err(unavailable)?;
        let table = tx.open_table(TABLE).map_err(unavailable)?;
        Ok(table.get((ns, key)).map_err(unavailable)?.map(|v| v.value().to_vec()))
    }

    /// The values at `keys` from one read transaction, each value's size
    /// checked against what is left of `max_bytes` before it is copied.
    pub(crate) fn get_many_now(
        &self,
        ns: &str,
        keys: &[String],
        max_bytes: u64,
    ) -> Result<Vec<Option<Vec<u8>>>, KvStoreError> {
        let tx = self.db.begin_read().map_err(unavailable)?;
        let table = tx.open_table(TABLE).map_err(unavailable)?;
        let mut left = max_bytes;
        let mut values = Vec::with_capacity(keys.len());
        for key in keys {
            let value = match table.get((ns, key.as_str())).map_err(unavailable)? {
                Some(guard) => {
                    let bytes = guard.value();
                    left = left.checked_sub(bytes.len() as u64).ok_or(KvStoreError::BatchTooLarge { max_bytes })?;
                    Some(bytes.to_vec())
                }
                None => None,
            };
            values.push(value);
        }
        Ok(values)
    }

    pub(crate) fn set_now(&self, ns: &str, key: &str, value: Vec<u8>, quota: Quota) -> Result<(), KvStoreError> {
        self.update(ns, key, quota, |_| Ok((Change::Put(value), ())))
    }

    pub(crate) fn delete_now(&self, ns: &str, key: &str) -> Result<bool, KvStoreError> {
        // A delete never grows the namespace: no quota can refuse it.
        let quota = Quota { max_keys: u64::MAX, max_bytes: u64::MAX };
        self.update(ns, key, quota, |current| {
            Ok(if current.is_some() { (Change::Remove, true) } else { (Change::Keep, false) })
        })
    }

    pub(crate) fn increment_now(&self, ns: &str, key: &str, delta: i64, quota: Quota) -> Result<i64, KvStoreError> {
        self.update(ns, key, quota, |current| {
            let current = match current {
                None => 0,
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .ok_or_else(|| KvStoreError::InvalidValue(format!("`{key}` does not hold a decimal integer")))?,
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| KvStoreError::InvalidValue(format!("`{key}` would overflow a signed 64-bit integer")))?;
            Ok((Change::Put(next.to_string().into_bytes()), next))
        })
    }

    pub(crate) fn compare_and_swap_now(
        &self,
        ns: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        quota: Quota,
    ) -> Result<bool, KvStoreError> {
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
        decide: impl FnOnce(Option<&[u8]>) -> Result<(Change, R), KvStoreError>,
    ) -> Result<R, KvStoreError> {
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
        decide: impl FnOnce(Option<&[u8]>) -> Result<(Change, R), KvStoreError>,
    ) -> Result<(bool, R), KvStoreError> {
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

    /// One page of keys of `ns` starting with `prefix`, after `after`,
    /// within `bound`. A page cut short has a next cursor; one whose first
    /// key does not fit is refused.
    pub(crate) fn list_now(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        bound: PageBound,
    ) -> Result<KeyPage, KvStoreError> {
        let tx = self.db.begin_read().map_err(unavailable)?;
        let table = tx.open_table(TABLE).map_err(unavailable)?;
        let start = match after {
            Some(cursor) if cursor >= prefix => Bound::Excluded((ns, cursor)),
            _ => Bound::Included((ns, prefix)),
        };
        let mut bytes = 0;
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
            if keys.len() == bound.max_keys || bytes + n > bound.max_bytes {
                if keys.is_empty() {
                    return Err(KvStoreError::PageTooSmall { next_key_bytes: n });
                }
                more = true;
                break;
            }
            bytes += n;
            keys.push(key.to_string());
        }
        let next_cursor = if more { keys.last().cloned() } else { None };
        Ok(KeyPage { keys, next_cursor })
    }
}

fn unavailable(e: impl std::fmt::Display) -> KvStoreError {
    KvStoreError::Unavailable(e.to_string())
}

impl RedbKv {
    /// Runs a read. On a multi-thread runtime it runs here, with the
    /// worker's other tasks handed to another thread first
    /// (`block_in_place`): this thread stops being an async worker while it
    /// reads, and the read pays no thread hop. The read's time is charged by
    /// the poll it runs in. Elsewhere (a current-thread runtime) it goes to
    /// the blocking pool like a write.
    async fn read<R: Send + 'static>(
        &self,
        cpu: &CpuMeter,
        op: impl FnOnce(&RedbKv) -> Result<R, KvStoreError> + Send + 'static,
    ) -> Result<R, KvStoreError> {
        let multi_thread = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if multi_thread {
            tokio::task::block_in_place(|| op(self))
        } else {
            self.blocking(cpu, op).await
        }
    }

    /// Runs `op` on a blocking thread, charging its CPU to the task.
    async fn blocking<R: Send + 'static>(
        &self,
        cpu: &CpuMeter,
        op: impl FnOnce(&RedbKv) -> Result<R, KvStoreError> + Send + 'static,
    ) -> Result<R, KvStoreError> {
        let (store, cpu) = (self.clone(), cpu.clone());
        tokio::task::spawn_blocking(move || cpu.charge(|| op(&store)))
            .await
            .unwrap_or_else(|e| Err(KvStoreError::Unavailable(format!("store task failed: {e}"))))
    }
}

#[async_trait::async_trait]
impl KvBackend for RedbKv {
    async fn get(&self, ns: &str, key: &str, cpu: &CpuMeter) -> Result<Option<Vec<u8>>, KvStoreError> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.read(cpu, move |s| s.get_now(&ns, &key)).await
    }

    async fn get_many(
        &self,
        ns: &str,
        keys: &[String],
        max_bytes: u64,
        cpu: &CpuMeter,
    ) -> Result<Vec<Option<Vec<u8>>>, KvStoreError> {
        let (ns, keys) = (ns.to_string(), keys.to_vec());
        self.read(cpu, move |s| s.get_many_now(&ns, &keys, max_bytes)).await
    }

    async fn set(&self, ns: &str, key: &str, value: Vec<u8>, quota: Quota, cpu: &CpuMeter) -> Result<(), KvStoreError> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.blocking(cpu, move |s| s.set_now(&ns, &key, value, quota)).await
    }

    async fn delete(&self, ns: &str, key: &str, cpu: &CpuMeter) -> Result<bool, KvStoreError> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.blocking(cpu, move |s| s.delete_now(&ns, &key)).await
    }

    async fn increment(
        &self,
        ns: &str,
        key: &str,
        delta: i64,
        quota: Quota,
        cpu: &CpuMeter,
    ) -> Result<i64, KvStoreError> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.blocking(cpu, move |s| s.increment_now(&ns, &key, delta, quota)).await
    }

    async fn compare_and_swap(
        &self,
        ns: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        quota: Quota,
        cpu: &CpuMeter,
    ) -> Result<bool, KvStoreError> {
        let (ns, key) = (ns.to_string(), key.to_string());
        self.blocking(cpu, move |s| s.compare_and_swap_now(&ns, &key, expected, new, quota)).await
    }

    async fn list_keys(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        bound: PageBound,
        cpu: &CpuMeter,
    ) -> Result<KeyPage, KvStoreError> {
        let (ns, prefix, after) = (ns.to_string(), prefix.to_string(), after.map(str::to_string));
        self.read(cpu, move |s| s.list_now(&ns, &prefix, after.as_deref(), bound)).await
    }

    async fn totals(&self, ns: &str) -> Result<NamespaceTotals, KvStoreError> {
        let ns = ns.to_string();
        self.read(&CpuMeter::none(), move |s| s.totals_now(&ns).map_err(KvStoreError::Unavailable)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::backends::InMemoryBackend;

    fn store() -> RedbKv {
        RedbKv::with_database(Database::builder().create_with_backend(InMemoryBackend::new()).unwrap()).unwrap()
    }

    const ROOMY: Quota = Quota { max_keys: 1_000, max_bytes: 1 << 30 };

    fn totals(keys: u64, bytes: u64) -> NamespaceTotals {
        NamespaceTotals { keys, bytes }
    }

    /// The kept totals of `ns`, checked against a recount.
    fn kept(s: &RedbKv, ns: &str) -> NamespaceTotals {
        let t = s.totals_now(ns).unwrap();
        assert_eq!(t, s.recount(ns).unwrap(), "the kept totals of `{ns}` drifted from the data");
        t
    }

    fn too_large(r: Result<impl std::fmt::Debug, KvStoreError>) -> String {
        match r {
            Err(KvStoreError::QuotaExceeded(m)) => m,
            other => panic!("expected quota-exceeded, got {other:?}"),
        }
    }

    #[test]
    fn totals_follow_every_kind_of_write_exactly() {
        let s = store();
        s.set_now("a", "k1", b"abc".to_vec(), ROOMY).unwrap();
        assert_eq!(kept(&s, "a"), totals(1, 5));
        s.set_now("a", "k2", vec![0; 10], ROOMY).unwrap();
        assert_eq!(kept(&s, "a"), totals(2, 17));
        // An overwrite counts the difference, larger or smaller.
        s.set_now("a", "k1", vec![0; 7], ROOMY).unwrap();
        assert_eq!(kept(&s, "a"), totals(2, 21));
        s.set_now("a", "k1", Vec::new(), ROOMY).unwrap();
        assert_eq!(kept(&s, "a"), totals(2, 14));
        // increment: a new key "1", then "10".
        assert_eq!(s.increment_now("a", "n", 1, ROOMY).unwrap(), 1);
        assert_eq!(kept(&s, "a"), totals(3, 16));
        assert_eq!(s.increment_now("a", "n", 9, ROOMY).unwrap(), 10);
        assert_eq!(kept(&s, "a"), totals(3, 17));
        // A refused increment changes nothing.
        assert!(matches!(s.increment_now("a", "k2", 1, ROOMY), Err(KvStoreError::InvalidValue(_))));
        assert_eq!(kept(&s, "a"), totals(3, 17));
        // compare-and-swap: absent -> value, a mismatch, a match.
        assert!(s.compare_and_swap_now("a", "c", None, b"xy".to_vec(), ROOMY).unwrap());
        assert_eq!(kept(&s, "a"), totals(4, 20));
        assert!(!s.compare_and_swap_now("a", "c", None, b"zzzz".to_vec(), ROOMY).unwrap());
        assert_eq!(kept(&s, "a"), totals(4, 20));
        assert!(s.compare_and_swap_now("a", "c", Some(b"xy".to_vec()), b"xyz".to_vec(), ROOMY).unwrap());
        assert_eq!(kept(&s, "a"), totals(4, 21));
        // delete frees the key and its bytes; deleting nothing changes nothing.
        assert!(s.delete_now("a", "k2").unwrap());
        assert_eq!(kept(&s, "a"), totals(3, 9));
        assert!(!s.delete_now("a", "k2").unwrap());
        assert_eq!(kept(&s, "a"), totals(3, 9));
        // Another namespace is counted apart.
        s.set_now("b", "k1", b"abc".to_vec(), ROOMY).unwrap();
        assert_eq!((kept(&s, "a"), kept(&s, "b")), (totals(3, 9), totals(1, 5)));
        for key in ["k1", "n", "c"] {
            assert!(s.delete_now("a", key).unwrap());
        }
        assert_eq!(kept(&s, "a"), totals(0, 0));
    }

    #[test]
    fn a_write_past_the_quota_is_refused_and_writes_nothing() {
        let s = store();
        let quota = Quota { max_keys: 2, max_bytes: 20 };
        s.set_now("q", "a", vec![1; 4], quota).unwrap();
        s.set_now("q", "b", vec![1; 4], quota).unwrap();
        assert_eq!(
            too_large(s.set_now("q", "c", vec![1; 1], quota)),
            "namespace `q` is full: it holds 2 keys / 10 bytes of max_keys = 2, max_bytes = 20; \
             this write would add 1 key / 2 bytes"
        );
        assert_eq!(s.get_now("q", "c").unwrap(), None);
        // Growing an existing value past max_bytes: refused, the old value kept.
        assert_eq!(
            too_large(s.set_now("q", "a", vec![2; 15], quota)),
            "namespace `q` is full: it holds 2 keys / 10 bytes of max_keys = 2, max_bytes = 20; \
             this write would add 0 keys / 11 bytes"
        );
        assert_eq!(s.get_now("q", "a").unwrap(), Some(vec![1; 4]));
        too_large(s.increment_now("q", "n", 1, quota));
        too_large(s.compare_and_swap_now("q", "c", None, vec![0], quota));
        assert_eq!(kept(&s, "q"), totals(2, 10));
        // Up to the quota exactly is fine.
        s.set_now("q", "a", vec![2; 14], quota).unwrap();
        assert_eq!(kept(&s, "q"), totals(2, 20));
        // A namespace over a smaller quota (another agent's, or a lowered
        // one) can still shrink: overwrites no larger, deletes.
        let small = Quota { max_keys: 1, max_bytes: 5 };
        s.set_now("q", "a", vec![2; 3], small).unwrap();
        assert!(s.delete_now("q", "b").unwrap());
        assert_eq!(kept(&s, "q"), totals(1, 4));
        // A freed key makes room again.
        s.set_now("q", "b", vec![1; 4], quota).unwrap();
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
        let s = RedbKv::with_database(db).unwrap();
        assert_eq!((kept(&s, "a"), kept(&s, "b"), kept(&s, "c")), (totals(2, 9), totals(1, 101), totals(0, 0)));
        // Writes go on from the counted totals.
        s.set_now("a", "three", b"333".to_vec(), ROOMY).unwrap();
        assert_eq!(kept(&s, "a"), totals(3, 17));
    }

    #[test]
    fn get_many_reads_in_order_and_stops_at_its_byte_bound() {
        let s = store();
        s.set_now("a", "k1", vec![1; 100], ROOMY).unwrap();
        s.set_now("a", "k2", vec![2; 100], ROOMY).unwrap();
        s.set_now("b", "k3", vec![3; 5], ROOMY).unwrap();
        let keys: Vec<String> = ["k2", "k3", "k1"].iter().map(|k| k.to_string()).collect();
        // k3 is another namespace's: absent here.
        assert_eq!(s.get_many_now("a", &keys, 200).unwrap(), vec![Some(vec![2; 100]), None, Some(vec![1; 100])]);
        assert_eq!(s.get_many_now("a", &keys, 199), Err(KvStoreError::BatchTooLarge { max_bytes: 199 }));
        assert_eq!(s.get_many_now("a", &[], 0).unwrap(), Vec::<Option<Vec<u8>>>::new());
    }

    #[test]
    fn a_list_page_stops_at_its_bounds() {
        let s = store();
        let big = Quota { max_keys: 100, max_bytes: 1 << 30 };
        let key = |i: u32| format!("{i:08x}{}", "x".repeat(65528));
        for i in 0..20 {
            s.set_now("l", &key(i), Vec::new(), big).unwrap();
        }
        let bound = |max_keys, max_bytes| PageBound { max_keys, max_bytes };
        let page = s.list_now("l", "", None, bound(10_000, 1 << 20)).unwrap();
        assert_eq!(page.keys.len(), 16);
        assert_eq!(page.next_cursor.as_deref(), Some(key(15).as_str()));
        let page = s.list_now("l", "", page.next_cursor.as_deref(), bound(10_000, 1 << 20)).unwrap();
        assert_eq!((page.keys.len(), page.next_cursor), (4, None));
        // Room for 5 keys.
        let page = s.list_now("l", "", None, bound(10_000, 5 * 65536 + 100)).unwrap();
        assert_eq!((page.keys.len(), page.next_cursor.as_deref()), (5, Some(key(4).as_str())));
        // No room for one.
        assert_eq!(
            s.list_now("l", "", None, bound(10_000, 65535)),
            Err(KvStoreError::PageTooSmall { next_key_bytes: 65536 })
        );
        // The key-count bound.
        let page = s.list_now("l", "", None, bound(3, 1 << 30)).unwrap();
        assert_eq!((page.keys.len(), page.next_cursor.as_deref()), (3, Some(key(2).as_str())));
    }
}
