"""The frame queue: capture threads put, detector workers get.

camera -> capture -> **frame queue** -> detector workers -> debounce -> ...

Capture must never block (a stalled detector must not stall a camera's decoder), so ``put`` never
waits: when a frame has to go, it is dropped, counted and returned to the caller. WHICH frame goes and
which frames a worker gets next is decided by the pure rules of ``raccoon_watch.schedule`` (one lane
per camera; round robin, the camera served longest ago first; a camera keeps only its newest
``lane_depth`` frames; a camera with an open visit first, and its frames are the last to go). The
queue only holds the frames and the counters, and calls those rules under its lock.

Workers take frames with ``get_batch`` (``get``: one frame) and call ``done`` once the results are
handed on, which measures each camera's detector lag. Both wait with a timeout so their loops can
check a stop event.

The one exception to "never blocks" is offline evaluation (a file camera with ``drain: true``): its
capture thread waits on ``wait_for_room`` before each ``put``, until that put would drop nothing, so
a file is read as fast as the detectors drain it and no frame is lost.

Times are monotonic (``Frame.mono``, ``clock``): a camera's detector lag is how long its newest
processed frame took from capture to ``done``, or how long its oldest waiting frame has waited, if
that is longer.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from raccoon_watch import schedule
from raccoon_watch.types import Frame, QueueSnapshot


@dataclass(frozen=True, slots=True, eq=False)
class Queued:
    """A frame in its camera's lane, with what the scheduler knows of it."""

    waiting: schedule.Waiting
    frame: Frame


