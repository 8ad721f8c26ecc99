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
from raccoon_watch.recognition.imagemode import COLOR, IR
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


# --- where the review thresholds come from: config, camera, the classifier card ---------------------

from raccoon_watch.app import App, Thresholds, camera_filter, review_thresholds  # noqa: E402
from raccoon_watch.config import ConfigError, parse_config  # noqa: E402
from raccoon_watch.recognition.detectors.factory import card_review_thresholds  # noqa: E402

CARD_REVIEW = (0.45, 0.3)  # a card's review_thresholds: colour, ir


@pytest.mark.parametrize(("config", "card", "expected"), [
    ((None, None), (None, None), (None, None)),  # neither gives one: no detections
    ((None, None), CARD_REVIEW, CARD_REVIEW),  # the card's pair
    ((0.5, None), CARD_REVIEW, (0.5, None)),  # one number set by the user: every mode
    ((0.5, 0.2), CARD_REVIEW, (0.5, 0.2)),
    ((None, 0.2), CARD_REVIEW, (0.45, 0.2)),
    ((None, 0.2), (None, None), (None, 0.2)),  # detections in infrared frames only
    ((None, None), (None, 0.3), (None, 0.3)),
])
def test_review_thresholds(config, card, expected):
    assert review_thresholds(*config, *card) == expected


@pytest.mark.parametrize(
    "detector, card_review, expected",
    [
        ("{}", (None, None), Thresholds(0.741, None, None, None)),  # the card has none: no detections
        ("{}", CARD_REVIEW, Thresholds(0.741, None, 0.45, 0.3)),
        ("{review_threshold: 0.5}", CARD_REVIEW, Thresholds(0.741, None, 0.5, None)),  # config's, every mode
        ("{review_threshold: 0.5, ir_review_threshold: 0.2}", CARD_REVIEW, Thresholds(0.741, None, 0.5, 0.2)),
        ("{ir_review_threshold: 0.2}", CARD_REVIEW, Thresholds(0.741, None, 0.45, 0.2)),
        ("{review_threshold: 0.5}", (None, None), Thresholds(0.741, None, 0.5, None)),
        ("{threshold: 0.8}", CARD_REVIEW, Thresholds(0.8, None, 0.45, 0.3)),  # own alert, the card's review
    ],
)
def test_daemon_wide_thresholds(tmp_path, detector, card_review, expected):
    app = App(parse_config(f"cameras: {{a: {{source: x.mp4}}}}\ndetector: {detector}\n"
                           f"storage: {{path: {tmp_path}}}\n"))
    app.card_threshold, app.card_review = 0.741, card_review
    assert app.thresholds_for(app.cfg) == expected


@pytest.mark.parametrize(
    "camera, review, ir_review",
    [
        ("{source: x.mp4}", 0.45, 0.3),  # the daemon-wide ones
        ("{source: x.mp4, review_threshold: 0.6}", 0.6, 0.6),  # a camera's own applies to every mode...
        ("{source: x.mp4, review_threshold: 0.6, ir_review_threshold: 0.1}", 0.6, 0.1),  # ...unless it sets both
        ("{source: x.mp4, ir_review_threshold: 0.1}", 0.45, 0.1),
    ],
)
def test_camera_review_overrides(camera, review, ir_review):
    cfg = parse_config(f"cameras: {{a: {camera}}}\n")
    flt = camera_filter(cfg.cameras["a"], cfg, Thresholds(0.741, None, 0.45, 0.3))
    assert (flt.review_threshold_for(COLOR), flt.review_threshold_for(IR)) == (review, ir_review)


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("cameras: {a: {source: x.mp4}}\ndetector: {threshold: 0.7, review_threshold: 0.8}\n",
         "detector (line 2): Value error, review_threshold (0.8) must not be above threshold (0.7)"),
        ("cameras: {a: {source: x.mp4}}\ndetector: {ir_threshold: 0.4, ir_review_threshold: 0.5}\n",
         "detector (line 2): Value error, ir_review_threshold (0.5) must not be above ir_threshold (0.4)"),
        ("cameras: {a: {source: x.mp4, threshold: 0.5, review_threshold: 0.6}}\n",
         "cameras.a (line 1): Value error, review_threshold (0.6) must not be above threshold (0.5)"),
        ("cameras: {a: {source: x.mp4}}\ndetector: {review_threshold: 1.5}\n",
         "detector.review_threshold (line 2): Input should be less than or equal to 1"),
        ("cameras: {a: {source: x.mp4, ir_review_threshold: -0.1}}\n",
         "cameras.a.ir_review_threshold (line 1): Input should be greater than or equal to 0"),
        ("cameras: {a: {source: x.mp4}}\ndetector: {review_treshold: 0.5}\n",
         "detector.review_treshold (line 2): unknown key"),
    ],
)
def test_bad_review_thresholds_name_the_key(yaml_text, message):
    with pytest.raises(ConfigError) as err:
        parse_config(yaml_text)
    assert message in str(err.value)


