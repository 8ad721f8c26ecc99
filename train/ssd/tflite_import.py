"""Float weights from the quantized COCO SSD TFLite file, loaded into ``model.build_ssd``.

Every uint8 weight is dequantized as (q - zero_point) * scale, every int32 bias likewise with its
own scale. Layouts: TFLite conv [out, kh, kw, in] -> Keras [kh, kw, in, out]; depthwise
[1, kh, kw, C] -> Keras [kh, kw, C, 1].
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import structlog

log = structlog.get_logger(__name__)

WEIGHT_SUFFIX = "/weights_quant/FakeQuantWithMinMaxVars"
BIAS_SUFFIXES = ("/Conv2D_Fold_bias", "/depthwise_Fold_bias", "/Conv2D_bias")
NAME_PREFIXES = ("FeatureExtractor/MobilenetV1/MobilenetV1/", "FeatureExtractor/MobilenetV1/")


def _interpreter(tflite_path: str | Path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    return interpreter


def _keras_layer_name(tensor_prefix: str) -> str:
    for prefix in NAME_PREFIXES:
        if tensor_prefix.startswith(prefix):
            tensor_prefix = tensor_prefix[len(prefix):]
            break
    return tensor_prefix.replace("/", "_")


def _dequantize(interpreter, detail) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    q = interpreter.get_tensor(detail["index"]).astype(np.float64)
    return ((q - zero_point) * scale).astype(np.float32)


def read_tflite_weights(tflite_path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """{keras layer name: {"kernel": Keras layout, "bias": (C,)}} for every conv in the file."""
    interpreter = _interpreter(tflite_path)
    weights: dict[str, dict[str, np.ndarray]] = {}
    for detail in interpreter.get_tensor_details():
        name = detail["name"]
        if name.endswith(WEIGHT_SUFFIX):
            q = _dequantize(interpreter, detail)
            layer = _keras_layer_name(name[: -len(WEIGHT_SUFFIX)])
            # conv [out, kh, kw, in] -> [kh, kw, in, out]; depthwise [1, kh, kw, C] -> [kh, kw, C, 1]
            kernel = np.transpose(q, (1, 2, 3, 0))
            weights.setdefault(layer, {})["kernel"] = kernel
        elif name.endswith(BIAS_SUFFIXES) and detail["dtype"] == np.int32:
            layer = _keras_layer_name(name.rsplit("/", 1)[0])
            weights.setdefault(layer, {})["bias"] = _dequantize(interpreter, detail)
    return weights


def import_tflite_weights(model: keras.Model, tflite_path: str | Path, class_head_init=None) -> list[str]:
    """Load the file's float weights into ``model``; returns the names of the layers set.

    Layers whose shape differs (class predictors of a new class set) go through
    ``class_head_init(layer_name, kernel, bias, target_shape) -> (kernel, bias)``; without it they
    raise ValueError.
    """
    weights = read_tflite_weights(tflite_path)
    loaded = []
    for layer in model.layers:
        if layer.name not in weights:
            continue
        kernel, bias = weights[layer.name]["kernel"], weights[layer.name]["bias"]
        target_shape = tuple(layer.kernel.shape)
        if kernel.shape != target_shape:
            if class_head_init is None:
                raise ValueError(f"{layer.name}: file kernel {kernel.shape} != model {target_shape}")
            kernel, bias = class_head_init(layer.name, kernel, bias, target_shape)
        layer.set_weights([kernel, bias])
        loaded.append(layer.name)
    conv_layers = [layer.name for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    missing = sorted(set(conv_layers) - set(loaded))
    if missing:
        raise ValueError(f"no weights in {tflite_path} for layers {missing}")
    log.info("tflite_weights_imported", layers=len(loaded), path=str(tflite_path))
    return loaded
