# world: runnable
"""A Python agent that tries to leave its sandbox, for the escape and limit
tests. CPython imports wasi:filesystem and wasi:sockets; under a policy that
links them inert, every attempt must fail inside Python with an OSError.

Input {"op": ..., ...}; output says what happened:
  read-file  {"path"}          open a host file and read it
  write-file {"path"}          create a host file
  list-dir   {"path"}          list a host directory
  connect    {"host", "port"}  open a TCP connection to an address
  udp        {"host", "port"}  send a UDP datagram
  resolve    {"host"}          look a name up
  spin       {}                loop forever
  hog        {}                allocate until something stops it
Each escape returns "blocked: <exception>" or "ESCAPED: <what it got>".
"""

import encodings.idna  # noqa: F401 -- socket names need it; a module not imported at build time cannot be loaded later
import json
import os
import socket

import wit_world
from componentize_py_types import Err


def attempt(op: str, req: dict) -> str:
    if op == "read-file":
        with open(req["path"]) as f:
            return f.read(200)
    if op == "write-file":
        with open(req["path"], "w") as f:
            f.write("written from inside an agent\n")
        return "wrote " + req["path"]
    if op == "list-dir":
        return ",".join(os.listdir(req["path"]))
    if op == "connect":
        # A raw socket to an address literal: no name lookup on the way.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect((req["host"], req["port"]))
            s.sendall(b"hello from inside an agent\n")
            return "connected"
    if op == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"hello from inside an agent\n", (req["host"], req["port"]))
            return "sent"
    if op == "resolve":
        return repr(socket.getaddrinfo(req["host"], 80))
    if op == "spin":
        n = 0
        while True:
            n += 1
    if op == "hog":
        hoard = []
        while True:
            hoard.append(bytearray(1 << 20))
    raise Err(wit_world.AgentError(message=f"unknown op {op!r}", retryable=False))


class WitWorld(wit_world.WitWorld):
    def run(self, input: str) -> str:
        req = json.loads(input)
        try:
            return "ESCAPED: " + attempt(req["op"], req)
        except OSError as e:
            return f"blocked: {type(e).__name__}: {e}"
