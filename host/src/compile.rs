//! Compiling untrusted components under a budget.
//!
//! Compiling is the host's own work, and a component can be shaped to make
//! it enormous: a few hundred kilobytes crafted for the optimizer, or a
//! million empty functions, take tens of seconds and gigabytes. Inside the
//! serving process that would starve or abort it, and a compile cannot be
//! interrupted. So the host compiles in a child process (the `chimera`
//! binary, or any program that calls [`run_worker_if_asked`] first thing in
//! `main`), under `setrlimit` caps on data memory, CPU time and output size,
//! at a lower scheduling priority, and with a wall-clock deadline after
//! which it is killed. The child writes the compiled artifact to a file the
//! host then loads; the compiled-component cache keeps it.

use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use wasmtime::{Config, Engine};

/// The first argument that turns a program into a compile worker.
pub const WORKER_ARG: &str = "__chimera-compile-worker";

/// How the host compiles components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compiler {
    /// In a child process: this program run with [`WORKER_ARG`] (the
    /// `chimera` binary, or any program whose `main` calls
    /// [`run_worker_if_asked`]). `None` finds it: `$CHIMERA_COMPILE_WORKER`,
    /// else the running program if it called [`run_worker_if_asked`] or is `chimera`, else a `chimera` beside
    /// it or one directory up.
    Subprocess(Option<PathBuf>),
    /// In this process, with no memory or time budget: only for components
    /// the operator trusts (a hostile one can exhaust the process).
    InProcess,
}

/// What one load may cost the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBudget {
    /// Largest component accepted, in bytes.
    pub max_component_bytes: u64,
    /// Wall-clock time for one compile, in milliseconds (its CPU time is
    /// capped at this on every core).
    pub compile_timeout_ms: u64,
    /// Memory the compiler may use, in MiB (also the largest artifact).
    pub compile_memory_mib: u64,
}

impl Default for LoadBudget {
    fn default() -> Self {
        LoadBudget { max_component_bytes: 64 << 20, compile_timeout_ms: 30_000, compile_memory_mib: 1024 }
    }
}

/// Why a compile produced no component.
#[derive(Debug)]
pub(crate) enum CompileFailure {
    /// The bytes are not a valid component (wasmtime's reason).
    Invalid(String),
    /// A budget was exceeded: the limit's name and what happened.
    Budget { key: &'static str, detail: String },
    /// The worker could not be run or failed for a reason of its own.
    Worker(String),
    /// Compiled, but this host's engine cannot load it (e.g. it needs more
    /// of the instance pool than one instance may take).
    Unloadable(String),
}

/// The engine settings that decide what compiled code looks like: the host
/// and its compile worker build their engines from the same value, so the
/// worker's artifacts load in the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct EngineSettings {
    pub stack_kib: u64,
    pub pooling: bool,
    pub max_instances: u32,
    pub max_memory_mib: u64,
    pub max_table_elements: u64,
    pub keep_resident_bytes: usize,
    pub max_core_instances_per_component: u32,
    pub max_memories_per_component: u32,
    pub max_tables_per_component: u32,
}

