"""The live view's pictures (boxes drawn where the router counted them, the placeholder of a camera
that shows nothing) and the Classifier tab's log filter, as pure functions and small objects."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from raccoon_watch.filters import DetectionFilter
from raccoon_watch.review.live import BOX_HOLD_S, LatestFrame, live_boxes, placeholder_jpeg, placeholder_lines
from raccoon_watch.snapshot import DEFAULT_COLOR
from raccoon_watch.types import Detection, Frame
from raccoon_watch.web.retrain_job import retrain_lines


def _frame(seq: int, mono: float, width: int = 1280, height: int = 720) -> Frame:
    image = np.full((height, width, 3), 60, np.uint8)
    image.flags.writeable = False
    return Frame(camera="porch", seq=seq, ts=time.time(), mono=mono, image=image)


def _decode(jpeg: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)


def _is_box_colour(pixel: np.ndarray) -> bool:
    return bool(np.abs(pixel.astype(int) - np.array(DEFAULT_COLOR)).max() < 40)


def test_boxes_are_drawn_in_pixels_of_the_shrunk_picture_and_expire():
    tap = LatestFrame(None)
    assert tap.picture() is None  # before any frame
    mono = time.monotonic()
    tap(_frame(0, mono))
    # normalised (xmin, ymin, xmax, ymax) of the full 1280x720 frame -> pixels of the 960x540 JPEG
    tap.show(mono, (Detection("raccoon", 0.91, (0.25, 0.5, 0.5, 0.9)),))
    picture = tap.picture()
    assert picture.boxes == ((240, 270, 480, 486),)
    image = _decode(picture.jpeg)
    assert image.shape == (540, 960, 3)
    assert _is_box_colour(image[380, 240]) and _is_box_colour(image[486, 360])  # left and bottom edges
    assert not _is_box_colour(image[380, 360])  # inside: the frame as it was
    assert tap.picture() is picture and tap.encodes == 1  # shared until something changes

    tap(_frame(1, mono + BOX_HOLD_S / 2))  # the next frame: the box is still current
    assert tap.picture().boxes == ((240, 270, 480, 486),)
    tap(_frame(2, mono + BOX_HOLD_S + 0.2))  # the raccoon's last box is too old for this frame
    assert tap.picture().boxes == ()
    tap.show(mono + BOX_HOLD_S + 0.2, ())  # a frame with nothing counted clears them
    tap(_frame(3, mono + BOX_HOLD_S + 0.3))
    assert tap.picture().boxes == ()
    assert tap.jpeg()[0] == tap.picture().jpeg


def test_a_counted_track_is_boxed_only_on_frames_that_show_it():
    """The router still counts a track for a moment after the raccoon left (its visit score is the
    median of its last frames); the live picture boxes it only where this frame scores it."""
    flt = DetectionFilter(labels=frozenset({"raccoon"}), threshold=0.74, review_threshold=0.5)
    here, gone, cat = (0.2, 0.3, 0.5, 0.8), (0.6, 0.3, 0.9, 0.8), (0.1, 0.1, 0.2, 0.2)
    frame = (Detection("raccoon", 0.93, here), Detection("raccoon", 0.04, gone, origin="track"),
             Detection("raccoon", 0.55, cat))
    hits = (Detection("raccoon", 0.88, here), Detection("raccoon", 0.81, gone))  # visit scores
    assert live_boxes(frame, hits, flt) == (frame[0],)  # its own score in this frame, 0.93
    assert live_boxes(frame, (), flt) == ()  # not counted (a still track, a first frame): no box
    ir = DetectionFilter(labels=frozenset({"raccoon"}), threshold=0.74, review_threshold=0.5, ir_threshold=0.95,
                         ir_review_threshold=0.9)
    night = (Detection("raccoon", 0.8, here, mode="ir"),)
    assert live_boxes(night, (Detection("raccoon", 0.95, here, mode="ir"),), ir) == ()  # under the ir bar


@pytest.mark.parametrize("state, since, reason, says", [
    ("down", 1000.0, "cannot open rtsp://cam/stream: timed out after 5 s", ["camera porch is down", "since ",
                                                                         "(60 s ago)", "reason: cannot open"]),
    ("connecting", 1000.0, "", ["camera porch is connecting", "(60 s ago)"]),
    ("stopped", None, "the file ended", ["camera porch has stopped", "reason: the file ended"]),
    ("stale", None, "no frame for 12 s", ["camera porch sends no frames", "reason: no frame for 12 s"]),
    ("down", 1060.0 - 3 * 3600, "ünïcode → here", ["(3.0 h ago)", "reason: ?n?code ? here"]),
])
def test_the_placeholder_says_what_since_when_and_why(state, since, reason, says):
    lines = placeholder_lines("porch", state, since, reason, now=1060.0)
    text = "\n".join(lines)
    for words in says:
        assert words in text
    assert all(line.isascii() and len(line) <= 60 for line in lines)
    image = _decode(placeholder_jpeg(lines))
    assert image.shape == (360, 640, 3) and image.std() > 5  # words on it, not a blank picture


def test_a_long_reason_wraps_and_stays_on_the_picture():
    lines = placeholder_lines("a_camera_with_a_rather_long_name", "down", None, "x " * 400)
    assert len(lines) == 6 and all(len(line) <= 60 for line in lines)
    assert _decode(placeholder_jpeg(lines)).shape == (360, 640, 3)


NOISE = [
    "I0000 00:00:1796676560.876151    4205 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use",
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "E0000 00:00:1796676561.1 4205 cuda_dnn.cc:8310] Unable to register cuDNN factory",
    "oneDNN custom operations are on. You may see slightly different numerical results due to floating-point",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    "/x/ai_edge_litert/interpreter.py:480: UserWarning: Warning: Enabling `experimental_preserve_all_tensors`",
    "  warnings.warn(",
    "WARNING:tensorflow:5 out of the last 22 calls to <function ...> triggered tf.function retracing.",
    "fully_quantize: 0, inference_type: 6, input_inference_type: UINT8, output_inference_type: FLOAT32",
]
OWN = [
    "2026-12-07 20:51:08 [info     ] retrain_feedback               usable=38 skipped=0",
    '{"event": "retrain_mode_fitted", "level": "info", "timestamp": "2026-12-07T20:52:16Z", "mode": "head", "ap": 0.96}',
    '{"candidate": "/v/models/candidates/x", "promoted": false}',
    "raccoon-watch retrain: too little feedback to judge a candidate: need 1 more raccoon visit marked",
]


def test_the_classifier_tab_keeps_only_the_retrains_own_lines():
    mixed = [NOISE[0], OWN[0], NOISE[1], NOISE[2], OWN[1], *NOISE[3:], OWN[2], OWN[3], ""]
    assert retrain_lines("\n".join(mixed)) == [
        OWN[0], "20:52:16 info retrain_mode_fitted mode=head ap=0.96", OWN[2], OWN[3]]
    # read from the middle of the file: its first line is a piece of one, dropped whole
    assert retrain_lines(OWN[0][20:] + "\n" + OWN[3], cut=True) == [OWN[3]]
    # a crash: the traceback's last line says what failed
    crash = [OWN[0], "Traceback (most recent call last):", '  File "x.py", line 1, in <module>', "    boom()",
             "MemoryError: cannot allocate 2 GB"]
    assert retrain_lines("\n".join(crash)) == [OWN[0], "MemoryError: cannot allocate 2 GB"]
    many = "\n".join(f"2026-12-07 20:51:{i % 60:02d} [info     ] step n={i}" for i in range(100))
    assert [line[-4:] for line in retrain_lines(many, keep=3)] == ["n=97", "n=98", "n=99"]
    assert len(retrain_lines("2026-12-07 20:51:08 [info     ] x " + "y" * 5000)[0]) <= 1500
