//! The floor every Chimera benchmark is measured against: raw wasmtime on
//! the same component, with the same pooling tuning, a minimal store and no
//! Chimera code.

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "chimera:agent/agent",
        exports: { default: async },
    });
}

/// The minimal store a raw embedding needs to satisfy a wasip2 component.
pub struct FloorState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for FloorState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Raw wasmtime: pooling with `linear_memory_keep_resident` and
/// `pagemap_scan`, `InstancePre`, the whole WASI p2 linked.
pub struct Floor {
    pre: bindings::AgentPre<FloorState>,
    engine: Engine,
    epochs: bool,
}

impl Floor {
    pub fn new(component: &[u8]) -> Floor {
        Floor::new_sized(component, 16)
    }

    /// A floor whose pool holds `instances` live instances.
    pub fn new_sized(component: &[u8], instances: u32) -> Floor {
        Floor::build(component, instances, false)
    }

    /// The floor with epoch interruption compiled in (as Chimera needs for
    /// its CPU limit) and a deadline that never comes: what those checks
    /// cost on their own.
    pub fn with_epoch_checks(component: &[u8]) -> Floor {
        Floor::build(component, 16, true)
    }

    fn build(component: &[u8], instances: u32, epochs: bool) -> Floor {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            .total_core_instances(instances * 8)
            .total_memories(instances * 2)
            .total_tables(instances * 4)
            .total_stacks(instances)
            .max_memory_size(1 << 30)
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(64 << 10)
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        config.epoch_interruption(epochs);
        let engine = Engine::new(&config).unwrap();
        let component = Component::new(&engine, component).unwrap();
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
        let pre = bindings::AgentPre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
        Floor { pre, engine, epochs }
    }

    /// One instance kept for repeated calls: the floor of a warm call.
    pub async fn warm(&self) -> FloorWarm {
        let mut store =
            Store::new(&self.engine, FloorState { wasi: WasiCtx::builder().build(), table: ResourceTable::new() });
        if self.epochs {
            store.set_epoch_deadline(u64::MAX);
        }
        let instance = self.pre.instantiate_async(&mut store).await.unwrap();
        FloorWarm { store, instance }
    }

    /// `n` tasks on two threads at once (half each), each a store +
    /// instantiate + call + drop: the floor of a batch's throughput.
    pub async fn run_on_two_threads(self: &std::sync::Arc<Self>, n: usize, input: &'static str) {
        let halves = (0..2).map(|_| {
            let floor = self.clone();
            tokio::spawn(async move {
                for _ in 0..n / 2 {
                    floor.run(input).await;
                }
            })
        });
        for half in halves.collect::<Vec<_>>() {
            half.await.unwrap();
        }
    }

    /// Store + instantiate + call + drop.
    pub async fn run(&self, input: &str) -> String {
        let mut store =
            Store::new(&self.engine, FloorState { wasi: WasiCtx::builder().build(), table: ResourceTable::new() });
        if self.epochs {
            store.set_epoch_deadline(u64::MAX);
        }
        let agent = self.pre.instantiate_async(&mut store).await.unwrap();
        agent.call_run(&mut store, input).await.unwrap().unwrap()
    }
}

/// A raw wasmtime instance kept between calls.
pub struct FloorWarm {
    store: Store<FloorState>,
    instance: bindings::Agent,
}

impl FloorWarm {
    /// Calls `run` on the live instance.
    pub async fn call(&mut self, input: &str) -> String {
        self.instance.call_run(&mut self.store, input).await.unwrap().unwrap()
    }
}
