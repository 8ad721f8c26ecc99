"""MqttSink end to end through a real mosquitto broker (tests/fixtures/mqtt.py)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from raccoon_watch.config import MqttConfig
from raccoon_watch.service.health import health_report
from raccoon_watch.sinks.discovery import Topics
from raccoon_watch.sinks.mqtt import MqttSink, event_messages
from raccoon_watch.sinks.mqtt_control import parse_command, parse_command_topic
from raccoon_watch.store import EventStore
from raccoon_watch.types import CaptureSnapshot, EventKind, PipelineStats, RouterSnapshot, WorkerSnapshot
from testkit.ports import free_port
from tests.fixtures.mqtt import BROKER_PASSWORD, BROKER_USER, Broker
from tests.fixtures.pushover import make_event
from tests.waiting import wait_until

pytestmark = pytest.mark.mqtt

P = "raccoon_watch"
TOPICS = Topics(P)
CAMS = ["front_door", "garden"]


def mcfg(broker: Broker | None, **kw: object) -> MqttConfig:
    data: dict[str, object] = {
        "host": "127.0.0.1",
        "port": broker.port if broker else free_port(),
        "client_id": f"rw-test-{uuid.uuid4().hex[:6]}",
        "discovery": False,
        "stats_interval": 3600,
    }
    data.update(kw)
    return MqttConfig.model_validate(data)


def make_sink(cfg: MqttConfig, store: EventStore, **kw: object) -> MqttSink:
    kw.setdefault("reconnect_max", 1)
    return MqttSink(cfg, CAMS, ["raccoon"], store, poll_s=0.05, **kw)  # type: ignore[arg-type]


def event_types(rec, event_id: str | None = None) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    out = []
    for m in rec.on(f"{P}/events"):
        body = json.loads(m.payload)
        if event_id is None or body["after"]["id"] == event_id:
            out.append((body["type"], body["after"]["id"]))
    return out


# --- pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"ON", True), (b"on", True), (b" On \n", True), (b"OFF", False), (b"off", False), ("Off", False),
        (b"", None), (b"1", None), (b"true", None), (b"ONN", None), (b"O N", None), (b"\xff\xfe", None),
        (b"ON" + b" " * 100, None), (b'{"state": "ON"}', None),
    ],
)
def test_parse_command_table(payload: bytes | str, expected: bool | None) -> None:
    assert parse_command(payload) is expected


@given(st.binary(max_size=64))
def test_parse_command_fuzz_never_raises(payload: bytes) -> None:
    result = parse_command(payload)
    assert result is None or payload.strip().upper() in (b"ON", b"OFF")


@pytest.mark.parametrize(
    ("topic", "camera"),
    [
        (f"{P}/front_door/detect/set", "front_door"),
        (f"{P}/garden/detect/set", "garden"),
        (f"{P}/attic/detect/set", None),
        (f"{P}/front_door/detect/state", None),
        (f"{P}/front_door/x/detect/set", None),
        (f"other/front_door/detect/set", None),
    ],
)
def test_parse_command_topic_table(topic: str, camera: str | None) -> None:
    assert parse_command_topic(topic, TOPICS, CAMS) == camera


def test_event_messages_start_update_end() -> None:
    start = make_event(EventKind.START, event_id="e1")
    msgs = event_messages(start, None, TOPICS)
    assert [m.part for m in msgs] == ["events", "count", "state", "event", "snapshot"]
    assert {m.part: m.retain for m in msgs} == {
        "events": False, "count": True, "state": True, "event": False, "snapshot": True}
    body = json.loads(msgs[0].payload)
    assert body["type"] == "new" and body["before"] == body["after"] and body["after"]["id"] == "e1"
    assert json.loads(msgs[3].payload)["event_type"] == "raccoon"
    end = make_event(EventKind.END, event_id="e1", snapshot=False)
    parts = {m.part: m.payload for m in event_messages(end, start.to_dict(), TOPICS)}
    assert parts["count"] == b"0" and parts["state"] == b"OFF" and "snapshot" not in parts
    assert json.loads(parts["events"])["before"]["end_time"] is None


class _FakeClient:
    """Stands in for the network only in the pure command test (no broker needed)."""

    def __init__(self) -> None:
        self.published: list[tuple[str, object]] = []

    def publish(self, topic: str, payload: object, qos: int = 0, retain: bool = False) -> None:
        self.published.append((topic, payload))


def test_command_handler_fuzz_never_crashes_or_changes_state_wrongly(tmp_path: Path) -> None:
    calls: list[tuple[str, bool]] = []
    sink = MqttSink(mcfg(None), CAMS, ["raccoon"], EventStore(tmp_path, outbox_max=100),
                    commands=lambda cam, on: calls.append((cam, on)))
    fake = _FakeClient()
    sink.client = fake  # type: ignore[assignment]

    @settings(max_examples=300, deadline=None)
    @given(
        topic=st.one_of(st.text(max_size=40), st.sampled_from([f"{P}/front_door/detect/set", f"{P}/garden/detect/set"])),
        payload=st.binary(max_size=48),
    )
    def check(topic: str, payload: bytes) -> None:
        calls.clear()
        fake.published.clear()
        before = dict(sink.control.detect)
        sink.control.handle_command(topic, payload)
        camera = parse_command_topic(topic, TOPICS, CAMS)
        wanted = parse_command(payload) if camera else None
        if wanted is None:
            assert calls == [] and fake.published == [] and sink.control.detect == before
        else:
            assert calls == [(camera, wanted)] and sink.control.detect[camera] is wanted
            assert fake.published == [(TOPICS.detect_state(camera), "ON" if wanted else "OFF")]

    check()


# --- with the broker -----------------------------------------------------------------------


@pytest.fixture()
def store(tmp_path: Path) -> EventStore:
    return EventStore(tmp_path / "var", outbox_max=1000)


def test_event_start_end_frigate_format_and_jpeg_snapshot(mosquitto, recorder, store) -> None:  # type: ignore[no-untyped-def]
    broker = mosquitto()
    rec = recorder(broker, f"{P}/#")
    sink = make_sink(mcfg(broker), store)
    sink.start()
    try:
        start = make_event(EventKind.START, event_id="ev1", score=0.8)
        sink.publish(start)
        update = make_event(EventKind.UPDATE, event_id="ev1", start_time=start.start_time, score=0.95,
                            frame_ts=start.start_time + 1, count=2)
        sink.publish(update)
        end = make_event(EventKind.END, event_id="ev1", start_time=start.start_time, score=0.95, snapshot=False)
        sink.publish(end)
        rec.wait(lambda ms: len(event_types(rec)) == 3)
        assert wait_until(lambda: store.pending_count("mqtt") == 0)
    finally:
        sink.stop()

    bodies = [json.loads(m.payload) for m in rec.on(f"{P}/events")]
    assert [b["type"] for b in bodies] == ["new", "update", "end"]
    assert bodies[1]["before"]["score"] == 0.8 and bodies[1]["after"]["score"] == 0.95
    for b in bodies:
        assert {"id", "camera", "label", "score", "top_score", "box", "start_time", "end_time", "has_snapshot"} <= set(b["after"])
        assert b["after"]["camera"] == "front_door" and b["after"]["label"] == "raccoon"
    assert bodies[2]["after"]["end_time"] is not None
    assert [m.payload for m in rec.on(f"{P}/front_door/raccoon")] == [b"1", b"2", b"0"]
    assert [m.payload for m in rec.on(f"{P}/front_door/raccoon/state")] == [b"ON", b"OFF"]
    fired = [json.loads(m.payload) for m in rec.on(f"{P}/front_door/event")]
    assert len(fired) == 1 and fired[0]["event_type"] == "raccoon" and fired[0]["id"] == "ev1"
    assert [m.payload for m in rec.on(f"{P}/available")][:1] == [b"online"]
    # clean shutdown: the sink's last word; it reaches the recorder a moment after stop() returns
    rec.wait(lambda ms: [m.payload for m in ms if m.topic == f"{P}/available"][-1:] == [b"offline"], timeout=10)
    assert rec.on(f"{P}/available")[-1].payload == b"offline"

    # a late subscriber gets the retained snapshot (the update's, the better frame) as a valid JPEG
    late = recorder(broker, f"{P}/front_door/raccoon/snapshot", f"{P}/front_door/raccoon/state", f"{P}/available")
    snap = late.wait_topic(f"{P}/front_door/raccoon/snapshot")[0]
    assert snap.retain and snap.payload == update.snapshot_jpeg
    img = cv2.imdecode(np.frombuffer(snap.payload, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (48, 64, 3)
    state = late.wait_topic(f"{P}/front_door/raccoon/state")[0]
    assert state.retain and state.payload == b"OFF"
    assert late.wait_topic(f"{P}/available")[0].payload == b"offline"


def test_broker_stopped_mid_event_loses_nothing_and_keeps_order(mosquitto, recorder, store) -> None:  # type: ignore[no-untyped-def]
    broker = mosquitto(persistence=True)
    rec = recorder(broker, f"{P}/events", persistent=True)
    sink = make_sink(mcfg(broker), store)
    sink.start()
    try:
        first = make_event(EventKind.START, event_id="a")
        sink.publish(first)
        rec.wait(lambda ms: len(event_types(rec)) == 1)
        broker.stop()
        assert wait_until(lambda: not sink.connected, 5)
        t0 = time.time()
        during = [
            make_event(EventKind.UPDATE, event_id="a", start_time=first.start_time, frame_ts=t0 + 1),
            make_event(EventKind.END, event_id="a", start_time=first.start_time, snapshot=False),
            make_event(EventKind.START, event_id="b", camera="garden"),
            make_event(EventKind.END, event_id="b", camera="garden", snapshot=False),
        ]
        for ev in during:
            sink.publish(ev)  # returns at once while the broker is down
        assert time.time() - t0 < 0.5
        assert store.pending_count("mqtt") > 0
        time.sleep(0.5)
        broker.start()
        rec.wait(lambda ms: len(event_types(rec)) >= 5, timeout=20)
        assert wait_until(lambda: store.pending_count("mqtt") == 0, 10)
        time.sleep(0.3)
    finally:
        sink.stop()
    assert event_types(rec) == [("new", "a"), ("update", "a"), ("end", "a"), ("new", "b"), ("end", "b")]


def test_restart_resends_pending_exactly_once(mosquitto, recorder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Stand-in for kill -9 + restart: rows left pending by one sink instance are sent by the next."""
    db = tmp_path / "var"
    down = make_sink(mcfg(None), EventStore(db, outbox_max=1000))  # nothing listens on its port
    down.start()
    events = [make_event(EventKind.START, event_id=f"k{i}") for i in range(3)]
    for ev in events:
        down.publish(ev)
    down.stop()
    assert EventStore(db, outbox_max=1000).pending_count("mqtt") == 3 * 5

    broker = mosquitto()
    rec = recorder(broker, f"{P}/events", f"{P}/front_door/event")
    cfg = mcfg(broker)
    fresh = make_sink(cfg, EventStore(db, outbox_max=1000))
    fresh.start()
    try:
        for ev in events:  # the router replaying the same events is a no-op
            fresh.publish(ev)
        rec.wait(lambda ms: len(event_types(rec)) == 3)
        assert wait_until(lambda: fresh.store.pending_count("mqtt") == 0)
        time.sleep(0.3)
    finally:
        fresh.stop()
    again = make_sink(cfg, EventStore(db, outbox_max=1000))
    again.start()
    time.sleep(0.5)
    again.stop()
    assert event_types(rec) == [("new", f"k{i}") for i in range(3)]
    assert len(rec.on(f"{P}/front_door/event")) == 3


