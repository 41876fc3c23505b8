// world: logging-agent
// {{name}}: a Chimera agent.
// Input {"name": "..."}; output {"greeting": "<greeting>, <name>!"}, the
// greeting read from the policy's settings ([capabilities.config.values]).

import { log } from 'chimera:agent/logging@0.1.0';
import { get } from 'chimera:agent/config@0.1.0';

export function run(input) {
  let name;
  try {
    name = JSON.parse(input).name;
  } catch (e) {
    name = undefined;
  }
  if (typeof name !== 'string' || name === '') {
    // A thrown plain object is the task's error.
    throw { message: 'give a non-empty "name"', retryable: false };
  }
  const greeting = get('greeting') ?? 'Hello';
  log('info', `greeting ${name}`, []);
  return JSON.stringify({ greeting: `${greeting}, ${name}!` });
}
