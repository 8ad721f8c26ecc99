"""Decode + class-agnostic NMS for the float Keras model, like the TFLite post-processing op
(sigmoid scores, best class per anchor, one NMS at IoU 0.6, 10 detections). Used for validation
inside training and by the SavedModel export, so both report what the TFLite model reports."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from train.ssd import box_coder

NMS_IOU = 0.6
MAX_DETECTIONS = 10
SCORE_THRESHOLD = 0.01  # low, so AP sees the whole precision/recall curve


def agnostic_nms(boxes, scores, max_detections: int, iou_threshold: float, score_threshold: float):
    """Best class per anchor, then one NMS over all anchors (TFLite op, use_regular_nms=False).

    boxes (N, A, 4) [ymin, xmin, ymax, xmax]; scores (N, A, K) sigmoid, background dropped ->
    boxes (N, D, 4), scores (N, D), classes (N, D) 0-based int32, num (N,) int32; padding rows 0.
    """
    best_scores = tf.reduce_max(scores, axis=-1)  # (N, A)
    best_classes = tf.argmax(scores, axis=-1, output_type=tf.int32)  # (N, A)
    selected, num = tf.image.non_max_suppression_padded(
        boxes, best_scores, max_detections, iou_threshold=iou_threshold,
        score_threshold=score_threshold, pad_to_max_output_size=True)  # (N, D), (N,)
    valid = tf.range(max_detections)[None, :] < num[:, None]  # (N, D)
    det_boxes = tf.gather(boxes, selected, batch_dims=1)  # (N, D, 4)
    det_scores = tf.gather(best_scores, selected, batch_dims=1)  # (N, D)
    det_classes = tf.gather(best_classes, selected, batch_dims=1)  # (N, D)
    det_boxes = tf.where(valid[..., None], det_boxes, 0.0)
    det_scores = tf.where(valid, det_scores, 0.0)
    det_classes = tf.where(valid, det_classes, 0)
    return det_boxes, det_scores, det_classes, num


def postprocess(box_encodings, class_logits, anchors, score_threshold: float = SCORE_THRESHOLD,
                max_detections: int = MAX_DETECTIONS, iou_threshold: float = NMS_IOU):
    """(N, A, 4) [ty, tx, th, tw], (N, A, K + 1) logits ->
    boxes (N, D, 4) [ymin, xmin, ymax, xmax] normalised clipped to [0, 1], scores (N, D),
    classes (N, D) 0-based (class k = label id k + 1, like TFLite), num_detections (N,)."""
    boxes = tf.clip_by_value(box_coder.decode(box_encodings, anchors), 0.0, 1.0)  # (N, A, 4)
    scores = tf.sigmoid(tf.cast(class_logits, tf.float32))[..., 1:]  # (N, A, K)
    boxes, scores, classes, num = agnostic_nms(boxes, scores, max_detections, iou_threshold, score_threshold)
    return boxes.numpy(), scores.numpy(), classes.numpy().astype(np.int64), num.numpy()