def test_tls_with_password_and_wrong_password(mosquitto, recorder, tls_material, store) -> None:  # type: ignore[no-untyped-def]
    broker = mosquitto(tls=tls_material, password=True)
    rec = recorder(broker, f"{P}/#", tls=tls_material, username=BROKER_USER, password=BROKER_PASSWORD)
    tls = {"ca_file": str(tls_material.cert)}
    good = make_sink(mcfg(broker, username=BROKER_USER, password=BROKER_PASSWORD, tls=tls), store)
    good.start()
    try:
        good.publish(make_event(EventKind.START, event_id="tls1"))
        rec.wait(lambda ms: len(event_types(rec)) == 1)
    finally:
        good.stop()

    bad = make_sink(mcfg(broker, username=BROKER_USER, password="wrong-password", tls=tls),
                    EventStore(store.path / "bad", outbox_max=100))
    with structlog.testing.capture_logs() as logs:
        bad.start()
        try:
            bad.publish(make_event(EventKind.START, event_id="tls2"))
            assert wait_until(lambda: any(e["event"] == "mqtt_connect_refused" for e in logs), 10)
            assert not bad.connected
            assert bad.store.pending_count("mqtt") == 5  # kept for when the password is fixed
        finally:
            t0 = time.monotonic()
            bad.stop()
            assert time.monotonic() - t0 < 2.5
    assert "wrong-password" not in repr(logs)
    assert event_types(rec) == [("new", "tls1")]


