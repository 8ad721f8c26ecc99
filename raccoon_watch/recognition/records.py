"""What ``detect`` reports of a photo: the ``detect --json`` record, the keep filter and the file kinds.

Shared by the one-shot command (``service/detect_cmd.py``) and the archive runner's workers
(``archive/``), so a photo's record is the same on both paths. Boxes in records: pixels of the
image, (xmin, ymin, xmax, ymax), origin top-left (``types.detection_json``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2

from raccoon_watch.config import DEFAULT_THRESHOLD
from raccoon_watch.recognition.imagemode import image_mode
from raccoon_watch.recognition.recognizer import Recognizer
from raccoon_watch.snapshot import draw_detections
from raccoon_watch.support.imagefile import read_image
from raccoon_watch.types import Detection, detection_json

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".mjpeg", ".h264", ".ts"}


def parse_labels(text: str | None) -> frozenset[str] | None:
    """``--labels a,b`` -> {"a", "b"}; None (or only commas) -> None: every label."""
    wanted = frozenset(s.strip() for s in text.split(",") if s.strip()) if text else frozenset()
    return wanted or None


def keep_filter(detector: Recognizer, threshold: float | None,
                wanted: frozenset[str] | None) -> Callable[[list[Detection]], list[Detection]]:
    """What ``detect`` reports of an image's detections: score >= ``threshold`` (None: the cards'
    threshold for the detection's image mode, else DEFAULT_THRESHOLD) and, with ``wanted``, a wanted label.
    The archive runner (``raccoon_watch.archive``) builds the same filter in each of its workers."""

    def threshold_for(mode: str | None) -> float:
        if threshold is not None:
            return threshold
        deployed = detector.threshold_for(mode)
        return deployed if deployed is not None else DEFAULT_THRESHOLD

    def keep(dets: list[Detection]) -> list[Detection]:
        return [d for d in dets if d.score >= threshold_for(d.mode) and (wanted is None or d.label in wanted)]

    return keep


def image_record(detector: Recognizer, source: str, keep, target: Path | None, max_pixels: int) -> dict[str, Any]:
    """One image's record (the module docstring's format), or ``{"image", "error"}``; also what each
    archive worker writes per photo, so the two paths give identical records."""
    path = Path(source)
    if not path.is_file():
        return {"image": source, "error": "no such file" if not path.exists() else "not a file"}
    image, problem = read_image(path, max_pixels)
    if image is None:
        return {"image": source, "error": problem}
    height, width = image.shape[:2]
    dets = keep(detector.detect([image])[0])
    record = {"image": source, "width": width, "height": height, "mode": image_mode(image),
              "detections": [detection_json(d, width, height) for d in dets]}
    if target is not None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            written = cv2.imwrite(str(target), draw_detections(image, dets))
        except (OSError, cv2.error):
            written = False
        if not written:
            return {"image": source, "error": f"cannot write {target}"}
    return record
