"""SSD multibox loss: Huber localisation + sigmoid classification with hard-negative mining
(SSD paper p. 4, 3:1 negatives:positives) or sigmoid focal loss (RetinaNet paper eq. 5).

Inputs per batch: box_encodings (N, A, 4) [ty, tx, th, tw], class_logits (N, A, K + 1),
reg_targets (N, A, 4), cls_targets (N, A) int32 in {IGNORE, BACKGROUND, 1..K} (see targets.py).
"""

from __future__ import annotations

import tensorflow as tf

from train.config import LossConfig
from train.ssd.targets import BACKGROUND, IGNORE


def localization_loss(box_encodings, reg_targets, positive, delta: float) -> tf.Tensor:
    """Huber summed over [ty, tx, th, tw] and positive anchors -> scalar."""
    diff = tf.abs(box_encodings - reg_targets)  # (N, A, 4)
    huber = tf.where(diff < delta, 0.5 * diff**2, delta * (diff - 0.5 * delta))
    return tf.reduce_sum(tf.reduce_sum(huber, axis=-1) * tf.cast(positive, tf.float32))


def sigmoid_ce_per_anchor(class_logits, cls_targets) -> tf.Tensor:
    """Sigmoid cross-entropy summed over the K + 1 outputs: (N, A, K + 1) -> (N, A)."""
    num_outputs = tf.shape(class_logits)[-1]
    onehot = tf.one_hot(tf.maximum(cls_targets, 0), num_outputs, dtype=class_logits.dtype)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=onehot, logits=class_logits)
    return tf.reduce_sum(ce, axis=-1)


def hard_negative_mask(cls_loss, positive, negative, ratio: float, min_negatives: int) -> tf.Tensor:
    """Per image, the negatives with the highest loss, ratio x positives (>= min): (N, A) bool."""
    num_pos = tf.reduce_sum(tf.cast(positive, tf.int32), axis=1)  # (N,)
    num_neg = tf.reduce_sum(tf.cast(negative, tf.int32), axis=1)  # (N,)
    keep = tf.maximum(tf.cast(tf.cast(num_pos, tf.float32) * ratio, tf.int32), min_negatives)
    keep = tf.minimum(keep, num_neg)  # (N,)
    neg_loss = tf.where(negative, cls_loss, -1.0)  # (N, A), non-negatives sort last
    order = tf.argsort(neg_loss, axis=1, direction="DESCENDING")  # (N, A)
    rank = tf.argsort(order, axis=1)  # (N, A): position of each anchor in the sorted order
    return tf.logical_and(negative, rank < keep[:, None])


def focal_per_anchor(class_logits, cls_targets, alpha: float, gamma: float) -> tf.Tensor:
    """Sigmoid focal loss summed over the K object outputs (background output unused): (N, A)."""
    num_outputs = tf.shape(class_logits)[-1]
    onehot = tf.one_hot(tf.maximum(cls_targets, 0), num_outputs, dtype=class_logits.dtype)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=onehot, logits=class_logits)
    p = tf.sigmoid(class_logits)
    p_t = onehot * p + (1 - onehot) * (1 - p)
    alpha_t = onehot * alpha + (1 - onehot) * (1 - alpha)
    return tf.reduce_sum((alpha_t * (1 - p_t) ** gamma * ce)[..., 1:], axis=-1)


DEFAULT_LOSS = LossConfig()


def multibox_loss(box_encodings, class_logits, reg_targets, cls_targets,
                  cfg: LossConfig = DEFAULT_LOSS) -> dict[str, tf.Tensor]:
    """-> {"loss", "localization", "classification", "num_positives"}, normalised by positives."""
    box_encodings = tf.cast(box_encodings, tf.float32)
    class_logits = tf.cast(class_logits, tf.float32)
    positive = cls_targets > BACKGROUND  # (N, A)
    negative = tf.equal(cls_targets, BACKGROUND)  # (N, A)
    num_pos = tf.reduce_sum(tf.cast(positive, tf.float32))
    normaliser = tf.maximum(num_pos, 1.0)
    loc = localization_loss(box_encodings, reg_targets, positive, cfg.huber_delta) / normaliser
    if cfg.kind == "hard_negative":
        cls_loss = sigmoid_ce_per_anchor(class_logits, cls_targets)  # (N, A)
        mined = hard_negative_mask(cls_loss, positive, negative, cfg.neg_pos_ratio,
                                   cfg.min_negatives_per_image)
        selected = tf.logical_or(positive, mined)
    elif cfg.kind == "focal":
        cls_loss = focal_per_anchor(class_logits, cls_targets, cfg.focal_alpha, cfg.focal_gamma)
        selected = tf.not_equal(cls_targets, IGNORE)
    else:
        raise ValueError(f"loss kind must be 'hard_negative' or 'focal', got {cfg.kind!r}")
    cls = tf.reduce_sum(cls_loss * tf.cast(selected, tf.float32)) / normaliser
    total = cfg.localization_weight * loc + cfg.classification_weight * cls
    return {"loss": total, "localization": loc, "classification": cls, "num_positives": num_pos}
