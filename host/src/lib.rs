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

pub mod audit;
mod bindings;
mod cache;
pub mod capabilities;
pub mod compile;
mod concurrency;
pub mod config;
mod cpu;
pub mod error;
mod features;
mod guest_args;
mod host;
mod limits;
pub mod metrics;
pub mod policy;
pub mod scheduler;
pub mod server;
mod state;
pub mod usage;
mod warm;

pub use audit::AuditReport;
pub use capabilities::logging::{LogLine, LogSource};
pub use capabilities::{ImportDecision, Verdict};
pub use config::HostConfig;
pub use error::{HostError, LoadError, PolicyError, TaskError};
pub use host::{Agent, Host, RunOptions, TaskReport};
pub use metrics::Metrics;
pub use policy::Policy;
pub use scheduler::{Priority, Queued, ReadyQueue, Scheduler, SchedulerConfig, Submission, TaskRecord, TaskStatus};
pub use usage::ResourceUsage;
pub use warm::WarmInstance;
