"""The frame queue's rules as tables: which frames a worker gets next, and which frames are dropped."""

from __future__ import annotations

import pytest

from raccoon_watch.schedule import NEVER, QueueState, Waiting, admit, pick, service_order


def state(lanes: str, visiting: str = "", served: dict[str, float] | None = None) -> QueueState:
    """``lanes``: frames in put order, e.g. "a0 b0 a1" (camera letter, seq); ``visiting``: camera letters."""
    built: dict[str, tuple[Waiting, ...]] = {}
    for order, name in enumerate(lanes.split()):
        built[name[0]] = (*built.get(name[0], ()), Waiting(name[0], int(name[1:]), order))
    return QueueState(lanes=built, visiting=frozenset(visiting), last_served=served or {})


def names(frames: tuple[Waiting, ...]) -> str:
    return " ".join(f"{w.camera}{w.seq}" for w in frames)


@pytest.mark.parametrize(
    "lanes, visiting, served, max_n, taken",
    [
        # one frame per camera, the camera served longest ago first (never served: first of all)
        ("a0 b0 c0", "", {"a": 3.0, "b": 1.0, "c": 2.0}, 1, "b0"),
        ("a0 b0 c0", "", {"a": 3.0, "b": 1.0, "c": 2.0}, 2, "b0 c0"),
        ("a0 b0 c0", "", {"a": 3.0, "b": 1.0}, 1, "c0"),
        # never served on either side: the older frame first
        ("b0 a0", "", {}, 1, "b0"),
        # an open visit goes first, however recently it was served
        ("a0 b0 c0", "c", {"a": 1.0, "b": 2.0, "c": 9.0}, 1, "c0"),
        ("a0 b0 c0", "bc", {"a": 1.0, "b": 5.0, "c": 3.0}, 2, "b0 c0"),  # put order, c picked first
        # round robin before a second frame of anyone: one per camera, then the next round
        ("a0 a1 a2 b0", "", {}, 3, "a0 a1 b0"),
        ("a0 a1 b0 c0", "", {}, 3, "a0 b0 c0"),
        # a visit's backlog goes first, in capture order, before anyone else's frame
        ("v0 v1 v2 a0", "v", {"v": 5.0}, 8, "v0 v1 v2 a0"),
        ("a0 v0 v1 v2 b0", "v", {}, 3, "v0 v1 v2"),
        ("a0 v0 w0 w1", "vw", {"v": 1.0, "w": 2.0}, 2, "v0 w0"),  # visits share by rounds too
        # nothing waiting
        ("", "", {}, 4, ""),
    ],
)
def test_pick(lanes, visiting, served, max_n, taken):
    assert names(pick(state(lanes, visiting, served), max_n)) == taken


def test_pick_visit_first_then_the_others_by_service_age():
    s = state("a0 b0 v0 v1", "v", {"a": 2.0, "b": 1.0, "v": 3.0})
    assert service_order(s) == ["v", "b", "a"]
    assert names(pick(s, 2)) == "v0 v1"
    assert names(pick(s, 3)) == "b0 v0 v1"
    assert names(pick(s, 4)) == "a0 b0 v0 v1"


def test_pick_rejects_empty_batches():
    with pytest.raises(ValueError, match="max_n"):
        pick(state("a0"), 0)


@pytest.mark.parametrize(
    "lanes, visiting, served, maxsize, depth, dropped",
    [
        # room: nothing dropped
        ("a0 b0", "", {}, 4, 1, ""),
        # a camera without a visit keeps its newest frame(s) only
        ("a0 a1", "", {}, 4, 1, "a0"),
        ("a0 a1 a2", "", {}, 8, 2, "a0"),
        ("a0 a1", "", {}, 4, None, ""),  # no per-camera bound
        # ... a camera with an open visit keeps all of them
        ("a0 a1 a2", "a", {}, 4, 1, ""),
        # over maxsize: the longest lane of a camera without a visit loses its oldest frame
        ("a0 a1 a2 b0", "", {}, 3, None, "a0"),
        ("a0 b0 b1 v0 v1 v2", "v", {}, 5, None, "b0"),  # v's lane is longer, but v is visiting
        # ties: the camera served most recently gives way, then the oldest frame
        ("a0 b0 c0", "", {"a": 1.0, "b": 3.0, "c": 2.0}, 2, 1, "b0"),
        ("a0 b0 c0", "", {}, 2, 1, "a0"),
        ("a0 b0", "", {"b": 1.0}, 1, None, "b0"),  # never served (a) keeps its turn
        # only visits left: the longest visiting lane's oldest frame (the queue is too small for them)
        ("v0 w0 w1", "vw", {}, 2, 1, "w0"),
        # both rules at once: superseded first, then the bound
        ("a0 b0 c0 c1", "", {"a": 1.0, "b": 2.0}, 2, 1, "c0 b0"),
    ],
)
def test_admit(lanes, visiting, served, maxsize, depth, dropped):
    assert names(admit(state(lanes, visiting, served), maxsize, depth)) == dropped


def test_admit_is_the_old_drop_oldest_for_one_camera():
    assert names(admit(state("a0 a1 a2 a3"), 3, None)) == "a0"
    assert names(admit(state("a0 a1 a2 a3"), 1, None)) == "a0 a1 a2"


def test_never_served_sorts_first():
    assert NEVER < 0.0
    assert service_order(state("a0 b0", served={"a": -1e9})) == ["b", "a"]
