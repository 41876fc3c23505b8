#!/usr/bin/env bash
# The demo: builds the host and the sample agents, then runs them through the
# `chimera` CLI on the embedded defaults (a KV store under target/demo-data).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "==> building the chimera CLI (first build compiles wasmtime: several minutes)"
cargo build --release --locked --bin chimera
echo "==> building the sample agents and attack components for wasm32-wasip2"
for ws in sample-agents attack-components; do
  (cd "$ws" && cargo build --release --locked --quiet --target wasm32-wasip2 --target-dir ../target/guests)
done
chimera=target/release/chimera
agents=target/guests/wasm32-wasip2/release
export CHIMERA_DATA_DIR=target/demo-data
rm -rf "$CHIMERA_DATA_DIR"

# Runs a command and says how long it took (a cold load against a cached one).
timed() {
  local start=$(date +%s%N) status=0
  "$@" || status=$?
  echo "(took $(( ($(date +%s%N) - start) / 1000000 )) ms)"
  return $status
}
step() { printf '\n\033[1m==> %s\033[0m\n$ %s\n' "$1" "${*:2}"; "${@:2}" || echo "(exit status $?)"; }

step "echo: transform text (granted: logging)" \
  $chimera run $agents/echo.wasm --policy sample-agents/echo/policy.toml --input '{"text":"hello, chimera","op":"upper"}'
step "word-count: pure computation, no capabilities" \
  $chimera run $agents/word_count.wasm --policy sample-agents/word-count/policy.toml --input '{"text":"the quick brown fox jumps over the lazy dog the end","top":3}'
step "kv-counter, first run (granted: logging, kv)" \
  $chimera run $agents/kv_counter.wasm --policy sample-agents/kv-counter/policy.toml --input '{"key":"visits"}'
step "kv-counter, second run: the count persisted in the embedded store" \
  $chimera run $agents/kv_counter.wasm --policy sample-agents/kv-counter/policy.toml --input '{"key":"visits"}'

server_pid=""
if command -v python3 >/dev/null 2>&1; then
  mkdir -p target/demo-www && echo "hello from a local service" > target/demo-www/index.txt
  python3 -m http.server 8787 --bind 127.0.0.1 --directory target/demo-www >/dev/null 2>&1 &
  server_pid=$!
  trap 'kill $server_pid 2>/dev/null || true' EXIT
  sleep 1
  step "http-fetch: GET a URL its policy allows" \
    $chimera run $agents/http_fetch.wasm --policy sample-agents/http-fetch/policy.toml --input '{"url":"http://127.0.0.1:8787/index.txt"}'
fi
step "http-fetch: a URL outside its policy is denied by the host" \
  $chimera run $agents/http_fetch.wasm --policy sample-agents/http-fetch/policy.toml --input '{"url":"http://169.254.169.254/latest/meta-data/"}'
printf '[capabilities.logging]\n\n[[capabilities.outbound_http.allow]]\nurl = "http://localhost:8787/"\nmethods = ["GET"]\n' > target/demo-dns.toml
step "http-fetch: a rule for localhost without allow_private: the name resolves to loopback, so the host refuses after DNS" \
  $chimera run $agents/http_fetch.wasm --policy target/demo-dns.toml --input '{"url":"http://localhost:8787/index.txt"}'
if [ -n "$server_pid" ]; then
  # A local API that wants a key: 200 when the request carries it, 401 otherwise (never echoing it).
  export DEMO_API_KEY="demo-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
  python3 -c '
import http.server, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.headers.get("Authorization") == "Bearer " + os.environ["DEMO_API_KEY"]
        body = b"authorized: the request carried the key" if ok else b"no key"
        self.send_response(200 if ok else 401); self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", 8788), H).serve_forever()' &
  api_pid=$!
  trap 'kill $server_pid $api_pid 2>/dev/null || true' EXIT
  sleep 1
  step "api-call: the host adds the API key from a secret (\$DEMO_API_KEY) to the one rule's requests; the agent never sees it" \
    $chimera run $agents/api_call.wasm --policy sample-agents/api-call/policy.toml --secret demo-api-key=env:DEMO_API_KEY --input '{"path":"/v1/whoami"}'
  step "api-call without the secret defined: refused at load, naming the secret" \
    $chimera run $agents/api_call.wasm --policy sample-agents/api-call/policy.toml --input '{"path":"/v1/whoami"}'
fi
step "http-fetch without a policy: refused at load, naming the import" \
  $chimera run $agents/http_fetch.wasm --input '{"url":"http://127.0.0.1:8787/"}'