def test_check_config_exits_2_naming_the_key(tmp_path):
    import subprocess
    import sys

    from tests.daemon import REPO

    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras: {a: {source: x.mp4}}\ndetector: {threshold: 0.6, review_threshold: 0.7}\n")
    done = subprocess.run([sys.executable, "-m", "raccoon_watch", "check-config", str(bad)], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "detector (line 2)" in done.stderr and "review_threshold (0.7)" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "card, expected",
    [
        ({"threshold": 0.741}, (None, None)),  # no review thresholds: no detections
        ({"threshold": 0.741, "review_thresholds": {"color": 0.5, "ir": 0.35}}, (0.5, 0.35)),
        ({"threshold": 0.741, "review_thresholds": {"ir": 0.35}}, (None, 0.35)),
        ({"threshold": 0.741, "thresholds": {"ir": 0.5}, "review_thresholds": {"ir": 0.45}}, (None, 0.45)),
    ],
)
def test_card_review_thresholds(card, expected):
    assert card_review_thresholds(card) == expected


@pytest.mark.parametrize(
    "card, message",
    [
        ({"threshold": 0.741, "review_thresholds": [0.5]}, "must be a mapping"),
        ({"threshold": 0.741, "review_thresholds": {"night": 0.5}}, "unknown image mode 'night'"),
        ({"threshold": 0.741, "review_thresholds": {"color": 1.2}}, "review_thresholds.color must be in 0..1"),
        ({"threshold": 0.741, "review_thresholds": {"color": 0.8}}, "review_thresholds.color (0.8) is above"),
        ({"threshold": 0.741, "thresholds": {"ir": 0.5}, "review_thresholds": {"ir": 0.6}},
         "review_thresholds.ir (0.6) is above"),
        ({"threshold": 0.741, "review_thresholds": {"color": "abc"}}, "could not convert"),
    ],
)
def test_bad_card_review_thresholds(card, message):
    with pytest.raises(ValueError) as err:
        card_review_thresholds(card)
    assert message in str(err.value)


def test_the_shipped_folder_with_review_thresholds_in_its_card(tmp_path):
    """create_recognizer reads the card's review thresholds beside its alert thresholds; a bad one is
    a ModelError naming the card (the daemon exits before anything starts)."""
    import json
    import shutil

    from raccoon_watch.config import DetectorConfig
    from raccoon_watch.recognition.detectors import create_recognizer
    from raccoon_watch.recognition.detectors.base import ModelError
    from tests.daemon import BUNDLED_MODEL

    if not (BUNDLED_MODEL / "classifier_card.json").is_file():
        pytest.skip("no bundled two-stage model")
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL, folder)
    card_path = folder / "classifier_card.json"
    card = {k: v for k, v in json.loads(card_path.read_text()).items() if k != "thresholds"}  # one threshold
    card_path.write_text(json.dumps({**card, "threshold": 0.741, "review_thresholds": {"color": 0.5, "ir": 0.3}}))
    recognizer = create_recognizer(DetectorConfig(model=folder))
    try:
        assert (recognizer.review_threshold, recognizer.ir_review_threshold) == (0.5, 0.3)
    finally:
        recognizer.close()
    card_path.write_text(json.dumps({**card, "threshold": 0.741, "review_thresholds": {"color": 0.9}}))
    with pytest.raises(ModelError, match="classifier_card.json: bad value: review_thresholds.color"):
        create_recognizer(DetectorConfig(model=folder))
