"""Leave one night source out: does a threshold chosen without a camera hold on that camera?

Issue 20, item 5. The per-mode thresholds (``train/classifier/stage.py``'s ``mode_thresholds``) are
chosen on validation negatives, each group holding its own budget. A user's porch is a camera none of
them came from. So for each night source S in turn (one camera-trap set, one night dataset), the
thresholds are chosen without S's raccoon-free photos, by the card's rule and groups (day photos,
night frames (the split's IR frames and ENA24), real night photos (night_extra), each at most 1 in
20 alerting per image mode), and S is then judged at them: how many of its raccoon-free photos alert, how many of its raccoons are
found (IoU >= 0.5). A source the thresholds transfer to badly is a camera like the user's that the
validation set would have misjudged.

Sources (raccoon-free unless said):
- ``day``: the split's day validation negatives (never held out: it is not a night source);
- ``mct_ir``, ``trailcam``: the split's night validation frames from ``../shared/data/night``
  (Missouri Camera Traps IR frames; the other trail-camera frames);
- ``ena24``: ENA24 validation frames;
- each ``night_extra`` repository (``alnah005`` holds the only real infrared raccoons, ``scmlee``
  one flash raccoon). Pass ``--night-extra val`` for a model that trained on night_extra's
  training sources (then only alnah005 and iWildCam are unseen), ``all`` for one that never saw it.

Records come from the daemon's own recognizer (``train.evaluate.predict_with_model``), so the
numbers are what ``detect`` and the daemon would do. The model is run once; only the thresholds
are recomputed per fold.

    python -m tools.night_loso --model models/raccoon --split WORK/split --night-extra all \
        --output var/night_loso.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from train import evaluate, metrics
from train.classifier.crops import ena24_entries
from train.classifier.stage import MIN_THRESHOLD, mode_thresholds
from train.splits import night_extra_photos
from train.voc import BoxRow

MAX_FALSE_ALERT_RATE = 0.05  # the card's budget: each group at most 1 in 20 alerting


def source_of_night_frame(path: Path) -> str:
    """The source of a ../shared/data/night frame: Missouri Camera Traps IR (``mct_``) or other trail cameras."""
    return "mct_ir" if path.name.startswith("mct_") else "trailcam"


def short_repo(repo: str) -> str:
    """'alnah005/raccoon_identification' -> 'alnah005'."""
    return repo.split("/", 1)[0]


def collect(split: Path, shared_data: Path, night_extra: str) -> tuple[dict[str, list[Path]], list[BoxRow], dict[str, str]]:
    """(raccoon-free photos per source, raccoon boxes, source of each raccoon photo's name)."""
    negatives: dict[str, list[Path]] = {"day": []}
    night_dir = (shared_data / "night").resolve()
    for path in evaluate.list_images(split / "val_negatives.txt"):
        source = source_of_night_frame(path) if night_dir in path.resolve().parents else "day"
        negatives.setdefault(source, []).append(path)
    negatives["ena24"] = [e.path for e in ena24_entries(shared_data, "val")]
    photos = night_extra_photos(shared_data, "val")
    if night_extra == "all":
        photos += night_extra_photos(shared_data, "train")
    rows: list[BoxRow] = []
    positive_source: dict[str, str] = {}
    for photo in photos:
        source = short_repo(photo.source)
        if photo.entry.is_negative:
            negatives.setdefault(source, []).append(photo.entry.path)
            continue
        import cv2

        height, width = cv2.imread(str(photo.entry.path), cv2.IMREAD_COLOR).shape[:2]
        rows += [BoxRow(str(photo.entry.path), width, height, "raccoon", *box) for box in photo.entry.boxes_px]
        positive_source[photo.entry.path.name] = source
    return {k: v for k, v in negatives.items() if v}, rows, positive_source


GROUP_OF_SOURCE = {"day": "day", "mct_ir": "night", "trailcam": "night", "ena24": "night"}
"""The card's validation group of each source (``train/classifier/stage.py``); night_extra's are "night_real"."""


def group_of(source: str) -> str:
    return GROUP_OF_SOURCE.get(source, "night_real")


def fold(records: list[dict], gt: dict, negatives: dict[str, list[str]], positives: dict[str, str],
         mode_of: dict[str, str], held_out: str | None) -> dict:
    """Thresholds by the card's groups with ``held_out``'s photos left out; that source judged at them
    (every source when ``held_out`` is None: the card's own thresholds)."""
    raw = evaluate.records_to_predictions(records)
    groups: dict[str, list[str]] = {}
    for source, names in negatives.items():
        if source != held_out:
            groups.setdefault(group_of(source), []).extend(names)
    chosen = mode_thresholds(raw, groups, mode_of, MAX_FALSE_ALERT_RATE, MIN_THRESHOLD)
    t = chosen["color"]
    preds = evaluate.records_to_predictions(evaluate.on_one_scale(records, t, chosen["ir"]))
    judged = [held_out] if held_out else sorted(set(negatives) | set(positives.values()))
    out = {"thresholds": {m: round(v, 4) for m, v in chosen.items()}, "sources": {}}
    for source in judged:
        entry: dict = {}
        names = negatives.get(source, [])
        if names:
            entry["negatives"] = len(names)
            entry["alerting"] = int(sum(metrics.image_max_scores(preds, names) >= t))
            entry["modes"] = sorted({mode_of[n] for n in names})
        source_gt = {k: v for k, v in gt.items() if v and positives.get(k) == source}
        if source_gt:
            point = metrics.operating_point(source_gt, {k: preds.get(k, []) for k in source_gt}, t, [],
                                            metrics.DEFAULT_IOU)
            entry["raccoons"] = sum(len(v) for v in source_gt.values())
            entry["found"] = int(round(point.recall * entry["raccoons"]))
        out["sources"][source] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model folder (detector + classifier)")
    parser.add_argument("--split", type=Path, required=True, help="train all's split folder (WORK/split)")
    parser.add_argument("--shared-data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--night-extra", choices=("val", "all"), default="val",
                        help="night_extra photos to judge: its validation sources, or all (a model that never saw it)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, help="write the report here as JSON")
    args = parser.parse_args(argv)

    negatives, rows, positive_source = collect(args.split, args.shared_data, args.night_extra)
    images = [Path(r.filename) for r in rows] + [p for paths in negatives.values() for p in paths]
    images = list(dict.fromkeys(images))
    records = list(evaluate.predict_with_model(args.model, images, num_threads=args.threads))
    for r in records:  # records and ground truth keyed by file name, as train/evaluate does
        r["image"] = Path(r["image"]).name
    rows = [BoxRow(Path(r.filename).name, r.width, r.height, r.label, r.xmin, r.ymin, r.xmax, r.ymax) for r in rows]
    neg_names = {g: [p.name for p in paths] for g, paths in negatives.items()}
    gt = evaluate.ground_truth(rows, [p for paths in negatives.values() for p in paths])
    mode_of = {r["image"]: r["mode"] for r in records}

    report = {"model": str(args.model), "night_extra": args.night_extra,
              "all_groups": fold(records, gt, neg_names, positive_source, mode_of, None), "held_out": {}}
    night_sources = sorted((set(neg_names) | set(positive_source.values())) - {"day"})
    for source in night_sources:
        report["held_out"][source] = fold(records, gt, neg_names, positive_source, mode_of, source)
    text = json.dumps(report, indent=1)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    print("| source held out | thresholds colour / IR | raccoon-free alerting | raccoons found |")
    print("|---|---|---|---|")
    for source, result in report["held_out"].items():
        s = result["sources"][source]
        th = result["thresholds"]
        neg = f"{s['alerting']} of {s['negatives']} ({'/'.join(s['modes'])})" if "negatives" in s else "-"
        pos = f"{s['found']} of {s['raccoons']}" if "raccoons" in s else "-"
        print(f"| {source} | {th['color']:.3f} / {th['ir']:.3f} | {neg} | {pos} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
