//! The WASI baseline, locked down: `wasi:cli` with an empty environment,
//! empty stdin and captured, capped stdout/stderr; `wasi:clocks` coarsened;
//! `wasi:random`; `wasi:io` for the streams these hand out.
//!
//! `wasi:filesystem` and `wasi:sockets` are never granted. A policy may ask
//! for them *inert*: linked (language runtimes such as CPython import them
//! whether or not the agent's code uses them) over a context with no
//! preopened directory, TCP and UDP off, every socket address refused and
//! name lookup off — so each call fails inside the agent with a WASI error.

use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use wasmtime::component::{HasData, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream, WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random, sockets};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiView};

use serde::{Deserialize, Serialize};
use wasmtime::component::Linker;

use crate::capability::{Capability, Counters, Decision, Interface, LoadContext, TaskContext, TaskHandle};
use crate::error::PolicyError;
use crate::log::{LogLevel, LogSource};
use crate::policy::{check_range, PolicySection};
use crate::task_data::TaskData;

/// `[wasi]`: which parts of the locked-down WASI baseline are linked.
///
/// `wasi:filesystem` and `wasi:sockets` are never granted: they are refused
/// (the default) or, when a policy asks for it, linked *inert* — present so a
/// language runtime that imports them can start, with nothing behind them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WasiGrant {
    /// `wasi:cli/*` (and `wasi:io/*`): empty environment, empty stdin,
    /// stdout/stderr captured into the task's log, no terminal.
    pub cli: bool,
    /// `wasi:clocks/*`, coarsened to `clock_resolution_ms`.
    pub clocks: bool,
    /// `wasi:random/*`.
    pub random: bool,
    /// Resolution of the guest's clocks, in milliseconds (at least 1).
    pub clock_resolution_ms: u64,
    /// `wasi:filesystem/*`: `"refused"` (default) or `"inert"` — linked with
    /// no preopened directory, so every path fails inside the agent.
    pub filesystem: InertOrRefused,
    /// `wasi:sockets/*`: `"refused"` (default) or `"inert"` — linked with TCP,
    /// UDP, every socket address and every name lookup refused.
    pub sockets: InertOrRefused,
}

impl Default for WasiGrant {
    fn default() -> Self {
        WasiGrant {
            cli: true,
            clocks: true,
            random: true,
            clock_resolution_ms: 1,
            filesystem: InertOrRefused::Refused,
            sockets: InertOrRefused::Refused,
        }
    }
}

impl PolicySection for WasiGrant {
    const SECTION: &'static str = "wasi";
}

/// How a WASI interface that is never granted is treated.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InertOrRefused {
    /// Not linked: a component importing it does not load.
    #[default]
    Refused,
    /// Linked with nothing behind it: every call fails inside the agent.
    Inert,
}

struct TableOnly;

impl HasData for TableOnly {
    type Data<'a> = &'a mut ResourceTable;
}

fn table(s: &mut TaskData) -> &mut ResourceTable {
    s.table()
}

type LinkFn = fn(&mut Linker<TaskData>) -> wasmtime::Result<()>;

/// The WASI version the host implements (wasmtime-wasi's).
const V: &str = "0.2.12";

