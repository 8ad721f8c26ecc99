"""Event clips: the pure choices as tables, then a real ffmpeg recorder on a real RTSP camera.

The recorder stream-copies the camera's H.264 into segments; an event's clip is cut from them with
its pre/post roll, plays as MP4 (ffprobe reads it back), and a camera without a recording, a dead
recorder or a daemon that died mid-cut leave the event with a reason, never a stuck camera.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from raccoon_watch.config import CameraConfig, ClipsConfig
from raccoon_watch.review.clips import ClipService, cut_clip, recording_reason
from raccoon_watch.review.clipwindow import (
    ClipJob,
    Segment,
    clip_window,
    coverage_note,
    covered_seconds,
    parse_list_line,
    select_segments,
)
from raccoon_watch.store import EventStore
from raccoon_watch.store.retention import RetentionPolicy
from raccoon_watch.store.schema import CLIP_MISSING, CLIP_PENDING, CLIP_READY
from raccoon_watch.types import Event, EventKind
from tests.waiting import wait_until

P = Path("/x")


def seg(a: float, b: float) -> Segment:
    return Segment(P / f"{a}.ts", a, b)


@pytest.mark.parametrize("segments, start, end, expected", [
    ([seg(0, 2), seg(2, 4), seg(4, 6)], 2.5, 3.5, [(2, 4)]),
    ([seg(0, 2), seg(2, 4), seg(4, 6)], 1.0, 5.0, [(0, 2), (2, 4), (4, 6)]),
    ([seg(4, 6), seg(0, 2)], 0.0, 10.0, [(0, 2), (4, 6)]),     # oldest first, whatever the input order
    ([seg(0, 2)], 2.0, 3.0, []),                               # touching the end only: not overlapping
    ([], 0.0, 1.0, []),
])
def test_select_segments(segments, start, end, expected):
    assert [(s.start, s.end) for s in select_segments(segments, start, end)] == expected


@pytest.mark.parametrize("segments, start, end, expected", [
    ([], 0.0, 4.0, 0.0),
    ([seg(0, 2), seg(2, 4)], 0.5, 3.5, 3.0),  # covered: the wanted range
    ([seg(3, 4)], 0.0, 4.0, 1.0),  # the recording starts late
    ([seg(0, 2)], 0.0, 6.0, 2.0),  # ... or ends early (the daemon died before the post-roll)
])
def test_covered_seconds(segments, start, end, expected):
    assert covered_seconds(segments, start, end) == pytest.approx(expected)


@pytest.mark.parametrize("segments, start, end, expected", [
    ([seg(0, 2), seg(2, 4)], 0.5, 3.5, None),
    ([], 0.0, 1.0, "no recorded segment"),
    ([seg(3, 4)], 0.0, 4.0, "starts 3.0 s late"),
    ([seg(0, 2)], 0.0, 6.0, "ends 4.0 s early"),
    ([seg(0, 2), seg(5, 7)], 0.0, 7.0, "3.0 s gap"),
])
def test_coverage_note(segments, start, end, expected):
    note = coverage_note(segments, start, end)
    assert note is None if expected is None else expected in note


@pytest.mark.parametrize("line, expected", [
    ("1700-000001.ts,2.000000,4.000000", ("1700-000001.ts", 2.0, 4.0)),
    ('"a,b.ts",0.5,1.5', ("a,b.ts", 0.5, 1.5)),
    ("garbage", None),
    ("x.ts,one,two", None),
    ("", None),
])
def test_parse_list_line(line, expected):
    assert parse_list_line(line) == expected


@pytest.mark.parametrize("source, enabled, records", [
    ("rtsp://u:p@cam/stream", True, True),
    ("http://cam/video.mjpg", True, True),
    ("rtsp://cam/stream", False, False),
    ("/videos/porch.mp4", True, True),  # cut from the file itself
    ("/videos/porch.mp4", False, False),
    ("0", True, False),
])
def test_which_cameras_record(source, enabled, records):
    reason = recording_reason(CameraConfig(source=source), ClipsConfig(enabled=enabled))
    assert (reason is None) == records
    if reason is not None:
        assert "clip" in reason


def test_clip_window_uses_the_rolls():
    assert clip_window(100.0, 130.0, ClipsConfig(pre_roll=5, post_roll=3)) == (95.0, 133.0)


# --- real ffmpeg, real RTSP camera -----------------------------------------------------------------

def _ffprobe_duration(path: Path) -> float:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    assert info["streams"][0]["codec_name"] == "h264"
    return float(info["format"]["duration"])


def _moov_before_mdat(path: Path) -> bool:
    data = path.read_bytes()
    return 0 <= data.find(b"moov") < data.find(b"mdat")


def _event(kind: EventKind, eid: str, first_seen: float, end: float | None, camera: str = "porch") -> Event:
    return Event(id=eid, kind=kind, camera=camera, label="raccoon", start_time=first_seen, end_time=end,
                 score=0.9, top_score=0.9, box=(0.1, 0.1, 0.5, 0.5), first_seen_ts=first_seen)


@pytest.fixture
def ffmpeg_bin() -> str:
    path = shutil.which("ffmpeg")
    if path is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg/ffprobe not installed (apt-get install ffmpeg)")
    return path


class FrameClock:
    """Reads the RTSP camera as the daemon's capture does (OpenCV/FFmpeg, wall time at each read) and
    says which frame of the looped source clip it saw when: each decoded frame is matched to the
    nearest source frame (they differ by the number drawn in the corner and the square's place)."""

    def __init__(self, url: str, source_frames) -> None:
        import cv2

        from raccoon_watch import capture  # noqa: F401  (sets OpenCV's FFmpeg options as the daemon does)

        self._cv2 = cv2
        self.refs = [self._small(f) for f in source_frames]
        self.seen: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _small(self, image):
        import numpy as np

        return self._cv2.resize(self._cv2.cvtColor(image, self._cv2.COLOR_BGR2GRAY), (80, 60)).astype(np.int16)

    def index(self, image) -> int:
        small = self._small(image)
        return min(range(len(self.refs)), key=lambda i: int(abs(self.refs[i] - small).sum()))

    def _run(self) -> None:
        while not self._stop.is_set():
            ok, image = self._cap.read()
            if ok:
                self.seen.append((time.time(), self.index(image)))

    def wall_time_of(self, index: int, near: float) -> float:
        return min((t for t, i in self.seen if i == index), key=lambda t: abs(t - near))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._cap.release()


@pytest.mark.slow
@pytest.mark.rtsp
def test_an_event_gets_its_clip_from_the_rtsp_recording(tmp_path, rtsp_server, small_clip_h264, ffmpeg_bin):
    import cv2

    from tests.fixtures.media import synthetic_frames

    server = rtsp_server(small_clip_h264)
    frame_clock = FrameClock(server.url, synthetic_frames(small_clip_h264.frames))
    store = EventStore(tmp_path / "var")
    clips = ClipsConfig(pre_roll=2.0, post_roll=1.0, segment_s=1.0)
    stop = threading.Event()
    service = ClipService(store, {"porch": CameraConfig(source=server.url), "door": CameraConfig(source="0")},
                          clips, stop)
    service.start()
    try:
        rec = service.recorders["porch"]
        # a pre-roll's worth of recording first (the clip cannot start before the recording did)
        assert wait_until(lambda: len(rec.segments()) >= clips.pre_roll / clips.segment_s + 2, timeout=30)
        first_seen = time.time()
        start = _event(EventKind.START, "e1", first_seen, None)
        store.record(start)
        service.on_event(start)
        assert store.get_event("e1").clip_state == CLIP_PENDING
        assert service.event_fields(start) == {"has_clip": True, "clip_path": "/events/e1/clip.mp4"}
        time.sleep(3.0)
        last_seen = time.time()
        end = _event(EventKind.END, "e1", first_seen, last_seen)
        store.record(end)
        ended_mono = time.monotonic()
        service.on_event(end)
        assert wait_until(lambda: store.get_event("e1").clip_state != CLIP_PENDING, timeout=20)
        ready_after_end_s = time.monotonic() - ended_mono
        row = store.get_event("e1")
        assert row.clip_state == CLIP_READY, row.clip_reason
        path = store.media_file("e1", "clips")
        assert path is not None and path.suffix == ".mp4"
        wanted = (last_seen + clips.post_roll) - (first_seen - clips.pre_roll)
        # starts on the keyframe at or before the wanted start: the test clip has one per second
        assert wanted - 0.5 <= _ffprobe_duration(path) <= wanted + 1.5
        assert _moov_before_mdat(path)  # faststart: a browser plays it before it has all of it
        assert ready_after_end_s < clips.post_roll + 3 * clips.segment_s + 5  # the cutter's own deadline

        # where the clip starts, on the clock of a capture reading the same camera: the first frame
        # of the clip is found in what the reader saw (the loop is 4 s, so an error under 2 s is
        # unambiguous); the target is within 1 s (keyframe every 1 s in this clip)
        ok, first_image = cv2.VideoCapture(str(path)).read()
        assert ok
        wanted_start = first_seen - clips.pre_roll
        start_error_s = frame_clock.wall_time_of(frame_clock.index(first_image), wanted_start) - wanted_start
        print(f"clip start - wanted start: {start_error_s:+.2f} s; ready {ready_after_end_s:.2f} s after END")
        assert abs(start_error_s) < 2.0

        # a camera that records nothing says so on its event
        other = _event(EventKind.START, "e2", time.time(), None, camera="door")
        store.record(other)
        service.on_event(other)
        row = store.get_event("e2")
        assert row.clip_state == CLIP_MISSING and "device camera records no clips" in row.clip_reason
    finally:
        frame_clock.close()
        stop.set()
        service.stop()
        store.close()


@pytest.mark.slow
def test_a_dead_recorder_leaves_a_reason_and_keeps_retrying(tmp_path, ffmpeg_bin):
    store = EventStore(tmp_path / "var")
    stop = threading.Event()
    cam = CameraConfig(source="rtsp://127.0.0.1:9/nothing")  # port 9 (discard): refused at once
    service = ClipService(store, {"porch": cam}, ClipsConfig(pre_roll=0.5, post_roll=0.5, segment_s=1.0), stop)
    service.start()
    try:
        rec = service.recorders["porch"]
        assert wait_until(lambda: rec.restarts >= 1, timeout=20)
        assert service.snapshot()["porch"]["reason"]  # ffmpeg's own words, for the page
        t = time.time()
        store.record(_event(EventKind.START, "e1", t, None))
        service.on_event(_event(EventKind.START, "e1", t, None))
        service.on_event(_event(EventKind.END, "e1", t, t + 0.1))
        assert wait_until(lambda: store.get_event("e1").clip_state == CLIP_MISSING, timeout=20)
        assert "no recorded segment" in store.get_event("e1").clip_reason
    finally:
        stop.set()
        service.stop()
        store.close()


@pytest.mark.slow
def test_a_clip_left_pending_by_a_crash_is_cut_or_marked_missing_at_restart(tmp_path, small_clip_h264, ffmpeg_bin):
    """The daemon died after START (clip pending, segments on disk): the next ClipService cuts it from
    the segments its index lists; an event whose segments are gone is marked missing with the reason."""
    store = EventStore(tmp_path / "var")
    rec_dir = tmp_path / "var" / "recordings" / "porch"
    rec_dir.mkdir(parents=True)
    t0 = time.time() - 30
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(small_clip_h264.path), "-c", "copy", "-f", "segment",
                    "-segment_time", "1", "-segment_format", "mpegts", str(rec_dir / "run-%06d.ts")], check=True)
    names = sorted(p.name for p in rec_dir.glob("*.ts"))
    (rec_dir / "index.jsonl").write_text("".join(
        json.dumps({"name": n, "start": t0 + i, "end": t0 + i + 1}) + "\n" for i, n in enumerate(names)))
    for eid, first in (("kept", t0 + 1.5), ("gone", t0 - 600)):  # both ended; the daemon died before the cut
        store.record(_event(EventKind.END, eid, first, first + 1.5))
        store.set_clip(eid, CLIP_PENDING)
    stop = threading.Event()
    clips = ClipsConfig(pre_roll=0.5, post_roll=0.5, segment_s=1.0, buffer_s=3600)
    # the camera itself is unreachable now: recovery works from what is on disk
    service = ClipService(store, {"porch": CameraConfig(source="rtsp://127.0.0.1:9/x")}, clips, stop)
    service.start()
    try:
        assert wait_until(lambda: not store.events_with("clip_pending"), timeout=30)
        assert store.get_event("kept").clip_state == CLIP_READY
        assert 2.0 <= _ffprobe_duration(store.media_file("kept", "clips")) <= 4.0  # 1.5 s + the rolls
        assert store.get_event("gone").clip_state == CLIP_MISSING
        assert "no recorded segment" in store.get_event("gone").clip_reason
    finally:
        stop.set()
        service.stop()
        store.close()


