"""SSD-MobileNetV1 (TF OD API ``ssd_mobilenet_v1``) as a Keras 3 functional model.

Mirrors the stock quantized TFLite graph layer for layer: conv + bias + ReLU6 (batch norm already
folded), padding "same", so ``tflite_import.import_tflite_weights`` can load its float weights.
Layer names are the TFLite tensor prefixes with '/' -> '_' (e.g. ``Conv2d_5_pointwise``,
``BoxPredictor_0_ClassPredictor``).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from train.ssd.anchors import num_anchors_per_location

# (layer index, depthwise stride, pointwise channels at depth 1.0); MobileNetV1 paper table 1
MOBILENET_V1_BLOCKS = (
    (1, 1, 64), (2, 2, 128), (3, 1, 128), (4, 2, 256), (5, 1, 256), (6, 2, 512),
    (7, 1, 512), (8, 1, 512), (9, 1, 512), (10, 1, 512), (11, 1, 512), (12, 2, 1024), (13, 1, 1024),
)
FIRST_CONV_CHANNELS = 32  # Conv2d_0, stride 2
FEATURE_LAYERS = ("Conv2d_11_pointwise", "Conv2d_13_pointwise")  # 19x19 and 10x10 maps
EXTRA_LAYERS = ((2, 192, 384), (3, 96, 192), (4, 96, 192), (5, 48, 96))  # (idx, 1x1, 3x3 s2)


def _conv_relu6(x, filters: int, kernel: int, stride: int, name: str):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", name=name)(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x)


def mobilenet_v1_features(inputs, depth_multiplier: float = 0.75, feature_layers=FEATURE_LAYERS) -> list:
    """(N, 300, 300, 3) in [-1, 1] -> [(N, 19, 19, 384), (N, 10, 10, 768)] at depth 0.75 (the
    SSD's maps); ``feature_layers`` names other pointwise outputs (the classifier takes Conv2d_13)."""
    x = _conv_relu6(inputs, int(FIRST_CONV_CHANNELS * depth_multiplier), 3, 2, "Conv2d_0")
    features = {}
    for idx, stride, channels in MOBILENET_V1_BLOCKS:
        name = f"Conv2d_{idx}_depthwise"
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", name=name)(x)
        x = layers.ReLU(6.0, name=f"{name}_relu6")(x)
        x = _conv_relu6(x, int(channels * depth_multiplier), 1, 1, f"Conv2d_{idx}_pointwise")
        features[f"Conv2d_{idx}_pointwise"] = x
    return [features[name] for name in feature_layers]


def ssd_extra_layers(x) -> list:
    """(N, 10, 10, 768) -> four extra maps (N, 5, 5, 384), (3, 3, 192), (2, 2, 192), (1, 1, 96)."""
    maps = []
    for idx, bottleneck, out in EXTRA_LAYERS:
        x = _conv_relu6(x, bottleneck, 1, 1, f"Conv2d_13_pointwise_1_Conv2d_{idx}_1x1_{bottleneck}")
        x = _conv_relu6(x, out, 3, 2, f"Conv2d_13_pointwise_2_Conv2d_{idx}_3x3_s2_{out}")
        maps.append(x)
    return maps


def ssd_head(feature_maps: list, num_classes: int) -> tuple:
    """1x1 conv box and class predictors per map, flattened (N, H, W, A * K) -> (N, H * W * A, K)."""
    boxes, logits = [], []
    for i, (fmap, anchors) in enumerate(zip(feature_maps, num_anchors_per_location())):
        box = layers.Conv2D(anchors * 4, 1, name=f"BoxPredictor_{i}_BoxEncodingPredictor")(fmap)
        boxes.append(layers.Reshape((-1, 4), name=f"BoxPredictor_{i}_box_reshape")(box))
        cls = layers.Conv2D(anchors * (num_classes + 1), 1, name=f"BoxPredictor_{i}_ClassPredictor")(fmap)
        logits.append(layers.Reshape((-1, num_classes + 1), name=f"BoxPredictor_{i}_cls_reshape")(cls))
    box_encodings = layers.Concatenate(axis=1, name="box_encodings")(boxes)  # (N, 1917, 4)
    class_logits = layers.Concatenate(axis=1, name="class_logits")(logits)  # (N, 1917, K + 1)
    return box_encodings, class_logits


def build_ssd(num_classes: int, depth_multiplier: float = 0.75, input_size: int = 300) -> keras.Model:
    """SSD-MobileNetV1: float32 (N, 300, 300, 3) in [-1, 1] ((u8 - 128) / 128) ->
    (box_encodings (N, 1917, 4) [ty, tx, th, tw], class_logits (N, 1917, num_classes + 1)),
    index 0 = background, sigmoid scores."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if depth_multiplier != 0.75 or input_size != 300:
        raise ValueError(f"only depth 0.75 at 300x300 (the COCO weights), got {depth_multiplier}, {input_size}")
    inputs = keras.Input((input_size, input_size, 3), dtype="float32", name="normalized_input_image")
    fmaps = mobilenet_v1_features(inputs, depth_multiplier)
    fmaps += ssd_extra_layers(fmaps[-1])
    box_encodings, class_logits = ssd_head(fmaps, num_classes)
    return keras.Model(inputs, [box_encodings, class_logits], name="ssd_mobilenet_v1")


def freeze_layers(model: keras.Model, prefixes: Sequence[str]) -> list[str]:
    """Mark layers whose name starts with one of ``prefixes`` non-trainable; returns their names.

    Which layers stay frozen is a training choice: ``train.config.ModelSection.frozen_prefixes``."""
    frozen = [layer.name for layer in model.layers if layer.name.startswith(tuple(prefixes))]
    for name in frozen:
        model.get_layer(name).trainable = False
    return frozen
