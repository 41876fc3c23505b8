# world: kv-agent
"""kv-counter in Python: a counter that persists across tasks and restarts.

Input  {"key": "visits", "by": 1}  ->  {"key": "visits", "count": N}
Input  {"list": true}              ->  {"counters": [["visits", N], ...]}
Input  {"settings": true}          ->  {"settings": [["key", "value"], ...]} (from the policy)

Grants needed: logging, kv. Built by componentize-py, which imports
wasi:filesystem and wasi:sockets whatever the code does: the policy links
them inert.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import config, kv, logging

PREFIX = "counter/"


def fail(message: str, retryable: bool = False) -> Err:
    return Err(wit_world.AgentError(message=message, retryable=retryable))


def kv_call(what: str, fn, *args):
    """Calls the store, turning its typed error into the agent's own."""
    try:
        return fn(*args)
    except Err as e:
        # A store that is unavailable may work on a retry; a refusal will not.
        retryable = isinstance(e.value, kv.KvError_Unavailable)
        raise fail(f"{what}: {type(e.value).__name__}: {e.value.value}", retryable)


class WitWorld(wit_world.WitWorld):
    def run(self, input: str) -> str:
        try:
            req = json.loads(input)
        except ValueError as e:
            raise fail(f"input is not JSON: {e}")
        if req.get("settings"):
            return json.dumps({"settings": [list(pair) for pair in config.get_all()]})
        if req.get("list"):
            counters = []
            cursor = None
            while True:
                page = kv_call("list-keys", kv.list_keys, PREFIX, cursor, 100)
                for key in page.keys:
                    value = kv_call("get", kv.get, key) or b"0"
                    counters.append([key[len(PREFIX):], int(value)])
                cursor = page.next_cursor
                if cursor is None:
                    break
            return json.dumps({"counters": counters})
        key = req.get("key")
        if not isinstance(key, str) or not key:
            raise fail('give a "key" to count, or "list": true')
        by = req.get("by", int(config.get("default_step") or 1))
        count = kv_call("increment", kv.increment, PREFIX + key, by)
        logging.log(logging.Level.INFO, f"counter {key} is now {count}", [("key", key)])
        return json.dumps({"key": key, "count": count})
