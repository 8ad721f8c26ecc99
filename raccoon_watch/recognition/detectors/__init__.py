"""Detector backends behind one interface (base.Detector); ``create_detector`` picks and builds one.

Backends live one per file (tflite.py, tensorflow.py) and are imported only when built, so using the
TFLite backend never imports TensorFlow.
"""

from raccoon_watch.recognition.detectors.base import DEFAULT_MIN_SCORE, Detector, ModelError, ModelNotFound
from raccoon_watch.recognition.detectors.factory import (
                                             ModelFiles,
                                             create_detector,
                                             create_recognizer,
                                             find_model,
                                             resolve_default_model,
)

__all__ = ["DEFAULT_MIN_SCORE", "Detector", "ModelError", "ModelNotFound", "ModelFiles", "create_detector", "create_recognizer", "find_model",
           "resolve_default_model"]
