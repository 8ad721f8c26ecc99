"""Two-stage recognition: crop windows, input scaling, model folders with a classifier stage, and
the bundled two-stage model on real photos (raccoons at night and by day, cats, camera-trap frames)."""

from __future__ import annotations

import json
import queue
import re
import shutil
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from raccoon_watch.config import DEFAULT_MODEL_DIR, DetectorConfig
from raccoon_watch.framequeue import FrameQueue
from raccoon_watch.recognition.detectors import ModelError, create_recognizer
from raccoon_watch.recognition.detectors.base import input_tensor
from raccoon_watch.recognition.detectors.factory import CLASSIFIER_CARD_NAME, CLASSIFIER_FILE, create_detector
from raccoon_watch.recognition.imagemode import COLOR, IR, image_mode
from raccoon_watch.recognition.recognizer import (
    CandidateHints,
    RecognitionParams,
    Recognizer,
    classifier_crop,
    crop_window,
    extra_candidates,
    final_score,
    group_views,
)
from raccoon_watch.tracking import HintBoard
from raccoon_watch.types import (
    ORIGIN_DETECTOR,
    ORIGIN_MOTION,
    ORIGIN_TRACK,
    Box,
    Detection,
    Frame,
    TrackHint,
    box_iou,
    shift_box,
)
from raccoon_watch.workers import DetectorWorker


@pytest.mark.parametrize(("box", "size", "margin", "window"), [
    # centred box 100x50 px in 1000x500: longer side 100, +20 % each side -> 140 px square
    ((0.45, 0.45, 0.55, 0.55), (1000, 500), 0.2, (430, 180, 570, 320)),
    # no margin: the longer side only
    ((0.45, 0.45, 0.55, 0.55), (1000, 500), 0.0, (450, 200, 550, 300)),
    # at the left/top edge: the square is moved inside the image, not cut
    ((0.0, 0.0, 0.1, 0.2), (1000, 500), 0.2, (0, 0, 140, 140)),
    # at the right/bottom edge
    ((0.9, 0.8, 1.0, 1.0), (1000, 500), 0.2, (860, 360, 1000, 500)),
    # larger than the image height: cut to the image there (not square)
    ((0.2, 0.0, 0.8, 1.0), (1000, 500), 0.2, (80, 0, 920, 500)),
    # the whole image (a night crop file): the whole image
    ((0.0, 0.0, 1.0, 1.0), (300, 200), 0.2, (0, 0, 300, 200)),
    # a degenerate box still gives at least one pixel
    ((0.5, 0.5, 0.5, 0.5), (10, 10), 0.0, (4, 4, 6, 6)),
])
def test_crop_window(box, size, margin, window) -> None:
    x0, y0, x1, y1 = crop_window(box, size[0], size[1], margin)
    assert (x0, y0, x1, y1) == window
    assert 0 <= x0 < x1 <= size[0] and 0 <= y0 < y1 <= size[1]


def test_classifier_crop_is_rgb_at_the_input_size_and_from_the_right_place() -> None:
    image = np.zeros((500, 1000, 3), np.uint8)
    image[200:300, 450:550] = (255, 0, 0)  # BGR blue square where the box is
    crop = classifier_crop(image, (0.45, 0.4, 0.55, 0.6), 0.2, (192, 192))
    assert crop.shape == (192, 192, 3) and crop.dtype == np.uint8
    assert crop[96, 96].tolist() == [0, 0, 255]  # RGB: blue in the middle
    assert crop[2, 2].tolist() == [0, 0, 0]  # context around it


