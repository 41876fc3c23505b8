#!/usr/bin/env bash
# The test command: sets up, builds the CLI, checks that every benchmark
# still runs (once each, no timing), then runs every test in release mode (a
# debug host runs wasm ~16x slower). The tests crate's build script compiles
# the sample agents and attack components from source first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked --bin chimera
cargo bench --locked -p chimera-benches -- --test
cargo test --release --locked --workspace
