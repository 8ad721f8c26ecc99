"""Visit scoring as tables: per-frame score sequences in, confirmed (visit score >= threshold) or not out."""

from __future__ import annotations

import pytest

from raccoon_watch import visits
from raccoon_watch.types import Box, Detection, box_iou
from raccoon_watch.visits import Candidate, VisitParams, VisitState

P = VisitParams()  # window 10, min_frames 3, match_iou 0.1
PER_FRAME = VisitParams(window=1, min_frames=1)
BOWL_LEFT: Box = (0.30, 0.55, 0.45, 0.80)
BOWL_RIGHT: Box = (0.50, 0.55, 0.65, 0.80)
RACCOON_20 = (0.6, 0.7, 0.8, 0.65, 0.75, 0.6, 0.8, 0.7, 0.62, 0.78,
              0.66, 0.71, 0.8, 0.6, 0.69, 0.74, 0.77, 0.61, 0.7, 0.8)
CAT_SPIKE = (0.1, 0.3, 0.2, 0.95, 0.2, 0.1, 0.3, 0.25, 0.15, 0.2, 0.3, 0.1)
M = None  # no detection in this frame (a miss)


def run(per_frame: tuple[float | None, ...], p: VisitParams = P, label: str = "raccoon",
        box: Box = BOWL_LEFT) -> tuple[list[float | None], VisitState]:
    """Feed one object's per-frame scores (None: not detected) through ``step``; visit scores out."""
    state = VisitState()
    out: list[float | None] = []
    for s in per_frame:
        dets = () if s is None else (Detection(label, s, box, detector_score=0.42),)
        state, scored = visits.step(state, dets, p)
        assert len(scored) == len(dets)
        out.append(scored[0].score if scored else None)
    return out, state


@pytest.mark.parametrize(
    # confirmed_from: the first frame (1-based) whose visit score reaches the threshold; None: never
    "name, per_frame, threshold, confirmed_from",
    [
        ("raccoon 0.6-0.8 over twenty frames", RACCOON_20, 0.6, 2),
        ("cat spiking once among 0.1-0.3", CAT_SPIKE, 0.5, None),
        ("one spike alone", (0.95,), 0.5, None),
        ("a spike then nothing", (0.95, M, M, M), 0.5, None),
        ("two good frames of three", (0.9, 0.9, M), 0.5, 2),
        ("misses count as 0: one frame in three", (0.9, M, M, 0.9, M, M, 0.9, M, M, 0.9), 0.5, None),
        ("misses count as 0: two frames in three", (0.9, 0.9, M, 0.9, 0.9, M, 0.9, 0.9, M, 0.9), 0.5, 2),
        ("a raccoon arriving late in the window", (0.1, 0.2, 0.1, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8), 0.7, 7),
    ],
)
def test_sequences_confirm_or_not(name, per_frame, threshold, confirmed_from):
    scores, _ = run(per_frame)
    hits = [i + 1 for i, s in enumerate(scores) if s is not None and s >= threshold]
    assert (hits[0] if hits else None) == confirmed_from, (name, scores)


def test_a_steady_raccoon_stays_confirmed_from_frame_3_on():
    scores, state = run(RACCOON_20)
    assert scores[0] == 0.0  # one frame never confirms
    assert all(s >= 0.6 for s in scores[2:])
    assert [c.id for c in state.candidates] == [0] and len(state.candidates[0].scores) == P.window


def test_cat_spike_never_reaches_half():
    scores, _ = run(CAT_SPIKE, label="cat")
    assert max(scores) < 0.5


@pytest.mark.parametrize(
    "scores, expected",
    [
        ((), 0.0),
        ((0.9,), 0.0),  # padded: [0.9, 0, 0]
        ((0.9, 0.8), 0.8),  # padded: [0.9, 0.8, 0]
        ((0.9, 0.8, 0.7), 0.8),
        ((0.2, 0.4, 0.6, 0.8), 0.5),  # even count: mean of the middle two
        ((0.0,) * 5 + (0.9,) * 10, 0.9),  # only the last `window` (10) count
        ((0.9,) * 5 + (0.0,) * 5, 0.45),
    ],
)
def test_visit_score_is_the_padded_median(scores, expected):
    assert visits.visit_score(scores, P) == pytest.approx(expected)