impl EngineSettings {
    /// The engine configuration. `for_compiling` leaves out the instance pool:
    /// the pool decides where instances live, not what code is generated, and
    /// a worker need not reserve its address space.
    pub fn config(&self, for_compiling: bool) -> Config {
        use wasmtime::{Enabled, InstanceAllocationStrategy, PoolingAllocationConfig};
        let mut c = Config::new();
        crate::features::pin(&mut c);
        c.epoch_interruption(true);
        c.max_wasm_stack(self.stack_kib as usize * 1024);
        // The async fiber stack must hold the wasm stack plus host frames.
        c.async_stack_size((self.stack_kib as usize + 1024) * 1024);
        if self.pooling && !for_compiling {
            let n = self.max_instances;
            let mut pool = PoolingAllocationConfig::default();
            // Room for every slot to hold a component at the per-component
            // caps: no agent's instances can take another's share.
            pool.total_component_instances(n)
                .total_core_instances(n.saturating_mul(self.max_core_instances_per_component))
                .total_memories(n.saturating_mul(self.max_memories_per_component))
                .total_tables(n.saturating_mul(self.max_tables_per_component))
                .total_stacks(n)
                .max_core_instances_per_component(self.max_core_instances_per_component)
                .max_memories_per_component(self.max_memories_per_component)
                .max_tables_per_component(self.max_tables_per_component)
                .max_memory_size((self.max_memory_mib as usize) << 20)
                .table_elements(self.max_table_elements as usize)
                .linear_memory_keep_resident(self.keep_resident_bytes)
                .table_keep_resident(64 << 10)
                .pagemap_scan(Enabled::Auto);
            c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        c
    }
}

/// Runs the compile worker and exits if this process was started as one;
/// returns otherwise. Call it first thing in `main` of a program used as
/// [`Compiler::Subprocess`].
pub fn run_worker_if_asked() {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_none_or(|a| a != WORKER_ARG) {
        // This program can compile for its hosts: they run it as their worker.
        SELF_WORKER.store(true, std::sync::atomic::Ordering::Relaxed);
        return;
    }
    let code = match worker(args.map(PathBuf::from).collect()) {
        Ok(()) => 0,
        Err((code, message)) => {
            let _ = writeln!(std::io::stderr(), "{message}");
            code
        }
    };
    std::process::exit(code);
}

/// Exit status of a worker that found the component invalid.
const EXIT_INVALID: i32 = 3;
/// Exit status of a worker that failed for another reason.
const EXIT_FAILED: i32 = 4;

/// The worker: `WORKER_ARG <settings.json> <memory-bytes> <cpu-seconds> <out>`,
/// the component on stdin.
fn worker(args: Vec<PathBuf>) -> Result<(), (i32, String)> {
    let failed = |m: String| (EXIT_FAILED, m);
    let [settings, memory, cpu, out] =
        <[PathBuf; 4]>::try_from(args).map_err(|_| failed("bad worker arguments".into()))?;
    let settings: EngineSettings =
        serde_json::from_str(&settings.to_string_lossy()).map_err(|e| failed(format!("bad engine settings: {e}")))?;
    let memory: u64 = memory.to_string_lossy().parse().map_err(|_| failed("bad memory budget".into()))?;
    let cpu: u64 = cpu.to_string_lossy().parse().map_err(|_| failed("bad CPU budget".into()))?;
    limit_self(memory, cpu).map_err(|e| failed(format!("cannot set the compile budget: {e}")))?;
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes).map_err(|e| failed(format!("cannot read the component: {e}")))?;
    let engine = Engine::new(&settings.config(true)).map_err(|e| failed(format!("cannot create the engine: {e}")))?;
    let artifact = engine.precompile_component(&bytes).map_err(|e| (EXIT_INVALID, format!("{e:#}")))?;
    std::fs::write(&out, artifact).map_err(|e| failed(format!("cannot write {}: {e}", out.display())))
}

