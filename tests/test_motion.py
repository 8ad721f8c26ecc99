"""Motion gating: the detector on synthetic scenes, the decision table, the gate, the crop helpers."""

from __future__ import annotations

import numpy as np
import pytest

from raccoon_watch.config import MotionConfig
from raccoon_watch.motion import (
    Crop,
    GateState,
    MotionDetector,
    MotionGate,
    Reason,
    boxes_from_crop,
    crop_decision,
    crop_for_model,
    decide,
    motion_regions,
)
from raccoon_watch.types import Detection, Frame

SIZE = (1920, 1080)  # (width, height): the 1080p case is the one that matters for cost


def scene(size: tuple[int, int] = SIZE, level: int = 90) -> np.ndarray:
    """A still two-tone scene (BGR uint8)."""
    width, height = size
    image = np.full((height, width, 3), level, np.uint8)
    image[:, : width // 2] = level - 30
    return image


def noisy(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(0.0, sigma, image.shape).astype(np.int16)
    return np.clip(image.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def with_square(image: np.ndarray, box_px: tuple[int, int, int, int], value: int = 220) -> np.ndarray:
    xmin, ymin, xmax, ymax = box_px
    out = image.copy()
    out[ymin:ymax, xmin:xmax] = value
    return out


# --- MotionDetector ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [0.0, 4.0, 12.0], ids=["clean", "day-noise", "night-noise"])
def test_still_scene_has_no_motion(sigma: float) -> None:
    rng = np.random.default_rng(1)
    detector = MotionDetector(threshold=25, min_area=0.002)
    base = scene() if sigma < 10 else scene(level=40)  # the night scene is dark and noisy
    results = [detector.update(noisy(base, sigma, rng)) for _ in range(12)]
    assert not any(m.moving for m in results)


def test_first_frame_only_seeds_the_background() -> None:
    detector = MotionDetector()
    assert not detector.update(with_square(scene(), (0, 0, 900, 900))).moving


def test_object_appearing_is_motion_with_its_region() -> None:
    detector = MotionDetector(threshold=25, min_area=0.002)
    base = scene()
    for _ in range(3):
        detector.update(base)
    box_px = (1000, 500, 1200, 700)  # 200x200 px: about 2 % of the frame
    motion = detector.update(with_square(base, box_px))
    assert motion.moving
    assert 0.01 < motion.area < 0.04
    assert motion.region is not None
    xmin, ymin, xmax, ymax = motion.region  # normalised xyxy of the full frame
    assert xmin == pytest.approx(1000 / 1920, abs=0.02) and xmax == pytest.approx(1200 / 1920, abs=0.02)
    assert ymin == pytest.approx(500 / 1080, abs=0.03) and ymax == pytest.approx(700 / 1080, abs=0.03)


def _mask(*blobs: tuple[int, int, int, int], size: tuple[int, int] = (160, 90)) -> np.ndarray:
    """A changed-pixel mask (uint8 (h, w), 255 = changed) with rectangles (x0, y0, x1, y1) px set."""
    mask = np.zeros((size[1], size[0]), np.uint8)
    for x0, y0, x1, y1 in blobs:
        mask[y0:y1, x0:x1] = 255
    return mask


def _norm(x0: int, y0: int, x1: int, y1: int) -> tuple[float, float, float, float]:
    return (x0 / 160, y0 / 90, x1 / 160, y1 / 90)


@pytest.mark.parametrize(
    ("name", "mask", "expected"),
    [
        ("nothing changed", _mask(), ()),
        ("one thing", _mask((10, 10, 30, 40)), (_norm(10, 10, 30, 40),)),
        ("two things, the larger first", _mask((10, 10, 20, 20), (100, 50, 130, 80)),
         (_norm(100, 50, 130, 80), _norm(10, 10, 20, 20))),
        ("two parts 2 px apart are one thing", _mask((10, 10, 30, 40), (32, 10, 40, 40)), (_norm(10, 10, 40, 40),)),
        ("a speck under min_area (29 px of 14400) is dropped", _mask((10, 10, 30, 40), (100, 50, 105, 55)),
         (_norm(10, 10, 30, 40),)),
        ("at most MAX_REGIONS (4), largest first",
         _mask(*((10 + 30 * i, 10, 10 + 30 * i + 10 + i, 30) for i in range(5))),
         tuple(_norm(10 + 30 * i, 10, 10 + 30 * i + 10 + i, 30) for i in (4, 3, 2, 1))),
    ],
)
def test_motion_regions(name: str, mask: np.ndarray, expected: tuple) -> None:
    found = motion_regions(mask, min_area=0.002)
    assert len(found) == len(expected), name
    for box, want in zip(found, expected):
        assert box == pytest.approx(want), name


def test_object_appearing_gives_its_region_among_the_regions() -> None:
    detector = MotionDetector(threshold=25, min_area=0.002)
    base = scene()
    detector.update(base)
    motion = detector.update(with_square(with_square(base, (1000, 500, 1200, 700)), (100, 100, 160, 160)))
    assert len(motion.regions) == 2  # the 200 px square, then the 60 px one
    big, small = motion.regions
    assert big == pytest.approx((1000 / 1920, 500 / 1080, 1200 / 1920, 700 / 1080), abs=0.02)
    assert small == pytest.approx((100 / 1920, 100 / 1080, 160 / 1920, 160 / 1080), abs=0.02)


def test_change_below_min_area_is_not_motion() -> None:
    detector = MotionDetector(threshold=25, min_area=0.05)
    base = scene()
    detector.update(base)
    motion = detector.update(with_square(base, (1000, 500, 1200, 700)))
    assert motion.area > 0 and not motion.moving


def test_object_that_stays_still_fades_into_the_background() -> None:
    detector = MotionDetector(threshold=25, min_area=0.002)
    base = scene()
    detector.update(base)
    still = with_square(base, (1000, 500, 1200, 700))
    moving = [detector.update(still).moving for _ in range(40)]
    assert moving[0] and not moving[-1]  # the reason the gate has recheck_s


def test_resolution_change_reseeds_instead_of_reporting_motion() -> None:
    detector = MotionDetector()
    detector.update(scene((1280, 720)))
    assert not detector.update(scene((1920, 1080), level=200)).moving


@pytest.mark.parametrize("kwargs", [{"threshold": 0}, {"min_area": 1.5}, {"width": 8}])
def test_bad_parameters_are_errors(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MotionDetector(**kwargs)


# --- decide: the table -------------------------------------------------------------------------------

HOLD, RECHECK = 3.0, 2.0


@pytest.mark.parametrize(
    ("state", "now", "moving", "event", "reason", "last_run"),
    [
        (GateState(), 10.0, False, False, Reason.FIRST, 10.0),
        (GateState(), 10.0, True, False, Reason.MOTION, 10.0),
        (GateState(None, 9.0), 10.0, True, False, Reason.MOTION, 10.0),
        (GateState(8.0, 9.5), 10.0, False, False, Reason.HOLD, 10.0),  # 2 s after motion
        (GateState(7.0, 9.5), 10.0, False, False, Reason.HOLD, 10.0),  # exactly hold_s
        (GateState(6.0, 9.5), 10.0, False, False, Reason.SKIP, 9.5),  # hold over, recheck not due
        (GateState(1.0, 8.0), 10.0, False, False, Reason.RECHECK, 10.0),  # recheck_s since last run
        (GateState(None, 8.5), 10.0, False, False, Reason.SKIP, 8.5),
        (GateState(None, 8.5), 10.0, False, True, Reason.EVENT, 10.0),  # event open: always run
        (GateState(1.0, 9.9), 10.0, True, True, Reason.MOTION, 10.0),
    ],
)
def test_decide_table(state: GateState, now: float, moving: bool, event: bool, reason: Reason,
                      last_run: float | None) -> None:
    new, got = decide(state, now, moving, HOLD, RECHECK, event_active=event)
    assert got is reason
    assert new.last_run == last_run
    assert new.last_motion == (now if moving else state.last_motion)


def test_recheck_zero_never_rechecks() -> None:
    state, reason = decide(GateState(None, 0.0), 1000.0, False, HOLD, 0.0)
    assert reason is Reason.SKIP and state.last_run == 0.0


# --- MotionGate over a frame sequence ----------------------------------------------------------------


def frames(images: list[np.ndarray], fps: float = 5.0) -> list[Frame]:
    return [Frame("cam", i, 1000.0 + i / fps, 100.0 + i / fps, img) for i, img in enumerate(images)]


def run_gate(gate: MotionGate, seq: list[Frame]) -> list[bool]:
    """Which frames the gate passes (it returns the frame to queue, or None)."""
    return [gate(f) is not None for f in seq]


def test_gate_stays_closed_on_a_still_scene_except_first_and_rechecks() -> None:
    rng = np.random.default_rng(2)
    gate = MotionGate(MotionConfig(recheck_s=2.0, hold_s=1.0))
    seq = frames([noisy(scene(), 4.0, rng) for _ in range(26)])  # 5 s at 5 fps
    passed = run_gate(gate, seq)
    # frame 0 (first), then one recheck every 2 s: frames 10 and 20
    assert [i for i, p in enumerate(passed) if p] == [0, 10, 20]
    assert gate.stats.by_reason == {"first": 1, "recheck": 2, "skip": 23}


def test_gate_opens_on_motion_and_holds() -> None:
    base = scene()
    images = [base] * 5 + [with_square(base, (600 + 40 * i, 400, 800 + 40 * i, 600)) for i in range(5)] + [
        with_square(base, (800, 400, 1000, 600))] * 30
    gate = MotionGate(MotionConfig(recheck_s=0.0, hold_s=1.0))  # rechecks off: see motion + hold only
    passed = run_gate(gate, frames(images))
    assert passed[0]  # first
    assert not any(passed[1:5])  # still
    assert all(passed[5:10])  # the square moves
    assert not passed[-1]  # it stopped, faded into the background, hold over
    assert gate.stats.by_reason["motion"] >= 5 and gate.stats.by_reason["hold"] >= 1


def test_gate_passes_everything_while_an_event_is_open() -> None:
    gate = MotionGate(MotionConfig(recheck_s=60.0, hold_s=0.0), event_active=lambda: True)
    assert all(run_gate(gate, frames([scene()] * 10)))


def test_disabled_gate_passes_every_frame() -> None:
    gate = MotionGate(MotionConfig(enabled=False))
    assert all(run_gate(gate, frames([scene()] * 5)))
    assert gate.snapshot().by_reason == {"disabled": 5}


def test_passed_frames_carry_what_moved_in_them() -> None:
    base = scene()
    images = [base] * 3 + [with_square(base, (600 + 40 * i, 400, 800 + 40 * i, 600)) for i in range(3)]
    gate = MotionGate(MotionConfig(recheck_s=0.0, hold_s=0.0, crop=False), event_active=lambda: True)
    out = [gate(f) for f in frames(images)]
    assert all(f is not None for f in out)  # an event is open: every frame passes
    assert [len(f.motion_regions) for f in out] == [0, 0, 0, 1, 1, 1]  # only the moving frames have regions
    for i, frame in enumerate(out[3:]):
        xmin, ymin, xmax, ymax = frame.motion_regions[0]  # normalised xyxy of the full frame
        assert xmax == pytest.approx((800 + 40 * i) / 1920, abs=0.02) and ymin == pytest.approx(400 / 1080, abs=0.03)
    disabled = MotionGate(MotionConfig(enabled=False))
    assert all(disabled(f).motion_regions == () for f in frames(images))  # no gate: nothing says what moved


# --- crops -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        # a small far raccoon in 1080p: grown to the 300 px model input, centred on the region
        ((0.50, 0.50, 0.52, 0.53), Crop(829, 406, 1129, 706)),  # centre (979.2, 556.2) px
        # near the top-left corner: shifted inside the frame
        ((0.0, 0.0, 0.02, 0.02), Crop(0, 0, 300, 300)),
        # larger than the frame's short side: capped at 1080 and shifted inside
        ((0.1, 0.0, 0.9, 1.0), Crop(420, 0, 1500, 1080)),
    ],
)
def test_crop_for_model(region: tuple[float, float, float, float], expected: Crop) -> None:
    crop = crop_for_model(region, 1920, 1080, min_side=300)
    assert crop == expected
    assert crop.x1 - crop.x0 == crop.y1 - crop.y0
    assert 0 <= crop.x0 and crop.x1 <= 1920 and 0 <= crop.y0 and crop.y1 <= 1080


def test_boxes_from_crop_maps_back_to_the_full_frame() -> None:
    crop = Crop(900, 400, 1200, 700)
    det = Detection("raccoon", 0.9, (0.0, 0.5, 1.0, 1.0))  # normalised to the crop, xyxy
    (mapped,) = boxes_from_crop([det], crop, 1920, 1080)
    assert mapped.box == pytest.approx((900 / 1920, 550 / 1080, 1200 / 1920, 700 / 1080))
    assert (mapped.label, mapped.score) == ("raccoon", 0.9)


def test_crop_rejects_a_non_normalised_region() -> None:
    with pytest.raises(ValueError):
        crop_for_model((10, 10, 20, 20), 1920, 1080)


# --- crop_decision: the table, then the gate attaching it --------------------------------------------

SMALL = (0.50, 0.50, 0.52, 0.53)  # a far raccoon in 1080p: crop_for_model gives a 300 px square
LARGE = (0.4, 0.1, 0.6, 0.6)  # 384 x 540 px: grown by 25 % a side to an 810 px square


@pytest.mark.parametrize(
    ("reason", "region", "size", "max_fraction", "expected"),
    [
        (Reason.MOTION, SMALL, (1920, 1080), 0.5, Crop(829, 406, 1129, 706)),
        (Reason.HOLD, SMALL, (1920, 1080), 0.5, Crop(829, 406, 1129, 706)),  # the last moving region
        (Reason.EVENT, SMALL, (1920, 1080), 0.5, None),  # event open, nothing moving: whole frame
        (Reason.FIRST, SMALL, (1920, 1080), 0.5, None),
        (Reason.RECHECK, SMALL, (1920, 1080), 0.5, None),
        (Reason.SKIP, SMALL, (1920, 1080), 0.5, None),
        (Reason.MOTION, None, (1920, 1080), 0.5, None),  # nothing has moved yet
        (Reason.MOTION, LARGE, (1920, 1080), 0.5, None),  # 810 px >= 540 px: whole frame
        (Reason.MOTION, LARGE, (1920, 1080), 1.0, Crop(555, 0, 1365, 810)),  # 810 < 1080, shifted down to 0
        (Reason.MOTION, (0.0, 0.0, 1.0, 1.0), (1920, 1080), 1.0, None),  # capped at 1080: no gain
        (Reason.MOTION, SMALL, (1920, 1080), 300 / 1080, None),  # side == the limit: whole frame
        (Reason.MOTION, SMALL, (1280, 720), 0.5, Crop(503, 221, 803, 521)),  # 300 < 360; centre (652.8, 370.8)
        (Reason.MOTION, SMALL, (640, 480), 0.5, None),  # 300 >= 240 px: VGA is never cropped
    ],
)
def test_crop_decision_table(reason: Reason, region: tuple[float, float, float, float] | None,
                             size: tuple[int, int], max_fraction: float, expected: Crop | None) -> None:
    assert crop_decision(reason, region, *size, max_fraction) == expected


def square_walk(side: int, steps: int = 4) -> list[np.ndarray]:
    """Still scene x3, a ``side`` px square moving right for ``steps`` frames, then still x3."""
    base = scene()
    walk = [with_square(base, (900 + 30 * i, 500, 900 + 30 * i + side, 500 + side)) for i in range(steps)]
    return [base] * 3 + walk + [walk[-1]] * 3


def test_gate_crops_small_motion_and_holds_the_crop() -> None:
    gate = MotionGate(MotionConfig(recheck_s=0.0, hold_s=10.0))
    out = [gate(f) for f in frames(square_walk(60))]
    assert out[0] is not None and out[0].crop is None  # FIRST: whole frame
    assert out[1] is None and out[2] is None  # still
    for frame in out[4:]:  # MOTION, then HOLD: all cropped around the square
        assert frame is not None and frame.crop is not None
        x0, y0, x1, y1 = frame.crop  # pixels of the 1920x1080 frame, ends exclusive
        assert x1 - x0 == y1 - y0 == 300
        assert x0 <= 900 + 30 and x1 >= 900 + 90 + 60 and y0 <= 500 and y1 >= 560
    assert gate.stats.frames_cropped == sum(f is not None and f.crop is not None for f in out)
    assert gate.snapshot().frames_cropped == gate.stats.frames_cropped


@pytest.mark.parametrize(
    ("cfg", "event_open"),
    [
        (MotionConfig(recheck_s=0.0, hold_s=10.0, crop=False), False),  # cropping off
        (MotionConfig(recheck_s=0.0, hold_s=10.0, crop_max_fraction=0.1), False),  # 300 px >= 108 px
        (MotionConfig(enabled=False), False),  # no gate: every frame whole
    ],
    ids=["crop-off", "fraction-too-small", "gate-disabled"],
)
def test_gate_does_not_crop_when_configured_not_to(cfg: MotionConfig, event_open: bool) -> None:
    gate = MotionGate(cfg, event_active=lambda: event_open)
    out = [gate(f) for f in frames(square_walk(60))]
    assert all(f is None or f.crop is None for f in out) and gate.stats.frames_cropped == 0


def test_gate_runs_large_motion_and_open_events_on_the_whole_frame() -> None:
    gate = MotionGate(MotionConfig(recheck_s=0.0, hold_s=0.0))
    out = [gate(f) for f in frames(square_walk(500))]  # 500 px grown to >= 540 px: too big to crop
    assert any(f is not None for f in out[3:7]) and all(f is None or f.crop is None for f in out)
    gate = MotionGate(MotionConfig(recheck_s=0.0, hold_s=0.0), event_active=lambda: True)
    still = [gate(f) for f in frames([scene()] * 4)]  # EVENT frames: passed, whole
    assert all(f is not None and f.crop is None for f in still)
