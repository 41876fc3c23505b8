#!/usr/bin/env bash
# Builds {{name}}.wasm, the agent's component.
set -euo pipefail
cd "$(dirname "$0")"
{{build}}
echo "built $(pwd)/{{name}}.wasm"
