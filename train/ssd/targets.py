"""Per-image training targets: anchors matched to ground truth, classes and encoded boxes."""

from __future__ import annotations

import tensorflow as tf

from train.ssd import box_coder
from train.ssd.matcher import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, Matcher

BACKGROUND = 0  # class target of an unmatched anchor; object classes are 1..num_classes
IGNORE = -1  # class target of an anchor between the thresholds: no loss at all


class TargetAssigner:
    """Turns one image's ground truth into per-anchor class and box-regression targets."""

    def __init__(self, anchors_cyxhw, matcher: Matcher | None = None):
        """anchors_cyxhw: (A, 4) [ycenter, xcenter, h, w] normalised."""
        self.anchors = tf.constant(anchors_cyxhw, tf.float32)  # (A, 4)
        yc, xc, h, w = tf.unstack(self.anchors, axis=-1)
        self.anchors_yxyx = tf.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=-1)
        self.matcher = matcher or Matcher()

    def __call__(self, gt_boxes_yxyx, gt_labels) -> tuple[tf.Tensor, tf.Tensor]:
        """(G, 4) boxes [ymin, xmin, ymax, xmax] normalised, (G,) labels 1..K ->
        cls_targets (A,) int32 in {IGNORE, BACKGROUND, 1..K}, reg_targets (A, 4) [ty, tx, th, tw]."""
        gt_boxes = tf.reshape(tf.cast(gt_boxes_yxyx, tf.float32), [-1, 4])
        gt_labels = tf.reshape(tf.cast(gt_labels, tf.int32), [-1])
        matched_idxs = self.matcher(gt_boxes, self.anchors_yxyx)  # (A,)
        safe_idxs = tf.maximum(matched_idxs, 0)
        has_gt = tf.shape(gt_boxes)[0] > 0
        matched_boxes = tf.cond(
            has_gt, lambda: tf.gather(gt_boxes, safe_idxs), lambda: self.anchors_yxyx
        )  # (A, 4)
        matched_labels = tf.cond(
            has_gt, lambda: tf.gather(gt_labels, safe_idxs), lambda: tf.zeros_like(safe_idxs)
        )  # (A,)
        cls_targets = tf.where(matched_idxs == BELOW_LOW_THRESHOLD, BACKGROUND, matched_labels)
        cls_targets = tf.where(matched_idxs == BETWEEN_THRESHOLDS, IGNORE, cls_targets)
        reg_targets = box_coder.encode(matched_boxes, self.anchors)  # (A, 4)
        reg_targets = tf.where((matched_idxs >= 0)[:, None], reg_targets, 0.0)
        return cls_targets, reg_targets
