//! The WebAssembly proposals the engine accepts, pinned for untrusted code.
//!
//! wasmtime's defaults follow the 3.0 draft and change between releases;
//! for a host of untrusted code each proposal is a surface, so the set is
//! written out here and nothing else is on: no threads (shared memory), no
//! 64-bit memories, no GC or typed function references, no exceptions, no
//! stack switching, no component-model async. Relaxed SIMD is on, in its
//! deterministic form, so a result never depends on the machine.

use wasmtime::{Config, WasmFeatures};

/// Every proposal that is on, by name.
pub(crate) const ENABLED: &[(&str, WasmFeatures)] = &[
    ("floats", WasmFeatures::FLOATS),
    ("mutable-global", WasmFeatures::MUTABLE_GLOBAL),
    ("saturating-float-to-int", WasmFeatures::SATURATING_FLOAT_TO_INT),
    ("sign-extension", WasmFeatures::SIGN_EXTENSION),
    ("multi-value", WasmFeatures::MULTI_VALUE),
    ("bulk-memory", WasmFeatures::BULK_MEMORY),
    ("reference-types", WasmFeatures::REFERENCE_TYPES),
    ("simd", WasmFeatures::SIMD),
    ("relaxed-simd (deterministic)", WasmFeatures::RELAXED_SIMD),
    ("tail-call", WasmFeatures::TAIL_CALL),
    ("extended-const", WasmFeatures::EXTENDED_CONST),
    ("multi-memory", WasmFeatures::MULTI_MEMORY),
    ("component-model", WasmFeatures::COMPONENT_MODEL),
];

/// Sets exactly [`ENABLED`] on `config`.
pub(crate) fn pin(config: &mut Config) {
    config.wasm_features(WasmFeatures::all(), false);
    for (_, feature) in ENABLED {
        config.wasm_features(*feature, true);
    }
    config.relaxed_simd_deterministic(true);
}

/// The names of the proposals `engine` accepts, read from the engine
/// itself; `None` if it accepts any proposal outside [`ENABLED`].
pub(crate) fn enabled_in(engine: &wasmtime::Engine) -> Option<Vec<&'static str>> {
    let on = engine.get_wasm_features();
    let pinned = ENABLED.iter().fold(WasmFeatures::empty(), |all, (_, f)| all | *f);
    (on == pinned).then(|| ENABLED.iter().map(|(name, _)| *name).collect())
}