@pytest.mark.parametrize(("dtype", "quantization", "expected"), [
    (np.uint8, (1 / 128, 128), [0, 128, 255]),  # the stock input: the raw pixels
    (np.uint8, (0.0, 0), [0, 128, 255]),  # unquantized uint8: raw pixels
    (np.uint8, (1 / 64, 128), [64, 128, 192]),  # another calibration: quantized with its own scale
    (np.int8, (1 / 128, 0), [-128, 0, 127]),  # pixel - 128
    (np.float32, (0.0, 0), [-1.0, 0.0, 127 / 128]),  # (pixel - 128) / 128
])
def test_input_tensor(dtype, quantization, expected) -> None:
    rgb = np.array([[[[0, 0, 0], [128, 128, 128], [255, 255, 255]]]], np.uint8)  # (1, 1, 3, 3)
    tensor = input_tensor(rgb, dtype, quantization)
    assert tensor.dtype == dtype
    np.testing.assert_allclose(tensor[0, 0, :, 0], expected, atol=1e-6)


@pytest.mark.parametrize(("probability", "detector_score", "weight", "expected"), [
    (0.9, 0.5, 0.0, 0.9),  # weight 0: the classifier alone
    (0.9, 1.0, 0.1, 0.9),
    (1.0, 0.05, 0.1, 0.05 ** 0.1),  # a weak proposal costs about a quarter
    (0.8, 0.0, 0.1, 0.8 * 1e-6 ** 0.1),  # never a zero division or a NaN
])
def test_final_score(probability, detector_score, weight, expected) -> None:
    assert final_score(probability, detector_score, weight) == pytest.approx(expected)


def _proposal(detector_score: float, box) -> Detection:
    return Detection("raccoon", detector_score, box)


WHOLE = (0.1, 0.1, 0.5, 0.5)  # an animal's body
HEAD = (0.12, 0.12, 0.28, 0.28)  # inside it (100 %), IoU 0.16 with it
SHIFTED = (0.15, 0.1, 0.55, 0.5)  # the same animal, a looser box: IoU 0.78
OTHER = (0.6, 0.6, 0.9, 0.9)  # a second animal
STRADDLING = (0.4, 0.4, 0.7, 0.7)  # overlaps WHOLE a little (IoU 0.04, 11 % inside): its own animal
EDGE = (0.38, 0.12, 0.53, 0.27)  # 80 % inside WHOLE, IoU 0.11
SPECK = (0.2, 0.3, 0.25, 0.35)  # inside WHOLE, 1/64 of its area: a patch of fur or grass
PLAIN = RecognitionParams(detector_weight=0.0)


