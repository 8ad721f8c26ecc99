"""HTTP health and metrics endpoint (off by default; binds ``http.host``, 127.0.0.1 unless configured).

    GET /healthz  -> 200 {"status": "ok" | "degraded", ...} or 503 {"status": "failing", ...}
    GET /metrics  -> Prometheus text format from the App's private registry

Every component reports its own ``status`` and ``reason``: each camera (``cameras.<name>``), the
detector workers (``detector``), the event router (``router``), the event store (``storage``), each
sink that has a health (``sinks.mqtt``, ``sinks.pushover``), the recognizer the workers use
(``recognizer``: ``types.RecognizerSnapshot``; with ``detector.backend: remote``, the local models
standing in for a remote that is down or slow is degraded, and the reason says why) and the HTTP
server (``http``). A
component's status is "ok"; "degraded" when it is alive but not doing its job now and retrying (a
camera down: ``no frames for 12 s (connection refused)``; MQTT: ``dns: name not resolved (<host>)``,
``connection refused``, ``timed out``, ``auth: Not authorized``; Pushover: ``auth: application token is
invalid (HTTP 400; not retried)``, ``server error: HTTP 500 (retrying)``; the store in memory only, or a
damaged or deleted events.db replaced in this run); "failing" when it is dead or wedged (a detector
worker stuck in detect(), a capture thread whose read never returns, the router silent).

The top-level ``status`` is the worst component's: "failing" (HTTP 503) is the same verdict that
withholds the systemd ``WATCHDOG=1`` (the pipeline is not alive); "degraded" (200) when detection
goes on but a component is not ok; else "ok". The top-level ``reason`` names what is not ok, one
``<component>: <reason>`` per component, failing ones first (``camera porch: no frames for 12 s
(connection refused)``), and is "ok" only when every component is; ``problems`` lists the same
sentences. ``notes``: what is worth knowing but not a fault (detection switched off, say by a
retained MQTT command). Camera entries also carry ``state``, ``up``, ``last_frame_age_s``,
``reconnects``, ``detect_enabled``; ``detector``: ``alive``, ``fps``, ``inference_ms``, ``errors``.

Every other path goes to ``pages`` when given (the review page, ``raccoon_watch.web.pages``), so the
page and the monitoring endpoints share one port and one server: Starlette's router on uvicorn
(``raccoon_watch.web.httpserver``: h11, a bounded request head, a 2048 backlog, a deadline per
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
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import structlog
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, Router

from raccoon_watch.service import liveness
from raccoon_watch.support.logs import clip
from raccoon_watch.types import SINK_FAILING, CaptureSnapshot, PipelineStats, SinkSnapshot
from raccoon_watch.web.httpserver import (
    MAX_CONNECTIONS,
    ASGIApp,
    Receive,
    Scope,
    Send,
    ServerThread,
    bind_listener,
)

log = structlog.get_logger(__name__)

__all__ = ["MAX_CONNECTIONS", "HealthServer", "app_health", "health_report", "monitoring_app"]

MONITOR_THREADS = 2  # worker threads for /healthz and /metrics reports, apart from the page's
T = TypeVar("T")

HealthFn = Callable[[], tuple[bool, Mapping[str, Any]]]
MetricsFn = Callable[[], bytes]

STATUS_OK = "ok"
STATUS_DEGRADED = "degraded"
STATUS_FAILING = "failing"


COMPONENT_OK = "ok"
_RANK = {STATUS_OK: 0, STATUS_DEGRADED: 1, STATUS_FAILING: 2}


def _component(status: str, reason: str) -> dict[str, str]:
    return {"status": status, "reason": reason}


def camera_health(stats: PipelineStats, cam: CaptureSnapshot, stalled: str | None = None) -> dict[str, str]:
    """One camera's status and reason (pure): ok while up; failing when its capture thread is dead or
    wedged (``stalled``: liveness's reason); degraded when down or not yet up (``no frames for 12 s
    (connection refused)``, the time since its last frame, or since start when it never had one) or
    stopped (a file read to its end)."""
    if stalled:
        return _component(STATUS_FAILING, stalled)
    if cam.state == liveness.CAMERA_UP:
        return _component(STATUS_OK, "up")
    if cam.state == liveness.CAMERA_STOPPED:
        return _component(STATUS_DEGRADED, f"stopped: {cam.reason or 'capture ended'}")
    age = stats.last_frame_age_s(cam)
    silent = age if age is not None else stats.uptime
    why = cam.reason or ("connecting" if cam.state == "connecting" else cam.state)
    return _component(STATUS_DEGRADED, f"no frames for {silent:.0f} s ({why})")


def sink_health(sink: SinkSnapshot) -> dict[str, str]:
    """A sink's status and reason (pure): a failing sink is degraded (detection goes on; deliveries
    wait in the outbox), with its own reason."""
    if sink.state == SINK_FAILING:
        return _component(STATUS_DEGRADED, sink.reason or "failing")
    return _component(STATUS_OK, sink.reason or sink.state)


def health_report(
    alive: bool, reason: str, detector_alive: bool, stats: PipelineStats, *,
    detector_reason: str | None = None, router: tuple[bool, str] | None = None,
    stalled: Mapping[str, str] | None = None,
) -> tuple[bool, dict[str, Any]]:
    """Build the /healthz body (pure) from a liveness verdict (``alive``, ``reason``: the first stuck
    stage), the detector's (``detector_alive``, ``detector_reason``), the router's, the cameras whose
    capture is wedged (``stalled``: camera -> reason) and the App's ``PipelineStats``. (The ``http``
    entry is the server's own: ``HealthServer`` adds it to what it serves.)"""
    stalled = stalled or {}
    cameras = {}
    for cam in stats.cameras:
        cameras[cam.camera] = {
            "state": cam.state,
            "up": cam.state == liveness.CAMERA_UP,
            "last_frame_age_s": stats.last_frame_age_s(cam),
            "reconnects": cam.reconnects,
            "detect_enabled": stats.detect_enabled(cam.camera),
            **camera_health(stats, cam, stalled.get(cam.camera)),
        }
    if detector_alive:
        detector = _component(STATUS_OK, f"{len(stats.workers)} worker(s) running")
    else:
        detector = _component(STATUS_FAILING, detector_reason or (reason if not alive else "not alive"))
    router_ok, router_reason = router if router is not None else (True, liveness.OK)
    router_entry = _component(STATUS_OK, "running") if router_ok else _component(STATUS_FAILING, router_reason)
    storage = stats.storage
    storage_entry = None
    if storage is not None:
        trouble = storage.problems()  # in memory, a damaged or deleted events.db replaced, media waiting
        storage_entry = {**storage.to_dict(), **(_component(STATUS_DEGRADED, "; ".join(trouble)) if trouble
                                                 else _component(STATUS_OK, "on disk"))}
    sinks = {name: {**sink.to_dict(), **sink_health(sink)} for name, sink in stats.sinks.items()}
    recognizer = stats.recognizer
    recognizer_entry = None
    if recognizer is not None:
        standing_in = recognizer.backend == "remote" and recognizer.in_use != "remote"
        recognizer_entry = {**recognizer.to_dict(),
                            **_component(STATUS_DEGRADED if standing_in else STATUS_OK, recognizer.reason)}

    components: list[tuple[str, Mapping[str, Any]]] = [("detector", detector), ("router", router_entry)]
    components += [(f"camera {name}", entry) for name, entry in cameras.items()]
    if storage_entry is not None:
        components.append(("storage", storage_entry))
    components += list(sinks.items())
    if recognizer_entry is not None:
        components.append(("recognizer", recognizer_entry))
    bad = sorted((c for c in components if c[1]["status"] != STATUS_OK), key=lambda c: -_RANK[c[1]["status"]])
    problems = [f"{name}: {entry['reason']}" for name, entry in bad]
    if not alive and not any(entry["status"] == STATUS_FAILING for _, entry in bad):
        problems.insert(0, reason)  # a stage the components do not name (a caller's own verdict)

    retained = {cam: sink_name for sink_name, sink in stats.sinks.items() for cam in sink.retained_commands}
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
        "reason": "; ".join(problems) if problems else COMPONENT_OK,
        "uptime_s": stats.uptime_s,
        "cameras": cameras,
        "detector": {
            "alive": detector_alive,
            "fps": stats.detector_fps,
            "inference_ms": stats.inference_ms,
            "errors": stats.detector_errors,
            **detector,
        },
        "router": router_entry,
        "recognizer": recognizer_entry,
        "queue_depth": stats.queue.depth,
        "events": stats.events,
        "storage": storage_entry,
        "sinks": sinks,
        "problems": problems,
        "notes": notes,
    }
    return alive, body


