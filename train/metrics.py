"""Detection metrics in pure numpy (pycocotools only for COCO mAP): no TensorFlow here.

Data shapes, shared by every function:
- ground truth: ``dict[image_id, list[GtBox]]``; an image with an empty list is a negative
  (no object), and it still counts for false alarms.
- predictions: ``dict[image_id, list[PredBox]]``; images missing from it have no detections.
- every box is pixels ``(xmin, ymin, xmax, ymax)`` of the original image, xmin < xmax, ymin < ymax.

IoU is the continuous area ratio (no "+1 pixel" of the old VOC devkit, as in the TF OD API and
pycocotools). AP@0.5 follows the PASCAL VOC 2010+ devkit: detections of a class are sorted by
score over all images; each takes the ground-truth box it overlaps most; IoU >= threshold with an
unmatched box is a true positive, with an already matched box a false positive (duplicate), with a
``difficult`` box neither; AP is the area under the all-point interpolated precision envelope.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

PixelBox = tuple[float, float, float, float]
"""(xmin, ymin, xmax, ymax) in pixels of the original image."""

DEFAULT_IOU = 0.5
UNMATCHED = -1  # index sentinel: a detection matched no ground-truth box
COCO_AREA_ALL = 0  # pycocotools area-range index "all"
COCO_MAX_DETS_LAST = -1  # pycocotools maxDets index (100)
COCO_IOU_50 = 0  # index of IoU 0.50 in pycocotools' IoU thresholds
COCO_IOU_75 = 5  # index of IoU 0.75


@dataclass(frozen=True, slots=True)
class GtBox:
    """A ground-truth box, pixels (xmin, ymin, xmax, ymax)."""

    label: str
    box: PixelBox
    difficult: bool = False


@dataclass(frozen=True, slots=True)
class PredBox:
    """A detection, pixels (xmin, ymin, xmax, ymax), score in [0, 1]."""

    label: str
    score: float
    box: PixelBox


GroundTruth = Mapping[str, Sequence[GtBox]]
Predictions = Mapping[str, Sequence[PredBox]]


def iou_xyxy(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU matrix (A, B) between boxes (A, 4) and (B, 4), both (xmin, ymin, xmax, ymax), any unit."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    inter_w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    inter_h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = inter_w * inter_h  # (A, B)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


@dataclass(frozen=True, slots=True)
class PrCurve:
    """Precision/recall after each detection of one class, sorted by descending score."""

    label: str
    ap: float  # NaN when the class has no non-difficult ground truth
    n_positives: int  # non-difficult ground-truth boxes
    scores: np.ndarray  # (D,) float, descending
    precision: np.ndarray  # (D,)
    recall: np.ndarray  # (D,)


def all_point_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC 2010+ AP: area under the monotone precision envelope at every recall change."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope, right to left
    changes = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]))


def _class_detections(preds: Predictions, label: str) -> list[tuple[float, str, PixelBox]]:
    found = [(p.score, image_id, p.box) for image_id, ps in preds.items() for p in ps if p.label == label]
    # Ties (common with quantized scores) are broken by image id and box, so AP does not depend
    # on the order the predictions were listed in.
    return sorted(found, key=lambda item: (-item[0], item[1], item[2]))


def _match_sorted(
    detections: list[tuple[float, str, PixelBox]], gt: GroundTruth, label: str, iou: float
) -> tuple[np.ndarray, np.ndarray]:
    """VOC greedy matching of score-sorted detections -> (true_positive, false_positive) flags (D,)."""
    gt_boxes = {k: np.array([g.box for g in v if g.label == label], dtype=np.float64).reshape(-1, 4) for k, v in gt.items()}
    gt_difficult = {k: np.array([g.difficult for g in v if g.label == label], dtype=bool) for k, v in gt.items()}
    used = {k: np.zeros(len(v), dtype=bool) for k, v in gt_boxes.items()}
    tp = np.zeros(len(detections))
    fp = np.zeros(len(detections))
    for d, (_, image_id, box) in enumerate(detections):
        boxes = gt_boxes.get(image_id, np.zeros((0, 4)))
        best = UNMATCHED
        if len(boxes):
            overlaps = iou_xyxy(np.array([box]), boxes)[0]
            best = int(np.argmax(overlaps)) if overlaps.max() >= iou else UNMATCHED
        if best == UNMATCHED:
            fp[d] = 1
        elif gt_difficult[image_id][best]:
            continue  # matched a difficult box: neither TP nor FP
        elif used[image_id][best]:
            fp[d] = 1  # duplicate detection of an already found box
        else:
            tp[d] = 1
            used[image_id][best] = True
    return tp, fp


def pr_curve(gt: GroundTruth, preds: Predictions, label: str, iou: float = DEFAULT_IOU) -> PrCurve:
    """Precision/recall curve and VOC all-point AP for one class (boxes in pixels, xmin,ymin,xmax,ymax)."""
    n_pos = sum(1 for boxes in gt.values() for g in boxes if g.label == label and not g.difficult)
    detections = _class_detections(preds, label)
    tp, fp = _match_sorted(detections, gt, label, iou)
    counted = (tp + fp) > 0  # detections on difficult boxes drop out of the curve
    scores = np.array([d[0] for d in detections], dtype=np.float64)[counted]
    tp_cum, fp_cum = np.cumsum(tp[counted]), np.cumsum(fp[counted])
    recall = tp_cum / n_pos if n_pos else np.zeros_like(tp_cum)
    precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
    ap = all_point_ap(recall, precision) if n_pos else math.nan
    return PrCurve(label, ap, n_pos, scores, precision, recall)


def gt_labels(gt: GroundTruth) -> list[str]:
    """Sorted class names present in the ground truth."""
    return sorted({g.label for boxes in gt.values() for g in boxes})


def voc_ap(gt: GroundTruth, preds: Predictions, iou: float = DEFAULT_IOU) -> dict[str, float]:
    """PASCAL VOC all-point AP per ground-truth class; boxes pixels (xmin, ymin, xmax, ymax).

    A class with only difficult boxes gets NaN. Use ``mean_ap`` for the mean over classes.
    """
    return {label: pr_curve(gt, preds, label, iou).ap for label in gt_labels(gt)}


def mean_ap(ap_by_class: Mapping[str, float]) -> float:
    """Mean of the finite per-class APs (NaN if there are none)."""
    values = [v for v in ap_by_class.values() if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _coco_datasets(gt: GroundTruth, preds: Predictions) -> tuple[dict, list[dict], list[str]]:
    """COCO-format ground truth and results; bbox [x, y, w, h] pixels; difficult -> iscrowd (ignored)."""
    labels = gt_labels(gt)
    category = {label: i + 1 for i, label in enumerate(labels)}
    image_index = {image_id: i + 1 for i, image_id in enumerate(sorted(gt))}
    annotations: list[dict] = []
    for image_id, boxes in gt.items():
        for g in boxes:
            x0, y0, x1, y1 = g.box
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_index[image_id], "category_id": category[g.label],
                "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": int(g.difficult),
            })
    dataset = {
        "images": [{"id": i} for i in image_index.values()],
        "categories": [{"id": c, "name": label} for label, c in category.items()],
        "annotations": annotations,
    }
    results = [
        {"image_id": image_index[image_id], "category_id": category[p.label], "score": float(p.score),
         "bbox": [p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]]}
        for image_id, ps in preds.items() if image_id in image_index
        for p in ps if p.label in category
    ]
    return dataset, results, labels


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]  # pycocotools marks "no ground truth" with -1
    return float(np.mean(valid)) if valid.size else math.nan


def coco_map(gt: GroundTruth, preds: Predictions) -> dict[str, object]:
    """COCO mAP@[.5:.95], @.5 and @.75 (pycocotools, maxDets 100), overall and per class.

    Boxes pixels (xmin, ymin, xmax, ymax). Returns ``{"map", "map50", "map75", "per_class":
    {label: {"map", "map50"}}}``; all 0 when there are no detections at all.
    """
    from pycocotools.coco import COCO  # imported here: only evaluation needs it
    from pycocotools.cocoeval import COCOeval

    dataset, results, labels = _coco_datasets(gt, preds)
    if not results or not dataset["annotations"]:
        zero = {label: {"map": 0.0, "map50": 0.0} for label in labels}
        return {"map": 0.0, "map50": 0.0, "map75": 0.0, "per_class": zero}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
        coco_gt = COCO()
        coco_gt.dataset = dataset
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"][:, :, :, COCO_AREA_ALL, COCO_MAX_DETS_LAST]  # (T, R, K)
    per_class = {
        label: {"map": _mean_valid(precision[:, :, k]), "map50": _mean_valid(precision[COCO_IOU_50, :, k])}
        for k, label in enumerate(labels)
    }
    return {
        "map": float(evaluator.stats[0]),
        "map50": float(evaluator.stats[1]),
        "map75": float(evaluator.stats[2]),
        "per_class": per_class,
    }


@dataclass(frozen=True, slots=True)
class ImageResult:
    """What a detector did on one image at one score threshold."""

    image_id: str
    n_objects: int  # non-difficult ground-truth boxes
    hits: int  # objects found (IoU >= iou, same class)
    misses: int  # objects not found
    false_alarms: int  # detections >= threshold matching no object (duplicates included)
    max_score: float  # best detection score on the image, 0 when none


def _match_image(truth: Sequence[GtBox], found: Sequence[PredBox], iou: float) -> tuple[int, int]:
    """Greedy VOC matching within one image -> (hits, false_alarms); boxes pixels xmin,ymin,xmax,ymax."""
    hits = false_alarms = 0
    used = [False] * len(truth)
    for pred in sorted(found, key=lambda p: -p.score):
        candidates = [i for i, g in enumerate(truth) if g.label == pred.label]
        if not candidates:
            false_alarms += 1
            continue
        overlaps = iou_xyxy(np.array([pred.box]), np.array([truth[i].box for i in candidates]))[0]
        best = candidates[int(np.argmax(overlaps))]
        if overlaps.max() < iou or (used[best] and not truth[best].difficult):
            false_alarms += 1
        elif not truth[best].difficult:
            used[best] = True
            hits += 1
    return hits, false_alarms


def per_image_results(
    gt: GroundTruth, preds: Predictions, threshold: float, iou: float = DEFAULT_IOU
) -> list[ImageResult]:
    """Hits, misses and false alarms per ground-truth image at a score threshold, in image-id order."""
    results = []
    for image_id in sorted(gt):
        truth = list(gt[image_id])
        all_found = list(preds.get(image_id, ()))
        found = [p for p in all_found if p.score >= threshold]
        hits, false_alarms = _match_image(truth, found, iou)
        n_objects = sum(1 for g in truth if not g.difficult)
        max_score = max((p.score for p in all_found), default=0.0)
        results.append(ImageResult(image_id, n_objects, hits, n_objects - hits, false_alarms, float(max_score)))
    return results


def image_max_scores(preds: Predictions, image_ids: Iterable[str], labels: Iterable[str] | None = None) -> np.ndarray:
    """Best detection score per image (0 when none), optionally only for some labels."""
    wanted = None if labels is None else set(labels)
    return np.array([
        max((p.score for p in preds.get(i, ()) if wanted is None or p.label in wanted), default=0.0)
        for i in image_ids
    ], dtype=np.float64)


def false_alert_rate(
    preds: Predictions, negative_ids: Sequence[str], threshold: float, labels: Iterable[str] | None = None
) -> float:
    """Share of negative images with any detection (of ``labels``, default any) scoring >= threshold."""
    if not negative_ids:
        return math.nan
    return float(np.mean(image_max_scores(preds, negative_ids, labels) >= threshold))


THRESHOLD_STEP = 1e-3  # chosen thresholds are rounded up to this grid, so configs stay readable
DEFAULT_MIN_THRESHOLD = 0.05
DEFAULT_MAX_FALSE_ALERT_RATE = 0.05  # at most 1 alerting photo in 20 raccoon-free photos


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """Detector quality at one score threshold."""

    threshold: float
    recall: float  # share of non-difficult objects found
    image_recall: float  # share of images with objects where at least one was found (an alert)
    precision: float  # hits / (hits + false alarms) over all images
    false_alert_rate: float  # share of negative images with a detection >= threshold


def operating_point(
    gt: GroundTruth, preds: Predictions, threshold: float, negative_ids: Sequence[str] | None = None,
    iou: float = DEFAULT_IOU,
) -> OperatingPoint:
    """Recall, precision and false-alert rate at a threshold; negatives default to gt images without boxes."""
    negatives = list(negative_ids) if negative_ids is not None else [k for k, v in gt.items() if not v]
    results = per_image_results(gt, preds, threshold, iou)
    hits = sum(r.hits for r in results)
    objects = sum(r.n_objects for r in results)
    alarms = sum(r.false_alarms for r in results)
    positive_images = [r for r in results if r.n_objects]
    return OperatingPoint(
        threshold=float(threshold),
        recall=hits / objects if objects else math.nan,
        image_recall=float(np.mean([r.hits > 0 for r in positive_images])) if positive_images else math.nan,
        precision=hits / (hits + alarms) if hits + alarms else math.nan,
        false_alert_rate=false_alert_rate(preds, negatives, threshold),
    )


def lowest_threshold_for_rate(
    negative_max_scores: np.ndarray, max_false_alert_rate: float, min_threshold: float = DEFAULT_MIN_THRESHOLD
) -> float:
    """Lowest threshold (on a 0.001 grid, >= min_threshold) at which at most the given share of
    negative images has a detection scoring >= threshold."""
    scores = np.sort(np.asarray(negative_max_scores, dtype=np.float64))[::-1]
    allowed = int(math.floor(max_false_alert_rate * len(scores) + 1e-9))  # images that may alert
    if allowed >= len(scores):
        return float(min_threshold)
    # The (allowed+1)-th best negative must stay below the threshold: round its score up the grid.
    above = (math.floor(round(scores[allowed] / THRESHOLD_STEP, 6)) + 1) * THRESHOLD_STEP  # 0.7 / 0.001 is 699.99...
    return float(max(min_threshold, round(above, 6)))


def choose_threshold(
    gt: GroundTruth, preds: Predictions, negative_ids: Sequence[str] | None = None,
    max_false_alert_rate: float = DEFAULT_MAX_FALSE_ALERT_RATE, iou: float = DEFAULT_IOU,
    min_threshold: float = DEFAULT_MIN_THRESHOLD, negative_groups: Sequence[Sequence[str]] | None = None,
) -> OperatingPoint:
    """Pick the deployed threshold on a VALIDATION set (never the test set).

    The lowest threshold whose false-alert rate on the negative images is <= max_false_alert_rate
    (lower thresholds only raise recall); returns the recall, image recall and precision there.
    Negatives default to the gt images without boxes. Boxes pixels (xmin, ymin, xmax, ymax).
    With ``negative_groups`` (e.g. day photos and IR night frames, as the split lists them) the rate must hold
    in every group, so easy night frames cannot spend the day photos' budget.
    """
    negatives = list(negative_ids) if negative_ids is not None else [k for k, v in gt.items() if not v]
    if not negatives:
        raise ValueError("choose_threshold: no negative images; false alerts cannot be measured")
    groups = [list(g) for g in negative_groups if len(g)] if negative_groups else [negatives]
    threshold = max(lowest_threshold_for_rate(image_max_scores(preds, group), max_false_alert_rate, min_threshold)
                    for group in groups)
    return operating_point(gt, preds, threshold, negatives, iou)


def threshold_sweep(
    gt: GroundTruth, preds: Predictions, thresholds: Iterable[float],
    negative_ids: Sequence[str] | None = None, iou: float = DEFAULT_IOU,
) -> list[OperatingPoint]:
    """Operating points at several thresholds: the recall / false-alert trade-off as a table."""
    return [operating_point(gt, preds, t, negative_ids, iou) for t in thresholds]
