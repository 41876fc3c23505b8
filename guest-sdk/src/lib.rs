//! # chimera-agent: the guest SDK
//!
//! An agent is one function from an input string to an output string,
//! registered with [`agent!`]:
//!
//! ```ignore
//! fn run(input: String) -> Result<String, chimera_agent::Error> {
//!     chimera_agent::info!("got {} bytes", input.len());
//!     Ok(input.to_uppercase())
//! }
//! chimera_agent::agent!(run);
//! ```
//!
//! With `agent!(json run)` the function takes and returns serde types and the
//! SDK does the JSON. Build with `cargo build --target wasm32-wasip2 --release`;
//! the component imports only the capabilities the code calls.

pub mod config;
pub mod http;
pub mod kv;
pub mod log;
pub mod tasks;

/// Raw bindings for the `chimera:agent/agent` world, generated from `wit/`.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "agent",
        path: "wit",
        pub_export_macro: true,
        default_bindings_module: "chimera_agent::bindings",
    });
}

use std::fmt;

/// A task failure reported by the agent to the host.
///
/// Any `std::error::Error` converts into it with `?` (not retryable);
/// use [`Error::retryable`] for failures worth running again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// What went wrong, in plain words.
    pub message: String,
    /// Whether the host may retry the task.
    pub retryable: bool,
}

impl Error {
    /// A permanent failure (bad input, logic error).
    pub fn new(message: impl Into<String>) -> Self {
        Error { message: message.into(), retryable: false }
    }

    /// A transient failure the host may retry.
    pub fn retryable(message: impl Into<String>) -> Self {
        Error { message: message.into(), retryable: true }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error::new(e.to_string())
    }
}

/// JSON helpers for agents whose input and output are JSON.
pub mod json {
    use super::Error;

    /// Parses the task input as JSON into `T`, with an error that says so.
    pub fn parse<T: serde::de::DeserializeOwned>(input: &str) -> Result<T, Error> {
        serde_json::from_str(input).map_err(|e| Error::new(format!("input is not the expected JSON: {e}")))
    }

    /// Serializes `value` as the task output.
    pub fn to_string<T: serde::Serialize>(value: &T) -> Result<String, Error> {
        serde_json::to_string(value).map_err(|e| Error::new(format!("cannot serialize output: {e}")))
    }
}

#[doc(hidden)]
pub fn __into_wit(result: Result<String, Error>) -> Result<String, bindings::AgentError> {
    result.map_err(|e| bindings::AgentError { message: e.message, retryable: e.retryable })
}

#[doc(hidden)]
pub fn __run_json<I, O>(input: String, f: impl FnOnce(I) -> Result<O, Error>) -> Result<String, Error>
where
    I: serde::de::DeserializeOwned,
    O: serde::Serialize,
{
    let parsed = json::parse(&input)?;
    json::to_string(&f(parsed)?)
}

/// Registers the agent's entry point.
///
/// - `agent!(run)` with `fn run(input: String) -> Result<String, Error>`;
/// - `agent!(json run)` with `fn run(input: I) -> Result<O, Error>` where
///   `I: Deserialize` and `O: Serialize`.
#[macro_export]
macro_rules! agent {
    (json $run:path) => {
        $crate::agent!(@export |input: String| $crate::__run_json(input, $run));
    };
    ($run:path) => {
        $crate::agent!(@export |input: String| $run(input));
    };
    (@export $body:expr) => {
        struct __ChimeraAgent;
        impl $crate::bindings::Guest for __ChimeraAgent {
            fn run(input: String) -> Result<String, $crate::bindings::AgentError> {
                let body = $body;
                $crate::__into_wit(body(input))
            }
        }
        $crate::bindings::export!(__ChimeraAgent with_types_in $crate::bindings);
    };
}
