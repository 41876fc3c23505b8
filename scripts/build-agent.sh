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
# log) and its HTTP features off. Both toolchains are installed into
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
    exec "$tool" -d "$root/wit" -w "$world" componentize -p "$(dirname "$source")" "$module" -o "$output"
    ;;
  *.js | *.mjs)
    cli=$root/toolchains/node_modules/@bytecodealliance/componentize-js/src/cli.js
    [ -f "$cli" ] || missing ComponentizeJS
    exec node "$cli" "$source" -w "$root/wit" -n "$world" -o "$output" -d http fetch-event
    ;;
  *)
    echo "$source: expected a .py or .js file" >&2
    exit 2
    ;;
esac
