"""Decode + per-class NMS for the float Keras model, like the TFLite post-processing op
(sigmoid scores, NMS IoU 0.6, 10 detections). Used for validation inside training."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from train.ssd import box_coder

NMS_IOU = 0.6
MAX_DETECTIONS = 10
SCORE_THRESHOLD = 0.01  # low, so AP sees the whole precision/recall curve


def postprocess(box_encodings, class_logits, anchors, score_threshold: float = SCORE_THRESHOLD,
                max_detections: int = MAX_DETECTIONS, iou_threshold: float = NMS_IOU):
    """(N, A, 4) [ty, tx, th, tw], (N, A, K + 1) logits ->
    boxes (N, D, 4) [ymin, xmin, ymax, xmax] normalised clipped to [0, 1], scores (N, D),
    classes (N, D) 0-based (class k = label id k + 1, like TFLite), num_detections (N,)."""
    boxes = tf.clip_by_value(box_coder.decode(box_encodings, anchors), 0.0, 1.0)  # (N, A, 4)
    scores = tf.sigmoid(tf.cast(class_logits, tf.float32))[..., 1:]  # (N, A, K)
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], scores, max_output_size_per_class=max_detections,
        max_total_size=max_detections, iou_threshold=iou_threshold,
        score_threshold=score_threshold, clip_boxes=False)
    return (nms.nmsed_boxes.numpy(), nms.nmsed_scores.numpy(),
            nms.nmsed_classes.numpy().astype(np.int64), nms.valid_detections.numpy())


def preprocess_rgb(image_rgb_uint8: np.ndarray, input_size: int = 300) -> np.ndarray:
    """RGB uint8 (H, W, 3) of any size -> float32 (input_size, input_size, 3) in [-1, 1]."""
    import cv2

    resized = cv2.resize(image_rgb_uint8, (input_size, input_size), interpolation=cv2.INTER_LINEAR)
    return (resized.astype(np.float32) - 128.0) / 128.0
