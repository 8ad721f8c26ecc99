"""EventRouter in its thread: results in, events out to the store and every sink, with snapshots."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import replace

import cv2
import numpy as np
import pytest
import structlog

from raccoon_watch.debounce import DebounceParams
from raccoon_watch.filters import DetectionFilter
from raccoon_watch.router import EventRouter
from raccoon_watch.store import EventStore
from raccoon_watch.tracking import HintBoard
from raccoon_watch.types import Detection, Event, EventKind, Frame, FrameResult, box_to_pixels
from raccoon_watch.visits import VisitParams
from tests.waiting import wait_until

RACCOON = Detection("raccoon", 0.9, (0.2, 0.2, 0.6, 0.8))
PER_FRAME = VisitParams(window=1, min_frames=1)  # score_window=1, score_min_frames=1: no scoring over time


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


def _result(seq: int, dets: tuple[Detection, ...], moving: bool = True) -> FrameResult:
    """A frame with these detections. moving: each detected animal moves, as a raccoon does: a bright
    patch shifts inside its box from frame to frame, and the motion gate's regions are its boxes.
    Otherwise the frame is a still picture: a detection in it is a watering can, never an alert."""
    image = np.full((120, 160, 3), 90, np.uint8)
    for det in dets if moving else ():
        x0, y0, x1, y1 = box_to_pixels(det.box, 160, 120)
        half = max(1, (x1 - x0) // 2)
        shift = (seq * 7) % half
        image[y0:(y0 + y1) // 2, x0 + shift:x0 + shift + half] = 200
    regions = tuple(d.box for d in dets) if moving else ()
    frame = Frame("cam", seq, time.time(), time.monotonic(), image, motion_regions=regions)
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
                       DebounceParams(min_frames=2, window=3, end_after=60, cooldown=0, update_interval=0),
                       PER_FRAME)  # two frames start the event: each frame's own score must count
    wait_applied(router)
    results.put(_result(0, (RACCOON,)))
    results.put(_result(1, (RACCOON,)))
    sink.wait([EventKind.START])
    assert router.has_active_event("cam")  # the motion gate keeps detecting while this holds
    router.set_detect("cam", False)
    assert [e.kind for e in sink.wait([EventKind.START, EventKind.END])] == [EventKind.START, EventKind.END]
    assert not router.has_active_event("cam")
    for seq in range(2, 6):
        results.put(_result(seq, (RACCOON,)))
    wait_drained(results, router)
    assert len(sink.events) == 2 and not router.is_enabled("cam")


def test_reconfigure_raises_the_threshold_live(rig):
    results, router, sink, _ = rig
    router.reconfigure({"cam": DetectionFilter(frozenset({"raccoon"}), 0.95)},
                       DebounceParams(min_frames=2, window=3, end_after=0.5, cooldown=0, update_interval=0),
                       VisitParams())
    wait_applied(router)
    for seq in range(4):
        results.put(_result(seq, (RACCOON,)))  # score 0.9 < 0.95: no longer counts
    wait_drained(results, router)
    assert sink.events == [] and router.processed["cam"] == 4


def wait_applied(router: EventRouter) -> None:
    """Wait until the router thread has applied a reconfigure(): it applies commands at the top of
    each loop turn, just after its heartbeat, so once two new heartbeats have come the change is in."""
    for _ in range(2):
        beat = router.heartbeat
        assert wait_until(lambda: router.heartbeat > beat, 5.0), "router loop not turning"


def wait_drained(results: queue.Queue[FrameResult], router: EventRouter) -> None:
    """Wait until the router has taken every queued result and finished the turn of the last one
    (absence is then proven by the router's own progress, not by a sleep)."""
    assert wait_until(results.empty, 5.0), "router not taking results"
    wait_applied(router)


def _scored(seq: int, score: float) -> FrameResult:
    return _result(seq, (Detection("raccoon", score, RACCOON.box, detector_score=0.3),))


@pytest.mark.parametrize(
    "per_frame, starts",
    [
        ((0.2, 0.95, 0.2, 0.3, 0.2, 0.1), False),  # a cat-like spike: visit scores 0, .2, .2, .25, .2, .2
        ((0.45, 0.7, 0.8, 0.45, 0.75), True),  # a raccoon with weak frames: 0, .45, .7, .575, .7
    ],
)
def test_the_threshold_applies_to_the_visit_score(rig, per_frame, starts):
    results, router, sink, _ = rig
    router.reconfigure({"cam": DetectionFilter(frozenset({"raccoon"}), 0.5)},
                       DebounceParams(min_frames=2, window=3, end_after=60, cooldown=0, update_interval=0),
                       VisitParams(window=10, min_frames=3))
    wait_applied(router)
    for seq, score in enumerate(per_frame):
        results.put(_scored(seq, score))
    assert wait_until(lambda: router.processed["cam"] == len(per_frame))
    wait_applied(router)  # the turn that processed the last frame has handed its events on
    assert [e.kind for e in sink.events] == ([EventKind.START] if starts else [])
    if starts:
        # starts on frame 4, the second counting one: the median of (0.45, 0.7, 0.8, 0.45), not its own 0.45
        assert sink.events[0].score == pytest.approx(0.575)


def test_switching_detection_off_forgets_the_visit(rig):
    results, router, sink, _ = rig
    router.reconfigure({"cam": DetectionFilter(frozenset({"raccoon"}), 0.5)},
                       DebounceParams(min_frames=2, window=3, end_after=60, cooldown=0, update_interval=0),
                       VisitParams(window=10, min_frames=3))
    wait_applied(router)
    results.put(_scored(0, 0.9))  # visit score 0
    results.put(_scored(1, 0.9))  # 0.9: one counting frame, the debounce wants two
    assert wait_until(lambda: router.processed["cam"] == 2)
    router.set_detect("cam", False)
    assert wait_until(lambda: not router.is_enabled("cam"))
    router.set_detect("cam", True)
    assert wait_until(lambda: router.is_enabled("cam"))
    results.put(_scored(2, 0.9))  # a fresh candidate: visit score 0 again, so still no second hit
    assert wait_until(lambda: router.processed["cam"] == 3)
    wait_applied(router)
    assert sink.events == []


def test_events_carry_the_classifier_version_that_scored_their_start(rig):
    """The version of the START frame stays with every message of the event (a swap mid-visit does
    not relabel it), in the store row and the MQTT body (``Event.to_dict``)."""
    results, router, sink, store = rig
    # the visit score needs 3 frames, so the third starts the event; the later frames are another version
    for seq, version in enumerate(("a1b2c3d4e5f6",) * 3 + ("ffffeeee0000",) * 2):
        results.put(replace(_result(seq, (RACCOON,)), model_version=version))
    start, end = sink.wait([EventKind.START, EventKind.END])
    assert start.model_version == end.model_version == "a1b2c3d4e5f6"
    assert start.to_dict()["model_version"] == "a1b2c3d4e5f6"
    assert store.get_event(start.id).model_version == "a1b2c3d4e5f6"


# --- tracks: still candidates never alert; moving ones are hinted to the workers ----------------------

WATERING_CAN = Detection("raccoon", 0.9, (0.7, 0.1, 0.9, 0.4))  # the classifier likes it; it never moves


@pytest.fixture()
def tracked(tmp_path):
    """The router with a hint board, per-frame scoring (each frame's own score counts) and a
    2-frame debounce."""
    results: queue.Queue[FrameResult] = queue.Queue()
    stop = threading.Event()
    sink = Collect()
    board = HintBoard(["cam"])
    router = EventRouter(
        results, {"cam": DetectionFilter(frozenset({"raccoon"}), 0.5)},
        DebounceParams(min_frames=2, window=3, end_after=60, cooldown=0, update_interval=0),
        lambda event: None, [sink], stop, visit_params=PER_FRAME, hints=board,
    )
    router.start()
    yield results, router, sink, board
    stop.set()
    router.join(timeout=5)


def test_a_still_candidate_never_starts_an_event(tracked):
    results, router, sink, board = tracked
    with structlog.testing.capture_logs() as logs:
        for seq in range(8):
            results.put(_result(seq, (WATERING_CAN,), moving=False))
        assert wait_until(lambda: router.processed["cam"] == 8)
        wait_applied(router)
    assert sink.events == [] and board.get("cam") == ()  # never alerted, never looked for
    still = [e for e in logs if e["event"] == "still_candidate_ignored"]
    assert len(still) == 1 and still[0]["camera"] == "cam" and still[0]["score"] == 0.9  # logged once


def test_a_moving_raccoon_beside_a_still_look_alike_alerts_with_its_own_box(tracked):
    results, router, sink, board = tracked
    for seq in range(4):
        frame = _result(seq, (RACCOON,))
        both = replace(frame, detections=(WATERING_CAN, RACCOON))  # the can is in the frame, it does not move
        results.put(both)
    (start,) = sink.wait([EventKind.START])
    assert start.box == RACCOON.box
    hints = board.get("cam")
    assert [h.box for h in hints] == [RACCOON.box]  # the moving raccoon is looked for next; the can is not


def test_switching_detection_off_withdraws_the_hints(tracked):
    results, router, sink, board = tracked
    for seq in range(2):
        results.put(_result(seq, (RACCOON,)))
    assert wait_until(lambda: len(board.get("cam")) == 1)
    router.set_detect("cam", False)
    assert wait_until(lambda: board.get("cam") == ())


def test_the_end_snapshot_says_the_score_the_store_keeps(rig, monkeypatch):
    """A better frame after the last message (no UPDATE is due: update_interval=0) is drawn on the END's
    snapshot, with the event's final top score: the label burned into the JPEG, the store's top_score
    and the page say one number (issue 22: the label said 0.77 while the page said 0.90)."""
    import raccoon_watch.router as router_module

    drawn: list[tuple[int, float]] = []
    real = router_module.draw_detections

    def spy(image, dets, *args, **kwargs):
        drawn.append((int(image[0, 0, 0]), dets[0].score))
        return real(image, dets, *args, **kwargs)

    monkeypatch.setattr(router_module, "draw_detections", spy)
    results, router, sink, store = rig
    router.reconfigure({"cam": DetectionFilter(frozenset({"raccoon"}), 0.5)},
                       DebounceParams(min_frames=2, window=3, end_after=0.5, cooldown=0, update_interval=0),
                       PER_FRAME)
    wait_applied(router)
    for seq, score in enumerate((0.6, 0.77, 0.9, 0.8)):
        result = _result(seq, (replace(RACCOON, score=score),))
        result.frame.image[0, 0] = seq  # which frame was drawn
        results.put(result)
    start, end = sink.wait([EventKind.START, EventKind.END])
    assert (start.top_score, end.top_score) == (0.77, 0.9)
    assert drawn == [(1, 0.77), (2, 0.9)]  # the START's best frame, then the END's: frame 2 at 0.9
    assert store.get_event(end.id).top_score == 0.9
    assert store.read_snapshot(end.id) == end.snapshot_jpeg != start.snapshot_jpeg


# --- open visits: what the frame queue serves first (issue 24) ------------------------------------------

CAT = Detection("raccoon", 0.2, (0.1, 0.1, 0.3, 0.3))  # under the threshold: a cat the classifier doubts


def test_a_visit_opens_at_the_first_good_frame_and_closes_after_end_after(tmp_path):
    """visit_open: False before anything; True from the first frame with a detection at the review
    threshold on its own score (one frame, still or not: nothing has counted yet); False again once
    ``end_after`` seconds pass on the router's clock with no event; never for a camera switched off."""
    results: queue.Queue[FrameResult] = queue.Queue()
    stop = threading.Event()
    now = [time.monotonic()]
    router = EventRouter(
        results, {"cam": DetectionFilter(frozenset({"raccoon"}), 0.5)},
        DebounceParams(min_frames=3, window=5, end_after=10.0, cooldown=0, update_interval=0),
        lambda event: None, [], stop, clock=lambda: now[0],
    )
    router.start()
    try:
        assert router.visit_open("cam") is False and router.visit_open("nobody") is False
        results.put(_result(0, (CAT,), moving=False))
        assert wait_until(lambda: router.processed["cam"] == 1)
        assert router.visit_open("cam") is False  # a low score opens nothing
        frame = _result(1, (RACCOON,), moving=False)
        now[0] = frame.frame.mono
        results.put(frame)
        assert wait_until(lambda: router.processed["cam"] == 2)
        assert router.visit_open("cam") is True and not router.has_active_event("cam")
        now[0] = frame.frame.mono + 9.9
        assert router.visit_open("cam") is True
        now[0] = frame.frame.mono + 10.1
        assert router.visit_open("cam") is False
        now[0] = frame.frame.mono
        router.set_detect("cam", False)
        assert wait_until(lambda: not router.is_enabled("cam"))
        assert router.visit_open("cam") is False
    finally:
        stop.set()
        router.join(timeout=5)


def test_a_visit_stays_open_while_its_event_runs(tracked):
    results, router, sink, _ = tracked  # end_after 60 s: the event runs until detection is switched off
    for seq in range(2):
        results.put(_result(seq, (RACCOON,)))
    sink.wait([EventKind.START])
    assert router.has_active_event("cam") and router.visit_open("cam")
    router.set_detect("cam", False)
    sink.wait([EventKind.START, EventKind.END])
    assert wait_until(lambda: not router.visit_open("cam"))
