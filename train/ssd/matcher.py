"""IoU arg-max matcher (TF OD API ``ArgMaxMatcher``, torchvision ``det_utils.Matcher``).

Boxes and anchors are [ymin, xmin, ymax, xmax] normalised. A match result is an int32 vector over
anchors: the index of the matched ground-truth box, or one of the sentinels below.
"""

from __future__ import annotations

import tensorflow as tf

BELOW_LOW_THRESHOLD = -1  # background: best IoU < low threshold
BETWEEN_THRESHOLDS = -2  # ignored: low <= best IoU < high


def box_iou(boxes_a, boxes_b) -> tf.Tensor:
    """IoU of (G, 4) and (A, 4) boxes [ymin, xmin, ymax, xmax] -> (G, A)."""
    a = tf.convert_to_tensor(boxes_a, tf.float32)[:, None, :]  # (G, 1, 4)
    b = tf.convert_to_tensor(boxes_b, tf.float32)[None, :, :]  # (1, A, 4)
    inter_h = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    inter_w = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = inter_h * inter_w  # (G, A)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])  # (G, 1)
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # (1, A)
    return inter / tf.maximum(area_a + area_b - inter, 1e-12)


class Matcher:
    """Each anchor takes the ground-truth box it overlaps most, if IoU >= high_threshold.

    With ``force_match_for_each_gt`` every ground-truth box also claims its best anchor, so small or
    odd-shaped boxes still get one positive (SSD paper p. 3, "matching strategy").
    """

    def __init__(self, high_threshold: float = 0.5, low_threshold: float = 0.5,
                 force_match_for_each_gt: bool = True):
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold {low_threshold} > high_threshold {high_threshold}")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.force_match_for_each_gt = force_match_for_each_gt

    def __call__(self, gt_boxes_yxyx, anchors_yxyx) -> tf.Tensor:
        """(G, 4) gt and (A, 4) anchor boxes [ymin, xmin, ymax, xmax] -> (A,) int32 matched_idxs."""
        gt_boxes = tf.convert_to_tensor(gt_boxes_yxyx, tf.float32)
        anchors = tf.convert_to_tensor(anchors_yxyx, tf.float32)
        num_anchors = tf.shape(anchors)[0]
        return tf.cond(
            tf.shape(gt_boxes)[0] > 0,
            lambda: self._match(box_iou(gt_boxes, anchors)),
            lambda: tf.fill([num_anchors], tf.constant(BELOW_LOW_THRESHOLD, tf.int32)),
        )

    def _match(self, iou) -> tf.Tensor:
        """(G, A) IoU -> (A,) matched gt index or sentinel."""
        best_iou = tf.reduce_max(iou, axis=0)  # (A,)
        matched_idxs = tf.argmax(iou, axis=0, output_type=tf.int32)  # (A,)
        matched_idxs = tf.where(best_iou < self.high_threshold, BETWEEN_THRESHOLDS, matched_idxs)
        matched_idxs = tf.where(best_iou < self.low_threshold, BELOW_LOW_THRESHOLD, matched_idxs)
        if not self.force_match_for_each_gt:
            return matched_idxs
        best_anchor_per_gt = tf.argmax(iou, axis=1, output_type=tf.int32)  # (G,)
        forced = tf.one_hot(best_anchor_per_gt, depth=tf.shape(iou)[1], dtype=tf.int32)  # (G, A)
        forced_gt_idx = tf.argmax(forced, axis=0, output_type=tf.int32)  # (A,)
        is_forced = tf.reduce_max(forced, axis=0) > 0  # (A,)
        return tf.where(is_forced, forced_gt_idx, matched_idxs)
