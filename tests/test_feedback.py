"""Feedback ("raccoon" / "not a raccoon"): the MQTT command as a table, the store, the export, the push link."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest

from raccoon_watch.config import PushoverConfig
from raccoon_watch.learning.export_feedback import export_feedback
from raccoon_watch.sinks.discovery import Topics
from raccoon_watch.sinks.mqtt_control import parse_feedback
from raccoon_watch.sinks.pushover import build_message
from raccoon_watch.store import EventStore
from raccoon_watch.types import Event, EventKind

T = Topics("rw")
CAMS = ("porch", "yard")


@pytest.mark.parametrize("topic, payload, expected", [
    ("rw/porch/feedback/set", b"not_raccoon", ("porch", None, "not_raccoon")),
    ("rw/porch/feedback/set", b"  RACCOON\n", ("porch", None, "raccoon")),
    ("rw/yard/feedback/set", b"none", ("yard", None, None)),
    ("rw/porch/feedback/set", b'{"id": "e1", "label": "not_raccoon"}', ("porch", "e1", "not_raccoon")),
    ("rw/porch/feedback/set", b'{"id": 3, "label": "raccoon"}', None),
    ("rw/porch/feedback/set", b'{"label": "raccoon"}', None),
    ("rw/porch/feedback/set", b"{broken", None),
    ("rw/porch/feedback/set", b"cat", None),
    ("rw/porch/feedback/set", b"\xff\xfe", None),
    ("rw/porch/feedback/set", b"raccoon" * 100, None),
    ("rw/garage/feedback/set", b"raccoon", None),       # not a configured camera
    ("rw/porch/detect/set", b"raccoon", None),
    ("other/porch/feedback/set", b"raccoon", None),
])
def test_parse_feedback(topic, payload, expected):
    assert parse_feedback(topic, payload, T, CAMS) == expected


def _event(eid: str, start: float, box=(0.25, 0.2, 0.75, 0.8)) -> Event:
    return Event(id=eid, kind=EventKind.END, camera="porch", label="raccoon", start_time=start, end_time=start + 5,
                 score=0.9, top_score=0.93, box=box, first_seen_ts=start)


def test_feedback_is_stored_and_cleared(tmp_path):
    store = EventStore(tmp_path)
    store.record(_event("e1", 1000.0))
    assert store.set_feedback("e1", "not_raccoon", "page")
    row = store.get_event("e1")
    assert (row.feedback, row.feedback_source) == ("not_raccoon", "page")
    assert store.set_feedback("e1", None, "mqtt") and store.get_event("e1").feedback is None
    assert not store.set_feedback("nope", "raccoon", "page")
    with pytest.raises(ValueError):
        store.set_feedback("e1", "cat", "page")


def test_export_writes_the_train_csv_with_the_clean_frames(tmp_path):
    store = EventStore(tmp_path / "var")
    frame = np.full((200, 400, 3), 90, np.uint8)
    for eid, label in (("e1", "raccoon"), ("e2", "not_raccoon"), ("e3", None)):
        store.record(_event(eid, 1000.0 + len(eid)))
        store.write_frame("porch", eid, cv2.imencode(".jpg", frame)[1].tobytes())
        if label:
            store.set_feedback(eid, label, "page")
    store.record(_event("e4", 2000.0))  # a verdict but no frame (swept): skipped and counted
    store.set_feedback("e4", "raccoon", "page")
    out = tmp_path / "export"
    summary = export_feedback(store, out)
    assert summary == {"exported": 2, "skipped_no_frame": 1}
    rows = list(csv.DictReader((out / "labels.csv").open()))
    assert [r["class"] for r in rows] == ["raccoon", "not_raccoon"]
    first = rows[0]
    # the box is the event's normalised box in pixels of the stored frame
    assert (first["width"], first["height"], first["xmin"], first["ymin"], first["xmax"], first["ymax"]) == \
        ("400", "200", "100", "40", "300", "160")
    assert (out / "images" / first["filename"]).is_file()
    assert export_feedback(store, out) == summary  # idempotent: the same files again, no duplicates
    assert len(list(csv.DictReader((out / "labels.csv").open()))) == 2


def test_pushover_links_to_the_event_page_with_a_public_url():
    cfg = PushoverConfig(token="t" * 30, user="u" * 30)
    event = _event("17000.5-ab/c", 1000.0)
    assert build_message(cfg, event)["url"] is None
    meta = build_message(cfg, event, "https://cams.example.net/rw")
    assert meta["url"] == "https://cams.example.net/rw/events/17000.5-ab%2Fc"
    own = PushoverConfig(token="t" * 30, user="u" * 30, url="https://mine.example")
    assert build_message(own, event, "https://cams.example.net")["url"] == "https://mine.example"


def test_export_columns_are_the_ones_train_reads():
    from raccoon_watch.learning.export_feedback import CSV_COLUMNS as EXPORTED
    from train.voc import CSV_COLUMNS

    assert EXPORTED == CSV_COLUMNS
