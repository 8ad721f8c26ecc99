"""Decoy classes: the animals in the raccoon-free photos, labelled by the COCO model (the teacher).

A 1-class raccoon detector has to learn "not a raccoon" for every cat and dog from a handful of
mined background anchors. With decoy classes the model keeps ``cat`` and ``dog`` as outputs of
their own (started from the COCO cat and dog predictors), and the TFLite post-processing reports
the best class per box: a cat that looks a bit like a raccoon comes out as ``cat``, which the
daemon does not alert on (``detector.labels: [raccoon]``). No one labels the decoys by hand: the
stock COCO detector does, on the raccoon-free photos only (it calls raccoons cats, dogs and bears,
so it never labels the raccoon photos).

    python -m train decoys --model ../shared/pretrained/coco_ssd_mobilenet_v1_0.75_quant_300.tflite \\
        --label-map ../shared/pretrained/coco_labelmap.txt --negatives work/split/train_negatives.txt \\
        --classes cat,dog --output work/csv/decoys.csv --unlabelled work/split/train_negatives_plain.txt

Writes the seed CSV format (pixels xmin, ymin, xmax, ymax; ``filename`` is the image's absolute
path, since negatives come from several folders) and the list of negatives the teacher found
nothing in, which stay plain negatives.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from pathlib import Path

import structlog

from train.voc import BoxRow, write_csv

log = structlog.get_logger(__name__)

DEFAULT_MIN_SCORE = 0.4  # the teacher's detections kept as decoy boxes
MIN_BOX_PIXELS = 8  # smaller teacher boxes are not worth a label


def rows_from_records(records: Iterable[dict], classes: Sequence[str], min_score: float) -> tuple[list[BoxRow], list[str]]:
    """``detect --json`` records (pixel boxes xmin, ymin, xmax, ymax) -> (decoy rows, images without any).

    A detection becomes a row when its label is one of ``classes`` and it scores >= min_score.
    """
    rows: list[BoxRow] = []
    plain: list[str] = []
    wanted = set(classes)
    for record in records:
        width, height = record["width"], record["height"]
        found = []
        for det in record["detections"]:
            if det["label"] not in wanted or det["score"] < min_score:
                continue
            xmin, ymin = max(0, int(round(det["box"][0]))), max(0, int(round(det["box"][1])))
            xmax, ymax = min(width, int(round(det["box"][2]))), min(height, int(round(det["box"][3])))
            if xmax - xmin >= MIN_BOX_PIXELS and ymax - ymin >= MIN_BOX_PIXELS:
                found.append(BoxRow(record["image"], width, height, det["label"], xmin, ymin, xmax, ymax))
        rows.extend(found)
        if not found:
            plain.append(record["image"])
    return rows, plain


def label_decoys(model: Path, label_map: Path, images: Sequence[Path], classes: Sequence[str],
                 min_score: float = DEFAULT_MIN_SCORE, threads: int = 2) -> tuple[list[BoxRow], list[str]]:
    """Run the teacher on the images -> (decoy rows with absolute filenames, images left plain)."""
    from raccoon_watch.recognition.labels import load_labels
    from train.evaluate import predict_with_model

    labels = load_labels(label_map)
    unknown = [c for c in classes if c not in labels]
    if unknown:
        raise ValueError(f"{label_map}: decoy classes {unknown} are not labels of the teacher model")
    absolute = [Path(p).resolve() for p in images]
    records = predict_with_model(model, absolute, label_map, min_score=min_score, num_threads=threads, classifier=False)
    return rows_from_records(records, classes, min_score)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m train decoys``."""
    parser.add_argument("--model", type=Path, required=True, help="teacher TFLite SSD (the stock COCO model)")
    parser.add_argument("--label-map", type=Path, required=True, help="the teacher's labels (coco_labelmap.txt)")
    parser.add_argument("--negatives", type=Path, action="append", required=True,
                        help="raccoon-free images: a folder or a .txt list (repeatable)")
    parser.add_argument("--classes", required=True, help="comma-separated teacher labels to keep, e.g. cat,dog")
    parser.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE, help="teacher score to keep a box")
    parser.add_argument("--output", type=Path, required=True, help="decoy box CSV to write")
    parser.add_argument("--unlabelled", type=Path, required=True,
                        help="list (.txt) of the negatives with no decoy box, to write")
    parser.add_argument("--threads", type=int, default=2)


def main(args: argparse.Namespace) -> int:
    from train.voc import list_images

    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    if not classes:
        log.error("decoys_failed", problem="--classes is empty")
        return 1
    try:
        images = [p for source in args.negatives for p in list_images(source)]
        rows, plain = label_decoys(args.model, args.label_map, images, classes, args.min_score, args.threads)
    except ValueError as exc:
        log.error("decoys_failed", problem=str(exc))
        return 1
    write_csv(rows, args.output)
    args.unlabelled.parent.mkdir(parents=True, exist_ok=True)
    args.unlabelled.write_text("".join(f"{p}\n" for p in plain))
    counts = {c: sum(r.label == c for r in rows) for c in classes}
    log.info("decoys_labelled", images=len(images), with_decoys=len(images) - len(plain), boxes=counts,
             output=str(args.output), unlabelled=str(args.unlabelled))
    return 0