@pytest.mark.parametrize(("proposals", "probabilities", "params", "expected"), [
    ([], [], PLAIN, []),
    # one animal, one view: its own probability
    ([_proposal(0.6, WHOLE)], [0.9], PLAIN, [(WHOLE, 0.9, 0.6)]),
    # body + head: one animal, the body's box (best proposed), P = mean of the two views
    ([_proposal(0.6, WHOLE), _proposal(0.3, HEAD)], [0.5, 0.9], PLAIN, [(WHOLE, 0.7, 0.6)]),
    # the order proposals arrive in does not matter: the detector's order decides
    ([_proposal(0.3, HEAD), _proposal(0.6, WHOLE)], [0.9, 0.5], PLAIN, [(WHOLE, 0.7, 0.6)]),
    # three views, views=2: the two best count (a cat whose ear alone looks like a raccoon needs a second view)
    ([_proposal(0.6, WHOLE), _proposal(0.5, SHIFTED), _proposal(0.3, HEAD)], [0.2, 0.3, 0.95], PLAIN,
     [(WHOLE, (0.95 + 0.3) / 2, 0.6)]),
    # views=1: the best view alone
    ([_proposal(0.6, WHOLE), _proposal(0.3, HEAD)], [0.5, 0.9], RecognitionParams(detector_weight=0.0, views=1),
     [(WHOLE, 0.9, 0.6)]),
    # two animals stay two, best final score first
    ([_proposal(0.6, WHOLE), _proposal(0.7, OTHER)], [0.4, 0.8], PLAIN, [(OTHER, 0.8, 0.7), (WHOLE, 0.4, 0.6)]),
    # a box that only touches the animal is its own animal
    ([_proposal(0.6, WHOLE), _proposal(0.5, STRADDLING)], [0.9, 0.1], PLAIN,
     [(WHOLE, 0.9, 0.6), (STRADDLING, 0.1, 0.5)]),
    # 80 % inside is a view by default; a stricter containment rule makes it an animal of its own
    ([_proposal(0.6, WHOLE), _proposal(0.3, EDGE)], [0.5, 0.9], PLAIN, [(WHOLE, 0.7, 0.6)]),
    ([_proposal(0.6, WHOLE), _proposal(0.3, EDGE)], [0.5, 0.9], RecognitionParams(detector_weight=0.0, view_containment=0.9),
     [(EDGE, 0.9, 0.3), (WHOLE, 0.5, 0.6)]),
    # a speck inside the animal is absorbed without a vote (it neither lowers nor raises P)
    ([_proposal(0.9, WHOLE), _proposal(0.06, SPECK)], [0.88, 0.004], PLAIN, [(WHOLE, 0.88, 0.9)]),
    ([_proposal(0.9, WHOLE), _proposal(0.06, SPECK)], [0.3, 0.99], PLAIN, [(WHOLE, 0.3, 0.9)]),
    # ... unless every view counts
    ([_proposal(0.9, WHOLE), _proposal(0.06, SPECK)], [0.88, 0.004], RecognitionParams(detector_weight=0.0, view_min_area=0.0),
     [(WHOLE, 0.442, 0.9)]),
    # the detector weight applies to the kept box's detector score
    ([_proposal(0.25, WHOLE)], [0.8], RecognitionParams(detector_weight=0.5), [(WHOLE, 0.4, 0.25)]),
])
def test_group_views(proposals, probabilities, params, expected) -> None:
    animals = group_views(proposals, probabilities, params)
    assert [(d.box, pytest.approx(d.score), d.detector_score) for d in animals] == expected
    assert all(d.label == params.label for d in animals)


def test_group_views_needs_one_probability_per_proposal() -> None:
    with pytest.raises(ValueError, match="one probability per candidate"):
        group_views([_proposal(0.5, WHOLE)], [], PLAIN)


def test_recognition_params_are_checked() -> None:
    with pytest.raises(ValueError, match="proposal_threshold"):
        RecognitionParams(proposal_threshold=1.5)
    with pytest.raises(ValueError, match="max_candidates"):
        RecognitionParams(max_candidates=0)
    with pytest.raises(ValueError, match="view_iou"):
        RecognitionParams(view_iou=0.0)
    with pytest.raises(ValueError, match="views"):
        RecognitionParams(views=0)


# --- candidates from hints: tracked boxes and moving regions --------------------------------------

HINTED = (0.40, 0.40, 0.50, 0.55)  # where a track expects its animal
NEAR_HINT = (0.41, 0.41, 0.51, 0.56)  # a proposal there: IoU 0.78 with it
FAR = (0.05, 0.05, 0.15, 0.15)
MOVING = (0.70, 0.60, 0.80, 0.75)


def _extra(box: Box, score: float, origin: str) -> tuple[Box, float, str]:
    return (box, score, origin)