/// Caps this process: private writable memory (`RLIMIT_DATA`, which leaves
/// address-space reservations alone), CPU seconds, and the size of any file
/// it writes; and lowers its priority so serving threads win the CPU.
fn limit_self(memory: u64, cpu_seconds: u64) -> std::io::Result<()> {
    let set = |resource, value: u64| {
        let lim = libc::rlimit { rlim_cur: value as libc::rlim_t, rlim_max: value as libc::rlim_t };
        // SAFETY: setrlimit reads a valid, initialised struct.
        if unsafe { libc::setrlimit(resource, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    set(libc::RLIMIT_DATA, memory)?;
    set(libc::RLIMIT_CPU, cpu_seconds)?;
    set(libc::RLIMIT_FSIZE, memory)?;
    set(libc::RLIMIT_CORE, 0)?;
    // SAFETY: plain system call on this process.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
    Ok(())
}

/// The worker program for `compiler`, found as [`Compiler::Subprocess`] says.
/// Set once the running program has called [`run_worker_if_asked`].
static SELF_WORKER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub(crate) fn worker_program(configured: &Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = configured {
        return Ok(p.clone());
    }
    if let Some(p) = std::env::var_os("CHIMERA_COMPILE_WORKER") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the running program: {e}"))?;
    if SELF_WORKER.load(std::sync::atomic::Ordering::Relaxed) || exe.file_stem().is_some_and(|s| s == "chimera") {
        return Ok(exe);
    }
    let dirs = exe.parent().into_iter().chain(exe.parent().and_then(Path::parent));
    for dir in dirs {
        let candidate = dir.join(format!("chimera{}", std::env::consts::EXE_SUFFIX));
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "no compile worker found: components are compiled in a child process (the `chimera` binary); \
         put `chimera` beside {}, set CHIMERA_COMPILE_WORKER to its path, or set HostConfig::compiler",
        exe.display()
    ))
}

/// Compiles `bytes` to a serialized artifact in a budgeted child process.
pub(crate) fn in_subprocess(
    program: &Path,
    settings: &EngineSettings,
    budget: &LoadBudget,
    scratch: &Path,
    bytes: &[u8],
) -> Result<Vec<u8>, CompileFailure> {
    let worker = |m: String| CompileFailure::Worker(m);
    std::fs::create_dir_all(scratch).map_err(|e| worker(format!("cannot create {}: {e}", scratch.display())))?;
    let out = scratch.join(format!("compiling-{}-{:016x}.cwasm", std::process::id(), rand::random::<u64>()));
    let _cleanup = RemoveOnDrop(&out);
    let memory = budget.compile_memory_mib << 20;
    let timeout = Duration::from_millis(budget.compile_timeout_ms);
    // Compiling is parallel: in the wall time allowed it can use every core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let cpu_seconds = timeout.as_secs().max(1) * cores;
    let settings_json = serde_json::to_string(settings).expect("settings serialize");
    let mut child = Command::new(program)
        .arg(WORKER_ARG)
        .arg(settings_json)
        .arg(memory.to_string())
        .arg(cpu_seconds.to_string())
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_clear()
        .spawn()
        .map_err(|e| worker(format!("cannot run the compile worker {}: {e}", program.display())))?;
    let started = Instant::now();
    // The worker reads all of stdin before it compiles; a worker that died
    // early closes the pipe, and its exit status says why.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(bytes);
    }
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = (&mut stderr).take(16 << 10).read_to_end(&mut text);
        // Drain the rest so the worker never blocks on a full pipe.
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        String::from_utf8_lossy(&text).into_owned()
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CompileFailure::Budget {
                    key: "compile_timeout_ms",
                    detail: format!("compiling took longer than {} ms", budget.compile_timeout_ms),
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(worker(format!("cannot wait for the compile worker: {e}"))),
        }
    };
    let stderr = reader.join().unwrap_or_default();
    judge(status, stderr.trim(), budget)?;
    let artifact = std::fs::read(&out).map_err(|e| worker(format!("cannot read the compiled artifact: {e}")))?;
    Ok(artifact)
}

/// Turns the worker's exit into a result, naming the limit that stopped it.
fn judge(status: ExitStatus, stderr: &str, budget: &LoadBudget) -> Result<(), CompileFailure> {
    use std::os::unix::process::ExitStatusExt;
    let memory = || CompileFailure::Budget {
        key: "compile_memory_mib",
        detail: format!("compiling needed more than {} MiB of memory", budget.compile_memory_mib),
    };
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(EXIT_INVALID), _) if is_out_of_memory(stderr) => Err(memory()),
        (Some(EXIT_INVALID), _) => Err(CompileFailure::Invalid(stderr.to_string())),
        (_, Some(libc::SIGXCPU)) | (_, Some(libc::SIGKILL)) => Err(CompileFailure::Budget {
            key: "compile_timeout_ms",
            detail: format!("compiling used more CPU time than {} ms on every core", budget.compile_timeout_ms),
        }),
        (_, Some(libc::SIGXFSZ)) => Err(CompileFailure::Budget {
            key: "compile_memory_mib",
            detail: format!("the compiled artifact is larger than {} MiB", budget.compile_memory_mib),
        }),
        _ if is_out_of_memory(stderr) => Err(memory()),
        (code, signal) => Err(CompileFailure::Worker(format!(
            "the compile worker failed ({}): {}",
            match (code, signal) {
                (Some(c), _) => format!("exit status {c}"),
                (_, Some(s)) => format!("signal {s}"),
                _ => "unknown status".into(),
            },
            if stderr.is_empty() { "no message" } else { stderr }
        ))),
    }
}

fn is_out_of_memory(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    s.contains("memory allocation of") || s.contains("out of memory") || s.contains("cannot allocate memory")
}

struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}
