"""Motion gating: run the detector only when something moves, plus a periodic re-check.

camera -> capture -> **motion gate** -> frame queue -> detector workers -> ...

Three small pieces, each doing one job:

* ``MotionDetector`` (stateful, cheap): a decoded BGR frame -> ``Motion``. The frame is shrunk to
  ``MOTION_WIDTH`` px wide (bilinear to twice that, then INTER_AREA, which averages sensor noise
  away), turned grey,
  blurred, and compared with a running-average background (``cv2.accumulateWeighted``). Pixels
  that differ by more than ``threshold`` grey levels, after a 3x3 opening that removes isolated
  noise specks, are "changed"; their fraction of the frame is ``Motion.area`` and their bounding
  rectangle is ``Motion.region``, normalised (xmin, ymin, xmax, ymax) of the full frame (the
  daemon's ``Box`` order). ``Motion.regions`` are the boxes of its connected groups (``motion_regions``:
  a few at most, specks dropped), which the gate hands on as ``Frame.motion_regions``: in infrared
  frames they are classifier candidates, and for the tracker evidence that a candidate moved.
  About 1 ms per 1080p frame on this 2-core machine, most of it the resize.
* ``decide`` (pure): the gate's decision table, see its docstring. Table-tested.
* ``crop_decision`` (pure): whether the detector should look at a square crop around the motion
  region instead of the whole frame, see its docstring. Table-tested.
* ``MotionGate``: the three together, with counters; an instance is a ``CaptureThread.sample_hook``
  (called with every decoded frame; returns the frame to queue, with ``Frame.crop`` set when the
  detector should look at a crop, or None when the frame is not analysed).

A raccoon that stops moving is absorbed into the background within about ``1 / BACKGROUND_ALPHA``
samples; from then on only the ``recheck_s`` runs (and ``hold_s`` after the last motion) see it,
which is enough for the debouncer to keep an event open as long as ``recheck_s < events.end_after``.

``crop_for_model`` / ``boxes_from_crop`` map a motion region to a square crop of at least the
model's input size and detections found in it back to full-frame coordinates (for small, distant
raccoons in 1080p frames). The gate sets ``Frame.crop`` from ``crop_for_model``; the detector
worker runs on the crop and maps the boxes back with ``boxes_from_crop`` (see docs/performance.md).
"""

from __future__ import annotations

import enum
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from raccoon_watch.config import MotionConfig
from raccoon_watch.types import Box, Detection, Frame, MotionSnapshot

MOTION_WIDTH = 160  # px: width of the grey frame motion is computed on
BLUR_KERNEL = (5, 5)  # Gaussian blur at MOTION_WIDTH, against noise and compression blocks
BACKGROUND_ALPHA = 0.1  # running-average weight of each new sample (about 10 samples of memory)
OPEN_KERNEL = np.ones((3, 3), np.uint8)  # morphological opening: drops 1-2 px noise specks
CROP_MIN_SIDE = 300  # px: a crop is never smaller than the 300x300 SSD input, so it is never upscaled
MAX_REGIONS = 4  # motion regions handed on per frame, largest first
REGION_MERGE_KERNEL = np.ones((5, 5), np.uint8)  # changed pixels this close (at MOTION_WIDTH) are one region


@dataclass(frozen=True, slots=True)
class Motion:
    """What one motion check found.

    moving: area >= min_area.
    area: changed fraction of the frame, 0..1.
    region: normalised (xmin, ymin, xmax, ymax) of the full frame around every changed pixel;
        None when nothing changed.
    regions: ``motion_regions`` of the changed pixels: normalised (xmin, ymin, xmax, ymax) of the
        full frame, largest first.
    """

    moving: bool
    area: float
    region: Box | None
    regions: tuple[Box, ...] = ()


NO_MOTION = Motion(False, 0.0, None)