@pytest.mark.parametrize("per_frame", [RACCOON_20, CAT_SPIKE, (0.0, 0.5, M, 1.0, 0.3, M, M, 0.91)])
def test_window_1_min_frames_1_is_the_per_frame_score(per_frame):
    scores, _ = run(per_frame, PER_FRAME)
    assert scores == list(per_frame)  # exactly, not approximately: old configs behave as before


def test_two_candidates_at_one_bowl_keep_separate_scores():
    state = VisitState()
    for _ in range(5):
        dets = (Detection("cat", 0.2, BOWL_LEFT), Detection("raccoon", 0.8, BOWL_RIGHT))
        state, scored = visits.step(state, dets, P)
    assert [(d.label, d.score) for d in scored] == [("cat", pytest.approx(0.2)), ("raccoon", pytest.approx(0.8))]
    assert sorted((c.label, c.id) for c in state.candidates) == [("cat", 0), ("raccoon", 1)]


def test_a_cat_and_a_raccoon_on_the_same_box_do_not_share_a_candidate():
    state = VisitState()
    for _ in range(3):
        dets = (Detection("raccoon", 0.8, BOWL_LEFT), Detection("cat", 0.3, BOWL_LEFT))
        state, scored = visits.step(state, dets, P)
    assert [d.score for d in scored] == [pytest.approx(0.8), pytest.approx(0.3)]
    assert len(state.candidates) == 2


def test_two_raccoons_each_keep_their_own_box():
    state = VisitState()
    for _ in range(4):
        dets = (Detection("raccoon", 0.9, BOWL_RIGHT), Detection("raccoon", 0.1, BOWL_LEFT))
        state, scored = visits.step(state, dets, P)
    assert [d.score for d in scored] == [pytest.approx(0.9), pytest.approx(0.1)]
    assert {c.box: c.id for c in state.candidates} == {BOWL_RIGHT: 0, BOWL_LEFT: 1}


@pytest.mark.parametrize("misses, kept", [(P.window - 1, True), (P.window, False)])
def test_a_candidate_is_dropped_after_window_misses(misses, kept):
    _, state = run((0.9,) + (M,) * misses)
    assert bool(state.candidates) == kept
    if kept:
        assert state.candidates[0].scores == (0.9,) + (0.0,) * misses


@pytest.mark.parametrize("per_frame, kept", [((0.0,) * (P.window - 1), True), ((0.0,) * P.window, False)])
def test_detections_scoring_zero_count_like_misses_for_dropping(per_frame, kept):
    _, state = run(per_frame)
    assert bool(state.candidates) == kept


def test_a_dropped_candidate_comes_back_as_a_new_one():
    _, state = run((0.9,) + (M,) * P.window)
    state, scored = visits.step(state, (Detection("raccoon", 0.9, BOWL_LEFT),), P)
    assert [c.id for c in state.candidates] == [1] and scored[0].score == 0.0


def test_a_box_moving_a_small_step_each_frame_keeps_one_candidate():
    state = VisitState()
    for i in range(30):  # walks across the frame, 0.02 of its width per frame
        box = (0.05 + 0.02 * i, 0.5, 0.20 + 0.02 * i, 0.8)
        state, scored = visits.step(state, (Detection("raccoon", 0.7, box),), P)
    assert [c.id for c in state.candidates] == [0] and state.next_id == 1
    assert state.candidates[0].box == box and scored[0].score == pytest.approx(0.7)


def test_a_jump_below_match_iou_starts_a_new_candidate():
    state, _ = visits.step(VisitState(), (Detection("raccoon", 0.7, (0.0, 0.0, 0.2, 0.2)),), P)
    state, scored = visits.step(state, (Detection("raccoon", 0.7, (0.7, 0.7, 0.9, 0.9)),), P)
    assert [c.id for c in state.candidates] == [0, 1] and scored[0].score == 0.0


def test_highest_iou_wins_and_each_candidate_is_used_once():
    near, far = (0.30, 0.5, 0.50, 0.8), (0.36, 0.5, 0.56, 0.8)
    state = VisitState((Candidate(0, "raccoon", near, (0.9, 0.9)),), next_id=1)
    dets = (Detection("raccoon", 0.2, far), Detection("raccoon", 0.8, near))  # both overlap candidate 0
    state, scored = visits.step(state, dets, P)
    assert box_iou(near, near) > box_iou(near, far) >= P.match_iou
    assert [d.score for d in scored] == [0.0, pytest.approx(0.9)]  # far starts candidate 1: [0.2, 0, 0]
    assert [(c.id, c.scores) for c in state.candidates] == [(0, (0.9, 0.9, 0.8)), (1, (0.2,))]