/// Every WASI interface the host can provide: `(package, interface, part, link)`.
const PARTS: &[(&str, &str, Part, LinkFn)] = &[
    ("wasi:io", "error", Part::Io, |l| {
        wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<TaskData, TableOnly>(l, table)
    }),
    ("wasi:io", "poll", Part::Io, |l| {
        wasmtime_wasi_io::bindings::wasi::io::poll::add_to_linker::<TaskData, TableOnly>(l, table)
    }),
    ("wasi:io", "streams", Part::Io, |l| {
        wasmtime_wasi_io::bindings::wasi::io::streams::add_to_linker::<TaskData, TableOnly>(l, table)
    }),
    ("wasi:cli", "environment", Part::Cli, |l| cli::environment::add_to_linker::<TaskData, WasiCli>(l, TaskData::cli)),
    ("wasi:cli", "exit", Part::Cli, |l| cli::exit::add_to_linker::<TaskData, WasiCli>(l, TaskData::cli)),
    ("wasi:cli", "stdin", Part::Cli, |l| cli::stdin::add_to_linker::<TaskData, WasiCli>(l, TaskData::cli)),
    ("wasi:cli", "stdout", Part::Cli, |l| cli::stdout::add_to_linker::<TaskData, WasiCli>(l, TaskData::cli)),
    ("wasi:cli", "stderr", Part::Cli, |l| cli::stderr::add_to_linker::<TaskData, WasiCli>(l, TaskData::cli)),
    ("wasi:cli", "terminal-input", Part::Cli, |l| {
        cli::terminal_input::add_to_linker::<TaskData, WasiCli>(l, TaskData::cli)
    }),
    ("wasi:cli", "terminal-output", Part::Cli, |l| {
        cli::terminal_output::add_to_linker::<TaskData, WasiCli>(l, TaskData::cli)
    }),
    ("wasi:cli", "terminal-stdin", Part::Cli, |l| {
        cli::terminal_stdin::add_to_linker::<TaskData, WasiCli>(l, TaskData::cli)
    }),
    ("wasi:cli", "terminal-stdout", Part::Cli, |l| {
        cli::terminal_stdout::add_to_linker::<TaskData, WasiCli>(l, TaskData::cli)
    }),
    ("wasi:cli", "terminal-stderr", Part::Cli, |l| {
        cli::terminal_stderr::add_to_linker::<TaskData, WasiCli>(l, TaskData::cli)
    }),
    ("wasi:clocks", "wall-clock", Part::Clocks, |l| {
        clocks::wall_clock::add_to_linker::<TaskData, WasiClocks>(l, TaskData::clocks)
    }),
    ("wasi:clocks", "monotonic-clock", Part::Clocks, |l| {
        clocks::monotonic_clock::add_to_linker::<TaskData, WasiClocks>(l, TaskData::clocks)
    }),
    ("wasi:random", "random", Part::Random, |l| {
        random::random::add_to_linker::<TaskData, TaskRandom>(l, TaskRandom::of)
    }),
    ("wasi:random", "insecure", Part::Random, |l| {
        random::insecure::add_to_linker::<TaskData, TaskRandom>(l, TaskRandom::of)
    }),
    ("wasi:random", "insecure-seed", Part::Random, |l| {
        random::insecure_seed::add_to_linker::<TaskData, TaskRandom>(l, TaskRandom::of)
    }),
    ("wasi:filesystem", "types", Part::Filesystem, |l| {
        filesystem::types::add_to_linker::<TaskData, WasiFilesystem>(l, TaskData::filesystem)
    }),
    ("wasi:filesystem", "preopens", Part::Filesystem, |l| {
        filesystem::preopens::add_to_linker::<TaskData, WasiFilesystem>(l, TaskData::filesystem)
    }),
    ("wasi:sockets", "network", Part::Sockets, |l| {
        sockets::network::add_to_linker::<TaskData, WasiSockets>(l, &Default::default(), TaskData::sockets)
    }),
    ("wasi:sockets", "instance-network", Part::Sockets, |l| {
        sockets::instance_network::add_to_linker::<TaskData, WasiSockets>(l, TaskData::sockets)
    }),
    ("wasi:sockets", "tcp", Part::Sockets, |l| {
        sockets::tcp::add_to_linker::<TaskData, WasiSockets>(l, TaskData::sockets)
    }),
    ("wasi:sockets", "tcp-create-socket", Part::Sockets, |l| {
        sockets::tcp_create_socket::add_to_linker::<TaskData, WasiSockets>(l, TaskData::sockets)
    }),
    ("wasi:sockets", "udp", Part::Sockets, |l| {
        sockets::udp::add_to_linker::<TaskData, WasiSockets>(l, TaskData::sockets)
    }),
    ("wasi:sockets", "udp-create-socket", Part::Sockets, |l| {
        sockets::udp_create_socket::add_to_linker::<TaskData, WasiSockets>(l, TaskData::sockets)
    }),
    ("wasi:sockets", "ip-name-lookup", Part::Sockets, |l| {
        sockets::ip_name_lookup::add_to_linker::<TaskData, WasiSockets>(l, TaskData::sockets)
    }),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Io,
    Cli,
    Clocks,
    Random,
    Filesystem,
    Sockets,
}

const fn wasi(package: &'static str, name: &'static str) -> Interface {
    Interface::new(package, name, V)
}

