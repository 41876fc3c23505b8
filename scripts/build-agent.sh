#!/usr/bin/env bash
# Builds a Python or JavaScript agent into a component:
#
#   scripts/build-agent.sh path/to/app.py  out.wasm
#   scripts/build-agent.sh path/to/app.js  out.wasm
#
# The source names its WIT world (from wit/) in a comment line such as
# `# world: kv-agent` or `// world: kv-agent`. Python is built with
# componentize-py, JavaScript with ComponentizeJS with its clocks, randomness
# and stdio on (Date.now, Math.random, crypto.getRandomValues and console.log
# work; the host coarsens the clocks and captures stdout/stderr into the task
# log) and its HTTP features off (a `// features: http` line keeps `fetch`,
# over wasi:http; in Python, `# features: http` adds wasi:http/outgoing-handler to
# the world). Both toolchains are installed into
# toolchains/ by scripts/setup.sh.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 SOURCE.py|SOURCE.js OUTPUT.wasm" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
source=$1
output=$2
world=$(sed -n 's,^\(#\|//\) *world: *\([a-z0-9-]*\).*,\2,p' "$source" | head -1)
if [ -z "$world" ]; then
  echo "$source has no \`world:\` comment naming its WIT world (e.g. \`# world: kv-agent\`); see wit/worlds.wit" >&2
  exit 2
fi
missing() {
  echo "$1 is not installed in $root/toolchains; run scripts/setup.sh (it installs the Python and JS toolchains)" >&2
  exit 2
}
case "$source" in
  *.py)
    tool=$root/toolchains/.venv/bin/componentize-py
    [ -x "$tool" ] || missing componentize-py
    module=$(basename "$source" .py)
    if grep -q '^# *features:.*\bhttp\b' "$source"; then
      # wasi:http's WIT, as the host's wasmtime-wasi-http crate carries it
      # (the version in Cargo.lock; `cargo fetch` downloads it).
      version=$(sed -n '/^name = "wasmtime-wasi-http"$/{n;s/^version = "\(.*\)"$/\1/p}' "$root/Cargo.lock")
      deps=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"wasmtime-wasi-http-$version"/wit/deps 2>/dev/null | head -1)
      if [ -z "$deps" ]; then
        echo "the wasi:http WIT (wasmtime-wasi-http $version) is not in the cargo registry; run \`cargo fetch\` in $root" >&2
        exit 2
      fi
      wit=(-d "$root/wit")
      for package in io clocks random filesystem sockets cli http; do wit+=(-d "$deps/$package.wit"); done
      # The source's world plus wasi:http/outgoing-handler (its `types` comes along).
      http=$(sed -n 's/^package wasi:http@\(.*\);$/\1/p' "$deps/http.wit")
      scratch=$(mktemp -d)
      trap 'rm -rf "$scratch"' EXIT
      printf 'package local:agent;\n\nworld app {\n  include chimera:agent/%s@0.1.0;\n  import wasi:http/outgoing-handler@%s;\n}\n' \
        "$world" "$http" > "$scratch/app.wit"
      "$tool" "${wit[@]}" -d "$scratch/app.wit" -w local:agent/app componentize -p "$(dirname "$source")" "$module" -o "$output"
      exit
    fi
    exec "$tool" -d "$root/wit" -w "$world" componentize -p "$(dirname "$source")" "$module" -o "$output"
    ;;
  *.js | *.mjs)
    cli=$root/toolchains/node_modules/@bytecodealliance/componentize-js/src/cli.js
    [ -f "$cli" ] || missing ComponentizeJS
    # `// features: http` keeps ComponentizeJS's fetch (over wasi:http, which
    # the host governs with the outbound_http rules); without it HTTP is off.
    if grep -q '^// *features:.*\bhttp\b' "$source"; then
      exec node "$cli" "$source" -w "$root/wit" -n "$world" -o "$output" -d fetch-event
    fi
    exec node "$cli" "$source" -w "$root/wit" -n "$world" -o "$output" -d http fetch-event
    ;;
  *)
    echo "$source: expected a .py or .js file" >&2
    exit 2
    ;;
esac