@pytest.mark.parametrize(("name", "chosen", "below", "hints", "mode", "params", "expected"), [
    ("no hints", [], [_proposal(0.03, NEAR_HINT)], CandidateHints(), IR, RecognitionParams(), []),
    ("a tracked box already a candidate", [_proposal(0.4, NEAR_HINT)], [], CandidateHints(tracked=(HINTED,)), COLOR,
     RecognitionParams(), []),
    ("the detector still sees it, under the threshold: its box, score floored",
     [_proposal(0.4, FAR)], [_proposal(0.03, NEAR_HINT), _proposal(0.02, FAR)], CandidateHints(tracked=(HINTED,)),
     COLOR, RecognitionParams(), [_extra(NEAR_HINT, 0.1, ORIGIN_DETECTOR)]),
    ("several under the threshold: the best", [], [_proposal(0.02, HINTED), _proposal(0.04, NEAR_HINT)],
     CandidateHints(tracked=(HINTED,)), COLOR, RecognitionParams(), [_extra(NEAR_HINT, 0.1, ORIGIN_DETECTOR)]),
    ("a proposal above the floor keeps its score", [], [_proposal(0.25, NEAR_HINT)],
     CandidateHints(tracked=(HINTED,)), COLOR, RecognitionParams(proposal_threshold=0.3),
     [_extra(NEAR_HINT, 0.25, ORIGIN_DETECTOR)]),
    ("nothing proposed there: the predicted box", [], [_proposal(0.03, FAR)], CandidateHints(tracked=(HINTED,)),
     COLOR, RecognitionParams(), [_extra(HINTED, 0.1, ORIGIN_TRACK)]),
    ("two hints at one place: one candidate", [], [], CandidateHints(tracked=(HINTED, NEAR_HINT)), COLOR,
     RecognitionParams(), [_extra(HINTED, 0.1, ORIGIN_TRACK)]),
    ("a moving region at night", [_proposal(0.4, FAR)], [], CandidateHints(moving=(MOVING,)), IR,
     RecognitionParams(), [_extra(MOVING, 0.1, ORIGIN_MOTION)]),
    ("a moving region by day: leaves and shadows, not looked at", [], [], CandidateHints(moving=(MOVING,)), COLOR,
     RecognitionParams(), []),
    ("a moving region already proposed", [_proposal(0.4, MOVING)], [], CandidateHints(moving=(MOVING,)), IR,
     RecognitionParams(), []),
    ("a moving region on a tracked box: the track's", [], [], CandidateHints(tracked=(HINTED,), moving=(NEAR_HINT,)),
     IR, RecognitionParams(), [_extra(HINTED, 0.1, ORIGIN_TRACK)]),
    ("at most max_extra, tracked first", [], [], CandidateHints(tracked=(HINTED,), moving=(MOVING, FAR)), IR,
     RecognitionParams(max_extra=2), [_extra(HINTED, 0.1, ORIGIN_TRACK), _extra(MOVING, 0.1, ORIGIN_MOTION)]),
])
def test_extra_candidates(name, chosen, below, hints, mode, params, expected) -> None:
    extra = extra_candidates(chosen, below, hints, mode, params)
    assert [(d.box, pytest.approx(d.score), d.origin) for d in extra] == expected, name


def test_recognition_params_check_the_hint_knobs() -> None:
    with pytest.raises(ValueError, match="hint_iou"):
        RecognitionParams(hint_iou=0.0)
    with pytest.raises(ValueError, match="max_extra"):
        RecognitionParams(max_extra=-1)


# --- model folders ------------------------------------------------------------------------------

needs_two_stage = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / CLASSIFIER_CARD_NAME).is_file(),
                                     reason="models/raccoon has no classifier stage")


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(DEFAULT_MODEL_DIR, target, ignore=shutil.ignore_patterns("saved_model", "model_float.tflite"))
    return target


def _card(folder: Path) -> dict:
    return json.loads((folder / CLASSIFIER_CARD_NAME).read_text())


@needs_two_stage
def test_bundled_model_loads_both_stages() -> None:
    recognizer = create_recognizer(DetectorConfig())
    try:
        assert recognizer.classifier is not None
        assert recognizer.threshold == pytest.approx(_card(DEFAULT_MODEL_DIR)["threshold"])
        assert recognizer.params.proposal_threshold == pytest.approx(_card(DEFAULT_MODEL_DIR)["proposal_threshold"])
        assert recognizer.classifier.input_size == tuple(_card(DEFAULT_MODEL_DIR)["input_size"])
    finally:
        recognizer.close()


