//! The engine and its instance pool, built from the host configuration,
//! and the epoch ticker that drives CPU accounting and interruption.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use wasmtime::Engine;

use crate::compile::EngineSettings;
use crate::config::HostConfig;
use crate::error::HostError;

/// Checks `config` and creates its engine (pooling allocator, epoch
/// interruption, the pinned proposals). Fails with a clear message if the
/// pool does not fit in the address space.
pub(crate) fn create(config: &HostConfig) -> Result<(Engine, EngineSettings), HostError> {
    if config.max_instances == 0 {
        return Err(HostError::Config("max_instances must be at least 1".into()));
    }
    if config.epoch_tick.is_zero() {
        return Err(HostError::Config("epoch_tick must be longer than zero".into()));
    }
    if !(16..=64 * 1024).contains(&config.stack_kib) {
        return Err(HostError::Config(format!("stack_kib is {}; it must be between 16 and 65536", config.stack_kib)));
    }
    let budget = &config.load_budget;
    if budget.compile_timeout_ms == 0 || budget.compile_memory_mib < 16 || budget.max_component_bytes < 8 {
        return Err(HostError::Config(format!(
            "load budget {budget:?}: compile_timeout_ms must be at least 1, compile_memory_mib at least 16 and \
             max_component_bytes at least 8"
        )));
    }
    if config.pooling
        && (config.max_core_instances_per_component == 0
            || config.max_memories_per_component == 0
            || config.max_tables_per_component == 0)
    {
        return Err(HostError::Config("the per-component instance, memory and table caps must be at least 1".into()));
    }
    let settings = settings_of(config);
    let engine = Engine::new(&settings.config(false)).map_err(|e| {
        HostError::Engine(format!(
            "{e}. The instance pool ({} instances, up to {} MiB of linear memory each) may not fit in this machine's \
             address space or memory limits: lower HostConfig::max_instances or max_memory_mib, or disable pooling",
            config.max_instances, config.max_memory_mib
        ))
    })?;
    Ok((engine, settings))
}

/// Advances the engine's epoch every tick, from a thread of its own.
pub(crate) struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine, tick: Duration) -> Result<EpochTicker, HostError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("chimera-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| HostError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(EpochTicker { stop, thread: Some(thread) })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The settings that decide compiled code, from the host configuration.
fn settings_of(c: &HostConfig) -> EngineSettings {
    EngineSettings {
        stack_kib: c.stack_kib,
        pooling: c.pooling,
        max_instances: c.max_instances,
        max_memory_mib: c.max_memory_mib,
        max_table_elements: c.max_table_elements,
        keep_resident_bytes: c.keep_resident_bytes,
        max_core_instances_per_component: c.max_core_instances_per_component,
        max_memories_per_component: c.max_memories_per_component,
        max_tables_per_component: c.max_tables_per_component,
    }
}
