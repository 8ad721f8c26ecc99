"""train.classifier.retrain starts from the DEPLOYED classifier: the float weights recovered from the
shipped int8 classifier.tflite give the same P(raccoon) as the file itself on real crops."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from raccoon_watch.recognition.classifier import TFLiteClassifier
from raccoon_watch.recognition.detectors.base import normalise

REPO = Path(__file__).resolve().parents[2]
CLASSIFIER = REPO / "models" / "raccoon" / "classifier.tflite"
MAX_DIFF = 0.05  # int8 activations vs float: measured 0.021 at most, 0.004 on average (40 crops)

pytestmark = [pytest.mark.shared, pytest.mark.skipif(not CLASSIFIER.is_file(), reason="no bundled classifier")]


def test_recovered_float_weights_score_like_the_int8_file(raccoon_images, shared_dir):
    from train.classifier.model import build_classifier
    from train.classifier.retrain import recover_float_weights

    model = build_classifier()
    assert recover_float_weights(model, CLASSIFIER) == 28  # 27 convs of MobileNetV1 + the head
    cats = sorted((shared_dir / "data" / "negatives").glob("kdvc_cat*.jpg"))[:10]
    paths = raccoon_images[:10] + cats
    crops = np.stack([cv2.cvtColor(cv2.resize(cv2.imread(str(p)), (192, 192)), cv2.COLOR_BGR2RGB) for p in paths])
    int8 = TFLiteClassifier(CLASSIFIER, num_threads=1).classify(list(crops))
    recovered = 1.0 / (1.0 + np.exp(-model.predict(normalise(crops), verbose=0).reshape(-1)))
    assert np.abs(int8 - recovered).max() < MAX_DIFF
    assert (int8[:10] > 0.5).mean() > 0.5 and ((int8 > 0.5) == (recovered > 0.5)).mean() >= 0.95


def test_a_file_of_another_architecture_is_refused(shared_dir):
    from train.classifier.model import build_classifier
    from train.classifier.retrain import recover_float_weights

    imagenet = shared_dir / "pretrained" / "imagenet" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
    with pytest.raises(ValueError, match="weighted ops|do not fit"):
        recover_float_weights(build_classifier(), imagenet)


@pytest.mark.parametrize("before, fitted, expected", [
    # both keep recall at the deployed threshold: the better AP, head on a tie
    (0.9, {"head": {"ap": 0.95, "recall_at_threshold": 0.9}, "blocks": {"ap": 0.94, "recall_at_threshold": 0.91}}, "head"),
    (0.9, {"head": {"ap": 0.94, "recall_at_threshold": 0.9}, "blocks": {"ap": 0.94, "recall_at_threshold": 0.9}}, "head"),
    # measured on a site: head had the better AP but its scores sank below the threshold
    (0.88, {"head": {"ap": 0.95, "recall_at_threshold": 0.70}, "blocks": {"ap": 0.94, "recall_at_threshold": 0.87}}, "blocks"),
    # neither keeps it: the one that loses the least
    (0.9, {"head": {"ap": 0.95, "recall_at_threshold": 0.6}, "blocks": {"ap": 0.90, "recall_at_threshold": 0.8}}, "blocks"),
])
def test_auto_keeps_the_mode_that_holds_the_deployed_operating_point(before, fitted, expected):
    from train.classifier.retrain import choose_mode

    assert choose_mode(before, fitted, recall_drop=0.03) == expected


def test_recall_at_a_threshold():
    import numpy as np

    from train.classifier.retrain import recall_at

    labels, scores = np.array([1, 1, 1, 0, 1]), np.array([0.9, 0.74, 0.5, 0.99, 0.741])
    assert recall_at(labels, scores, 0.741) == 0.5
    assert recall_at(np.array([0, 0]), np.array([0.9, 0.1]), 0.5) == 0.0
