"""``raccoon-watch export-feedback DIR``: the events a user judged, as training data.

Writes ``DIR/images/<camera>_<event id>.jpg`` (the event's best frame without the box drawn, as
``eventtrace`` stored it) and ``DIR/labels.csv`` in the CSV format ``train/`` reads
(``train/voc.py``: ``filename,width,height,class,xmin,ymin,xmax,ymax``, integer pixels of the image),
one row per judged event: ``class`` is the verdict, ``raccoon`` or ``not_raccoon`` (a site's own
false alert: a hard negative for the classifier), the box is the event's best box. Running it again
rewrites the same files (no duplicates). Events whose frame was swept by retention are skipped and
counted.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import cv2
import structlog

from raccoon_watch.store import FRAME_DIR, EventStore
from raccoon_watch.types import box_to_pixels

log = structlog.get_logger(__name__)

CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")  # = train.voc.CSV_COLUMNS


def export_feedback(store: EventStore, out: Path) -> dict[str, int]:
    """Export every event with a verdict; returns {"exported": n, "skipped_no_frame": n}."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], 0
    for event in store.events_with("feedback"):
        frame = store.media_file(event["id"], FRAME_DIR)
        image = cv2.imread(str(frame)) if frame is not None else None
        if image is None:
            skipped += 1
            continue
        height, width = image.shape[:2]
        name = f"{event['camera']}_{frame.stem}.jpg"
        shutil.copyfile(frame, images / name)
        xmin, ymin, xmax, ymax = box_to_pixels(event["box"], width, height)
        rows.append((name, width, height, event["feedback"], xmin, ymin, xmax, ymax))
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        writer.writerows(rows)
    summary = {"exported": len(rows), "skipped_no_frame": skipped}
    log.info("feedback_exported", path=str(out), **summary)
    return summary
