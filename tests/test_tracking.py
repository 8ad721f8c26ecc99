"""The tracker as tables: boxes and scores per frame in, tracks out; moved or still; which tracks are hinted."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from raccoon_watch import tracking
from raccoon_watch.tracking import HintBoard, MoveEvidence, Track, TrackParams, TrackState
from raccoon_watch.types import ORIGIN_MOTION, ORIGIN_TRACK, Box, Detection, TrackHint

P = TrackParams()  # match_iou 0.1, max_misses 10
DT = 0.2  # seconds between processed frames (detect_fps 5)
M = None  # no detection in this frame


def det(box: Box, score: float = 0.7, label: str = "raccoon", origin: str = "detector") -> Detection:
    return Detection(label, score, box, origin=origin)


def walk(x0: float, step: float, n: int, width: float = 0.1, y: float = 0.5) -> list[Box]:
    """``n`` boxes of one animal moving ``step`` of the frame's width per frame."""
    return [(x0 + i * step, y, x0 + i * step + width, y + 0.1) for i in range(n)]


def run(frames: list[tuple[Detection, ...]], p: TrackParams = P, images: list[np.ndarray] | None = None,
        regions: list[tuple[Box, ...]] | None = None) -> tuple[TrackState, list[tuple[Track, ...]]]:
    state, owners = TrackState(), []
    for i, dets in enumerate(frames):
        image = images[i] if images is not None else None
        state, owned = tracking.step(state, dets, p, now=i * DT, image=image, regions=regions[i] if regions else ())
        owners.append(owned)
    return state, owners


# --- prediction and association ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "box, velocity, now, expected",
    [
        ((0.2, 0.2, 0.4, 0.4), (0.0, 0.0), 1.0, (0.2, 0.2, 0.4, 0.4)),  # still: where it was
        ((0.2, 0.2, 0.4, 0.4), (0.1, -0.05), 1.0, (0.3, 0.15, 0.5, 0.35)),  # constant velocity for 1 s
        ((0.2, 0.2, 0.4, 0.4), (0.1, 0.0), 0.5, (0.25, 0.2, 0.45, 0.4)),
        ((0.7, 0.2, 0.9, 0.4), (0.5, 0.0), 1.0, (0.8, 0.2, 1.0, 0.4)),  # stops at the frame's edge, keeps its size
        ((0.2, 0.2, 0.4, 0.4), (0.1, 0.0), -1.0, (0.2, 0.2, 0.4, 0.4)),  # an older frame: the last box
    ],
)
def test_predict(box, velocity, now, expected):
    track = Track(0, "raccoon", box, mono=0.0, velocity=velocity)
    assert tracking.predict(track, now) == pytest.approx(expected)
    assert TrackHint(0, box, 0.0, velocity).box_at(now) == pytest.approx(expected)  # what the workers predict


def _steps(x0: float, steps: tuple[float, ...], width: float = 0.1) -> list[Box]:
    xs = np.cumsum((x0,) + steps)
    return [(x, 0.5, x + width, 0.6) for x in xs]


@pytest.mark.parametrize(
    # the animal's step per frame, in frame widths; its box is 0.1 wide
    "steps, last_box_would_lose_it",
    [
        ((0.02,) * 5, False),  # slow: any matching keeps it
        ((0.05, 0.05, 0.08, 0.08), False),  # consecutive boxes still overlap by IoU >= 0.11
        ((0.05, 0.05, 0.09, 0.09, 0.09), True),  # IoU 0.05 with the last box: only the PREDICTED box finds it
        ((0.05, 0.08, 0.11, 0.14, 0.15), True),  # speeding up until its boxes never overlap at all
    ],
)
def test_a_walking_animal_keeps_one_track(steps, last_box_would_lose_it):
    boxes = _steps(0.0, steps)
    state, owners = run([(det(b),) for b in boxes])
    assert state.next_id == 1 and [o[0].id for o in owners] == [0] * len(boxes)
    lost = any(tracking.box_iou(a, b) < P.match_iou for a, b in zip(boxes, boxes[1:]))
    assert lost is last_box_would_lose_it


def test_the_second_frame_of_a_fast_animal_is_a_new_track_until_it_has_a_velocity():
    """From the first frame there is no velocity yet: a jump bigger than the box needs a second look."""
    state, owners = run([(det(b),) for b in walk(0.0, 0.15, 2)])
    assert [o[0].id for o in owners] == [0, 1]


