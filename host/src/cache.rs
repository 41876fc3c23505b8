//! The compiled-component cache: a component compiled once is serialized to
//! the data directory and reused on the next load, so a restart does not
//! recompile. Entries are keyed by the component's SHA-256 and the engine's
//! compatibility hash; each carries a SHA-256 of its own contents, checked
//! before use. A corrupt or stale entry is discarded and rebuilt, never
//! trusted. (The data directory must be writable only by the host's user:
//! a deserialized entry is native code.)

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

use crate::compile::CompileFailure;
use crate::metrics::Metrics;

pub(crate) struct CompileCache {
    dir: PathBuf,
    engine_key: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl CompileCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> CompileCache {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        CompileCache { dir, engine_key: format!("{:016x}", h.finish()) }
    }

    fn path_for(&self, component: &[u8]) -> PathBuf {
        self.dir.join(format!("{}-{}.cwasm", hex(&Sha256::digest(component)), self.engine_key))
    }

    /// The compiled component, from the cache when a valid entry exists;
    /// otherwise compiled with `compile` (to a serialized artifact) and stored.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        metrics: &Metrics,
        compile: impl FnOnce() -> Result<Vec<u8>, CompileFailure>,
    ) -> Result<Component, CompileFailure> {
        let path = self.path_for(bytes);
        match self.read(engine, &path) {
            Ok(Some(component)) => {
                metrics.compile_cache("hit");
                return Ok(component);
            }
            Ok(None) => metrics.compile_cache("miss"),
            Err(reason) => {
                tracing::warn!(path = %path.display(), "discarding compiled-component cache entry: {reason}");
                metrics.compile_cache(reason.kind());
                let _ = std::fs::remove_file(&path);
            }
        }
        let artifact = compile()?;
        let component = deserialize(engine, &artifact).map_err(CompileFailure::Unloadable)?;
        if let Err(e) = self.write(&path, &artifact) {
            tracing::warn!(path = %path.display(), "cannot write the compiled-component cache: {e}");
        }
        Ok(component)
    }

    fn read(&self, engine: &Engine, path: &Path) -> Result<Option<Component>, Discard> {
        let data = match std::fs::read(path) {
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Discard::Corrupt(e.to_string())),
        };
        if data.len() < 32 || Sha256::digest(&data[32..])[..] != data[..32] {
            return Err(Discard::Corrupt("its checksum does not match its contents".into()));
        }
        deserialize(engine, &data[32..]).map(Some).map_err(Discard::Stale)
    }

    fn write(&self, path: &Path, serialized: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let mut data = Sha256::digest(serialized).to_vec();
        data.extend_from_slice(serialized);
        // Write then rename, so a crash never leaves a half-written entry under the real name.
        // The temporary name is unique per writer: two hosts (or threads) may store one entry at once.
        let tmp = path.with_extension(format!("tmp{}-{:016x}", std::process::id(), rand::random::<u64>()));
        std::fs::write(&tmp, data)?;
        std::fs::rename(tmp, path)
    }
}

/// Loads an artifact this host compiled (in its worker or from its cache).
pub(crate) fn deserialize(engine: &Engine, artifact: &[u8]) -> Result<Component, String> {
    // SAFETY: the bytes were produced by this host's compile worker or read
    // from a cache entry whose checksum matches, in a directory only the
    // host writes; wasmtime also checks that they were made by a
    // compatible engine.
    unsafe { Component::deserialize(engine, artifact) }.map_err(|e| format!("{e:#}"))
}

#[derive(Debug)]
enum Discard {
    Corrupt(String),
    Stale(String),
}

impl Discard {
    fn kind(&self) -> &'static str {
        match self {
            Discard::Corrupt(_) => "corrupt",
            Discard::Stale(_) => "stale",
        }
    }
}

impl std::fmt::Display for Discard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Discard::Corrupt(r) => write!(f, "corrupt: {r}"),
            Discard::Stale(r) => write!(f, "stale: {r}"),
        }
    }
}
