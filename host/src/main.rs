//! `chimera`: run, audit, serve and package agents from the command line.

fn main() -> std::process::ExitCode {
    chimera_host::cli::main_with(|builder| builder)
}
