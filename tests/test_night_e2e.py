"""At night, on a fixed camera, the animal is what moves: the real daemon on infrared porch clips.

Real parts: the ``raccoon-watch run`` process with the shipped two-stage model at its deployed
threshold, H.264 clips made here with ffmpeg from real night material in ../shared/data/night: an
infrared camera-trap frame as the porch, held-out night raccoon crops (never the classifier's
training group), grey sensor noise on every frame.

- ``pair``: a raccoon crop stands still by the porch's left edge for the whole clip (a garden
  raccoon statue, a picture on a bag: the perfect look-alike, which the classifier scores 0.95 in
  every frame) while another raccoon walks across the upper half for 6 s. It must alert once, with
  the walking raccoon's box, with or without the motion gate.
- ``still``: the look-alike alone, 10 s, the motion gate off so that every sampled frame is detected
  and classified. It must never alert, and the daemon says why (``still_candidate_ignored``).

The file cameras drain (``drain: true``: every sampled frame is detected, on file time), so the
result does not depend on how busy the machine is; ``end_after`` is longer than the clip, so a slow
run cannot end an event between two frames and start it again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from raccoon_watch.types import Box, box_iou
from tests.daemon import BUNDLED_MODEL, Daemon, write_config
from tests.fixtures.media import make_clip

pytestmark = [pytest.mark.slow, pytest.mark.shared]

SIZE = (1280, 720)  # (width, height)
FPS = 15.0
PORCH = "mct_SEQ75016_0006.jpg"  # an infrared Missouri camera-trap frame, no animal
STATUE = "bcc_crop_glass_6322.jpg"  # held-out night raccoon crops (not the classifier's bcc_crop_game group)
WALKER = "bcc_crop_ub_15129_0_7.jpg"
PATCH_WIDTH = 160  # px, both
STATUE_AT = (120, 420)  # px, top-left (x, y)
WALK_Y, WALK_FROM, WALK_TO = 150, 450, 1050  # px: the walker's row and its x from -> to
LEAD_S, WALK_S, TAIL_S = 2.0, 6.0, 2.0
NOISE_SIGMA = 4.0  # grey levels of sensor noise
DRAIN_GRACE_S = 5.0  # after the file ended: the 2 frames still queued go through (about 0.3 s each here)


def _grey_patch(path: Path, width: int) -> np.ndarray:
    grey = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (width, round(grey.shape[0] * width / grey.shape[1])), interpolation=cv2.INTER_AREA)


def _box(x: int, y: int, patch: np.ndarray) -> Box:
    """Normalised (xmin, ymin, xmax, ymax) of ``patch`` pasted at pixel (x, y)."""
    return (x / SIZE[0], y / SIZE[1], (x + patch.shape[1]) / SIZE[0], (y + patch.shape[0]) / SIZE[1])


def night_clip(shared_dir: Path, out: Path, walker: bool) -> tuple[Path, Box, tuple[Box, ...]]:
    """The clip, the statue's box and the walker's box in each of its frames (empty without one)."""
    night = shared_dir / "data" / "night"
    porch = cv2.cvtColor(cv2.resize(cv2.imread(str(night / "negatives" / PORCH)), SIZE), cv2.COLOR_BGR2GRAY)
    statue, walking = _grey_patch(night / "positives_crops" / STATUE, PATCH_WIDTH), None
    sx, sy = STATUE_AT
    porch[sy:sy + statue.shape[0], sx:sx + statue.shape[1]] = statue
    if walker:
        walking = _grey_patch(night / "positives_crops" / WALKER, PATCH_WIDTH)
    rng = np.random.default_rng(0)
    noise = [rng.normal(0.0, NOISE_SIGMA, porch.shape).astype(np.int16) for _ in range(8)]
    lead, walk, tail = round(LEAD_S * FPS), round(WALK_S * FPS), round(TAIL_S * FPS)
    frames, walked = [], []
    for i in range(lead + walk + tail):
        image = porch.copy()
        if walking is not None and lead <= i < lead + walk:
            step = (i - lead) / (walk - 1)
            x, y = round(WALK_FROM + step * (WALK_TO - WALK_FROM)), WALK_Y + round(3 * np.sin(i))  # a slight bob
            image[y:y + walking.shape[0], x:x + walking.shape[1]] = walking
            walked.append(_box(x, y, walking))
        image = np.clip(image.astype(np.int16) + noise[i % len(noise)], 0, 255).astype(np.uint8)
        frames.append(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    return make_clip(frames, out, fps=FPS, codec="h264"), _box(sx, sy, statue), tuple(walked)


@pytest.fixture(scope="module")
def two_stage() -> Path:
    if not (BUNDLED_MODEL / "classifier_card.json").is_file():
        pytest.skip("models/raccoon has no classifier stage: the night clips need the raccoon classifier")
    return BUNDLED_MODEL


def _config(tmp_path: Path, clip: Path, model: Path, motion: bool) -> Path:
    return write_config(tmp_path / "config.yaml", {
        "cameras": {"porch": {"source": str(clip), "detect_fps": 5, "drain": True, "motion": {"enabled": motion}}},
        "detector": {"model": str(model), "labels": ["raccoon"], "threshold": None, "workers": 1, "queue_size": 2},
        "events": {"min_frames": 3, "window": 5, "end_after": 60.0, "cooldown": 60},
        "storage": {"path": str(tmp_path / "var")},
        "clips": {"enabled": False},
        "logging": {"format": "json", "level": "info"},
    })


def _run_clip(config: Path) -> Daemon:
    """Run the daemon over a clip read once, until its last frames (at most the queue's 2) are through."""
    daemon = Daemon.start(config)
    try:
        daemon.wait_for("file_ended", timeout=240)
        time.sleep(DRAIN_GRACE_S)
    finally:
        code, _ = daemon.terminate()
    assert code == 0, "".join(daemon.raw[-30:])
    return daemon


@pytest.mark.parametrize("motion", [True, False], ids=["motion-gate", "no-gate"])
def test_a_raccoon_walking_beside_a_still_look_alike_alerts_once_with_its_own_box(
        tmp_path, shared_dir, ffmpeg, two_stage, motion):
    clip, statue, walked = night_clip(shared_dir, tmp_path / "pair.mp4", walker=True)
    daemon = _run_clip(_config(tmp_path, clip, two_stage, motion))
    started = daemon.events("event_started")
    assert len(started) == 1, "".join(daemon.raw[-30:])
    box = tuple(started[0]["box"])
    assert box_iou(box, statue) < 0.1  # not the statue
    assert max(box_iou(box, b) for b in walked) >= 0.5  # the walker, somewhere on its way
    assert any(e["event"] == "still_candidate_ignored" and box_iou(tuple(e["box"]), statue) >= 0.5
               for e in daemon.lines)  # the statue was seen, scored, and refused


def test_the_still_look_alike_alone_never_alerts(tmp_path, shared_dir, ffmpeg, two_stage):
    clip, statue, _ = night_clip(shared_dir, tmp_path / "still.mp4", walker=False)
    daemon = _run_clip(_config(tmp_path, clip, two_stage, motion=False))
    assert daemon.events("event_started") == []
    (still,) = daemon.events("still_candidate_ignored")  # one track, logged once
    assert box_iou(tuple(still["box"]), statue) >= 0.5 and still["mode"] == "ir"
    assert still["score"] >= _ir_threshold(two_stage)  # it would alert: only its stillness kept it from it


def _ir_threshold(model: Path) -> float:
    """The deployed threshold for infrared frames: the classifier card's ``thresholds.ir``, else its one."""
    card = json.loads((model / "classifier_card.json").read_text())
    return float((card.get("thresholds") or {}).get("ir", card["threshold"]))
