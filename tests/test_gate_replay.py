"""The gate judges a held-out visit the way the daemon judged it live: the replay (visit scoring,
threshold per image mode, debounce), the deployed classifier's live outcome, the candidate's replayed
one, and the list of visits either got wrong. Pure functions, as tables."""

from __future__ import annotations

import math
from datetime import datetime

import pytest

from raccoon_watch.debounce import DebounceParams
from raccoon_watch.filters import DetectionFilter
from raccoon_watch.learning.promotion import promotion_metrics, wrong_table, wrong_visits
from raccoon_watch.learning.replay import (
    FROM_LIVE,
    FROM_REPLAY,
    KEPT_BEST_FRAME,
    KEPT_TRACE,
    KeptVisit,
    ReplayRules,
    VisitOutcome,
    judge_visit,
    kept_visit_from_event,
    replay,
    score_shift,
    shift_scores,
)
from raccoon_watch.store.events import EventRow
from raccoon_watch.types import Detection
from raccoon_watch.visits import VisitParams

FILTER = DetectionFilter(labels=frozenset({"raccoon"}), threshold=0.7, ir_threshold=0.5)
RULES = ReplayRules(FILTER, VisitParams(window=10, min_frames=3), DebounceParams(min_frames=3, window=5))
IR_RULES = ReplayRules(FILTER, RULES.visit, RULES.debounce, mode="ir")
REVIEW_RULES = ReplayRules(DetectionFilter(labels=frozenset({"raccoon"}), threshold=0.7, review_threshold=0.5),
                           RULES.visit, RULES.debounce)
SHIPPED = "0123456789ab"


def _frames(*scores: float | None, box=None) -> tuple[tuple[float, float | None, tuple | None], ...]:
    return tuple((100.0 + 0.25 * i, s, box) for i, s in enumerate(scores))


@pytest.mark.parametrize("scores, rules, best, alerted", [
    ([0.8] * 12, RULES, 0.8, True),                     # a raccoon at 0.8 frame after frame
    ([0.95, None, None, None], RULES, 0.0, False),      # one spike: padded with misses, its median is 0
    ([0.9, 0.9], RULES, 0.9, False),                    # the visit score passes once: one counting frame of 3
    ([0.9, 0.9, 0.9, 0.9], RULES, 0.9, True),           # frames 2, 3 and 4 count: the debounce starts it
    ([0.6] * 6, RULES, 0.6, False),                     # under the colour threshold...
    ([0.6] * 6, IR_RULES, 0.6, True),                   # ... over the infrared one
    ([0.9, None] * 6, RULES, 0.9, True),                # every other frame: the odd frames' median holds
    ([0.9, None, None] * 4, RULES, 0.45, False),        # one frame in three: the median never reaches it
    ([], RULES, 0.0, False),
    ([0.6] * 6, REVIEW_RULES, 0.6, False),              # a detection (over the review threshold only) is no alert
    ([0.6] * 4 + [0.9] * 8, REVIEW_RULES, 0.9, True),   # ... until the debounce upgrades it
])
def test_replay_is_the_daemons_visit_scoring_threshold_and_debounce(scores, rules, best, alerted):
    got_best, got_alerted, frames = replay(_frames(*scores), rules)
    assert (round(got_best, 4), got_alerted, frames) == (best, alerted, len(scores))


BOWL, RACCOON = (0.7, 0.6, 0.8, 0.75), (0.1, 0.2, 0.45, 0.7)


def test_a_still_thing_before_the_animal_is_a_visit_of_its_own():
    """Measured in the end-to-end test: the empty yard's best candidate (a still thing at 0.02) for
    11 frames, then the raccoon for 4. With the boxes the raccoon's visit starts fresh and alerts,
    as it did live; followed as one object, the bowl's 0.02s hold the median down."""
    bowl, raccoon = _frames(*[0.0206] * 11, box=BOWL), _frames(0.8514, 0.8591, 0.8514, 0.8514, box=RACCOON)
    frames = bowl + tuple((t + 3.0, s, b) for t, s, b in raccoon)
    assert replay(frames, RULES)[1] is True
    assert replay(tuple((t, s, None) for t, s, _ in frames), RULES)[1] is False


def test_a_score_shift_is_measured_on_the_kept_frame_and_moves_every_frame_in_logits():
    shift = score_shift(0.8, 0.4)
    assert shift == pytest.approx(math.log(0.4 / 0.6) - math.log(0.8 / 0.2))
    moved = shift_scores([0.8, None, 0.6], shift)
    assert moved[0] == pytest.approx(0.4) and moved[1] is None and moved[2] == pytest.approx(0.2)
    assert shift_scores([0.3, None], 0.0) == (0.3, None)
    assert shift_scores([0.0, 1.0], 1.0)[0] > 0.0  # scores at the ends are clipped, never infinite


def _visit(label: str, trace=(), live_alerted=None, live_score=None, live_version=None, kept_live=None) -> KeptVisit:
    return KeptVisit("e1", "porch", 1_800_000_000.0, label, tuple(trace), kept_live, live_alerted, live_score,
                     live_version)


