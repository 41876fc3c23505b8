//! A task's log: lines from the `logging` capability, captured stdout and
//! stderr, and those of the agents it called, escaped and capped, emitted as
//! `tracing` events and kept for the task's report. Kept lines are host
//! memory held for the instance: they count against its memory limit.

use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

use crate::usage::UsageCounters;

/// The level of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Finest detail.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected.
    Warn,
    /// A failure.
    Error,
}

impl LogLevel {
    /// The level's name, as reports show it.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// How much of a task's log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Bytes kept of one line (message and fields); longer lines are cut.
    pub max_line_bytes: u64,
    /// Bytes of log kept per task; later lines are dropped and counted.
    pub max_bytes_per_task: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits { max_line_bytes: 4 << 10, max_bytes_per_task: 64 << 10 }
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
    limits: LogLimits,
    inner: Arc<Mutex<LogBuffer>>,
    usage: Arc<UsageCounters>,
}

#[derive(Default)]
pub(crate) struct LogBuffer {
    pub lines: Vec<LogLine>,
    pub bytes: u64,
    pub dropped_lines: u64,
}

impl TaskLog {
    pub fn new(agent: Arc<str>, task_id: u64, limits: LogLimits, usage: Arc<UsageCounters>) -> Self {
        TaskLog { agent, task_id, limits, inner: Arc::default(), usage }
    }

    /// Records one line, escaping and capping it, and emits it to `tracing`.
    pub fn record(&self, level: LogLevel, source: LogSource, message: &str, fields: &[(Cow<'_, str>, Cow<'_, str>)]) {
        let max = self.limits.max_line_bytes as usize;
        let mut budget = max;
        let message = escape_capped(message, &mut budget);
        let fields: Vec<(String, String)> =
            fields.iter().map(|(k, v)| (escape_capped(k, &mut budget), escape_capped(v, &mut budget))).collect();
        // Every line costs its overhead too, so a flood of empty lines is capped.
        let size = (max - budget) as u64 + LINE_OVERHEAD_BYTES;
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Kept lines are host memory held for the instance: they count
        // against its memory limit as well as the log cap.
        if buf.bytes + size > self.limits.max_bytes_per_task || !self.usage.try_hold_host(size) {
            buf.dropped_lines += 1;
            return;
        }
        buf.bytes += size;
        emit(&self.agent, self.task_id, level, source, &message, &fields);
        buf.lines.push(LogLine { level: level.name(), source, message, fields, from: None });
    }

    /// Keeps the lines of a task this task called through `tasks`, marked
    /// with the callee's name, under this task's own caps.
    pub fn adopt(&self, callee: &str, lines: Vec<LogLine>) {
        let mut buf = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        for mut line in lines {
            let text: usize = line.message.len() + line.fields.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
            let size = text as u64 + LINE_OVERHEAD_BYTES;
            if buf.bytes + size > self.limits.max_bytes_per_task || !self.usage.try_hold_host(size) {
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
        self.limits.max_line_bytes as usize
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

fn emit(agent: &str, task: u64, level: LogLevel, source: LogSource, message: &str, fields: &[(String, String)]) {
    // Fields go in as one Debug value: guest text never becomes a field name.
    macro_rules! ev {
        ($lvl:expr) => {
            tracing::event!(target: "chimera::agent", $lvl, agent = %agent, task, source = ?source, fields = ?fields, "{}", message)
        };
    }
    match level {
        LogLevel::Trace => ev!(tracing::Level::TRACE),
        LogLevel::Debug => ev!(tracing::Level::DEBUG),
        LogLevel::Info => ev!(tracing::Level::INFO),
        LogLevel::Warn => ev!(tracing::Level::WARN),
        LogLevel::Error => ev!(tracing::Level::ERROR),
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
