"""Storage faults through the real `raccoon-watch run` process (issue 21, data part).

Real parts: the daemon subprocess, the real detector on the raccoon clip (one visit of 3 s every
8 s when it loops), the real SQLite store on a real folder (a real tmpfs for the full disk); the
local Pushover stand-in (testkit/fake_pushover.py) is the one fake.

- Two daemons on one store: the second exits 2 within 5 s naming the first's PID; the first goes on.
- Cooldown across a restart: a visit soon after a pushed event, in a new process, is not pushed.
- The storage folder deleted while running: /healthz says degraded, the folder and events.db are
  re-created with everything in them, and after a restart every event is there, each pushed once.
- A full disk, then space again: the store goes back to disk, writes back what it kept in memory,
  and after a restart every event is there, each pushed once.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from testkit.fake_pushover import VALID_TOKEN, VALID_USER
from testkit.ports import free_port
from tests.daemon import REPO, Daemon, detector_section, write_config
from tests.diskfaults import fill, mount_tmpfs
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

SECOND_EXITS_WITHIN_S = 5.0  # issue 21: "a second daemon on the same store exits 2 within 5 s"
STOP_WITHIN_S = 5.0


def _config(tmp_path: Path, clip: Path, coco_model: Path, pushover_url: str, storage: Path, *, cooldown: float = 300,
            loop: bool = True, http_port: int | None = None, name: str = "config.yaml") -> Path:
    data: dict[str, Any] = {
        "cameras": {"porch": {"source": str(clip), "detect_fps": 5, "realtime": True, "loop": loop,
                              "motion": {"enabled": False}}},
        "detector": detector_section(coco_model),
        "events": {"min_frames": 3, "window": 5, "end_after": 2.0, "cooldown": cooldown, "update_interval": 0},
        "storage": {"path": str(storage)},
        "pushover": {"token": VALID_TOKEN, "user": VALID_USER, "api_url": pushover_url, "timeout_s": 2},
        "logging": {"format": "json"},
    }
    if http_port is not None:
        data["http"] = {"enabled": True, "port": http_port}
    return write_config(tmp_path / name, data)


def _rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def _healthz(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503 carries the same body
        return json.loads(exc.read())


# --- one daemon per store -------------------------------------------------------------------------


def test_a_second_daemon_on_the_same_store_exits_2_and_the_first_goes_on(
        tmp_path, raccoon_clip_mp4, coco_model, fake_pushover):
    storage = tmp_path / "var"
    cfg = _config(tmp_path, raccoon_clip_mp4.path, coco_model, fake_pushover.url, storage)
    first = Daemon.start(cfg)
    try:
        first.wait_for("daemon_started", timeout=90)
        assert (storage / "raccoon-watch.lock").read_text().strip() == str(first.proc.pid)
        # what no daemon can beat on this machine now: starting Python and importing the CLI (it reads
        # the config with it); on a quiet machine 0.6 s, under a load average of 16 on 2 cores over 4 s
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-c", "import raccoon_watch.service.cli"], cwd=REPO, check=True)
        floor = time.monotonic() - t0
        t0 = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "raccoon_watch", "run", "--config", str(cfg)],
                                cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"}, capture_output=True,
                                text=True, timeout=60)
        took = time.monotonic() - t0
        print(f"second daemon: exit {second.returncode} after {took:.2f} s (importing the CLI alone: {floor:.2f} s)")
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        # within 5 s; on a machine so loaded that the import alone takes seconds, at most 2 s more than it
        assert took < max(SECOND_EXITS_WITHIN_S, floor + 2.0), f"the second daemon took {took:.1f} s to give up"
        assert f"PID {first.proc.pid}" in second.stderr, second.stderr
        assert "Traceback" not in second.stdout + second.stderr
        assert "camera_connected" not in second.stdout, "the second daemon opened a camera"
        # the first goes on alone: two visits of the looping clip, one push (the second is in cooldown)
        first.wait_for("event_ended", count=2, timeout=60)
        pushes = fake_pushover.wait_for(1, timeout=20)
        assert first.proc.poll() is None
    finally:
        code, took = first.terminate()
    assert code == 0 and took < STOP_WITHIN_S
    assert len(pushes) == 1 and len(fake_pushover.received) == 1
    started = {r["id"] for r in first.events("event_started")}
    assert {r[0] for r in _rows(storage / "events.db", "SELECT id FROM events")} == started
    assert (storage / "raccoon-watch.lock").read_text() == "", "the PID is cleared at a clean stop"


# --- cooldown across a restart --------------------------------------------------------------------


def test_a_visit_soon_after_a_pushed_event_is_not_pushed_again_after_a_restart(
        tmp_path, raccoon_clip_mp4, coco_model, fake_pushover):
    storage = tmp_path / "var"
    cfg = _config(tmp_path, raccoon_clip_mp4.path, coco_model, fake_pushover.url, storage, cooldown=300, loop=False)
    first = Daemon.start(cfg)
    try:
        pushed = first.wait_for("event_started", timeout=90)[0]
        first.wait_for("event_ended", timeout=30)
        fake_pushover.wait_for(1, timeout=20)
    finally:
        code, _ = first.terminate()
    assert code == 0 and not pushed["in_cooldown"]

    second = Daemon.start(cfg)  # a new process: the raccoon comes back a few seconds later
    try:
        again = second.wait_for("event_started", timeout=90)[0]
        second.wait_for("event_ended", timeout=30)
        time.sleep(2.0)  # a push would have gone out by now
    finally:
        code, _ = second.terminate()
    assert code == 0
    gap = float(again["id"].split("-")[0]) - float(pushed["id"].split("-")[0])  # ids begin with the start time
    print(f"second visit {gap:.1f} s after the pushed one")
    assert again["id"] != pushed["id"] and again["in_cooldown"] is True
    assert len(fake_pushover.received) == 1, "the visit after the restart was pushed again"
    assert [r["reason"] for r in second.events("pushover_skipped")] == ["cooldown"]
    restored = second.events("cooldown_restored")
    assert restored and restored[0]["camera"] == "porch", "".join(second.raw[-30:])
    rows = _rows(storage / "events.db", "SELECT id, in_cooldown FROM events ORDER BY start_time")
    assert rows == [(pushed["id"], 0), (again["id"], 1)]


# --- storage deleted or full, then back -----------------------------------------------------------


@pytest.mark.parametrize("fault", ["folder_deleted", "disk_full"])
def test_storage_lost_then_back_keeps_every_event_and_pushes_each_once(
        fault, tmp_path, raccoon_clip_mp4, small_clip, coco_model, fake_pushover):
    """folder_deleted: ``rm -rf`` of the storage folder after the first visit; disk_full: the store's
    tmpfs filled after the first visit, a visit recorded in memory, then the filler removed. Every
    visit is pushed (cooldown 0), so "each exactly once" is checked on every event."""
    fs = tmp_path / "fs"
    if fault == "disk_full":
        mount_tmpfs(fs, "4m")
    storage = (fs if fault == "disk_full" else tmp_path) / "var"
    port = free_port()
    cfg = _config(tmp_path, raccoon_clip_mp4.path, coco_model, fake_pushover.url, storage, cooldown=0,
                  http_port=port)
    daemon = Daemon.start(cfg)
    try:
        daemon.wait_for("event_ended", timeout=90)  # visit 1, on disk
        if fault == "folder_deleted":
            shutil.rmtree(storage)
            daemon.wait_for("store_vanished", timeout=10)
            health = _healthz(port)
            assert health["status"] == "degraded" and health["storage"]["vanished"]["restored"], health
            assert (storage / "events.db").is_file()
            assert wait_until(lambda: (storage / "raccoon-watch.lock").is_file(), timeout=3), "lock not renewed"
            daemon.wait_for("event_ended", count=3, timeout=40)  # two visits after the deletion
        else:
            fill(fs)
            daemon.wait_for("event_ended", count=2, timeout=40)  # visit 2: the disk is full
            daemon.wait_for("store_fallback_memory", timeout=10)
            health = _healthz(port)
            assert health["status"] == "degraded" and health["storage"]["persistent"] is False, health
            (fs / "filler").unlink()  # space again
            daemon.wait_for("store_back_on_disk", timeout=20)
            assert wait_until(lambda: _healthz(port)["storage"]["persistent"] is True, timeout=10)
            daemon.wait_for("event_ended", count=3, timeout=40)  # visit 3: on disk again
        started = [r["id"] for r in daemon.events("event_started")]
        sent = fake_pushover.wait_for(len(started), timeout=20)
        assert daemon.proc.poll() is None
    finally:
        code, took = daemon.terminate()
        ended = {r["id"] for r in daemon.events("event_ended")}
    try:
        assert code == 0 and took < STOP_WITHIN_S, "".join(daemon.raw[-30:])
        assert "Traceback" not in "".join(daemon.raw)
        assert len(sent) == len(started) and len(started) >= 3
        pushed = [r["event_id"] for r in daemon.events("pushover_sent")]
        assert sorted(pushed) == sorted(set(pushed)) and set(pushed) == set(started), (pushed, started)

        # a restart (on a clip without a raccoon): every event is in events.db, every push done, none re-sent
        cfg2 = _config(tmp_path, small_clip.path, coco_model, fake_pushover.url, storage, name="restart.yaml")
        again = Daemon.start(cfg2)
        try:
            again.wait_for("camera_connected", timeout=90)
            time.sleep(3.0)
        finally:
            code2, _ = again.terminate()
        assert code2 == 0 and not again.events("store_corrupt_recovered")
        assert len(fake_pushover.received) == len(started), "a push was sent twice"
        db = storage / "events.db"
        rows = dict(_rows(db, "SELECT id, end_time FROM events"))
        assert set(rows) == set(started) and all(rows[i] is not None for i in ended), rows
        assert dict(_rows(db, "SELECT key, state FROM outbox WHERE sink = 'pushover'")) == \
            {i: "done" for i in started}
        snapshots = dict(_rows(db, "SELECT id, snapshot FROM events"))
        assert all((storage / s).is_file() for s in snapshots.values() if s), "a row names a file that is gone"
        # the first visit's snapshot went with the deleted folder (its row says so: NULL); every later
        # one is there, those held in memory while the disk was full included
        lost = {started[0]} if fault == "folder_deleted" else set()
        assert {i for i, s in snapshots.items() if s is None} == lost
    finally:
        if fault == "disk_full":
            subprocess.run(["umount", "-l", str(fs)], check=False, capture_output=True)
