#!/usr/bin/env bash
# The test command: sets up, builds the CLI, checks that every benchmark
# still runs (once each, no timing), then runs every test in release mode (a
# debug host runs wasm ~16x slower) and the embedding examples. The tests
# crate's build script compiles the sample agents and attack components
# from source first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The library alone, as an embedder depends on it, pulls in neither the
# daemon's nor the CLI's crates.
if cargo tree --locked -p chimera-host --no-default-features -e normal --prefix none | grep -E '^(axum|clap|tracing-subscriber) v'; then
  echo "chimera-host without default features depends on the crates above" >&2
  exit 1
fi
# ...and builds without them.
cargo check --release --locked -q -p chimera-host --no-default-features
cargo build --release --locked --bin chimera
# The SDK packages and builds as it would be published (its WIT inside it).
(cd guest-sdk && cargo package --quiet --allow-dirty --target-dir ../target/sdk-package)
cargo bench --locked -p chimera-benches -- --test
# The fuzz targets (host/src/fuzzing) run a minute each and report here.
export CHIMERA_FUZZ_SECONDS="${CHIMERA_FUZZ_SECONDS:-60}"
export CHIMERA_FUZZ_REPORT="$PWD/target/fuzz-report.txt"
rm -f "$CHIMERA_FUZZ_REPORT"
cargo test --release --locked --workspace
echo "==> fuzz targets"
cat "$CHIMERA_FUZZ_REPORT"
for example in embed policy-in-code custom-capability scheduler; do
  echo "==> example $example"
  cargo run --release --locked -q -p chimera-examples --bin "$example"
done
