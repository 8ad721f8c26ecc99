"""Nothing lost: the daemon killed (SIGKILL) when an event ends, before its clip is cut.

A real daemon on a raccoon clip from a real RTSP camera: after ``kill -9`` the event row and its
snapshot are intact and the clip is still ``pending``; the next start cuts it from the segments on
disk (``clip_recovering``, then ``clip_ready``) while detecting again.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.daemon import Daemon, detector_section, write_config

pytestmark = [pytest.mark.slow, pytest.mark.rtsp]


def _row(db: Path, event_id: str) -> dict:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return dict(conn.execute("SELECT * FROM events WHERE id=?", (event_id,)).fetchone())


def test_kill_9_before_the_cut_leaves_the_event_and_the_next_start_cuts_the_clip(
        tmp_path, raccoon_clip_h264, rtsp_server, coco_model):
    server = rtsp_server(raccoon_clip_h264)
    cfg = write_config(tmp_path / "config.yaml", {
        "cameras": {"porch": {"source": server.url, "detect_fps": 5, "motion": {"enabled": False}}},
        "detector": detector_section(coco_model),
        "events": {"min_frames": 3, "window": 5, "end_after": 2.0, "cooldown": 60},
        "storage": {"path": str(tmp_path / "var")},
        "clips": {"pre_roll": 2.0, "post_roll": 2.0, "segment_s": 1.0},
        "logging": {"format": "json"},
    })
    db = tmp_path / "var" / "events.db"
    first = Daemon.start(cfg)
    try:
        ended = first.wait_for("event_ended", timeout=150)[0]
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
    finally:
        first.terminate()
    event_id = ended["id"]
    row = _row(db, event_id)
    assert row["end_time"] is not None and (tmp_path / "var" / row["snapshot"]).is_file()
    if row["clip_state"] != "pending":
        pytest.skip(f"the clip was cut before the kill landed ({row['clip_state']}): nothing to recover this time")

    second = Daemon.start(cfg)
    try:
        recovering = second.wait_for("clip_recovering", timeout=60)
        assert any(r["event_id"] == event_id for r in recovering)
        done = [r for r in second.wait_for("clip_ready", timeout=60) if r["event_id"] == event_id]
        assert done, second.raw[-20:]
        second.wait_for("event_started", timeout=60)  # and it detects again
    finally:
        code, _ = second.terminate()
    assert code == 0
    row = _row(db, event_id)
    assert row["clip_state"] == "ready"
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json",
                            str(tmp_path / "var" / row["clip"])], capture_output=True, text=True, check=True)
    assert abs(float(json.loads(probe.stdout)["format"]["duration"]) - done[0]["seconds"]) <= 1.0
