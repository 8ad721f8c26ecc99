"""Records -> MegaDetector's batch-results JSON, the format Timelapse and AddaxAI open.

The format (format_version 1.6, https://lila.science/megadetector-output-format), as written here::

    {"info": {"format_version": "1.6", "detector": ..., "classifier": ..., "detection_completion_time": ...,
              "classification_completion_time": ..., "detector_metadata": {...}},
     "detection_categories": {"1": "animal"},
     "classification_categories": {"1": "raccoon"},           # only with a classifier stage
     "images": [{"file": "2024/cam1/IMG_0001.JPG",
                 "detections": [{"category": "1", "conf": 0.4123, "bbox": [x, y, w, h],
                                 "classifications": [["1", 0.9731]]}]}]}

- ``file``: the path relative to the archive folder, forward slashes; entries sorted by it.
- ``bbox``: [x_min, y_min, width, height], normalised to the image's width and height, origin at
  the top left (MegaDetector's order; our records' boxes are pixel [xmin, ymin, xmax, ymax]),
  4 decimals, from the record's integer pixel box.
- ``category`` "1" (animal) for every box the detector proposed; ``conf`` is the detector's score
  for it (``detector_score``), and ``classifications`` holds the raccoon classifier's P(raccoon) (the
  record's ``score``) under classification category "1" (raccoon). Without a classifier stage
  (``--no-classifier``, single-stage models) ``conf`` is the detector's score (the record's
  ``score``) and there are no classifications.
- Only the detections the record lists are written (score >= the threshold): run with
  ``--threshold 0`` to hand every candidate to Timelapse and choose the threshold there.
- A file that failed: ``{"file", "failure": "<why>", "detections": null}`` (the spec's rule).
- A video: ``frame_rate`` and ``frames_processed`` (frame numbers), and one detection per visit at
  its best frame (``frame_number``), its visit score as the classification.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from raccoon_watch.recognition.recognizer import DEFAULT_PROPOSAL_THRESHOLD

FORMAT_VERSION = "1.6"
ANIMAL = "1"
RACCOON = "1"


def bbox_xywh(box: list[int] | tuple[int, ...], width: int, height: int) -> list[float]:
    """Pixel [xmin, ymin, xmax, ymax] -> normalised [x, y, w, h] (MegaDetector), 4 decimals."""
    if len(box) != 4:
        raise ValueError(f"expected 4 box coords, got {len(box)}")
    if width <= 0 or height <= 0:
        raise ValueError(f"expected a positive image size, got {width}x{height}")
    xmin, ymin, xmax, ymax = box
    return [round(xmin / width, 4), round(ymin / height, 4), round((xmax - xmin) / width, 4),
            round((ymax - ymin) / height, 4)]


def _detection(det: dict[str, Any], width: int, height: int, classified: bool, frame: int | None = None) -> dict[str, Any]:
    conf = det.get("detector_score", det["score"]) if classified else det["score"]
    out: dict[str, Any] = {"category": ANIMAL, "conf": float(round(conf, 4)), "bbox": bbox_xywh(det["box"], width, height)}
    if classified:
        out["classifications"] = [[RACCOON, float(round(det["score"], 4))]]
    if frame is not None:
        out["frame_number"] = frame
    return out


def image_entry(relative: str, record: dict[str, Any], classified: bool) -> dict[str, Any]:
    """One ``images`` entry from one record (a photo's or a clip's, or an error record)."""
    if "error" in record:
        return {"file": relative, "failure": str(record["error"]), "detections": None}
    width, height = record["width"], record["height"]
    if "video" in record:
        dets = [_detection(v, width, height, classified, frame=v["frame"]) for v in record["visits"]]
        return {"file": relative, "frame_rate": record["fps"], "frames_processed": record["frames_processed"],
                "detections": dets}
    return {"file": relative, "detections": [_detection(d, width, height, classified) for d in record["detections"]]}


def batch_results(records: Iterable[tuple[str, dict[str, Any]]], detector: str, classifier: str | None,
                  completed: float | None = None) -> dict[str, Any]:
    """The whole results document: ``records`` are (relative file, record) pairs; ``classifier`` the
    classifier stage's name (None: none ran); ``completed``: epoch seconds (default now)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(completed if completed is not None else time.time()))
    info: dict[str, Any] = {"format_version": FORMAT_VERSION, "detector": detector, "detection_completion_time": stamp,
                            # the detector proposes for the classifier from this score
                            "detector_metadata": {"typical_detection_threshold": DEFAULT_PROPOSAL_THRESHOLD}}
    doc: dict[str, Any] = {"info": info, "detection_categories": {ANIMAL: "animal"}}
    if classifier is not None:
        info["classifier"] = classifier
        info["classification_completion_time"] = stamp
        doc["classification_categories"] = {RACCOON: "raccoon"}
    doc["images"] = [image_entry(rel, rec, classifier is not None) for rel, rec in sorted(records, key=lambda r: r[0])]
    return doc