CAT_TRACE = _frames(*[0.85] * 10)
RACCOON_TRACE = _frames(None, 0.72, 0.75, 0.8, 0.78, 0.76, None)


@pytest.mark.parametrize("visit, kept_deployed, kept_candidate, expect", [
    # the cat alerted live; the candidate scores it 0.40 where the deployed one says 0.85: no alert now
    (_visit("not_raccoon", CAT_TRACE, True, 0.85, SHIPPED), 0.85, 0.40,
     dict(deployed_alerted=True, deployed_from=FROM_LIVE, candidate_alerted=False, kept=KEPT_TRACE, frames=10,
          replay_agrees=True, deployed_wrong=True, candidate_wrong=False)),
    # a raccoon that alerted live is right for the deployed classifier, whatever the kept frame scores offline
    # (the old single-frame re-score called it wrong at 0.60); an unchanged candidate alerts as it did
    (_visit("raccoon", RACCOON_TRACE, True, 0.765, SHIPPED), 0.60, 0.60,
     dict(deployed_alerted=True, deployed_from=FROM_LIVE, candidate_alerted=True, candidate_score=0.765,
          deployed_wrong=False, candidate_wrong=False)),
    # the candidate pushes the raccoon down: its visit no longer alerts
    (_visit("raccoon", RACCOON_TRACE, True, 0.765, SHIPPED), 0.78, 0.50,
     dict(candidate_alerted=False, deployed_wrong=False, candidate_wrong=True)),
    # a detection (below the alert threshold live) the user marked raccoon: the deployed one missed it
    (_visit("raccoon", _frames(*[0.6] * 8), False, 0.6, SHIPPED), 0.6, 0.9,
     dict(deployed_alerted=False, deployed_from=FROM_LIVE, candidate_alerted=True, deployed_wrong=True,
          candidate_wrong=False)),
    # scored live by an older classifier: the deployed one is replayed from the live score of the kept frame
    (_visit("not_raccoon", CAT_TRACE, True, 0.85, "olderversion", kept_live=0.85), 0.5, 0.3,
     dict(deployed_alerted=False, deployed_from=FROM_REPLAY, candidate_alerted=False, deployed_wrong=False)),
    # not in this store (a folder of stills): only the best frame, replayed as a still for a window of frames
    (_visit("raccoon"), 0.8, 0.65,
     dict(deployed_alerted=True, deployed_from=FROM_REPLAY, candidate_alerted=False, kept=KEPT_BEST_FRAME,
          frames=10, replay_agrees=None, in_store=False)),
    # the deployed classifier finds nothing in the kept frame offline, nor does the candidate: no change seen
    (_visit("raccoon", RACCOON_TRACE, True, 0.765, SHIPPED), 0.0, 0.0, dict(candidate_alerted=True)),
    # ... the candidate does: its score there stands for every frame the visit was seen
    (_visit("not_raccoon", CAT_TRACE, True, 0.85, SHIPPED), 0.0, 0.3, dict(candidate_alerted=False,
                                                                           candidate_score=0.3)),
])
def test_judge_visit(visit, kept_deployed, kept_candidate, expect):
    outcome = judge_visit(visit, kept_deployed, kept_candidate, RULES, SHIPPED)
    got = {**outcome.to_dict(), "deployed_wrong": outcome.wrong("deployed"),
           "candidate_wrong": outcome.wrong("candidate")}
    for key, value in expect.items():
        assert got[key] == (pytest.approx(value, abs=1e-3) if isinstance(value, float) else value), key


@pytest.mark.parametrize("row, expect", [
    ({"id": "e1", "camera": "porch", "start_time": 5.0, "top_score": 0.8, "model_version": SHIPPED,
      "scores": [[1.0, 0.0, None, None], [1.25, 0.0, 0.7, 0.4], [1.5, 0.8, 0.9, 0.5], [1.75, 0.8, 0.6, 0.5]]},
     dict(trace=((1.0, None, None), (1.25, 0.7, None), (1.5, 0.9, None), (1.75, 0.6, None)), kept_live_score=0.9,
          live_alerted=True, live_score=0.8, live_version=SHIPPED)),
    ({"id": "e4", "camera": "porch", "start_time": 5.0, "top_score": 0.8,
      "scores": [[1.0, 0.0, 0.7, 0.4, 0.1, 0.2, 0.5, 0.6], [1.25, 0.8, 0.9, 0.5, 0.1, 0.2, "x", 0.6]]},
     dict(trace=((1.0, 0.7, (0.1, 0.2, 0.5, 0.6)), (1.25, 0.9, None)), kept_live_score=0.9)),
    ({"id": "e2", "camera": "porch", "start_time": 5.0, "top_score": 0.6, "severity": "detection", "scores": []},
     dict(trace=(), kept_live_score=None, live_alerted=False, live_version=None)),
    ({"id": "e3", "camera": "porch", "start_time": 5.0, "top_score": 0.9, "severity": "alert",
      "scores": [["x", 1, 2], [1.0], [2.0, 0.9, float("nan")], None]},
     dict(trace=((2.0, None, None),), live_alerted=True)),
])
def test_kept_visit_from_a_store_row(row, expect):
    stored = {"label": "raccoon", "end_time": 6.0, "box": (0.1, 0.1, 0.5, 0.5), "in_cooldown": False, "snapshot": None,
              "updated": 6.0, **row}
    visit = kept_visit_from_event(EventRow(**stored), "raccoon")
    for key, value in expect.items():
        assert getattr(visit, key) == value, key


