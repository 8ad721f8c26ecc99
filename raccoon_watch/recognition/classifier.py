"""The raccoon classifier stage (TFLite): is this candidate crop a raccoon?

Model contract (train/'s ``classifier.tflite``, see train/classifier/export.py):
- one input [N, H, W, 3] RGB, N resizable (the batch of one frame's candidates): uint8 or int8
  quantized from (x - 128) / 128 with the input's scale and zero point, or float32 (x - 128) / 128
  (``detectors.base.input_tensor``);
- one output [N, 1]: P(raccoon) in [0, 1] (float, or quantized and dequantized here).

All crops of a call run in ONE invoke: the input is resized to [N, H, W, 3] when N changes. An
Interpreter is not thread-safe, so each calling thread gets its own, built from the same bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import structlog
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from raccoon_watch.recognition.detectors.base import ModelError, input_tensor
from raccoon_watch.recognition.detectors.tflite import new_interpreter, read_model

log = structlog.get_logger(__name__)


class _Local(threading.local):
    interp: Interpreter | None = None
    batch: int = 0


class TFLiteClassifier:
    name = "tflite-classifier"

    def __init__(self, model_path: Path, num_threads: int = 2, use_xnnpack: bool = True) -> None:
        self.model_path = Path(model_path)
        self.num_threads = num_threads
        self._resolver = OpResolverType.AUTO if use_xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self._content = read_model(self.model_path)
        self._local = _Local()
        interp = self._interpreter(1)
        inputs, outputs = interp.get_input_details(), interp.get_output_details()
        if len(inputs) != 1 or len(inputs[0]["shape"]) != 4 or inputs[0]["shape"][3] != 3:
            raise ModelError(f"{self.model_path}: expected one image input [N, H, W, 3], got "
                             f"{[list(d['shape']) for d in inputs]}")
        if len(outputs) != 1 or int(np.prod(outputs[0]["shape"][1:])) != 1:
            raise ModelError(f"{self.model_path}: expected one output [N, 1] (P(raccoon)), got "
                             f"{[list(d['shape']) for d in outputs]}")
        if inputs[0]["dtype"] not in (np.uint8, np.int8, np.float32):
            raise ModelError(f"{self.model_path}: unsupported input type {inputs[0]['dtype'].__name__}")
        self.input_size = (int(inputs[0]["shape"][1]), int(inputs[0]["shape"][2]))
        self._dtype, self._quant = inputs[0]["dtype"], inputs[0]["quantization"]
        log.info("classifier_loaded", model=str(self.model_path), input=list(self.input_size),
                 input_dtype=self._dtype.__name__, threads=num_threads)

    def _interpreter(self, batch: int) -> Interpreter:
        local = self._local
        if local.interp is None:
            try:
                local.interp = new_interpreter(self._content, self.num_threads, self._resolver)
            except (ValueError, RuntimeError) as exc:
                raise ModelError(f"{self.model_path}: not a usable TFLite model: {str(exc).splitlines()[0]}") from None
            local.batch = int(local.interp.get_input_details()[0]["shape"][0])
        if local.batch != batch:
            detail = local.interp.get_input_details()[0]
            local.interp.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]], strict=False)
            local.interp.allocate_tensors()
            local.batch = batch
        return local.interp

    def classify(self, crops_rgb: Sequence[np.ndarray]) -> np.ndarray:
        """P(raccoon) per crop (float32 (N,)); crops RGB uint8 at ``input_size``, one invoke for all."""
        if not len(crops_rgb):
            return np.zeros((0,), np.float32)
        batch = np.stack(crops_rgb)
        if batch.shape[1:] != (*self.input_size, 3) or batch.dtype != np.uint8:
            raise ValueError(f"expected RGB uint8 crops of {self.input_size}, got {batch.dtype} {batch.shape[1:]}")
        interp = self._interpreter(len(batch))
        interp.set_tensor(interp.get_input_details()[0]["index"], input_tensor(batch, self._dtype, self._quant))
        interp.invoke()
        out = interp.get_output_details()[0]
        values = interp.get_tensor(out["index"]).astype(np.float32).reshape(len(batch), -1)[:, 0]
        scale, zero_point = out["quantization"]
        return (values - zero_point) * scale if scale else values

    def close(self) -> None:
        self._local = _Local()
