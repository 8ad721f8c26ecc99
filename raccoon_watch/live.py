"""Live view: the newest decoded frame of each camera, as JPEG, only while someone watches.

``LatestFrame`` wraps a camera's sample hook (the motion gate): it keeps a reference to every frame
capture decoded anyway (no extra decode, no copy) and passes the frame on unchanged. A viewer
asks ``jpeg(max_fps)``: a frame is encoded when one is asked for and newer than the last encoded
one, shrunk to at most ``LIVE_MAX_SIDE`` px, and shared by all viewers, so nobody watching costs
nothing and N viewers cost one encode per new frame.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import cv2

from raccoon_watch.snapshot import encode_jpeg
from raccoon_watch.types import Frame

LIVE_MAX_SIDE = 960
LIVE_JPEG_QUALITY = 70


class LatestFrame:
    """A sample hook in front of another (``inner``, e.g. ``MotionGate``); remembers the last frame."""

    def __init__(self, inner: Callable[[Frame], Frame | None] | None) -> None:
        self.inner = inner
        self.frame: Frame | None = None  # replaced whole by the capture thread
        self._lock = threading.Lock()
        self._encoded: tuple[int, float, bytes] | None = None  # (seq, mono, jpeg)
        self.encodes = 0

    def __call__(self, frame: Frame) -> Frame | None:
        self.frame = frame
        return self.inner(frame) if self.inner is not None else frame

    def jpeg(self) -> tuple[bytes, float] | None:
        """The newest frame as JPEG and its age in seconds (monotonic); None before any frame."""
        frame = self.frame
        if frame is None:
            return None
        with self._lock:
            if self._encoded is None or self._encoded[:2] != (frame.seq, frame.mono):
                image = frame.image
                side = max(frame.width, frame.height)
                if side > LIVE_MAX_SIDE:
                    scale = LIVE_MAX_SIDE / side
                    image = cv2.resize(image, (round(frame.width * scale), round(frame.height * scale)),
                                       interpolation=cv2.INTER_AREA)
                self._encoded = (frame.seq, frame.mono, encode_jpeg(image, LIVE_JPEG_QUALITY))
                self.encodes += 1
            return self._encoded[2], time.monotonic() - frame.mono