class MotionDetector:
    """Frame differencing against a running-average background, on a small grey copy.

    Not thread-safe: one instance per camera, called from that camera's capture thread.
    The first frame (and the first after a resolution change) only seeds the background and
    reports no motion.
    """

    def __init__(self, threshold: int = 25, min_area: float = 0.002, width: int = MOTION_WIDTH,
                 alpha: float = BACKGROUND_ALPHA) -> None:
        if not 1 <= threshold <= 255:
            raise ValueError(f"threshold is a grey-level difference 1..255, got {threshold}")
        if not 0.0 <= min_area <= 1.0:
            raise ValueError(f"min_area is a fraction of the frame 0..1, got {min_area}")
        if width < 16:
            raise ValueError(f"width must be >= 16 px, got {width}")
        self.threshold = threshold
        self.min_area = min_area
        self.width = width
        self.alpha = alpha
        self._background: np.ndarray | None = None  # float32 (h, w), grey levels
        self._source_shape: tuple[int, int] | None = None  # (H, W) of the full frames

    def reset(self) -> None:
        self._background = None
        self._source_shape = None

    def small_grey(self, image_bgr: np.ndarray) -> np.ndarray:
        """BGR uint8 (H, W, 3) -> blurred grey uint8 (h, width), h keeping the aspect ratio."""
        height, width = image_bgr.shape[:2]
        small_h = max(1, round(height * self.width / width))
        if width > 2 * self.width:  # INTER_AREA from 1080p costs ~5 ms; bilinear to 2x first: ~0.6 ms
            image_bgr = cv2.resize(image_bgr, (2 * self.width, 2 * small_h), interpolation=cv2.INTER_LINEAR)
        small = cv2.resize(image_bgr, (self.width, small_h), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        return cv2.GaussianBlur(grey, BLUR_KERNEL, 0)

    def update(self, image_bgr: np.ndarray) -> Motion:
        """Compare ``image_bgr`` with the background, then fold it into the background."""
        grey = self.small_grey(image_bgr)
        shape = (int(image_bgr.shape[0]), int(image_bgr.shape[1]))
        if self._background is None or shape != self._source_shape:
            self._background = grey.astype(np.float32)
            self._source_shape = shape
            return NO_MOTION
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(self._background))
        _, changed = cv2.threshold(diff, self.threshold, 255, cv2.THRESH_BINARY)
        changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, OPEN_KERNEL)
        cv2.accumulateWeighted(grey, self._background, self.alpha)
        count = cv2.countNonZero(changed)
        if count == 0:
            return NO_MOTION
        area = count / changed.size
        x, y, w, h = cv2.boundingRect(changed)  # pixels of the small frame
        small_h, small_w = changed.shape
        region = (x / small_w, y / small_h, (x + w) / small_w, (y + h) / small_h)
        return Motion(area >= self.min_area, area, region, motion_regions(changed, self.min_area))


def motion_regions(changed: np.ndarray, min_area: float, max_regions: int = MAX_REGIONS) -> tuple[Box, ...]:
    """The moving things of a changed-pixel mask (uint8 (h, w), non-zero = changed), as boxes.

    Changed pixels within ``REGION_MERGE_KERNEL`` of each other are one group (a raccoon's body and
    its tail are one thing, not two); a group with fewer changed pixels (counted in its bounding
    rectangle) than ``min_area`` of the mask is a speck and dropped. Returns the box around each
    group's CHANGED pixels (not the merge margin), normalised (xmin, ymin, xmax, ymax) of the mask,
    i.e. of the full frame it was made from, largest group first (ties: top-left first), at most
    ``max_regions``. Outer contours, not connectedComponentsWithStats: 0.03 ms instead of 0.4 ms here.
    """
    height, width = changed.shape
    mask = (changed > 0).astype(np.uint8)
    contours, _ = cv2.findContours(cv2.dilate(mask, REGION_MERGE_KERNEL), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    found = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)  # pixels of the mask, the merge margin included
        inside = mask[y:y + h, x:x + w]
        pixels = cv2.countNonZero(inside)
        if pixels == 0 or pixels < min_area * mask.size:
            continue
        bx, by, bw, bh = cv2.boundingRect(inside)
        x0, y0 = x + bx, y + by
        found.append((-pixels, y0, x0, (x0 / width, y0 / height, (x0 + bw) / width, (y0 + bh) / height)))
    return tuple(box for *_, box in sorted(found)[:max_regions])


# --- the decision ---------------------------------------------------------------------------------


class Reason(str, enum.Enum):
    """Why the gate ran (or skipped) the detector on a frame."""

    MOTION = "motion"  # something moves now
    EVENT = "event"  # an event is open on this camera
    HOLD = "hold"  # motion stopped less than hold_s ago
    FIRST = "first"  # the detector has not run yet on this camera
    RECHECK = "recheck"  # recheck_s passed since the last run
    SKIP = "skip"  # none of the above: the frame is not analysed

    @property
    def run(self) -> bool:
        return self is not Reason.SKIP


