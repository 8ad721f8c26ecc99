"""HTTP health and metrics endpoint (off by default; binds ``http.host``, 127.0.0.1 unless configured).

    GET /healthz  -> 200 {"status": "ok" | "degraded", ...} or 503 {"status": "failing", ...}
    GET /metrics  -> Prometheus text format from the App's private registry

``status``: "failing" when the pipeline is not alive (the same verdict that withholds the systemd
``WATCHDOG=1``: a wedged detector, router or capture thread); "degraded" when it is alive but a
camera is not delivering frames (down and retrying), or the event store is in memory only or
replaced a damaged database in this run (``storage``; ``problems`` says which); else "ok". Body
fields per camera: ``state``, ``last_frame_age_s``, ``up``; and ``detector.alive``, ``reason``,
``uptime_s``, ``storage``, ``sinks`` (each sink's ``health()``: a failing sink, such as MQTT with
wrong credentials, is listed in ``problems``; status degraded) and ``notes`` (detection switched off,
say by a retained MQTT command).

Every other path goes to ``pages`` when given (the review page, ``raccoon_watch.web.pages``), so the
page and the monitoring endpoints share one port and one hardened server.

The server is a stdlib ``ThreadingHTTPServer`` in a daemon thread; ``stop()`` shuts it down and
closes the socket. Nothing secret is served: camera names and numbers only, no URLs.

Hostile or broken clients: each connection has a socket timeout (``CONNECTION_TIMEOUT_S``, idle or
half-sent requests are closed), at most ``MAX_CONNECTIONS`` are open at once (a new one beyond that
closes the oldest, so a slowloris flood holds a bounded number of threads and cannot lock out
/healthz), request lines are logged cut short, and a client hanging up mid-reply is one debug line,
not a traceback.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping

import structlog
from prometheus_client import CONTENT_TYPE_LATEST

from raccoon_watch.service import liveness
from raccoon_watch.service.logs import clip
from raccoon_watch.types import SINK_FAILING, PipelineStats

log = structlog.get_logger(__name__)

MAX_CONNECTIONS = 32
CONNECTION_TIMEOUT_S = 5.0
_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)

HealthFn = Callable[[], tuple[bool, Mapping[str, Any]]]
MetricsFn = Callable[[], bytes]

STATUS_OK = "ok"
STATUS_DEGRADED = "degraded"
STATUS_FAILING = "failing"


def health_report(
    alive: bool, reason: str, detector_alive: bool, stats: PipelineStats,
) -> tuple[bool, dict[str, Any]]:
    """Build the /healthz body from a liveness verdict and the App's ``PipelineStats`` (pure)."""
    cameras = {
        cam.camera: {
            "state": cam.state,
            "up": cam.state == liveness.CAMERA_UP,
            "last_frame_age_s": stats.last_frame_age_s(cam),
            "reconnects": cam.reconnects,
            "detect_enabled": stats.detect_enabled(cam.camera),
        }
        for cam in stats.cameras
    }
    sinks = dict(stats.sinks)
    problems = [f"camera {name} is {c['state']}" for name, c in cameras.items() if not c["up"]]
    storage = stats.storage
    if storage is not None and storage.recovered:
        problems.append(f"events.db was damaged and replaced; the old file is {storage.recovered['moved_to']}")
    if storage is not None and not storage.persistent:
        problems.append("event store is in memory only: pending deliveries do not survive a restart")
    problems += [f"{name} sink failing: {sink.reason}" for name, sink in sinks.items() if sink.state == SINK_FAILING]
    retained = {cam: sink_name for sink_name, sink in sinks.items() for cam in sink.retained_commands}
    notes = [f"detection is off for camera {name}"
             + (f" (by a retained {retained[name]} command; it applies at every start)" if name in retained else "")
             for name, c in cameras.items() if not c["detect_enabled"]]
    if not alive:
        status = STATUS_FAILING
    elif problems:
        status = STATUS_DEGRADED
    else:
        status = STATUS_OK
    body = {
        "status": status,
        "reason": reason,
        "uptime_s": stats.uptime_s,
        "cameras": cameras,
        "detector": {
            "alive": detector_alive,
            "fps": stats.detector_fps,
            "inference_ms": stats.inference_ms,
            "errors": stats.detector_errors,
        },
        "queue_depth": stats.queue.depth,
        "events": stats.events,
        "storage": storage.to_dict() if storage is not None else None,
        "sinks": {name: sink.to_dict() for name, sink in sinks.items()},
        "problems": problems,
        "notes": notes,
    }
    return alive, body


