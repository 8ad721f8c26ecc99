"""Stage 4: score a detector's predictions against a ground-truth CSV and negative images.

Predictions use the daemon's ``raccoon-watch detect --json`` format, one JSON object per line::

    {"image": PATH, "width": W, "height": H,
     "detections": [{"label": "raccoon", "score": 0.93, "box": [xmin, ymin, xmax, ymax]}]}

with boxes in pixels of the original image. Images are matched to the CSV's ``filename`` column and
to the negative images by file name (basename), so names must be unique across both.

Command line (mounted by ``python -m train evaluate``)::

    # run a model folder (both stages, exactly as the daemon runs it) and score it
    python -m train evaluate --model models/raccoon \
        --csv ../shared/data/raccoon_dataset/test_labels.csv --images ../shared/data/raccoon_dataset/images \
        --negatives work/negatives_holdout.txt --threshold 0.5 --output work/eval/metrics.json
    # or score predictions made elsewhere (raccoon-watch detect --json ... > preds.jsonl)
    python -m train evaluate --predictions preds.jsonl --csv ... --images ... --output work/eval/metrics.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import structlog

from raccoon_watch.config import DEFAULT_THRESHOLD
from raccoon_watch.recognition.detectors.base import ModelError
from raccoon_watch.recognition.imagemode import IR, image_mode
from raccoon_watch.types import detection_json
from train import metrics
from train.voc import BoxRow, default_images_dir, list_images, read_csv

log = structlog.get_logger(__name__)

SWEEP_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95
COCO_TO_RACCOON = {"cat": "raccoon", "dog": "raccoon", "bear": "raccoon"}
JSON_DIGITS = 4

Record = dict  # one `detect --json` line: {"image", "width", "height", "detections": [...]}


def read_detections(path: str | Path) -> list[Record]:
    """Read ``detect --json`` lines (boxes pixels xmin, ymin, xmax, ymax); blank lines are skipped."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} line {number}: not JSON: {exc}") from None
        if not isinstance(record, dict) or "image" not in record or "detections" not in record:
            raise ValueError(f"{path} line {number}: expected an object with 'image' and 'detections'")
        records.append(record)
    return records


