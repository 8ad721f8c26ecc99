"""Debounce and detection filters as tables: (sequence of frames) -> (events)."""

from __future__ import annotations

import pytest

from raccoon_watch import debounce
from raccoon_watch.debounce import CameraState, DebounceParams, Observation
from raccoon_watch.filters import DetectionFilter, counting, counts, eligible, meets_threshold, point_in_polygon
from raccoon_watch.types import Detection, EventKind

R = Detection("raccoon", 0.9, (0.1, 0.1, 0.4, 0.5))
P = DebounceParams(min_frames=3, window=5, end_after=10.0, cooldown=300.0, update_interval=0.0)


def run(pattern: str, params: DebounceParams = P, dt: float = 0.2, t0: float = 1000.0,
        tail: float | None = None) -> list[tuple[EventKind, float]]:
    """pattern: 'x' = frame with a raccoon, '.' = frame without; returns (kind, ts) of events."""
    state = CameraState("cam")
    out = []
    for i, ch in enumerate(pattern):
        obs = Observation("cam", t0 + i * dt, (R,) if ch == "x" else ())
        state, evs = debounce.step(state, obs, ("raccoon",), params)
        out += [(e.kind, obs.ts) for e in evs]
    if tail is not None:
        state, evs = debounce.tick(state, t0 + tail, params)
        out += [(e.kind, t0 + tail) for e in evs]
    return out


@pytest.mark.parametrize(
    "pattern, starts_at",
    [
        ("", None),
        ("xx", None),  # 2 of 5 is not enough
        ("xxx", 2),  # third consecutive frame starts it
        ("x.x.x", 4),  # 3 of the last 5
        ("x..x..x", None),  # never 3 within 5
        ("x.x..x.x", None),  # hits 0,2,5,7: every 5-frame window holds at most 2
        ("....xxx", 6),
    ],
)
def test_start_needs_min_frames_of_window(pattern, starts_at):
    events = run(pattern)
    starts = [ts for kind, ts in events if kind is EventKind.START]
    if starts_at is None:
        assert starts == []
    else:
        assert starts == [pytest.approx(1000.0 + starts_at * 0.2)]


def test_exactly_one_start_and_end_for_one_visit():
    events = run("....xxxxxxxxxx.....", tail=60.0)
    assert [k for k, _ in events] == [EventKind.START, EventKind.END]


@pytest.mark.parametrize(
    "gap_frames, expect_end",
    [(10, False), (49, False), (51, True)],  # end_after 10 s at 0.2 s/frame = 50 frames
)
def test_end_after_seconds_without_counting_detection(gap_frames, expect_end):
    events = run("xxx" + "." * gap_frames)
    assert (EventKind.END in [k for k, _ in events]) == expect_end


def test_short_gaps_do_not_split_an_event():
    events = run("xxx" + "...." + "xx" + "....." + "x", tail=100.0)
    assert [k for k, _ in events] == [EventKind.START, EventKind.END]


def test_end_time_is_last_seen_and_id_is_stable():
    state = CameraState("cam")
    evs_all = []
    for i, hit in enumerate([1, 1, 1, 1, 0]):
        state, evs = debounce.step(state, Observation("cam", 10.0 + i, (R,) if hit else ()), ("raccoon",), P)
        evs_all += evs
    state, evs = debounce.tick(state, 100.0, P)
    evs_all += evs
    start, end = evs_all[0], evs_all[-1]
    assert start.kind is EventKind.START and end.kind is EventKind.END
    assert start.id == end.id
    assert end.end_time == 13.0
    assert end.count == 0


@pytest.mark.parametrize(
    "second_visit_after, cooled",
    [(100.0, True), (299.0, True), (301.0, False)],
)
def test_cooldown_flags_but_still_emits(second_visit_after, cooled):
    params = DebounceParams(min_frames=1, window=1, end_after=5.0, cooldown=300.0)
    state = CameraState("cam")
    state, first = debounce.step(state, Observation("cam", 0.0, (R,)), ("raccoon",), params)
    state, ended = debounce.tick(state, 10.0, params)
    assert [e.kind for e in first + ended] == [EventKind.START, EventKind.END]
    state, again = debounce.step(state, Observation("cam", second_visit_after, (R,)), ("raccoon",), params)
    assert [e.kind for e in again] == [EventKind.START]
    assert again[0].in_cooldown is cooled
    assert again[0].id != first[0].id


