"""Faults the daemon must survive (issue 5), each through the real `raccoon-watch run` process.

Real parts: the daemon subprocess, Debian mosquitto, the GStreamer RTSP server, the real detector
and SQLite store; the local Pushover stand-in (testkit/fake_pushover.py) is the one fake.

- MQTT broker stopped for a minute during an event: events arrive, in order, once it is back.
- Pushover answering 500s, stalling, refusing the token: one push, detection never waits on it,
  a refused token is logged once and not retried.
- Storage that cannot be created, or a full filesystem: alerts still go out, a named error.
- SIGTERM under load with pushes pending: exit 0 within 5 s, the outbox rows survive and are
  delivered once by the next run.
- One of two cameras hung (SIGSTOP): it is marked down within 10 s, the other keeps going, and
  it is back soon after SIGCONT.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from testkit.fake_pushover import VALID_TOKEN, VALID_USER
from testkit.ports import free_port
from tests.daemon import Daemon, detector_section, write_config
from tests.diskfaults import fill, mount_tmpfs

pytestmark = pytest.mark.slow

BROKER_OUTAGE_S = 60.0  # issue 5: "MQTT broker stopped for a minute during an event"
STOP_WITHIN_S = 5.0  # issue 5: "SIGTERM during heavy load: stops within 5 s"
DOWN_WITHIN_S = 10.0  # issue 5: "the camera is marked down within 10 s"
BACK_WITHIN_S = 5.0  # issue 5: "reconnect within 5 s of the server coming back"


def _config(tmp_path: Path, cameras: dict[str, dict[str, Any]], coco_model: Path, *, broker=None,
            pushover_url: str | None = None, token: str = VALID_TOKEN, storage: Path | None = None,
            http_port: int | None = None, name: str = "config.yaml") -> Path:
    data: dict[str, Any] = {
        "cameras": {cam: {"detect_fps": 5, "motion": {"enabled": False}, **spec} for cam, spec in cameras.items()},
        "detector": detector_section(coco_model),
        "events": {"min_frames": 3, "window": 5, "end_after": 2.0, "cooldown": 60, "update_interval": 0},
        "storage": {"path": str(storage or tmp_path / "var")},
        "logging": {"format": "json"},
    }
    if broker is not None:
        data["mqtt"] = {"host": broker.host, "port": broker.port, "topic_prefix": "rw", "client_id": "rw-faults",
                        "keepalive": 5}
    if pushover_url is not None:
        data["pushover"] = {"token": token, "user": VALID_USER, "api_url": pushover_url, "timeout_s": 2}
    if http_port is not None:
        data["http"] = {"enabled": True, "port": http_port}
    return write_config(tmp_path / name, data)


def _event_types(messages) -> list[tuple[str, str]]:
    """(event id, type) of every rw/events message, in arrival order."""
    out = []
    for m in messages:
        if m.topic == "rw/events":
            body = json.loads(m.payload)
            out.append((body["after"]["id"], body["type"]))
    return out


def _first_arrivals(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Drop re-deliveries (QoS 1 is at-least-once): keep each (id, type) where it first arrived."""
    seen: set[tuple[str, str]] = set()
    return [p for p in pairs if not (p in seen or seen.add(p))]


def _metric(port: int, name: str, **labels: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{want}}} ") or (not labels and line.startswith(f"{name} ")):
            return float(line.rsplit(" ", 1)[1])
    return None


def _wait_metric(port: int, name: str, pred, timeout: float, **labels: str) -> float | None:
    """Poll /metrics until ``pred(value)``. The page may not listen yet: the service binds it after
    the app has started its cameras, so on a loaded machine a camera can connect first."""
    deadline = time.monotonic() + timeout
    value, error = None, None
    while time.monotonic() < deadline:
        try:
            value, error = _metric(port, name, **labels), None
        except urllib.error.URLError as exc:
            error = exc
        if value is not None and pred(value):
            return value
        time.sleep(0.5)
    raise AssertionError(f"{name}{labels} never satisfied the condition; last value {value}, last error {error}")


