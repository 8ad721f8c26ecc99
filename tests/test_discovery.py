"""Home Assistant device-based discovery: payload schema, retain flags, re-publish and removal."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from raccoon_watch.config import MqttConfig
from raccoon_watch.sinks.discovery import Topics, camera_discovery, digest, discovery_payloads, plan_discovery
from raccoon_watch.sinks.mqtt import MqttSink
from raccoon_watch.store import EventStore

P, D = "raccoon_watch", "homeassistant"
TOPICS = Topics(P, D)

# What HA's MQTT integration requires per platform (from its discovery schema documentation):
# the topic keys that must be present, plus other required keys.
REQUIRED_BY_PLATFORM: dict[str, tuple[str, ...]] = {
    "binary_sensor": ("state_topic",),
    "sensor": ("state_topic",),
    "image": ("image_topic",),  # or url_topic; we send JPEG bytes, so image_topic
    "event": ("state_topic", "event_types"),
    "switch": ("command_topic", "state_topic"),
    "select": ("command_topic", "options"),  # HA mqtt select: options required
}


def validate_device_payload(body: dict[str, Any]) -> None:
    """Raise AssertionError if ``body`` is not a valid HA device discovery config (as documented)."""
    assert set(body) >= {"dev", "o", "cmps"}, f"missing top-level keys: {set(body)}"
    ids = body["dev"].get("identifiers") or body["dev"].get("ids")
    assert ids and all(isinstance(i, str) and i for i in ids), "dev.identifiers must be non-empty"
    assert body["dev"].get("name"), "dev.name"
    assert body["o"].get("name"), "o.name is required"
    assert body.get("avty_t") or body.get("availability_topic") or body.get("availability")
    assert body["cmps"], "cmps must not be empty"
    for key, comp in body["cmps"].items():
        assert comp.get("p") in REQUIRED_BY_PLATFORM, f"{key}: unknown platform {comp.get('p')!r}"
        assert comp.get("unique_id"), f"{key}: unique_id"
        for req in REQUIRED_BY_PLATFORM[comp["p"]]:
            assert comp.get(req), f"{key} ({comp['p']}): {req} missing"
        if comp["p"] == "image":
            assert comp.get("content_type") == "image/jpeg"
        if comp.get("entity_category") == "diagnostic":
            assert comp.get("value_template"), f"{key}: diagnostic sensors read the stats JSON"

    def no_none(x: Any) -> None:
        assert x is not None, "None must be dropped, not serialised as null"
        if isinstance(x, dict):
            for v in x.values():
                no_none(v)
        if isinstance(x, list):
            for v in x:
                no_none(v)

    no_none(body)


def test_payload_fields_for_every_component() -> None:
    body = json.loads(camera_discovery("front_door", ["raccoon", "cat"], TOPICS).to_json())
    validate_device_payload(body)
    assert body["dev"]["identifiers"] == ["raccoon_watch_front_door"]
    assert body["o"] == {"name": "raccoon_watch", "sw": body["dev"]["sw_version"], "url": body["o"]["url"]}
    assert body["avty_t"] == f"{P}/available"
    cmps = body["cmps"]
    platforms = sorted(c["p"] for c in cmps.values())
    assert platforms.count("binary_sensor") == 2 and platforms.count("image") == 2
    assert cmps["raccoon_occupancy"]["device_class"] == "occupancy"
    assert cmps["raccoon_occupancy"]["state_topic"] == f"{P}/front_door/raccoon/state"
    assert cmps["raccoon_count"] == {
        "p": "sensor", "unique_id": "raccoon_watch_front_door_raccoon_count", "name": "Raccoon count",
        "state_topic": f"{P}/front_door/raccoon", "state_class": "measurement", "icon": "mdi:counter"}
    assert cmps["raccoon_snapshot"]["image_topic"] == f"{P}/front_door/raccoon/snapshot"
    assert cmps["event"]["event_types"] == ["raccoon", "cat"]
    assert cmps["event"]["state_topic"] == f"{P}/front_door/event"
    assert cmps["detect"]["command_topic"] == f"{P}/front_door/detect/set"
    assert cmps["detect"]["state_topic"] == f"{P}/front_door/detect/state"
    diag = {k: c for k, c in cmps.items() if c.get("entity_category") == "diagnostic"}
    assert sorted(diag) == ["detect_fps", "dropped_frames", "inference_ms"]
    assert diag["inference_ms"]["value_template"] == "{{ value_json.cameras['front_door'].inference_ms }}"
    assert all(c["state_topic"] == f"{P}/stats" for c in diag.values())


def test_unique_ids_are_unique_across_cameras() -> None:
    ids = []
    for topic, payload in discovery_payloads(["front_door", "garden"], ["raccoon"], TOPICS).items():
        assert topic.startswith(f"{D}/device/raccoon_watch_") and topic.endswith("/config")
        ids += [c["unique_id"] for c in json.loads(payload)["cmps"].values()]
    assert len(ids) == len(set(ids))


A, B = f"{D}/device/raccoon_watch_a/config", f"{D}/device/raccoon_watch_b/config"


@pytest.mark.parametrize(
    ("current", "published", "force", "expected"),
    [
        ({A: b"1"}, {}, False, [(A, b"1")]),                            # first time
        ({A: b"1"}, {A: digest(b"1")}, False, []),                       # unchanged: nothing
        ({A: b"2"}, {A: digest(b"1")}, False, [(A, b"2")]),              # changed
        ({A: b"1"}, {A: digest(b"1")}, True, [(A, b"1")]),               # HA came online / reconnect
        ({A: b"1"}, {A: digest(b"1"), B: digest(b"x")}, False, [(B, b"")]),  # camera left: removed
    ],
)
def test_plan_discovery_table(current, published, force, expected) -> None:  # type: ignore[no-untyped-def]
    assert plan_discovery(current, published, force) == expected


# --- through mosquitto ------------------------------------------------------------------------


def mcfg(broker, **kw: object) -> MqttConfig:  # type: ignore[no-untyped-def]
    data: dict[str, object] = {"port": broker.port, "client_id": f"rw-{uuid.uuid4().hex[:6]}",
                               "discovery": True, "stats_interval": 3600}
    data.update(kw)
    return MqttConfig.model_validate(data)


def run_sink(broker, store: EventStore, cameras: list[str]) -> MqttSink:  # type: ignore[no-untyped-def]
    sink = MqttSink(mcfg(broker), cameras, ["raccoon"], store, poll_s=0.05, reconnect_max=1)
    sink.start()
    deadline = time.monotonic() + 10
    while not sink.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sink.connected
    return sink


@pytest.mark.mqtt
def test_discovery_retained_valid_and_republished_on_ha_online(mosquitto, recorder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broker = mosquitto()
    store = EventStore(tmp_path / "var", outbox_max=100)
    sink = run_sink(broker, store, ["front_door", "garden"])
    try:
        time.sleep(0.2)
        # subscribe afterwards: what arrives is what the broker retained
        late = recorder(broker, f"{D}/#")
        got = late.wait(lambda ms: len(ms) >= 2)
        assert sorted(m.topic for m in got) == sorted([TOPICS.discovery("front_door"), TOPICS.discovery("garden")])
        for m in got:
            assert m.retain, f"{m.topic} must be retained"
            validate_device_payload(json.loads(m.payload))
        # the rest of the retained state HA needs: availability and the switch state
        state = recorder(broker, f"{P}/available", f"{P}/+/detect/state")
        got = state.wait(lambda ms: len(ms) >= 3)
        assert all(m.retain for m in got)
        assert {(m.topic, m.payload) for m in got} == {
            (f"{P}/available", b"online"), (f"{P}/front_door/detect/state", b"ON"), (f"{P}/garden/detect/state", b"ON")}

        # Home Assistant restarts: its birth message makes us publish again
        late.clear()
        late.client.publish(f"{D}/status", "online", qos=1)
        again = late.wait(lambda ms: sum(m.topic.endswith("/config") for m in ms) >= 2)
        assert {m.topic for m in again if m.topic.endswith("/config")} == {
            TOPICS.discovery("front_door"), TOPICS.discovery("garden")}

        # a config reload that changes nothing publishes nothing
        late.clear()
        sink.update_discovery(["front_door", "garden"], ["raccoon"])
        time.sleep(0.3)
        assert [m for m in late.messages if m.topic.endswith("/config")] == []
        # adding a label changes both devices' configs
        sink.update_discovery(["front_door", "garden"], ["raccoon", "cat"])
        changed = late.wait(lambda ms: sum(m.topic.endswith("/config") for m in ms) >= 2)
        assert all("cat_occupancy" in json.loads(m.payload)["cmps"] for m in changed if m.topic.endswith("/config"))
    finally:
        sink.stop()


@pytest.mark.mqtt
def test_camera_removed_from_config_gets_empty_retained_payload(mosquitto, recorder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broker = mosquitto()
    db = tmp_path / "var"
    first = run_sink(broker, EventStore(db, outbox_max=100), ["front_door", "garden"])
    time.sleep(0.2)
    first.stop()

    watcher = recorder(broker, f"{D}/#")
    watcher.wait(lambda ms: len(ms) >= 2)
    watcher.clear()
    second = run_sink(broker, EventStore(db, outbox_max=100), ["front_door"])  # garden left the config
    try:
        removed = watcher.wait_topic(TOPICS.discovery("garden"))
        assert removed[0].payload == b""
    finally:
        second.stop()
    late = recorder(broker, f"{D}/#")
    got = late.wait(lambda ms: len(ms) >= 1)
    time.sleep(0.3)
    assert [m.topic for m in late.messages] == [TOPICS.discovery("front_door")]
    assert got[0].retain


def test_factory_returns_only_enabled_sinks(tmp_path: Path) -> None:
    from raccoon_watch.config import parse_config
    from raccoon_watch.sinks.factory import build_sinks, watched_labels

    store = EventStore(tmp_path, outbox_max=100)
    base = "cameras:\n  front_door: {source: '0', labels: [raccoon, cat]}\n  attic: {source: '1', enabled: false}\n"
    assert [s.name for s in build_sinks(parse_config(base), store)] == ["log"]
    full = parse_config(
        base
        + "mqtt: {host: 127.0.0.1}\n"
        + "pushover: {token: azGDORePK8gMaC0QOYAMyEEuzJnyUi, user: uQiRzpo4DXghDmr9QzzfQu27cmVRsG}\n"
    )
    sinks = build_sinks(full, store)
    assert [s.name for s in sinks] == ["log", "mqtt", "pushover"]
    assert sinks[1].cameras == ["front_door"] and watched_labels(full) == ["raccoon", "cat"]
    off = parse_config(base + "mqtt: {enabled: false}\npushover: {enabled: false, token: t, user: u}\n")
    assert [s.name for s in build_sinks(off, store)] == ["log"]
