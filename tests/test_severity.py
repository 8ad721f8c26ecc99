"""Alerts and detections (Frigate's review terms), the pure decisions as tables.

A visit whose score passes the review threshold but not the alert threshold is a *detection*: stored
and shown, never pushed. If it later passes the alert threshold it is upgraded (a second START, same
id, severity alert) and pushed then, once. Without a review threshold every event is an alert, as
before detections existed.
"""

from __future__ import annotations

import pytest

from raccoon_watch import debounce
from raccoon_watch.debounce import CameraState, DebounceParams, Observation
from raccoon_watch.filters import DetectionFilter, meets_review_threshold, meets_threshold
from raccoon_watch.imagemode import COLOR, IR
from raccoon_watch.types import Detection, EventKind, Severity

BOX = (0.1, 0.1, 0.4, 0.5)
ALERT_SCORE, REVIEW_SCORE = 0.9, 0.6
P = DebounceParams(min_frames=3, window=5, end_after=10.0, cooldown=300.0, update_interval=0.0)
A, D = Severity.ALERT, Severity.DETECTION


def observe(ch: str, ts: float, mono: float | None = None) -> Observation:
    """'x': a raccoon over the alert threshold; 'r': one over the review threshold only; '.': none."""
    if ch == ".":
        return Observation("cam", ts, (), mono=mono)
    det = Detection("raccoon", ALERT_SCORE if ch == "x" else REVIEW_SCORE, BOX)
    return Observation("cam", ts, (det,), mono=mono, alerting=(det,) if ch == "x" else ())


def run(pattern: str, params: DebounceParams = P, dt: float = 0.2, tail: float | None = None):
    """Returns (kind, severity, frame index) of each event; the tail tick is index -1."""
    state = CameraState("cam")
    out = []
    for i, ch in enumerate(pattern):
        state, evs = debounce.step(state, observe(ch, 1000.0 + i * dt), ("raccoon",), params)
        out += [(e.kind, e.severity, i) for e in evs]
    if tail is not None:
        state, evs = debounce.tick(state, 1000.0 + tail, params)
        out += [(e.kind, e.severity, -1) for e in evs]
    return out


S, U, E = EventKind.START, EventKind.UPDATE, EventKind.END


@pytest.mark.parametrize(
    "pattern, expected",
    [
        ("xxx", [(S, A, 2)]),  # as before detections existed
        ("rrr", [(S, D, 2)]),  # the review threshold only: a detection
        ("rr", []),  # 2 of 5 is not enough at either level
        ("xxr", [(S, D, 2)]),  # 3 frames counted, only 2 of them at the alert level
        ("rxx", [(S, D, 2)]),
        ("rxxx", [(S, D, 2), (S, A, 3)]),  # upgraded on the third alert-level frame, same window
        ("rrrrrxxx", [(S, D, 2), (S, A, 7)]),
        ("rrrxrxrx", [(S, D, 2), (S, A, 7)]),  # frames 3, 5, 7 at the alert level: 3 of the last 5
        ("rrrx.x.x", [(S, D, 2), (S, A, 7)]),  # frames without a sighting keep the detection going
        ("rrrxrrxrrx", [(S, D, 2)]),  # never 3 alert-level frames within 5
        ("xxxrrr", [(S, A, 2)]),  # an alert never goes back to a detection
    ],
)
def test_severity_table(pattern, expected):
    assert run(pattern) == expected


def test_an_upgraded_detection_keeps_its_id_and_start_and_ends_as_an_alert():
    state, events = CameraState("cam"), []
    for i, ch in enumerate("rrrrxxx"):
        state, evs = debounce.step(state, observe(ch, 50.0 + i), ("raccoon",), P)
        events += evs
    state, evs = debounce.tick(state, 100.0, P)
    events += evs
    assert [(e.kind, e.severity) for e in events] == [(S, D), (S, A), (E, A)]
    first, upgrade, end = events
    assert first.id == upgrade.id == end.id
    assert upgrade.start_time == first.start_time == 52.0 and upgrade.first_seen_ts == 50.0
    assert upgrade.frame_ts == 56.0  # the frame that made it an alert: the latency is measured from it
    assert upgrade.top_score == ALERT_SCORE