@pytest.mark.parametrize(
    "tracks, detections, expected",
    [
        ([("raccoon", (0.0, 0.0, 0.2, 0.2))], [det((0.0, 0.0, 0.2, 0.2))], {0: 0}),
        ([("raccoon", (0.0, 0.0, 0.2, 0.2))], [det((0.5, 0.5, 0.7, 0.7))], {}),  # no overlap
        ([("cat", (0.0, 0.0, 0.2, 0.2))], [det((0.0, 0.0, 0.2, 0.2))], {}),  # another label
        # two tracks, two detections: each to its best, one-to-one
        ([("raccoon", (0.0, 0.0, 0.2, 0.2)), ("raccoon", (0.3, 0.0, 0.5, 0.2))],
         [det((0.31, 0.0, 0.51, 0.2)), det((0.01, 0.0, 0.21, 0.2))], {0: 1, 1: 0}),
        # one track, two detections on it: the better one wins, the other stays unmatched
        ([("raccoon", (0.0, 0.0, 0.2, 0.2))], [det((0.05, 0.0, 0.25, 0.2)), det((0.0, 0.0, 0.2, 0.2))], {1: 0}),
        # equal IoU: the older track wins
        ([("raccoon", (0.0, 0.0, 0.2, 0.2)), ("raccoon", (0.0, 0.0, 0.2, 0.2))], [det((0.0, 0.0, 0.2, 0.2))], {0: 0}),
    ],
)
def test_match(tracks, detections, expected):
    assert tracking.match(tracks, detections, 0.1) == expected


# --- life: support, coasting, death -------------------------------------------------------------------

BOWL: Box = (0.4, 0.5, 0.55, 0.8)


@pytest.mark.parametrize(
    # per frame: a score (a detector's detection on BOWL), "hint" (only the track's own predicted box
    # came back from the classifier, scoring 0.5) or M (nothing); alive: the track after the last frame
    "name, per_frame, alive, misses",
    [
        ("seen every frame", (0.7,) * 12, True, 0),
        ("missed max_misses - 1 frames", (0.7,) + (M,) * (P.max_misses - 1), True, P.max_misses - 1),
        ("missed max_misses frames", (0.7,) + (M,) * P.max_misses, False, None),
        ("seen again before dying", (0.7,) + (M,) * (P.max_misses - 1) + (0.6,), True, 0),
        ("coasting on its own predicted box dies like a miss", (0.7,) + ("hint",) * P.max_misses, False, None),
        ("a score of 0.0 is no support", (0.7,) + (0.0,) * P.max_misses, False, None),
        ("born with a score of 0.0: one miss already", (0.0,) * (P.max_misses - 1), True, P.max_misses - 1),
    ],
)
def test_track_life(name, per_frame, alive, misses):
    frames = [() if s is M else (det(BOWL, 0.5, origin=ORIGIN_TRACK),) if s == "hint" else (det(BOWL, s),)
              for s in per_frame]
    state, owners = run(frames)
    assert bool(state.tracks) == alive, name
    if alive:
        assert [t.id for t in state.tracks] == [0] and state.tracks[0].misses == misses, name
    assert {o[0].id for o in owners if o} == {0}, name  # every detection continued the one track


def test_a_coasting_track_keeps_its_box_and_velocity():
    boxes = walk(0.0, 0.02, 3)
    state, _ = run([(det(b),) for b in boxes] + [(det(boxes[-1], 0.5, origin=ORIGIN_TRACK),)])
    track = state.tracks[0]
    assert track.box == boxes[-1] and track.mono == pytest.approx(2 * DT) and track.misses == 1
    assert tracking.predict(track, 3 * DT)[0] == pytest.approx(boxes[-1][0] + 0.02)


def test_owners_come_back_in_input_order_and_unmatched_detections_start_tracks():
    left, right = (0.1, 0.5, 0.2, 0.6), (0.7, 0.5, 0.8, 0.6)
    state, _ = run([(det(left),)])
    state, owners = tracking.step(state, (det(right), det(left), det(left, label="cat")), P, now=DT)
    assert [(t.id, t.label) for t in owners] == [(1, "raccoon"), (0, "raccoon"), (2, "cat")]
    assert [t.id for t in state.tracks] == [0, 1, 2] and state.next_id == 3


def test_step_does_not_change_the_state_it_is_given():
    state = TrackState((Track(0, "raccoon", BOWL, 0.0),), next_id=1)
    tracking.step(state, (det(BOWL),), P, now=1.0)
    assert state == TrackState((Track(0, "raccoon", BOWL, 0.0),), next_id=1)