@needs_two_stage
def test_classifier_off_is_the_detector_alone() -> None:
    recognizer = create_recognizer(DetectorConfig(classifier=False))
    try:
        assert recognizer.classifier is None and recognizer.threshold == recognizer.detector.threshold
    finally:
        recognizer.close()


@needs_two_stage
def test_single_stage_folder_still_loads(model_copy: Path) -> None:
    (model_copy / CLASSIFIER_CARD_NAME).unlink()
    (model_copy / CLASSIFIER_FILE).unlink()
    recognizer = create_recognizer(DetectorConfig(model=model_copy))
    try:
        assert recognizer.classifier is None
    finally:
        recognizer.close()


@needs_two_stage
@pytest.mark.parametrize(("damage", "message"), [
    ("no_file", f"{CLASSIFIER_FILE}: the classifier stage named by"),
    ("no_card", f"{CLASSIFIER_FILE}: classifier without its {CLASSIFIER_CARD_NAME}"),
    ("input_size", "input_size [224, 224] but"),
    ("input_size_text", "input_size 'abc' is not [height, width]"),
    ("tflite_outside", "tflite: '../../../../etc/passwd' must name a file inside"),
    ("tflite_absolute", "tflite: '/etc/passwd' must name a file inside"),
    ("labels", "trained behind a detector with labels ['???', 'cat']"),
    ("bad_json", "unreadable model card"),
    ("bad_value", "bad value"),
])
def test_broken_classifier_stage_is_a_clear_error(model_copy: Path, damage: str, message: str) -> None:
    card = _card(model_copy)
    if damage == "no_file":
        (model_copy / CLASSIFIER_FILE).unlink()
    elif damage == "no_card":
        (model_copy / CLASSIFIER_CARD_NAME).unlink()
    elif damage == "bad_json":
        (model_copy / CLASSIFIER_CARD_NAME).write_text("{not json")
    else:
        card.update({"input_size": {"input_size": [224, 224]}, "input_size_text": {"input_size": "abc"},
                     "tflite_outside": {"tflite": "../../../../etc/passwd"}, "tflite_absolute": {"tflite": "/etc/passwd"},
                     "labels": {"proposer": {"labels": ["???", "cat"]}}, "bad_value": {"margin": "wide"}}[damage])
        (model_copy / CLASSIFIER_CARD_NAME).write_text(json.dumps(card))
    with pytest.raises(ModelError, match=re.escape(message)) as info:
        create_recognizer(DetectorConfig(model=model_copy))
    assert str(model_copy) in str(info.value)


# --- the bundled model on real photos ----------------------------------------------------------


class CountingClassifier:
    """The real classifier, counting its calls (to check one batched call per frame)."""

    def __init__(self, inner) -> None:
        self.inner, self.calls, self.crops = inner, 0, 0
        self.name, self.input_size = inner.name, inner.input_size

    def classify(self, crops):
        self.calls += 1
        self.crops += len(crops)
        return self.inner.classify(crops)

    def close(self) -> None:
        self.inner.close()


@needs_two_stage
@pytest.mark.shared
def test_candidates_of_a_frame_go_to_the_classifier_in_one_call(shared_dir: Path) -> None:
    base = create_recognizer(DetectorConfig())
    counting = CountingClassifier(base.classifier)
    recognizer = Recognizer(base.detector, counting, RecognitionParams(proposal_threshold=0.01), base.threshold)
    try:
        image = cv2.imread(str(shared_dir / "data" / "raccoon_dataset" / "images" / "raccoon-63.jpg"))  # two raccoons
        dets = recognizer.recognize([image, image])
        assert counting.calls == 1 and counting.crops >= 4  # both images' candidates in one call
        assert counting.crops >= sum(len(d) for d in dets) >= 2  # duplicates merged after classification
        assert [(d.box, d.score) for d in dets[0]] == [(d.box, d.score) for d in dets[1]]
        assert all(d.detector_score is not None and d.label == "raccoon" for d in dets[0])
        assert [d.score for d in dets[0]] == sorted((d.score for d in dets[0]), reverse=True)
    finally:
        recognizer.close()