/// The interfaces, in the order of [`PARTS`].
const INTERFACES: &[Interface] = &[
    wasi("wasi:io", "error"),
    wasi("wasi:io", "poll"),
    wasi("wasi:io", "streams"),
    wasi("wasi:cli", "environment"),
    wasi("wasi:cli", "exit"),
    wasi("wasi:cli", "stdin"),
    wasi("wasi:cli", "stdout"),
    wasi("wasi:cli", "stderr"),
    wasi("wasi:cli", "terminal-input"),
    wasi("wasi:cli", "terminal-output"),
    wasi("wasi:cli", "terminal-stdin"),
    wasi("wasi:cli", "terminal-stdout"),
    wasi("wasi:cli", "terminal-stderr"),
    wasi("wasi:clocks", "wall-clock"),
    wasi("wasi:clocks", "monotonic-clock"),
    wasi("wasi:random", "random"),
    wasi("wasi:random", "insecure"),
    wasi("wasi:random", "insecure-seed"),
    wasi("wasi:filesystem", "types"),
    wasi("wasi:filesystem", "preopens"),
    wasi("wasi:sockets", "network"),
    wasi("wasi:sockets", "instance-network"),
    wasi("wasi:sockets", "tcp"),
    wasi("wasi:sockets", "tcp-create-socket"),
    wasi("wasi:sockets", "udp"),
    wasi("wasi:sockets", "udp-create-socket"),
    wasi("wasi:sockets", "ip-name-lookup"),
];

fn part_of(interface: &Interface) -> Option<&'static (&'static str, &'static str, Part, LinkFn)> {
    PARTS.iter().find(|(p, i, _, _)| *p == interface.package && *i == interface.name)
}

const STDIO_BYTES_DROPPED: usize = 0;

/// The locked-down WASI baseline: `wasi:io`, `wasi:cli`, `wasi:clocks`,
/// `wasi:random`, and `wasi:filesystem` / `wasi:sockets` inert or refused.
#[derive(Debug, Default)]
pub struct Wasi;

/// WASI as one task sees it: its context and captured stdout/stderr,
/// built on the task's first WASI call (many agents make none, and a
/// context costs about as much to build as the rest of a task's store).
pub struct WasiTask {
    ctx: Option<(WasiCtx, CapturedOutput)>,
    clock_resolution_ms: u64,
    stdio_cap: usize,
    task: TaskHandle,
    counters: Counters,
    /// The task's `insecure-seed`, drawn on first ask: the same for every
    /// call of one task, never shared between tasks.
    insecure_seed: Option<(u64, u64)>,
}

impl WasiTask {
    fn ctx(&mut self) -> &mut WasiCtx {
        let (ctx, _) = self.ctx.get_or_insert_with(|| {
            let (stdout, stderr) = CapturedOutput::pair(self.stdio_cap, self.task.clone(), self.counters.clone());
            (locked_down_ctx(self.clock_resolution_ms, stdout.clone(), stderr), stdout)
        });
        ctx
    }
}

impl Capability for Wasi {
    type Grant = WasiGrant;
    type AgentState = WasiGrant;
    type TaskState = WasiTask;

