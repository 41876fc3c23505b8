//! Host-wide configuration: the engine, its instance pool and the data directory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How a [`Host`](crate::Host) is set up. Per-agent limits live in each
/// agent's policy; these are the host-wide bounds they must fit in.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where the KV store lives (`kv.redb`). Created on first use.
    pub data_dir: PathBuf,
    /// Where the agents' KV data is kept: `kv.redb` in `data_dir` (the
    /// default) or a Redis server shared with other hosts.
    pub storage: crate::storage::StorageBackend,
    /// Use the pooling instance allocator (fast instantiation, tuned for
    /// reuse). Without it, every instance maps fresh memory.
    pub pooling: bool,
    /// Instances that can be alive at once (the pool size).
    pub max_instances: u32,
    /// Largest linear memory one instance may have, in MiB. A policy may not
    /// ask for more.
    pub max_memory_mib: u64,
    /// Most elements one table may grow to. A policy may not ask for more.
    pub max_table_elements: u64,
    /// Wasm stack for every task, in KiB.
    pub stack_kib: u64,
    /// Length of one epoch tick: the granularity of CPU accounting.
    pub epoch_tick: Duration,
    /// Linear memory kept resident in a pool slot between tenants (it is
    /// zeroed, not unmapped): the main cost saving of pooling.
    pub keep_resident_bytes: usize,
    /// Keep compiled components and reuse them on the next load (see the
    /// `cache` module docs).
    pub cache_compiled: bool,
    /// Where compiled components are kept; `data_dir/compiled` when unset.
    /// Hosts with the same engine settings may share one directory.
    pub compile_cache_dir: Option<PathBuf>,
    /// Record per-task metrics (on by default; off only to measure their cost).
    pub metrics: bool,
    /// Core instances one component may create, at most (an agent's
    /// `[limits] instances` must fit). The pool holds this many per
    /// instance slot, so no agent can take another's share.
    pub max_core_instances_per_component: u32,
    /// Linear memories one component may create, at most (an agent's
    /// `[limits] memories` must fit). The pool holds this many per slot.
    pub max_memories_per_component: u32,
    /// Tables one component may create, at most (an agent's `[limits]
    /// tables` must fit). The pool holds this many per slot.
    pub max_tables_per_component: u32,
    /// How components are compiled: in a budgeted child process (the
    /// default) or, for trusted components only, in this process.
    pub compiler: crate::compile::Compiler,
    /// What loading one component may cost: its size, compile time and
    /// compile memory.
    pub load_budget: crate::compile::LoadBudget,
    /// Names resolved to fixed addresses instead of through DNS (like
    /// `/etc/hosts`, for this host's outbound HTTP only). The addresses are
    /// vetted against the policy like any other.
    pub dns_overrides: HashMap<String, Vec<IpAddr>>,
    /// Secrets the host adds to agents' outbound requests where their
    /// policies say (`secret_headers`); agents never read them.
    pub secrets: crate::secrets::Secrets,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            data_dir: default_data_dir(),
            storage: crate::storage::StorageBackend::Embedded,
            pooling: true,
            max_instances: 1000,
            max_memory_mib: 1024,
            max_table_elements: 100_000,
            stack_kib: 512,
            epoch_tick: Duration::from_millis(5),
            keep_resident_bytes: 2 << 20,
            dns_overrides: HashMap::new(),
            secrets: crate::secrets::Secrets::default(),
            cache_compiled: true,
            compile_cache_dir: None,
            metrics: true,
            max_core_instances_per_component: 32,
            max_memories_per_component: 2,
            max_tables_per_component: 4,
            compiler: crate::compile::Compiler::Subprocess(None),
            load_budget: crate::compile::LoadBudget::default(),
        }
    }
}

/// `$CHIMERA_DATA_DIR`, else `$XDG_DATA_HOME/chimera`, else
/// `$HOME/.local/share/chimera`, else `./.chimera`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHIMERA_DATA_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("chimera");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/share/chimera");
    }
    PathBuf::from(".chimera")
}
