"""TCP ports for the servers tests start (brokers, RTSP cameras, daemons' HTTP, fake Pushover).

``bind(("127.0.0.1", 0))`` hands out a port from the kernel's ephemeral range, the same range every
outgoing connection takes its source port from, so under ``pytest -n`` (several workers, hundreds of
client connections) a port that was free a moment ago is sometimes someone's source port, or another
worker's server, by the time the daemon binds it: the daemon exits 2 (``http_bind_failed``) and the
test fails for a reason of its own making. Ports here come from below the ephemeral range (Linux: 32768-60999), from
a block of their own per xdist worker, in turn, and are checked free before they are handed out.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
from collections.abc import Iterator

FIRST_PORT = 20000
PORTS_PER_WORKER = 1500  # 8 workers fit below 32768


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... or unset without -n
    return int(worker[2:]) + 1 if worker.startswith("gw") and worker[2:].isdigit() else 0


_BLOCK = FIRST_PORT + _worker_index() * PORTS_PER_WORKER
_NEXT = itertools.cycle(range(_BLOCK, _BLOCK + PORTS_PER_WORKER))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now and that no other worker of this run hands out."""
    for _ in range(PORTS_PER_WORKER):
        port = next(_NEXT)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port in {_BLOCK}-{_BLOCK + PORTS_PER_WORKER - 1}")


@contextlib.contextmanager
def unanswered_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port on ``host`` where a TCP connect times out, as behind a firewall that drops packets: a
    listener with a backlog of 0 whose accept queue is filled, after which the kernel drops new SYNs
    (nothing is ever accepted). Closed on exit."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind((host, free_port()))
    server.listen(0)
    port = server.getsockname()[1]
    queued: list[socket.socket] = []
    try:
        for _ in range(16):
            try:
                queued.append(socket.create_connection((host, port), timeout=0.3))
            except TimeoutError:
                break
        else:
            raise RuntimeError("the listener's accept queue never filled")
        yield port
    finally:
        for sock in queued:
            sock.close()
        server.close()
