"""SSD parts: anchors vs the stock TFLite file, box coder round trip, matcher table, loss sanity."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from train.ssd import box_coder
from train.ssd.anchors import anchors_yxyx, generate_anchors, num_anchors_per_location
from train.ssd.losses import LossConfig, multibox_loss
from train.ssd.matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher
from train.ssd.targets import BACKGROUND, TargetAssigner

ANCHOR_TOLERANCE = 0.0035  # uint8 quantization step of the stored anchors is 0.0065


def test_anchors_match_tflite_file(coco_model):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(coco_model), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    detail = next(d for d in interpreter.get_tensor_details() if d["name"] == "anchors")
    scale, zero_point = detail["quantization"]
    stored = (interpreter.get_tensor(detail["index"]).astype(np.float32) - zero_point) * scale
    anchors = generate_anchors()
    assert anchors.shape == (1917, 4)
    assert num_anchors_per_location() == [3, 6, 6, 6, 6, 6]
    assert np.abs(anchors - stored).max() < ANCHOR_TOLERANCE


@pytest.mark.parametrize("box", [[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.0, 1.0], [0.45, 0.3, 0.47, 0.35]])
def test_box_coder_round_trip(box):
    anchors = generate_anchors()  # (A, 4)
    boxes = np.tile(np.array(box, np.float32), (len(anchors), 1))  # (A, 4)
    codes = box_coder.encode(boxes, anchors)
    decoded = box_coder.decode(codes, anchors).numpy()
    np.testing.assert_allclose(decoded, boxes, atol=1e-5)


def test_box_coder_scales_like_tf_od_api():
    anchor = np.array([[0.5, 0.5, 0.2, 0.4]], np.float32)  # ycenter, xcenter, h, w
    box = np.array([[0.42, 0.34, 0.62, 0.74]], np.float32)  # centre (0.52, 0.54), h 0.2, w 0.4
    codes = box_coder.encode(box, anchor).numpy()[0]
    np.testing.assert_allclose(codes, [0.02 / 0.2 * 10, 0.04 / 0.4 * 10, 0.0, 0.0], atol=1e-4)


ANCHORS_TABLE = np.array([  # [ymin, xmin, ymax, xmax]
    [0.0, 0.0, 0.5, 0.5],  # IoU 1.0 with gt 0
    [0.0, 0.0, 0.5, 0.4],  # IoU 0.8 with gt 0
    [0.0, 0.25, 0.5, 0.75],  # IoU 1/3 with gt 0: background
    [0.5, 0.5, 0.6, 0.6],  # IoU 0.16 with gt 1, but its only overlap: forced match
    [0.9, 0.9, 1.0, 1.0],  # no overlap
], np.float32)
GT_TABLE = np.array([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 0.75, 0.75]], np.float32)


@pytest.mark.parametrize("high,low,force,expected", [
    (0.5, 0.5, True, [0, 0, BELOW_LOW_THRESHOLD, 1, BELOW_LOW_THRESHOLD]),
    (0.5, 0.5, False, [0, 0, BELOW_LOW_THRESHOLD, BELOW_LOW_THRESHOLD, BELOW_LOW_THRESHOLD]),
    (0.9, 0.3, False, [0, BETWEEN_THRESHOLDS, BETWEEN_THRESHOLDS, BELOW_LOW_THRESHOLD, BELOW_LOW_THRESHOLD]),
])
def test_matcher_table(high, low, force, expected):
    matched = Matcher(high, low, force)(GT_TABLE, ANCHORS_TABLE).numpy()
    assert matched.tolist() == expected


def test_matcher_without_ground_truth_is_all_background():
    matched = Matcher()(np.zeros((0, 4), np.float32), ANCHORS_TABLE).numpy()
    assert matched.tolist() == [BELOW_LOW_THRESHOLD] * len(ANCHORS_TABLE)


def test_matcher_rejects_inverted_thresholds():
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.4, 0.6)


def _targets():
    assigner = TargetAssigner(generate_anchors())
    gt = np.array([[0.2, 0.3, 0.7, 0.8]], np.float32)
    cls_targets, reg_targets = assigner(gt, np.array([1]))
    return cls_targets[None], reg_targets[None]  # (1, A), (1, A, 4)


@pytest.mark.parametrize("kind", ["hard_negative", "focal"])
def test_perfect_prediction_has_lower_loss_than_random(kind):
    cls_targets, reg_targets = _targets()
    assert int(tf.reduce_sum(tf.cast(cls_targets > BACKGROUND, tf.int32))) >= 1
    perfect_logits = tf.where(tf.one_hot(cls_targets, 2) > 0, 10.0, -10.0)  # (1, A, 2)
    rng = np.random.default_rng(0)
    random_logits = tf.constant(rng.normal(size=(1, 1917, 2)), tf.float32)
    random_boxes = tf.constant(rng.normal(size=(1, 1917, 4)), tf.float32)
    cfg = LossConfig(kind=kind)
    perfect = multibox_loss(reg_targets, perfect_logits, reg_targets, cls_targets, cfg)
    random = multibox_loss(random_boxes, random_logits, reg_targets, cls_targets, cfg)
    assert float(perfect["localization"]) < 1e-6
    assert float(perfect["loss"]) < 0.01 * float(random["loss"])


def test_hard_negative_mining_limits_negatives_on_empty_image():
    assigner = TargetAssigner(generate_anchors())
    cls_targets, reg_targets = assigner(np.zeros((0, 4), np.float32), np.zeros((0,), np.int64))
    logits = tf.fill((1, 1917, 2), 2.0)  # every anchor wrongly confident
    cfg = LossConfig(min_negatives_per_image=10)
    loss = multibox_loss(tf.zeros((1, 1917, 4)), logits, reg_targets[None], cls_targets[None], cfg)
    # background output (target 1) + raccoon output (target 0), both at logit 2
    per_anchor = float(tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(labels=[1.0, 0.0], logits=[2.0, 2.0])))
    np.testing.assert_allclose(float(loss["classification"]), 10 * per_anchor, rtol=1e-4)
    assert anchors_yxyx(generate_anchors()).shape == (1917, 4)
