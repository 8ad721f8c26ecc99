"""Hot swap of the raccoon classifier with the real TFLite files: what loads is published and taken by
the workers between frames; a broken file, another kind of model or a card that changes the operating
point keeps the running classifier."""

from __future__ import annotations

import json
import queue
import shutil
import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from raccoon_watch.config import DetectorConfig
from raccoon_watch.framequeue import FrameQueue
from raccoon_watch.learning.hotswap import ClassifierSwap, check_card
from raccoon_watch.learning.site_models import CLASSIFIER_CARD, CLASSIFIER_FILE, model_version
from raccoon_watch.recognition.detectors import create_recognizer
from raccoon_watch.types import Frame, FrameResult
from raccoon_watch.workers import DetectorWorker

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "models" / "raccoon"
OTHER = "000000000000"  # the version a test pretends is running, so the shipped file is "new"

pytestmark = pytest.mark.skipif(not (MODEL / CLASSIFIER_FILE).is_file(), reason="no bundled classifier")


@pytest.fixture()
def card() -> dict:
    return json.loads((MODEL / CLASSIFIER_CARD).read_text())


def _folder(tmp_path: Path, card: dict, payload: bytes | None = None, name: str = "cand") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    if payload is None:
        shutil.copyfile(MODEL / CLASSIFIER_FILE, folder / CLASSIFIER_FILE)
    else:
        (folder / CLASSIFIER_FILE).write_bytes(payload)
    (folder / CLASSIFIER_CARD).write_text(json.dumps(card))
    return folder


def _load(swap: ClassifierSwap, folder: Path) -> list[dict]:
    with capture_logs() as logs:
        thread = swap.load(folder)
        assert thread is not None
        thread.join(30)
    return logs


@pytest.mark.parametrize("payload, reason", [
    (b"this is not a flatbuffer", "not a TFLite model"),
    (None, "changes threshold"),  # the shipped file, but its card moved the operating point
])
def test_what_does_not_load_keeps_the_running_classifier(tmp_path, card, payload, reason):
    swap = ClassifierSwap(OTHER, None, card)
    changed = {**card, "threshold": 0.5} if payload is None else card
    logs = _load(swap, _folder(tmp_path, changed, payload))
    assert swap.active.generation == 0 and swap.active.version == OTHER and swap.failures == 1
    failed = [e for e in logs if e["event"] == "classifier_swap_failed"]
    assert len(failed) == 1 and reason in failed[0]["reason"] and failed[0]["kept_version"] == OTHER


def test_an_imagenet_model_is_not_a_raccoon_classifier(tmp_path, card, shared_dir):
    imagenet = shared_dir / "pretrained" / "imagenet" / "mobilenet_v1_0.75_192_quant.tflite"
    swap = ClassifierSwap(OTHER, None, card)
    logs = _load(swap, _folder(tmp_path, card, imagenet.read_bytes()))
    assert swap.active.generation == 0
    assert "expected one output [N, 1]" in [e for e in logs if e["event"] == "classifier_swap_failed"][0]["reason"]


def test_the_running_file_again_is_nothing_to_do(tmp_path, card):
    swap = ClassifierSwap(model_version(MODEL / CLASSIFIER_FILE), None, card)
    assert swap.load(_folder(tmp_path, card)) is None and swap.active.generation == 0


def test_check_card_names_what_a_swap_may_not_change(card):
    assert check_card(card, {**card, "artifacts": {}, "retrain": {"steps": 3}}) == []
    assert check_card(card, {**card, "margin": 0.3, "views": 3}) == ["margin", "views"]


def test_workers_take_the_new_classifier_between_frames(tmp_path, card, raccoon_images):
    folder = _folder(tmp_path, card)
    swap = ClassifierSwap(OTHER, None, card)
    frames, results = FrameQueue(8), queue.Queue()
    stop = threading.Event()
    cfg = DetectorConfig(model=MODEL, backend="tflite", num_threads=1)
    worker = DetectorWorker(0, lambda: create_recognizer(cfg), frames, results, stop, swap=swap)
    worker.start()
    import cv2

    image = cv2.imread(str(raccoon_images[0]))

    def one(seq: int) -> FrameResult:
        frames.put(Frame("cam", seq, time.time(), time.monotonic(), image))
        return results.get(timeout=30)

    try:
        first = one(0)
        assert first.model_version == OTHER
        own = worker.detector.classifier
        _load(swap, folder)
        assert swap.active.generation == 1 and swap.active.version == model_version(folder / CLASSIFIER_FILE)
        second = one(1)
        assert second.model_version == swap.active.version
        assert worker.detector.classifier is swap.active.classifier is not own
        # the same file in another interpreter: the same scores, so nothing else changed
        assert [round(d.score, 3) for d in second.detections] == [round(d.score, 3) for d in first.detections]
    finally:
        stop.set()
        worker.join(5)