@pytest.mark.parametrize("start_s, first_frame", [(1.0, 15), (1.4, 21), (2.8, 42), (0.0, 0)])
def test_the_cut_starts_on_the_wanted_frame(tmp_path, small_clip_h264, ffmpeg_bin, start_s, first_frame):
    """Segments of a clip whose frames carry their number, each given its wall time; the cut's first
    shown frame is the one at the wanted time, not the keyframe before or after it (MPEG-TS seeking
    with stream copy lands on the next keyframe; the MP4 cut with an edit list does not)."""
    import cv2

    from tests.fixtures.media import synthetic_frames

    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    subprocess.run(["ffmpeg", "-loglevel", "error", "-i", str(small_clip_h264.path), "-c", "copy", "-f", "segment",
                    "-segment_time", "1", "-segment_format", "mpegts", str(rec_dir / "s-%03d.ts")], check=True)
    t0 = 1000.0
    segments = [Segment(p, t0 + i, t0 + i + 1) for i, p in enumerate(sorted(rec_dir.glob("*.ts")))]
    out = tmp_path / "clip.mp4"
    assert cut_clip(segments, ClipJob("e", "porch", t0 + start_s, t0 + start_s + 1.0), out, ffmpeg_bin) is None
    ok, image = cv2.VideoCapture(str(out)).read()
    assert ok
    refs = [cv2.resize(f, (80, 60)).astype(int) for f in synthetic_frames(small_clip_h264.frames)]
    small = cv2.resize(image, (80, 60)).astype(int)
    assert min(range(len(refs)), key=lambda i: abs(refs[i] - small).sum()) == first_frame
    assert 0.9 <= _ffprobe_duration(out) <= 1.1


