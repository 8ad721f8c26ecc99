"""Is the pipeline alive? The one decision behind ``WATCHDOG=1`` and ``/healthz``.

A main loop that still turns proves nothing: the watchdog ping must stop when the stages that do
the work stop. ``pipeline_alive`` is pure (a snapshot and a clock in, a verdict out) and tested as a
table; ``pipeline_snapshot`` turns the App's ``PipelineStats`` (each stage's own ``snapshot()``)
into one.

Alive means, at monotonic time ``now``:
- every detector worker thread is running and either
  - still loading its model (for at most ``limits.model_load_s`` since it started), or
  - inside ``detect()`` for at most ``limits.detect_s``, or
  - idle with a heartbeat (one per loop turn, every 0.25 s) fresher than ``limits.heartbeat_s``;
- the event router thread is running with a fresh heartbeat;
- every capture thread is running, and its loop makes progress within that camera's own grace
  (``CaptureBeat.grace_s``, derived from its open/read timeouts and reconnect back-off). A camera
  that is down and retrying is alive: it is doing its job. A thread that died, or that sits in
  state "up" with no frame for longer than its grace (a read that never returns), is not. A camera
  in state "stopped" (a file source read to its end without ``loop``) is finished, not wedged.

Times are ``time.monotonic()`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from raccoon_watch.types import PipelineStats

if TYPE_CHECKING:
    from raccoon_watch.config import Config

OK = "ok"
CAMERA_UP = "up"
CAMERA_STOPPED = "stopped"  # capture ended on purpose (file read once, or shutdown)
CAPTURE_GRACE_MARGIN_S = 10.0


@dataclass(frozen=True, slots=True)
class LivenessLimits:
    heartbeat_s: float = 10.0  # idle worker / router loop turn older than this: wedged
    detect_s: float = 30.0  # one detect() call longer than this: wedged
    model_load_s: float = 300.0  # a worker may take this long to load its model


@dataclass(frozen=True, slots=True)
class WorkerBeat:
    name: str
    alive: bool  # thread.is_alive()
    started: float  # when the worker thread was created (its first heartbeat)
    loaded: bool  # its detector exists (model loaded)
    heartbeat: float  # last loop turn
    busy_since: float | None  # start of the current detect() call, None when idle


@dataclass(frozen=True, slots=True)
class RouterBeat:
    alive: bool
    heartbeat: float


@dataclass(frozen=True, slots=True)
class CaptureBeat:
    name: str
    alive: bool
    state: str  # CaptureSnapshot.state: "up", "down", "connecting", ...
    progress: float | None  # last time its visible counters or state changed
    grace_s: float  # how long this camera's loop may legitimately go without progress


@dataclass(frozen=True, slots=True)
class PipelineSnapshot:
    workers: tuple[WorkerBeat, ...]
    router: RouterBeat | None
    cameras: tuple[CaptureBeat, ...]


def pipeline_alive(snap: PipelineSnapshot, now: float, limits: LivenessLimits = LivenessLimits()) -> tuple[bool, str]:
    """(True, "ok") if every stage makes progress, else (False, reason naming the first stuck stage)."""
    for ok, reason in (detector_alive(snap, now, limits), router_alive(snap, now, limits)):
        if not ok:
            return False, reason
    for cam in snap.cameras:
        reason = _capture_problem(cam, now)
        if reason:
            return False, reason
    return True, OK


def router_alive(snap: PipelineSnapshot, now: float, limits: LivenessLimits = LivenessLimits()) -> tuple[bool, str]:
    """The event-router part of ``pipeline_alive`` alone (for /healthz)."""
    if snap.router is None or not snap.router.alive:
        return False, "event router thread is not running"
    if now - snap.router.heartbeat > limits.heartbeat_s:
        return False, f"event router silent for {now - snap.router.heartbeat:.0f}s"
    return True, OK


def stalled_cameras(snap: PipelineSnapshot, now: float) -> dict[str, str]:
    """Camera -> why its capture thread is dead or wedged (the capture part of ``pipeline_alive``,
    every camera, not the first); cameras that are fine (up, or down and retrying) are absent."""
    return {cam.name: reason for cam in snap.cameras if (reason := _capture_issue(cam, now))}


def detector_alive(snap: PipelineSnapshot, now: float, limits: LivenessLimits = LivenessLimits()) -> tuple[bool, str]:
    """The detector-worker part of ``pipeline_alive`` alone (for /healthz)."""
    if not snap.workers:
        return False, "no detector workers"
    for w in snap.workers:
        reason = _worker_problem(w, now, limits)
        if reason:
            return False, reason
    return True, OK


def _worker_problem(w: WorkerBeat, now: float, limits: LivenessLimits) -> str | None:
    if not w.alive:
        return f"{w.name} thread is not running"
    if not w.loaded:
        if now - w.started > limits.model_load_s:
            return f"{w.name} still loading its model after {now - w.started:.0f}s"
        return None
    if w.busy_since is not None:
        if now - w.busy_since > limits.detect_s:
            return f"{w.name} stuck in detect() for {now - w.busy_since:.0f}s"
        return None
    if now - w.heartbeat > limits.heartbeat_s:
        return f"{w.name} silent for {now - w.heartbeat:.0f}s"
    return None


def _capture_problem(cam: CaptureBeat, now: float) -> str | None:
    issue = _capture_issue(cam, now)
    return f"camera {cam.name}: {issue}" if issue else None


def _capture_issue(cam: CaptureBeat, now: float) -> str | None:
    """Why this camera's capture thread is dead or wedged, without its name; None when it is not."""
    if cam.state == CAMERA_STOPPED:  # a file source read once has ended: done, not wedged
        return None
    if not cam.alive:
        return "capture thread is not running"
    if cam.progress is not None and now - cam.progress > cam.grace_s:
        return f"capture loop stalled for {now - cam.progress:.0f}s (state {cam.state})"
    return None


