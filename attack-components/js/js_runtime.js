// world: logging-agent
// What a JavaScript agent expects of its runtime: a clock that moves,
// randomness that differs per run, and console output in the task log.
import { log } from 'chimera:agent/logging@0.1.0';

export function run(input) {
  console.log(`console.log: ${input}`);
  console.error('console.error: to the log as a warning');
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  log('info', 'logging interface still works', []);
  return JSON.stringify({ now: Date.now(), random: Math.random(), bytes: Array.from(bytes) });
}
