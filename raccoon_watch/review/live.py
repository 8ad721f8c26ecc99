"""Live view: the newest decoded frame of each camera, as JPEG, only while someone watches, with the
boxes the router counted on it; a placeholder picture for a camera that shows nothing.

``LatestFrame`` wraps a camera's sample hook (the motion gate): it keeps a reference to every frame
capture decoded anyway (no extra decode, no copy) and passes the frame on unchanged. A viewer
asks ``jpeg()``: a frame is encoded when one is asked for and newer than the last encoded
one, shrunk to at most ``LIVE_MAX_SIDE`` px, and shared by all viewers, so nobody watching costs
nothing and N viewers cost one encode per new frame.

Boxes: for each processed frame the router thread hands ``show`` that frame's monotonic time and
``live_boxes``: the detections that count toward an event (``Observer.on_result``'s ``hits``: the
visit score passed the review threshold, the track moved) that this frame itself shows, i.e. whose
own score in this frame passes the review threshold too, with that score. (A visit score is the
median of the track's last frames, so a track still counts for a moment after the animal left; its
box is not drawn on the empty frames.) Their boxes are normalised (xmin, ymin, xmax, ymax) of the full frame, as everywhere in the
daemon (``types.Box``); they become pixels of the shrunk JPEG only when drawn (``snapshot.draw_detections``,
the snapshot's amber), and ``jpeg`` returns them so, as integer pixel (xmin, ymin, xmax, ymax). The
newest frame is usually one or two frames newer than the one the boxes were found on (the detector's
latency); boxes are drawn while their frame is at most ``BOX_HOLD_S`` older than the one shown, so a
raccoon that left does not keep its box.

``placeholder_jpeg`` draws what the page shows instead of a frame when a camera is down, still
connecting, stopped, or sends nothing: the camera, its state, since when and why, in ASCII.
"""

from __future__ import annotations

import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from raccoon_watch.filters import DetectionFilter, meets_review_threshold
from raccoon_watch.snapshot import draw_detections, encode_jpeg
from raccoon_watch.types import Detection, Frame, box_to_pixels

LIVE_MAX_SIDE = 960
LIVE_JPEG_QUALITY = 70
BOX_HOLD_S = 1.0  # boxes found on a frame at most this much older than the one shown are drawn on it
PLACEHOLDER_SIZE = (640, 360)  # (width, height): 16:9, as the page's frame box
PLACEHOLDER_BG = (40, 30, 30)  # BGR
PLACEHOLDER_FG = (230, 230, 230)
PLACEHOLDER_BAD = (83, 83, 229)  # BGR of the page's --bad

PixelBox = tuple[int, int, int, int]  # integer pixels (xmin, ymin, xmax, ymax) of the JPEG it was drawn on


@dataclass(frozen=True, slots=True)
class LiveJpeg:
    """One encoded live picture: ``jpeg`` bytes, the frame's ``mono`` and the ``boxes`` drawn on it,
    in pixels of this JPEG (``PixelBox``)."""

    jpeg: bytes
    mono: float
    boxes: tuple[PixelBox, ...] = ()

    @property
    def age_s(self) -> float:
        return time.monotonic() - self.mono


