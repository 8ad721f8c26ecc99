"""Float weights from a quantized SSD TFLite file, loaded into ``model.build_ssd``: the COCO SSD
(its tensors named after TF Object Detection API variables) or a detector this pipeline exported
(int8 with per-channel scales, tensors unnamed: each conv found by its op, the layer named by the
op's output tensor). The second lets a proposer be fine-tuned from the shipped one (issue 20:
night material added without starting again from COCO).

Every uint8 weight is dequantized as (q - zero_point) * scale, every int32 bias likewise with its
own scale. Layouts: TFLite conv [out, kh, kw, in] -> Keras [kh, kw, in, out]; depthwise
[1, kh, kw, C] -> Keras [kh, kw, C, 1].
"""

from __future__ import annotations

import re
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


_EXPORTED_LAYER = re.compile(r"([A-Za-z0-9_]+?)(?:_\d+)?/(?:BiasAdd|convolution|Conv2D|depthwise)")
"""The Keras layer in an exported conv's output tensor name: ``Conv2d_1_pointwise_1/BiasAdd`` ->
``Conv2d_1_pointwise`` (the converter appends ``_1`` to the layer name inside its function)."""


def read_exported_weights(tflite_path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """{keras layer name: {"kernel", "bias"}} of a detector exported by ``train.export`` (int8,
    per-channel scales on the quantized dimension; bias int32 at its own per-channel scale). Each
    CONV_2D / DEPTHWISE_CONV_2D op gives one layer: inputs (input, weights, bias)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(Path(tflite_path).read_bytes(), 0)
    graph = model.subgraphs[0]
    kinds = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D}
    dtypes = {schema.TensorType.INT8: np.int8, schema.TensorType.INT32: np.int32}

    def dequantized(index: int) -> np.ndarray:
        tensor = graph.tensors[index]
        if tensor.type not in dtypes or tensor.quantization is None or tensor.quantization.scale is None:
            raise ValueError(f"{tflite_path}: tensor {index} is not an int8/int32 quantized constant")
        q = np.frombuffer(bytes(model.buffers[tensor.buffer].data), dtype=dtypes[tensor.type]).reshape(tensor.shape)
        shape = [1] * q.ndim
        shape[tensor.quantization.quantizedDimension] = -1
        scale = np.asarray(tensor.quantization.scale, np.float64).reshape(shape)
        zero = np.asarray(tensor.quantization.zeroPoint, np.float64).reshape(shape)
        return ((q.astype(np.float64) - zero) * scale).astype(np.float32)

    weights: dict[str, dict[str, np.ndarray]] = {}
    for op in graph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) not in kinds:
            continue
        output = graph.tensors[op.outputs[0]].name.decode()
        match = _EXPORTED_LAYER.search(output)
        if match is None:
            raise ValueError(f"{tflite_path}: cannot tell the layer of conv output {output!r}")
        kernel = np.transpose(dequantized(op.inputs[1]), (1, 2, 3, 0))  # as the COCO reader: -> Keras layout
        weights[match.group(1)] = {"kernel": kernel, "bias": dequantized(op.inputs[2]).reshape(-1)}
    return weights


def read_tflite_weights(tflite_path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """{keras layer name: {"kernel": Keras layout, "bias": (C,)}} for every conv in the file: the
    COCO SSD's named tensors, else (a detector this pipeline exported) ``read_exported_weights``."""
    coco = read_coco_weights(tflite_path)
    return coco if coco else read_exported_weights(tflite_path)


def read_coco_weights(tflite_path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """The COCO SSD's weights, found by their TF Object Detection API tensor names ({} if none)."""
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