    fn name(&self) -> &'static str {
        "wasi"
    }

    fn section(&self) -> &'static str {
        WasiGrant::SECTION
    }

    fn interfaces(&self) -> &[Interface] {
        INTERFACES
    }

    fn audit_name(&self, interface: &Interface) -> &'static str {
        match part_of(interface).map(|p| p.2) {
            Some(Part::Io) => "wasi-io",
            Some(Part::Cli) => "wasi-cli",
            Some(Part::Clocks) => "wasi-clocks",
            Some(Part::Random) => "wasi-random",
            Some(Part::Filesystem) => "wasi-filesystem",
            Some(Part::Sockets) | None => "wasi-sockets",
        }
    }

    fn counters(&self) -> &'static [&'static str] {
        &["stdio_bytes_dropped"]
    }

    fn absent_grant(&self) -> Option<WasiGrant> {
        Some(WasiGrant::default())
    }

    fn validate(&self, g: &WasiGrant) -> Result<(), PolicyError> {
        check_range("wasi.clock_resolution_ms", g.clock_resolution_ms, 1, 3_600_000)
    }

    fn decide(&self, interface: &Interface, grant: Option<&WasiGrant>) -> Decision {
        let default = WasiGrant::default();
        let w = grant.unwrap_or(&default);
        let Some(&(_, _, part, _)) = part_of(interface) else {
            return Decision::Refused("not a WASI interface this host provides".into());
        };
        let inert = |choice: InertOrRefused| choice == InertOrRefused::Inert;
        let granted = |section: &str, granted: bool, what: String| {
            if granted {
                Decision::Granted(what)
            } else {
                Decision::Refused(format!("not granted; set {section} = true in the policy"))
            }
        };
        let inert_or_refused = |choice, what: &str, why_never: &str| {
            if inert(choice) {
                Decision::Inert(what.to_string())
            } else {
                Decision::Refused(why_never.to_string())
            }
        };
        match part {
            Part::Io => granted(
                "[wasi] cli or clocks",
                w.cli || w.clocks || inert(w.filesystem) || inert(w.sockets),
                "streams and pollables handed out by the other WASI interfaces".to_string(),
            ),
            Part::Cli => granted(
                "[wasi] cli",
                w.cli,
                "empty environment and stdin; stdout/stderr captured into the task log; no terminal".to_string(),
            ),
            Part::Clocks => granted("[wasi] clocks", w.clocks, format!("coarsened to {} ms", w.clock_resolution_ms)),
            Part::Random => granted("[wasi] random", w.random, "random bytes".to_string()),
            Part::Filesystem => inert_or_refused(
                w.filesystem,
                "inert: no preopened directory, every path fails",
                "filesystem access is never granted to agents; store data through chimera:agent/kv \
                 (or set [wasi] filesystem = \"inert\" to link it with no directory behind it)",
            ),
            Part::Sockets => inert_or_refused(
                w.sockets,
                "inert: TCP, UDP, every address and name lookup refused",
                "raw sockets are never granted to agents; use chimera:agent/outbound-http, which the policy can allow \
                 (or set [wasi] sockets = \"inert\" to link them with every use refused)",
            ),
        }
    }

    fn describe(&self, w: &WasiGrant, _agent: &str) -> Vec<String> {
        let word = |c: InertOrRefused| if c == InertOrRefused::Inert { "inert" } else { "refused" };
        vec![format!(
            "wasi baseline: cli={} clocks={} (resolution {} ms) random={}; filesystem={} sockets={} (never granted)",
            w.cli,
            w.clocks,
            w.clock_resolution_ms,
            w.random,
            word(w.filesystem),
            word(w.sockets)
        )]
    }

    fn link(&self, interface: &Interface, linker: &mut Linker<TaskData>) -> wasmtime::Result<()> {
        match part_of(interface) {
            Some((_, _, _, link)) => link(linker),
            None => Err(wasmtime::Error::msg(format!("{interface} is not a WASI interface this host provides"))),
        }
    }

    fn load(&self, grant: Option<&WasiGrant>, _: &LoadContext<'_>) -> Result<WasiGrant, String> {
        Ok(grant.cloned().unwrap_or_default())
    }

    fn instantiate(&self, grant: &WasiGrant, cx: &TaskContext<'_>) -> WasiTask {
        WasiTask {
            ctx: None,
            clock_resolution_ms: grant.clock_resolution_ms,
            stdio_cap: cx.limits().stdio_bytes as usize,
            task: cx.task().clone(),
            counters: cx.counters(),
            insecure_seed: None,
        }
    }

    fn end_call(&self, task: &mut WasiTask) {
        if let Some((_, stdio)) = &task.ctx {
            stdio.flush_to_log();
        }
    }
}

/// Output captured from stdout or stderr: kept up to a cap per stream
/// (held against the instance's memory limit), the rest dropped and
/// counted, and moved into the task's log line by line after each call and
/// when the task ends. Both streams of a task share one buffer record.
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
    source: LogSource,
}

struct Captured {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    cap: usize,
    task: TaskHandle,
    counters: Counters,
}

impl CapturedOutput {
    /// The task's stdout and stderr.
    fn pair(cap: usize, task: TaskHandle, counters: Counters) -> (CapturedOutput, CapturedOutput) {
        let inner = Arc::new(Mutex::new(Captured { stdout: Vec::new(), stderr: Vec::new(), cap, task, counters }));
        (
            CapturedOutput { inner: inner.clone(), source: LogSource::Stdout },
            CapturedOutput { inner, source: LogSource::Stderr },
        )
    }

    fn push(&self, data: &[u8]) {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let c = &mut *guard;
        let bytes = if self.source == LogSource::Stderr { &mut c.stderr } else { &mut c.stdout };
        let mut take = (c.cap - bytes.len()).min(data.len());
        // Kept bytes are host memory held for the instance.
        if !c.task.try_hold_memory(take as u64) {
            take = 0;
        }
        bytes.extend_from_slice(&data[..take]);
        c.counters.add(STDIO_BYTES_DROPPED, (data.len() - take) as u64);
    }

    /// Moves what was written to both streams into the task's log, a line each.
    fn flush_to_log(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).flush();
    }
}

impl Captured {
    fn flush(&mut self) {
        for (source, level) in [(LogSource::Stdout, LogLevel::Info), (LogSource::Stderr, LogLevel::Warn)] {
            let bytes = if source == LogSource::Stderr { &mut self.stderr } else { &mut self.stdout };
            if bytes.is_empty() {
                continue;
            }
            let text = String::from_utf8_lossy(bytes).into_owned();
            self.task.release_memory(bytes.len() as u64);
            bytes.clear();
            for line in text.lines() {
                self.task.log.record(level, source, line, &[]);
            }
        }
    }
}