class ManualClock:
    """A wall clock and a monotonic one, moved by hand; ``step`` moves the wall clock only (NTP)."""

    def __init__(self) -> None:
        self.mono, self.offset = 500.0, 1_700_000_000.0

    def time(self) -> float:
        return self.mono + self.offset

    def monotonic(self) -> float:
        return self.mono


@pytest.mark.parametrize("step", [+3600.0, -3600.0, 0.0])
def test_segment_times_are_monotonic_whatever_the_wall_clock_does(tmp_path, step):
    """The recorder's own segment list, read as ffmpeg writes it (a CSV line and the file's mtime at
    its close, on the wall clock of that moment); the wall clock steps between the second and the
    third segment: the segments stay back to back on the monotonic clock, so an event's window
    (monotonic) selects them all (issue 21: stepped clocks lost clips)."""
    import os

    from raccoon_watch.review.clips import SegmentRecorder
    from raccoon_watch.review.clipwindow import select_segments

    clock = ManualClock()
    rec = SegmentRecorder("porch", "rtsp://x", tmp_path, ClipsConfig(segment_s=2.0), threading.Event(), clock=clock)
    rec.dir.mkdir(parents=True)
    listing = rec.dir / "run.csv"
    offsets: list[float] = []
    seen, starts = 0, []
    for i in range(5):
        clock.mono += 2.0  # segment i (stream seconds 2i .. 2i+2) closes 2 s after the one before
        if i == 2:
            clock.offset += step
        path = rec.dir / f"run-{i:06d}.ts"
        path.write_bytes(b"\0" * 188)
        os.utime(path, (clock.time() - 0.05, clock.time() - 0.05))  # written a moment before we look
        with open(listing, "a") as fh:
            fh.write(f"{path.name},{2.0 * i:.6f},{2.0 * i + 2:.6f}\n")
        starts.append(clock.mono - 2.0)
        seen = rec._read_list(listing, seen, offsets)  # noqa: SLF001 (the recorder's poll, one step)
    segments = rec.segments()
    assert [s.start for s in segments] == pytest.approx([t - 0.05 for t in starts])
    assert all(b.start == pytest.approx(a.end) for a, b in zip(segments, segments[1:])), "a gap or an overlap"
    # an event sighted from segment 1 to segment 3 on the monotonic clock gets all three
    assert len(select_segments(segments, starts[1] + 0.5, starts[3] + 1.0)) == 3


