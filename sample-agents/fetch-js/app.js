// world: logging-agent
// features: http
// fetch-js: the standard `fetch` in a JavaScript agent. ComponentizeJS's
// fetch goes out through wasi:http/outgoing-handler, which the host governs
// with the policy's [capabilities.outbound_http] rules like any request: a
// URL no rule allows fails as a network error (the task's log says why),
// and a redirect comes back as the response (neither the host nor this fetch
// follows it).
//
// Input  {"url": "...", "method": "GET", "body": "...", "times": 1}
// Output {"status": 200, "body": "...", "redirected": false} or {"error": "..."}
// (`times` fetches the URL that many times; the last answer or the first error.)

import { log } from 'chimera:agent/logging@0.1.0';

export async function run(input) {
  const req = JSON.parse(input);
  let answer;
  for (let i = 0; i < (req.times ?? 1); i++) {
    try {
      const response = await fetch(req.url, { method: req.method ?? 'GET', body: req.body });
      answer = { status: response.status, body: await response.text(), redirected: response.redirected };
    } catch (e) {
      log('warn', `fetch ${req.url} failed: ${e}`, []);
      return JSON.stringify({ error: String(e) });
    }
  }
  return JSON.stringify(answer);
}