def test_top_score_and_box_follow_best_detection_and_updates_are_rate_limited():
    params = DebounceParams(min_frames=1, window=1, end_after=10.0, update_interval=5.0)
    better = Detection("raccoon", 0.97, (0.5, 0.5, 0.9, 0.9))
    worse = Detection("raccoon", 0.6, (0.0, 0.0, 0.2, 0.2))
    state = CameraState("cam")
    seq = [(0.0, R), (1.0, better), (6.0, worse), (7.0, worse), (12.0, worse)]
    kinds = []
    for ts, det in seq:
        state, evs = debounce.step(state, Observation("cam", ts, (det,)), ("raccoon",), params)
        kinds += [(e.kind, e.top_score, e.box) for e in evs]
    state, evs = debounce.end_all(state, 20.0)
    assert kinds[0][0] is EventKind.START and kinds[0][1] == 0.9
    # 1.0: improved but < 5 s since the start -> held back; 6.0: the held change goes out; 7, 12: nothing new
    assert [k for k, *_ in kinds] == [EventKind.START, EventKind.UPDATE]
    assert kinds[1][1] == 0.97 and kinds[1][2] == better.box
    assert evs[0].kind is EventKind.END and evs[0].top_score == 0.97 and evs[0].box == better.box


def test_labels_are_independent():
    cat = Detection("cat", 0.9, (0.1, 0.1, 0.3, 0.3))
    state = CameraState("cam")
    events = []
    for i in range(3):
        state, evs = debounce.step(state, Observation("cam", float(i), (R, cat)), ("raccoon", "cat"), P)
        events += evs
    assert sorted(e.label for e in events) == ["cat", "raccoon"]
    assert len({e.id for e in events}) == 2


def test_observation_of_other_camera_is_rejected():
    with pytest.raises(ValueError, match="camera 'b'"):
        debounce.step(CameraState("a"), Observation("b", 0.0, ()), ("raccoon",), P)


# --- filters ----------------------------------------------------------------------------------

SQUARE = ((0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0))  # lower half of the frame


@pytest.mark.parametrize(
    "det, flt, counts",
    [
        (R, DetectionFilter(frozenset({"raccoon"}), 0.5), True),
        (R, DetectionFilter(frozenset({"cat"}), 0.5), False),  # label not wanted
        (R, DetectionFilter(frozenset({"raccoon"}), 0.95), False),  # below threshold
        (Detection("raccoon", 0.5, R.box), DetectionFilter(frozenset({"raccoon"}), 0.5), True),  # >= threshold
        (R, DetectionFilter(frozenset({"raccoon"}), 0.5, min_area=0.2), False),  # area 0.12 < 0.2
        (R, DetectionFilter(frozenset({"raccoon"}), 0.5, max_area=0.1), False),  # area 0.12 > 0.1
        (Detection("raccoon", 0.9, (0.1, 0.1, 0.3, 0.45)), DetectionFilter(frozenset({"raccoon"}), 0.5, zones=(SQUARE,)), False),
        (Detection("raccoon", 0.9, (0.1, 0.4, 0.3, 0.8)), DetectionFilter(frozenset({"raccoon"}), 0.5, zones=(SQUARE,)), True),
        (Detection("raccoon", 0.9, (0.1, 0.4, 0.3, 0.8)), DetectionFilter(frozenset({"raccoon"}), 0.5, masks=(SQUARE,)), False),
    ],
)
def test_filter_table(det, flt, counts):
    assert (counting([det], flt) == (det,)) is counts


@pytest.mark.parametrize(
    "det, flt, eligible_, meets",
    [
        (R, DetectionFilter(frozenset({"raccoon"}), 0.95), True, False),  # the score is not eligibility's business
        (Detection("raccoon", 0.0, R.box), DetectionFilter(frozenset({"raccoon"}), 0.5), True, False),
        (R, DetectionFilter(frozenset({"cat"}), 0.5), False, True),  # label not wanted
        (R, DetectionFilter(frozenset({"raccoon"}), 0.5, min_area=0.2), False, True),
        (Detection("raccoon", 0.1, (0.1, 0.4, 0.3, 0.8)), DetectionFilter(frozenset({"raccoon"}), 0.5, masks=(SQUARE,)),
         False, False),
    ],
)
def test_eligible_then_threshold_is_counts(det, flt, eligible_, meets):
    assert (eligible(det, flt), meets_threshold(det, flt)) == (eligible_, meets)
    assert counts(det, flt) is (eligible_ and meets)


@pytest.mark.parametrize(
    "point, inside",
    [((0.5, 0.75), True), ((0.5, 0.25), False), ((1.5, 0.75), False), ((0.01, 0.99), True)],
)
def test_point_in_polygon(point, inside):
    assert point_in_polygon(*point, SQUARE) is inside
