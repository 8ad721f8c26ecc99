"""Faster R-CNN box coder (TF OD API ``FasterRcnnBoxCoder``), scales (10, 10, 5, 5).

Boxes are [ymin, xmin, ymax, xmax] normalised; anchors [ycenter, xcenter, h, w] normalised;
relative codes [ty, tx, th, tw]. Works on numpy arrays and tensors alike (returns tensors).
"""

from __future__ import annotations

import tensorflow as tf

SCALE_FACTORS = (10.0, 10.0, 5.0, 5.0)  # y, x, h, w
EPSILON = 1e-8  # keeps log() finite for degenerate boxes, as in the TF OD API


def encode(boxes_yxyx, anchors, scale_factors=SCALE_FACTORS) -> tf.Tensor:
    """(..., A, 4) boxes [ymin, xmin, ymax, xmax] against (A, 4) anchors -> (..., A, 4) [ty, tx, th, tw]."""
    boxes = tf.convert_to_tensor(boxes_yxyx, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    ycenter_a, xcenter_a, ha, wa = tf.unstack(anchors, axis=-1)  # each (A,)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)  # each (..., A)
    ha, wa = ha + EPSILON, wa + EPSILON
    h, w = ymax - ymin + EPSILON, xmax - xmin + EPSILON
    ycenter, xcenter = ymin + 0.5 * (h - EPSILON), xmin + 0.5 * (w - EPSILON)
    sy, sx, sh, sw = scale_factors
    ty = (ycenter - ycenter_a) / ha * sy
    tx = (xcenter - xcenter_a) / wa * sx
    th = tf.math.log(h / ha) * sh
    tw = tf.math.log(w / wa) * sw
    return tf.stack([ty, tx, th, tw], axis=-1)  # (..., A, 4)


def decode(rel_codes, anchors, scale_factors=SCALE_FACTORS) -> tf.Tensor:
    """(..., A, 4) codes [ty, tx, th, tw] with (A, 4) anchors -> (..., A, 4) [ymin, xmin, ymax, xmax]."""
    codes = tf.convert_to_tensor(rel_codes, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    ycenter_a, xcenter_a, ha, wa = tf.unstack(anchors, axis=-1)  # each (A,)
    ty, tx, th, tw = tf.unstack(codes, axis=-1)  # each (..., A)
    sy, sx, sh, sw = scale_factors
    w = tf.exp(tw / sw) * wa
    h = tf.exp(th / sh) * ha
    ycenter = ty / sy * ha + ycenter_a
    xcenter = tx / sx * wa + xcenter_a
    return tf.stack([ycenter - h / 2, xcenter - w / 2, ycenter + h / 2, xcenter + w / 2], axis=-1)
