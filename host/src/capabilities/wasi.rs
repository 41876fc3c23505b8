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
use wasmtime_wasi::random::{WasiRandom, WasiRandomView};
use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiView};

use super::{CapabilityDecision, Grant, LinkFn};
use crate::policy::{InertOrRefused, Policy, WasiGrant};
use crate::state::TaskState;
use crate::usage::UsageCounters;

struct TableOnly;

impl HasData for TableOnly {
    type Data<'a> = &'a mut ResourceTable;
}

fn table(s: &mut TaskState) -> &mut ResourceTable {
    &mut s.table
}

/// Every WASI interface the host can provide: `(package, interface, part, link)`.
const INTERFACES: &[(&str, &str, Part, LinkFn)] = &[
    ("wasi:io", "error", Part::Io, |l| {
        wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<TaskState, TableOnly>(l, table)
    }),
    ("wasi:io", "poll", Part::Io, |l| {
        wasmtime_wasi_io::bindings::wasi::io::poll::add_to_linker::<TaskState, TableOnly>(l, table)
    }),
    ("wasi:io", "streams", Part::Io, |l| {
        wasmtime_wasi_io::bindings::wasi::io::streams::add_to_linker::<TaskState, TableOnly>(l, table)
    }),
    ("wasi:cli", "environment", Part::Cli, |l| {
        cli::environment::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)
    }),
    ("wasi:cli", "exit", Part::Cli, |l| cli::exit::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)),
    ("wasi:cli", "stdin", Part::Cli, |l| cli::stdin::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)),
    ("wasi:cli", "stdout", Part::Cli, |l| cli::stdout::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)),
    ("wasi:cli", "stderr", Part::Cli, |l| cli::stderr::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)),
    ("wasi:cli", "terminal-input", Part::Cli, |l| {
        cli::terminal_input::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)
    }),
    ("wasi:cli", "terminal-output", Part::Cli, |l| {
        cli::terminal_output::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)
    }),
    ("wasi:cli", "terminal-stdin", Part::Cli, |l| {
        cli::terminal_stdin::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)
    }),
    ("wasi:cli", "terminal-stdout", Part::Cli, |l| {
        cli::terminal_stdout::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)
    }),
    ("wasi:cli", "terminal-stderr", Part::Cli, |l| {
        cli::terminal_stderr::add_to_linker::<TaskState, WasiCli>(l, TaskState::cli)
    }),
    ("wasi:clocks", "wall-clock", Part::Clocks, |l| {
        clocks::wall_clock::add_to_linker::<TaskState, WasiClocks>(l, TaskState::clocks)
    }),
    ("wasi:clocks", "monotonic-clock", Part::Clocks, |l| {
        clocks::monotonic_clock::add_to_linker::<TaskState, WasiClocks>(l, TaskState::clocks)
    }),
    ("wasi:random", "random", Part::Random, |l| {
        random::random::add_to_linker::<TaskState, WasiRandom>(l, TaskState::random)
    }),
    ("wasi:random", "insecure", Part::Random, |l| {
        random::insecure::add_to_linker::<TaskState, WasiRandom>(l, TaskState::random)
    }),
    ("wasi:random", "insecure-seed", Part::Random, |l| {
        random::insecure_seed::add_to_linker::<TaskState, WasiRandom>(l, TaskState::random)
    }),
    ("wasi:filesystem", "types", Part::Filesystem, |l| {
        filesystem::types::add_to_linker::<TaskState, WasiFilesystem>(l, TaskState::filesystem)
    }),
    ("wasi:filesystem", "preopens", Part::Filesystem, |l| {
        filesystem::preopens::add_to_linker::<TaskState, WasiFilesystem>(l, TaskState::filesystem)
    }),
    ("wasi:sockets", "network", Part::Sockets, |l| {
        sockets::network::add_to_linker::<TaskState, WasiSockets>(l, &Default::default(), TaskState::sockets)
    }),
    ("wasi:sockets", "instance-network", Part::Sockets, |l| {
        sockets::instance_network::add_to_linker::<TaskState, WasiSockets>(l, TaskState::sockets)
    }),
    ("wasi:sockets", "tcp", Part::Sockets, |l| {
        sockets::tcp::add_to_linker::<TaskState, WasiSockets>(l, TaskState::sockets)
    }),
    ("wasi:sockets", "tcp-create-socket", Part::Sockets, |l| {
        sockets::tcp_create_socket::add_to_linker::<TaskState, WasiSockets>(l, TaskState::sockets)
    }),
    ("wasi:sockets", "udp", Part::Sockets, |l| {
        sockets::udp::add_to_linker::<TaskState, WasiSockets>(l, TaskState::sockets)
    }),
    ("wasi:sockets", "udp-create-socket", Part::Sockets, |l| {
        sockets::udp_create_socket::add_to_linker::<TaskState, WasiSockets>(l, TaskState::sockets)
    }),
    ("wasi:sockets", "ip-name-lookup", Part::Sockets, |l| {
        sockets::ip_name_lookup::add_to_linker::<TaskState, WasiSockets>(l, TaskState::sockets)
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

/// Judges a `wasi:io|cli|clocks|random` interface; `None` if the host has no such interface.
pub(crate) fn decide(package: &str, interface: &str, policy: &Policy) -> Option<CapabilityDecision> {
    let &(_, _, part, link) = INTERFACES.iter().find(|(p, i, _, _)| *p == package && *i == interface)?;
    let w = &policy.wasi;
    let inert = |choice: InertOrRefused| choice == InertOrRefused::Inert;
    let granted = |capability, section, granted: bool, what: String| {
        let grant = if granted {
            Grant::Granted(what)
        } else {
            Grant::Refused(format!("not granted; set {section} = true in the policy"))
        };
        CapabilityDecision { capability, section, grant, link }
    };
    let inert_or_refused = |capability, section, choice, what: &str, why_never: &str| {
        let grant = if inert(choice) { Grant::Inert(what.to_string()) } else { Grant::Refused(why_never.to_string()) };
        CapabilityDecision { capability, section, grant, link }
    };
    Some(match part {
        Part::Io => granted(
            "wasi-io",
            "[wasi] cli or clocks",
            w.cli || w.clocks || inert(w.filesystem) || inert(w.sockets),
            "streams and pollables handed out by the other WASI interfaces".to_string(),
        ),
        Part::Cli => granted(
            "wasi-cli",
            "[wasi] cli",
            w.cli,
            "empty environment and stdin; stdout/stderr captured into the task log; no terminal".to_string(),
        ),
        Part::Clocks => {
            granted("wasi-clocks", "[wasi] clocks", w.clocks, format!("coarsened to {} ms", w.clock_resolution_ms))
        }
        Part::Random => granted("wasi-random", "[wasi] random", w.random, "random bytes".to_string()),
        Part::Filesystem => inert_or_refused(
            "wasi-filesystem",
            "[wasi] filesystem",
            w.filesystem,
            "inert: no preopened directory, every path fails",
            "filesystem access is never granted to agents; store data through chimera:agent/kv \
             (or set [wasi] filesystem = \"inert\" to link it with no directory behind it)",
        ),
        Part::Sockets => inert_or_refused(
            "wasi-sockets",
            "[wasi] sockets",
            w.sockets,
            "inert: TCP, UDP, every address and name lookup refused",
            "raw sockets are never granted to agents; use chimera:agent/outbound-http, which the policy can allow \
             (or set [wasi] sockets = \"inert\" to link them with every use refused)",
        ),
    })
}

/// Output captured from stdout or stderr: kept up to a cap, the rest counted.
#[derive(Clone)]
pub(crate) struct CapturedOutput {
    inner: Arc<Mutex<Captured>>,
}

struct Captured {
    bytes: Vec<u8>,
    cap: usize,
    dropped: u64,
    usage: Arc<UsageCounters>,
}

impl CapturedOutput {
    pub fn new(cap: usize, usage: Arc<UsageCounters>) -> Self {
        CapturedOutput { inner: Arc::new(Mutex::new(Captured { bytes: Vec::new(), cap, dropped: 0, usage })) }
    }

    fn push(&self, data: &[u8]) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = c.cap - c.bytes.len();
        let mut take = room.min(data.len());
        // Kept bytes are host memory held for the instance.
        if !c.usage.try_hold_host(take as u64) {
            take = 0;
        }
        c.bytes.extend_from_slice(&data[..take]);
        c.dropped += (data.len() - take) as u64;
    }

    /// Whether nothing was written since the last [`CapturedOutput::take`].
    pub fn is_empty(&self) -> bool {
        let c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        c.bytes.is_empty() && c.dropped == 0
    }

    /// The text kept (lossy UTF-8) and the count of bytes dropped.
    pub fn take(&self) -> (String, u64) {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let text = String::from_utf8_lossy(&c.bytes).into_owned();
        c.usage.release_host(c.bytes.len() as u64);
        c.bytes.clear();
        (text, std::mem::take(&mut c.dropped))
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

/// Builds the locked-down WASI context of one task: no preopens, no
/// environment, no arguments, empty stdin, captured stdout/stderr, coarse
/// clocks, and no network: this is what an inert filesystem or inert sockets
/// stand on, so the denials below are the ones an agent meets.
/// Most bytes one `get-random-bytes` call may ask for.
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

pub(crate) fn locked_down_ctx(grant: &WasiGrant, stdout: CapturedOutput, stderr: CapturedOutput) -> WasiCtx {
    let resolution = Duration::from_millis(grant.clock_resolution_ms);
    let mut b = WasiCtxBuilder::new();
    b.stdout(stdout)
        .stderr(stderr)
        .wall_clock(CoarseWallClock { resolution })
        .monotonic_clock(CoarseMonotonicClock { start: Instant::now(), resolution_ns: resolution.as_nanos() as u64 })
        .allow_ip_name_lookup(false)
        .allow_tcp(false)
        .allow_udp(false)
        .socket_addr_check(|_, _| Box::pin(async { false }))
        // The host allocates what `get-random-bytes` asks for before the
        // guest's memory limit sees it: bound one call (wasmtime's default
        // is 64 MiB).
        .max_random_size(MAX_RANDOM_BYTES);
    b.build()
}

impl WasiView for TaskState {
    fn ctx(&mut self) -> wasmtime_wasi::WasiCtxView<'_> {
        wasmtime_wasi::WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
