"""SSD default boxes (anchors), as the TF OD API ``create_ssd_anchors`` makes them.

Anchors are [ycenter, xcenter, h, w], normalised to the 300x300 input, ordered feature map by
feature map, then row (y), column (x), then anchor spec: the order of the stock TFLite file's
``anchors`` tensor and of the head outputs reshaped (N, H, W, A * K) -> (N, H * W * A, K).
"""

from __future__ import annotations

import math

import numpy as np

FEATURE_MAP_SIZES = (19, 10, 5, 3, 2, 1)  # Conv2d_11, Conv2d_13, 4 extra layers, at 300x300 input
MIN_SCALE = 0.2  # SSD paper eq. 4, p. 6
MAX_SCALE = 0.95
ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)
LOWEST_LAYER_SPECS = ((0.1, 1.0), (MIN_SCALE, 2.0), (MIN_SCALE, 0.5))  # reduce_boxes_in_lowest_layer


def layer_box_specs(
    num_layers: int = len(FEATURE_MAP_SIZES),
    min_scale: float = MIN_SCALE,
    max_scale: float = MAX_SCALE,
    aspect_ratios: tuple[float, ...] = ASPECT_RATIOS,
) -> list[list[tuple[float, float]]]:
    """Per layer, the (scale, aspect_ratio) of each anchor in a cell; 3 on layer 0, 6 on the others."""
    scales = [min_scale + (max_scale - min_scale) * i / (num_layers - 1) for i in range(num_layers)]
    scales.append(1.0)
    specs: list[list[tuple[float, float]]] = []
    for layer, (scale, scale_next) in enumerate(zip(scales[:-1], scales[1:])):
        if layer == 0:
            specs.append(list(LOWEST_LAYER_SPECS))
            continue
        layer_specs = [(scale, ar) for ar in aspect_ratios]
        layer_specs.append((math.sqrt(scale * scale_next), 1.0))  # interpolated scale, ratio 1
        specs.append(layer_specs)
    return specs


def num_anchors_per_location() -> list[int]:
    """Anchors per feature-map cell, per layer: [3, 6, 6, 6, 6, 6]."""
    return [len(s) for s in layer_box_specs()]


def generate_anchors(feature_map_sizes: tuple[int, ...] = FEATURE_MAP_SIZES) -> np.ndarray:
    """All anchors, float32 (A, 4) as [ycenter, xcenter, h, w] normalised; A = 1917 at 300x300."""
    per_layer = []
    for size, specs in zip(feature_map_sizes, layer_box_specs(len(feature_map_sizes))):
        stride = 1.0 / size
        centers = (np.arange(size, dtype=np.float64) + 0.5) * stride  # (S,)
        heights = np.array([s / math.sqrt(ar) for s, ar in specs])  # (K,)
        widths = np.array([s * math.sqrt(ar) for s, ar in specs])  # (K,)
        yc, xc, k = np.meshgrid(centers, centers, np.arange(len(specs)), indexing="ij")  # (S, S, K)
        layer = np.stack([yc, xc, heights[k], widths[k]], axis=-1)  # (S, S, K, 4)
        per_layer.append(layer.reshape(-1, 4))
    return np.concatenate(per_layer, axis=0).astype(np.float32)  # (A, 4)


def anchors_yxyx(anchors: np.ndarray) -> np.ndarray:
    """[ycenter, xcenter, h, w] (A, 4) -> [ymin, xmin, ymax, xmax] (A, 4), normalised, not clipped."""
    yc, xc, h, w = np.split(np.asarray(anchors, dtype=np.float32), 4, axis=-1)
    return np.concatenate([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=-1)