class LatestFrame:
    """A sample hook in front of another (``inner``, e.g. ``MotionGate``); remembers the last frame
    and the last boxes the router counted on this camera."""

    def __init__(self, inner: Callable[[Frame], Frame | None] | None) -> None:
        self.inner = inner
        self.frame: Frame | None = None  # replaced whole by the capture thread
        # (number, frame mono, hits): replaced whole by the router thread, numbered so a cached picture knows it
        self.overlay: tuple[int, float, tuple[Detection, ...]] = (0, 0.0, ())
        self._lock = threading.Lock()
        self._encoded: tuple[tuple[int, float, int], LiveJpeg] | None = None  # ((seq, mono, overlay number), picture)
        self.encodes = 0

    def __call__(self, frame: Frame) -> Frame | None:
        self.frame = frame
        return self.inner(frame) if self.inner is not None else frame

    def show(self, mono: float, hits: tuple[Detection, ...]) -> None:
        """Router thread: the counting detections of this camera's frame taken at ``mono`` (boxes
        normalised (xmin, ymin, xmax, ymax)); an empty tuple clears the boxes."""
        self.overlay = (self.overlay[0] + 1, mono, tuple(hits))

    def picture(self) -> LiveJpeg | None:
        """The newest frame as JPEG with the boxes still current drawn on it; None before any frame."""
        frame, overlay = self.frame, self.overlay
        if frame is None:
            return None
        hits = overlay[2] if abs(frame.mono - overlay[1]) <= BOX_HOLD_S else ()
        key = (frame.seq, frame.mono, overlay[0] if hits else -1)
        with self._lock:
            if self._encoded is None or self._encoded[0] != key:
                image = frame.image
                side = max(frame.width, frame.height)
                if side > LIVE_MAX_SIDE:
                    scale = LIVE_MAX_SIDE / side
                    image = cv2.resize(image, (round(frame.width * scale), round(frame.height * scale)),
                                       interpolation=cv2.INTER_AREA)
                if hits:
                    image = draw_detections(image, hits)
                height, width = image.shape[:2]
                boxes = tuple(box_to_pixels(d.box, width, height) for d in hits)
                self._encoded = (key, LiveJpeg(encode_jpeg(image, LIVE_JPEG_QUALITY), frame.mono, boxes))
                self.encodes += 1
            return self._encoded[1]

    def jpeg(self) -> tuple[bytes, float] | None:
        """The newest frame as JPEG (boxes drawn) and its age in seconds (monotonic); None before any frame."""
        picture = self.picture()
        return None if picture is None else (picture.jpeg, picture.age_s)


def live_boxes(detections: tuple[Detection, ...], hits: tuple[Detection, ...],
               flt: DetectionFilter) -> tuple[Detection, ...]:
    """What the live picture shows for one processed frame (pure): each of ``hits`` (visit-scored,
    the router's counted detections) whose detection in this frame's ``detections`` (the detector's
    result, per-frame scores; the router keeps each box as it came, so boxes match exactly) meets
    ``flt``'s review threshold, as that frame detection. Boxes normalised (xmin, ymin, xmax, ymax)."""
    in_frame = {d.box: d for d in detections}
    shown = []
    for hit in hits:
        own = in_frame.get(hit.box)
        if own is not None and meets_review_threshold(own, flt):
            shown.append(own)
    return tuple(shown)


def _ascii(text: str) -> str:
    """What OpenCV's Hershey fonts can draw: printable ASCII, anything else as '?'."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def placeholder_lines(camera: str, state: str, since: float | None, reason: str, now: float | None = None) -> list[str]:
    """The words of a camera's placeholder (pure but for the local time zone): what, since when, why."""
    now = time.time() if now is None else now
    what = {"down": "is down", "connecting": "is connecting", "stopped": "has stopped",
            "stale": "sends no frames", "paused": "live view paused"}.get(state, f"is {state}")
    lines = [f"camera {camera} {what}"]
    if since:
        ago = max(0.0, now - since)
        ago_text = f"{ago:.0f} s ago" if ago < 120 else (f"{ago / 60:.0f} min ago" if ago < 7200 else f"{ago / 3600:.1f} h ago")
        lines.append(f"since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))} ({ago_text})")
    if reason:
        lines += textwrap.wrap(f"reason: {reason}", 52)[:5]
    return [_ascii(line) for line in lines]


def placeholder_jpeg(lines: list[str]) -> bytes:
    """A ``PLACEHOLDER_SIZE`` JPEG with ``lines`` written on it, the first one larger, in red."""
    width, height = PLACEHOLDER_SIZE
    image = np.full((height, width, 3), PLACEHOLDER_BG, np.uint8)
    y, margin = 70, 24
    for i, line in enumerate(lines):
        scale, thick, color = (0.9, 2, PLACEHOLDER_BAD) if i == 0 else (0.55, 1, PLACEHOLDER_FG)
        text_w = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)[0][0]
        if text_w > width - 2 * margin:  # a long camera name: smaller, never cut
            scale *= (width - 2 * margin) / text_w
        cv2.putText(image, line, (margin, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)
        y += 48 if i == 0 else 30
    return encode_jpeg(image, LIVE_JPEG_QUALITY)