def test_without_alerting_given_every_counted_frame_alerts():
    """``Observation.alerting`` None (no review threshold): the old rule, unchanged."""
    det = Detection("raccoon", 0.9, BOX)
    state, events = CameraState("cam"), []
    for i in range(3):
        state, evs = debounce.step(state, Observation("cam", float(i), (det,)), ("raccoon",), P)
        events += evs
    assert [(e.kind, e.severity) for e in events] == [(S, A)]


@pytest.mark.parametrize(
    "first, gap_s, second, expected",
    [
        # (first visit, seconds from its end to the second visit, second visit) -> second's events
        ("xxx", 100.0, "xxx", [(S, A, True)]),  # an alert's cooldown holds back the next alert's push
        ("rrr", 100.0, "xxx", [(S, A, False)]),  # a detection pushed nothing: it starts no cooldown
        ("xxx", 100.0, "rrrxxx", [(S, D, True), (S, A, True)]),  # the upgrade is in the alert's cooldown
        ("xxx", 400.0, "rrrxxx", [(S, D, False), (S, A, False)]),
    ],
)
def test_only_alerts_start_a_cooldown(first, gap_s, second, expected):
    params = DebounceParams(min_frames=3, window=5, end_after=5.0, cooldown=300.0, update_interval=0.0)
    state = CameraState("cam")
    t = 0.0
    for ch in first:
        state, _ = debounce.step(state, observe(ch, t), ("raccoon",), params)
        t += 1.0
    state, ended = debounce.tick(state, t + 10.0, params)
    assert [e.kind for e in ended] == [E]
    t = t - 1.0 + gap_s  # the first visit's last sighting + gap
    got = []
    for ch in second:
        state, evs = debounce.step(state, observe(ch, t), ("raccoon",), params)
        got += [(e.kind, e.severity, e.in_cooldown) for e in evs]
        t += 1.0
    assert got == expected


def test_updates_of_a_detection_say_detection():
    params = DebounceParams(min_frames=1, window=1, end_after=10.0, update_interval=1.0)
    state, events = CameraState("cam"), []
    for i, score in enumerate((0.6, 0.65, 0.7)):
        det = Detection("raccoon", score, BOX)
        state, evs = debounce.step(state, Observation("cam", float(i), (det,), alerting=()), ("raccoon",), params)
        events += evs
    assert [(e.kind, e.severity) for e in events] == [(S, D), (U, D), (U, D)]


# --- the two score levels of a filter ---------------------------------------------------------------

F = frozenset({"raccoon"})


@pytest.mark.parametrize(
    "flt, mode, alert_at, review_at",
    [
        (DetectionFilter(F, 0.74), COLOR, 0.74, 0.74),  # no review threshold: no detections
        (DetectionFilter(F, 0.74, review_threshold=0.5), COLOR, 0.74, 0.5),
        (DetectionFilter(F, 0.74, review_threshold=0.5), IR, 0.74, 0.5),  # one review threshold for every mode
        (DetectionFilter(F, 0.74, ir_threshold=0.6, review_threshold=0.5, ir_review_threshold=0.3), IR, 0.6, 0.3),
        (DetectionFilter(F, 0.74, ir_threshold=0.6, review_threshold=0.5, ir_review_threshold=0.3), COLOR, 0.74, 0.5),
        (DetectionFilter(F, 0.74, ir_review_threshold=0.3), IR, 0.74, 0.3),  # detections at night only
        (DetectionFilter(F, 0.74, ir_review_threshold=0.3), COLOR, 0.74, 0.74),
        (DetectionFilter(F, 0.74, review_threshold=0.8), COLOR, 0.74, 0.74),  # above the alert one: capped
        (DetectionFilter(F, 0.74, ir_threshold=0.4, review_threshold=0.5), IR, 0.4, 0.4),
        (DetectionFilter(F, 0.74, review_threshold=0.5), None, 0.74, 0.5),  # mode unknown: colour
    ],
)
def test_review_threshold_per_image_mode(flt, mode, alert_at, review_at):
    assert flt.threshold_for(mode) == alert_at
    assert flt.review_threshold_for(mode) == review_at
    for score in (review_at - 0.01, review_at, alert_at - 0.01, alert_at):
        det = Detection("raccoon", score, BOX, mode=mode)
        assert meets_review_threshold(det, flt) is (score >= review_at)
        assert meets_threshold(det, flt) is (score >= alert_at)