step "audit: an agent that reads /etc/passwd imports wasi:filesystem and is refused before it runs" \
  $chimera audit $agents/fs_escape.wasm
printf '[limits]\ntimeout_ms = 1000\n' > target/demo-timeout.toml
step "a task that blocks for a minute is ended by its 1 s wall-clock limit" \
  $chimera run $agents/sleeper.wasm --policy target/demo-timeout.toml --input 60
step "audit: what kv-counter imports, what its policy grants, the limits in force" \
  $chimera audit $agents/kv_counter.wasm --policy sample-agents/kv-counter/policy.toml
step "audit: risky grants are warned of (--deny-warnings makes them fail)" \
  $chimera audit $agents/http_fetch.wasm --policy docs/audit-examples/http-fetch-risky.toml
step "audit of the whole deployment: every agent, its digests, the calls between agents and their worst case" \
  $chimera audit --config chimera.toml
step "agent to agent: text-report calls word-count through the host (every agent of chimera.toml loaded)" \
  $chimera run --config chimera.toml text-report --input '{"text":"the quick brown fox jumps over the lazy dog the end"}'
step "audit --diff: what a policy change gives the agent, in capability terms" \
  $chimera audit --diff sample-agents/http-fetch/policy.toml docs/audit-examples/http-fetch-risky.toml

echo
echo "==> building the Python and JavaScript kv-counters (componentize-py, ComponentizeJS)"
scripted=target/guests/scripted
mkdir -p $scripted
scripts/build-agent.sh sample-agents/kv-counter-py/app.py $scripted/kv-counter-py.wasm >/dev/null
scripts/build-agent.sh sample-agents/kv-counter-js/app.js $scripted/kv-counter-js.wasm >/dev/null
rm -rf "$CHIMERA_DATA_DIR/compiled"
step "Python: the first load compiles the 18 MB component (seconds) and caches it" \
  timed $chimera run $scripted/kv-counter-py.wasm --policy sample-agents/kv-counter-py/policy.toml --input '{"key":"visits"}'
step "Python, second run: loaded from the compiled-component cache; the count persisted" \
  timed $chimera run $scripted/kv-counter-py.wasm --policy sample-agents/kv-counter-py/policy.toml --input '{"key":"visits"}'
step "Python under the default policy: refused, naming each filesystem and socket import" \
  $chimera audit $scripted/kv-counter-py.wasm
step "Python under its policy: those imports inert (linked, nothing behind them)" \
  $chimera audit $scripted/kv-counter-py.wasm --policy sample-agents/kv-counter-py/policy.toml
step "JavaScript: logging, kv and the WASI baseline (its clocks, randomness and console work)" \
  $chimera run $scripted/kv-counter-js.wasm --policy sample-agents/kv-counter-js/policy.toml --input '{"key":"visits","by":2}'
if [ -n "$server_pid" ]; then
  scripts/build-agent.sh sample-agents/fetch-js/app.js $scripted/fetch-js.wasm >/dev/null
  step "JavaScript fetch over wasi:http, under the same outbound_http rules: the local service" \
    $chimera run $scripted/fetch-js.wasm --policy sample-agents/fetch-js/policy.toml --input '{"url":"http://127.0.0.1:8787/index.txt"}'
  step "JavaScript fetch of the cloud-metadata address: no rule allows it, refused before it leaves" \
    $chimera run $scripted/fetch-js.wasm --policy sample-agents/fetch-js/policy.toml --input '{"url":"http://169.254.169.254/latest/meta-data/"}'
fi

echo
echo "==> chimera serve: the daemon runs the agents of chimera.toml; chimera submit sends tasks"
port=7979
$chimera serve --config chimera.toml --listen 127.0.0.1:$port 2>target/demo-serve.log &
serve_pid=$!
trap 'kill $serve_pid 2>/dev/null || true; kill $server_pid ${api_pid:-} 2>/dev/null || true' EXIT
for _ in $(seq 600); do
  python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/readyz', timeout=1)" 2>/dev/null && break
  sleep 0.1
done
step "submit: text-report, which calls word-count, and wait for the result" \
  $chimera submit --server http://127.0.0.1:$port -a text-report -i '{"text":"to be or not to be"}' --wait
step "submit at high priority" \
  $chimera submit --server http://127.0.0.1:$port -a echo -i '{"text":"served","op":"upper"}' --priority high --wait
kill -TERM $serve_pid 2>/dev/null && wait $serve_pid 2>/dev/null || true
echo "(the daemon's log: target/demo-serve.log)"