@dataclass(frozen=True, slots=True)
class GateState:
    """last_motion / last_run: monotonic seconds of the last moving frame / last detector run."""

    last_motion: float | None = None
    last_run: float | None = None


def decide(state: GateState, now: float, moving: bool, hold_s: float, recheck_s: float,
           event_active: bool = False) -> tuple[GateState, Reason]:
    """One frame's decision, first matching rule wins:

    ============================================  =========
    condition                                      reason
    ============================================  =========
    motion in this frame                           MOTION
    an event is open on this camera                EVENT
    now - last_motion <= hold_s                    HOLD
    the detector never ran                         FIRST
    recheck_s > 0 and now - last_run >= recheck_s  RECHECK
    otherwise                                      SKIP
    ============================================  =========

    ``now`` is monotonic seconds; the new state records the motion and, unless SKIP, the run.
    """
    last_motion = now if moving else state.last_motion
    if moving:
        reason = Reason.MOTION
    elif event_active:
        reason = Reason.EVENT
    elif last_motion is not None and now - last_motion <= hold_s:
        reason = Reason.HOLD
    elif state.last_run is None:
        reason = Reason.FIRST
    elif recheck_s > 0 and now - state.last_run >= recheck_s:
        reason = Reason.RECHECK
    else:
        reason = Reason.SKIP
    last_run = now if reason.run else state.last_run
    return GateState(last_motion, last_run), reason


# --- the gate --------------------------------------------------------------------------------------


@dataclass
class GateStats:
    """Counters of one gate, written by its capture thread only."""

    frames_checked: int = 0
    frames_passed: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    frames_cropped: int = 0  # passed frames with ``Frame.crop`` set
    motion_ms_total: float = 0.0
    last_motion: Motion = NO_MOTION

    def frozen(self) -> MotionSnapshot:
        return MotionSnapshot(
            frames_checked=self.frames_checked, frames_passed=self.frames_passed, frames_cropped=self.frames_cropped,
            by_reason=dict(self.by_reason),
            motion_ms_mean=round(self.motion_ms_total / self.frames_checked, 3) if self.frames_checked else 0.0,
        )


