"""HTTP health and metrics endpoint (off by default; binds ``http.host``, 127.0.0.1 unless configured).

    GET /healthz  -> 200 {"status": "ok" | "degraded", ...} or 503 {"status": "failing", ...}
    GET /metrics  -> Prometheus text format from the App's private registry

``status``: "failing" when the pipeline is not alive (the same verdict that withholds the systemd
``WATCHDOG=1``: a wedged detector, router or capture thread); "degraded" when it is alive but a
camera is not delivering frames (down and retrying), or the event store is in memory only, or
replaced a damaged or deleted database in this run (``storage``; ``problems`` says which); else "ok". Body
fields per camera: ``state``, ``last_frame_age_s``, ``up``; and ``detector.alive``, ``reason``,
``uptime_s``, ``storage``, ``sinks`` (each sink's ``health()``: a failing sink, such as MQTT with
wrong credentials, is listed in ``problems``; status degraded), ``recognizer`` (which one the workers
use and why: ``types.RecognizerSnapshot``; with ``detector.backend: remote``, running on the local
models because the remote is down or slow is a problem: status degraded) and ``notes`` (detection switched off,
say by a retained MQTT command).

Every other path goes to ``pages`` when given (the review page, ``raccoon_watch.web.pages``), so the
page and the monitoring endpoints share one port and one server: Starlette's router on uvicorn
(``raccoon_watch.service.httpserver``: h11, a bounded request head, a 2048 backlog, a deadline per
request head, a cap on open connections; none of it costs a thread per connection).

/healthz and /metrics never wait behind the page: their reports are computed in worker threads of
their own (``MONITOR_THREADS``), and requests that arrive while one is being computed share it
(``Coalesced``), so 200 at once cost one report, not 200. Nothing secret is served: camera names
and numbers only, no URLs.
"""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any, Callable, Mapping, TypeVar

import anyio
import anyio.to_thread
import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, Router

from raccoon_watch.service import liveness
from raccoon_watch.service.httpserver import (
    MAX_CONNECTIONS, ASGIApp, Receive, Scope, Send, ServerThread, bind_listener,
)
from raccoon_watch.service.logs import clip
from raccoon_watch.types import SINK_FAILING, PipelineStats

log = structlog.get_logger(__name__)

__all__ = ["MAX_CONNECTIONS", "HealthServer", "app_health", "health_report", "monitoring_app"]

MONITOR_THREADS = 2  # worker threads for /healthz and /metrics reports, apart from the page's
T = TypeVar("T")

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
    if storage is not None:
        problems += storage.problems()  # in memory, a damaged or deleted events.db replaced, media waiting
    problems += [f"{name} sink failing: {sink.reason}" for name, sink in sinks.items() if sink.state == SINK_FAILING]
    recognizer = stats.recognizer
    if recognizer is not None and recognizer.backend == "remote" and recognizer.in_use != "remote":
        problems.append(f"recognizer: {recognizer.reason}")
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
        "recognizer": recognizer.to_dict() if recognizer is not None else None,
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


class Coalesced:
    """A blocking report run in a worker thread; callers that arrive while it runs share that run."""

    def __init__(self, fn: Callable[[], T], limiter: Callable[[], anyio.CapacityLimiter]) -> None:
        self._fn = fn
        self._limiter = limiter
        self._running: asyncio.Future[T] | None = None

    async def __call__(self) -> T:
        if self._running is None:
            running = asyncio.ensure_future(anyio.to_thread.run_sync(self._fn, limiter=self._limiter()))
            running.add_done_callback(self._done)
            self._running = running
        return await asyncio.shield(self._running)  # one caller hanging up does not cancel the others' run

    def _done(self, running: asyncio.Future[T]) -> None:
        self._running = None
        if not running.cancelled():
            running.exception()  # retrieved: each caller got it, asyncio need not warn


def _text(status: int, text: str) -> Response:
    return PlainTextResponse(text, status, headers={"Cache-Control": "no-store"})


def monitoring_app(health: HealthFn, metrics: MetricsFn, pages: ASGIApp | None = None) -> Router:
    """The ASGI app: /healthz, /metrics, and ``pages`` (or a 404) for every other path."""
    limiters: dict[int, anyio.CapacityLimiter] = {}

    def limiter() -> anyio.CapacityLimiter:  # one per event loop (tests run several servers)
        key = id(asyncio.get_running_loop())
        if key not in limiters:
            limiters[key] = anyio.CapacityLimiter(MONITOR_THREADS)
        return limiters[key]

    report, render = Coalesced(health, limiter), Coalesced(metrics, limiter)

    async def healthz(request: Request) -> Response:
        try:
            ok, body = await report()
        except Exception as exc:  # a bug in a report must not kill the endpoint
            log.error("http_handler_failed", path="/healthz", error=clip(repr(exc)))
            return _text(500, "internal error\n")
        return Response(json.dumps(body, default=str).encode(), 200 if ok else 503, media_type="application/json",
                        headers={"Cache-Control": "no-store"})

    async def metrics_text(request: Request) -> Response:
        try:
            text = await render()
        except Exception as exc:
            log.error("http_handler_failed", path="/metrics", error=clip(repr(exc)))
            return _text(500, "internal error\n")
        return Response(text, 200, media_type=CONTENT_TYPE_LATEST, headers={"Cache-Control": "no-store"})

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        await _text(404, "not found: try /healthz or /metrics\n")(scope, receive, send)

    return Router(routes=[Route("/healthz", healthz), Route("/metrics", metrics_text)],
                  default=pages if pages is not None else not_found, redirect_slashes=False)


class HealthServer:
    """``start()`` binds (or takes ``listener``, bound earlier) and serves in a daemon thread;
    ``stop()`` undoes it. Port 0 picks a free port; ``port`` is the one bound."""

    def __init__(self, host: str, port: int, health: HealthFn, metrics: MetricsFn, pages: Any = None,
                 listener: socket.socket | None = None) -> None:
        self.host = host
        self.port = port
        self.pages = pages
        self._health = health
        self._metrics = metrics
        self._listener = listener
        self._server: ServerThread | None = None

    def start(self) -> None:
        """Raises ``httpserver.BindError`` (an OSError naming http.host / http.port) when it cannot listen."""
        listener = self._listener
        if listener is None:
            open_page = self.pages is not None and not self.pages.auth.login_required
            listener = bind_listener(self.host, self.port, loopback_only=open_page)
        self._listener = None  # a listener is used once: stop() closes it
        self._server = ServerThread(monitoring_app(self._health, self._metrics, self.pages), listener)
        self.port = self._server.port
        self._server.start()
        log.info("http_listening", host=self.host, port=self.port, server="uvicorn",
                 paths=["/healthz", "/metrics", *(["/ (review page)"] if self.pages is not None else [])])

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stop()
        self._server = None
