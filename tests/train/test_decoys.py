"""Decoy classes: teacher labelling of raccoon-free photos, head init, agnostic NMS, scoring."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from train import data as data_lib
from train import decoys
from train.config import TrainConfig
from train.evaluate import remap_labels
from train.ssd.head_init import COCO_OUTPUTS, HEAD_INITS, head_columns
from train.ssd.postprocess import agnostic_nms


def _record(dets, width=400, height=300, image="/x/a.jpg"):
    return {"image": image, "width": width, "height": height, "detections": dets}


@pytest.mark.parametrize("dets, rows, plain", [
    ([], 0, True),                                                                   # nothing found
    ([{"label": "cat", "score": 0.9, "box": [10, 20, 200, 250]}], 1, False),         # a cat
    ([{"label": "cat", "score": 0.39, "box": [10, 20, 200, 250]}], 0, True),         # too unsure
    ([{"label": "person", "score": 0.9, "box": [10, 20, 200, 250]}], 0, True),       # not a decoy class
    ([{"label": "dog", "score": 0.8, "box": [10, 20, 15, 250]}], 0, True),           # 5 px wide: dropped
    ([{"label": "dog", "score": 0.8, "box": [-5, -3, 450, 310]}], 1, False),         # clipped to the image
    ([{"label": "cat", "score": 0.5, "box": [0, 0, 50, 50]},
      {"label": "dog", "score": 0.6, "box": [100, 100, 200, 200]}], 2, False),
])
def test_rows_from_records(dets, rows, plain):
    out, plain_images = decoys.rows_from_records([_record(dets)], ["cat", "dog"], 0.4)
    assert len(out) == rows
    assert plain_images == (["/x/a.jpg"] if plain else [])
    for row in out:
        assert 0 <= row.xmin < row.xmax <= 400 and 0 <= row.ymin < row.ymax <= 300
        assert row.filename == "/x/a.jpg" and row.label in ("cat", "dog")


def test_head_columns_follow_the_coco_label_map(shared_dir):
    lines = (shared_dir / "pretrained" / "coco_labelmap.txt").read_text().splitlines()
    for name, index in COCO_OUTPUTS.items():
        assert lines[index].strip() == name  # output k of the COCO head is line k
    assert head_columns("cat_dog_bear_mean", ["cat", "dog"]) == [*HEAD_INITS["cat_dog_bear_mean"], [17], [18]]
    with pytest.raises(ValueError, match="zebra"):
        head_columns("cat_dog_bear_mean", ["zebra"])


def test_config_rejects_the_alert_label_as_a_decoy():
    with pytest.raises(ValueError, match="decoys"):
        TrainConfig.model_validate({"data": {"decoys": ["raccoon"]}})
    assert TrainConfig.model_validate({"data": {"decoys": ["cat", "dog"]}}).data.labels == ["raccoon", "cat", "dog"]


def test_teacher_labels_a_real_cat_photo(shared_dir):
    pretrained = shared_dir / "pretrained"
    cat = shared_dir / "data" / "negatives" / "kdvc_cat.4.jpg"
    night = sorted((shared_dir / "data" / "night" / "negatives").glob("*.jpg"))[0]
    rows, plain = decoys.label_decoys(pretrained / "coco_ssd_mobilenet_v1_0.75_quant_300.tflite",
                                      pretrained / "coco_labelmap.txt", [cat, night], ["cat", "dog"])
    assert any(r.label == "cat" and r.filename == str(cat.resolve()) for r in rows)
    assert str(night.resolve()) in plain or all(r.filename != str(night.resolve()) for r in rows)
    with pytest.raises(ValueError, match="not labels of the teacher"):
        decoys.label_decoys(pretrained / "coco_ssd_mobilenet_v1_0.75_quant_300.tflite",
                            pretrained / "coco_labelmap.txt", [cat], ["raccoon"])


def test_agnostic_nms_reports_the_best_class_once_per_object():
    # two anchors on one object: anchor 0 says raccoon 0.7 / cat 0.9, anchor 1 raccoon 0.6 / cat 0.2
    boxes = tf.constant([[[0.1, 0.1, 0.5, 0.5], [0.12, 0.1, 0.5, 0.52], [0.6, 0.6, 0.9, 0.9]]], tf.float32)
    scores = tf.constant([[[0.7, 0.9], [0.6, 0.2], [0.8, 0.1]]], tf.float32)  # (1, A=3, K=2)
    det_boxes, det_scores, det_classes, num = agnostic_nms(boxes, scores, 10, 0.5, 0.05)
    assert int(num[0]) == 2
    got = sorted(zip(det_classes[0].numpy()[:2].tolist(), det_scores[0].numpy()[:2].tolist()))
    assert [c for c, _ in got] == [0, 1] and [s for _, s in got] == pytest.approx([0.8, 0.9])  # the cat wins its box; no second "raccoon 0.7" box on it


def test_evaluate_drops_decoy_labels_unless_remapped():
    records = [_record([{"label": "cat", "score": 0.95, "box": [0, 0, 10, 10]},
                        {"label": "raccoon", "score": 0.3, "box": [0, 0, 10, 10]}])]
    kept = remap_labels(records, {"raccoon": "raccoon"})
    assert [d["label"] for d in kept[0]["detections"]] == ["raccoon"]


def test_decoy_images_count_as_negatives_in_the_batch_mix():
    image = np.zeros((50, 50, 3), np.uint8)
    raccoon = data_lib.Example(image, np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), np.array([1]))
    cat = data_lib.Example(image, np.array([[0.1, 0.1, 0.5, 0.5]], np.float32), np.array([2]))
    plain = data_lib.Example(image, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    assert data_lib.has_label(raccoon, 1) and not data_lib.has_label(cat, 1) and not data_lib.has_label(plain, 1)
