"""Event clips of file cameras: cut out of the camera's own file by stream copy.

The capture thread marks which second of the file was on screen when (``capture.FileClock``, on the
monotonic clock); the pure ``clipwindow.file_span`` maps an event's range to seconds of the pass through the file
that showed its first sighting. Tables for both, then a real capture thread playing a real H.264
file in a loop and a real ffmpeg cut: the clip's packets are the file's own, byte for byte in size,
it starts on the frame the window asks for, and it is ready as soon as the event ends.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from raccoon_watch.capture import CaptureThread, FileAnchor, FileClock
from raccoon_watch.config import CameraConfig, ClipsConfig
from raccoon_watch.framequeue import FrameQueue
from raccoon_watch.review.clips import ClipService, cut_file_clip
from raccoon_watch.review.clipwindow import ClipJob, file_span
from raccoon_watch.store import EventStore
from raccoon_watch.store.schema import CLIP_MISSING, CLIP_PENDING, CLIP_READY
from raccoon_watch.types import Event, EventKind
from tests.waiting import wait_until


def _marks(clock: FileClock, pairs) -> tuple[FileAnchor, ...]:
    for wall, stream in pairs:
        clock.mark(wall, stream)
    return clock.anchors()


@pytest.mark.parametrize("pairs, expected", [
    ([], ()),
    # a paced file: one anchor, stream advancing with the wall clock
    ([(100.0, 0.0), (100.2, 0.2), (100.4, 0.4)], (FileAnchor(100.0, 0.0, 0),)),
    # the schedule slipped by 0.5 s (a busy machine): a new anchor in the same run
    ([(100.0, 0.0), (100.2, 0.2), (100.9, 0.4)], (FileAnchor(100.0, 0.0, 0), FileAnchor(100.9, 0.4, 0))),
    # jitter under the tolerance adds nothing
    ([(100.0, 0.0), (100.25, 0.2)], (FileAnchor(100.0, 0.0, 0),)),
    # the file looped: stream time goes back, a new run
    ([(100.0, 0.0), (103.9, 3.9), (104.0, 0.0), (104.5, 0.5)],
     (FileAnchor(100.0, 0.0, 0), FileAnchor(104.0, 0.0, 1))),
])
def test_file_clock_keeps_an_anchor_per_pass_and_per_slip(pairs, expected):
    assert _marks(FileClock(tolerance_s=0.1), pairs) == expected


def test_file_clock_keeps_only_the_newest_anchors():
    passes = [(10.0 * i + t, t) for i in range(5) for t in (0.0, 5.0)]  # five passes through a 5 s file
    anchors = _marks(FileClock(keep=2), passes)
    assert [a.run for a in anchors] == [3, 4]


PASSES = (FileAnchor(100.0, 0.0, 0), FileAnchor(104.0, 0.0, 1), FileAnchor(108.0, 0.0, 2))


@pytest.mark.parametrize("anchors, start, end, seen, expected", [
    # inside one pass: wall 101..103 is stream 1..3
    (PASSES[:1], 101.0, 103.0, 102.0, (1.0, 2.0)),
    # the pre-roll reaches back before the pass began: clamped to the file's start
    (PASSES[:1], 98.0, 102.0, 100.5, (0.0, 2.0)),
    # seen in the second pass: its own anchor, not the first pass's
    (PASSES, 105.0, 106.5, 105.5, (1.0, 1.5)),
    # the window runs past the loop: read on in the pass that showed the sighting (the cut stops at EOF)
    (PASSES, 103.0, 105.0, 103.5, (3.0, 2.0)),
    # a slip inside a pass: the start maps by the anchor before it, the end by the one after
    ((FileAnchor(100.0, 0.0, 0), FileAnchor(103.0, 2.0, 0)), 101.0, 104.0, 101.5, (1.0, 2.0)),
    # nothing marked by the sighting, or an empty range
    ((), 1.0, 2.0, 1.5, None),
    (PASSES[1:], 101.0, 103.0, 102.0, None),
    (PASSES[:1], 102.0, 102.0, 102.0, None),
])
def test_file_span(anchors, start, end, seen, expected):
    got = file_span(anchors, start, end, seen)
    assert got == (pytest.approx(expected) if expected else None)


def test_a_file_clip_without_a_position_or_a_file_says_why(tmp_path):
    job = ClipJob("e", "porch", 10.0, 20.0, 12.0)
    why = cut_file_clip(tmp_path / "porch.mp4", (), job, 12.0, tmp_path / "e.mp4", "ffmpeg")
    assert why is not None and "no frame" in why
    why = cut_file_clip(tmp_path / "gone.mp4", (FileAnchor(9.0, 0.0, 0),), job, 12.0, tmp_path / "e.mp4", "ffmpeg")
    assert why is not None and "gone" in why and not (tmp_path / "e.mp4").exists()


# --- a real file camera, a real cut ----------------------------------------------------------------

def _packet_sizes(path: Path) -> list[int]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=size",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True)
    return [int(line) for line in out.stdout.split()]


def _probe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _contains_run(haystack: list[int], needle: list[int]) -> bool:
    return any(haystack[i:i + len(needle)] == needle for i in range(len(haystack) - len(needle) + 1))


def _event(kind: EventKind, first_seen: float, end: float | None, mono: bool = False) -> Event:
    """``mono``: the sightings are monotonic times (as the debounce gives them), the wall ones derived."""
    if not mono:
        return Event(id="e1", kind=kind, camera="porch", label="raccoon", start_time=first_seen, end_time=end,
                     score=0.9, top_score=0.9, box=(0.1, 0.1, 0.5, 0.5), first_seen_ts=first_seen)
    wall = time.time() - time.monotonic()
    return Event(id="e1", kind=kind, camera="porch", label="raccoon", start_time=first_seen + wall,
                 end_time=None if end is None else end + wall, score=0.9, top_score=0.9, box=(0.1, 0.1, 0.5, 0.5),
                 first_seen_ts=first_seen + wall, first_seen_mono=first_seen, last_seen_mono=end)


@pytest.mark.slow
def test_a_file_camera_event_gets_its_clip_cut_from_the_file(tmp_path, small_clip_h264):
    import cv2
    import numpy as np

    from tests.fixtures.media import synthetic_frames

    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg/ffprobe not installed (apt-get install ffmpeg)")
    fps, n = small_clip_h264.fps, small_clip_h264.frames  # 15 fps, 60 frames: a 4 s file, keyframe each second
    store = EventStore(tmp_path / "var")
    clips = ClipsConfig(pre_roll=1.0, post_roll=0.5)
    stop = threading.Event()
    cam = CameraConfig(source=str(small_clip_h264.path), loop=True, realtime=True, detect_fps=fps)
    service = ClipService(store, {"porch": cam}, clips, stop)
    assert not service.recorders and "porch" in service.file_clocks  # no recorder process: the file is the recording
    queue = FrameQueue(4 * n)
    thread = CaptureThread("porch", cam, queue, stop, file_clock=service.file_clocks["porch"])
    service.start()
    thread.start()
    try:
        # which wall time showed which frame: seq counts on across loops, the file frame is seq % n
        seen: dict[int, float] = {}
        deadline = time.monotonic() + 30
        while len(seen) < n + 40 and time.monotonic() < deadline:
            frame = queue.get(timeout=1.0)
            if frame is not None:
                seen[frame.seq] = frame.mono  # the clip window is on the monotonic clock
        assert len(seen) >= n + 40, f"only {len(seen)} frames in 30 s"
        first_seen, last_seen = seen[n + 20], seen[n + 35]  # file seconds 1.33 and 2.33 of the second pass
        start = _event(EventKind.START, first_seen, None, mono=True)
        store.record(start)
        service.on_event(start)
        assert store.get_event("e1").clip_state == CLIP_PENDING
        assert service.event_fields(start)["has_clip"] is True
        end = _event(EventKind.END, first_seen, last_seen, mono=True)
        store.record(end)
        ended = time.monotonic()
        service.on_event(end)
        assert wait_until(lambda: store.get_event("e1").clip_state != CLIP_PENDING, timeout=20)
        ready_s = time.monotonic() - ended
        row = store.get_event("e1")
        assert row.clip_state == CLIP_READY, row.clip_reason
        path = store.media_file("e1", "clips")
        assert path is not None
    finally:
        stop.set()
        thread.join(timeout=5)
        service.stop()
        store.close()

    info = _probe(path)
    assert info["streams"][0]["codec_name"] == "h264"
    wanted = (last_seen + clips.post_roll) - (first_seen - clips.pre_roll)  # 2.5 s: file 0.33 .. 2.83
    assert wanted - 0.5 <= float(info["format"]["duration"]) <= wanted + 1.0
    # stream copy, not a re-encode: the clip's packets are a run of the file's own packets
    clip_sizes, file_sizes = _packet_sizes(path), _packet_sizes(small_clip_h264.path)
    assert len(clip_sizes) >= 2 * fps and _contains_run(file_sizes, clip_sizes)

    # the clip starts on the frame the window asks for (file second 0.33: frame 5), within a frame or two
    refs = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), (80, 60)).astype(np.int16)
            for f in synthetic_frames(n)]
    ok, first = cv2.VideoCapture(str(path)).read()
    assert ok
    small = cv2.resize(cv2.cvtColor(first, cv2.COLOR_BGR2GRAY), (80, 60)).astype(np.int16)
    index = min(range(n), key=lambda i: int(abs(refs[i] - small).sum()))
    print(f"file clip: first frame {index} (wanted 5), ready {ready_s:.2f} s after END")
    assert abs(index - round((20 - clips.pre_roll * fps))) <= 2


def test_a_file_camera_clip_left_pending_by_a_crash_is_marked_missing_at_restart(tmp_path, small_clip_h264):
    store = EventStore(tmp_path / "var")
    store.record(_event(EventKind.START, time.time() - 30, None))
    store.set_clip("e1", CLIP_PENDING)
    stop = threading.Event()
    service = ClipService(store, {"porch": CameraConfig(source=str(small_clip_h264.path))}, ClipsConfig(), stop)
    service.start()
    try:
        row = store.get_event("e1")
        assert row.clip_state == CLIP_MISSING and "file camera" in row.clip_reason
    finally:
        stop.set()
        service.stop()
        store.close()
