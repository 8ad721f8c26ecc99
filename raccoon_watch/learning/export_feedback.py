"""``raccoon-watch export-feedback DIR``: the events a user judged, as training data.

Writes ``DIR/images/<camera>_<event id>.jpg`` (the event's best frame without the box drawn, as
``eventtrace`` stored it) and ``DIR/labels.csv`` in the CSV format ``train/`` reads
(``train/voc.py``: ``filename,width,height,class,xmin,ymin,xmax,ymax``, integer pixels of the image),
one row per judged event: ``class`` is the verdict, ``raccoon`` or ``not_raccoon`` (a site's own
false alert: a hard negative for the classifier), the box is the event's best box. Beside it
``DIR/events.csv`` (``filename,event_id,camera,start_time``, wall-clock seconds) says which event
each image is and when it happened, so ``raccoon-watch retrain`` can hold out whole nights
(``raccoon_watch.learning.feedback``). Running it again rewrites the same files (no duplicates). Events
whose frame was swept by retention are skipped, counted, and logged with their id
(``feedback_export_skipped``). Nothing is ever deleted from DIR.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import structlog

from raccoon_watch.learning.feedback import EVENT_COLUMNS, EVENTS_CSV
from raccoon_watch.store import EventStore
from raccoon_watch.store.retention import FRAME_DIR
from raccoon_watch.types import box_to_pixels

log = structlog.get_logger(__name__)

CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")  # = train.voc.CSV_COLUMNS


@dataclass(frozen=True, slots=True)
class ExportReport:
    exported: int
    skipped: tuple[tuple[str, str], ...]  # (event id, why)

    def summary(self) -> dict[str, int]:
        return {"exported": self.exported, "skipped_no_frame": len(self.skipped)}


def export_feedback(store: EventStore, out: Path) -> dict[str, int]:
    """Export every event with a verdict; returns {"exported": n, "skipped_no_frame": n}."""
    return export_feedback_report(store, out).summary()


def export_feedback_report(store: EventStore, out: Path) -> ExportReport:
    """``export_feedback``, also naming each skipped event and why."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows, events, skipped = [], [], []
    for event in store.events_with("feedback"):
        frame = store.media_file(event.id, FRAME_DIR)
        image = cv2.imread(str(frame)) if frame is not None else None
        if image is None:
            why = "its frame is gone (swept by retention)" if frame is None else "its frame does not decode"
            skipped.append((event.id, why))
            log.warning("feedback_export_skipped", event_id=event.id, reason=why)
            continue
        height, width = image.shape[:2]
        name = f"{event.camera}_{frame.stem}.jpg"
        shutil.copyfile(frame, images / name)
        xmin, ymin, xmax, ymax = box_to_pixels(event.box, width, height)
        rows.append((name, width, height, event.feedback, xmin, ymin, xmax, ymax))
        events.append((name, event.id, event.camera, repr(float(event.start_time))))
    for path, header, body in ((out / "labels.csv", CSV_COLUMNS, rows), (out / EVENTS_CSV, EVENT_COLUMNS, events)):
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(body)
    report = ExportReport(len(rows), tuple(skipped))
    log.info("feedback_exported", path=str(out), **report.summary())
    return report
