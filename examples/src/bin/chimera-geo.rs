//! The `chimera` command line with the example's `acme:geo` capability
//! added: `chimera-geo audit`, `run` and `serve` know `[capabilities.geo]`
//! as they know the built-ins.

fn main() -> std::process::ExitCode {
    chimera_host::cli::main_with(|builder| builder.capability(chimera_examples::Geo::sample()))
}
