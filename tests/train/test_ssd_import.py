"""The Keras SSD with imported float weights reproduces the stock TFLite file's raw outputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from train.ssd import box_coder
from train.ssd.anchors import generate_anchors
from train.ssd.head_init import HEAD_INITS, class_head_init
from train.ssd.matcher import box_iou
from train.ssd.model import build_ssd
from train.ssd.tflite_import import import_tflite_weights

MAX_MEAN_ABS_ERROR = 0.06  # README: about 0.03 on a real photo; quantization noise


def _tflite_raw_outputs(coco_model, image_u8):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(coco_model), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image_u8[None])
    interpreter.invoke()
    details = {d["name"]: d for d in interpreter.get_tensor_details()}

    def dequantized(name):
        scale, zero_point = details[name]["quantization"]
        return (interpreter.get_tensor(details[name]["index"]).astype(np.float32) - zero_point) * scale

    return dequantized("concat").reshape(1917, 4), dequantized("concat_1").reshape(1917, 91)


@pytest.fixture(scope="module")
def photo_u8(shared_dir):
    image = cv2.imread(str(shared_dir / "data/raccoon_dataset/images/raccoon-1.jpg"))[:, :, ::-1]
    return np.ascontiguousarray(cv2.resize(image, (300, 300), interpolation=cv2.INTER_LINEAR))


def test_imported_model_reproduces_tflite_raw_outputs(coco_model, photo_u8):
    model = build_ssd(90)
    loaded = import_tflite_weights(model, coco_model)
    assert len(loaded) == 47  # 27 backbone + 8 extra + 12 predictor convs
    tfl_boxes, tfl_logits = _tflite_raw_outputs(coco_model, photo_u8)
    boxes, logits = model((photo_u8[None].astype(np.float32) - 128.0) / 128.0)
    boxes, logits = np.asarray(boxes)[0], np.asarray(logits)[0]  # (1917, 4), (1917, 91)
    assert np.abs(boxes - tfl_boxes).mean() < MAX_MEAN_ABS_ERROR
    assert np.abs(logits - tfl_logits).mean() < MAX_MEAN_ABS_ERROR
    # same top class, and the top-scoring boxes overlap
    top_anchor, top_class = np.unravel_index(np.argmax(logits[:, 1:]), logits[:, 1:].shape)
    tfl_anchor, tfl_class = np.unravel_index(np.argmax(tfl_logits[:, 1:]), tfl_logits[:, 1:].shape)
    assert top_class == tfl_class
    anchors = generate_anchors()
    box = box_coder.decode(boxes[top_anchor][None], anchors[top_anchor][None])
    tfl_box = box_coder.decode(tfl_boxes[tfl_anchor][None], anchors[tfl_anchor][None])
    assert float(box_iou(box, tfl_box)[0, 0]) > 0.8


def test_raccoon_head_starts_from_coco_columns(coco_model, photo_u8):
    model = build_ssd(1)
    import_tflite_weights(model, coco_model, class_head_init(HEAD_INITS["cat_dog_bear_mean"]))
    _, tfl_logits = _tflite_raw_outputs(coco_model, photo_u8)
    _, logits = model((photo_u8[None].astype(np.float32) - 128.0) / 128.0)
    logits = np.asarray(logits)[0]  # (1917, 2)
    assert logits.shape == (1917, 2)
    expected = tfl_logits[:, [17, 18, 23]].mean(axis=1)  # cat, dog, bear
    assert np.abs(logits[:, 1] - expected).mean() < MAX_MEAN_ABS_ERROR
    assert np.abs(logits[:, 0] - tfl_logits[:, 0]).mean() < MAX_MEAN_ABS_ERROR


def _shipped_top_detection(model_path, image_u8):
    """(score, [ymin, xmin, ymax, xmax] normalised) of the shipped detector's best box, as LiteRT
    runs it (its own post-processing op)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], image_u8[None])
    interpreter.invoke()
    outputs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    boxes = next(o for o in outputs if o.ndim == 3 and o.shape[-1] == 4)[0]
    scores = next(o for o in outputs if o.ndim == 2 and o.dtype == np.float32 and o.max() <= 1.0 and o.min() >= 0.0
                  and not np.all(np.mod(o, 1) == 0))[0]
    best = int(np.argmax(scores))
    return float(scores[best]), boxes[best]


def test_a_detector_this_pipeline_exported_loads_as_a_warm_start(photo_u8):
    """The shipped proposer (int8, per-channel, unnamed weight tensors) loads into the Keras SSD by
    its ops, so a new proposer can be fine-tuned from it: the Keras model finds the same raccoon
    box with about the same score as the file does."""
    from train.train import predict

    shipped_model_dir = Path(__file__).resolve().parents[2] / "models" / "raccoon"
    model = build_ssd(1)
    loaded = import_tflite_weights(model, shipped_model_dir / "model.tflite")  # no head init: the shapes match
    assert len(loaded) == 47
    score, box = _shipped_top_detection(shipped_model_dir / "model.tflite", photo_u8)
    found = predict(model, (photo_u8[None].astype(np.float32) - 128.0) / 128.0, generate_anchors())[0]
    keras_score, keras_box = max(found, key=lambda d: d[0])
    assert score > 0.5 and abs(keras_score - score) < 0.1, (keras_score, score)
    assert float(box_iou(np.asarray([keras_box]), np.asarray([box]))[0, 0]) > 0.8
