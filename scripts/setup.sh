#!/usr/bin/env bash
# Installs what the build needs: the wasm targets Rust agents are built for,
# componentize-py (Python agents) in a project-local virtualenv, and
# ComponentizeJS (JavaScript agents) with npm, both at the versions pinned in
# toolchains/. Safe to run again: what is installed and current is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v rustup >/dev/null 2>&1; then
  echo "rustup is required (https://rustup.rs) to add the wasm32-wasip2 target" >&2
  exit 1
fi
rustup target add wasm32-wasip2 wasm32-unknown-unknown >/dev/null

# Debian packages, only where something is missing and we may install it.
need=()
command -v python3 >/dev/null 2>&1 && python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3 python3-venv)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
# The Redis storage backend's tests run a real redis-server on loopback.
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if ((${#need[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} (needed to build the Python and JavaScript agents and to test the Redis backend); install them and run again" >&2
    exit 1
  fi
fi

stamp() { sha256sum "$@" | sha256sum | cut -c1-16; }

venv=toolchains/.venv
want=$(stamp toolchains/requirements.txt)
if [ "$(cat $venv/.installed 2>/dev/null)" != "$want" ]; then
  echo "==> installing componentize-py into $venv"
  rm -rf $venv
  python3 -m venv $venv
  $venv/bin/pip install --quiet --disable-pip-version-check -r toolchains/requirements.txt
  echo "$want" > $venv/.installed
fi

want=$(stamp toolchains/package.json toolchains/package-lock.json)
if [ "$(cat toolchains/node_modules/.installed 2>/dev/null)" != "$want" ]; then
  echo "==> installing ComponentizeJS into toolchains/node_modules"
  (cd toolchains && npm ci --silent --no-audit --no-fund)
  echo "$want" > toolchains/node_modules/.installed
fi
