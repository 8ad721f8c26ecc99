"""A TFLite SSD that takes a batch: the network without its post-processing op, and that op in numpy.

The SSD exporters end the graph with ``TFLite_Detection_PostProcess`` (box decoding + non-max
suppression), and that op handles one image: its outputs are [1, N, 4] whatever the input, and the
graph's RESHAPEs before it have a batch of 1 written into their shape constants. So resizing the
input's batch dimension fails (XNNPACK: "failed to reshape"). ``cut_postprocess`` rewrites the model
(its FlatBuffer, with the schema LiteRT ships) so that it can:

* the post-processing op is removed and the graph's outputs become its two inputs: the raw box
  encodings [B, A, 4] and the class scores [B, A, C + 1] (background first), float or quantized
  (the caller dequantizes them with the outputs' own scale and zero point, as the op does);
* each RESHAPE whose constant shape starts with 1 gets -1 there (the batch), and the input's shape
  signature gets -1 as its batch;
* the op's options (scales, score and IoU thresholds, max detections) and its anchors
  ([A, 4] ycenter, xcenter, h, w) are kept in a ``PostProcess`` value.

``PostProcess.run`` then does per image what the op does (``detection_postprocess.cc``, the "fast"
path every exporter here uses: ``use_regular_nms`` false): decode centre-size boxes against the
anchors, take each anchor's best class (background excluded), keep scores >= the score threshold,
sort them (stable, descending) and select greedily, dropping any box whose IoU with a selected one is
above the IoU threshold, up to ``max_detections``. Its outputs are the op's: boxes (ymin, xmin, ymax,
xmax) normalised, 0-based class ids without the background, scores, count. ``TFLiteDetector`` checks
them against the op on its probe frames before it uses the cut model, and keeps one frame per invoke
when they differ (or when a model does not have this shape).
"""

from __future__ import annotations

from dataclasses import dataclass

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers

POSTPROCESS_OP = b"TFLite_Detection_PostProcess"
RESHAPE = 22  # BuiltinOperator.RESHAPE


class NotBatchable(Exception):
    """The model is not an SSD ending in one ``TFLite_Detection_PostProcess`` this module can cut."""


