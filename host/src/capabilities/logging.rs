//! `chimera:agent/logging`: leveled log lines, attributed to agent and task,
//! escaped and size-capped, emitted as `tracing` events and kept in the
//! task's report.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use wasmtime::component::{Linker, WasmList, WasmStr};
use wasmtime::StoreContextMut;

use super::{CapabilityDecision, Grant};
use crate::bindings::chimera::agent::logging::Level;
use crate::policy::{LoggingGrant, Policy};
use crate::state::TaskState;

pub(crate) fn decide(policy: &Policy) -> CapabilityDecision {
    CapabilityDecision {
        capability: "logging",
        section: "[capabilities.logging]",
        grant: match &policy.capabilities.logging {
            Some(g) => Grant::Granted(format!(
                "log lines up to {} bytes, {} bytes per task",
                g.max_line_bytes, g.max_bytes_per_task
            )),
            None => Grant::Refused("not granted; add a [capabilities.logging] section to the policy".into()),
        },
        link: link_zero_copy,
    }
}

/// Where a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The `logging` capability.
    Agent,
    /// The guest's captured standard output.
    Stdout,
    /// The guest's captured standard error.
    Stderr,
}

/// One log line of a task, already escaped and capped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// Where it came from.
    pub source: LogSource,
    /// The message, control characters escaped.
    pub message: String,
    /// Key/value fields, escaped.
    pub fields: Vec<(String, String)>,
}

/// What one kept line costs against the per-task cap beyond its text.
pub const LINE_OVERHEAD_BYTES: u64 = 64;

/// A task's log: lines kept so far and what was dropped. Shared so the lines
/// survive a task that is cut off by its timeout.
#[derive(Clone)]
pub(crate) struct TaskLog {
    pub agent: Arc<str>,
    pub task_id: u64,
    grant: LoggingGrant,
    inner: Arc<Mutex<LogBuffer>>,
    usage: Arc<crate::usage::UsageCounters>,
}

#[derive(Default)]
pub(crate) struct LogBuffer {
    pub lines: Vec<LogLine>,
    pub bytes: u64,
    pub dropped_lines: u64,
}

impl TaskLog {
    pub fn new(agent: Arc<str>, task_id: u64, grant: LoggingGrant, usage: Arc<crate::usage::UsageCounters>) -> Self {
        TaskLog { agent, task_id, grant, inner: Arc::default(), usage }
    }

    /// Records one line, escaping and capping it, and emits it to `tracing`.
    pub fn record(&self, level: Level, source: LogSource, message: &str, fields: &[(Cow<'_, str>, Cow<'_, str>)]) {
        let max = self.grant.max_line_bytes as usize;
        let mut budget = max;
        let message = escape_capped(message, &mut budget);
        let fields: Vec<(String, String)> =
            fields.iter().map(|(k, v)| (escape_capped(k, &mut budget), escape_capped(v, &mut budget))).collect();
        // Every line costs its overhead too, so a flood of empty lines is capped.
        let size = (max - budget) as u64 + LINE_OVERHEAD_BYTES;
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Kept lines are host memory held for the instance: they count
        // against its memory limit as well as the log cap.
        if buf.bytes + size > self.grant.max_bytes_per_task || !self.usage.try_hold_host(size) {
            buf.dropped_lines += 1;
            return;
        }
        buf.bytes += size;
        emit(&self.agent, self.task_id, level, source, &message, &fields);
        buf.lines.push(LogLine { level: level_name(level), source, message, fields });
    }

    /// Takes the lines kept so far, and the count of dropped ones.
    pub fn take(&self) -> (Vec<LogLine>, u64, u64) {
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let b = std::mem::take(&mut *buf);
        self.usage.release_host(b.bytes);
        (b.lines, b.bytes, b.dropped_lines)
    }
}

fn emit(agent: &str, task: u64, level: Level, source: LogSource, message: &str, fields: &[(String, String)]) {
    // Fields go in as one Debug value: guest text never becomes a field name.
    macro_rules! ev {
        ($lvl:expr) => {
            tracing::event!(target: "chimera::agent", $lvl, agent = %agent, task, source = ?source, fields = ?fields, "{}", message)
        };
    }
    match level {
        Level::Trace => ev!(tracing::Level::TRACE),
        Level::Debug => ev!(tracing::Level::DEBUG),
        Level::Info => ev!(tracing::Level::INFO),
        Level::Warn => ev!(tracing::Level::WARN),
        Level::Error => ev!(tracing::Level::ERROR),
    }
}

pub(crate) fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

/// Escapes control characters (CR, LF, ESC, ...) so guest text cannot forge
/// log lines or drive a terminal, and cuts it to the remaining `budget` bytes.
pub fn escape_capped(text: &str, budget: &mut usize) -> String {
    let mut out = String::with_capacity(text.len().min(*budget));
    for c in text.chars() {
        let start = out.len();
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() > *budget {
            out.truncate(start);
            out.push('…');
            *budget = 0;
            return out;
        }
    }
    *budget -= out.len();
    out
}

/// Most fields of one line that are read; the rest are never touched.
const MAX_FIELDS: usize = 32;

/// Links `log` reading the guest's strings in place: the host copies only
/// the bytes it keeps (up to `max_line_bytes`), so a guest handing over a
/// string as large as its whole memory costs the host nothing extra.
fn link_zero_copy(l: &mut Linker<TaskState>) -> wasmtime::Result<()> {
    type Params = (Level, WasmStr, WasmList<(WasmStr, WasmStr)>);
    let mut instance = l.instance("chimera:agent/logging@0.1.0")?;
    instance.func_wrap("log", |mut store: StoreContextMut<'_, TaskState>, (level, message, fields): Params| {
        store.data().usage.count_call(crate::usage::Call::Logging);
        let pairs: Vec<(WasmStr, WasmStr)> =
            (0..fields.len().min(MAX_FIELDS)).filter_map(|i| fields.get(&mut store, i)).collect::<Result<_, _>>()?;
        let store = &store;
        let message = message.to_str(store)?;
        let pairs: Vec<(Cow<'_, str>, Cow<'_, str>)> =
            pairs.iter().map(|(k, v)| Ok((k.to_str(store)?, v.to_str(store)?))).collect::<wasmtime::Result<_>>()?;
        store.data().log.record(level, LogSource::Agent, &message, &pairs);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_characters_and_caps() {
        let mut budget = 100;
        assert_eq!(escape_capped("a\r\nb\x1b[31m", &mut budget), "a\\r\\nb\\u{1b}[31m");
        let mut budget = 5;
        assert_eq!(escape_capped("hello world", &mut budget), "hello…");
        assert_eq!(budget, 0);
    }
}
