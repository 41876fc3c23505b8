#!/usr/bin/env bash
# Builds the agent and runs it through the host under its policy: checks the
# output of one task, that the policy's setting reached it, and that bad
# input fails the task.
set -euo pipefail
cd "$(dirname "$0")"
chimera=${CHIMERA:-{{chimera}}}
./build.sh
data=$(mktemp -d)
trap 'rm -rf "$data"' EXIT
out=$("$chimera" run {{name}}.wasm --policy policy.toml --data-dir "$data" --quiet --input '{"name":"test"}')
if [ "$out" != '{"greeting":"Hello, test!"}' ]; then
  echo "FAIL: unexpected output: $out" >&2
  exit 1
fi
status=0
"$chimera" run {{name}}.wasm --policy policy.toml --data-dir "$data" --quiet --input '{}' >/dev/null 2>&1 || status=$?
if [ "$status" != 1 ]; then
  echo "FAIL: an empty input should fail the task (exit 1), got exit $status" >&2
  exit 1
fi
echo "ok: {{name}} answered $out; an empty input failed the task"
