"""Swap the raccoon classifier of a running daemon without stopping detection.

``ClassifierSwap.load(folder)`` builds the new classifier in a background thread (reading the file,
building an interpreter, checking it against its card and the running one: input size, crop
params, proposer labels, and one test crop through it). Only a classifier that passed all of that is
published, as a new ``ActiveClassifier`` value with a higher generation; each detector worker
compares generations at the top of its loop turn and takes the new classifier between two frames
(``DetectorWorker._turn``), so no frame is scored half by one and half by the other. If anything
fails the old classifier stays and ``classifier_swap_failed`` names the reason.

One ``TFLiteClassifier`` is shared by all workers: it keeps one interpreter per calling thread.
The deployed threshold and crop params come from the card of the classifier the daemon started
with; a new card that changes them is refused (restart to change the operating point).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from raccoon_watch.learning.site_models import CLASSIFIER_CARD, CLASSIFIER_FILE, model_version

log = structlog.get_logger(__name__)

# card keys that must not change in a hot swap (the router and the recogniser were built on them)
FIXED_CARD_KEYS = ("input_size", "margin", "proposal_threshold", "max_candidates", "detector_weight",
                   "view_iou", "view_containment", "view_min_area", "views", "threshold", "label")


@dataclass(frozen=True, slots=True)
class ActiveClassifier:
    """What the workers should run. generation 0 = the classifier each worker built at start
    (``classifier`` None); a swap publishes a higher one with the shared new classifier."""

    generation: int
    version: str | None
    source: Path | None
    classifier: Any = None


def check_card(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Card keys whose values differ between the running classifier and a new one (pure)."""
    return [k for k in FIXED_CARD_KEYS if old.get(k) != new.get(k)]


class ClassifierSwap:
    """Holds the published ``ActiveClassifier``; ``load`` replaces it from a background thread."""

    def __init__(self, version: str | None, source: Path | None, card: dict[str, Any],
                 make: Callable[[Path], Any] | None = None, num_threads: int = 1) -> None:
        self.active = ActiveClassifier(0, version, source)
        self._card = card
        self._make = make or self._make_tflite
        self._num_threads = num_threads
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.failures = 0

    def _make_tflite(self, path: Path) -> Any:
        from raccoon_watch.recognition.classifier import TFLiteClassifier

        return TFLiteClassifier(path, num_threads=self._num_threads)

    def load(self, folder: Path | None, fallback_card: dict[str, Any] | None = None,
             fallback_file: Path | None = None) -> threading.Thread | None:
        """Start loading ``folder``'s classifier (None: ``fallback_file``, the model folder's own)
        unless it is the one running; returns the loader thread, or None when nothing is to do."""
        file = (folder / CLASSIFIER_FILE) if folder is not None else fallback_file
        if file is None:
            return None
        try:
            version = model_version(file)
        except OSError as exc:
            self._failed(str(file), f"unreadable: {exc.strerror or exc}")
            return None
        if version == self.active.version:
            log.info("classifier_unchanged", version=version)
            return None
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                log.warning("classifier_swap_busy", note="a swap is loading; ask again when it is done")
                return None
            self._thread = threading.Thread(target=self._load, args=(folder, file, version, fallback_card),
                                            name="classifier-swap", daemon=True)
            self._thread.start()
            return self._thread

    def _load(self, folder: Path | None, file: Path, version: str, fallback_card: dict[str, Any] | None) -> None:
        started = time.monotonic()
        try:
            card = json.loads((folder / CLASSIFIER_CARD).read_text()) if folder is not None else (fallback_card or {})
            if not isinstance(card, dict):
                raise ValueError(f"{CLASSIFIER_CARD} is not a JSON object")
            changed = check_card(self._card, card)
            if changed:
                raise ValueError(f"its card changes {', '.join(changed)}: restart the daemon to change those")
            classifier = self._make(file)
            size = tuple(classifier.input_size)
            probe = classifier.classify([np.full((*size, 3), 128, np.uint8)])
            if probe.shape != (1,) or not np.isfinite(probe).all():
                raise ValueError(f"test crop gave {probe!r}, expected one probability")
        except Exception as exc:  # whatever is wrong with the new file, the old classifier keeps running
            self._failed(str(file), str(exc).splitlines()[0] if str(exc) else repr(exc))
            return
        old = self.active
        self.active = ActiveClassifier(old.generation + 1, version, folder, classifier)
        log.info("classifier_swapped", version=version, previous_version=old.version, source=str(folder or file),
                 load_ms=round((time.monotonic() - started) * 1000.0, 1))

    def _failed(self, what: str, reason: str) -> None:
        self.failures += 1
        log.error("classifier_swap_failed", file=what, reason=reason[:300], kept_version=self.active.version)

    @property
    def loading(self) -> bool:
        """A classifier is being loaded now (``load`` started one that has not finished)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