def test_scoring_keeps_everything_but_the_score():
    det = Detection("raccoon", 0.8, BOWL_LEFT, detector_score=0.31)
    _, (scored,) = visits.step(VisitState(), (det,), P)
    assert (scored.label, scored.box, scored.detector_score, scored.score) == ("raccoon", BOWL_LEFT, 0.31, 0.0)


def test_step_does_not_change_the_state_it_is_given():
    state = VisitState((Candidate(0, "raccoon", BOWL_LEFT, (0.5,)),), next_id=1)
    visits.step(state, (Detection("raccoon", 0.9, BOWL_LEFT),), P)
    assert state == VisitState((Candidate(0, "raccoon", BOWL_LEFT, (0.5,)),), next_id=1)


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ((0.0, 0.0, 0.5, 0.5), (0.0, 0.0, 0.5, 0.5), 1.0),
        ((0.0, 0.0, 0.5, 0.5), (0.5, 0.5, 1.0, 1.0), 0.0),  # touching corners
        ((0.0, 0.0, 0.2, 0.2), (0.6, 0.6, 0.9, 0.9), 0.0),
        ((0.0, 0.0, 0.4, 0.2), (0.2, 0.0, 0.6, 0.2), 1 / 3),
        ((0.0, 0.0, 0.4, 0.4), (0.1, 0.1, 0.3, 0.3), 0.25),  # one inside the other
        ((0.2, 0.2, 0.2, 0.2), (0.2, 0.2, 0.2, 0.2), 0.0),  # empty boxes
    ],
)
def test_box_iou(a, b, expected):
    assert box_iou(a, b) == pytest.approx(expected)
    assert box_iou(b, a) == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"window": 0}, "window"),
        ({"window": 3, "min_frames": 4}, "min_frames"),
        ({"min_frames": 0}, "min_frames"),
        ({"match_iou": 1.5}, "match_iou"),
    ],
)
def test_bad_params_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VisitParams(**kwargs)


# --- with the tracker's ids (what the router does) ----------------------------------------------------


def test_track_ids_decide_the_candidate_however_far_the_box_jumped():
    """The tracker followed a fast animal by its predicted box: its visit goes on, the scores add up."""
    state = VisitState()
    for i, x in enumerate((0.0, 0.3, 0.6)):  # never overlapping: matching by last box would split it
        state, scored = visits.step(state, (Detection("raccoon", 0.8, (x, 0.5, x + 0.1, 0.6)),), P, track_ids=(7,))
    assert [(c.id, c.scores) for c in state.candidates] == [(7, (0.8, 0.8, 0.8))]
    assert scored[0].score == pytest.approx(0.8) and state.next_id == 8


@pytest.mark.parametrize(
    "live, kept",
    [(None, [0, 1]), ({0, 1}, [0, 1]), ({1}, [1]), (set(), [])],
)
def test_candidates_of_dead_tracks_are_dropped(live, kept):
    state, _ = visits.step(VisitState(), (Detection("raccoon", 0.8, BOWL_LEFT), Detection("raccoon", 0.3, BOWL_RIGHT)),
                           P, track_ids=(0, 1))
    state, _ = visits.step(state, (), P, track_ids=(), live=live)
    assert [c.id for c in state.candidates] == kept


@pytest.mark.parametrize(
    "track_ids, message",
    [((0,), "one track id per detection"), ((3, 3, 3), "at most one detection")],
)
def test_bad_track_ids_are_refused(track_ids, message):
    dets = (Detection("raccoon", 0.8, BOWL_LEFT),) * 3
    with pytest.raises(ValueError, match=message):
        visits.step(VisitState(), dets, P, track_ids=track_ids)


def test_best_scores_per_candidate():
    state = VisitState((Candidate(0, "raccoon", BOWL_LEFT, (0.2, 0.7, 0.0)), Candidate(4, "cat", BOWL_RIGHT, (0.0,))), 5)
    assert visits.best_scores(state) == {0: 0.7, 4: 0.0}


@pytest.mark.parametrize("params", [PER_FRAME, P])
def test_a_candidate_keeps_at_most_window_scores(params):
    _, state = run(RACCOON_20, params)
    assert len(state.candidates[0].scores) == params.window