def write_detections(records: Iterable[Record], path: str | Path) -> int:
    """Write records as ``detect --json`` lines; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
            count += 1
    return count


def remap_labels(records: Iterable[Record], mapping: Mapping[str, str], drop_unmapped: bool = True) -> list[Record]:
    """Rename detection labels (e.g. cat/dog/bear -> raccoon); others are dropped unless drop_unmapped=False.

    Boxes are left as they are (pixels xmin, ymin, xmax, ymax); no NMS across the merged classes.
    """
    remapped = []
    for record in records:
        detections = [
            {**d, "label": mapping.get(d["label"], d["label"])}
            for d in record["detections"]
            if d["label"] in mapping or not drop_unmapped
        ]
        remapped.append({**record, "detections": detections})
    return remapped


def parse_mapping(text: str) -> dict[str, str]:
    """'cat=raccoon,dog=raccoon' -> {'cat': 'raccoon', 'dog': 'raccoon'}."""
    mapping = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        source, sep, target = item.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ValueError(f"--remap: expected FROM=TO pairs separated by commas, got {item!r}")
        mapping[source.strip()] = target.strip()
    return mapping


def on_one_scale(records: Iterable[Record], threshold: float, ir_threshold: float | None) -> list[Record]:
    """Per-image-mode thresholds as one threshold: every score of an ``"ir"`` record (``mode``, as
    ``detect --json`` writes it) is multiplied by ``threshold / ir_threshold`` (capped at 1.0), so that
    ``score >= threshold`` on the result is exactly ``score >= ir_threshold`` on the IR image's own
    scores, and every metric at ``threshold`` is the daemon's per-mode decision. AP then ranks the
    images as the per-mode rule does. Records without ``mode`` and ``ir_threshold`` None: unchanged."""
    if ir_threshold is None or ir_threshold <= 0.0:
        return list(records)
    factor = threshold / ir_threshold
    return [
        {**r, "detections": [{**d, "score": min(1.0, float(d["score"]) * factor)} for d in r["detections"]]}
        if r.get("mode") == IR else r
        for r in records
    ]


def records_to_predictions(records: Iterable[Record]) -> dict[str, list[metrics.PredBox]]:
    """Records -> ``{basename: [PredBox]}``, boxes pixels (xmin, ymin, xmax, ymax)."""
    preds: dict[str, list[metrics.PredBox]] = {}
    for record in records:
        image_id = Path(record["image"]).name
        boxes = [metrics.PredBox(d["label"], float(d["score"]), tuple(float(v) for v in d["box"])) for d in record["detections"]]
        preds.setdefault(image_id, []).extend(boxes)
    return preds


def ground_truth(rows: Sequence[BoxRow], negative_images: Sequence[str | Path] = ()) -> dict[str, list[metrics.GtBox]]:
    """CSV rows (pixels) + negative image paths -> ``{basename: [GtBox]}``; negatives map to []."""
    gt: dict[str, list[metrics.GtBox]] = {}
    for row in rows:
        box = (float(row.xmin), float(row.ymin), float(row.xmax), float(row.ymax))
        gt.setdefault(row.filename, []).append(metrics.GtBox(row.label, box, row.difficult))
    for path in negative_images:
        name = Path(path).name
        if name in gt:
            raise ValueError(f"negative image {path}: its name {name!r} is also a labelled image or a duplicate")
        gt[name] = []
    return gt


# ---------------------------------------------------------------- running the model the daemon runs


def predict_with_model(
    model: str | Path, images: Iterable[str | Path], label_map: str | Path | None = None,
    min_score: float = 0.01, num_threads: int = 2, classifier: bool = True,
    read: Callable[[Path], np.ndarray] | None = None,
) -> Iterator[Record]:
    """Run a model folder (detector, and its classifier stage when it has one) or a detector
    ``.tflite`` on image files with the daemon's own code (``raccoon_watch.recognition.recognizer.Recognizer``
    built by ``create_recognizer``: the same preprocessing, output mapping, crops and scores);
    yields ``detect --json`` records (pixel xmin, ymin, xmax, ymax; ``score`` the final score).
    ``read``: path -> BGR image, raising for one it cannot read (default: cv2.imread, ValueError);
    the retrain passes ``imagefile.read_image``'s capped reader for files a user can put there.
    """
    import cv2

    from raccoon_watch.config import DetectorConfig
    from raccoon_watch.recognition.detectors import create_recognizer

    cfg = DetectorConfig(model=Path(model), backend="tflite", labelmap=Path(label_map) if label_map else None,
                         num_threads=num_threads, classifier=classifier)
    recognizer = create_recognizer(cfg, min_score=min_score)
    try:
        for path in map(Path, images):
            if read is not None:
                image = read(path)
            else:
                image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # BGR, EXIF orientation applied
                if image is None:
                    raise ValueError(f"{path}: image missing or does not decode")
            height, width = image.shape[:2]
            detections = [d for d in recognizer.recognize([image])[0] if d.score >= min_score]
            yield {"image": str(path), "width": width, "height": height, "mode": image_mode(image),
                   "detections": [detection_json(d, width, height) for d in detections]}
    finally:
        recognizer.close()


# ---------------------------------------------------------------- metrics, JSON and plot


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), JSON_DIGITS) for v in values]


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: undefined metrics (no positives, no negatives) become null."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), JSON_DIGITS)


def _point(point: metrics.OperatingPoint) -> dict[str, float | None]:
    return {key: _finite_or_none(value) for key, value in asdict(point).items()}


def evaluate_predictions(
    gt: Mapping[str, Sequence[metrics.GtBox]], preds: Mapping[str, Sequence[metrics.PredBox]],
    threshold: float = DEFAULT_THRESHOLD, iou: float = metrics.DEFAULT_IOU,
    max_false_alert_rate: float = metrics.DEFAULT_MAX_FALSE_ALERT_RATE,
) -> dict:
    """All metrics as a JSON-ready dict; gt images without boxes are the negatives; boxes pixels.

    ``ap50``, ``map50``, ``coco`` and ``pr_curve`` use the labelled images only (comparable with the
    published test-split numbers); ``ap50_with_negatives`` also counts detections on the negatives
    as false positives. ``at_threshold``, ``threshold_sweep`` and ``per_image`` cover all images
    (``at_threshold_labelled_only``: the labelled images alone, the point drawn on the PR curve).
    """
    negatives = sorted(k for k, v in gt.items() if not v)
    positives_gt = {k: v for k, v in gt.items() if v}
    positives_preds = {k: v for k, v in preds.items() if k in positives_gt}
    curves = {label: metrics.pr_curve(positives_gt, positives_preds, label, iou) for label in metrics.gt_labels(gt)}
    ap = {label: curve.ap for label, curve in curves.items()}
    ap_all = metrics.voc_ap(gt, preds, iou)
    result = {
        "iou": iou,
        "images": len(gt),
        "positive_images": len(gt) - len(negatives),
        "negative_images": len(negatives),
        "objects": sum(1 for boxes in gt.values() for g in boxes if not g.difficult),
        "ap50": {label: _finite_or_none(v) for label, v in ap.items()},
        "map50": _finite_or_none(metrics.mean_ap(ap)),
        "ap50_with_negatives": {label: _finite_or_none(v) for label, v in ap_all.items()},
        "coco": metrics.coco_map(positives_gt, positives_preds),
        "threshold": threshold,
        "at_threshold": _point(metrics.operating_point(gt, preds, threshold, negatives, iou)),
        "at_threshold_labelled_only": _point(metrics.operating_point(positives_gt, positives_preds, threshold, [], iou)),
        "threshold_sweep": [_point(p) for p in metrics.threshold_sweep(gt, preds, SWEEP_THRESHOLDS, negatives, iou)],
        "per_image": [asdict(r) for r in metrics.per_image_results(gt, preds, threshold, iou)],
        "pr_curve": {
            label: {"scores": _rounded(c.scores), "precision": _rounded(c.precision), "recall": _rounded(c.recall)}
            for label, c in curves.items()
        },
    }
    if negatives:
        choice = metrics.choose_threshold(gt, preds, negatives, max_false_alert_rate, iou)
        result["threshold_for_false_alert_target"] = {"max_false_alert_rate": max_false_alert_rate, **_point(choice)}
    return result


def plot_pr_curve(result: Mapping, path: str | Path, title: str = "") -> Path:
    """PNG with the precision/recall curve per class (and the operating point at the deployed
    threshold) on the left, recall and false-alert rate against the threshold on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, (pr_axes, sweep_axes) = plt.subplots(1, 2, figsize=(11, 4.8), dpi=100)
    for label, curve in result["pr_curve"].items():
        ap = result["ap50"].get(label)
        pr_axes.plot(curve["recall"], curve["precision"], drawstyle="steps-post",
                     label=f"{label} AP@{result['iou']:.2f} = {ap if ap is None else round(ap, 3)}")
    point = result["at_threshold_labelled_only"]
    if point["recall"] is not None and point["precision"] is not None:
        pr_axes.plot([point["recall"]], [point["precision"]], "o", color="black", label=f"threshold {result['threshold']}")
    pr_axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02), title=title or "precision / recall")
    pr_axes.legend(loc="lower left", fontsize=8)
    _plot_sweep(sweep_axes, result)
    for axes in (pr_axes, sweep_axes):
        axes.grid(True, alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def _plot_sweep(axes, result: Mapping) -> None:
    """Recall (objects), image recall and false-alert rate on negatives against the score threshold."""
    sweep = result["threshold_sweep"]
    thresholds = [p["threshold"] for p in sweep]
    for key, style in (("recall", "-"), ("image_recall", "--"), ("false_alert_rate", ":")):
        values = [np.nan if p[key] is None else p[key] for p in sweep]
        axes.plot(thresholds, values, style, label=key.replace("_", " "))
    axes.axvline(result["threshold"], color="black", linewidth=0.8, label="deployed threshold")
    axes.set(xlabel="score threshold", ylim=(0, 1.02), xlim=(0, 1), title="recall vs false alerts")
    axes.legend(loc="center left", fontsize=8)


def evaluate_records(
    records: Sequence[Record], rows: Sequence[BoxRow], negative_images: Sequence[str | Path] = (),
    threshold: float = DEFAULT_THRESHOLD, iou: float = metrics.DEFAULT_IOU,
    max_false_alert_rate: float = metrics.DEFAULT_MAX_FALSE_ALERT_RATE,
) -> dict:
    """Score ``detect --json`` records against CSV rows (pixels) plus negative image paths."""
    gt = ground_truth(rows, negative_images)
    preds = records_to_predictions(records)
    missing = sorted(set(gt) - set(preds))
    if missing:
        log.warning("images_without_predictions", count=len(missing), first=missing[:5])
    extra = set(preds) - set(gt)
    if extra:
        log.info("predictions_ignored", count=len(extra), reason="image not in the CSV or the negatives")
    return evaluate_predictions(gt, {k: v for k, v in preds.items() if k in gt}, threshold, iou, max_false_alert_rate)


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m train evaluate``."""
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path, help="detect --json lines to score")
    source.add_argument("--model", type=Path, help="model folder (detector + classifier stage, as the daemon loads "
                        "it) or a detector .tflite, run on the CSV's images and the negatives")
    parser.add_argument("--label-map", type=Path, help="labels of --model (.pbtxt or one per line); "
                        "default: the label map beside the model")
    parser.add_argument("--no-classifier", action="store_true", help="score the detector alone, even if the folder has a classifier")
    parser.add_argument("--csv", type=Path, required=True, help="ground truth, seed CSV format (pixels)")
    parser.add_argument("--images", type=Path, help="folder of the CSV's images (default: <csv dir>/images or <csv dir>)")
    parser.add_argument("--negatives", type=Path, action="append", default=[],
                        help="raccoon-free images: a folder, a .txt list or a .csv with filename (repeatable)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="deployed score threshold")
    parser.add_argument("--ir-threshold", type=float, help="deployed threshold for infrared/monochrome images "
                        "(records' mode 'ir'; default: --threshold for every image)")
    parser.add_argument("--iou", type=float, default=metrics.DEFAULT_IOU, help="IoU for a hit (AP@IoU)")
    parser.add_argument("--max-false-alert-rate", type=float, default=metrics.DEFAULT_MAX_FALSE_ALERT_RATE,
                        help="target for the suggested threshold (only meaningful on a validation set)")
    parser.add_argument("--remap", default="", help="rename labels before scoring, e.g. cat=raccoon,dog=raccoon,bear=raccoon;"
                        " other labels are dropped. Without it, detections of labels not in --csv (decoy classes such as cat) are dropped")
    parser.add_argument("--min-score", type=float, default=0.01, help="drop --model detections below this score")
    parser.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads")
    parser.add_argument("--output", type=Path, required=True, help="metrics JSON to write")
    parser.add_argument("--plot", type=Path, help="precision/recall PNG (default: --output with .png)")
    parser.add_argument("--save-predictions", type=Path, help="also write --model's detections as detect --json lines")


def _load_records(args: argparse.Namespace, rows: Sequence[BoxRow], negatives: Sequence[Path]) -> list[Record]:
    if args.predictions:
        return read_detections(args.predictions)
    images_dir = args.images or default_images_dir(args.csv)
    images = [images_dir / name for name in dict.fromkeys(r.filename for r in rows)] + list(negatives)
    records = list(predict_with_model(args.model, images, args.label_map, args.min_score, args.threads,
                                      classifier=not args.no_classifier))
    if args.save_predictions:
        write_detections(records, args.save_predictions)
    return records


def main(args: argparse.Namespace) -> int:
    """Run the evaluate stage: metrics JSON + PR curve PNG; returns a process exit code."""
    try:
        rows = read_csv(args.csv)
        negatives = [p for source in args.negatives for p in list_images(source)]
        records = _load_records(args, rows, negatives)
        if args.remap:
            records = remap_labels(records, parse_mapping(args.remap))
        else:  # a decoy class (cat, dog) is not a raccoon alert: score only the labels in the ground truth
            records = remap_labels(records, {label: label for label in {r.label for r in rows}})
        records = on_one_scale(records, args.threshold, args.ir_threshold)
        result = evaluate_records(records, rows, negatives, args.threshold, args.iou, args.max_false_alert_rate)
        if args.ir_threshold is not None:
            result["ir_threshold"] = args.ir_threshold
    except (ValueError, ModelError) as exc:  # VocError is a ValueError too
        log.error("evaluate_failed", problem=str(exc))
        return 1
    result["source"] = str(args.model or args.predictions)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=1) + "\n")
    plot = plot_pr_curve(result, args.plot or args.output.with_suffix(".png"), title=args.output.stem)
    point = result["at_threshold"]
    log.info("evaluated", output=str(args.output), plot=str(plot), map50=result["map50"], coco_map=round(result["coco"]["map"], 4),
             threshold=args.threshold, recall=point["recall"], false_alert_rate=point["false_alert_rate"])
    return 0


evaluate_main = main  # the name the training CLI imports


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(_parser)
    raise SystemExit(main(_parser.parse_args()))
