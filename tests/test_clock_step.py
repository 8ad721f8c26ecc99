"""A ±1 h step of the wall clock during an event, through the real daemon code: the real App with a
real file camera (the raccoon clip, H.264), the real detector, router, store and clip cutter (ffmpeg).
Only the wall clock the capture stamps frames with is stepped (``App(capture_clock=...)``), right
after the event STARTs, as NTP would step it: the event's duration must be the true one, and its
clip must be cut, as long as the window asks (issue 21: 3,603 s and -3,597 s; 2 of 6 clips lost)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from raccoon_watch.app import App
from raccoon_watch.config import Config
from raccoon_watch.store.schema import CLIP_PENDING, CLIP_READY
from raccoon_watch.types import Event, EventKind
from tests.daemon import detector_section
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

HOUR = 3600.0


class SteppedClock:
    """The ``time`` module's two clocks, with the wall one moved by ``offset`` once ``step()`` is called."""

    def __init__(self, jump: float) -> None:
        self.jump = jump
        self.offset = 0.0

    def step(self) -> None:
        self.offset = self.jump

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


def _duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout)["format"]["duration"])


@pytest.mark.parametrize("jump", [+HOUR, -HOUR, 0.0])
def test_a_wall_clock_step_mid_event_keeps_its_duration_and_its_clip(tmp_path, raccoon_clip_h264, coco_model, jump):
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe not installed (apt-get install ffmpeg)")
    cfg = Config.model_validate({
        "cameras": {"porch": {"source": str(raccoon_clip_h264.path), "detect_fps": 5, "realtime": True,
                              "loop": False, "motion": {"enabled": False}}},
        "detector": detector_section(coco_model),
        "events": {"min_frames": 3, "window": 5, "end_after": 2.0, "cooldown": 60, "update_interval": 0},
        "clips": {"pre_roll": 1.0, "post_roll": 1.0},
        "storage": {"path": str(tmp_path / "var")},
    })
    clock = SteppedClock(jump)
    events: list[Event] = []
    ended = threading.Event()

    def on_event(event: Event) -> None:
        events.append(event)
        if event.kind is EventKind.START:
            clock.step()  # the wall clock jumps while the raccoon is in view
        elif event.kind is EventKind.END:
            ended.set()

    app = App(cfg, capture_clock=clock)
    app.add_observer(on_event=on_event)
    app.start()
    try:
        assert ended.wait(60), f"no END; events: {[e.kind for e in events]}"
        end = next(e for e in events if e.kind is EventKind.END)
        store = app.store
        assert store is not None
        assert wait_until(lambda: store.get_event(end.id).clip_state != CLIP_PENDING, timeout=30)
        row = store.get_event(end.id)
    finally:
        app.stop()
    shown_s = len(raccoon_clip_h264.raccoon_frames) / raccoon_clip_h264.fps  # 3 s of raccoon
    duration = end.end_time - end.start_time
    seen_s = end.last_seen_mono - end.first_seen_mono
    print(f"step {jump:+.0f} s: duration {duration:.2f} s, sighted for {seen_s:.2f} s, clip {row.clip_state}")
    assert 0.5 * shown_s <= duration <= shown_s + 0.5, duration  # START (3rd frame) .. last sighting
    assert row.end_time - row.start_time == pytest.approx(duration)
    assert row.clip_state == CLIP_READY, row.clip_reason
    clip = tmp_path / "var" / row.clip
    wanted = seen_s + cfg.clips.pre_roll + cfg.clips.post_roll
    assert wanted - 0.6 <= _duration(clip) <= wanted + 1.1, (_duration(clip), wanted)
    scores = row.scores  # the per-frame scores of the event: none lost to the step
    assert len(scores) >= 0.8 * seen_s * 5, len(scores)
