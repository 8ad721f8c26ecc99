"""``--format megadetector`` files against MegaDetector's batch-results format, as its published
description states it (https://lila.science/megadetector-output-format, format_version 1.6): the
checker below is written from that text, not from our writer, and is tested on the spec's own example.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from raccoon_watch.archive.megadetector import batch_results, bbox_xywh, image_entry

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".webm", ".ts")


def _category_ids(mapping: Any, what: str) -> list[str]:
    problems = []
    if not isinstance(mapping, dict):
        return [f"{what} must be an object"]
    for key, name in mapping.items():
        if not (isinstance(key, str) and key.isdigit()):
            problems.append(f"{what} id {key!r} is not a non-negative string-formatted int")
        if not (isinstance(name, str) and name.strip()):
            problems.append(f"{what} {key!r} has a blank name")
    return problems


def spec_problems(doc: Any) -> list[str]:
    """Every way ``doc`` breaks the format description (empty: it conforms)."""
    if not isinstance(doc, dict):
        return ["the file is not a JSON object"]
    problems = [f"missing {k}" for k in ("info", "detection_categories", "images") if k not in doc]
    if problems:
        return problems
    version = doc["info"].get("format_version") if isinstance(doc["info"], dict) else None
    try:
        float(version) if isinstance(version, str) else float("x")
    except ValueError:
        problems.append(f"info.format_version must be a string-formatted float, got {version!r}")
    problems += _category_ids(doc["detection_categories"], "detection category")
    classes = doc.get("classification_categories")
    if classes is not None:
        problems += _category_ids(classes, "classification category")
    if not isinstance(doc["images"], list):
        return problems + ["images must be a list"]
    for image in doc["images"]:
        problems += _image_problems(image, doc["detection_categories"], classes or {})
    return problems


def _image_problems(image: Any, categories: dict, classes: dict) -> list[str]:
    if not isinstance(image, dict) or not isinstance(image.get("file"), str):
        return [f"image entry without a file: {image!r}"]
    name = image["file"]
    if image.get("failure") is not None:
        if not isinstance(image["failure"], str):
            return [f"{name}: failure must be a string"]
        return [] if image.get("detections") is None else [f"{name}: a failed file's detections must be null, not a list"]
    detections = image.get("detections")
    if not isinstance(detections, list):
        return [f"{name}: a processed file needs a detections list (empty when nothing was found)"]
    problems = []
    video = name.lower().endswith(VIDEO_SUFFIXES)
    if video:
        rate = image.get("frame_rate")
        if not (isinstance(rate, (int, float)) and rate > 0):
            problems.append(f"{name}: a video needs frame_rate > 0")
        frames = image.get("frames_processed")
        if not (isinstance(frames, list) and all(isinstance(f, int) for f in frames)):
            problems.append(f"{name}: a video needs frames_processed, a list of ints")
    for det in detections:
        problems += _detection_problems(name, det, categories, classes, video)
    return problems


def _detection_problems(name: str, det: Any, categories: dict, classes: dict, video: bool) -> list[str]:
    problems = []
    if det.get("category") not in categories:
        problems.append(f"{name}: detection category {det.get('category')!r} is not in detection_categories")
    conf = det.get("conf")
    if not (isinstance(conf, float) and 0.0 <= conf <= 1.0):
        problems.append(f"{name}: conf must be a float in 0..1, got {conf!r}")
    box = det.get("bbox")
    if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)):
        problems.append(f"{name}: bbox must be [x_min, y_min, width, height], got {box!r}")
    else:
        x, y, w, h = box  # relative, origin top left: the box lies inside the unit square
        if not (0 <= x <= 1 and 0 <= y <= 1 and w >= 0 and h >= 0 and x + w <= 1 + 1e-6 and y + h <= 1 + 1e-6):
            problems.append(f"{name}: bbox {box} is not normalised [x, y, w, h] inside the image")
    scores = []
    for pair in det.get("classifications") or []:
        if not (isinstance(pair, list) and len(pair) == 2 and pair[0] in classes and isinstance(pair[1], (int, float))):
            problems.append(f"{name}: classification {pair!r} is not [category in classification_categories, confidence]")
        else:
            scores.append(pair[1])
    if scores != sorted(scores, reverse=True):
        problems.append(f"{name}: classifications must be in descending order of confidence")
    if video and not (isinstance(det.get("frame_number"), int) and det["frame_number"] >= 0):
        problems.append(f"{name}: a video's detection needs frame_number >= 0")
    return problems


SPEC_EXAMPLE = {  # the format description's own example, abridged
    "info": {"format_version": "1.6", "detector": "MDV5A"},
    "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"},
    "classification_categories": {"0": "fox", "3": "bear"},
    "images": [
        {"file": "a/image_with_animal.jpg", "detections": [
            {"category": "1", "conf": 0.926, "bbox": [0.0, 0.2762, 0.1539, 0.2825], "classifications": [["3", 0.901], ["0", 0.071]]}]},
        {"file": "a/video_with_person.mp4", "frame_rate": 20, "frames_processed": [0, 20],
         "detections": [{"category": "2", "conf": 0.871, "bbox": [0.1, 0.2, 0.3, 0.4], "frame_number": 0}]},
        {"file": "/a/empty_image.jpg", "detections": []},
        {"file": "/a/corrupted_image_0.jpg", "failure": "Failure image access", "detections": None},
    ],
}


def test_the_checker_accepts_the_spec_example_and_catches_what_the_spec_forbids():
    assert spec_problems(SPEC_EXAMPLE) == []
    broken = json.loads(json.dumps(SPEC_EXAMPLE))
    broken["images"][0]["detections"][0]["bbox"] = [10, 20, 100, 200]  # pixels, not relative
    broken["images"][1].pop("frame_rate")
    broken["images"][2]["detections"] = None  # a processed image without a list
    broken["images"][3]["detections"] = []  # a failure with a list
    broken["detection_categories"]["x"] = "animal"
    problems = " | ".join(spec_problems(broken))
    for expected in ("not normalised", "frame_rate", "needs a detections list", "must be null", "'x'"):
        assert expected in problems


@pytest.mark.parametrize(("box", "size", "expected"), [
    ((0, 0, 100, 50), (100, 50), [0.0, 0.0, 1.0, 1.0]),
    ((25, 10, 75, 40), (100, 50), [0.25, 0.2, 0.5, 0.6]),  # [xmin, ymin, xmax, ymax] px -> [x, y, w, h] relative
    ((1, 2, 3, 5), (3, 7), [0.3333, 0.2857, 0.6667, 0.4286]),
])
def test_bbox_is_normalised_xywh_from_the_top_left(box, size, expected):
    assert bbox_xywh(box, *size) == expected


@pytest.mark.parametrize(("box", "size", "message"), [((1, 2, 3), (10, 10), "4 box coords"), ((0, 0, 1, 1), (0, 5), "positive")])
def test_bbox_rejects_what_is_not_a_box(box, size, message):
    with pytest.raises(ValueError, match=message):
        bbox_xywh(box, *size)


PHOTO = {"image": "/x/a.jpg", "width": 200, "height": 100, "mode": "color",
         "detections": [{"label": "raccoon", "score": 0.93, "detector_score": 0.41, "box": [20, 10, 120, 90]}]}
CLIP = {"video": "/x/c.mp4", "fps": 15.0, "frames": 120, "width": 640, "height": 360, "frames_processed": [0, 3, 6],
        "visits": [{"label": "raccoon", "first_frame": 3, "last_frame": 6, "first_s": 0.2, "last_s": 0.4, "frames": 2,
                    "score": 0.8, "frame": 6, "detector_score": 0.3, "box": [64, 36, 320, 180]}]}
FAILED = {"image": "/x/bad.jpg", "error": "truncated JPEG"}


@pytest.mark.parametrize("classifier", ["classifier.tflite", None])
def test_written_documents_pass_the_spec_checker(classifier):
    records = [("b/c.mp4", CLIP), ("a.jpg", PHOTO), ("bad.jpg", FAILED)]
    if classifier is None:  # a single-stage model: the detector's score is the record's score
        records = [("a.jpg", {**PHOTO, "detections": [{"label": "raccoon", "score": 0.7, "box": [20, 10, 120, 90]}]})]
    doc = batch_results(records, "raccoon-watch raccoon/model.tflite", classifier)
    assert spec_problems(json.loads(json.dumps(doc))) == []
    assert [e["file"] for e in doc["images"]] == sorted(r[0] for r in records)
    assert ("classification_categories" in doc) == (classifier is not None)


def test_categories_animal_and_raccoon_with_p_raccoon_as_the_classification():
    entry = image_entry("a.jpg", PHOTO, classified=True)
    assert entry == {"file": "a.jpg", "detections": [
        {"category": "1", "conf": 0.41, "bbox": [0.1, 0.1, 0.5, 0.8], "classifications": [["1", 0.93]]}]}
    clip = image_entry("b/c.mp4", CLIP, classified=True)
    assert clip["frame_rate"] == 15.0 and clip["frames_processed"] == [0, 3, 6]
    assert clip["detections"][0]["frame_number"] == 6 and clip["detections"][0]["classifications"] == [["1", 0.8]]
    assert image_entry("bad.jpg", FAILED, classified=True) == {"file": "bad.jpg", "failure": "truncated JPEG", "detections": None}
    doc = batch_results([("a.jpg", PHOTO)], "d", "c")
    assert doc["detection_categories"] == {"1": "animal"} and doc["classification_categories"] == {"1": "raccoon"}
