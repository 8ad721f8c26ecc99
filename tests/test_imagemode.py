"""Image mode (colour vs infrared/monochrome) and the per-mode threshold it picks."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from raccoon_watch.filters import DetectionFilter, meets_threshold
from raccoon_watch.recognition.imagemode import IR_MAX_SPREAD, channel_spread, image_mode, mode_of_spread
from raccoon_watch.types import Detection

SHARED = Path(os.environ.get("RACCOON_SHARED", Path(__file__).resolve().parents[1] / ".." / "shared"))


@pytest.mark.parametrize(("spread", "mode"), [
    (0.0, "ir"), (0.4, "ir"), (IR_MAX_SPREAD - 0.01, "ir"), (IR_MAX_SPREAD, "color"), (6.8, "color"), (60.0, "color"),
])
def test_mode_of_spread(spread, mode):
    assert mode_of_spread(spread) == mode


def _grey_noise(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grey = rng.integers(0, 256, (120, 160), dtype=np.uint8)
    image = np.repeat(grey[..., None], 3, axis=2)
    # JPEG chroma noise of an IR camera: a grey level or two between channels
    return np.clip(image.astype(np.int16) + rng.integers(-1, 2, image.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("image", "mode"), [
    (np.zeros((48, 64, 3), np.uint8), "ir"),  # black
    (np.full((48, 64), 128, np.uint8), "ir"),  # a 2-D grey image
    (_grey_noise(0), "ir"),  # IR texture with chroma noise
    (np.full((48, 64, 3), (40, 90, 160), np.uint8), "color"),  # warm lamp light (BGR)
    (np.dstack([np.full((48, 64), 30, np.uint8), np.full((48, 64), 34, np.uint8), np.full((48, 64), 38, np.uint8)]),
     "color"),  # dim but tinted: spread 8
])
def test_image_mode_table(image, mode):
    assert image_mode(image) == mode


def test_channel_spread_rejects_a_non_image():
    with pytest.raises(ValueError, match="expected an"):
        channel_spread(np.zeros((4, 4, 4), np.uint8))


@pytest.mark.parametrize(("mode", "score", "passes"), [
    ("color", 0.70, False), ("color", 0.75, True), ("ir", 0.55, False), ("ir", 0.61, True), (None, 0.70, False),
])
def test_filter_threshold_per_mode(mode, score, passes):
    flt = DetectionFilter(frozenset({"raccoon"}), 0.741, ir_threshold=0.6)
    assert meets_threshold(Detection("raccoon", score, (0.1, 0.1, 0.3, 0.3), mode=mode), flt) is passes


def test_filter_without_ir_threshold_uses_one_threshold():
    flt = DetectionFilter(frozenset({"raccoon"}), 0.741)
    assert not meets_threshold(Detection("raccoon", 0.7, (0.1, 0.1, 0.3, 0.3), mode="ir"), flt)


@pytest.mark.shared
def test_shared_photos_by_mode():
    """Real frames: every IR night negative with gray channels is 'ir', every day negative 'color'."""
    night = SHARED / "data" / "night_extra"
    if not night.is_dir():
        pytest.skip(f"no {night} (set RACCOON_SHARED)")
    rows = [line.split(",") for line in (night / "labels.csv").read_text().splitlines()[1:]]
    condition = {r[0]: r[8] for r in rows}
    seen = {"night_ir": [], "flash": []}
    for name, cond in condition.items():
        if cond in seen:
            image = cv2.imread(str(night / "images" / name))
            seen[cond].append(image_mode(image))
    assert seen["night_ir"] and all(m == "ir" for m in seen["night_ir"]), seen["night_ir"].count("color")
    day = sorted((SHARED / "data" / "negatives").glob("kdvc_*.jpg"))[:40]
    modes = [image_mode(cv2.imread(str(p))) for p in day]
    assert modes.count("color") == len(modes)


@pytest.mark.parametrize(("config", "card", "expected"), [
    ((None, None), (0.741, 0.6), (0.741, 0.6)),  # the cards' pair
    ((0.8, None), (0.741, 0.6), (0.8, None)),  # one number set by the user: every mode
    ((0.8, 0.5), (0.741, 0.6), (0.8, 0.5)),
    ((None, 0.5), (0.741, 0.6), (0.741, 0.5)),
    ((None, None), (None, None), (0.5, None)),  # no card: the default, one threshold
    ((None, None), (0.741, None), (0.741, None)),  # an old card: one threshold
])
def test_deployed_thresholds(config, card, expected):
    from raccoon_watch.app import deployed_thresholds

    assert deployed_thresholds(*config, *card) == expected


@pytest.mark.parametrize(("camera", "daemon", "expected"), [
    ({}, (0.741, 0.6), (0.741, 0.6)),
    ({"threshold": 0.9}, (0.741, 0.6), (0.9, None)),  # a camera's own threshold: both modes
    ({"threshold": 0.9, "ir_threshold": 0.7}, (0.741, 0.6), (0.9, 0.7)),
    ({"ir_threshold": 0.4}, (0.741, 0.6), (0.741, 0.4)),
])
def test_camera_filter_thresholds(camera, daemon, expected):
    from raccoon_watch.app import Thresholds, camera_filter
    from raccoon_watch.config import Config

    cfg = Config.model_validate({"cameras": {"porch": {"source": "0", **camera}}})
    flt = camera_filter(cfg.cameras["porch"], cfg, Thresholds(*daemon))
    assert (flt.threshold, flt.ir_threshold) == expected


@pytest.mark.parametrize(("modes", "expected"), [
    (("ir", "ir", "ir"), "ir"),
    (("color", "color", "color"), "color"),
    (("ir", "ir", "color"), "color"),  # the best frame (the last, scoring highest) decides
])
def test_event_carries_the_mode_of_its_best_detection(modes, expected):
    from raccoon_watch import debounce
    from raccoon_watch.debounce import CameraState, DebounceParams, Observation

    params = DebounceParams(min_frames=1, window=1, end_after=10.0, cooldown=300.0, update_interval=0.0)
    state, events = CameraState("porch"), []
    for i, mode in enumerate(modes):
        hit = Detection("raccoon", 0.8 + i / 100, (0.1, 0.1, 0.3, 0.3), mode=mode)
        state, new = debounce.step(state, Observation("porch", 100.0 + i, (hit,), mono=float(i)), ("raccoon",), params)
        events += new
    state, ended = debounce.end_all(state, 10.0)
    assert events[0].mode == modes[0]
    assert ended[-1].mode == expected
