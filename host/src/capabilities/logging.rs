//! `chimera:agent/logging`: leveled log lines, attributed to agent and task,
//! escaped and size-capped, emitted as `tracing` events and kept in the
//! task's report.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use wasmtime::component::{Linker, WasmList};
use wasmtime::{AsContext, StoreContext, StoreContextMut};

use super::{CapabilityDecision, Grant};
use crate::bindings::chimera::agent::logging::Level;
use crate::guest_args::GuestStr;
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
    /// The agent that logged it when that was an agent this task called
    /// through `tasks` (its name, then `/` and its own callee's, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
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
        buf.lines.push(LogLine { level: level_name(level), source, message, fields, from: None });
    }

    /// Keeps the lines of a task this task called through `tasks`, marked
    /// with the callee's name, under this task's own caps.
    pub fn adopt(&self, callee: &str, lines: Vec<LogLine>) {
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for mut line in lines {
            let text: usize = line.message.len() + line.fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
            let size = text as u64 + LINE_OVERHEAD_BYTES;
            if buf.bytes + size > self.grant.max_bytes_per_task || !self.usage.try_hold_host(size) {
                buf.dropped_lines += 1;
                continue;
            }
            buf.bytes += size;
            line.from = Some(match line.from.take() {
                Some(deeper) => format!("{callee}/{deeper}"),
                None => callee.to_string(),
            });
            buf.lines.push(line);
        }
    }

    /// The longest line kept, in bytes.
    pub fn max_line_bytes(&self) -> usize {
        self.grant.max_line_bytes as usize
    }

    /// Counts a line that was dropped before it was read.
    pub fn drop_line(&self) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).dropped_lines += 1;
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

/// Whether `c` must not reach a log as itself: control characters (CR, LF,
/// ESC, ...) forge lines or drive a terminal; line and paragraph
/// separators break lines; bidirectional overrides and isolates reorder
/// what a reader sees (Trojan Source), and zero-width characters hide text.
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{2028}' | '\u{2029}'             // line and paragraph separators
            | '\u{202A}'..='\u{202E}'           // bidi embeddings and overrides
            | '\u{2066}'..='\u{2069}'           // bidi isolates
            | '\u{200B}'..='\u{200F}'           // zero-width space/joiners, LRM, RLM
            | '\u{2060}'..='\u{2064}'           // word joiner, invisible operators
            | '\u{061C}'                        // Arabic letter mark
            | '\u{180E}'                        // Mongolian vowel separator
            | '\u{FEFF}'                        // zero-width no-break space (BOM)
        )
}

/// Escapes what [`must_escape`] names so guest text cannot forge log lines,
/// drive a terminal or hide itself, and cuts it to the remaining `budget` bytes.
pub fn escape_capped(text: &str, budget: &mut usize) -> String {
    let mut out = String::with_capacity(text.len().min(*budget));
    for c in text.chars() {
        let start = out.len();
        if must_escape(c) {
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

/// Guest text decoded for one line, as a multiple of `max_line_bytes`: room
/// for escaping and for encodings that shrink when decoded, and a bound on
/// what one call may make the host decode and hold.
const DECODE_FACTOR: usize = 4;

/// Decodes `s` if the plan says so; otherwise says how long it was
/// without reading it.
fn read_planned<'a>(
    store: &'a StoreContext<'_, TaskState>,
    s: &GuestStr,
    read: bool,
) -> wasmtime::Result<Cow<'a, str>> {
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
fn link_zero_copy(l: &mut Linker<TaskState>) -> wasmtime::Result<()> {
    type Params = (Level, GuestStr, WasmList<(GuestStr, GuestStr)>);
    let mut instance = l.instance("chimera:agent/logging@0.1.0")?;
    instance.func_wrap("log", |mut store: StoreContextMut<'_, TaskState>, (level, message, fields): Params| {
        store.data().usage.count_call(crate::usage::Call::Logging);
        let pairs: Vec<(GuestStr, GuestStr)> =
            (0..fields.len().min(MAX_FIELDS)).filter_map(|i| fields.get(&mut store, i)).collect::<Result<_, _>>()?;
        let store = store.as_context();
        let data = store.data();
        // Which strings fit the decode budget, in order, and what decoding them holds.
        let mut left = data.log.max_line_bytes().saturating_mul(DECODE_FACTOR);
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
        if !data.usage.try_hold_host(held) {
            data.log.drop_line();
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
        let result = line.map(|(message, pairs)| data.log.record(level, LogSource::Agent, &message, &pairs));
        data.usage.release_host(held);
        result
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
        let mut budget = 100;
        assert_eq!(
            escape_capped("a\u{202E}b\u{2066}c\u{200B}d\u{FEFF}e\u{2069}", &mut budget),
            "a\\u{202e}b\\u{2066}c\\u{200b}d\\u{feff}e\\u{2069}"
        );
    }
}
