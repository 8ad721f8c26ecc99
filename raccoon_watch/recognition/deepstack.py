"""The DeepStack / CodeProject.AI wire format, both ways (pure functions; no I/O).

A request is ``multipart/form-data``: a file field ``image`` (JPEG, PNG, ...), optional fields
``min_confidence`` (0..1, default 0.4) and ``api_key``. The answer, in pixels of the uploaded image::

    {"success": true, "code": 200, "message": "Found raccoon", "count": 1,
     "predictions": [{"label": "raccoon", "confidence": 0.93, "x_min": 212, "y_min": 96, "x_max": 401, "y_max": 300}],
     "inferenceMs": 31, "processMs": 35, "analysisRoundTripMs": 38, "command": "custom", "moduleId": ..., ...}

and an error is ``{"success": false, "code": 4xx, "error": "...", "message": "..."}`` with that HTTP status.

Which predictions (``choose_predictions``): every animal the recognizer scores at least
``min_confidence`` as a raccoon, labelled ``raccoon`` with that score; with ``animals`` also the
proposer's other animals: with the two-stage model, a proposed animal the classifier does not call a
raccoon, labelled ``animal`` with the proposer's score (the shipped proposer has one class); with a
single-stage model of several labels (the stock COCO SSD), its other labels. Raccoons come first,
each group best first, at most ``MAX_PREDICTIONS``: Frigate's plugin stops reading at the first
prediction under 0.4 or with a label it does not know, and fills a 20-row array.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from raccoon_watch.types import Box, Detection, box_to_pixels

MODULE_ID = "raccoon-watch"
MODULE_NAME = "raccoon_watch raccoon recognizer"
CUSTOM_MODEL = "raccoon"  # /v1/vision/custom/raccoon; /v1/vision/custom/list names it
ANIMAL = "animal"  # a proposed animal the classifier does not call a raccoon
MAX_PREDICTIONS = 20  # Frigate's deepstack plugin writes prediction i into a (20, 6) array
DEFAULT_MIN_CONFIDENCE = 0.4  # DeepStack's and CodeProject.AI's default
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"", "0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class Prediction:
    """One answer: ``box`` normalised (xmin, ymin, xmax, ymax) of the image it was found in."""

    label: str
    confidence: float
    box: Box


def choose_predictions(detections: Sequence[Detection], raccoon_label: str, min_confidence: float,
                       animals: bool) -> list[Prediction]:
    """What an answer reports from one image's ``Recognizer.recognize`` result (see the module doc)."""
    raccoons, others = [], []
    for det in detections:
        if det.label == raccoon_label and det.score >= min_confidence:
            raccoons.append(Prediction(raccoon_label, det.score, det.box))
        elif animals:
            if det.detector_score is not None:  # two-stage: the proposer's view of an animal it proposed
                label, confidence = (ANIMAL if det.label == raccoon_label else det.label), det.detector_score
            elif det.label != raccoon_label:  # single stage: the detector's own other labels
                label, confidence = det.label, det.score
            else:
                continue
            if confidence >= min_confidence:
                others.append(Prediction(label, confidence, det.box))
    ranked = sorted(raccoons, key=lambda p: -p.confidence) + sorted(others, key=lambda p: -p.confidence)
    return ranked[:MAX_PREDICTIONS]


def prediction_json(p: Prediction, width: int, height: int) -> dict[str, Any]:
    x_min, y_min, x_max, y_max = box_to_pixels(p.box, width, height)
    return {"label": p.label, "confidence": round(float(p.confidence), 4),
            "x_min": x_min, "y_min": y_min, "x_max": x_max, "y_max": y_max}


def _common(command: str, code: int) -> dict[str, Any]:
    return {"code": code, "command": command, "moduleId": MODULE_ID, "moduleName": MODULE_NAME,
            "executionProvider": "CPU", "canUseGPU": False, "inferenceDevice": "CPU",
            "processedBy": MODULE_ID, "timestampUTC": email.utils.formatdate(usegmt=True)}


def success_body(predictions: Sequence[Prediction], width: int, height: int, command: str,
                 inference_ms: float, process_ms: float, round_trip_ms: float) -> dict[str, Any]:
    labels = [p.label for p in predictions]
    found = ", ".join(dict.fromkeys(labels))
    return {
        "success": True,
        "message": f"Found {found}" if labels else "No objects found",
        "count": len(predictions),
        "predictions": [prediction_json(p, width, height) for p in predictions],
        "inferenceMs": int(round(inference_ms)),
        "processMs": int(round(process_ms)),
        "analysisRoundTripMs": int(round(round_trip_ms)),
        **_common(command, 200),
    }


def error_body(code: int, error: str, command: str = "detect") -> dict[str, Any]:
    return {"success": False, "error": error, "message": error, **_common(command, code)}


def list_body(models: Sequence[str]) -> dict[str, Any]:
    return {"success": True, "models": list(models), "message": f"{len(models)} custom model(s)", **_common("list", 200)}


def parse_confidence(value: str | None, default: float) -> float:
    """``min_confidence`` from a form: a number in 0..1 (absent or empty: ``default``); ValueError else."""
    if value is None or not value.strip():
        return default
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"min_confidence must be a number from 0 to 1, got {value[:40]!r}") from None
    if not (math.isfinite(number) and 0.0 <= number <= 1.0):
        raise ValueError(f"min_confidence must be a number from 0 to 1, got {value[:40]!r}")
    return number


def parse_flag(value: str | None, default: bool, name: str) -> bool:
    """A yes/no form field (1/true/yes/on, 0/false/no/off); ValueError for anything else."""
    if value is None:
        return default
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ValueError(f"{name} must be 1 or 0 (true/false), got {value[:40]!r}")


class ProtocolError(ValueError):
    """An answer that is not the DeepStack format (or says it failed); str() says how."""


def parse_answer(body: Any, width: int, height: int) -> list[Prediction]:
    """The predictions of a DeepStack-style answer to an image of ``width`` x ``height`` pixels, boxes
    normalised (xmin, ymin, xmax, ymax) and clipped to the image; ProtocolError for an answer that is
    not one (not an object, ``success`` false, a prediction without its numbers)."""
    if not isinstance(body, dict):
        raise ProtocolError(f"the answer is not a JSON object but {type(body).__name__}")
    if body.get("success") is not True:
        error = body.get("error") or body.get("message") or "no reason given"
        raise ProtocolError(f"the answer says it failed: {str(error)[:200]}")
    raw = body.get("predictions")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise ProtocolError("predictions is not a list")
    out = []
    for item in raw:
        try:
            label = item["label"]
            numbers = [float(item[k]) for k in ("confidence", "x_min", "y_min", "x_max", "y_max")]
        except (KeyError, TypeError, ValueError):
            raise ProtocolError(f"a prediction without label, confidence and x_min/y_min/x_max/y_max: {str(item)[:200]}") from None
        if not isinstance(label, str) or not all(math.isfinite(n) for n in numbers):
            raise ProtocolError(f"a prediction with a bad label or number: {str(item)[:200]}")
        confidence, x_min, y_min, x_max, y_max = numbers
        box = (min(max(x_min / width, 0.0), 1.0), min(max(y_min / height, 0.0), 1.0),
               min(max(x_max / width, 0.0), 1.0), min(max(y_max / height, 0.0), 1.0))
        if box[2] <= box[0] or box[3] <= box[1]:
            continue  # an empty box says nothing
        out.append(Prediction(label, min(max(confidence, 0.0), 1.0), box))
    return out
