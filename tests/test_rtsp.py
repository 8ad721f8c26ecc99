"""Capture from a real RTSP server on 127.0.0.1: frames flow, and the camera survives the server
being killed, hung (SIGSTOP) and restarted, 20 times over without leaking fds or threads.

Bounds are generous behaviour checks (issue 5: down within 10 s, back within 5 s of the server
returning, here allowed 20 s); measured times are printed (``pytest -s``) for the record.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from raccoon_watch.capture import CaptureThread
from raccoon_watch.config import CameraConfig
from raccoon_watch.framequeue import FrameQueue
from tests.fixtures.media import Clip
from tests.fixtures.rtsp import RtspServer

pytestmark = pytest.mark.rtsp

DOWN_WITHIN_S = 10.0  # issue 5: a killed or hung server marks the camera down within 10 s
BACK_WITHIN_S = 20.0  # generous; the target is 5 s, measured numbers are printed


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> float | None:
    """Seconds until ``predicate()`` held, or None if it did not within ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    return None


class Camera:
    """A running capture thread with a consumer that empties its queue."""

    def __init__(self, url: str, **overrides: object) -> None:
        fields: dict[str, object] = {"source": url, "detect_fps": 5.0, "reconnect_max_s": 1.0}
        fields.update(overrides)
        self.queue = FrameQueue(1000)
        self.stop_event = threading.Event()
        self.thread = CaptureThread("door", CameraConfig(**fields), self.queue, self.stop_event)  # type: ignore[arg-type]
        self.frames_seen = 0

    @property
    def stats(self):
        return self.thread.stats

    def flowing(self, n: int = 3) -> Callable[[], bool]:
        """Predicate: state 'up' and ``n`` more frames read than when it was made."""
        start = self.stats.frames_read
        return lambda: self.stats.state == "up" and self.stats.frames_read >= start + n

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "capture thread did not stop"


@pytest.fixture
def camera_factory() -> Iterator[Callable[..., Camera]]:
    cameras: list[Camera] = []

    def make(url: str, **overrides: object) -> Camera:
        cam = Camera(url, **overrides)
        cameras.append(cam)
        cam.thread.start()
        return cam

    yield make
    for cam in cameras:
        cam.close()


@pytest.fixture
def server(rtsp_server: Callable[..., RtspServer], small_clip_h264: Clip) -> RtspServer:
    return rtsp_server(small_clip_h264)


def test_frames_arrive_over_rtsp(server: RtspServer, camera_factory, small_clip_h264: Clip):
    cam = camera_factory(server.url)
    assert wait_for(lambda: cam.queue.qsize() >= 10, 20) is not None, cam.stats
    frame = cam.queue.get(timeout=1)
    assert frame is not None and frame.camera == "door"
    assert (frame.width, frame.height) == (small_clip_h264.width, small_clip_h264.height)
    stats = cam.stats
    assert stats.state == "up" and stats.kind == "rtsp" and stats.frames_bad == 0
    assert round(stats.fps) == small_clip_h264.fps
    # detect_fps 5 of a 15 fps stream: about a third of the frames read are decoded
    assert stats.frames_decoded < stats.frames_read
    print(f"\nRTSP open took {stats.last_open_s:.3f} s")


def test_server_killed_then_restarted(server: RtspServer, camera_factory):
    cam = camera_factory(server.url)
    assert wait_for(cam.flowing(), 20) is not None, cam.stats
    server.kill()
    down_s = wait_for(lambda: cam.stats.state == "down", DOWN_WITHIN_S)
    assert down_s is not None, cam.stats
    time.sleep(3)  # stays down, keeps retrying, nothing crashes
    assert cam.thread.is_alive() and cam.stats.state == "down" and cam.stats.open_failures >= 1
    server.restart()
    back_s = wait_for(cam.flowing(), BACK_WITHIN_S)
    assert back_s is not None, cam.stats
    assert cam.stats.reconnects == 1
    print(f"\nkilled: down after {down_s:.2f} s; restarted: frames again after {back_s:.2f} s")


@pytest.mark.parametrize("recover", ["cont", "restart"])
def test_hung_server_is_marked_down_then_recovers(server: RtspServer, camera_factory, recover: str):
    cam = camera_factory(server.url, read_timeout_s=5.0, open_timeout_s=5.0)
    assert wait_for(cam.flowing(), 20) is not None, cam.stats
    server.stop()  # SIGSTOP: TCP stays open, nothing arrives; only the read timeout can tell
    down_s = wait_for(lambda: cam.stats.state == "down", DOWN_WITHIN_S)
    assert down_s is not None, cam.stats
    assert "timed out" in cam.stats.last_error
    if recover == "cont":
        server.cont()
    else:
        server.restart()
    back_s = wait_for(cam.flowing(), BACK_WITHIN_S)
    assert back_s is not None, cam.stats
    print(f"\nhung: down after {down_s:.2f} s; {recover}: frames again after {back_s:.2f} s")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def native_threads() -> int:
    return len(os.listdir("/proc/self/task"))


@pytest.mark.slow
def test_twenty_drop_reconnect_cycles_leak_nothing(server: RtspServer, camera_factory):
    cam = camera_factory(server.url, reconnect_max_s=0.25)
    assert wait_for(cam.flowing(), 20) is not None, cam.stats
    fds, py_threads, os_threads = open_fds(), threading.active_count(), native_threads()
    back = []
    for cycle in range(20):
        server.kill()
        assert wait_for(lambda: cam.stats.state == "down", DOWN_WITHIN_S) is not None, (cycle, cam.stats)
        server.restart()
        back_s = wait_for(cam.flowing(2), BACK_WITHIN_S)
        assert back_s is not None, (cycle, cam.stats)
        back.append(back_s)
    assert cam.stats.reconnects == 20
    # The capture's VideoCapture, sockets and FFmpeg threads were released on every drop.
    assert open_fds() <= fds + 2, f"fds {fds} -> {open_fds()}"
    assert threading.active_count() == py_threads
    assert native_threads() <= os_threads + 2, f"threads {os_threads} -> {native_threads()}"
    print(f"\n20 cycles: back after restart median {sorted(back)[10]:.2f} s, max {max(back):.2f} s")


def test_raccoon_clip_streams_over_rtsp(rtsp_server: Callable[..., RtspServer], raccoon_clip_h264: Clip, camera_factory):
    server = rtsp_server(raccoon_clip_h264)
    cam = camera_factory(server.url)
    frame = cam.queue.get(timeout=20)
    assert frame is not None, cam.stats
    assert (frame.width, frame.height) == (raccoon_clip_h264.width, raccoon_clip_h264.height)
