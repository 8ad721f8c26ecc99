"""Which detections count: label, box area, zones and masks (``eligible``), then score. Pure functions.

Two score levels (Frigate's review terms): a detection at or above the alert threshold
(``meets_threshold``) may raise an alert; one at or above only the lower review threshold
(``meets_review_threshold``) may raise a detection, shown on the review page and never pushed.

Boxes are normalised (xmin, ymin, xmax, ymax); polygons are lists of normalised (x, y) points.
A box is "in" a polygon when its bottom-centre point (where an animal touches the ground) is.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from raccoon_watch.recognition.imagemode import IR
from raccoon_watch.types import Box, Detection, box_area

Polygon = Sequence[tuple[float, float]]


@dataclass(frozen=True, slots=True)
class DetectionFilter:
    """threshold: the score a detection must reach to alert; ir_threshold: the same for detections
    found in an infrared/monochrome frame (``Detection.mode == "ir"``), None = ``threshold`` for every mode.
    review_threshold: the lower score from which a detection is kept for review (a *detection*, not
    pushed), None = no detections; ir_review_threshold: the same in infrared frames, None =
    ``review_threshold`` for every mode. A review threshold at or above its mode's alert threshold
    gives no detections in that mode."""

    labels: frozenset[str]
    threshold: float
    min_area: float = 0.0
    max_area: float = 1.0
    zones: tuple[tuple[tuple[float, float], ...], ...] = ()
    masks: tuple[tuple[tuple[float, float], ...], ...] = ()
    ir_threshold: float | None = None
    review_threshold: float | None = None
    ir_review_threshold: float | None = None

    def threshold_for(self, mode: str | None) -> float:
        """The alert threshold for a detection of this image mode."""
        return self.ir_threshold if mode == IR and self.ir_threshold is not None else self.threshold

    def review_threshold_for(self, mode: str | None) -> float:
        """The lowest score a detection of this image mode must reach to be kept at all: its mode's
        review threshold, capped at its alert threshold; the alert threshold when it has none."""
        alert = self.threshold_for(mode)
        review = self.ir_review_threshold if mode == IR and self.ir_review_threshold is not None \
            else self.review_threshold
        return alert if review is None else min(review, alert)


def point_in_polygon(x: float, y: float, polygon: Polygon) -> bool:
    """Even-odd ray casting; points exactly on an edge may fall either way."""
    inside = False
    n = len(polygon)
    for i in range(n):
        x1, y1 = polygon[i]
        x2, y2 = polygon[(i + 1) % n]
        if (y1 > y) != (y2 > y):
            x_cross = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < x_cross:
                inside = not inside
    return inside


def anchor_point(box: Box) -> tuple[float, float]:
    """Bottom centre (x, y) of a normalised (xmin, ymin, xmax, ymax) box."""
    xmin, _, xmax, ymax = box
    return (xmin + xmax) / 2.0, ymax


def eligible(det: Detection, f: DetectionFilter) -> bool:
    """True when this detection's label, box area and place may raise an event (score not looked at).

    The router scores eligible detections over time (``visits``) before the threshold applies.
    """
    if det.label not in f.labels:
        return False
    area = box_area(det.box)
    if not (f.min_area <= area <= f.max_area):
        return False
    x, y = anchor_point(det.box)
    if f.zones and not any(point_in_polygon(x, y, z) for z in f.zones):
        return False
    return not any(point_in_polygon(x, y, m) for m in f.masks)


def meets_threshold(det: Detection, f: DetectionFilter) -> bool:
    """True when the detection's score reaches the filter's alert threshold for its image mode (>=)."""
    return det.score >= f.threshold_for(det.mode)


def meets_review_threshold(det: Detection, f: DetectionFilter) -> bool:
    """True when the detection's score reaches the filter's review threshold for its image mode (>=);
    every detection that meets the alert threshold meets this one too."""
    return det.score >= f.review_threshold_for(det.mode)


def counts(det: Detection, f: DetectionFilter) -> bool:
    """True when this detection may raise or keep an event: eligible and at or above the threshold."""
    return meets_threshold(det, f) and eligible(det, f)


def counting(detections: Iterable[Detection], f: DetectionFilter) -> tuple[Detection, ...]:
    return tuple(d for d in detections if counts(d, f))
