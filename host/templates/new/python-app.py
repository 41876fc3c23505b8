# world: logging-agent
"""{{name}}: a Chimera agent.

Input {"name": "..."}; output {"greeting": "<greeting>, <name>!"}, the
greeting read from the policy's settings ([capabilities.config.values]).
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import config, logging


class WitWorld(wit_world.WitWorld):
    def run(self, input: str) -> str:
        try:
            name = json.loads(input).get("name")
        except (ValueError, AttributeError):
            name = None
        if not isinstance(name, str) or not name:
            raise Err(wit_world.AgentError(message='give a non-empty "name"', retryable=False))
        greeting = config.get("greeting") or "Hello"
        logging.log(logging.Level.INFO, f"greeting {name}", [])
        return json.dumps({"greeting": f"{greeting}, {name}!"}, separators=(",", ":"))