@needs_two_stage
@pytest.mark.shared
@pytest.mark.slow
def test_bundled_two_stage_model_on_the_test_split_and_held_out_photos(shared_dir: Path, tmp_path: Path) -> None:
    """What the shipped folder does, through train evaluate's path (the daemon's Recognizer): the
    model card's test numbers are real (AP@0.5 0.970, recall 0.91 at 0 of 47 held-out raccoon-free
    photos alerting, at the classifier card's threshold) and meet issue 10's targets."""
    from train import evaluate, splits
    from train.voc import read_csv

    data = shared_dir / "data"
    plan = splits.make_plan(data)
    rows = read_csv(data / "raccoon_dataset" / "test_labels.csv")
    images = [data / "raccoon_dataset" / "images" / n for n in dict.fromkeys(r.filename for r in rows)]
    negatives = [e.path for e in plan.heldout_negatives]
    records = list(evaluate.predict_with_model(DEFAULT_MODEL_DIR, images + negatives))
    threshold = _card(DEFAULT_MODEL_DIR)["threshold"]
    result = evaluate.evaluate_records(records, rows, negatives, threshold)
    card = json.loads((DEFAULT_MODEL_DIR / "model_card.json").read_text())["metrics"]["test"]
    assert result["at_threshold"]["recall"] == pytest.approx(card["at_threshold"]["recall"], abs=0.03)
    assert result["ap50"]["raccoon"] == pytest.approx(card["ap50"], abs=0.01)
    assert result["at_threshold"]["recall"] >= 0.88  # the single-stage detector alone: 0.45
    assert result["at_threshold"]["false_alert_rate"] <= 0.05  # at most 1 in 20
    assert result["ap50"]["raccoon"] >= 0.95


# --- the detector's own card and label map ------------------------------------------------------------

@needs_two_stage
@pytest.mark.parametrize(("change", "message"), [
    ({"input_size": "abc"}, "model_card.json: input_size 'abc' is not [height, width]"),
    ({"input_size": [True, 300]}, "model_card.json: input_size"),
    ({"input_size": [320, 320]}, "model_card.json: input_size [320, 320] but model.tflite takes [300, 300]"),
    ({"input_size": 256}, "model_card.json: input_size [256, 256] but model.tflite takes [300, 300]"),
    ({"tflite": "../../../../etc/passwd"}, "model_card.json: tflite: '../../../../etc/passwd' must name a file inside"),
    ({"tflite": "/etc/passwd"}, "model_card.json: tflite: '/etc/passwd' must name a file inside"),
    ({"tflite": "sub/../../x.tflite"}, "must name a file inside"),
])
def test_a_bad_detector_card_is_an_error_naming_the_key(model_copy: Path, change: dict, message: str) -> None:
    card = json.loads((model_copy / "model_card.json").read_text())
    card.update(change)
    (model_copy / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=re.escape(message)):
        create_recognizer(DetectorConfig(model=model_copy))


@needs_two_stage
def test_a_card_naming_a_file_inside_its_folder_is_used(model_copy: Path) -> None:
    (model_copy / "model.tflite").rename(model_copy / "detector-v2.tflite")
    card = json.loads((model_copy / "model_card.json").read_text())
    card["tflite"] = "detector-v2.tflite"
    (model_copy / "model_card.json").write_text(json.dumps(card))
    recognizer = create_recognizer(DetectorConfig(model=model_copy))
    try:
        assert recognizer.detector.model_path.name == "detector-v2.tflite"
    finally:
        recognizer.close()