# --- MQTT -----------------------------------------------------------------------------------------


def test_mqtt_broker_down_for_a_minute_during_an_event(tmp_path, raccoon_clip_mp4, coco_model, mosquitto, recorder):
    broker = mosquitto(persistence=True)  # SIGTERM saves the recorder's queued messages
    rec = recorder(broker, "rw/events", persistent=True)
    port = free_port()
    cfg = _config(tmp_path, {"porch": {"source": str(raccoon_clip_mp4.path)}}, coco_model, broker=broker,
                  http_port=port)
    daemon = Daemon.start(cfg)
    try:
        daemon.wait_for("mqtt_connected", timeout=90)
        started = daemon.wait_for("event_started", timeout=90)[0]
        broker.stop()  # mid-event: the END (and any UPDATE) is produced while the broker is away
        t_outage = time.monotonic()
        daemon.wait_for("event_ended", timeout=30)
        time.sleep(1.0)
        pending = _metric(port, "raccoon_watch_deliveries_pending", sink="mqtt")
        assert pending and pending >= 1, "the END message should wait in the outbox while the broker is down"
        time.sleep(max(0.0, t_outage + BROKER_OUTAGE_S - time.monotonic()))
        assert daemon.proc.poll() is None, "daemon died while the broker was down"
        broker.start()
        rec.wait(lambda ms: ("end" in [t for _, t in _event_types(ms)]), timeout=30)
        _wait_metric(port, "raccoon_watch_deliveries_pending", lambda v: v == 0, 15, sink="mqtt")
    finally:
        code, took = daemon.terminate()
    assert code == 0 and took < STOP_WITHIN_S, "".join(daemon.raw[-30:])
    pairs = _first_arrivals(_event_types(rec.messages))
    assert {i for i, _ in pairs} == {started["id"]}
    types = [t for _, t in pairs]
    assert types[0] == "new" and types[-1] == "end" and types.count("end") == 1, types
    assert daemon.events("mqtt_disconnected"), "the outage was not noticed"


# --- Pushover -------------------------------------------------------------------------------------


def test_pushover_500s_then_ok_gives_exactly_one_push(tmp_path, raccoon_clip_mp4, coco_model, fake_pushover):
    fake_pushover.fail_next(3, "error500")
    cfg = _config(tmp_path, {"porch": {"source": str(raccoon_clip_mp4.path)}}, coco_model,
                  pushover_url=fake_pushover.url)
    daemon = Daemon.start(cfg)
    try:
        daemon.wait_for("event_started", timeout=90)
        daemon.wait_for("pushover_retry", count=3, timeout=30)
        pushes = fake_pushover.wait_for(1, timeout=30)
        time.sleep(2.0)  # nothing more may come
    finally:
        code, _ = daemon.terminate()
    assert code == 0
    assert len(pushes) == 1 and len(fake_pushover.ok()) == 1
    assert [r.status for r in fake_pushover.received] == [500, 500, 500, 200]
    assert len(daemon.events("pushover_sent")) == 1


def test_pushover_stalled_does_not_hold_up_detection(tmp_path, raccoon_clip_mp4, coco_model, fake_pushover):
    fake_pushover.mode, fake_pushover.stall_s = "stall", 3.0  # > timeout_s: the daemon gives up each time
    cfg = _config(tmp_path, {"porch": {"source": str(raccoon_clip_mp4.path)}}, coco_model,
                  pushover_url=fake_pushover.url)
    daemon = Daemon.start(cfg)
    try:
        daemon.wait_for("event_started", timeout=90)
        daemon.wait_for("pushover_retry", timeout=20)
        daemon.wait_for("event_ended", timeout=30)  # the event went on while the push was stuck
        assert fake_pushover.ok() == []
        fake_pushover.mode = "ok"
        pushes = fake_pushover.wait_for(1, timeout=40)
        time.sleep(2.0)
    finally:
        code, _ = daemon.terminate()
    assert code == 0
    assert len(pushes) == 1 and len(fake_pushover.ok()) == 1
    assert any(r.status == -1 for r in fake_pushover.received)