def test_commands_switch_detection_and_malformed_ones_are_ignored(mosquitto, recorder, store) -> None:  # type: ignore[no-untyped-def]
    broker = mosquitto()
    rec = recorder(broker, f"{P}/+/detect/state")
    calls: list[tuple[str, bool]] = []
    sink = make_sink(mcfg(broker), store, commands=lambda cam, on: calls.append((cam, on)))
    sink.start()
    try:
        assert wait_until(lambda: sink.connected)
        rec.wait(lambda ms: len(ms) >= 2)  # initial retained ON for both cameras
        rec.clear()
        with structlog.testing.capture_logs() as logs:
            for topic, payload in [
                (f"{P}/front_door/detect/set", b"garbage"),
                (f"{P}/front_door/detect/set", b"\xff\x00"),
                (f"{P}/front_door/detect/set", b""),
                (f"{P}/attic/detect/set", b"OFF"),
                (f"{P}/front_door/detect/set", b"x" * 10000),
                (f"{P}/front_door/detect/set", b"off"),
            ]:
                rec.client.publish(topic, payload, qos=1)
            rec.wait(lambda ms: any(m.payload == b"OFF" for m in ms))
        time.sleep(0.2)
        assert sink.connected
    finally:
        sink.stop()
    assert calls == [("front_door", False)]
    ignored = [e for e in logs if e["event"] == "mqtt_command_ignored"]
    assert len(ignored) == 5
    states = [(m.topic, m.payload, m.retain) for m in rec.messages]
    assert states == [(f"{P}/front_door/detect/state", b"OFF", False)]  # live delivery: retain flag off


