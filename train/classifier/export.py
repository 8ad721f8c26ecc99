"""Export the trained crop classifier as int8 TFLite, the file the daemon runs.

``classifier.tflite``: full-integer int8 with uint8 input [N, 192, 192, 3] RGB (N resizable; one
invoke per frame for all its candidates), quantized so the float network sees (u8 - 128) / 128;
output float32 [N, 1] = P(raccoon). Calibration: crops of the TRAINING part only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import structlog

from raccoon_watch.recognition.detectors.base import normalise
from raccoon_watch.recognition.modelfiles import CLASSIFIER_FILE
from train.classifier.model import INPUT_SIZE, build_classifier

log = structlog.get_logger(__name__)

TFLITE_FILE = CLASSIFIER_FILE
NUM_REPRESENTATIVE = 200


def _representative(crops: np.ndarray, limit: int = NUM_REPRESENTATIVE):
    """A ramp holding every pixel value (input range exactly [-1, 127/128]: uint8 scale 1/128,
    zero point 128, like the detector's input), then training crops."""
    ramp = np.tile(np.arange(256, dtype=np.uint8), INPUT_SIZE * INPUT_SIZE * 3 // 256 + 1)
    ramp = ramp[: INPUT_SIZE * INPUT_SIZE * 3].reshape(1, INPUT_SIZE, INPUT_SIZE, 3)
    picks = np.random.default_rng(0).permutation(len(crops))[:limit]

    def generate():
        yield [normalise(ramp)]
        for i in picks:
            yield [normalise(crops[i : i + 1])]

    return generate


def export_classifier(weights: Path, calibration_crops: np.ndarray, out_path: Path) -> Path:
    """Keras weights -> int8 TFLite at ``out_path`` (dynamic batch); returns the path."""
    import tensorflow as tf

    from train.export import _frozen_call

    model = build_classifier()
    model.load_weights(weights)
    call = _frozen_call(model)
    module = tf.Module()

    @tf.function(input_signature=[tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32, name="crops")])
    def probability(crops):
        return {"raccoon_probability": tf.sigmoid(call(crops))}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([probability.get_concrete_function()], module)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(calibration_crops)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.float32
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(converter.convert())
    log.info("classifier_exported", path=str(out_path), bytes=out_path.stat().st_size)
    return out_path