def test_pushover_bad_token_is_logged_once_and_not_retried(tmp_path, raccoon_clip_mp4, coco_model, fake_pushover):
    cfg = _config(tmp_path, {"porch": {"source": str(raccoon_clip_mp4.path)}}, coco_model,
                  pushover_url=fake_pushover.url, token="aBadTokenThatPushoverRefuses00")
    daemon = Daemon.start(cfg)
    try:
        daemon.wait_for("pushover_rejected", timeout=90)
        daemon.wait_for("event_ended", timeout=30)
        time.sleep(4.0)  # longer than the first retry back-offs (1 s, 2 s): no retry may come
        assert daemon.proc.poll() is None
    finally:
        code, _ = daemon.terminate()
    assert code == 0
    assert len(daemon.events("pushover_rejected")) == 1
    assert [r.status for r in fake_pushover.received] == [400]
    assert not daemon.events("pushover_retry")


# --- storage --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["parent_is_a_file", "disk_full_mid_run"])
def test_unusable_storage_still_alerts(variant, tmp_path, raccoon_clip_mp4, coco_model, mosquitto, recorder,
                                       fake_pushover):
    """parent_is_a_file: the store cannot even be created -> ``store_fallback_memory`` at start.
    disk_full_mid_run: the store opens on a 1 MiB tmpfs that is then filled up before the raccoon
    shows, so the event row / snapshot / outbox writes fail -> ``store_write_failed`` (and
    ``store_fallback_memory`` once an outbox write fails)."""
    mount = tmp_path / "small_fs"
    if variant == "parent_is_a_file":
        (tmp_path / "not_a_dir").write_text("a regular file where the storage directory's parent should be")
        storage = tmp_path / "not_a_dir" / "var"
        expected_errors = {"store_fallback_memory"}
    else:
        mount_tmpfs(mount)
        storage = mount / "var"
        expected_errors = {"store_write_failed", "store_fallback_memory"}
    broker = mosquitto()
    rec = recorder(broker, "rw/events")
    cfg = _config(tmp_path, {"porch": {"source": str(raccoon_clip_mp4.path), "realtime": True}}, coco_model,
                  broker=broker, pushover_url=fake_pushover.url, storage=storage)
    try:
        daemon = Daemon.start(cfg)
        try:
            daemon.wait_for("camera_connected", timeout=90)
            if variant == "disk_full_mid_run":
                assert (storage / "events.db").is_file() and not daemon.events("store_fallback_memory")
                fill(mount)
            daemon.wait_for("event_ended", timeout=120)
            rec.wait(lambda ms: "end" in [t for _, t in _event_types(ms)], timeout=20)
            pushes = fake_pushover.wait_for(1, timeout=20)
            assert daemon.proc.poll() is None
        finally:
            code, took = daemon.terminate()
    finally:
        if mount.exists():
            subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
    assert code == 0 and took < STOP_WITHIN_S, "".join(daemon.raw[-30:])
    assert len(pushes) == 1
    errors = [r for r in daemon.lines if r.get("event") in expected_errors]
    assert errors and all(r["level"] == "error" for r in errors), "".join(daemon.raw[-30:])
    assert "Traceback" not in "".join(daemon.raw)


# --- SIGTERM under load ---------------------------------------------------------------------------


def _outbox(db: Path, sink: str) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT key, state FROM outbox WHERE sink = ? ORDER BY id", (sink,)).fetchall()


