//! `chimera:agent/logging`: leveled log lines into the task's log
//! (attributed to agent and task, escaped and size-capped; see
//! [`crate::log`]), read from guest memory only as far as a line can keep.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use wasmtime::component::{Linker, WasmList};
use wasmtime::{AsContext, StoreContext, StoreContextMut};

use crate::bindings::chimera::agent::logging::Level;
use crate::capability::{
    AgentSettings, Capability, Counters, Decision, Interface, LoadContext, TaskContext, TaskHandle,
};
use crate::error::PolicyError;
use crate::guest_args::GuestStr;
use crate::log::{LogLevel, LogLimits, LogSource};
use crate::policy::{check_range, PolicySection};
use crate::task_data::TaskData;

/// `[capabilities.logging]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingGrant {
    /// Bytes kept of one line (message and fields); longer lines are cut.
    pub max_line_bytes: u64,
    /// Bytes of log kept per task; later lines are dropped and counted.
    pub max_bytes_per_task: u64,
}

impl Default for LoggingGrant {
    fn default() -> Self {
        let d = LogLimits::default();
        LoggingGrant { max_line_bytes: d.max_line_bytes, max_bytes_per_task: d.max_bytes_per_task }
    }
}

impl PolicySection for LoggingGrant {
    const SECTION: &'static str = "capabilities.logging";
}

const INTERFACES: &[Interface] = &[Interface::new("chimera:agent", "logging", "0.1.0")];

const CALLS: usize = 0;

/// The `logging` capability.
#[derive(Debug, Default)]
pub struct Logging;

/// `logging` as one task sees it.
pub struct LoggingTask {
    task: TaskHandle,
    counters: Counters,
}

impl Capability for Logging {
    type Grant = LoggingGrant;
    type AgentState = ();
    type TaskState = LoggingTask;

    fn name(&self) -> &'static str {
        "logging"
    }

    fn section(&self) -> &'static str {
        LoggingGrant::SECTION
    }

    fn interfaces(&self) -> &[Interface] {
        INTERFACES
    }

    fn counters(&self) -> &'static [&'static str] {
        &["calls"]
    }

    fn validate(&self, g: &LoggingGrant) -> Result<(), PolicyError> {
        check_range("capabilities.logging.max_line_bytes", g.max_line_bytes, 16, 1 << 20)?;
        check_range("capabilities.logging.max_bytes_per_task", g.max_bytes_per_task, 0, 256 << 20)
    }

    fn decide(&self, _: &Interface, grant: Option<&LoggingGrant>) -> Decision {
        match grant {
            Some(g) => Decision::Granted(format!(
                "log lines up to {} bytes, {} bytes per task",
                g.max_line_bytes, g.max_bytes_per_task
            )),
            None => Decision::Refused("not granted; add a [capabilities.logging] section to the policy".into()),
        }
    }

    fn configure(&self, g: &LoggingGrant, settings: &mut AgentSettings) {
        settings.log = LogLimits { max_line_bytes: g.max_line_bytes, max_bytes_per_task: g.max_bytes_per_task };
    }

    fn link(&self, interface: &Interface, linker: &mut Linker<TaskData>) -> wasmtime::Result<()> {
        link_zero_copy(interface, linker)
    }

    fn load(&self, _: Option<&LoggingGrant>, _: &LoadContext<'_>) -> Result<(), String> {
        Ok(())
    }

    fn instantiate(&self, _: &(), cx: &TaskContext<'_>) -> LoggingTask {
        LoggingTask { task: cx.task().clone(), counters: cx.counters() }
    }
}

fn level_of(level: Level) -> LogLevel {
    match level {
        Level::Trace => LogLevel::Trace,
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

/// Most fields of one line that are read; the rest are never touched.
const MAX_FIELDS: usize = 32;

/// Guest text decoded for one line, as a multiple of `max_line_bytes`: room
/// for escaping and for encodings that shrink when decoded, and a bound on
/// what one call may make the host decode and hold.
const DECODE_FACTOR: usize = 4;

/// Decodes `s` if the plan says so; otherwise says how long it was
/// without reading it.
fn read_planned<'a>(store: &'a StoreContext<'_, TaskData>, s: &GuestStr, read: bool) -> wasmtime::Result<Cow<'a, str>> {
    if !read {
        return Ok(format!("[not read: {} code units, more than {DECODE_FACTOR} × max_line_bytes]", s.min_len()).into());
    }
    s.decode(store)
}

/// Links `log`, reading the guest's strings where they lie. Each string's
/// size is known before it is decoded (see `guest_args`), and one call
/// decodes at most `DECODE_FACTOR × max_line_bytes` bytes in all, held
/// against the instance's memory limit while the line is built; a string
/// past that is not read and the line says how long it was. So a guest
/// handing over its whole memory, in any string encoding, as the message
/// and every field costs the host no more than one short line.
fn link_zero_copy(interface: &Interface, l: &mut Linker<TaskData>) -> wasmtime::Result<()> {
    type Params = (Level, GuestStr, WasmList<(GuestStr, GuestStr)>);
    let mut instance = l.instance(&interface.qualified())?;
    instance.func_wrap("log", |mut store: StoreContextMut<'_, TaskData>, (level, message, fields): Params| {
        store.data().state_ref::<LoggingTask>().counters.add(CALLS, 1);
        let pairs: Vec<(GuestStr, GuestStr)> =
            (0..fields.len().min(MAX_FIELDS)).filter_map(|i| fields.get(&mut store, i)).collect::<Result<_, _>>()?;
        let store = store.as_context();
        let data = store.data();
        let task = &data.state_ref::<LoggingTask>().task;
        // Which strings fit the decode budget, in order, and what decoding them holds.
        let mut left = task.log.max_line_bytes().saturating_mul(DECODE_FACTOR);
        let mut fits = |s: &GuestStr| {
            let fit = s.max_len() <= left;
            if fit {
                left -= s.max_len();
            }
            fit
        };
        let plan: Vec<bool> =
            std::iter::once(&message).chain(pairs.iter().flat_map(|(k, v)| [k, v])).map(&mut fits).collect();
        let held = std::iter::once(&message)
            .chain(pairs.iter().flat_map(|(k, v)| [k, v]))
            .zip(&plan)
            .filter(|(_, read)| **read)
            .map(|(s, _)| s.max_len() as u64)
            .sum();
        if !task.try_hold_memory(held) {
            task.log.drop_line();
            return Ok(());
        }
        let line = (|| -> wasmtime::Result<_> {
            let message = read_planned(&store, &message, plan[0])?;
            let pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> = pairs
                .iter()
                .enumerate()
                .map(|(i, (k, v))| {
                    Ok((read_planned(&store, k, plan[1 + 2 * i])?, read_planned(&store, v, plan[2 + 2 * i])?))
                })
                .collect::<wasmtime::Result<_>>()?;
            Ok((message, pairs))
        })();
        let result = line.map(|(message, pairs)| task.log.record(level_of(level), LogSource::Agent, &message, &pairs));
        task.release_memory(held);
        result
    })
}
