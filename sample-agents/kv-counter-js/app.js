// world: kv-agent
// kv-counter in JavaScript: a counter that persists across tasks and restarts.
//
// Input  {"key": "visits", "by": 1}  ->  {"key": "visits", "count": N}
// Input  {"list": true}              ->  {"counters": [["visits", N], ...]}
// Input  {"settings": true}          ->  {"settings": [["key", "value"], ...]} (from the policy)
//
// Grants needed: logging, kv (its settings, `config`, need none). Built by
// ComponentizeJS with clocks, randomness and stdio on and HTTP off.

import { log } from 'chimera:agent/logging@0.1.0';
import * as kv from 'chimera:agent/kv@0.1.0';
import * as config from 'chimera:agent/config@0.1.0';

const PREFIX = 'counter/';

// The agent's error: a thrown plain object becomes `err(agent-error)`.
function fail(message, retryable = false) {
  return { message, retryable };
}

// Store errors arrive as exceptions whose `payload` is the kv-error variant.
function kvCall(what, fn, ...args) {
  try {
    return fn(...args);
  } catch (e) {
    const p = e.payload;
    if (!p) throw e;
    throw fail(`${what}: ${p.tag}: ${p.val}`, p.tag === 'unavailable');
  }
}

export function run(input) {
  let req;
  try {
    req = JSON.parse(input);
  } catch (e) {
    throw fail(`input is not JSON: ${e.message}`);
  }
  if (req.settings) {
    return JSON.stringify({ settings: config.getAll() });
  }
  if (req.list) {
    const counters = [];
    let cursor;
    do {
      const page = kvCall('list-keys', kv.listKeys, PREFIX, cursor, 100);
      for (const key of page.keys) {
        const value = kvCall('get', kv.get, key);
        counters.push([key.slice(PREFIX.length), Number(new TextDecoder().decode(value ?? new Uint8Array()) || 0)]);
      }
      cursor = page.nextCursor;
    } while (cursor !== undefined && cursor !== null);
    return JSON.stringify({ counters });
  }
  if (typeof req.key !== 'string' || req.key === '') {
    throw fail('give a "key" to count, or "list": true');
  }
  const count = kvCall('increment', kv.increment, PREFIX + req.key, BigInt(req.by ?? config.get('default_step') ?? 1));
  log('info', `counter ${req.key} is now ${count}`, [['key', req.key]]);
  return JSON.stringify({ key: req.key, count: Number(count) });
}
