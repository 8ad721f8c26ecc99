"""Capture from real video files (and the missing webcam of this machine): pacing, sampling,
looping, end of file, sources that do not open, corrupt files, resolution changes."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from raccoon_watch.capture import (
    CaptureThread,
    RateSampler,
    SourceKind,
    SourceOpenError,
    check_image,
    classify_source,
    open_source,
    probe_source,
)
from raccoon_watch.config import CameraConfig
from raccoon_watch.framequeue import FrameQueue
from raccoon_watch.types import Frame
from tests.fixtures.media import Clip, make_clip, synthetic_frames
from tests.waiting import wait_until


def camera(source: object, **overrides: object) -> CameraConfig:
    fields: dict[str, object] = {"source": str(source), "realtime": False, "detect_fps": 60.0, "reconnect_max_s": 0.2}
    fields.update(overrides)
    return CameraConfig(**fields)  # type: ignore[arg-type]


def drain(queue: FrameQueue) -> list[Frame]:
    frames = []
    while (frame := queue.get(timeout=0)) is not None:
        frames.append(frame)
    return frames


def run_to_end(cfg: CameraConfig, timeout: float = 20.0, queue_size: int = 1000) -> tuple[CaptureThread, list[Frame], float]:
    """Run a capture thread until it ends by itself; return it, the queued frames and the time taken."""
    queue, stop = FrameQueue(queue_size), threading.Event()
    thread = CaptureThread("cam", cfg, queue, stop)
    started = time.monotonic()
    thread.start()
    thread.join(timeout)
    elapsed = time.monotonic() - started
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    return thread, drain(queue), elapsed


# --- pure parts: tables -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, kind",
    [
        ("0", SourceKind.DEVICE),
        ("/dev/video2", SourceKind.DEVICE),
        ("rtsp://user:pw@10.0.0.2:554/stream1", SourceKind.RTSP),
        ("RTSPS://cam/live", SourceKind.RTSP),
        ("http://cam/mjpeg", SourceKind.HTTP),
        ("https://cam/video.m3u8", SourceKind.HTTP),
        ("clips/porch.mp4", SourceKind.FILE),
        ("/var/lib/clip 1.mkv", SourceKind.FILE),
    ],
)
def test_classify_source(source, kind):
    assert classify_source(source) is kind


@pytest.mark.parametrize(
    "image, problem",
    [
        (np.zeros((4, 6, 3), np.uint8), None),
        (None, "empty"),
        ("frame", "not an array"),
        (np.zeros((4, 6, 3), np.float32), "dtype"),
        (np.zeros((4, 6), np.uint8), "shape"),
        (np.zeros((4, 6, 4), np.uint8), "shape"),
        (np.zeros((0, 6, 3), np.uint8), "too small"),
    ],
)
def test_check_image(image, problem):
    got = check_image(image)
    assert (got is None) if problem is None else (got is not None and problem in got)


@pytest.mark.parametrize(
    "rate, fps, seconds, expected",
    [
        (5.0, 15.0, 2.0, 10),  # every 3rd frame
        (5.0, 30.0, 2.0, 10),
        (15.0, 15.0, 2.0, 30),  # every frame
        (60.0, 15.0, 2.0, 30),  # never more than the frames there are
        (2.0, 25.0, 3.0, 6),
    ],
)
def test_rate_sampler_hands_on_rate_times_duration(rate, fps, seconds, expected):
    sampler = RateSampler(rate)
    assert sum(sampler.due(i / fps) for i in range(round(fps * seconds))) == expected


def test_rate_sampler_does_not_burst_after_a_gap():
    sampler = RateSampler(5.0)
    assert sampler.due(0.0)
    assert sampler.due(10.0)  # a 10 s gap (stream stalled) gives one frame, not 50
    assert not sampler.due(10.1)
    assert sampler.due(10.2)


# --- open_source ------------------------------------------------------------------------------


def test_open_source_opens_a_file(small_clip: Clip):
    cap = open_source(str(small_clip.path), 2.0, 2.0)
    try:
        assert cap.isOpened()
    finally:
        cap.release()


@pytest.mark.parametrize(
    "source, message",
    [
        ("/nonexistent/porch.mp4", "no such file"),
        ("0", "camera device 0"),  # no webcam on these machines: the 'camera missing' path
        ("/dev/video0", "camera device /dev/video0"),
        ("rtsp://admin:hunter2@127.0.0.1:1/stream1", "rtsp stream rtsp://admin:***@127.0.0.1:1/stream1"),
    ],
)
def test_open_source_failures_are_clear_and_redacted(source, message):
    if source.startswith("/dev/video") and os.path.exists(source):
        pytest.skip(f"{source} exists on this machine")
    with pytest.raises(SourceOpenError, match="cannot open") as err:
        open_source(source, 2.0, 2.0)
    assert message in str(err.value)
    assert "hunter2" not in str(err.value)


def test_probe_source(small_clip: Clip):
    assert probe_source(camera(small_clip.path))
    assert not probe_source(camera("/nonexistent/porch.mp4"))
    assert not probe_source(camera("0"))


def test_corrupt_file_does_not_open(corrupt_clip: Clip):
    with pytest.raises(SourceOpenError):
        open_source(str(corrupt_clip.path), 2.0, 2.0)


# --- file sources -----------------------------------------------------------------------------


def test_fast_file_hands_on_every_frame_in_order_then_stops(small_clip: Clip):
    thread, frames, _ = run_to_end(camera(small_clip.path))
    assert [f.seq for f in frames] == list(range(small_clip.frames))
    stats = thread.stats
    assert stats.state == "stopped"
    assert stats.frames_read == stats.frames_decoded == stats.frames_queued == small_clip.frames
    assert (stats.frames_bad, stats.frames_dropped, stats.reconnects) == (0, 0, 0)
    assert (stats.width, stats.height, round(stats.fps)) == (small_clip.width, small_clip.height, small_clip.fps)
    first = frames[0]
    assert first.camera == "cam" and first.image.shape == (small_clip.height, small_clip.width, 3)
    assert first.image.dtype == np.uint8 and not first.image.flags.writeable
    assert abs(first.ts - time.time()) < 60 and first.mono <= time.monotonic()


def test_realtime_file_is_paced_fast_file_is_not(small_clip: Clip):
    _, paced, paced_s = run_to_end(camera(small_clip.path, realtime=True))
    _, fast, fast_s = run_to_end(camera(small_clip.path, realtime=False))
    assert len(paced) == len(fast) == small_clip.frames
    assert paced_s >= 0.75 * small_clip.duration_s  # 2 s clip: at least 1.5 s
    assert fast_s < paced_s / 2
    spans = paced[-1].mono - paced[0].mono  # frames spread over the clip's duration
    assert spans >= 0.75 * (small_clip.frames - 1) / small_clip.fps


@pytest.mark.parametrize("detect_fps, expected", [(5.0, 10), (2.0, 4), (15.0, 30)])
def test_detect_fps_sampling_decodes_only_what_it_hands_on(small_clip: Clip, detect_fps, expected):
    thread, frames, _ = run_to_end(camera(small_clip.path, detect_fps=detect_fps))
    assert abs(len(frames) - expected) <= 1
    assert thread.stats.frames_read == small_clip.frames
    assert thread.stats.frames_decoded == len(frames)  # grab() for all, retrieve() only these
    step = small_clip.fps / min(detect_fps, small_clip.fps)  # frames per sample, drift-free
    assert all(abs(f.seq - k * step) < 1 for k, f in enumerate(frames))


def test_sample_hook_decides_what_is_queued(small_clip: Clip):
    queue, stop = FrameQueue(100), threading.Event()
    thread = CaptureThread("cam", camera(small_clip.path), queue, stop, sample_hook=lambda f: f if f.seq % 2 == 0 else None)
    thread.start()
    thread.join(20)
    assert [f.seq for f in drain(queue)] == list(range(0, small_clip.frames, 2))
    assert thread.stats.frames_decoded == small_clip.frames


def test_full_queue_drops_oldest_and_counts(small_clip: Clip):
    thread, frames, _ = run_to_end(camera(small_clip.path), queue_size=4)
    assert [f.seq for f in frames] == list(range(small_clip.frames - 4, small_clip.frames))
    assert thread.stats.frames_dropped == small_clip.frames - 4


def test_drain_waits_for_the_consumer_loses_nothing_and_stamps_file_time(small_clip: Clip):
    """drain: a 2-frame queue and a slow consumer still get every frame, with ts/mono = t0 + seq / fps."""
    queue, stop = FrameQueue(2), threading.Event()
    thread = CaptureThread("cam", camera(small_clip.path, drain=True, realtime=True), queue, stop)
    thread.start()
    got: list[Frame] = []
    deadline = time.monotonic() + 20
    while (thread.is_alive() or queue.qsize()) and time.monotonic() < deadline:
        frame = queue.get(timeout=0.1)
        if frame is not None:
            got.append(frame)
            time.sleep(0.005)  # a detector slower than the decoder
    stop.set()
    thread.join(5)
    assert [f.seq for f in got] == list(range(small_clip.frames))
    assert thread.stats.frames_dropped == 0 and queue.dropped == 0
    t0, m0 = got[0].ts, got[0].mono
    assert all(f.ts == pytest.approx(t0 + f.seq / small_clip.fps) for f in got)
    assert all(f.mono == pytest.approx(m0 + f.seq / small_clip.fps) for f in got)


def test_drain_is_not_paced_even_with_realtime(small_clip: Clip):
    _, frames, elapsed = run_to_end(camera(small_clip.path, drain=True, realtime=True))
    assert len(frames) == small_clip.frames
    assert elapsed < 0.75 * small_clip.duration_s


def test_drain_is_ignored_for_a_live_source():
    thread = CaptureThread("cam", camera("rtsp://127.0.0.1:9/none", drain=True), FrameQueue(2), threading.Event())
    assert thread.drain is False


def test_loop_restarts_the_file_until_stopped(small_clip: Clip):
    queue, stop = FrameQueue(1000), threading.Event()
    thread = CaptureThread("cam", camera(small_clip.path, loop=True), queue, stop)
    thread.start()
    try:
        assert wait_until(lambda: thread.stats.frames_read >= 3 * small_clip.frames, 20)
        assert thread.is_alive() and thread.stats.state == "up"
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive() and thread.stats.state == "stopped"
    seqs = [f.seq for f in drain(queue)]
    assert seqs == sorted(seqs) and len(seqs) >= 3 * small_clip.frames  # seq keeps counting across loops
    assert thread.stats.reconnects == 0  # a loop is a reopen, not a reconnect


def test_stop_interrupts_a_paced_file_quickly(small_clip: Clip):
    queue, stop = FrameQueue(10), threading.Event()
    thread = CaptureThread("cam", camera(small_clip.path, realtime=True, loop=True), queue, stop)
    thread.start()
    assert queue.get(timeout=10) is not None
    stop.set()
    thread.join(2)
    assert not thread.is_alive()


# --- sources that fail ------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["/nonexistent/porch.mp4", "0", "/dev/video0", "corrupt"])
def test_source_that_never_opens_is_down_and_retried(source, corrupt_clip: Clip):
    if source == "corrupt":
        source = str(corrupt_clip.path)
    if source == "/dev/video0" and os.path.exists(source):
        pytest.skip("/dev/video0 exists on this machine")
    queue, stop = FrameQueue(10), threading.Event()
    thread = CaptureThread("cam", camera(source, reconnect_max_s=0.1), queue, stop)
    thread.start()
    try:
        assert wait_until(lambda: thread.stats.open_failures >= 3, 10)
        assert thread.is_alive() and thread.stats.state == "down"
        assert "cannot open" in thread.stats.last_error
    finally:
        stop.set()
        thread.join(5)
    assert not thread.is_alive() and thread.stats.state == "stopped"
    assert queue.qsize() == 0 and thread.stats.frames_read == 0


def test_file_that_appears_later_is_picked_up(tmp_path: Path, small_clip: Clip):
    path = tmp_path / "late.mp4"
    queue, stop = FrameQueue(100), threading.Event()
    thread = CaptureThread("cam", camera(path, reconnect_max_s=0.1), queue, stop)
    thread.start()
    try:
        assert wait_until(lambda: thread.stats.state == "down", 5)
        path.write_bytes(small_clip.path.read_bytes())
        thread.join(20)
    finally:
        stop.set()
        thread.join(5)
    assert thread.stats.state == "stopped"
    assert len(drain(queue)) == small_clip.frames


# --- resolution changes -----------------------------------------------------------------------


def test_resolution_change_inside_a_stream_does_not_break_capture(resolution_change_clip: Clip):
    thread, frames, _ = run_to_end(camera(resolution_change_clip.path))
    assert len(frames) == resolution_change_clip.frames
    assert thread.stats.frames_bad == 0 and thread.stats.state == "stopped"
    assert all(check_image(f.image) is None for f in frames)


def test_resolution_change_on_reopen_is_accepted(tmp_path: Path, small_clip: Clip):
    """A looping source whose file is replaced by a bigger one: the new size is taken on reopen."""
    path = tmp_path / "cam.mp4"
    path.write_bytes(small_clip.path.read_bytes())
    bigger = make_clip(synthetic_frames(15, (480, 272)), tmp_path / "bigger.mp4")
    queue, stop = FrameQueue(1000), threading.Event()
    thread = CaptureThread("cam", camera(path, loop=True, realtime=True), queue, stop)
    thread.start()
    try:
        assert queue.get(timeout=10) is not None
        os.replace(bigger, path)  # the open file keeps playing; the next loop opens the new one
        assert wait_until(lambda: thread.stats.width == 480, 15)
    finally:
        stop.set()
        thread.join(5)
    sizes = {(f.width, f.height) for f in drain(queue)}
    assert {(320, 240), (480, 272)} <= sizes
    assert thread.stats.frames_bad == 0


# --- the shared-data clips and the demo clip --------------------------------------------------


def test_raccoon_clip_shows_the_raccoon_only_in_its_range(raccoon_clip_mp4: Clip):
    thread, frames, _ = run_to_end(camera(raccoon_clip_mp4.path))
    assert len(frames) == raccoon_clip_mp4.frames == 120
    assert (frames[0].width, frames[0].height) == (640, 360)
    empty = frames[0].image.astype(np.int16)
    changed = [int(np.abs(f.image.astype(np.int16) - empty).mean() > 10) for f in frames]
    inside = raccoon_clip_mp4.raccoon_frames
    assert all(changed[i] for i in inside)
    assert not any(changed[i] for i in range(len(frames)) if i not in inside)


def test_demo_clip_is_built_once_and_cached(shared_dir: Path, tmp_path: Path):
    from raccoon_watch.demo import DEMO_FPS, DEMO_TIMELINE, ensure_demo_clip

    out = ensure_demo_clip(shared_dir, tmp_path / "demo" / "demo.mp4")
    built = out.stat().st_mtime_ns
    assert ensure_demo_clip(shared_dir, out) == out and out.stat().st_mtime_ns == built
    cap = open_source(str(out), 2.0, 2.0)
    try:
        assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == sum(round(s * DEMO_FPS) for _, s in DEMO_TIMELINE)
    finally:
        cap.release()


def test_demo_clip_needs_the_dataset(tmp_path: Path):
    from raccoon_watch.demo import ensure_demo_clip

    with pytest.raises(FileNotFoundError, match="raccoon dataset"):
        ensure_demo_clip(tmp_path, tmp_path / "demo.mp4")


def test_walking_and_arriving_composites_move_the_photo_and_its_boxes() -> None:
    """The clips' subjects move (a still picture never alerts): walk_onto crosses the frame, arrive_onto
    walks in and then sits where letterbox_onto puts it; the boxes go with the photo."""
    from raccoon_watch.demo import arrive_onto, letterbox_onto, walk_onto

    background = np.zeros((360, 640, 3), np.uint8)
    photo = np.full((300, 400, 3), 200, np.uint8)
    box_px = [(100, 50, 300, 250)]
    walk = walk_onto(background, photo, box_px, 10)
    xs = [c.boxes[0][0] for c in walk]
    assert xs == sorted(xs) and xs[0] < xs[-1]  # left to right, steadily
    assert all(0.0 <= v <= 1.0 for c in walk for v in c.boxes[0])
    arrive = arrive_onto(background, photo, box_px, 10, walking=4)
    still = letterbox_onto(background, photo, box_px)
    assert arrive[0].boxes[0][0] < still.boxes[0][0]
    assert all(c.boxes == still.boxes and (c.image == still.image).all() for c in arrive[3:])