impl Drop for Captured {
    // A task cut off mid-call (timeout, cancel) still reports what it wrote.
    fn drop(&mut self) {
        self.flush();
    }
}

impl IsTerminal for CapturedOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

// Writes never fail and never block: past the cap, bytes are dropped and
// counted, so a chatty guest cannot trap itself or stall the host.
impl OutputStream for CapturedOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 << 10)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CapturedOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CapturedOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// `wasi:random` for one task, served from the host thread's generator
/// (rand's `ThreadRng`: ChaCha, seeded and reseeded from the OS, so also
/// fit for `get-random-bytes`) rather than generators built per task:
/// nothing to build for a task, nothing shared between tasks. A call's
/// bytes are bounded by [`MAX_RANDOM_BYTES`] and held against the
/// instance's memory limit while they are made.
struct TaskRandom;

impl HasData for TaskRandom {
    type Data<'a> = &'a mut WasiTask;
}

impl TaskRandom {
    fn of(data: &mut TaskData) -> &mut WasiTask {
        data.state::<WasiTask>()
    }
}

impl WasiTask {
    fn random_bytes(&self, len: u64, call: &str) -> wasmtime::Result<Vec<u8>> {
        if len > MAX_RANDOM_BYTES {
            return Err(wasmtime::Error::msg(format!(
                "{call} asked for {len} bytes; one call may ask for at most {MAX_RANDOM_BYTES}"
            )));
        }
        if !self.task.try_hold_memory(len) {
            return Err(wasmtime::Error::msg(format!(
                "{call} asked for {len} bytes, more than the instance's memory limit leaves"
            )));
        }
        let mut bytes = vec![0; len as usize];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
        self.task.release_memory(len);
        Ok(bytes)
    }
}

impl random::random::Host for &mut WasiTask {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.random_bytes(len, "get-random-bytes")
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(rand::RngCore::next_u64(&mut rand::rng()))
    }
}

impl random::insecure::Host for &mut WasiTask {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.random_bytes(len, "get-insecure-random-bytes")
    }

    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(rand::RngCore::next_u64(&mut rand::rng()))
    }
}

impl random::insecure_seed::Host for &mut WasiTask {
    fn insecure_seed(&mut self) -> wasmtime::Result<(u64, u64)> {
        Ok(*self.insecure_seed.get_or_insert_with(|| {
            let mut rng = rand::rng();
            (rand::RngCore::next_u64(&mut rng), rand::RngCore::next_u64(&mut rng))
        }))
    }
}

/// A wall clock that only moves in steps of `resolution`.
struct CoarseWallClock {
    resolution: Duration,
}

impl HostWallClock for CoarseWallClock {
    fn resolution(&self) -> Duration {
        self.resolution
    }

    fn now(&self) -> Duration {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let step = self.resolution.as_nanos();
        Duration::from_nanos((now.as_nanos() / step * step) as u64)
    }
}

/// A monotonic clock that only moves in steps of `resolution_ns`.
struct CoarseMonotonicClock {
    start: Instant,
    resolution_ns: u64,
}

impl HostMonotonicClock for CoarseMonotonicClock {
    fn resolution(&self) -> u64 {
        self.resolution_ns
    }

    fn now(&self) -> u64 {
        let ns = self.start.elapsed().as_nanos() as u64;
        ns / self.resolution_ns * self.resolution_ns
    }
}

/// Most bytes one `get-random-bytes` call may ask for.
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

/// Builds the locked-down WASI context of one task: no preopens, no
/// environment, no arguments, empty stdin, captured stdout/stderr, coarse
/// clocks, and no network: this is what an inert filesystem or inert sockets
/// stand on, so the denials below are the ones an agent meets. Its random
/// generators go unused: `wasi:random` is served by `TaskRandom`.
fn locked_down_ctx(clock_resolution_ms: u64, stdout: CapturedOutput, stderr: CapturedOutput) -> WasiCtx {
    let resolution = Duration::from_millis(clock_resolution_ms);
    let mut b = WasiCtxBuilder::new();
    b.stdout(stdout)
        .stderr(stderr)
        .wall_clock(CoarseWallClock { resolution })
        .monotonic_clock(CoarseMonotonicClock { start: Instant::now(), resolution_ns: resolution.as_nanos() as u64 })
        .allow_ip_name_lookup(false)
        .allow_tcp(false)
        .allow_udp(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    b.build()
}

impl WasiView for TaskData {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        let (wasi, table) = self.state_and_table::<WasiTask>();
        wasmtime_wasi::WasiCtxView { ctx: wasi.ctx(), table }
    }
}