@dataclass(frozen=True, slots=True, eq=False)
class PostProcess:
    """What ``TFLite_Detection_PostProcess`` does, as numbers: its options and its anchors.

    anchors: float32 [A, 4] (ycenter, xcenter, h, w), normalised; scales: (y, x, h, w) divisors of
    the box encodings; num_classes: without the background; max_classes_per_detection: 1 in every
    exported SSD (the fast path takes each anchor's best class only).
    """

    anchors: np.ndarray
    scales: tuple[float, float, float, float]
    max_detections: int
    max_classes_per_detection: int
    num_classes: int
    score_threshold: float
    iou_threshold: float

    def decode(self, encodings: np.ndarray) -> np.ndarray:
        """Box encodings [A, 4] (ty, tx, th, tw) -> boxes [A, 4] (ymin, xmin, ymax, xmax), float32."""
        enc = encodings.astype(np.float32, copy=False)
        a = self.anchors
        sy, sx, sh, sw = (np.float32(s) for s in self.scales)
        yc = enc[:, 0] / sy * a[:, 2] + a[:, 0]
        xc = enc[:, 1] / sx * a[:, 3] + a[:, 1]
        half_h = np.float32(0.5) * np.exp(enc[:, 2] / sh) * a[:, 2]
        half_w = np.float32(0.5) * np.exp(enc[:, 3] / sw) * a[:, 3]
        return np.stack([yc - half_h, xc - half_w, yc + half_h, xc + half_w], axis=1)

    def run(self, encodings: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """One image: encodings [A, 4], scores [A, C + 1] (background in column 0) -> (boxes [n, 4]
        ymin, xmin, ymax, xmax; classes [n] 0-based without the background; scores [n]; n), best first."""
        boxes = self.decode(encodings)
        per_class = scores[:, scores.shape[1] - self.num_classes:].astype(np.float32, copy=False)
        best_class = np.argmax(per_class, axis=1)
        best = per_class[np.arange(len(per_class)), best_class]
        keep = np.flatnonzero(best >= np.float32(self.score_threshold))
        order = keep[np.argsort(-best[keep], kind="stable")]
        chosen = select(boxes, order, self.iou_threshold, self.max_detections)
        return boxes[chosen], best_class[chosen].astype(np.float32), best[chosen], len(chosen)


def select(boxes: np.ndarray, order: np.ndarray, iou_threshold: float, limit: int) -> list[int]:
    """Greedy non-max suppression over ``order`` (indices into ``boxes``, best first): take the next
    box not suppressed, then suppress every later one whose IoU with it is above ``iou_threshold``;
    at most ``limit``. A box of zero or negative area overlaps nothing (IoU 0), as in the op."""
    if not len(order):
        return []
    cand = boxes[order]
    ymin, xmin, ymax, xmax = cand[:, 0], cand[:, 1], cand[:, 2], cand[:, 3]
    area = (ymax - ymin) * (xmax - xmin)
    active = np.ones(len(order), dtype=bool)
    chosen: list[int] = []
    i = 0
    while len(chosen) < limit and i < len(order):
        i += int(np.argmax(active[i:]))  # the next box not suppressed (argmax of all-False is 0)
        if not active[i]:
            break
        chosen.append(int(order[i]))
        active[i] = False
        rest = np.flatnonzero(active[i + 1:]) + i + 1
        if len(rest) and area[i] > 0:
            ih = np.maximum(np.minimum(ymax[i], ymax[rest]) - np.maximum(ymin[i], ymin[rest]), 0.0)
            iw = np.maximum(np.minimum(xmax[i], xmax[rest]) - np.maximum(xmin[i], xmin[rest]), 0.0)
            inter = ih * iw
            union = area[i] + area[rest] - inter
            with np.errstate(divide="ignore", invalid="ignore"):
                iou = np.where((area[rest] > 0) & (union > 0), inter / union, 0.0)
            active[rest[iou > iou_threshold]] = False
        i += 1
    return chosen


def cut_postprocess(content: bytes) -> tuple[bytes, PostProcess]:
    """The model without its post-processing op, with a free batch dimension, and that op as numbers.

    Raises ``NotBatchable`` (saying why) for anything but one subgraph whose outputs are exactly those
    of one ``TFLite_Detection_PostProcess`` op with constant anchors and the fast-NMS options."""
    try:
        model = schema.ModelT.InitFromPackedBuf(content, 0)
    except Exception as exc:  # not a FlatBuffer this schema reads
        raise NotBatchable(f"unreadable model: {exc!r:.120}") from None
    if len(model.subgraphs or []) != 1:
        raise NotBatchable(f"expected 1 subgraph, got {len(model.subgraphs or [])}")
    graph = model.subgraphs[0]
    codes = model.operatorCodes or []
    found = [i for i, op in enumerate(graph.operators or []) if codes[op.opcodeIndex].customCode == POSTPROCESS_OP]
    if len(found) != 1:
        raise NotBatchable(f"expected one {POSTPROCESS_OP.decode()} op, got {len(found)}")
    op = graph.operators[found[0]]
    if sorted(int(i) for i in op.outputs) != sorted(int(i) for i in graph.outputs):
        raise NotBatchable("the post-processing op's outputs are not the model's outputs")
    if len(op.inputs) != 3:
        raise NotBatchable(f"expected 3 inputs to the post-processing op, got {len(op.inputs)}")
    enc_index, score_index, anchor_index = (int(i) for i in op.inputs)
    allowed = (schema.TensorType.FLOAT32, schema.TensorType.UINT8, schema.TensorType.INT8)
    if any(graph.tensors[i].type not in allowed for i in (enc_index, score_index)):
        raise NotBatchable("the post-processing op's box and score inputs are not float32, uint8 or int8")
    anchors = _anchors(model, graph.tensors[anchor_index])
    if anchors is None or anchors.size % 4:
        raise NotBatchable("the anchors are not a constant of [A, 4] (float32, or uint8/int8 quantized)")
    try:
        opts = flexbuffers.Loads(bytes(op.customOptions))
        post = PostProcess(
            anchors=anchors.reshape(-1, 4).copy(),
            scales=(float(opts["y_scale"]), float(opts["x_scale"]), float(opts["h_scale"]), float(opts["w_scale"])),
            max_detections=int(opts["max_detections"]),
            max_classes_per_detection=int(opts.get("max_classes_per_detection", 1)),
            num_classes=int(opts["num_classes"]),
            score_threshold=float(opts["nms_score_threshold"]),
            iou_threshold=float(opts["nms_iou_threshold"]),
        )
        regular = bool(opts.get("use_regular_nms", False))
    except (KeyError, TypeError, ValueError) as exc:
        raise NotBatchable(f"unexpected post-processing options: {exc!r:.120}") from None
    if regular or post.max_classes_per_detection != 1:
        raise NotBatchable("only the fast NMS with one class per detection is reproduced")
    graph.operators = [o for i, o in enumerate(graph.operators) if i != found[0]]
    graph.outputs = np.array([enc_index, score_index], dtype=np.int32)
    for o in graph.operators:
        code = codes[o.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) != RESHAPE:
            continue
        if len(o.inputs) > 1 and int(o.inputs[1]) >= 0:
            shape_tensor = graph.tensors[o.inputs[1]]
            shape = _constant(model, shape_tensor, np.int32)
            if shape is not None and len(shape) and shape[0] == 1:
                shape = shape.copy()
                shape[0] = -1
                model.buffers[shape_tensor.buffer].data = np.frombuffer(shape.tobytes(), np.uint8)
        new_shape = getattr(o.builtinOptions, "newShape", None)
        if new_shape is not None and len(new_shape) and new_shape[0] == 1:
            o.builtinOptions.newShape = [-1, *list(new_shape)[1:]]
    for index in graph.inputs:
        tensor = graph.tensors[index]
        tensor.shapeSignature = np.array([-1, *list(tensor.shape)[1:]], dtype=np.int32)
    model.signatureDefs = []  # they name the removed outputs
    builder = flatbuffers.Builder(len(content) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), post


def _anchors(model: schema.ModelT, tensor: schema.TensorT) -> np.ndarray | None:
    """The anchors constant as float32, dequantized with its own scale and zero point when quantized."""
    if tensor.type == schema.TensorType.FLOAT32:
        return _constant(model, tensor, np.float32)
    dtype = {schema.TensorType.UINT8: np.uint8, schema.TensorType.INT8: np.int8}.get(tensor.type)
    q = tensor.quantization
    if dtype is None or q is None or q.scale is None or len(q.scale) != 1:
        return None
    raw = _constant(model, tensor, dtype)
    if raw is None:
        return None
    zero_point = int(q.zeroPoint[0]) if q.zeroPoint is not None and len(q.zeroPoint) else 0
    return ((raw.astype(np.float32) - zero_point) * np.float32(q.scale[0])).astype(np.float32)


def _constant(model: schema.ModelT, tensor: schema.TensorT, dtype: type) -> np.ndarray | None:
    buffer = model.buffers[tensor.buffer] if tensor.buffer < len(model.buffers) else None
    if buffer is None or buffer.data is None or not len(buffer.data):
        return None
    types: dict[type, int] = {np.float32: schema.TensorType.FLOAT32, np.int32: schema.TensorType.INT32,
             np.uint8: schema.TensorType.UINT8, np.int8: schema.TensorType.INT8}
    if tensor.type != types[dtype]:
        return None
    return np.frombuffer(bytes(buffer.data), dtype=dtype)