# --- from the App's stats to a liveness snapshot ----------------------------------------------------


def capture_grace_s(camera_cfg: Any, state: str) -> float:
    """Longest legitimate gap between two visible steps of one capture thread.

    Up: one ``grab()`` returns within ``read_timeout_s`` (capture enforces it). Otherwise one turn
    may block in open (``open_timeout_s``), then in a read, or wait out the reconnect back-off
    (``reconnect_max_s``). A margin covers scheduling and decoding on a busy machine.
    """
    if state == CAMERA_UP:
        return float(camera_cfg.read_timeout_s) + CAPTURE_GRACE_MARGIN_S
    return (
        float(camera_cfg.open_timeout_s)
        + float(camera_cfg.read_timeout_s)
        + float(camera_cfg.reconnect_max_s)
        + CAPTURE_GRACE_MARGIN_S
    )


class ProgressTracker:
    """Remembers when each capture thread's visible counters last changed.

    Capture threads keep counters, not a heartbeat: any change of (state, frames read, open
    failures, reconnects) is progress. A thread blocked forever inside open/grab changes nothing.
    Used from the main loop and the HTTP thread: the dict updates are atomic enough for this
    (worst case a stale time, never an exception).
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[tuple[Any, ...], float]] = {}

    def observe(self, name: str, signature: tuple[Any, ...], now: float) -> float:
        seen = self._last.get(name)
        if seen is None or seen[0] != signature:
            self._last[name] = (signature, now)
            return now
        return seen[1]


def pipeline_snapshot(
    stats: PipelineStats, cameras_cfg: Mapping[str, Any], tracker: ProgressTracker, now: float,
) -> PipelineSnapshot:
    """The liveness view of one ``PipelineStats``; ``cameras_cfg`` maps camera name -> its config
    (open/read timeouts and back-off, for ``capture_grace_s``)."""
    workers = tuple(
        WorkerBeat(
            name=w.name,
            alive=w.alive,
            started=stats.started_mono,
            loaded=w.loaded,
            heartbeat=w.heartbeat,
            busy_since=w.busy_since,
        )
        for w in stats.workers
    )
    router = stats.router
    router_beat = RouterBeat(alive=router.alive, heartbeat=router.heartbeat) if router is not None else None
    cameras = tuple(
        CaptureBeat(
            name=cam.camera,
            alive=cam.alive,
            state=cam.state,
            progress=tracker.observe(cam.camera, (cam.state, cam.frames_read, cam.open_failures, cam.reconnects), now),
            grace_s=capture_grace_s(cameras_cfg[cam.camera], cam.state),
        )
        for cam in stats.cameras
    )
    return PipelineSnapshot(workers=workers, router=router_beat, cameras=cameras)


class StatsSource(Protocol):
    """What liveness needs of the App: its config (camera timeouts) and its stats."""

    cfg: Config

    def stats(self) -> PipelineStats: ...


class AppLiveness:
    """One App's liveness checker: the tracker and limits shared by the watchdog and /healthz."""

    def __init__(self, app: StatsSource, limits: LivenessLimits = LivenessLimits()) -> None:
        self.app = app
        self.limits = limits
        self.tracker = ProgressTracker()

    def read(self, now: float | None = None) -> tuple[PipelineStats, PipelineSnapshot, float]:
        """The App's stats and their liveness view at ``now`` (monotonic s; default: now)."""
        now = time.monotonic() if now is None else now
        stats = self.app.stats()
        return stats, pipeline_snapshot(stats, self.app.cfg.cameras, self.tracker, now), now

    def check(self, now: float | None = None) -> tuple[bool, str]:
        _, snap, now = self.read(now)
        return pipeline_alive(snap, now, self.limits)
