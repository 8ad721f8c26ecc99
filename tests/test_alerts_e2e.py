"""Alerts end to end: the real daemon on a raccoon clip, a real mosquitto, the local Pushover server.

One visit of a raccoon must give exactly one push (with the JPEG snapshot), the Frigate-style MQTT
event messages, Home Assistant discovery, and after a SIGKILL the pending push goes out exactly once.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from testkit.fake_pushover import VALID_TOKEN, VALID_USER
from tests.daemon import Daemon, detector_section, write_config

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, source: str, coco_model: Path, broker=None, pushover_url: str | None = None,
            **camera: object) -> Path:
    data: dict = {
        "cameras": {"porch": {"source": source, "detect_fps": 5, "motion": {"enabled": False}, **camera}},
        "detector": detector_section(coco_model),
        "events": {"min_frames": 3, "window": 5, "end_after": 2.0, "cooldown": 60},
        "storage": {"path": str(tmp_path / "var")},
        "logging": {"format": "json"},
    }
    if broker is not None:
        data["mqtt"] = {"host": broker.host, "port": broker.port, "topic_prefix": "rw",
                        "discovery_prefix": "homeassistant", "client_id": "rw-e2e"}
    if pushover_url is not None:
        data["pushover"] = {"token": VALID_TOKEN, "user": VALID_USER, "api_url": pushover_url, "timeout_s": 2}
    return write_config(tmp_path / "config.yaml", data)


def _jpeg_ok(data: bytes) -> bool:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return image is not None and image.shape[0] > 0


def test_raccoon_clip_gives_one_push_and_the_mqtt_messages(tmp_path, raccoon_clip_mp4, coco_model,
                                                           mosquitto, recorder, fake_pushover):
    broker = mosquitto()
    rec = recorder(broker, "rw/#", "homeassistant/#")
    cfg = _config(tmp_path, str(raccoon_clip_mp4.path), coco_model, broker, fake_pushover.url)
    daemon = Daemon.start(cfg)
    try:
        daemon.wait_for("event_ended", timeout=120)
        events = rec.wait(lambda ms: any(m.topic == "rw/events" and b'"end"' in m.payload for m in ms), timeout=20)
        pushes = fake_pushover.wait_for(1, timeout=20)
        time.sleep(1.0)
    finally:
        code, took = daemon.terminate()
    assert code == 0 and took < 5.0

    # Pushover: exactly one push, with the snapshot as image/jpeg, titled with label and camera
    assert len(fake_pushover.ok()) == 1, "".join(daemon.raw)
    push = pushes[0]
    assert push.attachment_type == "image/jpeg" and _jpeg_ok(push.attachment)
    assert "porch" in push.fields.get("title", "") or "porch" in push.fields.get("message", "")

    # MQTT: new ... end for one id, Frigate format
    bodies = [json.loads(m.payload) for m in events if m.topic == "rw/events"]
    types = [b["type"] for b in bodies]
    assert types[0] == "new" and types[-1] == "end" and types.count("new") == 1
    assert len({b["after"]["id"] for b in bodies}) == 1
    after = bodies[-1]["after"]
    for key in ("id", "camera", "label", "score", "top_score", "box", "start_time", "end_time", "has_snapshot"):
        assert key in after
    assert after["camera"] == "porch" and after["end_time"] is not None

    # retained snapshot JPEG and discovery: a subscriber that joins afterwards still gets them
    label = after["label"]
    assert any(m.topic == "rw/available" and m.payload == b"online" for m in rec.messages)
    late = recorder(broker, f"rw/porch/{label}/snapshot", "homeassistant/device/#")
    snaps = late.wait_topic(f"rw/porch/{label}/snapshot", timeout=10)
    assert snaps[-1].retain and _jpeg_ok(snaps[-1].payload)
    discovery = late.wait(lambda ms: any(m.topic.startswith("homeassistant/device/") for m in ms), timeout=10)
    discovery = [m for m in discovery if m.topic.startswith("homeassistant/device/")]
    assert all(m.retain for m in discovery)
    config = json.loads(discovery[0].payload)
    assert {"dev", "o", "cmps"} <= set(config)
    assert rec.on("rw/available")[-1].payload == b"offline"  # clean shutdown says so


def test_sigkill_then_restart_sends_the_pending_push_exactly_once(tmp_path, raccoon_clip_mp4, small_clip,
                                                                   coco_model, fake_pushover):
    fake_pushover.mode = "error500"  # Pushover is down: the push stays in the outbox
    cfg = _config(tmp_path, str(raccoon_clip_mp4.path), coco_model, pushover_url=fake_pushover.url)
    daemon = Daemon.start(cfg)
    try:
        daemon.wait_for("event_started", timeout=120)
        deadline = time.monotonic() + 20
        while not fake_pushover.received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert fake_pushover.received, "the push was never attempted"
    finally:
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait(timeout=10)
    assert fake_pushover.ok() == []

    fake_pushover.mode = "ok"  # Pushover is back; restart on a clip without a raccoon
    cfg = _config(tmp_path, str(small_clip.path), coco_model, pushover_url=fake_pushover.url, loop=True)
    daemon = Daemon.start(cfg)
    try:
        fake_pushover.wait_for(1, timeout=60)
        time.sleep(3.0)
    finally:
        daemon.terminate()
    assert len(fake_pushover.ok()) == 1
    assert fake_pushover.ok()[0].attachment_type == "image/jpeg"
