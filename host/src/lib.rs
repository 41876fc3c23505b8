//! # chimera-host
//!
//! Runs untrusted agents — WebAssembly components — with exactly the
//! capabilities their policy grants and under hard limits.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use chimera_host::{Host, HostConfig, Policy};
//! let host = Host::new(HostConfig::default())?;
//! let policy = Policy::from_file("echo.toml".as_ref())?;
//! let agent = host.load_file("echo.wasm".as_ref(), policy)?;
//! let report = host.run(&agent, r#"{"text":"hi","op":"upper"}"#).await;
//! println!("{:?}", report.outcome);
//! # Ok(()) }
//! ```
//!
//! Each capability (logging, kv, outbound-http, tasks, the WASI baseline,
//! and any an integrator adds with [`HostBuilder::capability`]) is one
//! [`Capability`] in the host's [`Registry`]; see the [`capability`] module.
//! Storage sits behind [`storage::KvBackend`] and
//! [`scheduler::TaskStore`]. The daemon ([`server`]) is behind the
//! `daemon` feature and the `chimera` CLI behind `cli` (both on by
//! default): `default-features = false` builds the library alone.

mod agent;
pub mod audit;
#[cfg(feature = "daemon")]
pub mod auth;
mod bindings;
mod cache;
mod calls;
pub mod capabilities;
pub mod capability;
mod classify;
#[cfg(feature = "cli")]
pub mod cli;
pub mod compile;
mod concurrency;
pub mod config;
mod cpu;
mod engine;
pub mod error;
mod features;
#[cfg(test)]
mod fuzzing;
mod guest_args;
mod host;
#[cfg(feature = "daemon")]
mod http_edge;
mod limits;
mod loader;
pub mod log;
pub mod metrics;
#[cfg(feature = "daemon")]
mod parse_errors;
pub mod policy;
mod report;
mod runner;
pub mod scheduler;
pub mod secrets;
#[cfg(feature = "daemon")]
pub mod server;
pub mod storage;
mod task_data;
pub mod usage;
mod warm;

#[cfg(test)]
mod registry_tests;

pub use agent::Agent;
pub use audit::{AuditReport, AUDIT_SCHEMA_VERSION};
pub use calls::AgentCaller;
pub use capability::{Capability, Decision, ImportDecision, Interface, Registry, Verdict};
pub use config::HostConfig;
pub use error::{HostError, LoadError, PolicyError, TaskError};
pub use guest_args::GuestStr;
pub use host::{Host, HostBuilder};
pub use log::{LogLevel, LogLine, LogSource};
pub use metrics::Metrics;
pub use policy::{Policy, PolicyBuilder};
pub use report::{RunOptions, TaskReport};
pub use scheduler::{Priority, Queued, ReadyQueue, Scheduler, SchedulerConfig, Submission, TaskRecord, TaskStatus};
pub use secrets::Secrets;
pub use task_data::TaskData;
pub use usage::ResourceUsage;
pub use warm::WarmInstance;

/// The TOML crate policies are parsed with ([`Policy::section`] returns its values).
pub use toml;
/// The wasmtime the host is built on, for the types its API exposes
/// ([`Engine`](wasmtime::Engine), [`Component`](wasmtime::component::Component),
/// [`Linker`](wasmtime::component::Linker)) and for custom capabilities'
/// bindings (`wasmtime::component::bindgen!`).
pub use wasmtime;
