"""The frame queue: capture threads put, detector workers get.

camera -> capture -> **frame queue** -> detector workers -> debounce -> ...

Capture must never block (a stalled detector must not stall a camera's decoder), so ``put`` never
waits: when the queue is full the OLDEST frame is evicted, counted and returned to the caller.
Workers wait on ``get``/``get_batch`` with a timeout so their loops can check a stop event.
The one exception is offline evaluation (a file camera with ``drain: true``): its capture thread
waits on ``wait_for_room`` before each ``put``, so a file is read as fast as the detectors drain it
and no frame is lost.
"""

from __future__ import annotations

import collections
import threading
import time

from raccoon_watch.types import Frame, QueueSnapshot


class FrameQueue:
    """Bounded, thread-safe, drop-oldest FIFO of ``Frame`` values.

    dropped: total frames evicted because the queue was full.
    dropped_by_camera(): the same, per camera of the evicted frame.
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self._frames: collections.deque[Frame] = collections.deque()
        lock = threading.Lock()
        self._cond = threading.Condition(lock)  # consumers wait here for frames
        self._room = threading.Condition(lock)  # a draining producer waits here for room
        self._dropped = 0
        self._dropped_by_camera: collections.Counter[str] = collections.Counter()

    # --- producer side -------------------------------------------------------------------------

    def put(self, frame: Frame) -> Frame | None:
        """Append ``frame``; never blocks. Returns the evicted (oldest) frame when full, else None."""
        with self._cond:
            evicted = None
            if len(self._frames) >= self.maxsize:
                evicted = self._frames.popleft()
                self._dropped += 1
                self._dropped_by_camera[evicted.camera] += 1
            self._frames.append(frame)
            self._cond.notify()
            return evicted

    def wait_for_room(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds until the queue is not full; True if there is room.

        For a producer that must not lose frames (``drain``); live capture never calls it."""
        with self._room:
            return self._room.wait_for(lambda: len(self._frames) < self.maxsize, timeout)

    # --- consumer side -------------------------------------------------------------------------

    def get(self, timeout: float | None = None) -> Frame | None:
        """Oldest frame, waiting up to ``timeout`` seconds (None: forever); None on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._frames, timeout):
                return None
            frame = self._frames.popleft()
            self._room.notify_all()
            return frame

    def get_batch(self, max_n: int, wait_s: float, timeout: float | None = 0.5) -> list[Frame]:
        """Up to ``max_n`` frames for one batched detector call, preferring different cameras.

        Waits up to ``timeout`` seconds for a first frame (returns [] if none comes), then up to
        ``wait_s`` more seconds for the queue to hold ``max_n`` frames. The batch takes the oldest
        frame of each camera first (in queue order), then fills with the oldest remaining frames;
        frames not taken stay queued in their order.
        """
        if max_n < 1:
            raise ValueError(f"max_n must be >= 1, got {max_n}")
        with self._cond:
            if not self._cond.wait_for(lambda: self._frames, timeout):
                return []
            deadline = time.monotonic() + wait_s
            while len(self._frames) < max_n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._take_batch(max_n)

    def _take_batch(self, max_n: int) -> list[Frame]:
        """Remove and return the batch (caller holds the lock)."""
        seen: set[str] = set()
        chosen: list[int] = []
        for i, frame in enumerate(self._frames):  # pass 1: one frame per camera
            if len(chosen) == max_n:
                break
            if frame.camera not in seen:
                seen.add(frame.camera)
                chosen.append(i)
        if len(chosen) < max_n:  # pass 2: fill with the oldest frames not yet taken
            taken = set(chosen)
            rest = [i for i in range(len(self._frames)) if i not in taken]
            chosen.extend(rest[: max_n - len(chosen)])
        chosen.sort()
        chosen_set = set(chosen)
        batch = [self._frames[i] for i in chosen]
        self._frames = collections.deque(f for i, f in enumerate(self._frames) if i not in chosen_set)
        self._room.notify_all()
        return batch

    # --- introspection -------------------------------------------------------------------------

    def qsize(self) -> int:
        with self._cond:
            return len(self._frames)

    @property
    def dropped(self) -> int:
        with self._cond:
            return self._dropped

    def dropped_by_camera(self) -> dict[str, int]:
        with self._cond:
            return dict(self._dropped_by_camera)

    def snapshot(self) -> QueueSnapshot:
        """Depth and drop counters, read together under the lock."""
        with self._cond:
            return QueueSnapshot(len(self._frames), self._dropped, dict(self._dropped_by_camera))
