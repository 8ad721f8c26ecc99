"""Detector backends on real parts: the stock COCO TFLite SSD on real raccoon photos, and TF2
SavedModels with the TF OD API signature (a small one built here; the exported raccoon model when
train/ has produced it)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from raccoon_watch.config import REPO_ROOT, DetectorConfig
from raccoon_watch.recognition.detectors import ModelError, create_detector, factory, find_model, resolve_default_model
from raccoon_watch.recognition.detectors.base import detections_from_yxyx
from raccoon_watch.recognition.detectors.tflite import TFLiteDetector, map_outputs
from raccoon_watch.recognition.labels import load_labels
from raccoon_watch.types import Box

# Test-split photos, one raccoon each, checked by hand: the stock model finds them as cat/dog/bear.
# Mixed shapes (wide 1280x720, portrait 204x247, small 275x183) so a swapped x/y would show.
PHOTOS = ["raccoon-57.jpg", "raccoon-146.jpg", "raccoon-197.jpg", "raccoon-140.jpg", "raccoon-126.jpg"]
STOCK_RACCOON_LIKE = {"cat", "dog", "bear"}


def iou(a: Box, b: Box) -> float:
    """IoU of two (xmin, ymin, xmax, ymax) boxes in the same units."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="session")
def ground_truth(shared_dir: Path) -> dict[str, Box]:
    """filename -> normalised (xmin, ymin, xmax, ymax) from the dataset's test_labels.csv (pixels)."""
    boxes: dict[str, Box] = {}
    with open(shared_dir / "data" / "raccoon_dataset" / "test_labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            w, h = float(row["width"]), float(row["height"])
            boxes[row["filename"]] = (int(row["xmin"]) / w, int(row["ymin"]) / h, int(row["xmax"]) / w, int(row["ymax"]) / h)
    return boxes


@pytest.fixture(scope="module")
def coco(coco_model: Path) -> TFLiteDetector:
    return TFLiteDetector(coco_model, load_labels(coco_model.parent / "coco_labelmap.txt"), num_threads=2)


def read(shared_dir: Path, name: str) -> np.ndarray:
    image = cv2.imread(str(shared_dir / "data" / "raccoon_dataset" / "images" / name))
    assert image is not None, name
    return image


# --- the one box-order conversion ----------------------------------------------------------------


def test_detections_from_yxyx_converts_order_clips_filters_and_sorts() -> None:
    boxes = np.array([[0.1, 0.2, 0.5, 0.9], [0.0, 0.0, 1.2, 0.4], [0.3, 0.3, 0.3, 0.6], [0.2, 0.2, 0.4, 0.4]])
    dets = detections_from_yxyx(boxes, np.array([1, 2, 1, 99]), np.array([0.4, 0.9, 0.8, 0.05]), ("???", "a", "b"), 0.1)
    assert [(d.label, d.score) for d in dets] == [("b", 0.9), ("a", 0.4)]  # empty box and low score dropped
    assert dets[1].box == pytest.approx((0.2, 0.1, 0.9, 0.5))  # (ymin, xmin, ymax, xmax) -> (xmin, ymin, xmax, ymax)
    assert dets[0].box == pytest.approx((0.0, 0.0, 0.4, 1.0))  # clipped to the frame


# --- TFLite: the stock COCO model on real photos ------------------------------------------------


def test_stock_tflite_interface_and_xnnpack(coco: TFLiteDetector) -> None:
    assert coco.input_size == (300, 300) and coco.max_batch == 1 and coco.name == "tflite"
    assert len(coco.labels) == 91
    assert coco._outputs.boxes != coco._outputs.classes != coco._outputs.scores  # all four told apart


@pytest.mark.parametrize("name", PHOTOS)
def test_stock_tflite_finds_raccoon_as_cat_dog_or_bear(coco: TFLiteDetector, shared_dir: Path,
                                                       ground_truth: dict[str, Box], name: str) -> None:
    [dets] = coco.detect([read(shared_dir, name)])
    assert dets == sorted(dets, key=lambda d: d.score, reverse=True)
    top = dets[0]
    assert top.label in STOCK_RACCOON_LIKE and top.score > 0.5
    assert iou(top.box, ground_truth[name]) > 0.5  # also fails if x and y were swapped on these shapes


@pytest.mark.parametrize("name", ["raccoon-179.jpg", "raccoon-134.jpg"])  # raccoon well off-centre
def test_box_order_follows_a_horizontal_flip(coco: TFLiteDetector, shared_dir: Path, name: str) -> None:
    image = read(shared_dir, name)
    [straight], [flipped] = coco.detect([image]), coco.detect([cv2.flip(image, 1)])
    a, b = straight[0].box, flipped[0].box
    mirrored = (1 - b[2], b[1], 1 - b[0], b[3])  # x flips, y stays
    assert iou(a, mirrored) > 0.8 and iou(a, b) < 0.3


def test_tflite_min_score_and_batch_of_several(coco_model: Path, shared_dir: Path) -> None:
    strict = TFLiteDetector(coco_model, load_labels(coco_model.parent / "coco_labelmap.txt"), min_score=0.7)
    images = [read(shared_dir, n) for n in PHOTOS]
    results = strict.detect(images)
    assert len(results) == len(images)
    assert all(d.score >= 0.7 for dets in results for d in dets)
    assert any(dets for dets in results) and not all(len(dets) == 10 for dets in results)


def test_tflite_threads_share_one_detector(coco: TFLiteDetector, shared_dir: Path) -> None:
    images = [read(shared_dir, n) for n in PHOTOS]
    expected = coco.detect(images)
    got: dict[int, list] = {}

    def work(i: int) -> None:
        got[i] = coco.detect(images)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert got[0] == expected and got[1] == expected


@pytest.mark.parametrize("layout", ["tflite_file", "dir_with_savedmodel_too"])
def test_tflite_path_does_not_import_tensorflow(coco_model: Path, tmp_path: Path, layout: str) -> None:
    model = coco_model
    if layout == "dir_with_savedmodel_too":  # auto on a CPU box: TFLite, without importing TF to look for a GPU
        model = make_model_dir(tmp_path, coco_model, None)
        (model / "saved_model").mkdir()
        (model / "saved_model" / "saved_model.pb").write_bytes(b"never loaded")
        if any(p.exists() for p in factory.GPU_DRIVER_PATHS):
            pytest.skip("a GPU driver is present: auto may rightly pick TensorFlow")
    code = (
        "import sys; from pathlib import Path; import numpy as np\n"
        "from raccoon_watch.config import DetectorConfig\n"
        "from raccoon_watch.recognition.detectors import create_detector\n"
        f"d = create_detector(DetectorConfig(backend='auto'), Path({str(model)!r}))\n"
        "d.detect([np.zeros((240, 320, 3), np.uint8)])\n"
        "print(d.name, 'tensorflow' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert out.stdout.strip().splitlines()[-1] == "tflite False", out.stderr[-2000:]


PP = "TFLite_Detection_PostProcess"
OUTPUT_TABLE = [
    # (names in output order, shapes, which output really holds classes, which scores)
    ([PP, f"{PP}:1", f"{PP}:2", f"{PP}:3"], [[1, 10, 4], [1, 10], [1, 10], [1]], f"{PP}:1", f"{PP}:2"),  # stock file
    ([PP, f"{PP}:1", f"{PP}:2", f"{PP}:3"], [[1, 10, 4], [1, 10], [1, 10], [1]], f"{PP}:2", f"{PP}:1"),  # TF2 converter: same names, swapped
    (["StatefulPartitionedCall:1", "StatefulPartitionedCall:3", "StatefulPartitionedCall:0", "StatefulPartitionedCall:2"],
     [[1, 25], [1, 25, 4], [1], [1, 25]], "StatefulPartitionedCall:2", "StatefulPartitionedCall:1"),
]


def details_for(names: list[str], shapes: list[list[int]]) -> list[dict]:
    return [{"name": n, "index": i, "shape": np.array(s)} for i, (n, s) in enumerate(zip(names, shapes))]


@pytest.mark.parametrize(("names", "shapes", "classes", "scores"), OUTPUT_TABLE)
def test_map_outputs_by_shape_and_values(names: list[str], shapes: list[list[int]], classes: str, scores: str) -> None:
    classes_i, scores_i = names.index(classes), names.index(scores)
    n = shapes[classes_i][1]

    def probe() -> list[dict[int, np.ndarray]]:  # single-class model: classes all 0; first frame finds nothing
        return [{classes_i: np.zeros((1, n)), scores_i: np.zeros((1, n))},
                {classes_i: np.zeros((1, n)), scores_i: np.linspace(0.46, 0.0, n)[None]}]

    mapped, settled = map_outputs(details_for(names, shapes), probe, Path("m.tflite"))
    assert settled and (mapped.classes, mapped.scores) == (classes_i, scores_i)
    assert mapped.boxes == next(i for i, s in enumerate(shapes) if len(s) == 3)
    assert mapped.count == next(i for i, s in enumerate(shapes) if s == [1])


def test_map_outputs_falls_back_to_names_until_values_tell() -> None:
    names, shapes = OUTPUT_TABLE[0][0], OUTPUT_TABLE[0][1]
    nothing = lambda: [{1: np.zeros((1, 10)), 2: np.zeros((1, 10))}]  # noqa: E731 - no detections at all
    mapped, settled = map_outputs(details_for(names, shapes), nothing, Path("m.tflite"))
    assert not settled and (mapped.classes, mapped.scores) == (1, 2)
    with pytest.raises(ModelError, match="expected the 4 post-processed SSD outputs") as info:
        map_outputs(details_for(names[:3], shapes[:3]), nothing, Path("classifier.tflite"))
    assert "classifier.tflite" in str(info.value)


# --- bad models ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("random.tflite", bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)), "not a TFLite model"),
        ("notes.tflite", b"this is a text file, not a model\n" * 20, "not a TFLite model"),
        ("empty.tflite", b"", "not a TFLite model"),
        ("truncated.tflite", None, "not a usable TFLite model"),
    ],
)
def test_corrupt_tflite_names_path_and_problem(tmp_path: Path, coco_model: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if content is not None else coco_model.read_bytes()[:20000])
    with pytest.raises(ModelError, match=message) as info:
        TFLiteDetector(path, ("???", "raccoon"))
    assert str(path) in str(info.value)