@needs_two_stage
def test_a_10000_line_label_map_gives_a_short_error(model_copy: Path) -> None:
    (model_copy / "labelmap.pbtxt").unlink()
    (model_copy / "labels.txt").write_text("".join(f"label{i}\n" for i in range(10_000)))
    with pytest.raises(ModelError) as info:
        create_recognizer(DetectorConfig(model=model_copy))
    text = str(info.value)
    print(f"{len(text)} characters: {text}")
    assert len(text) < 600 and "10,000 labels" in text and "9,995 more" in text


# --- hints on real night frames -------------------------------------------------------------------

NIGHT_BACKGROUND = "mct_SEQ75016_0006.jpg"  # an infrared Missouri camera-trap frame, no animal


def night_scene(shared_dir: Path, crop: str, width_px: int = 90, at: tuple[int, int] = (900, 500)) -> tuple[np.ndarray, Box]:
    """A held-out night raccoon crop (not the classifier's training group), grey, ``width_px`` wide on a
    1920x1080 infrared frame: small, as on a porch camera, where the SSD often proposes nothing."""
    background = cv2.resize(cv2.imread(str(shared_dir / "data" / "night" / "negatives" / NIGHT_BACKGROUND)), (1920, 1080))
    patch = cv2.cvtColor(cv2.imread(str(shared_dir / "data" / "night" / "positives_crops" / crop)), cv2.COLOR_BGR2GRAY)
    height = round(patch.shape[0] * width_px / patch.shape[1])
    patch = cv2.resize(patch, (width_px, height), interpolation=cv2.INTER_AREA)
    image = background.copy()
    x0, y0 = at
    image[y0:y0 + height, x0:x0 + width_px] = patch[..., None]
    return image, (x0 / 1920, y0 / 1080, (x0 + width_px) / 1920, (y0 + height) / 1080)


def _at(dets: list[Detection], box: Box) -> list[Detection]:
    return [d for d in dets if box_iou(d.box, box) >= 0.3]


@pytest.fixture(scope="module")
def bundled() -> Recognizer:
    if not (DEFAULT_MODEL_DIR / CLASSIFIER_CARD_NAME).is_file():
        pytest.skip("models/raccoon has no classifier stage")
    recognizer = create_recognizer(DetectorConfig())
    yield recognizer
    recognizer.close()


@pytest.mark.shared
@pytest.mark.parametrize(("crop", "width_px", "origin"), [
    ("bcc_crop_gait_611.jpg", 100, ORIGIN_DETECTOR),  # the SSD scores it 0.04, under the 0.05 threshold: its box
    ("bcc_crop_gait_307.jpg", 90, ORIGIN_TRACK),  # the SSD proposes nothing there: the predicted box
])
def test_a_tracked_raccoon_is_classified_where_the_detector_no_longer_proposes_it(shared_dir, bundled, crop,
                                                                                   width_px, origin):
    image, box = night_scene(shared_dir, crop, width_px)
    assert image_mode(image) == IR
    assert _at(bundled.recognize([image])[0], box) == []  # what happened on the porch: not a candidate
    (found,) = _at(bundled.recognize([image], hints=[CandidateHints(tracked=(box,))])[0], box)
    assert found.origin == origin and found.mode == IR
    assert found.detector_score == pytest.approx(bundled.params.extra_score_floor)
    assert found.score > 0.7  # the classifier is sure (measured 0.75 and 0.79; the card: IR 0.464, colour 0.698)
    if origin == ORIGIN_TRACK:
        assert found.box == box


@pytest.mark.shared
def test_moving_regions_are_candidates_at_night_only(shared_dir, bundled):
    image, box = night_scene(shared_dir, "bcc_crop_gait_307.jpg")
    hints = [CandidateHints(moving=(box,))]
    (found,) = _at(bundled.recognize([image], hints=hints)[0], box)
    assert found.origin == ORIGIN_MOTION and found.score > 0.7
    colour = np.clip(image.astype(np.float32) * (0.8, 0.95, 1.15), 0, 255).astype(np.uint8)  # lamp-lit, warm
    assert image_mode(colour) == COLOR
    assert _at(bundled.recognize([colour], hints=hints)[0], box) == []


