"""Alerts and detections through the store and the real sinks: a detection is stored and logged, never
pushed; an upgraded detection pushes once, at its upgrade. Real mosquitto, the local fake Pushover."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import pytest
import structlog

from raccoon_watch.config import MqttConfig, PushoverConfig
from raccoon_watch.sinks.log import LogSink
from raccoon_watch.sinks.mqtt import MqttSink
from raccoon_watch.sinks.pushover import PushoverSink, should_push
from raccoon_watch.store import EventStore
from raccoon_watch.types import Event, EventKind, Severity
from testkit.fake_pushover import VALID_TOKEN, VALID_USER, FakePushover
from tests.fixtures.pushover import make_event
from tests.waiting import wait_until

S, U, E = EventKind.START, EventKind.UPDATE, EventKind.END
A, D = Severity.ALERT, Severity.DETECTION


def ev(kind: EventKind, event_id: str, severity: Severity, start: float = 1_700_000_000.0, **kw: object) -> Event:
    return replace(make_event(kind, event_id=event_id, start_time=start, frame_ts=start + 1.0, **kw),
                   severity=severity)


def visit(event_id: str, upgraded: bool) -> list[Event]:
    """What the debounce emits for one detection: START, UPDATE, (the upgrade's START), END."""
    out = [ev(S, event_id, D), ev(U, event_id, D, score=0.65)]
    if upgraded:
        out.append(ev(S, event_id, A, score=0.9))
    out.append(ev(E, event_id, A if upgraded else D, snapshot=False))
    return out


PCFG = {"token": VALID_TOKEN, "user": VALID_USER, "timeout_s": 0.5}


@pytest.mark.parametrize(
    "kind, severity, in_cooldown, expected",
    [
        (S, A, False, (True, "push")),
        (S, D, False, (False, "detection")),  # a detection is never pushed
        (S, D, True, (False, "detection")),
        (S, A, True, (False, "cooldown")),  # an upgrade in an alert's cooldown: as any alert
        (U, A, False, (False, "not_start")),
        (E, D, False, (False, "not_start")),
    ],
)
def test_should_push_table(kind, severity, in_cooldown, expected):
    cfg = PushoverConfig.model_validate({**PCFG, "api_url": "http://127.0.0.1:9/1/"})
    event = replace(make_event(kind, in_cooldown=in_cooldown, snapshot=False), severity=severity)
    assert should_push(cfg, event) == expected


@pytest.fixture()
def store(tmp_path: Path) -> EventStore:
    s = EventStore(tmp_path / "var", outbox_max=1000)
    yield s
    s.close()


def test_pushover_pushes_an_upgraded_detection_once_and_a_detection_never(fake_pushover: FakePushover, store):
    cfg = PushoverConfig.model_validate({**PCFG, "api_url": fake_pushover.url})
    sink = PushoverSink(cfg, store, backoff_base=0.05, backoff_max=0.2, poll_s=0.05)
    sink.start()
    try:
        for event in visit("only-seen", upgraded=False) + visit("upgraded", upgraded=True):
            store.record(event)
            sink.publish(event)
        fake_pushover.wait_for(1, timeout=10)
        time.sleep(0.5)
    finally:
        sink.stop()
    assert len(fake_pushover.received) == 1 and "(score 0.90)" in fake_pushover.received[0].fields["message"]
    assert store.outbox_state("pushover", "upgraded") == "done"  # the outbox key is the event id
    assert store.outbox_state("pushover", "only-seen") is None  # never even queued


def test_mqtt_publishes_nothing_of_a_detection_and_an_upgrade_as_a_new_event(mosquitto, recorder, store):
    broker = mosquitto()
    rec = recorder(broker, "rw/#")
    cfg = MqttConfig.model_validate({"host": broker.host, "port": broker.port, "topic_prefix": "rw",
                                     "client_id": "rw-severity", "discovery": False, "stats_interval": 3600})
    sink = MqttSink(cfg, ["front_door"], ["raccoon"], store, poll_s=0.05, reconnect_max=1)
    sink.start()
    try:
        for event in visit("only-seen", upgraded=False) + visit("upgraded", upgraded=True):
            store.record(event)
            sink.publish(event)
        rec.wait(lambda ms: any(m.topic == "rw/events" and json.loads(m.payload)["type"] == "end" for m in ms))
        # a verdict on each: only the alert's is published (Home Assistant never saw the detection)
        for event_id in ("only-seen", "upgraded"):
            store.set_feedback(event_id, "raccoon", "page")
            sink.feedback_changed(event_id, "raccoon", "page")
        rec.wait(lambda ms: any(m.topic == "rw/front_door/feedback" for m in ms))
        assert wait_until(lambda: store.pending_count("mqtt") == 0)
        time.sleep(0.5)
    finally:
        sink.stop()
    bodies = [json.loads(m.payload) for m in rec.on("rw/events")]
    assert [(b["type"], b["after"]["id"]) for b in bodies] == [("new", "upgraded"), ("end", "upgraded")]
    assert "severity" not in bodies[0]["after"]  # an alert's body is what it always was
    assert bodies[0]["after"]["score"] == 0.9  # the upgrade's, the first this topic hears of it
    assert [m.payload for m in rec.on("rw/front_door/raccoon/state")] == [b"ON", b"OFF"]
    assert [json.loads(m.payload)["id"] for m in rec.on("rw/front_door/event")] == ["upgraded"]
    assert [json.loads(m.payload)["id"] for m in rec.on("rw/front_door/feedback")] == ["upgraded"]
    assert all("only-seen" not in m.payload.decode(errors="replace") for m in rec.messages)


def test_log_lines_carry_severity():
    sink = LogSink()
    with structlog.testing.capture_logs() as logs:
        for event in visit("v", upgraded=True):
            sink.publish(event)
    assert [(r["event"], r["severity"]) for r in logs] == [
        ("event_started", "detection"), ("event_updated", "detection"),
        ("event_started", "alert"), ("event_ended", "alert")]
    assert len({r["id"] for r in logs}) == 1


# --- the store: a column, its migration, a filter ---------------------------------------------------

FIRST_SCHEMA = """
CREATE TABLE events (id TEXT PRIMARY KEY, camera TEXT NOT NULL, label TEXT NOT NULL, start_time REAL NOT NULL,
    end_time REAL, top_score REAL NOT NULL, box TEXT NOT NULL, in_cooldown INTEGER NOT NULL, snapshot TEXT,
    updated REAL NOT NULL);
INSERT INTO events VALUES ('old-1', 'porch', 'raccoon', 100.0, 110.0, 0.9, '[0.1, 0.1, 0.5, 0.5]', 0, NULL, 110.0);
"""
BEFORE_SEVERITY = FIRST_SCHEMA + """
ALTER TABLE events ADD COLUMN clip TEXT; ALTER TABLE events ADD COLUMN clip_state TEXT;
ALTER TABLE events ADD COLUMN clip_reason TEXT; ALTER TABLE events ADD COLUMN frame TEXT;
ALTER TABLE events ADD COLUMN scores TEXT; ALTER TABLE events ADD COLUMN feedback TEXT;
ALTER TABLE events ADD COLUMN feedback_source TEXT; ALTER TABLE events ADD COLUMN feedback_time REAL;
ALTER TABLE events ADD COLUMN model_version TEXT;
UPDATE events SET feedback = 'not_raccoon', model_version = 'abcdef012345';
"""


@pytest.mark.parametrize("schema", [FIRST_SCHEMA, BEFORE_SEVERITY], ids=["first", "before_severity"])
def test_an_older_database_gets_the_column_and_its_events_are_alerts(tmp_path, schema):
    var = tmp_path / "var"
    var.mkdir()
    with sqlite3.connect(var / "events.db") as db:
        db.executescript(schema)
    store = EventStore(var)
    try:
        row = store.get_event("old-1")
        assert row is not None and row.severity == "alert" and row.top_score == 0.9
        if schema is BEFORE_SEVERITY:
            assert (row.feedback, row.model_version) == ("not_raccoon", "abcdef012345")  # kept
        store.record(ev(S, "new-1", D, start=200.0))
        assert [r.id for r in store.list_events(severity="detection")[0]] == ["new-1"]
        assert [r.id for r in store.list_events(severity="alert")[0]] == ["old-1"]
    finally:
        store.close()
    store = EventStore(var)  # opening it again changes nothing
    try:
        assert store.list_events()[1] == 2 and store.get_event("new-1").severity == "detection"
    finally:
        store.close()


def test_listing_by_severity_and_an_upgrade_in_the_store(store):
    for event in visit("d1", upgraded=False):
        store.record(replace(event, start_time=10.0, camera="porch"))
    for event in visit("u1", upgraded=True)[:2]:
        store.record(replace(event, start_time=20.0, camera="porch"))
    store.record(replace(make_event(S, event_id="a1", start_time=30.0, camera="porch")))
    assert store.get_event("u1").severity == "detection"
    assert store.latest_event_id("porch") == "a1"
    for event in visit("u1", upgraded=True)[2:]:
        store.record(replace(event, start_time=20.0, camera="porch"))
    assert store.get_event("u1").severity == "alert"
    store.record(replace(ev(U, "u1", D), start_time=20.0, camera="porch"))  # a late stale message never downgrades
    assert store.get_event("u1").severity == "alert"
    rows, total = store.list_events(severity="alert")
    assert [r.id for r in rows] == ["a1", "u1"] and total == 2
    rows, total = store.list_events(severity="detection", camera="porch")
    assert [r.id for r in rows] == ["d1"] and total == 1
    assert store.list_events()[1] == 3
    store.record(replace(ev(S, "d2", D), start_time=40.0, camera="porch"))
    assert store.latest_event_id("porch") == "d2"
    assert store.latest_event_id("porch", "alert") == "a1"  # what Home Assistant's "latest event" means
    with pytest.raises(ValueError, match="severity must be one of"):
        store.list_events(severity="warning")


def test_a_detection_marked_raccoon_is_a_positive_for_retrain(tmp_path, store):
    """The export that ``retrain`` reads takes every judged event, detections too: a raccoon the daemon
    only saw as a detection is taught as a raccoon, not only a false alarm as a not-raccoon."""
    import cv2
    import numpy as np

    from raccoon_watch.learning.export_feedback import export_feedback_report
    from raccoon_watch.learning.feedback import read_feedback

    frame = cv2.imencode(".jpg", np.full((360, 640, 3), 90, np.uint8))[1].tobytes()
    for event_id, severity, verdict in (("missed", D, "raccoon"), ("false-alarm", A, "not_raccoon"),
                                        ("unjudged", D, None)):
        store.record(ev(E, event_id, severity))
        store.write_frame("front_door", event_id, frame)
        if verdict:
            store.set_feedback(event_id, verdict, "page")
    report = export_feedback_report(store, tmp_path / "feedback")
    assert report.exported == 2 and report.skipped == ()
    samples, problems = read_feedback(tmp_path / "feedback")
    assert problems == []
    assert sorted((s.event_id, s.label, s.is_raccoon) for s in samples) == [
        ("false-alarm", "not_raccoon", False), ("missed", "raccoon", True)]
    missed = next(s for s in samples if s.event_id == "missed")
    assert missed.box == pytest.approx((0.25, 0.25, 0.75, 0.75), abs=0.01)  # the detection's own box