def test_missing_and_empty_model_paths(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model path not found") as info:
        create_detector(DetectorConfig(), tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)
    with pytest.raises(ModelError, match="no model found"):
        create_detector(DetectorConfig(), tmp_path)
    with pytest.raises(ModelError, match="not found"):
        TFLiteDetector(tmp_path / "nope.tflite", ("???",))


# --- factory --------------------------------------------------------------------------------------


def make_model_dir(tmp_path: Path, coco_model: Path, card: dict | None) -> Path:
    """A models/<name>/ layout around the stock model (symlinked, never copied)."""
    d = tmp_path / "stock"
    d.mkdir()
    (d / "model.tflite").symlink_to(coco_model)
    (d / "labels.txt").symlink_to(coco_model.parent / "coco_labelmap.txt")
    if card is not None:
        (d / "model_card.json").write_text(json.dumps(card))
    return d


def test_factory_model_dir_with_card(tmp_path: Path, coco_model: Path, shared_dir: Path) -> None:
    d = make_model_dir(tmp_path, coco_model, {"labels": ["ignored"], "input_size": [300, 300], "threshold": 0.62})
    det = create_detector(DetectorConfig(backend="auto", num_threads=1), d)
    assert det.name == "tflite" and det.threshold == 0.62 and det.labels[18] == "dog"  # labels.txt wins
    assert det.detect([read(shared_dir, "raccoon-57.jpg")])[0][0].label == "bear"


def test_factory_card_labels_and_explicit_labelmap(tmp_path: Path, coco_model: Path) -> None:
    d = tmp_path / "m"
    d.mkdir()
    (d / "detect.tflite").symlink_to(coco_model)
    (d / "model_card.json").write_text(json.dumps({"labels": ["raccoon"]}))
    assert create_detector(DetectorConfig(), d).labels == ("???", "raccoon")
    pbtxt = tmp_path / "map.pbtxt"
    pbtxt.write_text("item { id: 1 name: 'raccoon' }\nitem { id: 2 name: 'cat' }\n")
    assert create_detector(DetectorConfig(labelmap=pbtxt), d).labels == ("???", "raccoon", "cat")
    (d / "model_card.json").write_text("{not json")
    with pytest.raises(ModelError, match="model_card.json: unreadable"):
        create_detector(DetectorConfig(), d)


def test_factory_stock_file_finds_labelmap_beside_it(coco_model: Path) -> None:
    files = find_model(coco_model)
    assert files.tflite == coco_model and files.labelmap == coco_model.parent / "coco_labelmap.txt"
    with pytest.raises(ModelError, match="backend 'tensorflow' needs a SavedModel"):
        create_detector(DetectorConfig(backend="tensorflow"), coco_model)


def test_resolve_default_model(tmp_path: Path, coco_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factory, "DEFAULT_MODEL_DIR", tmp_path / "empty")
    monkeypatch.setenv("RACCOON_SHARED", str(coco_model.parent.parent))
    assert resolve_default_model() == coco_model  # no bundled model yet: the stock one, with a warning
    bundled = make_model_dir(tmp_path, coco_model, None)
    monkeypatch.setattr(factory, "DEFAULT_MODEL_DIR", bundled)
    assert resolve_default_model() == bundled
    monkeypatch.setattr(factory, "DEFAULT_MODEL_DIR", tmp_path / "empty")
    monkeypatch.setenv("RACCOON_SHARED", str(tmp_path / "nowhere"))
    with pytest.raises(ModelError, match="no default model"):
        resolve_default_model()


# --- TensorFlow backend ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tf():
    return pytest.importorskip("tensorflow")


def build_od_api_stub(tf, path: Path, batch: int | None, signature: str = "serving_default") -> Path:
    """A SavedModel with the exact TF OD API serving signature and input-dependent outputs.

    Per image: detection 1 = class 1, box (ymin, xmin, ymax, xmax) = (0.1, 0.2, 0.5, 0.9), score =
    mean of the R channel / 255 (so a BGR/RGB mix-up shows); detection 2 = class 2, box (0.6, 0.0, 1.0,
    0.3), score = mean of G / 510. ``calls`` counts invocations.
    """

    class Stub(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = tf.Variable(0, dtype=tf.int64)

        @tf.function(input_signature=[tf.TensorSpec([batch, None, None, 3], tf.uint8)])
        def serve(self, input_tensor):
            self.calls.assign_add(1)
            n = tf.shape(input_tensor)[0]
            means = tf.reduce_mean(tf.cast(input_tensor, tf.float32), axis=[1, 2]) / 255.0  # (B, 3) RGB
            scores = tf.stack([means[:, 0], means[:, 1] / 2.0], axis=1)  # (B, 2)
            boxes = tf.tile(tf.constant([[[0.1, 0.2, 0.5, 0.9], [0.6, 0.0, 1.0, 0.3]]]), [n, 1, 1])  # (B, 2, 4)
            return {
                "detection_boxes": boxes,
                "detection_scores": scores,
                "detection_classes": tf.tile(tf.constant([[1.0, 2.0]]), [n, 1]),
                "num_detections": tf.fill([n], 2.0),
            }

    stub = Stub()
    tf.saved_model.save(stub, str(path), signatures={signature: stub.serve})
    return path


@pytest.fixture(scope="session")
def stub_models(tf, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("savedmodels")
    models = {
        "any_batch": build_od_api_stub(tf, root / "any_batch" / "saved_model", None),
        "batch1": build_od_api_stub(tf, root / "batch1", 1),
        "no_serving": build_od_api_stub(tf, root / "no_serving", None, signature="other"),
    }
    (root / "any_batch" / "labelmap.pbtxt").write_text("item { id: 1 name: 'raccoon' }\nitem { id: 2 name: 'cat' }\n")
    (root / "any_batch" / "model_card.json").write_text(json.dumps({"threshold": 0.7, "input_size": [64, 96]}))
    (root / "batch1" / "labels.txt").write_text("raccoon\ncat\n")
    return models


def bgr(b: int, g: int, r: int, h: int = 120, w: int = 160) -> np.ndarray:
    return np.full((h, w, 3), (b, g, r), np.uint8)


def test_tensorflow_backend_wiring(stub_models: dict[str, Path]) -> None:
    det = create_detector(DetectorConfig(backend="tensorflow", batch_size=4), stub_models["any_batch"].parent)
    assert (det.name, det.max_batch, det.input_size, det.threshold) == ("tensorflow", 4, (64, 96), 0.7)
    [dets] = det.detect([bgr(0, 102, 255)])  # red in BGR -> R mean 1.0; G 0.4 -> 0.2
    assert [(d.label, round(d.score, 3)) for d in dets] == [("raccoon", 1.0), ("cat", 0.2)]
    assert dets[0].box == pytest.approx((0.2, 0.1, 0.9, 0.5))  # (xmin, ymin, xmax, ymax)
    assert det.detect([bgr(255, 0, 0)]) == [[]]  # pure blue: both scores 0 < min_score


def test_tensorflow_backend_batches_in_one_call(stub_models: dict[str, Path]) -> None:
    det = create_detector(DetectorConfig(backend="tensorflow"), stub_models["any_batch"].parent)
    before = int(det._model.calls.numpy())
    images = [bgr(0, 0, 255, 480, 640), bgr(0, 0, 128, 200, 300), bgr(0, 0, 51, 90, 90)]
    results = det.detect(images)
    assert int(det._model.calls.numpy()) - before == 1
    assert [round(r[0].score, 2) for r in results] == [1.0, 0.5, 0.2]  # per image, in order


def test_tensorflow_backend_batch1_loops(stub_models: dict[str, Path]) -> None:
    det = create_detector(DetectorConfig(backend="tensorflow", batch_size=8), stub_models["batch1"])
    assert det.max_batch == 1 and det.labels == ("???", "raccoon", "cat") and det.threshold is None
    before = int(det._model.calls.numpy())
    results = det.detect([bgr(0, 0, 255), bgr(0, 0, 128, 50, 70)])
    assert int(det._model.calls.numpy()) - before == 2
    assert [round(r[0].score, 2) for r in results] == [1.0, 0.5]


@pytest.mark.gpu
def test_tensorflow_backend_batch16_on_gpu(tf, stub_models: dict[str, Path]) -> None:
    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("no GPU visible to TensorFlow")
    det = create_detector(DetectorConfig(backend="tensorflow", batch_size=16), stub_models["any_batch"].parent)
    assert tf.config.experimental.get_memory_growth(tf.config.list_physical_devices("GPU")[0])
    results = det.detect([bgr(0, 0, 255 - 10 * i, 720, 1280) for i in range(16)])
    assert [round(r[0].score, 3) for r in results] == [round((255 - 10 * i) / 255, 3) for i in range(16)]


def test_auto_backend_prefers_tflite_without_gpu(tf, stub_models: dict[str, Path], coco_model: Path) -> None:
    d = stub_models["any_batch"].parent
    card = (d / "model_card.json").read_text()
    (d / "model.tflite").symlink_to(coco_model)
    (d / "model_card.json").write_text(json.dumps({"threshold": 0.7}))  # its 64x96 is the stub's, not COCO's 300x300
    try:
        expected = "tensorflow" if tf.config.list_physical_devices("GPU") else "tflite"
        assert create_detector(DetectorConfig(backend="auto", labelmap=coco_model.parent / "coco_labelmap.txt"), d).name == expected
    finally:
        (d / "model.tflite").unlink()
        (d / "model_card.json").write_text(card)
    assert create_detector(DetectorConfig(backend="auto"), d).name == "tensorflow"  # only a SavedModel


def test_bad_savedmodels(stub_models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no 'serving_default' signature") as info:
        create_detector(DetectorConfig(backend="tensorflow", labelmap=stub_models["batch1"] / "labels.txt"),
                        stub_models["no_serving"])
    assert str(stub_models["no_serving"]) in str(info.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"\x00garbage" * 100)
    (broken / "labels.txt").write_text("raccoon\n")
    with pytest.raises(ModelError, match="cannot load the SavedModel") as info:
        create_detector(DetectorConfig(backend="tensorflow"), broken)
    assert str(broken) in str(info.value)


def test_tflite_without_postprocessed_outputs(tf, tmp_path: Path) -> None:
    @tf.function(input_signature=[tf.TensorSpec([1, 32, 32, 3], tf.float32)])
    def classifier(x):
        return tf.reduce_mean(x, axis=[1, 2])  # (1, 3): not an SSD

    path = tmp_path / "classifier.tflite"
    converter = tf.lite.TFLiteConverter.from_concrete_functions([classifier.get_concrete_function()], classifier)
    path.write_bytes(converter.convert())
    with pytest.raises(ModelError, match="expected the 4 post-processed SSD outputs") as info:
        TFLiteDetector(path, ("???", "raccoon"))
    assert str(path) in str(info.value)


BUNDLED = REPO_ROOT / "models" / "raccoon"
BUNDLED_FILES = {"tensorflow": BUNDLED / "saved_model" / "saved_model.pb", "tflite": BUNDLED / "model.tflite"}


@pytest.mark.parametrize("backend", ["tflite", "tensorflow"])
def test_bundled_raccoon_model(backend: str, tf, shared_dir: Path, ground_truth: dict[str, Box]) -> None:
    """train/'s export in models/raccoon: both backends find the raccoons, and agree with each other."""
    if not BUNDLED_FILES[backend].is_file():
        pytest.skip(f"{BUNDLED_FILES[backend]} is not in the repository (the 13 MB SavedModel is kept out of "
                    "git; `python -m train export` writes it; tests/train/test_export.py checks that export)")
    det = create_detector(DetectorConfig(backend=backend), BUNDLED)
    assert det.labels[1] == "raccoon"
    assert det.threshold is not None and 0.0 < det.threshold < 1.0  # the card's deployed threshold is read
    # Finding and placing the raccoons is checked at 0.5: the card's threshold is a policy chosen on
    # validation for <= 5 % false alerts on cat/dog photos, where the model finds about half of the
    # raccoons; that trade-off is checked by the next test against the card, not per backend.
    threshold = 0.5
    results = det.detect([read(shared_dir, n) for n in PHOTOS])
    hits = sum(bool(r) and r[0].label == "raccoon" and r[0].score >= threshold and iou(r[0].box, ground_truth[n]) > 0.5
               for n, r in zip(PHOTOS, results))
    assert hits >= 4
    if all(f.is_file() for f in BUNDLED_FILES.values()) and backend == "tensorflow":
        lite = create_detector(DetectorConfig(backend="tflite"), BUNDLED).detect([read(shared_dir, n) for n in PHOTOS])
        for a, b in zip(results, lite):  # int8 TFLite vs float SavedModel: same top box, close score
            assert iou(a[0].box, b[0].box) > 0.8 and a[0].score == pytest.approx(b[0].score, abs=0.1)


def test_bundled_model_keeps_its_card_promise_on_held_out_photos(shared_dir: Path) -> None:
    """The daemon's own detector code, at the card's deployed threshold, on the photos train/ held
    out: at most 1 raccoon-free photo in 20 alerts (the false-alert target), and the share of test
    raccoon photos that alert is the card's image recall (int8 TFLite vs the same file in train's
    evaluator: same numbers, within one photo)."""
    from train.splits import HOLDOUT_MODULO, name_hash

    det = create_detector(DetectorConfig(backend="tflite"), BUNDLED)
    card = json.loads((BUNDLED / "model_card.json").read_text())
    threshold = card["deployed_threshold"]
    assert det.threshold == pytest.approx(threshold)
    negatives = sorted(p for p in (shared_dir / "data" / "negatives").glob("*.jpg") if name_hash(p.name) % HOLDOUT_MODULO == 0)
    alerting = [p.name for p in negatives
                if any(d.label == "raccoon" and d.score >= threshold for d in det.detect([cv2.imread(str(p))])[0])]
    assert len(negatives) == 47 and len(alerting) <= len(negatives) // 20, alerting
    photos = sorted({row["filename"] for row in csv.DictReader(open(shared_dir / "data" / "raccoon_dataset" / "test_labels.csv"))})
    found = sum(any(d.label == "raccoon" and d.score >= threshold for d in det.detect([read(shared_dir, n)])[0]) for n in photos)
    # metrics.test is the whole folder as the daemon runs it (both stages); the detector alone is
    # recorded beside it
    card_recall = card["metrics"]["test_detector_alone"]["at_threshold"]["image_recall"]
    assert abs(found / len(photos) - card_recall) <= 1.5 / len(photos), (found, card_recall)
