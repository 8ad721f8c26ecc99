"""SSD parts for raccoon_watch training, each a small module passed into the next (torchvision style).

Contract with train/export.py (keep exactly):

- ``model.build_ssd(num_classes, depth_multiplier=0.75, input_size=300) -> keras.Model``: input float32
  (N, 300, 300, 3) already scaled to [-1, 1] as (u8 - 128) / 128 (like the stock TFLite file); outputs
  ``(box_encodings (N, 1917, 4) as [ty, tx, th, tw], class_logits (N, 1917, num_classes + 1))``,
  index 0 = background, scores are sigmoid(logits).
- ``anchors.generate_anchors() -> np.ndarray (1917, 4)`` as [ycenter, xcenter, h, w] normalised, in
  the order of the stock TFLite file's ``anchors`` tensor (feature map, then y, x, then anchor).
- ``box_coder.encode(boxes_yxyx, anchors)`` / ``box_coder.decode(rel_codes, anchors)``: TF OD API
  FasterRcnnBoxCoder with scales (10, 10, 5, 5); boxes [ymin, xmin, ymax, xmax] normalised.

Modules: anchors, box_coder, matcher, losses, model (backbone + extras + heads),
tflite_import (float weights from the quantized COCO file), head_init (new class columns from COCO
ones), postprocess (decode + NMS for validation).
"""
