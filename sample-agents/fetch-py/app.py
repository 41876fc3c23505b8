# world: logging-agent
# features: http
"""fetch-py: an HTTP request from Python through the standard
wasi:http/outgoing-handler, which the host governs with the policy's
[capabilities.outbound_http] rules, quota and limits like any request.

Input  {"url": "http://host:port/path", "method": "GET", "body": "...", "times": 1}
Output {"status": 200, "body": "..."} or {"error": "ErrorCode_HttpRequestDenied"}
(`times` sends the request that many times: the last answer or the first error.)

Built with `# features: http`: scripts/build-agent.sh adds
wasi:http/outgoing-handler to the world.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import logging, outgoing_handler, streams, types

METHODS = {"GET": types.Method_Get, "POST": types.Method_Post, "PUT": types.Method_Put}


def fetch(url: str, method: str, body: bytes | None) -> tuple[int, bytes]:
    scheme, rest = url.split("://", 1)
    authority, _, path = rest.partition("/")
    request = types.OutgoingRequest(types.Fields.from_list([]))
    request.set_method(METHODS.get(method, types.Method_Get)())
    request.set_scheme(types.Scheme_Http() if scheme == "http" else types.Scheme_Https())
    request.set_authority(authority)
    request.set_path_with_query("/" + path)
    outgoing = request.body()
    # Handed over first, then the body written: the host reads it as it comes.
    pending = outgoing_handler.handle(request, None)
    if body:
        stream = outgoing.write()
        for start in range(0, len(body), 4096):
            stream.blocking_write_and_flush(body[start : start + 4096])
        stream.__exit__(None, None, None)
    types.OutgoingBody.finish(outgoing, None)
    while (answer := pending.get()) is None:
        pending.subscribe().block()
    result = answer.value  # Ok(response) or Err(error-code)
    if isinstance(result, Err):
        raise result
    response = result.value
    incoming = response.consume()
    stream = incoming.stream()
    data = b""
    while True:
        try:
            data += stream.blocking_read(65536)
        except Err as e:
            if isinstance(e.value, streams.StreamError_Closed):
                break
            raise
    return response.status(), data


class WitWorld(wit_world.WitWorld):
    def run(self, input: str) -> str:
        req = json.loads(input)
        body = req.get("body")
        answer = {}
        for _ in range(req.get("times", 1)):
            try:
                status, data = fetch(req["url"], req.get("method", "GET"), body.encode() if body else None)
            except Err as e:
                name = type(e.value).__name__
                logging.log(logging.Level.WARN, f"fetch {req['url']} failed: {name}", [])
                return json.dumps({"error": name})
            answer = {"status": status, "body": data.decode("utf-8", "replace")}
        return json.dumps(answer)
