"""The raccoon crop classifier: ImageNet MobileNetV1 0.75 (192 x 192) with a one-logit head.

Backbone: the layers of ``train.ssd.model.mobilenet_v1_features`` (conv + bias + ReLU6, batch norm
folded, padding "same"), loaded with the float weights recovered from Google's quantized ImageNet
classifier ``mobilenet_v1_0.75_192_quant.tflite`` (../shared/pretrained/imagenet/, Apache-2.0).
ImageNet has no raccoon class but has its look-alikes (cats, dogs, foxes, skunk, badger, bears,
pandas), so its features are the start; a new head answers "raccoon or not".

    float32 (N, 192, 192, 3) in [-1, 1) ((u8 - 128) / 128)
      -> Conv2d_0 .. Conv2d_13_pointwise (N, 6, 6, 768) -> global average pool (N, 768)
      -> dropout -> Dense(1) logit "raccoon_logit"  (sigmoid = P(raccoon))
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import structlog
from keras import layers

from train.ssd.model import mobilenet_v1_features

log = structlog.get_logger(__name__)

INPUT_SIZE = 192
DEPTH_MULTIPLIER = 0.75
FEATURE_LAYER = "Conv2d_13_pointwise"
EMBEDDING_DIM = 768
IMAGENET_FILE = "mobilenet_v1_0.75_192_quant.tflite"
HEAD = "raccoon_logit"
EMBEDDING = "embedding"

WEIGHTS_MARK = "weights_quant/FakeQuantWithMinMaxVars"
BIAS_ENDINGS = ("BatchNorm_Fold/bias", "biases")
BACKBONE_PREFIX = "MobilenetV1/MobilenetV1/"


def build_classifier(input_size: int = INPUT_SIZE, dropout: float = 0.2) -> keras.Model:
    """(N, S, S, 3) float in [-1, 1) -> (N, 1) raccoon logit; also exposes the pooled embedding."""
    inputs = keras.Input((input_size, input_size, 3), dtype="float32", name="normalized_crop")
    (features,) = mobilenet_v1_features(inputs, DEPTH_MULTIPLIER, feature_layers=(FEATURE_LAYER,))
    embedding = layers.GlobalAveragePooling2D(name=EMBEDDING)(features)
    x = layers.Dropout(dropout, name="head_dropout")(embedding)
    logit = layers.Dense(1, name=HEAD)(x)
    return keras.Model(inputs, logit, name="raccoon_classifier")


def embedding_model(model: keras.Model) -> keras.Model:
    """The same layers up to the pooled (N, 768) embedding (frozen-feature baseline)."""
    return keras.Model(model.input, model.get_layer(EMBEDDING).output)


def _layer_of(tensor_name: str, ending: str) -> str | None:
    """'...;MobilenetV1/MobilenetV1/Conv2d_3_depthwise/weights_quant/...' -> 'Conv2d_3_depthwise'."""
    for part in tensor_name.split(";"):
        if part.endswith(ending) and part.startswith(BACKBONE_PREFIX):
            return part[len(BACKBONE_PREFIX):-len(ending)].strip("/")
    return None


def read_imagenet_weights(tflite_path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """{keras layer name: {"kernel", "bias"}} of the backbone convs, dequantized to float32.

    Weights are uint8 with one scale and zero point per tensor, biases int32; TFLite conv layout
    [out, kh, kw, in] and depthwise [1, kh, kw, C] both become Keras [kh, kw, in|C, out|1].
    """
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tflite_path), experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    weights: dict[str, dict[str, np.ndarray]] = {}
    for detail in interp.get_tensor_details():
        name, dtype = detail["name"], detail["dtype"]
        scale, zero_point = detail["quantization"]
        if not scale:
            continue
        layer = _layer_of(name, WEIGHTS_MARK) if dtype == np.uint8 else None
        if layer is not None and len(detail["shape"]) == 4:
            q = (interp.get_tensor(detail["index"]).astype(np.float64) - zero_point) * scale
            weights.setdefault(layer, {})["kernel"] = np.transpose(q, (1, 2, 3, 0)).astype(np.float32)
            continue
        if dtype == np.int32:
            layer = next((lay for end in BIAS_ENDINGS if (lay := _layer_of(name, end))), None)
            if layer is not None:
                bias = (interp.get_tensor(detail["index"]).astype(np.float64) - zero_point) * scale
                weights.setdefault(layer, {})["bias"] = bias.astype(np.float32)
    return weights


def import_imagenet_weights(model: keras.Model, tflite_path: str | Path) -> list[str]:
    """Load every backbone conv of ``model`` from the ImageNet file; ValueError if one is missing
    or has another shape. Returns the names of the layers set."""
    weights = read_imagenet_weights(tflite_path)
    loaded = []
    for layer in model.layers:
        if not isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D)):
            continue
        found = weights.get(layer.name, {})
        if "kernel" not in found or "bias" not in found:
            raise ValueError(f"{tflite_path}: no weights for layer {layer.name}")
        if found["kernel"].shape != tuple(layer.kernel.shape):
            raise ValueError(f"{tflite_path}: {layer.name} kernel {found['kernel'].shape} != model {tuple(layer.kernel.shape)}")
        layer.set_weights([found["kernel"], found["bias"]])
        loaded.append(layer.name)
    log.info("imagenet_weights_imported", layers=len(loaded), path=str(tflite_path))
    return loaded