# --- moved or still -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "evidence, moved",
    [
        (MoveEvidence(), False),
        (MoveEvidence(changed_cells=0.09), False),
        (MoveEvidence(changed_cells=0.1), True),
        (MoveEvidence(motion_cover=0.19), False),
        (MoveEvidence(motion_cover=0.2), True),
        (MoveEvidence(changed_cells=0.5, motion_cover=0.9, occluded=True), False),  # another track's motion
    ],
)
def test_has_moved(evidence, moved):
    assert tracking.has_moved(evidence, P) is moved


def _thumb(value: int = 100) -> np.ndarray:
    return np.full((16, 16), value, np.uint8)


def _textured() -> np.ndarray:
    return (np.indices((16, 16)).sum(axis=0) * 6 + 20).astype(np.uint8)  # a diagonal ramp 20..200


def _block(image: np.ndarray, rows: slice, cols: slice, delta: int) -> np.ndarray:
    out = image.astype(np.int16)
    out[rows, cols] += delta
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    "first, now, expected",
    [
        (_textured(), _textured(), 0.0),
        (_textured(), _textured() // 2 + 30, 0.0),  # exposure: half the contrast, another brightness
        (_textured(), np.clip(_textured().astype(int) * 1.3, 0, 255).astype(np.uint8), 0.0),  # more gain
        (_thumb(100), _thumb(140), 0.0),  # a flat picture, brighter: nothing moved
        (_thumb(100), _block(_thumb(100), slice(0, 8), slice(0, 8), 120), 0.25),  # a quarter changed a lot
        (_thumb(100), _block(_thumb(100), slice(0, 8), slice(0, 8), 10), 0.0),  # ... but under the floor
        (_textured(), np.ascontiguousarray(_textured()[::-1]), None),  # another picture: most cells
    ],
)
def test_changed_cells(first, now, expected):
    share = tracking.changed_cells(first, now, 20.0)
    if expected is None:
        assert share > 0.5
    else:
        assert share == pytest.approx(expected, abs=0.02)


def test_changed_cells_needs_one_shape():
    with pytest.raises(ValueError, match="shape"):
        tracking.changed_cells(_thumb(), np.zeros((8, 8), np.uint8), 20.0)


@pytest.mark.parametrize(
    "box, regions, expected",
    [
        ((0.2, 0.2, 0.6, 0.6), (), 0.0),
        ((0.2, 0.2, 0.6, 0.6), ((0.2, 0.2, 0.4, 0.4),), 0.25),  # inside, a quarter of the box
        ((0.2, 0.2, 0.6, 0.6), ((0.0, 0.0, 1.0, 1.0),), 0.0),  # covers it, but mostly elsewhere
        ((0.2, 0.2, 0.6, 0.6), ((0.4, 0.4, 0.8, 0.8),), 0.0),  # a quarter of the region inside: another's
        ((0.2, 0.2, 0.6, 0.6), ((0.3, 0.2, 0.6, 0.6),), 0.75),  # half or more inside: counts
        ((0.2, 0.2, 0.6, 0.6), ((0.2, 0.2, 0.3, 0.3), (0.2, 0.2, 0.6, 0.4)), 0.5),  # the best region
    ],
)
def test_motion_cover(box, regions, expected):
    assert tracking.motion_cover(box, regions, 0.5) == pytest.approx(expected)


def test_thumbnail_is_the_area_averaged_green_of_the_box():
    image = np.zeros((1080, 1920, 3), np.uint8)
    image[:540, :, 1] = 200  # green top half
    image[:, :, 2] = 255  # red everywhere: not grey's part
    thumb = tracking.thumbnail(image, (0.25, 0.25, 0.75, 0.75))
    assert thumb.shape == (16, 16) and thumb.dtype == np.uint8
    assert (thumb[:7] == 200).all() and (thumb[9:] == 0).all()
    assert tracking.thumbnail(image[..., 1], (0.25, 0.25, 0.75, 0.75)).tolist() == thumb.tolist()  # grey image
    assert tracking.thumbnail(image, (0.999, 0.999, 1.0, 1.0)).shape == (16, 16)  # a one-pixel box


def _scene(square_x: int | None, seed: int = 0) -> np.ndarray:
    """A 640x360 IR-grey frame: noise over a flat background, a bright 60x60 square at ``square_x``."""
    rng = np.random.default_rng(seed)
    image = np.clip(rng.normal(60, 4, (360, 640)), 0, 255).astype(np.uint8)
    if square_x is not None:
        image[150:210, square_x:square_x + 60] = 220
    return np.repeat(image[..., None], 3, axis=2)


BOX_AT_200: Box = (200 / 640, 150 / 360, 260 / 640, 210 / 360)