class FrameQueue:
    """Bounded, thread-safe, fair queue of ``Frame`` values (see the module text).

    maxsize: frames waiting in all. lane_depth: frames a camera without an open visit keeps waiting
    (its newest; None: no per-camera bound, only ``maxsize``). visit_open: camera -> True while it
    has an open visit (``set_visit_open``; None: no camera has one).
    """

    def __init__(self, maxsize: int, lane_depth: int | None = None,
                 visit_open: Callable[[str], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        if lane_depth is not None and lane_depth < 1:
            raise ValueError(f"lane_depth must be >= 1, got {lane_depth}")
        self.maxsize = maxsize
        self.lane_depth = lane_depth
        self._visit_open = visit_open
        self._clock = clock
        self._lanes: dict[str, collections.deque[Queued]] = {}
        self._puts = 0
        self._last_served: dict[str, float] = {}
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # consumers wait here for frames
        self._room = threading.Condition(lock)  # a draining producer waits here for room
        self._dropped = 0
        self._dropped_by_camera: collections.Counter[str] = collections.Counter()
        self._visit_dropped_by_camera: collections.Counter[str] = collections.Counter()
        self._lag: dict[str, float] = {}  # camera -> capture to done of its newest processed frame, s

    def set_visit_open(self, visit_open: Callable[[str], bool] | None) -> None:
        """Who has an open visit (``EventRouter.visit_open``): asked under the queue's lock, so it must
        be quick and take no lock of its own."""
        with self._cond:
            self._visit_open = visit_open

    # --- producer side -------------------------------------------------------------------------

    def put(self, frame: Frame) -> Frame | None:
        """Queue ``frame``; never blocks. Returns the first frame the rules dropped to make room (it may be
        an older frame of the same camera, or another camera's, or this one), else None; every dropped
        frame is counted."""
        with self._cond:
            self._puts += 1
            waiting = schedule.Waiting(frame.camera, frame.seq, self._puts)
            self._lanes.setdefault(frame.camera, collections.deque()).append(Queued(waiting, frame))
            state = self._state()
            evicted = [self._remove(w) for w in schedule.admit(state, self.maxsize, self.lane_depth)]
            for gone in evicted:
                camera = gone.waiting.camera
                self._dropped += 1
                self._dropped_by_camera[camera] += 1
                if camera in state.visiting:
                    self._visit_dropped_by_camera[camera] += 1
            self._cond.notify_all()
            return evicted[0].frame if evicted else None

    def wait_for_room(self, timeout: float | None = None, camera: str | None = None) -> bool:
        """Wait up to ``timeout`` seconds until a put (of ``camera``'s frame, if given) would drop
        nothing; True if so. For a producer that must not lose frames (``drain``); live capture never
        calls it."""
        with self._room:
            return self._room.wait_for(lambda: self._has_room(camera), timeout)

    def _has_room(self, camera: str | None) -> bool:
        if self._total() >= self.maxsize:
            return False
        if camera is None or self.lane_depth is None or self._is_visiting(camera):
            return True
        return len(self._lanes.get(camera, ())) < self.lane_depth

    # --- consumer side -------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame by the rules, waiting up to ``timeout`` seconds (None: forever); None on
        timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._total() > 0, timeout):
                return None
            return self._take(1)[0]

    def get_batch(self, max_n: int, wait_s: float, timeout: float | None = 0.5) -> list[Frame]:
        """Up to ``max_n`` frames for one detector call (``schedule.pick``), in put order.

        Waits up to ``timeout`` seconds for a first frame it may take (returns [] if none comes), then up
        to ``wait_s`` more seconds for ``max_n`` of them; frames not taken stay queued.
        """
        if max_n < 1:
            raise ValueError(f"max_n must be >= 1, got {max_n}")
        with self._cond:
            if not self._cond.wait_for(lambda: self._total() > 0, timeout):
                return []
            deadline = time.monotonic() + wait_s
            while self._total() < max_n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._take(max_n)

    def done(self, frames: Iterable[Frame]) -> None:
        """The results of these frames (from ``get_batch`` or ``get``) were handed on: each camera's
        detector lag is now capture to this moment of its newest frame among them."""
        now = self._clock()
        with self._cond:
            for frame in frames:
                self._lag[frame.camera] = max(0.0, now - frame.mono)

    def _take(self, max_n: int) -> list[Frame]:
        """Remove and return the picked frames (caller holds the lock)."""
        picked = schedule.pick(self._state(), max_n)
        now = self._clock()
        batch = [self._remove(w).frame for w in picked]
        for frame in batch:
            self._last_served[frame.camera] = now
        self._room.notify_all()
        return batch

    # --- state for the rules (caller holds the lock) --------------------------------------------

    def _total(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())


    def _is_visiting(self, camera: str) -> bool:
        return self._visit_open is not None and bool(self._visit_open(camera))

    def _state(self) -> schedule.QueueState:
        lanes = {camera: tuple(q.waiting for q in lane) for camera, lane in self._lanes.items() if lane}
        return schedule.QueueState(
            lanes=lanes, visiting=frozenset(c for c in lanes if self._is_visiting(c)),
            last_served=dict(self._last_served))

    def _remove(self, waiting: schedule.Waiting) -> Queued:
        lane = self._lanes[waiting.camera]
        for i, queued in enumerate(lane):
            if queued.waiting.order == waiting.order:
                del lane[i]
                return queued
        raise KeyError(waiting)  # the rules only name waiting frames

    # --- introspection -------------------------------------------------------------------------

    def qsize(self) -> int:
        with self._cond:
            return self._total()

    @property
    def dropped(self) -> int:
        with self._cond:
            return self._dropped

    def dropped_by_camera(self) -> dict[str, int]:
        with self._cond:
            return dict(self._dropped_by_camera)

    def snapshot(self) -> QueueSnapshot:
        """Depth, drop counters and per-camera lag, read together under the lock."""
        now = self._clock()
        with self._cond:
            lag = dict(self._lag)
            for camera, lane in self._lanes.items():
                if lane:
                    lag[camera] = max(lag.get(camera, 0.0), now - lane[0].frame.mono)
            return QueueSnapshot(self._total(), self._dropped, dict(self._dropped_by_camera),
                                 visit_dropped_by_camera=dict(self._visit_dropped_by_camera),
                                 lag_s_by_camera={c: round(max(0.0, v), 3) for c, v in lag.items()})
