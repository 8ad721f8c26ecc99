"""Detector workers: frame queue -> detector -> result queue.

Each worker owns its own Detector (a TFLite interpreter is not thread-safe), takes up to
``detector.max_batch`` frames at a time (``FrameQueue.get_batch``: the newest frame of each camera
that has one, open visits and the camera served longest ago first; several cameras in one call), hands
a ``FrameResult`` per frame to the event router, in the batch's order, and then tells the queue the
batch is ``done``. ``heartbeat`` advances after every loop turn so the
watchdog can tell a wedged worker from an idle one.

Each batch goes through ``Recognizer.recognize`` (raccoon_watch.recognition.recognizer), the one inference
path: a frame with ``Frame.crop`` set (by the motion gate, around a small motion region) is
detected on that crop only, its boxes come back as normalised (xmin, ymin, xmax, ymax) of the FULL
frame, and the classifier stage (when the model has one) crops its candidates from the full frame.
Nothing downstream knows about crops. Crops and whole frames of any size can share one batch.

Each frame also goes in with its ``CandidateHints``: the router's track hints for its camera (read
from the ``HintBoard``, an immutable tuple per camera: no lock), predicted at the frame's capture
time, and the motion gate's regions of the frame. With neither (a still scene, nothing tracked) the
frame goes in without hints and costs what it did before.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from raccoon_watch.framequeue import FrameQueue
from raccoon_watch.learning.hotswap import ClassifierSwap
from raccoon_watch.recognition.detectors.base import Detector
from raccoon_watch.recognition.recognizer import CandidateHints, Recognizer
from raccoon_watch.tracking import HintBoard
from raccoon_watch.types import Frame, FrameResult, WorkerSnapshot

log = structlog.get_logger(__name__)

GET_TIMEOUT_S = 0.25


@dataclass
class WorkerStats:
    """Counters owned by one worker thread (read by metrics/health without locking)."""

    frames: int = 0
    cropped: int = 0  # of ``frames``, those detected on their ``Frame.crop`` instead of the whole image
    hinted: int = 0  # of ``frames``, those that went in with track hints or motion regions
    calls: int = 0
    errors: int = 0
    last_inference_ms: float = 0.0
    heartbeat: float = field(default_factory=time.monotonic)  # last loop turn, monotonic s
    busy_since: float | None = None  # monotonic s when the current detect() began


class DetectorWorker(threading.Thread):
    def __init__(
        self,
        index: int,
        make_detector: Callable[[], Recognizer | Detector],
        frames: FrameQueue,
        results: queue.Queue[FrameResult],
        stop: threading.Event,
        batch_wait_s: float = 0.0,
        on_inference: Callable[[float, int], None] | None = None,
        swap: ClassifierSwap | None = None,
        hints: HintBoard | None = None,
    ) -> None:
        super().__init__(name=f"detector-{index}", daemon=True)
        self.index = index
        self._make_detector = make_detector
        self._frames = frames
        self._results = results
        self._halt = stop
        self._batch_wait_s = batch_wait_s
        self._on_inference = on_inference
        self._swap = swap  # the published classifier (hot swap); taken between frames
        self._generation = 0
        self._hints = hints  # the router's track hints per camera
        self.model_version: str | None = swap.active.version if swap is not None else None
        self.stats = WorkerStats()
        self.detector: Recognizer | None = None

    def snapshot(self) -> WorkerSnapshot:
        """This worker's counters and heartbeat now, as a frozen value (read from any thread)."""
        st = self.stats
        return WorkerSnapshot(
            name=self.name, alive=self.is_alive(), loaded=self.detector is not None, frames=st.frames,
            cropped=st.cropped, calls=st.calls, errors=st.errors, last_inference_ms=st.last_inference_ms,
            heartbeat=st.heartbeat, busy_since=st.busy_since,
        )

    def run(self) -> None:
        structlog.contextvars.bind_contextvars(worker=self.name)
        made = self._make_detector()
        self.detector = made if isinstance(made, Recognizer) else Recognizer(made)  # a bare detector: single stage
        try:
            while not self._halt.is_set():
                self.stats.heartbeat = time.monotonic()
                self._turn(self.detector)
        finally:
            self.detector.close()
            log.info("worker_stopped", frames=self.stats.frames, errors=self.stats.errors)

    def _turn(self, detector: Recognizer) -> None:
        batch = self._frames.get_batch(detector.max_batch, self._batch_wait_s if detector.max_batch > 1 else 0.0,
                                       timeout=GET_TIMEOUT_S)
        if not batch:
            return
        try:
            self._run(detector, batch)
        finally:
            self._frames.done(batch)  # results handed on: the queue measures each camera's detector lag

    def _run(self, detector: Recognizer, batch: list[Frame]) -> None:
        self._take_swap(detector)
        t0 = time.monotonic()
        self.stats.busy_since = t0
        try:
            hints = [self._hints_for(f) for f in batch]
            per_image = detector.recognize([f.image for f in batch], [f.crop for f in batch], hints)
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
        self.stats.hinted += sum(h is not None for h in hints)
        self.stats.last_inference_ms = ms
        if self._on_inference:
            self._on_inference(ms, len(batch))
        for frame, dets in zip(batch, per_image):
            self._deliver(FrameResult(frame=frame, detections=tuple(dets), inference_ms=ms / len(batch),
                                      model_version=self.model_version))

    def _hints_for(self, frame: Frame) -> CandidateHints | None:
        """Where else to look in this frame: its camera's tracks, predicted at its capture time, and
        what moved in it. None when there is neither."""
        tracked = tuple(h.box_at(frame.mono) for h in self._hints.get(frame.camera)) if self._hints is not None else ()
        if not tracked and not frame.motion_regions:
            return None
        return CandidateHints(tracked=tracked, moving=frame.motion_regions)

    def _take_swap(self, detector: Recognizer) -> None:
        """Between two frames: take the classifier the swap published, if it is newer than ours."""
        active = self._swap.active if self._swap is not None else None
        if active is None or active.generation == self._generation or detector.classifier is None:
            return
        detector.classifier = active.classifier
        self._generation, self.model_version = active.generation, active.version
        log.info("worker_classifier_switched", version=active.version, generation=active.generation)

    def _deliver(self, result: FrameResult) -> None:
        while not self._halt.is_set():
            try:
                self._results.put(result, timeout=GET_TIMEOUT_S)
                return
            except queue.Full:
                continue
