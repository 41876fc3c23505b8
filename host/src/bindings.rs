//! Host-side bindings for the `chimera:agent/agent` world in `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "chimera:agent/agent",
    imports: { default: async | trappable },
    exports: { default: async },
});
