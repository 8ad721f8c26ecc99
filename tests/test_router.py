"""EventRouter in its thread: results in, events out to the store and every sink, with snapshots."""

from __future__ import annotations

import queue
import threading
import time

import cv2
import numpy as np
import pytest

from raccoon_watch.debounce import DebounceParams
from raccoon_watch.filters import DetectionFilter
from raccoon_watch.router import EventRouter
from raccoon_watch.store import EventStore
from raccoon_watch.types import Detection, Event, EventKind, Frame, FrameResult

RACCOON = Detection("raccoon", 0.9, (0.2, 0.2, 0.6, 0.8))


class Collect:
    """A sink that keeps what it is given (the Sink protocol, in memory)."""

    name = "collect"

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.got = threading.Condition()

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def publish(self, event: Event) -> None:
        with self.got:
            self.events.append(event)
            self.got.notify_all()

    def wait(self, kinds: list[EventKind], timeout: float = 10.0) -> list[Event]:
        with self.got:
            self.got.wait_for(lambda: [e.kind for e in self.events] == kinds, timeout)
            return list(self.events)


class Broken:
    name = "broken"

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def publish(self, event: Event) -> None:
        raise RuntimeError("this sink is broken")


@pytest.fixture()
def rig(tmp_path):
    results: queue.Queue[FrameResult] = queue.Queue()
    stop = threading.Event()
    store = EventStore(tmp_path / "var")
    sink = Collect()
    router = EventRouter(
        results, {"cam": DetectionFilter(frozenset({"raccoon"}), 0.5)},
        DebounceParams(min_frames=2, window=3, end_after=0.5, cooldown=0, update_interval=0),
        store.record, [Broken(), sink], stop,
    )
    router.start()
    yield results, router, sink, store
    stop.set()
    router.join(timeout=5)
    store.close()


def _result(seq: int, dets: tuple[Detection, ...]) -> FrameResult:
    image = np.full((120, 160, 3), 90, np.uint8)
    frame = Frame("cam", seq, time.time(), time.monotonic(), image)
    return FrameResult(frame, dets, 5.0)


def test_start_and_end_reach_every_sink_with_a_jpeg_despite_a_broken_sink(rig):
    results, router, sink, store = rig
    for seq in range(3):
        results.put(_result(seq, (RACCOON,)))
    events = sink.wait([EventKind.START, EventKind.END])
    assert [e.kind for e in events] == [EventKind.START, EventKind.END]
    start, end = events
    assert start.id == end.id and end.end_time is not None
    for e in (start, end):
        image = cv2.imdecode(np.frombuffer(e.snapshot_jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (120, 160, 3)
    assert store.get_event(start.id) is not None
    assert router.processed["cam"] == 3


def test_detect_switch_off_ends_the_event_and_ignores_frames(rig):
    results, router, sink, _ = rig
    router.reconfigure({"cam": DetectionFilter(frozenset({"raccoon"}), 0.5)},
                       DebounceParams(min_frames=2, window=3, end_after=60, cooldown=0, update_interval=0))
    time.sleep(0.5)
    results.put(_result(0, (RACCOON,)))
    results.put(_result(1, (RACCOON,)))
    sink.wait([EventKind.START])
    assert router.has_active_event("cam")  # the motion gate keeps detecting while this holds
    router.set_detect("cam", False)
    assert [e.kind for e in sink.wait([EventKind.START, EventKind.END])] == [EventKind.START, EventKind.END]
    assert not router.has_active_event("cam")
    for seq in range(2, 6):
        results.put(_result(seq, (RACCOON,)))
    time.sleep(1.0)
    assert len(sink.events) == 2 and not router.is_enabled("cam")


def test_reconfigure_raises_the_threshold_live(rig):
    results, router, sink, _ = rig
    router.reconfigure({"cam": DetectionFilter(frozenset({"raccoon"}), 0.95)},
                       DebounceParams(min_frames=2, window=3, end_after=0.5, cooldown=0, update_interval=0))
    time.sleep(0.5)
    for seq in range(4):
        results.put(_result(seq, (RACCOON,)))  # score 0.9 < 0.95: no longer counts
    time.sleep(1.0)
    assert sink.events == [] and router.processed["cam"] == 4
