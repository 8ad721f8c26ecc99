"""``detector.backend: remote``: frames go to a DeepStack / CodeProject.AI-compatible recognizer (another
raccoon-watch's ``serve``, or any compatible server), and to the local models whenever it is down or slow.

    worker --recognize--> RemoteRecognizer --POST image (JPEG), min_confidence, api_key--> remote API
                                 |  error, timeout, slow, refused          (raccoon_watch.recognition.deepstack)
                                 +-----------> the local models (Recognizer.recognize, as backend auto)

Each frame is one call: the JPEG of the frame, or of its motion crop when it has one (boxes are
mapped back to the full frame); ``detector.remote.timeout`` is the connect and read timeout. A call
that fails (no connection, a timeout, an HTTP error, an answer that is not the format) is detected
by the local models at once; one that answers but took longer than the timeout is used, and counts
as a failure too. After a failure the remote is left alone for ``retry_s``, doubling up to
``retry_max_s`` while it keeps failing (``backoff.backoff_delay``); then one worker tries it
(the others stay local until that one succeeds). ``RemoteLink`` holds this state for all workers;
``RemoteLink.snapshot()`` is what /healthz says (``recognizer``: in use, reason, counters).

What the remote does not get: the router's track hints and the motion regions (the API has no field
for them; ``recognition.extra_candidates``). Its confidence is taken as the final score, and the
daemon's thresholds (the local cards', or the config's) decide alerts, as for local detections: a
raccoon-watch server with the same model answers the same scores.

The key goes in the ``api_key`` form field and nowhere else: not in logs, not in /healthz.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import requests
import structlog

from raccoon_watch.config import RemoteConfig
from raccoon_watch.motion import Crop, boxes_from_crop
from raccoon_watch.recognition.deepstack import ProtocolError, parse_answer
from raccoon_watch.recognition.imagemode import image_mode
from raccoon_watch.recognition.recognizer import CandidateHints, PixelWindow, Recognizer
from raccoon_watch.support.backoff import backoff_delay
from raccoon_watch.types import Detection, RecognizerSnapshot

log = structlog.get_logger(__name__)

REMOTE, LOCAL = "remote", "local"


class RemoteFailure(Exception):
    """One call that gave no usable answer; str() is the reason (no URL, no key)."""


class RemoteLink:
    """Whether the remote is in use, its back-off and counters: one per daemon, shared by the workers
    (every method takes the lock; calls to the remote happen outside it)."""

    def __init__(self, cfg: RemoteConfig, local: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.local = local  # the local recognizer's name, for the snapshot
        self._clock = clock
        self._lock = threading.Lock()
        self.up = True  # tried first; the first call tells
        self.reason = "in use (no call yet)"
        self._changed = clock()
        self._attempt = 0
        self._retry_at = 0.0
        self._probing = False
        self.remote_frames = 0
        self.local_frames = 0
        self.failures = 0
        self.last_ms: float | None = None

    def should_try(self) -> bool:
        """True when this call should go to the remote: it is up, or its back-off is over and no other
        worker is trying it already (this one then does)."""
        with self._lock:
            if self.up:
                return True
            if self._probing or self._clock() < self._retry_at:
                return False
            self._probing = True
            return True

    def succeeded(self, ms: float) -> None:
        with self._lock:
            self.remote_frames += 1
            self.last_ms = round(ms, 1)
            self._probing = False
            if not self.up:
                log.info("recognizer_remote_back", down_s=round(self._clock() - self._changed, 1), ms=round(ms, 1))
                self._changed = self._clock()
            self.up, self._attempt = True, 0
            self.reason = f"in use: the last call answered in {ms:.0f} ms"

    def failed(self, reason: str) -> None:
        """A failed (or slow) call. The back-off grows only when the remote was in use or this was the
        one try after a back-off: calls already in flight when it went down do not double it again."""
        with self._lock:
            self.failures += 1
            if not (self.up or self._probing):
                return
            delay = backoff_delay(self._attempt, self.cfg.retry_s, self.cfg.retry_max_s)
            self._attempt += 1
            self._retry_at = self._clock() + delay
            was_up, self.up, self._probing = self.up, False, False
            if was_up:
                self._changed = self._clock()
            self.reason = f"remote {reason}; using the local models, next try in {delay:.0f} s"
            (log.warning if was_up else log.info)(
                "recognizer_remote_down" if was_up else "recognizer_remote_still_down",
                reason=reason, retry_in_s=round(delay, 1), failures=self.failures)

    def used_local(self, frames: int) -> None:
        with self._lock:
            self.local_frames += frames

    def snapshot(self) -> RecognizerSnapshot:
        with self._lock:
            now = self._clock()
            return RecognizerSnapshot(
                backend="remote", local=self.local, in_use=REMOTE if self.up else LOCAL, reason=self.reason,
                remote_frames=self.remote_frames, local_frames=self.local_frames, failures=self.failures,
                last_remote_ms=self.last_ms, retry_in_s=None if self.up else round(max(0.0, self._retry_at - now), 1),
                since_s=round(now - self._changed, 1))


class RemoteRecognizer(Recognizer):
    """The local ``Recognizer`` (its detector, classifier, cards and thresholds: a hot-swapped
    classifier lands here too) with ``recognize`` asking the remote first. One per worker: each has
    its own HTTP session (a kept-alive connection)."""

    def __init__(self, local: Recognizer, link: RemoteLink) -> None:
        super().__init__(local.detector, local.classifier, local.params, threshold=local.threshold,
                         ir_threshold=local.ir_threshold, review_threshold=local.review_threshold,
                         ir_review_threshold=local.ir_review_threshold)
        self.name = f"remote (local: {local.name})"
        self.link = link
        self.cfg = link.cfg
        self._session = requests.Session()
        self._form = {"min_confidence": f"{self.cfg.min_confidence:g}"}
        if self.cfg.api_key is not None:
            self._form["api_key"] = self.cfg.api_key.get_secret_value()

    def recognize(self, images: Sequence[np.ndarray], crops: Sequence[PixelWindow | None] | None = None,
                  hints: Sequence[CandidateHints | None] | None = None) -> list[list[Detection]]:
        crops = list(crops) if crops is not None else [None] * len(images)
        hints = list(hints) if hints is not None else [None] * len(images)
        out: list[list[Detection] | None] = [None] * len(images)
        if self.link.should_try():
            for i, (image, crop) in enumerate(zip(images, crops)):
                t0 = time.monotonic()
                try:
                    out[i] = self.ask(image, crop)
                except RemoteFailure as exc:
                    self.link.failed(str(exc))
                    break  # this frame and the rest of the batch: locally, now
                ms = (time.monotonic() - t0) * 1000.0
                if ms > self.cfg.timeout * 1000.0:
                    self.link.failed(f"answered after {ms:.0f} ms, over detector.remote.timeout ({self.cfg.timeout:g} s)")
                    break
                self.link.succeeded(ms)
        rest = [i for i, dets in enumerate(out) if dets is None]
        if rest:
            local = super().recognize([images[i] for i in rest], [crops[i] for i in rest], [hints[i] for i in rest])
            for i, dets in zip(rest, local):
                out[i] = dets
            self.link.used_local(len(rest))
        return [dets or [] for dets in out]

    def ask(self, image: np.ndarray, crop: PixelWindow | None) -> list[Detection]:
        """One frame (or its crop) to the remote; its detections, boxes normalised to the full frame."""
        region = image if crop is None else image[crop[1]:crop[3], crop[0]:crop[2]]
        ok, jpeg = cv2.imencode(".jpg", region, [cv2.IMWRITE_JPEG_QUALITY, self.cfg.jpeg_quality])
        if not ok:
            raise RemoteFailure("could not encode the frame as JPEG")
        timeout = self.cfg.timeout
        try:
            response = self._session.post(self.cfg.url, data=self._form, timeout=(timeout, timeout),
                                          files={"image": ("frame.jpg", jpeg.tobytes(), "image/jpeg")})
        except requests.Timeout:
            raise RemoteFailure(f"gave no answer within {timeout:g} s (detector.remote.timeout)") from None
        except requests.ConnectionError as exc:
            raise RemoteFailure(f"cannot be reached ({_cause(exc)})") from None
        except requests.RequestException as exc:
            raise RemoteFailure(f"call failed ({type(exc).__name__})") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            said = body.get("error") if isinstance(body, dict) else None
            hint = " (check detector.remote.api_key)" if response.status_code in (401, 403) else ""
            raise RemoteFailure(f"answered HTTP {response.status_code}{hint}" + (f": {str(said)[:120]}" if said else ""))
        if body is None:
            raise RemoteFailure("answered something that is not JSON")
        height, width = region.shape[:2]
        try:
            predictions = parse_answer(body, width, height)
        except ProtocolError as exc:
            raise RemoteFailure(f"answered in another format: {exc}") from None
        mode = image_mode(image)
        found = [Detection(label=p.label, score=p.confidence, box=p.box, mode=mode) for p in predictions]
        if crop is not None:
            found = boxes_from_crop(found, Crop(*crop), image.shape[1], image.shape[0])
        return sorted(found, key=lambda d: d.score, reverse=True)

    def close(self) -> None:
        self._session.close()
        super().close()


def _cause(exc: requests.ConnectionError) -> str:
    """A short cause without the URL: "connection refused", "name does not resolve", ..."""
    text = str(exc).lower()
    for needle, words in (("refused", "connection refused"), ("name or service", "host name does not resolve"),
                          ("nodename", "host name does not resolve"), ("reset", "connection reset"),
                          ("timed out", "connect timed out"), ("unreachable", "network unreachable"),
                          ("aborted", "connection aborted"), ("remote end closed", "connection closed")):
        if needle in text:
            return words
    return type(exc).__name__
