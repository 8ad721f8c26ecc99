"""TFLite SSDs in batches (raccoon_watch/recognition/detectors/ssd_batch.py) on real models and real photos: the cut
model with the post-processing in numpy gives what the model's own op gives, one frame at a time."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from raccoon_watch.config import REPO_ROOT, DetectorConfig
from raccoon_watch.recognition.detectors import create_recognizer
from raccoon_watch.recognition.detectors.ssd_batch import NotBatchable, cut_postprocess, select
from raccoon_watch.recognition.detectors.tflite import TFLiteDetector, _same
from raccoon_watch.recognition.labels import load_labels

SHIPPED = REPO_ROOT / "models" / "raccoon"


def photos(shared_dir: Path, n: int) -> list[np.ndarray]:
    """n dataset photos of many shapes (wide, portrait, small), BGR."""
    found = sorted((shared_dir / "data" / "raccoon_dataset" / "images").glob("raccoon-*.jpg"))[:n]
    assert len(found) == n
    return [cv2.imread(str(p)) for p in found]


def models(coco_model: Path) -> list[tuple[Path, tuple[str, ...]]]:
    out = [(coco_model, load_labels(coco_model.parent / "coco_labelmap.txt"))]
    if (SHIPPED / "model.tflite").is_file():
        out.append((SHIPPED / "model.tflite", ("background", "raccoon")))
    return out


def test_batches_give_the_op_s_detections(coco_model: Path, shared_dir: Path) -> None:
    """Every model here (the stock COCO SSD, quantized outputs; the shipped raccoon proposer, float
    outputs): 24 real photos in batches of 8, 5, 1 and 10 give what 24 single frames through the
    model's own post-processing op give."""
    images = photos(shared_dir, 24)
    for path, labels in models(coco_model):
        single = TFLiteDetector(path, labels, num_threads=2, min_score=0.01)
        batched = TFLiteDetector(path, labels, num_threads=2, min_score=0.01, batch_size=10)
        assert (single.max_batch, batched.max_batch) == (1, 10)
        want = single.detect(images)
        got = batched.detect(images[:8]) + batched.detect(images[8:13]) + batched.detect(images[13:14]) \
            + batched.detect(images[14:])
        assert sum(len(d) for d in want) > 24  # the photos have detections to compare
        for i, (a, b) in enumerate(zip(want, got)):
            assert _same(a, b), f"{path.name}: photo {i} differs"


def test_cut_model_outputs_the_op_s_inputs_with_a_free_batch(coco_model: Path) -> None:
    content = coco_model.read_bytes()
    cut, post = cut_postprocess(content)
    interp = Interpreter(model_content=cut)
    inp = interp.get_input_details()[0]
    assert list(inp["shape_signature"]) == [-1, 300, 300, 3]
    interp.resize_tensor_input(inp["index"], [3, 300, 300, 3], strict=False)
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], np.zeros((3, 300, 300, 3), np.uint8))
    interp.invoke()
    encodings, scores = (interp.get_tensor(d["index"]) for d in interp.get_output_details())
    assert encodings.shape == (3, len(post.anchors), 4)
    assert scores.shape == (3, len(post.anchors), post.num_classes + 1)  # background first
    assert post.max_detections == 10 and post.num_classes == 90


def test_a_model_without_the_op_is_not_batchable(shared_dir: Path) -> None:
    classifier = SHIPPED / "classifier.tflite"
    if not classifier.is_file():
        pytest.skip("no shipped classifier")
    with pytest.raises(NotBatchable, match="TFLite_Detection_PostProcess"):
        cut_postprocess(classifier.read_bytes())
    with pytest.raises(NotBatchable):
        cut_postprocess(b"\0" * 64)


@pytest.mark.parametrize(
    "boxes, order, iou, limit, chosen",
    [
        # two boxes overlapping by IoU 0.5 (ymin, xmin, ymax, xmax): the second is suppressed above 0.4
        ([[0, 0, 1, 1], [0, 0, 1, 0.5]], [0, 1], 0.4, 10, [0]),
        ([[0, 0, 1, 1], [0, 0, 1, 0.5]], [0, 1], 0.5, 10, [0, 1]),  # "above": equal IoU stays
        ([[0, 0, 1, 1], [0, 0, 1, 0.5], [2, 2, 3, 3]], [1, 0, 2], 0.4, 10, [1, 2]),  # best first wins
        ([[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]], [0, 1, 2], 0.5, 2, [0, 1]),  # at most limit
        ([[0, 0, 0, 1], [0, 0, 0, 1]], [0, 1], 0.1, 10, [0, 1]),  # empty boxes overlap nothing
        ([[0, 0, 1, 1]], [], 0.5, 10, []),
    ],
)
def test_select_is_greedy_nms(boxes, order, iou, limit, chosen) -> None:
    assert select(np.array(boxes, np.float32), np.array(order, np.int64), iou, limit) == chosen


def test_recognizer_batch_equals_frame_by_frame(shared_dir: Path) -> None:
    """The two-stage recognizer with a batched proposer: 6 photos in one call (one proposer invoke, one
    classifier invoke for every photo's candidates) give the detections of 6 calls of one photo each."""
    if not (SHIPPED / "classifier_card.json").is_file():
        pytest.skip("no shipped two-stage model")
    images = photos(shared_dir, 6)
    one = create_recognizer(DetectorConfig(backend="tflite", num_threads=2), SHIPPED)
    many = create_recognizer(DetectorConfig(backend="tflite", num_threads=2, batch_size=8), SHIPPED)
    assert (one.max_batch, many.max_batch) == (1, 8)
    want = [one.recognize([im])[0] for im in images]
    got = many.recognize(images)
    for a, b in zip(want, got):
        assert [d.label for d in a] == [d.label for d in b]
        assert np.allclose([d.score for d in a], [d.score for d in b], atol=1e-4)
        assert np.allclose([d.box for d in a], [d.box for d in b], atol=1e-4)