def test_stats_published_and_last_will_on_abrupt_disconnect(mosquitto, recorder, store) -> None:  # type: ignore[no-untyped-def]
    broker = mosquitto()
    rec = recorder(broker, f"{P}/stats", f"{P}/available")
    stats = PipelineStats(mono=10.0, cameras=(CaptureSnapshot("front_door", frames_dropped=3),),
                          workers=(WorkerSnapshot("detector-0", last_inference_ms=21.5),),
                          router=RouterSnapshot(processed={"front_door": 50}))
    sink = make_sink(mcfg(broker, stats_interval=0.2, keepalive=5), store, stats=lambda: stats)
    sink.start()
    try:
        got = rec.wait_topic(f"{P}/stats", n=2, timeout=10)
        body = json.loads(got[0].payload)
        assert body["cameras"]["front_door"]["inference_ms"] == 21.5 and "mqtt" in body
        # drop the TCP connection without DISCONNECT: the broker publishes the will, then paho reconnects
        sink.client.socket().close()
        rec.wait(lambda ms: [m.payload for m in ms if m.topic == f"{P}/available"][-2:] == [b"offline", b"online"],
                 timeout=15)
    finally:
        sink.stop()


def test_wrong_credentials_make_the_sink_report_failing_once_not_endless_warnings(mosquitto, store) -> None:  # type: ignore[no-untyped-def]
    broker = mosquitto(password=True)
    bad = make_sink(mcfg(broker, username=BROKER_USER, password="wrong-password"), store)
    with structlog.testing.capture_logs() as logs:
        bad.start()
        try:
            assert wait_until(lambda: bad.health().state == "failing", 10)
            time.sleep(3.5)  # paho retries every second (reconnect_max 1)
            health = bad.health()
        finally:
            bad.stop()
    assert health.state == "failing" and "not authorized" in health.reason.lower(), health
    noisy = [e for e in logs if e.get("log_level") in ("warning", "error")]
    assert len(noisy) <= 2, [(e["event"], e.get("reason")) for e in noisy]  # said once, not every retry
    assert "wrong-password" not in repr(logs) + repr(health)
    _, body = health_report(True, "ok", True, PipelineStats(sinks={"mqtt": health}))
    assert body["status"] == "degraded" and any("mqtt" in p and "authorized" in p.lower() for p in body["problems"])


def test_a_retained_off_at_start_is_logged_and_shown(mosquitto, recorder, store) -> None:  # type: ignore[no-untyped-def]
    broker = mosquitto()
    rec = recorder(broker, f"{P}/#")
    rec.client.publish(f"{P}/garden/detect/set", b"OFF", qos=1, retain=True).wait_for_publish(5)
    calls: list[tuple[str, bool]] = []
    sink = make_sink(mcfg(broker), store, commands=lambda cam, on: calls.append((cam, on)))
    with structlog.testing.capture_logs() as logs:
        sink.start()
        try:
            assert wait_until(lambda: calls == [("garden", False)], 10)
            health = sink.health()
        finally:
            sink.stop()
    [warned] = [e for e in logs if e["event"] == "mqtt_retained_command"]
    assert warned["log_level"] == "warning" and warned["camera"] == "garden" and warned["detect"] is False
    assert f"{P}/garden/detect/set" in warned["clear_with"]
    assert health.state == "ok" and health.retained_commands == {"garden": "OFF"}
    stats = PipelineStats(cameras=(CaptureSnapshot("garden", state="up"),),
                          router=RouterSnapshot(enabled={"garden": False}), sinks={"mqtt": health})
    _, body = health_report(True, "ok", True, stats)
    assert body["cameras"]["garden"]["detect_enabled"] is False
    assert any("garden" in n and "retained" in n for n in body["notes"])
