"""The daemon's HTTP server: uvicorn (h11) in a thread of the daemon, on a socket bound beforehand.

    listener = bind_listener(host, port, loopback_only=True)   # OSError naming http.host / http.port
    server = ServerThread(asgi_app, listener); server.start()   # serves in thread "http"
    server.stop()                                                # should_exit, join, socket closed

Why these parts: h11 parses every request per RFC 9112 and refuses what does not frame cleanly
(two different Content-Lengths, a negative one, a Transfer-Encoding other than chunked, a control
character in a header, a request line over ``MAX_HEAD`` bytes: 400 and close); ``strict_framing``
adds the one case h11 lets through, Content-Length beside Transfer-Encoding (RFC 9112 6.3: a
server may reject it, and must close the connection after it). The socket is bound here, in the
caller's thread, so a taken port is an ``OSError`` at once (the daemon exits 2 before its cameras
start) and the listen backlog is ``BACKLOG``, so a burst of connects waits in the kernel queue,
not in SYN retries.

Hostile clients: a connection has ``HEAD_TIMEOUT_S`` to send a whole request head (from its accept
or from the end of its previous response), else it is closed (slowloris); at most
``MAX_CONNECTIONS`` are open at once, and the one beyond closes the oldest connection that has no
request in flight. Neither costs a thread: a waiting connection is a few kB in the event loop.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from raccoon_watch.config import all_loopback

log = structlog.get_logger(__name__)

BACKLOG = 2048  # the kernel caps it at net.core.somaxconn (4096 on current kernels)
MAX_CONNECTIONS = 512
HEAD_TIMEOUT_S = 5.0
MAX_HEAD = 16 * 1024  # request line + headers, bytes
STOP_TIMEOUT_S = 3.0  # a stop waits this long for running responses (live streams end with the app)
REPORT_EVERY_S = 10.0  # connections closed by the guards: one log line at most this often

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BindError(OSError):
    """The configured address cannot be listened on; the message names the config keys."""


def bind_listener(host: str, port: int, loopback_only: bool = False, backlog: int = BACKLOG,
                  section: str = "http") -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (port 0: a free one), bound in the caller's thread.

    ``host`` is resolved once and the socket is bound to that numeric address, so what was checked
    is what listens. ``loopback_only`` (the page asks no login): refuse unless the address is
    loopback, whatever the name looked like. Raises ``BindError`` naming ``section``.host or .port
    (``serve`` for ``raccoon-watch serve``).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError) as exc:
        raise BindError(f"{section}.host {host!r} does not resolve: {exc}") from None
    family, _, proto, _, address = infos[0]
    if loopback_only and not all_loopback([str(address[0])]):
        raise BindError(f"{section}.host {host!r} resolves to {address[0]}, which is not loopback, and no login is set "
                        "(http.password_hash or http.token)")
    # proto IPPROTO_TCP, not 0: accepted sockets inherit it, and asyncio sets TCP_NODELAY only on sockets
    # whose proto says TCP. Without it a kept-alive client waited its delayed ACK (40 ms) for every answer,
    # whose head and body leave in two writes.
    sock = socket.socket(family, socket.SOCK_STREAM, proto or socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(f"{section}.port {port} on {host} cannot be bound: {exc.strerror or exc}") from None
    sock.set_inheritable(False)
    return sock


def framing_error(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why a request's body framing is ambiguous, or None (pure; header names lower-case, as h11 gives them).

    h11 already refuses two different Content-Lengths, a malformed one and any Transfer-Encoding
    but chunked (a repeated Content-Length with the same value is one, RFC 9110 8.6); left here:
    Content-Length beside Transfer-Encoding, which h11 frames as chunked.
    """
    if any(name == b"content-length" for name, _ in headers) and any(name == b"transfer-encoding" for name, _ in headers):
        return "Content-Length and Transfer-Encoding together"
    return None


def strict_framing(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: 400 and close for a request whose body length is ambiguous (``framing_error``)."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        why = framing_error(scope["headers"]) if scope["type"] == "http" else None
        if why is None:
            await app(scope, receive, send)
            return
        log.warning("http_request_refused", reason=why)
        body = f"bad request: {why}\n".encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return guarded


class OpenConnections:
    """One server's open connections, oldest first, and what the guards did to them (event loop only)."""

    def __init__(self) -> None:
        self.by_age: OrderedDict[GuardedH11, None] = OrderedDict()
        self.evicted = 0
        self.timed_out = 0
        self._reported = (0, 0)
        self._report_at = 0.0

    def closed_by_us(self, conn: GuardedH11, why: str) -> None:
        self.by_age.pop(conn, None)
        if why == "evicted":
            self.evicted += 1
        else:
            self.timed_out += 1
        now = time.monotonic()
        if now >= self._report_at:  # one line per REPORT_EVERY_S under a flood, not one per connection
            self._report_at = now + REPORT_EVERY_S
            log.warning("http_connections_closed", evicted=self.evicted - self._reported[0],
                        timed_out=self.timed_out - self._reported[1], open=len(self.by_age))
            self._reported = (self.evicted, self.timed_out)

    @staticmethod
    def of(server_state: Any) -> OpenConnections:
        book = getattr(server_state, "raccoon_open", None)
        if book is None:
            book = OpenConnections()
            server_state.raccoon_open = book  # uvicorn's ServerState is shared by the server's connections
        return book


class GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head and a cap on open connections."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._book = OpenConnections.of(self.server_state)
        self._book.by_age[self] = None
        self._evict_for_room()
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._book.by_age.pop(self, None)
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()

    def in_flight(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_timeout, self.cycle)

    def _head_timeout(self, cycle_when_armed: object) -> None:
        """No new request began since the timer was armed (and none is running): close."""
        if self.cycle is cycle_when_armed and not self.in_flight() and not self.transport.is_closing():
            self._book.closed_by_us(self, "timed_out")
            self.transport.close()

    def _evict_for_room(self) -> None:
        """Over ``MAX_CONNECTIONS``: close the oldest connection with no request in flight (this one
        when every other is busy). Oldest first, so the first idle one is usually the first looked at."""
        book = self._book
        while len(book.by_age) > MAX_CONNECTIONS:
            victim = next((c for c in book.by_age if c is not self and not c.in_flight()), self)
            book.closed_by_us(victim, "evicted")
            victim.transport.close()
            if victim is self:
                return


class ServerThread:
    """uvicorn serving ``app`` on ``listener`` in a daemon thread; ``stop()`` undoes ``start()``."""

    def __init__(self, app: ASGIApp, listener: socket.socket, name: str = "http") -> None:
        self.listener = listener
        self.port = int(listener.getsockname()[1])
        self.name = name
        config = uvicorn.Config(
            strict_framing(app), http=GuardedH11, ws="none", lifespan="off", interface="asgi3",
            log_config=None, access_log=False, server_header=False, proxy_headers=False,
            backlog=BACKLOG, timeout_keep_alive=int(HEAD_TIMEOUT_S), timeout_graceful_shutdown=int(STOP_TIMEOUT_S),
            h11_max_incomplete_event_size=MAX_HEAD,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError("the HTTP server did not start (see the log)")

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self.listener])
        except BaseException as exc:
            log.error("http_server_failed", error=repr(exc))

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=STOP_TIMEOUT_S + 2.0)
            self._thread = None
        self.listener.close()  # uvicorn closed it too; closing twice is harmless