class MotionGate:
    """``sample_hook`` for a ``CaptureThread``: motion check + ``decide`` on every decoded frame.

    event_active: optional ``() -> bool``, True while an event is open on this camera (frames
    then always pass). With ``cfg.enabled`` false every frame passes (reason MOTION is not
    counted; by_reason records "disabled") and none is cropped.

    Returns the frame to queue, or None. With ``cfg.crop`` a frame passed for MOTION or HOLD
    comes back as a copy with ``crop`` set when ``crop_decision`` says so (see there). A passed
    frame in which something moved carries its ``Motion.regions`` as ``Frame.motion_regions``.
    """

    def __init__(self, cfg: MotionConfig, event_active: Callable[[], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.detector = MotionDetector(cfg.threshold, cfg.min_area)
        self.event_active = event_active
        self.clock = clock
        self.state = GateState()
        self.stats = GateStats()
        self._moving_region: Box | None = None  # region of the last frame with motion (for HOLD)
        self._lock = threading.Lock()  # only for a consistent stats snapshot

    def __call__(self, frame: Frame) -> Frame | None:
        if not self.cfg.enabled:
            with self._lock:
                self.stats.frames_checked += 1
                self.stats.frames_passed += 1
                self.stats.by_reason["disabled"] += 1
            return frame
        t0 = time.perf_counter()
        motion = self.detector.update(frame.image)
        ms = (time.perf_counter() - t0) * 1000.0
        active = bool(self.event_active()) if self.event_active is not None else False
        if motion.moving:
            self._moving_region = motion.region
        crop: Crop | None = None
        with self._lock:
            self.state, reason = decide(self.state, frame.mono, motion.moving, self.cfg.hold_s,
                                        self.cfg.recheck_s, active)
            if self.cfg.crop and reason.run:
                crop = crop_decision(reason, self._moving_region, frame.width, frame.height,
                                     self.cfg.crop_max_fraction)
            self.stats.frames_checked += 1
            self.stats.frames_passed += reason.run
            self.stats.frames_cropped += crop is not None
            self.stats.by_reason[reason.value] += 1
            self.stats.motion_ms_total += ms
            self.stats.last_motion = motion
        if not reason.run:
            return None
        if crop is None and not motion.regions:
            return frame
        return replace(frame, crop=(crop.x0, crop.y0, crop.x1, crop.y1) if crop is not None else None,
                       motion_regions=motion.regions)

    def snapshot(self) -> MotionSnapshot:
        with self._lock:
            return self.stats.frozen()


# --- motion-region crops ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Crop:
    """A square crop of a frame, in pixels of the full frame: [x0, x1) x [y0, y1)."""

    x0: int
    y0: int
    x1: int
    y1: int


def crop_for_model(region: Box, width: int, height: int, min_side: int = 300, margin: float = 0.25) -> Crop:
    """The square around a motion ``region`` (normalised xyxy) to run the detector on.

    The region is grown by ``margin`` of its size on each side, made square, at least
    ``min_side`` px (the model input, so the crop is never upscaled) and at most the frame's
    shorter side, then shifted to lie inside the ``width`` x ``height`` frame.
    """
    xmin, ymin, xmax, ymax = region
    if not (0.0 <= xmin < xmax <= 1.0 and 0.0 <= ymin < ymax <= 1.0):
        raise ValueError(f"region must be normalised xmin < xmax, ymin < ymax in [0, 1], got {region}")
    w_px, h_px = (xmax - xmin) * width, (ymax - ymin) * height
    side = max(w_px, h_px) * (1.0 + 2.0 * margin)
    side = int(round(min(max(side, float(min_side)), float(min(width, height)))))
    cx, cy = (xmin + xmax) / 2.0 * width, (ymin + ymax) / 2.0 * height
    x0 = int(round(min(max(cx - side / 2.0, 0.0), width - side)))
    y0 = int(round(min(max(cy - side / 2.0, 0.0), height - side)))
    return Crop(x0, y0, x0 + side, y0 + side)


CROP_REASONS = frozenset({Reason.MOTION, Reason.HOLD})
"""Reasons whose frames may be cropped: the motion region says where to look."""


def crop_decision(reason: Reason, region: Box | None, width: int, height: int, max_fraction: float,
                  min_side: int = CROP_MIN_SIDE) -> Crop | None:
    """The crop (pixels of the ``width`` x ``height`` frame) the detector should run on, or None
    for the whole frame. First matching rule wins:

    ==========================================================  ===============
    condition                                                    detector sees
    ==========================================================  ===============
    reason is not MOTION or HOLD (FIRST, RECHECK, EVENT, SKIP)   whole frame
    no motion region (nothing has moved yet)                     whole frame
    crop_for_model(region) side >= max_fraction * min(W, H)      whole frame
    otherwise                                                    the crop
    ==========================================================  ===============

    ``region``: normalised (xmin, ymin, xmax, ymax) of the last frame that had motion (for HOLD,
    an earlier frame within ``hold_s``). FIRST and RECHECK frames look for anything anywhere, and
    EVENT frames (an event open, nothing moving) see the whole frame so that a raccoon that has
    left the last motion region is still found; a moving frame during an event is MOTION and is
    cropped (``decide`` puts MOTION first), so the small raccoon that opened the event stays
    visible while it moves.
    """
    if reason not in CROP_REASONS or region is None:
        return None
    xmin, ymin, xmax, ymax = region
    if not (xmax > xmin and ymax > ymin):
        return None
    crop = crop_for_model(region, width, height, min_side=min_side)
    if crop.x1 - crop.x0 >= max_fraction * min(width, height):
        return None
    return crop


def boxes_from_crop(detections: list[Detection], crop: Crop, width: int, height: int) -> list[Detection]:
    """Detections with boxes normalised to ``crop`` -> boxes normalised to the full frame (xyxy)."""
    cw, ch = crop.x1 - crop.x0, crop.y1 - crop.y0
    out = []
    for det in detections:
        xmin, ymin, xmax, ymax = det.box
        box = ((crop.x0 + xmin * cw) / width, (crop.y0 + ymin * ch) / height,
               (crop.x0 + xmax * cw) / width, (crop.y0 + ymax * ch) / height)
        out.append(replace(det, box=box))
    return out
