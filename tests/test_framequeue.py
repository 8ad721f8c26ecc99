"""FrameQueue: what it drops and hands out (the rules are raccoon_watch.schedule's, tabled in
tests/test_schedule.py), counters, per-camera lag, and threads hammering it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from raccoon_watch.framequeue import FrameQueue
from raccoon_watch.types import Frame

_IMAGE = np.zeros((4, 4, 3), np.uint8)


def frame(camera: str, seq: int, mono: float = 0.0) -> Frame:
    return Frame(camera=camera, seq=seq, ts=0.0, mono=mono, image=_IMAGE)


def ids(frames: list[Frame | None]) -> list[str | None]:
    return [None if f is None else f"{f.camera}{f.seq}" for f in frames]


@pytest.mark.parametrize(
    "maxsize, puts, evicted, remaining, dropped",
    [
        (3, ["a0", "a1"], [None, None], ["a0", "a1"], 0),
        (3, ["a0", "a1", "a2"], [None, None, None], ["a0", "a1", "a2"], 0),
        (3, ["a0", "a1", "a2", "a3"], [None, None, None, "a0"], ["a1", "a2", "a3"], 1),
        (1, ["a0", "b0", "a1"], [None, "a0", "b0"], ["a1"], 2),
        (2, ["a0", "b0", "a1", "b1", "a2"], [None, None, "a0", "b0", "a1"], ["b1", "a2"], 3),
    ],
)
def test_put_drops_oldest(maxsize, puts, evicted, remaining, dropped):
    q = FrameQueue(maxsize)
    got = [q.put(frame(p[0], int(p[1:]))) for p in puts]
    assert ids(got) == evicted
    assert q.dropped == dropped
    assert q.qsize() == len(remaining)
    assert ids([q.get(timeout=0) for _ in remaining]) == remaining
    assert q.get(timeout=0) is None


def test_dropped_by_camera_counts_the_evicted_frames_camera():
    q = FrameQueue(2)
    for p in ["a0", "a1", "b0", "b1", "a2"]:
        q.put(frame(p[0], int(p[1:])))
    assert q.dropped_by_camera() == {"a": 2, "b": 1}


def test_bad_sizes_are_errors():
    with pytest.raises(ValueError, match="maxsize"):
        FrameQueue(0)
    with pytest.raises(ValueError, match="max_n"):
        FrameQueue(1).get_batch(0, 0.0)
    with pytest.raises(ValueError, match="lane_depth"):
        FrameQueue(4, lane_depth=0)


def test_get_times_out_empty():
    q = FrameQueue(2)
    start = time.monotonic()
    assert q.get(timeout=0.1) is None
    assert time.monotonic() - start < 2.0


def test_get_wakes_on_put_from_another_thread():
    q = FrameQueue(2)
    threading.Timer(0.05, q.put, args=(frame("a", 7),)).start()
    got = q.get(timeout=5.0)
    assert got is not None and got.seq == 7


@pytest.mark.parametrize(
    "queued, max_n, batch, left",
    [
        (["a0", "a1", "b0", "c0"], 3, ["a0", "b0", "c0"], ["a1"]),  # one per camera first
        (["a0", "a1", "a2", "b0"], 3, ["a0", "a1", "b0"], ["a2"]),  # then oldest of the rest
        (["a0", "a1", "a2"], 2, ["a0", "a1"], ["a2"]),
        (["a0", "b0"], 4, ["a0", "b0"], []),  # short batch after wait_s
        # round robin: c (never served) before b and a, then b (served before a)
        (["b0", "a0", "b1", "a1", "c0"], 2, ["b0", "a0"], ["c0", "b1", "a1"]),
    ],
)
def test_get_batch_prefers_different_cameras(queued, max_n, batch, left):
    q = FrameQueue(10)
    for p in queued:
        q.put(frame(p[0], int(p[1:])))
    assert ids(q.get_batch(max_n, wait_s=0.01)) == batch
    assert ids([q.get(timeout=0) for _ in left]) == left
    assert q.qsize() == 0


def test_get_batch_empty_returns_empty_list():
    assert FrameQueue(2).get_batch(4, wait_s=0.01, timeout=0.05) == []


def test_get_batch_waits_to_fill():
    q = FrameQueue(10)
    q.put(frame("a", 0))
    threading.Timer(0.05, q.put, args=(frame("b", 0),)).start()
    assert ids(q.get_batch(2, wait_s=5.0)) == ["a0", "b0"]  # returned once full, not after 5 s


def test_threads_hammering_lose_nothing_unaccounted():
    """4 producers x 2000 frames, 2 consumers: every frame is either consumed or counted dropped."""
    q = FrameQueue(16)
    producers_done = threading.Event()
    consumed: list[Frame] = []
    lock = threading.Lock()

    def produce(cam: str) -> None:
        for i in range(2000):
            q.put(frame(cam, i))

    def consume() -> None:
        while True:
            got = q.get_batch(4, wait_s=0.0, timeout=0.05)
            with lock:
                consumed.extend(got)
            if not got and producers_done.is_set():
                return

    consumers = [threading.Thread(target=consume) for _ in range(2)]
    producers = [threading.Thread(target=produce, args=(c,)) for c in "abcd"]
    for t in consumers + producers:
        t.start()
    for t in producers:
        t.join(timeout=30)
    producers_done.set()
    for t in consumers:
        t.join(timeout=30)
    assert q.qsize() == 0
    assert len(consumed) + q.dropped == 4 * 2000
    assert sum(q.dropped_by_camera().values()) == q.dropped
    for cam in "abcd":  # no frame comes out twice
        seqs = [f.seq for f in consumed if f.camera == cam]
        assert len(set(seqs)) == len(seqs)



def test_a_camera_without_a_visit_keeps_its_newest_frames_only():
    q = FrameQueue(16, lane_depth=1)
    for p in ["a0", "b0", "a1", "a2", "b1"]:
        q.put(frame(p[0], int(p[1:])))
    assert q.dropped_by_camera() == {"a": 2, "b": 1}
    assert ids(q.get_batch(8, wait_s=0.0)) == ["a2", "b1"]


def test_a_camera_with_an_open_visit_keeps_every_frame_and_goes_first():
    visiting = {"v"}
    q = FrameQueue(6, lane_depth=1, visit_open=lambda c: c in visiting)
    for p in ["a0", "v0", "b0", "v1", "a1", "v2", "b1", "v3"]:
        q.put(frame(p[0], int(p[1:])))
    assert q.snapshot().visit_dropped_by_camera == {}
    assert q.dropped_by_camera() == {"a": 1, "b": 1}  # superseded by their newer frames
    assert ids(q.get_batch(3, wait_s=0.0)) == ["v0", "v1", "v2"]
    assert ids(q.get_batch(3, wait_s=0.0)) == ["a1", "b1", "v3"]


def test_frames_dropped_during_a_visit_are_counted_apart():
    visiting = {"v"}
    q = FrameQueue(2, lane_depth=1, visit_open=lambda c: c in visiting)
    for i in range(4):
        q.put(frame("v", i))  # the queue is too small for the visit: its oldest frames go
    snap = q.snapshot()
    assert snap.dropped == 2 and snap.visit_dropped_by_camera == {"v": 2}
    visiting.clear()
    q.put(frame("v", 4))  # the visit is over: the camera keeps its newest only
    assert q.snapshot().visit_dropped_by_camera == {"v": 2}
    assert ids(q.get_batch(4, wait_s=0.0)) == ["v4"]


def test_lag_is_capture_to_done_or_the_oldest_frames_wait():
    now = [100.0]
    q = FrameQueue(8, lane_depth=1, clock=lambda: now[0])
    q.put(frame("a", 0, mono=99.0))
    batch = q.get_batch(4, wait_s=0.0)
    now[0] = 100.5
    q.done(batch)
    assert q.snapshot().lag_s_by_camera == {"a": 1.5}
    q.put(frame("a", 1, mono=100.6))
    q.put(frame("b", 0, mono=97.5))  # waiting for 3 s
    assert q.snapshot().lag_s_by_camera == {"a": 1.5, "b": 3.0}


def test_wait_for_room_of_one_camera_waits_for_its_lane():
    q = FrameQueue(8, lane_depth=1)
    q.put(frame("a", 0))
    assert q.wait_for_room(timeout=0, camera="b") is True
    assert q.wait_for_room(timeout=0.05, camera="a") is False  # a put would supersede a0
    threading.Timer(0.05, lambda: q.get(timeout=1)).start()
    assert q.wait_for_room(timeout=5.0, camera="a") is True


@pytest.mark.parametrize("take", ["get", "get_batch"])
def test_wait_for_room_times_out_when_full_and_wakes_when_a_frame_is_taken(take):
    q = FrameQueue(1)
    assert q.wait_for_room(timeout=0) is True
    q.put(frame("a", 0))
    assert q.wait_for_room(timeout=0.05) is False
    taker = (lambda: q.get(timeout=1)) if take == "get" else (lambda: q.get_batch(1, 0.0, timeout=1))
    threading.Timer(0.05, taker).start()
    assert q.wait_for_room(timeout=5.0) is True