@pytest.mark.shared
def test_without_hints_recognition_is_what_it_was(shared_dir, bundled, raccoon_images):
    """detect and train evaluate call recognize without hints: the same detections, to the bit, as a
    recognizer whose detector returns only what it did before (min_score = the proposal threshold)."""
    before = create_detector(DetectorConfig(), min_score=bundled.params.proposal_threshold)
    old = Recognizer(before, bundled.classifier, bundled.params, bundled.threshold, bundled.ir_threshold)
    try:
        night = sorted((shared_dir / "data" / "night" / "negatives").glob("*.jpg"))[:4]
        images = [cv2.imread(str(p)) for p in [*raccoon_images[:6], *night]]
        images.append(night_scene(shared_dir, "bcc_crop_gait_611.jpg")[0])
        expected = old.recognize(images)
        assert bundled.recognize(images) == expected
        assert bundled.recognize(images, hints=[None] * len(images)) == expected
        assert bundled.recognize(images, hints=[CandidateHints()] * len(images)) == expected
        assert sum(len(d) for d in expected) >= 6
    finally:
        before.close()


@pytest.mark.shared
def test_hint_candidates_join_the_one_batched_classifier_call(shared_dir, bundled):
    counting = CountingClassifier(bundled.classifier)
    recognizer = Recognizer(bundled.detector, counting, bundled.params, bundled.threshold)
    image, box = night_scene(shared_dir, "bcc_crop_gait_307.jpg")
    plain = recognizer.recognize([image, image])
    crops_without = counting.crops
    recognizer.recognize([image, image], hints=[CandidateHints(tracked=(box,)), CandidateHints(moving=(box,))])
    assert counting.calls == 2 and counting.crops - crops_without == crops_without + 2  # one call each, 2 extra crops
    assert plain[0] == plain[1]


@pytest.mark.shared
def test_the_worker_passes_each_frame_its_camera_hints_and_motion_regions(shared_dir):
    """A real worker and the bundled model: a frame alone, a frame with the gate's region on the small
    night raccoon, and a frame of a camera whose track the router published (moving right at 0.02 of
    the width per second, 1 s before the frame: the worker predicts where it is now)."""
    if not (DEFAULT_MODEL_DIR / CLASSIFIER_CARD_NAME).is_file():
        pytest.skip("models/raccoon has no classifier stage")
    image, box = night_scene(shared_dir, "bcc_crop_gait_307.jpg")
    board = HintBoard(["porch", "yard"])
    board.publish("yard", (TrackHint(4, shift_box(box, -0.02, 0.0), mono=99.0, velocity=(0.02, 0.0)),))
    frames = [Frame("porch", 0, 0.0, 100.0, image), Frame("porch", 1, 0.0, 100.0, image, motion_regions=(box,)),
              Frame("yard", 0, 0.0, 100.0, image)]
    fq, results, stop = FrameQueue(4), queue.Queue(), threading.Event()
    for frame in frames:
        fq.put(frame)
    worker = DetectorWorker(0, lambda: create_recognizer(DetectorConfig(workers=1)), fq, results, stop, hints=board)
    worker.start()
    try:
        out = {(r.frame.camera, r.frame.seq): r for r in (results.get(timeout=30) for _ in frames)}
    finally:
        stop.set()
        worker.join(5)
    assert _at(list(out["porch", 0].detections), box) == []
    assert [d.origin for d in _at(list(out["porch", 1].detections), box)] == [ORIGIN_MOTION]
    (tracked,) = _at(list(out["yard", 0].detections), box)
    assert tracked.origin == ORIGIN_TRACK and tracked.box == pytest.approx(box)
    assert worker.stats.hinted == 2 and worker.stats.frames == 3