@pytest.mark.parametrize(
    "name, xs, regions, moved_from",
    [
        ("a still square in a noisy frame never moves", [200] * 8, None, None),
        ("a square shifting 6 px (a tenth of its side) moves", [200, 200, 206, 206], None, 3),
        ("a motion region on it moves it from its first frame", [200] * 3, [(BOX_AT_200,)] * 3, 1),
        ("a motion region mostly elsewhere does not", [200] * 3, [((0.0, 0.0, 1.0, 1.0),)] * 3, None),
    ],
)
def test_moved_from_real_pixels(name, xs, regions, moved_from):
    images = [_scene(x, seed=i) for i, x in enumerate(xs)]
    boxes = [(x / 640, 150 / 360, (x + 60) / 640, 210 / 360) for x in xs]
    _, owners = run([(det(b),) for b in boxes], images=images, regions=regions)
    moved = [o[0].moved for o in owners]
    assert moved == [moved_from is not None and i + 1 >= moved_from for i in range(len(xs))], name


def test_moved_is_sticky():
    images = [_scene(200), _scene(230), _scene(200), _scene(200)]
    _, owners = run([(det(BOX_AT_200),)] * 4, images=images)
    assert [o[0].moved for o in owners] == [False, True, True, True]


def test_a_mover_crossing_a_still_object_does_not_make_it_move():
    """A raccoon (moving: a motion region from its first frame) walks over a watering can's box."""
    can: Box = (0.5, 0.4, 0.6, 0.6)
    raccoon = walk(0.25, 0.06, 6, width=0.15, y=0.35)
    images = []
    for box in raccoon:
        image = _scene(None)
        image[144:216, 320:384] = 180  # the can
        x0, x1 = int(box[0] * 640), int(box[2] * 640)
        image[126:162, x0:x1] = 250  # the raccoon's back passes over the can's top
        images.append(image)
    frames = [(det(r, origin=ORIGIN_MOTION), det(can, 0.4)) for r in raccoon]
    state, owners = run(frames, images=images, regions=[(r,) for r in raccoon])
    assert all(o[0].moved for o in owners)  # the raccoon
    assert not any(o[1].moved for o in owners)  # the can, whose thumbnail changed under the raccoon:
    first = tracking.thumbnail(images[0], can)
    assert max(tracking.changed_cells(first, tracking.thumbnail(im, can), P.thumb_floor) for im in images) >= 0.1


# --- hints --------------------------------------------------------------------------------------------


def _track(tid: int, moved: bool = True) -> Track:
    return Track(tid, "raccoon", (0.1 * tid, 0.1, 0.1 * tid + 0.1, 0.2), mono=1.0, velocity=(0.01, 0.0), moved=moved)


@pytest.mark.parametrize(
    "tracks, scores, params, expected_ids",
    [
        ([], {}, P, []),
        ([_track(0)], {0: 0.3}, P, [0]),
        ([_track(0, moved=False)], {0: 0.9}, P, []),  # still: it can never alert, never looked for
        ([_track(0)], {0: 0.05}, P, []),  # scored nothing to speak of
        ([_track(0)], {}, P, []),  # no visit yet
        ([_track(0), _track(1), _track(2)], {0: 0.2, 1: 0.6, 2: 0.4}, P, [1, 2, 0]),  # best first
        ([_track(i) for i in range(6)], {i: 0.5 for i in range(6)}, P, [0, 1, 2, 3]),  # at most max_hints
        ([_track(0)], {0: 0.9}, TrackParams(max_hints=0), []),
    ],
)
def test_select_hints(tracks, scores, params, expected_ids):
    hints = tracking.select_hints(tracks, scores, params)
    assert [h.track_id for h in hints] == expected_ids
    for hint in hints:
        track = next(t for t in tracks if t.id == hint.track_id)
        assert (hint.box, hint.mono, hint.velocity) == (track.box, track.mono, track.velocity)


def test_hint_board_replaces_whole_tuples_per_camera():
    board = HintBoard(["porch", "yard"])
    hint = TrackHint(3, BOWL, 1.0)
    board.publish("porch", (hint,))
    board.publish("garage", (hint,))  # not a camera it was made for: ignored
    assert board.get("porch") == (hint,) and board.get("yard") == () and board.get("garage") == ()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"match_iou": 1.5}, "match_iou"),
        ({"max_misses": 0}, "max_misses"),
        ({"thumb_floor": 300.0}, "thumb_floor"),
        ({"min_changed_cells": -0.1}, "min_changed_cells"),
        ({"max_hints": -1}, "max_hints"),
    ],
)
def test_bad_params_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrackParams(**kwargs)


def test_tracks_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        _track(0).moved = False  # type: ignore[misc]