def test_cut_clip_without_segments_says_why(tmp_path):
    why = cut_clip([], ClipJob("e", "porch", 10.0, 20.0), tmp_path / "e.mp4", "ffmpeg")
    assert why is not None and "no recorded segment" in why
    assert not (tmp_path / "e.mp4").exists()


def test_event_messages_carry_has_clip_and_the_clip_path():
    from raccoon_watch.sinks.discovery import Topics
    from raccoon_watch.sinks.mqtt import event_messages

    event = _event(EventKind.START, "e1", 100.0, None)
    extra = {"has_clip": True, "clip_path": "/events/e1/clip.mp4"}
    by_part = {m.part: json.loads(m.payload) for m in event_messages(event, None, Topics("rw"), extra=extra)
               if m.part in ("events", "event")}
    assert by_part["events"]["after"]["has_clip"] is True
    assert by_part["event"]["clip_path"] == "/events/e1/clip.mp4"  # the HA event entity's attributes


def test_retention_sweeps_clips_and_frames_with_the_snapshots(tmp_path):
    import os

    store = EventStore(tmp_path, RetentionPolicy(days=1.0, snapshot_mb=0, clip_mb=0))
    now = time.time()
    store.record(_event(EventKind.END, "old", now - 3 * 86400, now - 3 * 86400 + 5))
    store.record(_event(EventKind.END, "new", now - 60, now - 55))  # the newest event's media always stay
    clip = store.media_path("clips", "porch", "old")
    clip.parent.mkdir(parents=True)
    clip.write_bytes(b"\0" * 100)
    store.set_clip("old", CLIP_READY, clip=clip)
    store.write_frame("porch", "old", b"\xff\xd8jpeg")
    for path in (clip, store.media_path("frames", "porch", "old")):
        os.utime(path, (now - 3 * 86400, now - 3 * 86400))
    assert store.sweep(now=now)["media_deleted"] == 2  # the count covers every media file
    row = store.get_event("old")
    assert row.clip is None and row.frame is None
    assert row.clip_state == CLIP_MISSING and "retention" in row.clip_reason
    assert store.media_file("old", "clips") is None