def test_sigterm_under_load_keeps_the_outbox(tmp_path, raccoon_clip_mp4, small_clip, coco_model, fake_pushover):
    fake_pushover.mode, fake_pushover.stall_s = "stall", 30.0  # every push hangs: rows stay pending
    # Paced like real cameras (15 fps each, every frame asked for): 4 x 15 = 60 detector frames/s, more
    # than this machine gives, so the daemon is busy. An unpaced file (`realtime: false`) floods the fair
    # queue instead: it keeps each lane's newest frames, the detector sees frames seconds of clip apart,
    # no track sees the raccoon move and no event starts (found 2026-12-08; see issue 24's note).
    busy = {"source": str(raccoon_clip_mp4.path), "loop": True, "detect_fps": 30}
    cameras = {f"cam{i}": busy for i in range(4)}
    cfg = _config(tmp_path, cameras, coco_model, pushover_url=fake_pushover.url)
    daemon = Daemon.start(cfg)
    try:
        daemon.wait_for("event_started", count=2, timeout=120)
        daemon.wait_for("pushover_retry", timeout=30)
    finally:
        code, took = daemon.terminate(timeout=15)
    assert code == 0, "".join(daemon.raw[-30:])
    assert took < STOP_WITHIN_S
    pending = [key for key, state in _outbox(tmp_path / "var" / "events.db", "pushover") if state == "pending"]
    assert pending, "the stalled pushes should still be pending after SIGTERM"
    with sqlite3.connect(tmp_path / "var" / "events.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)

    fake_pushover.mode = "ok"  # the next run, on a clip without a raccoon, sends each exactly once
    cfg = _config(tmp_path, {"porch": {"source": str(small_clip.path), "loop": True}}, coco_model,
                  pushover_url=fake_pushover.url, name="restart.yaml")
    daemon = Daemon.start(cfg)
    try:
        fake_pushover.wait_for(len(pending), timeout=60)
        time.sleep(2.0)
    finally:
        code, _ = daemon.terminate()
    assert code == 0
    assert len(fake_pushover.ok()) == len(pending)
    assert [state for key, state in _outbox(tmp_path / "var" / "events.db", "pushover") if key in pending] == \
        ["done"] * len(pending)


# --- a hung camera among two ----------------------------------------------------------------------


def test_hung_rtsp_camera_is_marked_down_and_the_other_keeps_going(tmp_path, small_clip_h264, small_clip, coco_model,
                                                                   rtsp_server):
    server = rtsp_server(small_clip_h264)
    port = free_port()
    cameras = {
        "street": {"source": server.url, "read_timeout_s": 2.0, "open_timeout_s": 2.0, "reconnect_max_s": 2.0},
        "garden": {"source": str(small_clip.path), "loop": True},
    }
    daemon = Daemon.start(_config(tmp_path, cameras, coco_model, http_port=port))
    try:
        daemon.wait_for("camera_connected", count=2, timeout=90)
        _wait_metric(port, "raccoon_watch_camera_frames_processed_total", lambda v: v > 0, 30, camera="street")
        server.stop()
        t_stop = time.monotonic()
        deadline = t_stop + DOWN_WITHIN_S
        while not [r for r in daemon.events("camera_down") if r.get("camera") == "street"]:
            assert time.monotonic() < deadline, f"street not marked down within {DOWN_WITHIN_S}s"
            time.sleep(0.1)
        assert _metric(port, "raccoon_watch_camera_up", camera="street") == 0.0
        before = _metric(port, "raccoon_watch_camera_frames_processed_total", camera="garden")
        time.sleep(3.0)
        after = _metric(port, "raccoon_watch_camera_frames_processed_total", camera="garden")
        assert before is not None and after is not None and after > before, "garden stopped with street"
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read())
        assert health["cameras"]["street"]["up"] is False and health["cameras"]["garden"]["up"] is True

        connected_before = len([r for r in daemon.events("camera_connected") if r.get("camera") == "street"])
        server.cont()
        t_cont = time.monotonic()
        while len([r for r in daemon.events("camera_connected") if r.get("camera") == "street"]) <= connected_before:
            assert time.monotonic() - t_cont < 30, "street never came back"
            time.sleep(0.1)
        back_s = time.monotonic() - t_cont
        assert daemon.proc.poll() is None
    finally:
        code, _ = daemon.terminate()
    assert code == 0
    # the open attempt that was hanging on the stopped server can take open_timeout_s (2 s) more
    assert back_s < BACK_WITHIN_S, f"street took {back_s:.1f}s to come back after SIGCONT"
