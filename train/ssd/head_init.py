"""Start a new class set's predictor from chosen COCO output columns (transfer of the head).

The COCO class predictors have A * 91 outputs per cell (index 0 = background; COCO label-map line
k is output k, e.g. 17 cat, 18 dog, 23 bear). For a new class, its kernel column and bias start from
one COCO column, or the mean of several (mean of their logits, since the predictor is linear).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np

COCO_NUM_OUTPUTS = 91  # 90 classes + background
COCO_BACKGROUND = 0
COCO_CAT, COCO_DOG, COCO_BEAR = 17, 18, 23  # output indices = line numbers in coco_labelmap.txt


def class_head_init(source_columns: Sequence[Sequence[int]], mode: str = "mean"):
    """Returns a ``class_head_init`` for ``tflite_import.import_tflite_weights``.

    source_columns[j]: the COCO outputs new output j starts from (j = 0 is background).
    mode: "mean" averages those columns' weights and biases.
    """
    if mode != "mean":
        raise ValueError(f"head init mode must be 'mean', got {mode!r}")

    def init(layer_name: str, kernel: np.ndarray, bias: np.ndarray, target_shape: tuple):
        if "ClassPredictor" not in layer_name:
            raise ValueError(f"{layer_name}: only class predictors change shape, got {target_shape}")
        kh, kw, cin, cout = kernel.shape  # (1, 1, C, A * 91)
        anchors = cout // COCO_NUM_OUTPUTS
        if target_shape[-1] != anchors * len(source_columns):
            raise ValueError(f"{layer_name}: {target_shape[-1]} outputs != {anchors} x {len(source_columns)}")
        k = kernel.reshape(kh, kw, cin, anchors, COCO_NUM_OUTPUTS)  # (1, 1, C, A, 91)
        b = bias.reshape(anchors, COCO_NUM_OUTPUTS)  # (A, 91)
        new_k = np.stack([k[..., list(cols)].mean(axis=-1) for cols in source_columns], axis=-1)
        new_b = np.stack([b[:, list(cols)].mean(axis=-1) for cols in source_columns], axis=-1)
        return new_k.reshape(target_shape).astype(np.float32), new_b.reshape(-1).astype(np.float32)

    return init


COCO_OUTPUTS = {"person": 1, "cat": COCO_CAT, "dog": COCO_DOG, "bear": COCO_BEAR, "bird": 16, "horse": 19,
                "sheep": 20, "cow": 21, "car": 3, "bicycle": 2}  # decoy name -> COCO output index


def head_columns(head_init: str, decoys: Sequence[str] = ()) -> list[list[int]]:
    """Source COCO columns for [background, raccoon, *decoys]: raccoon from HEAD_INITS[head_init],
    each decoy from its own COCO output (a cat decoy starts as the COCO cat predictor)."""
    if head_init not in HEAD_INITS:
        raise ValueError(f"model.head_init must be one of {sorted(HEAD_INITS)}, got {head_init!r}")
    unknown = [d for d in decoys if d not in COCO_OUTPUTS]
    if unknown:
        raise ValueError(f"decoys {unknown} have no COCO output here; known: {sorted(COCO_OUTPUTS)}")
    return [*HEAD_INITS[head_init], *([COCO_OUTPUTS[d]] for d in decoys)]


HEAD_INITS = {  # name -> source columns for [background, raccoon]
    "cat_dog_bear_mean": [[COCO_BACKGROUND], [COCO_CAT, COCO_DOG, COCO_BEAR]],
    "bear": [[COCO_BACKGROUND], [COCO_BEAR]],
    "cat": [[COCO_BACKGROUND], [COCO_CAT]],
    "dog": [[COCO_BACKGROUND], [COCO_DOG]],
    "cat_bear_mean": [[COCO_BACKGROUND], [COCO_CAT, COCO_BEAR]],
}
# the keys above; model.head_init is typed with it (a Literal built at run time, which a type checker sees as str)
if TYPE_CHECKING:
    HeadInitName = str
else:
    HeadInitName = Literal[tuple(HEAD_INITS)]
