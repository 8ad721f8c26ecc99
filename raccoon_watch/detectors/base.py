"""The one interface every detector backend implements.

Input images are BGR uint8 arrays (H, W, 3) of any size, as OpenCV decodes them; each backend
resizes to its model input itself. Output boxes are normalised (xmin, ymin, xmax, ymax) of the
image passed in (see raccoon_watch.types.Box); backends convert from the model's own
(ymin, xmin, ymax, xmax) order at this boundary and nowhere else.
"""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from raccoon_watch.types import Detection


class ModelError(Exception):
    """The model file/directory is missing, unreadable or not a detector; str() says which and why."""


class Detector(Protocol):
    name: str  # backend name, e.g. "tflite"
    labels: tuple[str, ...]  # index i = class id i of the model's output after label-map resolution
    max_batch: int  # frames one detect() call takes efficiently (1 for TFLite)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """One list of detections per image, best first; no score threshold applied beyond min_score."""

    def close(self) -> None:
        """Release the interpreter / session."""
