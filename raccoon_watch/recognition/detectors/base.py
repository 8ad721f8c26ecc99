"""The one interface every detector backend implements.

Input images are BGR uint8 arrays (H, W, 3) of any size, as OpenCV decodes them; each backend
resizes to its model input itself. Output boxes are normalised (xmin, ymin, xmax, ymax) of the
image passed in (see raccoon_watch.types.Box); backends convert from the model's own
(ymin, xmin, ymax, xmax) order at this boundary and nowhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from raccoon_watch.types import Detection

MAX_ERROR_CHARS = 600  # a model error is one log line and one message: what it quotes from files is cut


class ModelError(Exception):
    """The model file/directory is missing, unreadable or not a detector; str() says which and why,
    in at most ``MAX_ERROR_CHARS`` characters (a 10,000-line label map once made a 129 KB line)."""

    def __init__(self, message: str) -> None:
        if len(message) > MAX_ERROR_CHARS:
            message = f"{message[:MAX_ERROR_CHARS]}... [{len(message) - MAX_ERROR_CHARS} more characters]"
        super().__init__(message)


class ModelNotFound(ModelError):
    """The model (or label map) path does not exist: ``path`` is the path that was looked up. When
    the config named it (``detector.model``, ``detector.labelmap``), that is a configuration problem
    (the CLI exits 2 naming the key); a model that exists but does not load stays a ModelError (3)."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = Path(path)


class Detector(Protocol):
    name: str  # backend name, e.g. "tflite"
    labels: tuple[str, ...]  # index i = class id i of the model's output after label-map resolution
    max_batch: int  # frames one detect() call takes efficiently (TFLite: 1, or detector.batch_size)
    input_size: tuple[int, int]  # (height, width) the model sees; 0 for a dimension it accepts at any size
    threshold: float | None  # deployed threshold from the model card, None when the model has no card

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """One list of detections per image, best first; no score threshold applied beyond min_score."""

    def close(self) -> None:
        """Release the interpreter / session."""


DEFAULT_MIN_SCORE = 0.1
"""Backends drop detections below this score; the daemon's per-camera thresholds sit above it."""


def detections_from_yxyx(
    boxes_yxyx: np.ndarray,
    class_ids: np.ndarray,
    scores: np.ndarray,
    labels: Sequence[str],
    min_score: float,
) -> list[Detection]:
    """The one place the TF OD API box order is converted.

    boxes_yxyx: (N, 4) normalised (ymin, xmin, ymax, xmax), as every TF OD API model outputs them.
    class_ids: (N,) indices into ``labels`` (already shifted by the backend: see raccoon_watch.recognition.labels).
    scores: (N,) in [0, 1]. Returns Detections with normalised (xmin, ymin, xmax, ymax) boxes clipped
    to [0, 1], score >= min_score, empty boxes dropped, best first.
    """
    out: list[Detection] = []
    boxes = np.clip(np.asarray(boxes_yxyx, dtype=np.float64).reshape(-1, 4), 0.0, 1.0)
    for (ymin, xmin, ymax, xmax), cid, score in zip(boxes, np.asarray(class_ids).reshape(-1), np.asarray(scores).reshape(-1)):
        if score < min_score or xmax <= xmin or ymax <= ymin:
            continue
        k = int(round(float(cid)))
        label = labels[k] if 0 <= k < len(labels) else f"class_{k}"
        out.append(Detection(label=label, score=float(score), box=(float(xmin), float(ymin), float(xmax), float(ymax))))
    out.sort(key=lambda d: d.score, reverse=True)
    return out


INPUT_MEAN = 128.0
INPUT_STD = 128.0
"""Every float network here sees (rgb_u8 - 128) / 128 in [-1, 1): what the stock quantized inputs
(scale 1/128, zero point 128) decode to, and what train/ trains and exports with."""


def normalise(rgb: np.ndarray) -> np.ndarray:
    """RGB uint8 (..., 3) -> float32 (rgb - 128) / 128, the one input scaling of every model."""
    return (rgb.astype(np.float32) - INPUT_MEAN) / INPUT_STD


def input_tensor(rgb: np.ndarray, dtype: type, quantization: tuple[float, int] = (0.0, 0)) -> np.ndarray:
    """RGB uint8 (N, H, W, 3) already at the model's size -> the tensor a TFLite input of ``dtype``
    and (scale, zero_point) takes, standing for ``normalise(rgb)``: float32 as it is; uint8/int8
    quantized with the input's own parameters (for the stock uint8 input, scale 1/128 and zero point
    128, that is the raw pixels)."""
    if dtype == np.float32:
        return normalise(rgb)
    scale, zero_point = quantization
    if dtype == np.uint8 and (not scale or (abs(scale - 1.0 / INPUT_STD) < 1e-9 and zero_point == INPUT_MEAN)):
        return rgb
    if dtype not in (np.uint8, np.int8) or not scale:
        raise ValueError(f"unsupported model input {np.dtype(dtype).name} with quantization {quantization}")
    info = np.iinfo(dtype)
    return np.clip(np.round(normalise(rgb) / scale + zero_point), info.min, info.max).astype(dtype)


def to_model_rgb(image_bgr: np.ndarray, height: int, width: int) -> np.ndarray:
    """BGR uint8 (H, W, 3) of any size -> RGB uint8 (height, width, 3), cv2.INTER_LINEAR.

    Models of the TF OD API are trained on RGB; OpenCV decodes BGR. Swapping here, once, is the
    whole colour conversion of every backend.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"expected a BGR uint8 image (H, W, 3), got {image_bgr.dtype} {image_bgr.shape}")
    if image_bgr.shape[:2] != (height, width):
        image_bgr = cv2.resize(image_bgr, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