def app_health(checker: liveness.AppLiveness) -> HealthFn:
    """A /healthz function bound to a running App through its liveness checker."""

    def health() -> tuple[bool, Mapping[str, Any]]:
        stats, snap, now = checker.read()
        alive, reason = liveness.pipeline_alive(snap, now, checker.limits)
        detector_ok, _ = liveness.detector_alive(snap, now, checker.limits)
        return health_report(alive, reason, detector_ok, stats)

    return health


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"
    timeout = CONNECTION_TIMEOUT_S  # StreamRequestHandler sets it on the socket: no read or write waits longer

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        path = self.path.split("?", 1)[0]
        try:
            if path == "/healthz":
                ok, body = self.server.health()
                self._send(200 if ok else 503, "application/json", json.dumps(body, default=str).encode())
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, self.server.metrics())
            elif self.server.pages is not None:
                self.server.pages.handle(self, "GET")
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try /healthz or /metrics\n")
        except _CLIENT_GONE:
            self.close_connection = True
            log.debug("http_client_gone", path=clip(path))
        except Exception as exc:  # a bug in a report must not kill the endpoint
            log.error("http_handler_failed", path=clip(path), error=repr(exc))
            try:
                self._send(500, "text/plain; charset=utf-8", b"internal error\n")
            except _CLIENT_GONE:
                self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802 (stdlib name)
        path = self.path.split("?", 1)[0]
        try:
            if self.server.pages is None:
                self.close_connection = True
                self._send(405, "text/plain; charset=utf-8", b"nothing to post to\n")
            else:
                self.server.pages.handle(self, "POST")
        except _CLIENT_GONE:
            self.close_connection = True
            log.debug("http_client_gone", path=clip(path))
        except Exception as exc:
            log.error("http_handler_failed", path=clip(path), error=repr(exc))
            try:
                self._send(500, "text/plain; charset=utf-8", b"internal error\n")
            except _CLIENT_GONE:
                self.close_connection = True

    def _send(self, code: int, content_type: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("http_request", client=self.client_address[0], request=clip(format % args))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # listen backlog: a burst of connects waits in the kernel, not in SYN retries

    def __init__(self, address: tuple[str, int], health: HealthFn, metrics: MetricsFn,
                 max_connections: int = MAX_CONNECTIONS, pages: Any = None) -> None:
        self.health = health
        self.metrics = metrics
        self.pages = pages
        self.max_connections = max_connections
        self._open: dict[socket.socket, float] = {}  # connection -> monotonic time it was accepted
        self._open_lock = threading.Lock()
        self.evicted = 0
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            while len(self._open) >= self.max_connections:
                oldest = min(self._open, key=self._open.__getitem__)
                del self._open[oldest]
                self.evicted += 1
                try:  # its handler thread sees EOF (or an error) and ends
                    oldest.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._open[request] = time.monotonic()
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """socketserver prints a traceback to stderr here; one log line is enough."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (*_CLIENT_GONE, OSError)):
            log.debug("http_client_gone", error=type(exc).__name__)
        else:
            log.error("http_connection_failed", error=clip(repr(exc)))


class HealthServer:
    """``start()`` binds and serves in a daemon thread; ``stop()`` undoes it. Port 0 picks a free port."""

    def __init__(self, host: str, port: int, health: HealthFn, metrics: MetricsFn, pages: Any = None) -> None:
        self.host = host
        self.port = port
        self.pages = pages
        self._health = health
        self._metrics = metrics
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server = _Server((self.host, self.port), self._health, self._metrics, pages=self.pages)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.5}, name="http-health", daemon=True,
        )
        self._thread.start()
        log.info("http_listening", host=self.host, port=self.port,
                 paths=["/healthz", "/metrics", *(["/ (review page)"] if self.pages is not None else [])])

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        self._server = None
        self._thread = None
