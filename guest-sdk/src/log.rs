//! Logging through the host's `logging` capability.
//!
//! Use the macros [`trace!`](crate::trace), [`debug!`](crate::debug),
//! [`info!`](crate::info), [`warn!`](crate::warn), [`error!`](crate::error);
//! [`log_with`] adds key/value fields.

use crate::bindings::chimera::agent::logging;
pub use crate::bindings::chimera::agent::logging::Level;

/// Emits one line at `level`.
pub fn log(level: Level, message: &str) {
    logging::log(level, message, &[]);
}

/// Emits one line at `level` with structured fields.
pub fn log_with(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    logging::log(level, message, &fields);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::log($crate::log::Level::$level, &::std::format!($($arg)+))
    };
}

/// Logs at trace level, `format!`-style.
#[macro_export]
macro_rules! trace { ($($arg:tt)+) => { $crate::__log!(Trace, $($arg)+) }; }
/// Logs at debug level, `format!`-style.
#[macro_export]
macro_rules! debug { ($($arg:tt)+) => { $crate::__log!(Debug, $($arg)+) }; }
/// Logs at info level, `format!`-style.
#[macro_export]
macro_rules! info { ($($arg:tt)+) => { $crate::__log!(Info, $($arg)+) }; }
/// Logs at warn level, `format!`-style.
#[macro_export]
macro_rules! warn { ($($arg:tt)+) => { $crate::__log!(Warn, $($arg)+) }; }
/// Logs at error level, `format!`-style.
#[macro_export]
macro_rules! error { ($($arg:tt)+) => { $crate::__log!(Error, $($arg)+) }; }
