#!/usr/bin/env bash
# Installs what the build needs: the wasm targets the guest components are built for.
set -euo pipefail
if command -v rustup >/dev/null 2>&1; then
  rustup target add wasm32-wasip2 wasm32-unknown-unknown >/dev/null
else
  echo "rustup is required (https://rustup.rs) to add the wasm32-wasip2 target" >&2
  exit 1
fi
