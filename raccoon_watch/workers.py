"""Detector workers: frame queue -> detector -> result queue.

Each worker owns its own Detector (a TFLite interpreter is not thread-safe), takes up to
``detector.max_batch`` frames at a time (several cameras in one call on a GPU), and hands a
``FrameResult`` per frame to the event router. ``heartbeat`` advances after every loop turn so the
watchdog can tell a wedged worker from an idle one.

A frame with ``Frame.crop`` set (by the motion gate, around a small motion region) is detected on
that crop only; its boxes are mapped back to normalised (xmin, ymin, xmax, ymax) of the FULL frame
before they leave the worker, so nothing downstream knows about crops. Crops and whole frames of
any size can share one batch: every backend resizes each image to its model input.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import structlog

from raccoon_watch.detectors.base import Detector
from raccoon_watch.framequeue import FrameQueue
from raccoon_watch.motion import Crop, boxes_from_crop
from raccoon_watch.types import Detection, Frame, FrameResult

log = structlog.get_logger(__name__)

GET_TIMEOUT_S = 0.25


@dataclass
class WorkerStats:
    """Counters owned by one worker thread (read by metrics/health without locking)."""

    frames: int = 0
    cropped: int = 0  # of ``frames``, those detected on their ``Frame.crop`` instead of the whole image
    calls: int = 0
    errors: int = 0
    last_inference_ms: float = 0.0
    heartbeat: float = field(default_factory=time.monotonic)  # last loop turn, monotonic s
    busy_since: float | None = None  # monotonic s when the current detect() began


def detector_input(frame: Frame) -> np.ndarray:
    """The BGR pixels the detector looks at: ``frame.image``, or the view ``image[y0:y1, x0:x1]``
    of its ``crop`` (pixels x0, y0, x1, y1, ends exclusive)."""
    if frame.crop is None:
        return frame.image
    x0, y0, x1, y1 = frame.crop
    return frame.image[y0:y1, x0:x1]


def full_frame_detections(frame: Frame, detections: list[Detection]) -> list[Detection]:
    """Detections of ``detector_input(frame)`` -> boxes normalised (xmin, ymin, xmax, ymax) of the
    full frame; unchanged when the frame has no crop."""
    if frame.crop is None:
        return list(detections)
    return boxes_from_crop(list(detections), Crop(*frame.crop), frame.width, frame.height)


class DetectorWorker(threading.Thread):
    def __init__(
        self,
        index: int,
        make_detector: Callable[[], Detector],
        frames: FrameQueue,
        results: "queue.Queue[FrameResult]",
        stop: threading.Event,
        batch_wait_s: float = 0.0,
        on_inference: Callable[[float, int], None] | None = None,
    ) -> None:
        super().__init__(name=f"detector-{index}", daemon=True)
        self.index = index
        self._make_detector = make_detector
        self._frames = frames
        self._results = results
        self._halt = stop
        self._batch_wait_s = batch_wait_s
        self._on_inference = on_inference
        self.stats = WorkerStats()
        self.detector: Detector | None = None

    def run(self) -> None:
        structlog.contextvars.bind_contextvars(worker=self.name)
        self.detector = self._make_detector()
        try:
            while not self._halt.is_set():
                self.stats.heartbeat = time.monotonic()
                self._turn(self.detector)
        finally:
            self.detector.close()
            log.info("worker_stopped", frames=self.stats.frames, errors=self.stats.errors)

    def _turn(self, detector: Detector) -> None:
        if detector.max_batch > 1:
            batch = self._frames.get_batch(detector.max_batch, self._batch_wait_s, timeout=GET_TIMEOUT_S)
        else:
            frame = self._frames.get(timeout=GET_TIMEOUT_S)
            batch = [frame] if frame is not None else []
        if not batch:
            return
        t0 = time.monotonic()
        self.stats.busy_since = t0
        try:
            per_image = detector.detect([detector_input(f) for f in batch])
        except Exception as exc:  # a bad frame must not kill the worker
            self.stats.errors += 1
            log.error("detect_failed", error=repr(exc), cameras=[f.camera for f in batch])
            return
        finally:
            self.stats.busy_since = None
        ms = (time.monotonic() - t0) * 1000.0
        self.stats.calls += 1
        self.stats.frames += len(batch)
        self.stats.cropped += sum(f.crop is not None for f in batch)
        self.stats.last_inference_ms = ms
        if self._on_inference:
            self._on_inference(ms, len(batch))
        for frame, dets in zip(batch, per_image):
            dets = full_frame_detections(frame, dets)
            self._deliver(FrameResult(frame=frame, detections=tuple(dets), inference_ms=ms / len(batch)))

    def _deliver(self, result: FrameResult) -> None:
        while not self._halt.is_set():
            try:
                self._results.put(result, timeout=GET_TIMEOUT_S)
                return
            except queue.Full:
                continue