def _outcome(event_id: str, label: str, deployed: bool, candidate: bool, start: float | None = 1.0,
             d_score: float = 0.8, c_score: float = 0.3) -> VisitOutcome:
    return VisitOutcome(event_id, "porch", start, label, 0.7, "color", KEPT_TRACE, 10, d_score, deployed, FROM_LIVE,
                        c_score, candidate, True, True)


OUTCOMES = [
    _outcome("cat1", "not_raccoon", True, False, 3.0, 0.85, 0.4),   # deployed wrong, candidate right
    _outcome("cat2", "not_raccoon", True, True, 1.0, 0.9, 0.75),    # both wrong
    _outcome("rac1", "raccoon", True, True, 2.0, 0.8, 0.78),        # both right: not listed
    _outcome("rac2", "raccoon", True, False, None, 0.76, 0.5),      # the candidate lost it
]


def test_the_gate_counts_and_lists_the_visits_either_got_wrong():
    deployed = promotion_metrics(0.9, 0, 47, OUTCOMES, "deployed")
    candidate = promotion_metrics(0.9, 0, 47, OUTCOMES, "candidate")
    assert (deployed.site_errors, candidate.site_errors, deployed.site_events) == (2, 2, 4)
    assert deployed.site_not_raccoon_mean == pytest.approx(0.875)
    assert candidate.site_raccoon_mean == pytest.approx(0.64)
    assert [o.event_id for o in wrong_visits(OUTCOMES)] == ["cat2", "cat1", "rac2"]  # by time, unknown last
    table = wrong_table(OUTCOMES).splitlines()
    assert len(table) == 5 and "rac1" not in "".join(table)
    cat1 = next(line for line in table if line.startswith("cat1"))
    when = datetime.fromtimestamp(3.0).strftime("%Y-%m-%d %H:%M:%S")
    assert when in cat1 and "0.850 alert X" in cat1 and "0.400 no alert " in cat1 and "(deployed: live)" in cat1
    assert wrong_table(OUTCOMES[2:3]) == "no held-out visit was wrong for either classifier\n"


def _rows(*ts: float) -> list[tuple[float, tuple[float, float, float | None, float | None]]]:
    """(monotonic time, row) pairs as EventTrace keeps them; the row's wall ts is the same here."""
    return [(t, (t, 0.0, 0.5, 0.3)) for t in ts]


@pytest.mark.parametrize("rows, first, last, lookback, kept", [
    (_rows(8.0, 9.5, 10.0, 11.0, 12.0, 14.0), 10.0, 12.0, 0, [9.5, 10.0, 11.0, 12.0]),  # 1 s either side
    (_rows(8.0, 9.5, 10.0, 11.0, 12.0, 14.0), 10.0, 12.0, 1, [8.0, 9.5, 10.0, 11.0, 12.0]),  # + the window before
    (_rows(5.0, 6.0, 7.5, 10.0, 12.0), 10.0, 12.0, 2, [6.0, 7.5, 10.0, 12.0]),  # slow frames: the lookback holds them
    (_rows(10.0, 11.0), 10.0, 11.0, 10, [10.0, 11.0]),  # fewer rows than the lookback
    (_rows(1.0, 2.0), 10.0, 11.0, 10, []),  # nothing of the event left (the deque rolled over)
])
def test_an_event_keeps_the_frames_its_first_visit_score_looked_back_at(rows, first, last, lookback, kept):
    from raccoon_watch.review.eventtrace import event_rows

    assert [r[0] for r in event_rows(rows, first, last, lookback)] == kept


@pytest.mark.parametrize("detections, row", [
    ((), (5.0, 0.0, None, None)),
    ((Detection("raccoon", 0.3, RACCOON, 0.9), Detection("raccoon", 0.8, BOWL, 0.2), Detection("cat", 0.99, BOWL)),
     (5.0, 0.0, 0.8, 0.2, *BOWL)),  # the best candidate of a watched label, with its box
])
def test_a_trace_row_keeps_the_best_candidates_box(detections, row):
    import numpy as np

    from raccoon_watch.review.eventtrace import score_row
    from raccoon_watch.types import Frame, FrameResult

    result = FrameResult(Frame("porch", 0, 5.0, 1.0, np.zeros((4, 4, 3), np.uint8)), detections, 1.0)
    assert score_row(result, (), frozenset({"raccoon"})) == row
