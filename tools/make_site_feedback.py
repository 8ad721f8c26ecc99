"""A porch camera's feedback after some nights, made from real photos, to measure ``raccoon-watch retrain``.

    python -m tools.make_site_feedback --out var/site_feedback [--visits 40] [--nights 5] [--raccoons 8]

The site: the empty porch scene of ``raccoon_watch.demo`` (640x360) and its cat, ``CAT`` (the one
cat photo of ../shared/data/negatives whose cat the shipped classifier takes for a raccoon here).
Each visit places the cat photo at another size and place, with that night's light (brightness
0.7..1.1), and stores the frame as the daemon stores an event's clean frame (JPEG 92). Visits the
shipped model ALERTS on (final score >= the deployed threshold, as the daemon runs it) are the
site's false alerts, marked ``not_raccoon`` with the alerting box; visits under the threshold never
reached the user and are left out. Raccoon visits are photos of the dataset's TRAINING split (never
the test split) placed the same way; the alerting ones are marked ``raccoon``. Visit k happens on
night k % nights (22:00 + 10 min steps), so the retrain's split by night holds out whole nights: the
same cat, elsewhere in the frame, under another night's light. Writes the layout of
``export-feedback`` (``images/``, ``labels.csv``, ``events.csv``) and ``made.json`` (every visit, score).
"""

from __future__ import annotations

import argparse
import csv
import json
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import numpy as np

from raccoon_watch.config import DetectorConfig, shared_dir
from raccoon_watch.demo import empty_scene
from raccoon_watch.learning.feedback import CSV_COLUMNS, EVENT_COLUMNS, EVENTS_CSV, LABELS_CSV
from raccoon_watch.recognition.detectors import create_recognizer
from raccoon_watch.types import box_to_pixels

REPO = Path(__file__).resolve().parent.parent
SIZE = (640, 360)
FIRST_NIGHT = datetime(2026, 11, 2, 22, 0, 0)


CAT = "kdvc_cat.473.jpg"
JPEG_QUALITY = 92  # = raccoon_watch.review.eventtrace's clean frame


def place(background: np.ndarray, photo: np.ndarray, rng: np.random.Generator, light: float) -> np.ndarray:
    """``photo`` scaled to 45..95 % of the frame height, at a random place, the frame lit by ``light``."""
    height, width = background.shape[:2]
    h = int(height * rng.uniform(0.45, 0.95))
    w = min(width, int(photo.shape[1] * h / photo.shape[0]))
    x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    out = background.copy()
    out[y:y + h, x:x + w] = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
    out = np.clip(out.astype(np.float32) * light, 0, 255).astype(np.uint8)
    return cv2.imdecode(cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1], cv2.IMREAD_COLOR)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.make_site_feedback", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--shared", type=Path, default=shared_dir())
    p.add_argument("--model", type=Path, default=REPO / "models" / "raccoon")
    p.add_argument("--visits", type=int, default=40, help="cat visits")
    p.add_argument("--nights", type=int, default=5)
    p.add_argument("--raccoons", type=int, default=8, help="raccoon visits (training-split photos)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(args: argparse.Namespace) -> int:
    from train.voc import read_csv

    data = args.shared / "data"
    cat = cv2.imread(str(data / "negatives" / CAT))
    train_names = sorted({r.filename for r in read_csv(data / "raccoon_dataset" / "train_labels.csv")})
    rng = np.random.default_rng(args.seed)
    raccoons = [data / "raccoon_dataset" / "images" / n for n in rng.permutation(train_names)[:args.raccoons]]
    lights = rng.uniform(0.7, 1.1, args.nights)
    recognizer = create_recognizer(DetectorConfig(model=args.model, backend="tflite", num_threads=2))
    threshold = float(recognizer.threshold)
    empty = empty_scene(args.shared, SIZE)
    (args.out / "images").mkdir(parents=True, exist_ok=True)
    visits = [(cat, CAT, "not_raccoon") for _ in range(args.visits)]
    visits += [(cv2.imread(str(p)), p.name, "raccoon") for p in raccoons]
    made, labels, events = [], [], []
    for k, (photo, source, label) in enumerate(visits):
        night = k % args.nights
        frame = place(empty, photo, rng, float(lights[night]))
        best = max(recognizer.recognize([frame])[0], key=lambda d: d.score, default=None)
        alerts = bool(best is not None and best.score >= threshold)
        made.append({"visit": k, "photo": source, "label": label, "night": night,
                     "score": round(best.score, 4) if best else 0.0, "alerts": alerts})
        if not alerts:
            continue  # the user never saw it: no event, no feedback
        start = (FIRST_NIGHT + timedelta(days=night, minutes=10 * (k // args.nights))).timestamp()
        event_id = f"{start:.6f}-v{k:03d}"
        name = f"porch_{event_id}.jpg"
        cv2.imwrite(str(args.out / "images" / name), frame, [cv2.IMWRITE_JPEG_QUALITY, 100])
        labels.append((start, (name, SIZE[0], SIZE[1], label, *box_to_pixels(best.box, SIZE[0], SIZE[1]))))
        events.append((start, (name, event_id, "porch", repr(start))))
    recognizer.close()
    for file, header, rows in ((LABELS_CSV, CSV_COLUMNS, labels), (EVENTS_CSV, EVENT_COLUMNS, events)):
        with open(args.out / file, "w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(row for _, row in sorted(rows))  # oldest first, as export-feedback writes them
    summary = {"threshold": threshold, "cat_visits": args.visits,
               "cat_visits_alerting": sum(e["alerts"] for e in made if e["label"] == "not_raccoon"),
               "raccoon_visits": len(raccoons), "raccoon_visits_alerting": sum(e["alerts"] for e in made if e["label"] == "raccoon"),
               "events": len(labels), "nights": args.nights, "visits": made}
    (args.out / "made.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k != "visits"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
