"""PipelineStats: the published stats JSON (MQTT P/stats) keeps its exact keys, order and rounding."""

from __future__ import annotations

import json

import pytest

from raccoon_watch.framequeue import FrameQueue
from raccoon_watch.sinks.discovery import DIAGNOSTICS
from raccoon_watch.types import (
    CaptureSnapshot,
    DeliveryCounts,
    MotionSnapshot,
    PipelineStats,
    QueueSnapshot,
    RouterSnapshot,
    SinkSnapshot,
    StorageSnapshot,
    WorkerSnapshot,
)

NOW = 1000.0
MOTION = {"frames_checked": 10, "frames_passed": 4, "frames_cropped": 1, "by_reason": {"motion": 4},
          "motion_ms_mean": 0.5}

STATS = PipelineStats(
    mono=NOW,
    started_mono=NOW - 12.04,
    cameras=(
        CaptureSnapshot("porch", state="up", frames_read=120, frames_decoded=61, frames_queued=60,
                        frames_dropped=1, reconnects=2, last_frame_mono=NOW - 0.1234),
        CaptureSnapshot("garden", state="down"),
    ),
    workers=(WorkerSnapshot("detector-0", frames=40, errors=1, last_inference_ms=31.004),
             WorkerSnapshot("detector-1", frames=18, last_inference_ms=12.0)),
    router=RouterSnapshot(events_emitted=2, processed={"porch": 57, "garden": 0},
                          enabled={"porch": True, "garden": False}),
    queue=QueueSnapshot(depth=1, dropped=3, dropped_by_camera={"porch": 3}, lag_s_by_camera={"porch": 0.25}),
    motion={"porch": MotionSnapshot(**MOTION)},
    deliveries={"mqtt": DeliveryCounts(pending=4, failed=1, dropped=0)},
    storage=StorageSnapshot(persistent=True, recovered=None),
    sinks={"mqtt": SinkSnapshot("ok", detail={"broker": "127.0.0.1:1883"})},
)

EXPECTED = {
    "uptime_s": 12.0,
    "cameras": {
        "porch": {"detect_fps": 4.73, "inference_ms": 31.0, "dropped_frames": 1, "frames_processed": 57,
                  "state": "up", "frames_read": 120, "frames_queued": 60, "frames_dropped": 1, "frames_bad": 0,
                  "reconnects": 2, "last_frame_age_s": 0.123, "detect_enabled": True, "detector_lag_s": 0.25,
                  "motion": MOTION},
        "garden": {"detect_fps": 0.0, "inference_ms": 31.0, "dropped_frames": 0, "frames_processed": 0,
                   "state": "down", "frames_read": 0, "frames_queued": 0, "frames_dropped": 0, "frames_bad": 0,
                   "reconnects": 0, "last_frame_age_s": None, "detect_enabled": False, "detector_lag_s": None,
                   "motion": None},
    },
    "detector": {"fps": 4.82, "frames": 58, "inference_ms": 31.0, "errors": 1},
    "queue_depth": 1,
    "queue_dropped": 3,
    "events": 2,
    "deliveries": {"mqtt": {"pending": 4, "failed": 1, "dropped": 0}},
    "storage": {"persistent": True, "recovered": None, "vanished": None, "held_media": 0},
    "sinks": {"mqtt": {"state": "ok", "reason": None, "broker": "127.0.0.1:1883", "retained_commands": {}}},
}


def test_to_dict_is_the_published_shape() -> None:
    body = STATS.to_dict()
    assert body == EXPECTED
    assert json.dumps(body) == json.dumps(EXPECTED)  # same key order too
    for cam in body["cameras"].values():
        assert cam["dropped_frames"] == cam["frames_dropped"]


def test_home_assistant_diagnostics_read_published_keys() -> None:
    keys = STATS.to_dict()["cameras"]["porch"]
    assert all(key in keys for key, *_ in DIAGNOSTICS)


@pytest.mark.parametrize(
    ("stats", "expected"),
    [
        (PipelineStats(), {"uptime_s": 0.0, "cameras": {}, "detector": {"fps": 0.0, "frames": 0, "inference_ms": 0.0,
                                                                          "errors": 0},
                           "queue_depth": 0, "queue_dropped": 0, "events": 0, "deliveries": {}, "storage": None,
                           "sinks": {}}),
    ],
)
def test_to_dict_without_stages(stats: PipelineStats, expected: dict) -> None:
    assert stats.to_dict() == expected


def test_queue_snapshot() -> None:
    q = FrameQueue(1)
    assert q.snapshot() == QueueSnapshot(0, 0, {})


def test_liveness_reads_the_stage_snapshots() -> None:
    from types import SimpleNamespace

    from raccoon_watch.service import liveness

    cfg = {name: SimpleNamespace(open_timeout_s=5, read_timeout_s=5, reconnect_max_s=30) for name in ("porch", "garden")}
    busy = PipelineStats(mono=NOW, started_mono=NOW - 100,
                         cameras=STATS.cameras,
                         workers=(WorkerSnapshot("detector-0", loaded=False, heartbeat=NOW - 1, busy_since=NOW - 2),),
                         router=RouterSnapshot(alive=True, heartbeat=NOW - 0.5))
    snap = liveness.pipeline_snapshot(busy, cfg, liveness.ProgressTracker(), NOW)
    assert snap.workers == (liveness.WorkerBeat("detector-0", True, NOW - 100, False, NOW - 1, NOW - 2),)
    assert snap.router == liveness.RouterBeat(True, NOW - 0.5)
    assert [(c.name, c.state, c.progress, c.grace_s) for c in snap.cameras] == [
        ("porch", "up", NOW, 15.0), ("garden", "down", NOW, 50.0)]
    assert liveness.pipeline_snapshot(PipelineStats(), {}, liveness.ProgressTracker(), NOW).router is None
