"""TensorFlow backend: a TF2 SavedModel with the TF Object Detection API serving signature.

Contract (TF2 Detection Zoo models and train/'s export): ``serving_default`` takes
``input_tensor`` uint8 [B, H, W, 3] RGB (B, H, W may be None) and returns ``detection_boxes``
[B, N, 4] normalised (ymin, xmin, ymax, xmax), ``detection_scores`` [B, N] best first,
``detection_classes`` [B, N] 1-based floats (label = labels[class], see raccoon_watch.recognition.labels) and
``num_detections`` [B]. NMS is inside the model.

TensorFlow is imported only when this backend is built, so the TFLite path never loads it. Every
visible GPU gets memory growth (otherwise TF grabs all GPU memory at the first call). When the
signature's batch dimension is None (or > 1), ``detect`` resizes all images to one size and runs a
single call (up to MAX_CALL_BATCH frames; max_batch is the batch the workers should assemble);
otherwise it loops one frame at a time.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from raccoon_watch.recognition.detectors.base import DEFAULT_MIN_SCORE, ModelError, detections_from_yxyx, to_model_rgb
from raccoon_watch.recognition.modelfiles import SAVED_MODEL_PB
from raccoon_watch.types import Detection

log = structlog.get_logger(__name__)

SIGNATURE = "serving_default"
INPUT = "input_tensor"
OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
CLASS_OFFSET = 0  # detection_classes are already 1-based: labels[class]
MAX_CALL_BATCH = 64  # frames per call when the signature takes any batch (bounds GPU memory)


# `make run` installs the runtime only (LiteRT, no TensorFlow): the extra that brings TensorFlow
TF_EXTRA_HINT = ".venv/bin/pip install -c requirements.lock -e '.[cpu]' (or '.[gpu]' for an NVIDIA GPU)"


def import_tensorflow() -> Any:
    """TensorFlow, with its C++ start-up lines (absl, CUDA plugins, CPU features) routed into the
    log (``nativelog``) and its INFO/WARNING lines off unless TF_CPP_MIN_LOG_LEVEL says otherwise.
    ImportError when it is not installed."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read by TF's C++ when it loads
    from raccoon_watch.support.nativelog import routed_native_stderr

    with routed_native_stderr("tensorflow"):
        import tensorflow as tf
    return tf


def _import_tensorflow(model_dir: Path):
    try:
        return import_tensorflow()
    except ImportError:
        raise ModelError(f"{model_dir}: the TensorFlow backend needs TensorFlow, which `make run` does not install: "
                         f"{TF_EXTRA_HINT}; or use the .tflite model (backend tflite)") from None


def visible_gpus() -> list[Any]:
    """The GPUs TensorFlow sees (its PhysicalDevices). The first look loads CUDA, which says so on
    stderr: routed into the log."""
    from raccoon_watch.support.nativelog import routed_native_stderr

    tf = import_tensorflow()
    with routed_native_stderr("tensorflow"):
        return tf.config.list_physical_devices("GPU")


def enable_gpu_memory_growth() -> list[str]:
    """Memory growth on for every GPU TensorFlow sees; returns their names. Safe to call twice."""
    import tensorflow as tf

    gpus = visible_gpus()
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: the setting was applied (or fixed) earlier
            pass
    return [gpu.name for gpu in gpus]


class TensorFlowDetector:
    name = "tensorflow"

    def __init__(self, model_dir: Path, labels: tuple[str, ...], min_score: float = DEFAULT_MIN_SCORE,
                 threshold: float | None = None, batch_size: int = 1, input_size: tuple[int, int] | None = None):
        self.model_dir = Path(model_dir)
        self.labels = labels
        self.min_score = min_score
        self.threshold = threshold
        if not (self.model_dir / SAVED_MODEL_PB).is_file():
            what = "not found" if not self.model_dir.exists() else "is not a SavedModel directory (no saved_model.pb)"
            raise ModelError(f"{self.model_dir}: {what}")
        tf = _import_tensorflow(self.model_dir)
        gpus = enable_gpu_memory_growth()

        try:
            from raccoon_watch.support.nativelog import routed_native_stderr

            with routed_native_stderr("tensorflow"):
                self._model = tf.saved_model.load(str(self.model_dir))
        except Exception as exc:  # TF raises several types for a corrupt protobuf or missing variables
            raise ModelError(f"{self.model_dir}: cannot load the SavedModel: {str(exc).splitlines()[0]}") from None
        signatures = dict(getattr(self._model, "signatures", {}))
        if SIGNATURE not in signatures:
            raise ModelError(f"{self.model_dir}: no '{SIGNATURE}' signature (has {sorted(signatures)})")
        self._fn = signatures[SIGNATURE]
        spec = self._fn.structured_input_signature[1].get(INPUT)
        missing = [k for k in OUTPUTS if k not in self._fn.structured_outputs]
        if spec is None or spec.dtype != tf.uint8 or len(spec.shape) != 4 or missing:
            raise ModelError(f"{self.model_dir}: '{SIGNATURE}' is not the TF OD API signature "
                             f"({INPUT} uint8 [B,H,W,3] -> {', '.join(OUTPUTS)}); inputs "
                             f"{self._fn.structured_input_signature[1]}, missing outputs {missing}")
        batch_dim, height, width = spec.shape[0], spec.shape[1], spec.shape[2]
        # None: any batch (detect() sends all its images in one call, max_batch is the worker's hint);
        # 1: one frame per call; k > 1: exactly k per call (short batches are padded).
        self._fixed_batch = batch_dim
        self._chunk = MAX_CALL_BATCH if batch_dim is None else batch_dim
        self.max_batch = batch_size if batch_dim is None else batch_dim
        self.input_size = (height or (input_size or (0, 0))[0], width or (input_size or (0, 0))[1])
        self._tf = tf
        log.info("detector_loaded", backend=self.name, model=str(self.model_dir), input=list(self.input_size),
                 batch=self.max_batch, gpus=gpus, labels=len(labels))

    def _size_for(self, images: Sequence[np.ndarray]) -> tuple[int, int]:
        """Model input size; for a model of any size, the first image's (all of a batch must match)."""
        height, width = self.input_size
        first_h, first_w = images[0].shape[:2]
        return (height or first_h, width or first_w)

    def _call(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        height, width = self._size_for(images)
        batch = np.stack([to_model_rgb(img, height, width) for img in images])  # (B, H, W, 3) RGB uint8
        real = len(images)
        if self._fixed_batch and real < self._fixed_batch:  # pad a fixed-size batch with the last frame
            batch = np.concatenate([batch, np.repeat(batch[-1:], self._fixed_batch - real, axis=0)])
        out: dict[str, Any] = self._fn(**{INPUT: self._tf.constant(batch)})
        boxes = out["detection_boxes"].numpy()  # (B, N, 4) ymin, xmin, ymax, xmax normalised
        scores = out["detection_scores"].numpy()  # (B, N)
        classes = out["detection_classes"].numpy()  # (B, N) 1-based
        counts = out["num_detections"].numpy().reshape(-1)  # (B,)
        return [
            detections_from_yxyx(boxes[i, : int(n)], classes[i, : int(n)] + CLASS_OFFSET, scores[i, : int(n)],
                                 self.labels, self.min_score)
            for i, n in enumerate(counts[:real])
        ]

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        results: list[list[Detection]] = []
        for start in range(0, len(images), self._chunk):
            results.extend(self._call(images[start : start + self._chunk]))
        return results

    def close(self) -> None:
        self._fn = None
        self._model = None
