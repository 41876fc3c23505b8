//! The `chimera` command line: run, audit, serve and package agents. A
//! program that adds capabilities of its own gets the same commands with
//! them by calling [`main_with`] (the `chimera` binary is `main_with(|b| b)`).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::{Host, HostBuilder, HostConfig, LogSource, Policy, Registry, TaskReport};

/// `println!` that hands back the write's error instead of panicking, so
/// output piped into `head` ends quietly (see [`main_with`]).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?;
    }};
}

mod audit;
mod client;
mod new;
mod run;

#[derive(Parser)]
#[command(
    name = "chimera",
    version,
    about = "Run untrusted AI agents as WebAssembly components, with least privilege and hard limits"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one task of an agent and print its output.
    ///
    /// Exit status: 0 on success, 1 if the task failed, 2 if the agent could not be loaded.
    Run {
        /// The agent component (.wasm); with --config, the name of one of its agents.
        component: PathBuf,
        /// The agent's policy (TOML). Without it the agent gets no capability
        /// beyond the locked-down WASI baseline and default limits.
        #[arg(long, short, conflicts_with = "config")]
        policy: Option<PathBuf>,
        /// Load every agent of this `chimera serve` config (with its pins,
        /// data directory and storage), so the one run can call the others.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Another agent the run may call through `tasks`: NAME=WASM or
        /// NAME=WASM:POLICY (repeatable).
        #[arg(long = "agent", value_name = "NAME=WASM[:POLICY]", conflicts_with = "config")]
        agents: Vec<String>,
        /// A secret for the policies' `secret_headers`: NAME=env:VARIABLE or
        /// NAME=file:PATH (repeatable; with --config, its [secrets] instead).
        #[arg(long = "secret", value_name = "NAME=env:VAR|file:PATH", conflicts_with = "config")]
        secrets: Vec<String>,
        /// Task input: literal text, or @FILE to read it from a file, or @- for stdin.
        #[arg(long, short, default_value = "")]
        input: String,
        /// Print the whole task report (output or error, usage, logs) as JSON.
        #[arg(long)]
        json: bool,
        /// Data directory for the KV store [default: $CHIMERA_DATA_DIR or ~/.local/share/chimera].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Do not print the agent's log lines.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Show what a component imports, what its policy grants, the limits in
    /// force, and what is risky; or audit a whole deployment (--config), or
    /// compare two policies or configs (--diff).
    ///
    /// Exit status: 0 if the agent (or deployment) would load, 1 if it would
    /// be refused, or if there is any warning and --deny-warnings is given.
    Audit {
        /// The agent component (.wasm). With --diff: judge both policies against it.
        component: Option<PathBuf>,
        /// The policy to judge it against. Without it: the empty policy.
        #[arg(long, short, conflicts_with_all = ["config", "diff"])]
        policy: Option<PathBuf>,
        /// Audit every agent of this `chimera serve` config, the calls
        /// between them, and the KV namespaces they share.
        #[arg(long, short, conflicts_with = "diff")]
        config: Option<PathBuf>,
        /// Compare two policies (or two `chimera serve` configs) in
        /// capability terms: what the agent gains and loses.
        #[arg(long, num_args = 2, value_names = ["OLD", "NEW"])]
        diff: Option<Vec<PathBuf>>,
        /// Print the audit as JSON.
        #[arg(long)]
        json: bool,
        /// Exit with status 1 if there is any warning.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Run the host as a daemon: the agents of a config file, the scheduler,
    /// and the HTTP API (tasks, agents, health, metrics) on 127.0.0.1.
    Serve {
        /// The config file [default: ./chimera.toml].
        #[arg(long, short, default_value = "chimera.toml")]
        config: PathBuf,
        /// Listen here instead of the config's `listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Submit tasks to a running daemon; with --wait, show live status until all finish.
    Submit {
        /// The agent to run.
        #[arg(long, short)]
        agent: String,
        /// Task input (repeat for several tasks; @FILE reads a file).
        #[arg(long, short, default_value = "")]
        input: Vec<String>,
        /// critical, high, normal, low or background.
        #[arg(long, default_value = "normal")]
        priority: String,
        /// Deadline in milliseconds from now.
        #[arg(long)]
        deadline_ms: Option<u64>,
        /// Wait for every task to finish, showing progress, and print results.
        #[arg(long)]
        wait: bool,
        /// The daemon [default: $CHIMERA_SERVER or http://127.0.0.1:7878].
        #[arg(long)]
        server: Option<String>,
    },
    /// Show a task's state, output or error, attempts and usage.
    Status {
        id: crate::scheduler::TaskId,
        #[arg(long)]
        server: Option<String>,
    },
    /// Print what each attempt of a task logged.
    Logs {
        id: crate::scheduler::TaskId,
        #[arg(long)]
        server: Option<String>,
    },
    /// Cancel a queued or running task.
    Cancel {
        id: crate::scheduler::TaskId,
        #[arg(long)]
        server: Option<String>,
    },
    /// Make an API token: prints the token (for the client's
    /// CHIMERA_TOKEN) and the `[[tokens]]` entry (its hash) for the
    /// daemon's tokens file.
    Token {
        /// The token's name (tasks it submits are its own).
        #[arg(long)]
        name: String,
        /// What it may do: any of submit, read, cancel, admin.
        #[arg(long, value_delimiter = ',', default_value = "submit,read,cancel")]
        scopes: Vec<String>,
    },
    /// Create a ready agent project: source, policy, build script, a test
    /// that runs it through the host, and a README.
    New {
        /// The language: rust, python or js.
        #[arg(long, value_enum)]
        lang: new::Lang,
        /// The agent's name, also the project's folder (created here).
        name: String,
    },
    /// Wrap a core wasm module built for wasm32-unknown-unknown (with
    /// wit-bindgen's component metadata) into a component with no WASI imports.
    Componentize {
        /// The core module (.wasm).
        module: PathBuf,
        /// Where to write the component.
        #[arg(long, short)]
        output: PathBuf,
    },
}

/// Runs the `chimera` command line with the capabilities `extend` adds to
/// every host it creates (`run`, `audit` and `serve` alike). Call it first
/// thing in `main`: the program is also the host's compile worker.
pub fn main_with(extend: impl Fn(HostBuilder) -> HostBuilder) -> ExitCode {
    // This program is also the host's compile worker (see crate::compile).
    crate::compile::run_worker_if_asked();
    let cli = Cli::parse();
    // `run` prints the task's log lines itself, after the task: not twice.
    let default_filter = if matches!(cli.command, Command::Run { .. }) { "warn,chimera::agent=off" } else { "warn" };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CHIMERA_LOG").unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a file or a collector.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // CHIMERA_LOG_FORMAT=json: one JSON object per line, for log collectors.
    if std::env::var("CHIMERA_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    match run_cli(cli, &extend) {
        Ok(code) => code,
        // The reader went away (`| head`): nothing more to say to it.
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn run_cli(cli: Cli, extend: &dyn Fn(HostBuilder) -> HostBuilder) -> Result<ExitCode> {
    let registry = extend(Host::builder(HostConfig::default())).registry();
    match cli.command {
        Command::Run { component, policy, config, agents, secrets, input, json, data_dir, quiet } => {
            let input = read_input(&input)?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            // A networked KV store connects from inside a runtime.
            let _in_runtime = runtime.enter();
            let (host, agent) = match config {
                Some(config) => run::from_config(&config, &component, data_dir, extend)?,
                None => {
                    let loaded = run::Loaded { policy: policy.as_deref(), callees: &agents, secrets: &secrets };
                    run::with_callees(&component, loaded, data_dir, &registry, extend)?
                }
            };
            let report = runtime.block_on(host.run(&agent, &input));
            print_report(&report, json, quiet)
        }
        Command::Audit { component, policy, config, diff, json, deny_warnings } => {
            let how = audit::Output { json, deny_warnings };
            match (diff, config, component) {
                (Some(files), _, component) => audit::diff(&files[0], &files[1], component.as_deref(), extend, how),
                (None, Some(config), None) => audit::deployment(&config, extend, how),
                (None, Some(_), Some(_)) => {
                    anyhow::bail!("--config audits the agents the config names; give no component with it")
                }
                (None, None, Some(component)) => audit::component(&component, policy.as_deref(), extend, how),
                (None, None, None) => anyhow::bail!(
                    "give a component to audit (chimera audit AGENT.wasm --policy POLICY.toml), a deployment \
                     (--config chimera.toml), or two policies to compare (--diff OLD.toml NEW.toml)"
                ),
            }
        }
        Command::Serve { config, listen } => {
            let mut config = if config.exists() || config != Path::new("chimera.toml") {
                crate::server::ServeConfig::from_file(&config).map_err(anyhow::Error::msg)?
            } else {
                eprintln!("no chimera.toml here: starting with no agents (write one to add agents; see README)");
                toml::from_str::<crate::server::ServeConfig>("")?
            };
            if let Some(addr) = listen {
                config.listen = addr;
                config.validate().map_err(anyhow::Error::msg)?;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            // A file-size limit reached is a write error to report and
            // recover from (like a full disk), not a reason to die.
            // SAFETY: setting a signal's disposition to "ignore" runs no code.
            unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
            runtime.block_on(async {
                // The whole config is checked (from_file) before the port is
                // taken, and the port before any recovered task starts.
                let listener = tokio::net::TcpListener::bind(config.listen)
                    .await
                    .with_context(|| format!("cannot listen on {}", config.listen))?;
                let addr = listener.local_addr()?;
                let agents = config.agents.len();
                eprintln!("chimera starting on http://{addr}: loading {agents} agent(s) (/healthz answers meanwhile)");
                let ready = || eprintln!("chimera serving {agents} agent(s) on http://{addr}");
                crate::server::run(&config, extend, listener, ready).await.map_err(anyhow::Error::msg)
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Submit { agent, input, priority, deadline_ms, wait, server } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(client::submit(server_url(server), agent, input, priority, deadline_ms, wait))
        }
        Command::Token { name, scopes } => {
            for scope in &scopes {
                if !["submit", "read", "cancel", "admin"].contains(&scope.as_str()) {
                    anyhow::bail!("unknown scope {scope:?}; use submit, read, cancel or admin");
                }
            }
            let (token, hash) = crate::auth::new_token();
            let scopes: Vec<String> = scopes.iter().map(|s| format!("{s:?}")).collect();
            out!("{token}");
            eprintln!(
                "give the token above to the client (CHIMERA_TOKEN); the daemon keeps only its hash. \
                 Add to the tokens file ([auth] tokens_file):\n\n[[tokens]]\nname = {name:?}\nsha256 = \"{hash}\"\nscopes = [{}]",
                scopes.join(", ")
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { id, server } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(client::status(server_url(server), id.to_string()))
        }
        Command::Logs { id, server } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(client::logs(server_url(server), id.to_string()))
        }
        Command::Cancel { id, server } => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(client::cancel(server_url(server), id.to_string()))
        }
        Command::New { lang, name } => {
            let project = new::create(lang, &name, Path::new("."))?;
            let shown = project.display();
            eprintln!("created {shown}: cd {shown} && ./test.sh   (builds {name}.wasm and runs it through the host)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Componentize { module, output } => {
            let bytes = std::fs::read(&module).with_context(|| format!("cannot read {}", module.display()))?;
            let component = wit_component::ComponentEncoder::default()
                .module(&bytes)
                .and_then(|e| e.validate(true).encode())
                .map_err(|e| anyhow::anyhow!("{e:#}"))
                .with_context(|| {
                    format!(
                        "{} cannot be made into a component (it must be a core module built with wit-bindgen)",
                        module.display()
                    )
                })?;
            std::fs::write(&output, component).with_context(|| format!("cannot write {}", output.display()))?;
            eprintln!("wrote {}", output.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The CLI runs one agent, so the engine takes that agent's stack and a small pool.
pub(crate) fn host_config(policy: &Policy) -> HostConfig {
    let mut config = HostConfig { max_instances: 4, ..HostConfig::default() };
    if let Some(stack) = policy.limits.stack_kib {
        config.stack_kib = stack;
    }
    // The load budget of the one-shot commands (`serve` reads `[load]`).
    let budget = &mut config.load_budget;
    for (var, field) in [
        ("CHIMERA_MAX_COMPONENT_BYTES", &mut budget.max_component_bytes),
        ("CHIMERA_COMPILE_TIMEOUT_MS", &mut budget.compile_timeout_ms),
        ("CHIMERA_COMPILE_MEMORY_MIB", &mut budget.compile_memory_mib),
    ] {
        if let Some(value) = std::env::var(var).ok().and_then(|v| v.parse().ok()) {
            *field = value;
        }
    }
    config
}

fn server_url(flag: Option<String>) -> String {
    flag.or_else(|| std::env::var("CHIMERA_SERVER").ok()).unwrap_or_else(|| "http://127.0.0.1:7878".into())
}

pub(crate) fn load_policy(path: Option<&Path>, registry: &Registry) -> Result<Policy> {
    Ok(match path {
        Some(p) => Policy::from_file_with(p, registry)?,
        None => Policy::default(),
    })
}

fn read_input(spec: &str) -> Result<String> {
    if spec == "@-" {
        return std::io::read_to_string(std::io::stdin()).context("cannot read the input from stdin");
    }
    match spec.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read the input file {path}")),
        None => Ok(spec.to_string()),
    }
}

pub(crate) fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "agent".into())
}

fn print_report(report: &TaskReport, json: bool, quiet: bool) -> Result<ExitCode> {
    if json {
        out!("{}", serde_json::to_string_pretty(report)?);
    } else {
        if !quiet {
            for line in &report.logs {
                let source = match line.source {
                    LogSource::Agent => "",
                    LogSource::Stdout => " stdout",
                    LogSource::Stderr => " stderr",
                };
                let fields: String = line.fields.iter().map(|(k, v)| format!(" {k}={v}")).collect();
                eprintln!("[{} {}{}] {}{}", report.agent, line.level, source, line.message, fields);
            }
        }
        match &report.outcome {
            Ok(output) => out!("{output}"),
            Err(e) => eprintln!("error: task {} of agent `{}` failed: {e}", report.task_id, report.agent),
        }
    }
    Ok(if report.outcome.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