def app_health(checker: liveness.AppLiveness) -> HealthFn:
    """A /healthz function bound to a running App through its liveness checker."""

    def health() -> tuple[bool, Mapping[str, Any]]:
        stats, snap, now = checker.read()
        alive, reason = liveness.pipeline_alive(snap, now, checker.limits)
        detector_ok, detector_reason = liveness.detector_alive(snap, now, checker.limits)
        return health_report(alive, reason, detector_ok, stats, detector_reason=detector_reason,
                             router=liveness.router_alive(snap, now, checker.limits),
                             stalled=liveness.stalled_cameras(snap, now))

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
        self._server = ServerThread(monitoring_app(self._health_with_http, self._metrics, self.pages), listener)
        self.port = self._server.port
        self._server.start()
        log.info("http_listening", host=self.host, port=self.port, server="uvicorn",
                 paths=["/healthz", "/metrics", *(["/ (review page)"] if self.pages is not None else [])])

    def _health_with_http(self) -> tuple[bool, Mapping[str, Any]]:
        """A ``health_report`` body with this server's own entry added (it is answering, so it is ok);
        any other body (a test's, a caller's own) is served as it is."""
        ok, body = self._health()
        if "http" in body or "problems" not in body or "cameras" not in body:
            return ok, body
        http = {"status": STATUS_OK, "reason": f"listening on {self.host}:{self.port}",
                "review_page": self.pages is not None}
        return ok, {**body, "http": http}

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.stop()
        self._server = None
