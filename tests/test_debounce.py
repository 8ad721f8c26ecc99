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


@pytest.mark.parametrize("last_end_wall, now_wall, now_mono, expected", [
    (1000.0, 1084.0, 50.0, -34.0),  # ended 84 s ago (wall) -> 84 s before now on the monotonic clock
    (1000.0, 1000.0, 50.0, 50.0),  # just now
    (1000.0, 5000.0, 7.0, -3993.0),  # long ago: far in the monotonic past (no cooldown left)
    (2000.0, 1000.0, 50.0, 50.0),  # an end in the future (the wall clock stepped back): counts as just now
])
def test_cooldown_since(last_end_wall, now_wall, now_mono, expected):
    assert debounce.cooldown_since(last_end_wall, now_wall, now_mono) == pytest.approx(expected)


@pytest.mark.parametrize("ended_ago, visit_after, cooled", [
    (84.0, 0.0, True),  # the probe: a visit 84 s after the last run's event
    (84.0, 215.0, True),  # 299 s after it
    (84.0, 217.0, False),  # 301 s after it
    (400.0, 0.0, False),  # the cooldown had run out before the restart
    (-3600.0, 0.0, True),  # the stored end is an hour ahead of the wall clock now: kept, not lost
])
def test_a_seeded_state_keeps_the_last_runs_cooldown(ended_ago, visit_after, cooled):
    params = DebounceParams(min_frames=1, window=1, end_after=5.0, cooldown=300.0)
    now_wall, now_mono = 1_800_000_000.0, 100.0  # a new process: its monotonic clock is small
    state = debounce.seeded("cam", {"raccoon": now_wall - ended_ago}, now_wall, now_mono)
    obs = Observation("cam", now_wall + visit_after, (R,), mono=now_mono + visit_after)
    state, events = debounce.step(state, obs, ("raccoon",), params)
    assert [(e.kind, e.in_cooldown) for e in events] == [(EventKind.START, cooled)]


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


# --- clock steps: durations run on the monotonic clock, wall time is only the record ------------

HOUR, DAY = 3600.0, 86400.0


def visits(steps: dict[float, float], params: DebounceParams = P, dt: float = 0.2,
           pattern: str = "xxxx." * 4 + "." * 80 + "xxxx." * 4 + "." * 80, tick_every: int = 5) -> list:
    """Run ``pattern`` with a monotonic clock advancing ``dt`` per frame and a wall clock that
    jumps by ``steps[m]`` seconds once monotonic time passes ``m`` (as NTP steps it). Ticks every
    ``tick_every`` frames, as the router's timer does. Returns the events."""
    state = CameraState("cam")
    events = []
    jumped: set[float] = set()
    offset = 0.0
    for i, ch in enumerate(pattern):
        mono = 500.0 + i * dt
        for at, jump in steps.items():
            if mono - 500.0 >= at and at not in jumped:
                jumped.add(at)
                offset += jump
        wall = 1_700_000_000.0 + (mono - 500.0) + offset
        obs = Observation("cam", wall, (R,) if ch == "x" else (), mono=mono)
        state, evs = debounce.step(state, obs, ("raccoon",), params)
        events += evs
        if i % tick_every == 0:
            state, evs = debounce.tick(state, mono, params)
            events += evs
    return events


def shape(events: list) -> list[tuple[str, bool]]:
    return [(e.kind.value, e.in_cooldown) for e in events]


@pytest.mark.parametrize(
    "steps",
    [
        {},
        {6.0: -HOUR},  # 1 h back after the raccoon left, before the event ended (end_after 10 s)
        {6.0: +HOUR},
        {2.8: +DAY},  # 1 day forward mid-event (on a frame without the raccoon)
        {2.8: -HOUR},  # 1 h back mid-event
        {18.0: -HOUR},  # 1 h back between the two visits
        {18.0: +DAY},
        {22.8: +HOUR},  # mid second visit
        {2.8: -HOUR, 6.0: +DAY, 18.0: -HOUR, 22.8: +HOUR},
    ],
)
@pytest.mark.parametrize("cooldown, second_cooled", [(300.0, True), (12.0, False)])  # visits 16.6 s apart
def test_wall_clock_steps_change_no_duration_cooldown_or_push_count(steps, cooldown, second_cooled):
    params = DebounceParams(min_frames=3, window=5, end_after=10.0, cooldown=cooldown, update_interval=1.0)
    reference = visits({}, params)
    events = visits(steps, params)
    # two visits: start, end, start (pushed unless in cooldown), end -- whatever the wall clock did
    assert [s for s in shape(events) if s[0] != "update"] == [
        ("new", False), ("end", False), ("new", second_cooled), ("end", second_cooled)]
    assert shape(events) == shape(reference)  # the same updates too (update_interval)
    # each END comes the same number of frames after its last sighting: compare by event position
    ends = [i for i, e in enumerate(events) if e.kind is EventKind.END]
    ref_ends = [i for i, e in enumerate(reference) if e.kind is EventKind.END]
    assert ends == ref_ends
    # wall time stays the record: the start time is the wall clock of the frame that started it
    assert all(e.start_time > 1_000_000_000 for e in events)
    # and every duration is the true one (issue 21: a step mid-event gave 3,603 s and -3,597 s), as is
    # the clip window (first and last sighting on the monotonic clock)
    durations = [e.end_time - e.start_time for e in events if e.kind is EventKind.END]
    assert durations == pytest.approx([e.end_time - e.start_time for e in reference if e.kind is EventKind.END])
    assert all(0 < d < 10 for d in durations), durations
    windows = [(e.first_seen_mono, e.last_seen_mono) for e in events if e.kind is EventKind.END]
    assert windows == [(e.first_seen_mono, e.last_seen_mono) for e in reference if e.kind is EventKind.END]


def test_end_waits_end_after_of_monotonic_time_even_if_the_wall_clock_jumps_back():
    params = DebounceParams(min_frames=1, window=1, end_after=10.0)
    state, _ = debounce.step(CameraState("cam"), Observation("cam", 5000.0, (R,), mono=1.0), ("raccoon",), params)
    state, early = debounce.tick(state, 10.9, params)  # 9.9 s later on the monotonic clock
    assert early == []
    state, ended = debounce.tick(state, 11.1, params)
    assert [e.kind for e in ended] == [EventKind.END] and ended[0].end_time == 5000.0


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
