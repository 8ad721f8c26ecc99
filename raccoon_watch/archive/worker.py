"""One archive worker: the settings it is built from, and one file -> one record.

A ``RecognitionSettings`` is a plain frozen value, so it travels to Ray actors on other machines;
each worker builds its own recognizer from it (``FileRecognizer``) with exactly the calls ``detect``
makes (``create_recognizer``, ``records.keep_filter``, ``records.image_record``), so a photo's
record is the same byte for byte whichever path made it. Videos get ``clip.video_record``.

A file never stops the run: whatever goes wrong with it (unreadable, truncated, not decodable, a
recognizer exception) becomes ``{"image"|"video": PATH, "error": "..."}``, its record.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import structlog

from raccoon_watch.archive.clip import DEFAULT_VIDEO_FPS, video_record
from raccoon_watch.archive.walk import IMAGE, VIDEO
from raccoon_watch.config import DetectorConfig
from raccoon_watch.recognition.detectors import DEFAULT_MIN_SCORE, create_recognizer
from raccoon_watch.recognition.detectors.factory import find_model, resolve_default_model
from raccoon_watch.recognition.records import image_record, keep_filter
from raccoon_watch.support.imagefile import DEFAULT_MAX_PIXELS

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RecognitionSettings:
    """What every worker's recognizer is built from: ``detect``'s options (see detect_cmd)."""

    model: str | None = None  # None: the bundled model (resolve_default_model)
    backend: str = "auto"
    threads: int = 1  # TFLite threads per worker
    classifier: bool = True
    proposal_threshold: float | None = None
    threshold: float | None = None  # None: the cards' per image mode
    labels: tuple[str, ...] | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    video_fps: float = DEFAULT_VIDEO_FPS

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint's records depend on: these settings (less ``threads``, which changes no
        record) and a hash of the model files, so a retrained model in the same folder is noticed."""
        values = asdict(self)
        values.pop("threads")
        values["labels"] = list(self.labels) if self.labels is not None else None
        values["model_sha256"] = model_hash(self.model)
        return values


def model_hash(model: str | None) -> str:
    """sha256 over the model's files (detector, classifier stage, cards); ModelError if there is none."""
    files = find_model(model or resolve_default_model())
    digest = hashlib.sha256()
    parts = [files.tflite, files.saved_model and files.saved_model / "saved_model.pb", files.labelmap, files.classifier]
    for part in parts:
        if part is not None and Path(part).is_file():
            digest.update(Path(part).read_bytes())
    for card in (files.card, files.classifier_card):
        digest.update(repr(sorted(card.items())).encode())
    return digest.hexdigest()


class FileRecognizer:
    """A recognizer built from ``RecognitionSettings``; ``record(path, kind)`` is one file's record."""

    def __init__(self, settings: RecognitionSettings) -> None:
        self.settings = settings
        min_score = DEFAULT_MIN_SCORE if settings.threshold is None else min(settings.threshold, DEFAULT_MIN_SCORE)
        cfg = DetectorConfig(model=Path(settings.model) if settings.model else None, backend=settings.backend,
                             num_threads=max(1, settings.threads), classifier=settings.classifier,
                             proposal_threshold=settings.proposal_threshold)
        self.recognizer = create_recognizer(cfg, min_score=min_score)
        wanted = frozenset(settings.labels) if settings.labels else None
        self.wanted = wanted
        self.keep = keep_filter(self.recognizer, settings.threshold, wanted)

    def record(self, path: str, kind: str) -> dict[str, Any]:
        """The record of one file (never raises for the file's sake)."""
        key = "video" if kind == VIDEO else "image"
        try:
            if kind == IMAGE:
                return image_record(self.recognizer, path, self.keep, None, self.settings.max_pixels)
            if kind == VIDEO:
                return video_record(self.recognizer, path, self.keep, self.wanted, self.settings.video_fps)
            return {key: path, "error": f"unknown kind {kind!r}"}
        except Exception as exc:  # a file's problem is its record, never the run's end
            log.warning("archive_file_failed", file=path, error=repr(exc)[:300])
            return {key: path, "error": f"recognition failed: {type(exc).__name__}: {str(exc)[:200]}"}

    def close(self) -> None:
        self.recognizer.close()
