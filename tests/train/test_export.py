"""train.export: SavedModel / TFLite signatures and agreement on real photos, label map, model card,
promotion gate. One export (session-scoped) of MODEL's SSD with the stock COCO weights and a
1-class raccoon head started from the cat/dog/bear columns, so boxes on raccoon photos are real."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from raccoon_watch.recognition.labels import load_labels
from train import export, model_card

pytestmark = pytest.mark.shared

PHOTO = "raccoon-1.jpg"
PHOTO_BOX = (88 / 417, 81 / 650, 408 / 417, 522 / 650)  # ground truth [ymin, xmin, ymax, xmax]
NUM_CALIBRATION = 8  # enough for a working int8 model; the real export uses 100


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def iou(a, b) -> float:
    """IoU of two [ymin, xmin, ymax, xmax] boxes."""
    h = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    w = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = h * w
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="session")
def raccoon_model(coco_model: Path):
    from train.ssd.head_init import HEAD_INITS, class_head_init
    from train.ssd.model import build_ssd
    from train.ssd.tflite_import import import_tflite_weights

    model = build_ssd(num_classes=1)
    import_tflite_weights(model, coco_model, class_head_init(HEAD_INITS["cat_dog_bear_mean"]))
    return model


@pytest.fixture(scope="session")
def exported(tmp_path_factory, raccoon_model, raccoon_images, coco_model) -> Path:
    from train.ssd.anchors import generate_anchors

    out = tmp_path_factory.mktemp("export") / "raccoon"
    export.export_model(
        raccoon_model, generate_anchors(), ["raccoon"], out,
        [read_rgb(p) for p in raccoon_images[:NUM_CALIBRATION]],
        card={"metrics": {"test": {"ap50": 0.94}}, "deployed_threshold": 0.5,
              "training": {"command": "python -m train train --config x.yaml", "config": {"steps": 1}},
              "dataset_files": raccoon_images[:NUM_CALIBRATION]},
        reference_tflite=coco_model, latency_runs=5)
    return out


@pytest.fixture(scope="session")
def photo(shared_dir: Path) -> np.ndarray:
    return read_rgb(shared_dir / "data" / "raccoon_dataset" / "images" / PHOTO)


@pytest.fixture(scope="session")
def serving(exported: Path):
    import tensorflow as tf

    return tf.saved_model.load(str(exported / export.SAVED_MODEL_DIR)).signatures["serving_default"]


@pytest.fixture(scope="session")
def saved_model_result(serving, photo) -> dict:
    return {k: v.numpy() for k, v in serving(input_tensor=photo[None]).items()}


def run_tflite(path: Path, image_rgb: np.ndarray):
    """-> (interpreter, [boxes, classes, scores, count]) on a 300x300 resize of the image."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=2)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    frame = cv2.resize(image_rgb, (300, 300), interpolation=cv2.INTER_LINEAR)[None]
    if detail["dtype"] == np.float32:
        frame = (frame.astype(np.float32) - 128.0) / 128.0
    interpreter.set_tensor(detail["index"], frame)
    interpreter.invoke()
    return interpreter, [interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()]


# ---------------------------------------------------------------- SavedModel

def test_saved_model_signature(serving):
    (_, inputs) = serving.structured_input_signature
    assert list(inputs) == ["input_tensor"]
    assert inputs["input_tensor"].dtype.name == "uint8"
    assert inputs["input_tensor"].shape.as_list() == [None, None, None, 3]
    outputs = serving.structured_outputs
    assert set(outputs) == set(export.SERVING_OUTPUTS)
    assert all(spec.dtype.name == "float32" for spec in outputs.values())
    assert outputs["detection_boxes"].shape.as_list() == [None, export.MAX_DETECTIONS, 4]
    assert outputs["num_detections"].shape.as_list() == [None]


def test_saved_model_finds_the_raccoon_ymin_xmin_first(saved_model_result):
    r = saved_model_result
    n = int(r["num_detections"][0])
    assert r["detection_boxes"].shape == (1, export.MAX_DETECTIONS, 4)
    assert n >= 1
    assert set(r["detection_classes"][0, :n].tolist()) == {1.0}  # 1-based: 1 = raccoon
    assert np.all(r["detection_classes"][0, n:] == 0) and np.all(r["detection_scores"][0, n:] == 0)
    assert np.all(np.diff(r["detection_scores"][0, :n]) <= 0)  # best first
    boxes = r["detection_boxes"][0, :n]
    assert np.all((boxes >= 0) & (boxes <= 1))
    assert np.all(boxes[:, 0] < boxes[:, 2]) and np.all(boxes[:, 1] < boxes[:, 3])
    assert iou(boxes[0], PHOTO_BOX) > 0.7  # [ymin, xmin, ymax, xmax], not [xmin, ymin, ...]


def test_saved_model_batches_frames_and_mirrors_boxes(serving, photo, saved_model_result):
    flipped = np.ascontiguousarray(photo[:, ::-1])
    r = {k: v.numpy() for k, v in serving(input_tensor=np.stack([photo, flipped])).items()}
    assert r["detection_boxes"].shape == (2, export.MAX_DETECTIONS, 4)
    assert r["num_detections"].shape == (2,)
    np.testing.assert_allclose(r["detection_boxes"][0], saved_model_result["detection_boxes"][0],
                               atol=1e-5)
    ymin, xmin, ymax, xmax = r["detection_boxes"][0, 0]
    assert iou(r["detection_boxes"][1, 0], (ymin, 1 - xmax, ymax, 1 - xmin)) > 0.8


# ---------------------------------------------------------------- TFLite

@pytest.mark.parametrize("name, input_dtype", [
    (export.TFLITE_INT8, np.uint8),
    (export.TFLITE_FLOAT, np.float32),
])
def test_tflite_signature_like_stock(exported, photo, name, input_dtype):
    interpreter, (boxes, classes, scores, count) = run_tflite(exported / name, photo)
    (detail,) = interpreter.get_input_details()
    assert detail["dtype"] == input_dtype
    assert detail["shape"].tolist() == [1, 300, 300, 3]
    if input_dtype == np.uint8:
        scale, zero_point = detail["quantization"]
        assert scale == pytest.approx(1 / 128) and zero_point == 128  # (u8 - 128) / 128
    outputs = interpreter.get_output_details()
    assert [o["name"] for o in outputs] == [
        "TFLite_Detection_PostProcess", "TFLite_Detection_PostProcess:1",
        "TFLite_Detection_PostProcess:2", "TFLite_Detection_PostProcess:3"]
    assert all(o["dtype"] == np.float32 for o in outputs)
    assert boxes.shape == (1, export.MAX_DETECTIONS, 4)
    assert classes.shape == scores.shape == (1, export.MAX_DETECTIONS)
    assert count.shape == (1,)
    assert export.POSTPROCESS_OP in {op["op_name"] for op in interpreter._get_ops_details()}
    n = int(count[0])
    assert n >= 1 and set(classes[0, :n].tolist()) == {0.0}  # 0-based: 0 = raccoon


@pytest.mark.parametrize("name, score_tolerance", [
    (export.TFLITE_FLOAT, 0.01),
    (export.TFLITE_INT8, 0.03),
])
def test_tflite_agrees_with_saved_model(exported, photo, saved_model_result, name, score_tolerance):
    _, (boxes, classes, scores, count) = run_tflite(exported / name, photo)
    sm = saved_model_result
    np.testing.assert_allclose(np.clip(boxes[0, 0], 0, 1), sm["detection_boxes"][0, 0], atol=0.02)
    assert scores[0, 0] == pytest.approx(sm["detection_scores"][0, 0], abs=score_tolerance)
    assert classes[0, 0] + 1 == sm["detection_classes"][0, 0]
    assert iou(np.clip(boxes[0, 0], 0, 1), PHOTO_BOX) > 0.7


# ---------------------------------------------------------------- label map, model card

def test_label_map_ids_from_one(exported):
    assert load_labels(exported / export.LABEL_MAP) == ("???", "raccoon")


def test_model_card_fields(exported, raccoon_images):
    card = model_card.read_card(exported)
    assert list(card) == list(model_card.CARD_FIELDS)
    assert card["labels"] == ["raccoon"] and card["input_size"] == [300, 300]
    assert model_card.ap50_on_test(card) == 0.94 and card["deployed_threshold"] == 0.5
    assert card["training"]["command"].startswith("python -m train train")
    assert card["dataset"] == model_card.dataset_sha256(raccoon_images[:NUM_CALIBRATION])
    assert len(card["git_revision"].split("-")[0]) == 40 or card["git_revision"] == "unknown"
    for name in (export.TFLITE_INT8, export.TFLITE_FLOAT, export.LABEL_MAP):
        assert card["artifacts"][name]["bytes"] == (exported / name).stat().st_size
    assert card["artifacts"][export.SAVED_MODEL_DIR]["bytes"] > 1_000_000
    latency = card["latency_ms"]
    assert latency[export.TFLITE_INT8]["threads"] == 2 and latency[export.TFLITE_INT8]["median"] > 0
    assert latency["reference"] in latency and latency["int8_vs_reference"] > 0


def test_dataset_hash_covers_names_and_contents(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"one")
    (tmp_path / "b.jpg").write_bytes(b"two")
    first = model_card.dataset_sha256([tmp_path / "b.jpg", tmp_path / "a.jpg"])
    assert first == model_card.dataset_sha256([tmp_path / "a.jpg", tmp_path / "b.jpg"])
    assert first["files"] == 2
    (tmp_path / "b.jpg").write_bytes(b"changed")
    changed = model_card.dataset_sha256([tmp_path / "a.jpg", tmp_path / "b.jpg"])
    assert changed != first
    (tmp_path / "b.jpg").rename(tmp_path / "c.jpg")
    assert model_card.dataset_sha256([tmp_path / "a.jpg", tmp_path / "c.jpg"]) != changed


def test_representative_images_must_be_rgb_uint8():
    generate = export.representative_dataset([np.zeros((10, 10), np.uint8)])
    with pytest.raises(ValueError, match="RGB uint8"):
        list(generate())


# ---------------------------------------------------------------- promotion gate

def fake_model(path: Path, ap50: float | None, marker: str) -> Path:
    path.mkdir(parents=True)
    metrics = {} if ap50 is None else {"test": {"ap50": ap50}}
    (path / model_card.CARD_NAME).write_text(json.dumps({"metrics": metrics}))
    (path / "model.tflite").write_text(marker)
    return path


@pytest.mark.parametrize("target_ap, candidate_ap, force, promoted", [
    (0.95, 0.90, False, False),  # worse candidate: refused
    (0.95, 0.90, True, True),  # ... unless forced
    (0.90, 0.95, False, True),  # better
    (0.95, 0.95, False, True),  # as good
    (0.95, None, False, False),  # candidate without a test AP cannot beat a measured model
    (None, 0.90, False, True),  # target without a test AP: nothing to protect
    ("absent", 0.90, False, True),  # first model
])
def test_promotion_gate(tmp_path, target_ap, candidate_ap, force, promoted):
    candidate = fake_model(tmp_path / "candidate", candidate_ap, "new")
    target = tmp_path / "models" / "raccoon"
    if target_ap != "absent":
        fake_model(target, target_ap, "old")
    if promoted:
        export.promote(candidate, target, force=force)
    else:
        with pytest.raises(export.PromotionRefused, match="--force"):
            export.promote(candidate, target, force=force)
    expected = "new" if promoted else "old"
    if target.exists():
        assert (target / "model.tflite").read_text() == expected
    assert sorted(p.name for p in target.parent.iterdir()) == ["raccoon"]  # no temp dirs left


def test_cli_refuses_worse_model_with_exit_code(tmp_path, monkeypatch):
    """main() mounts under `python -m train export`; export itself is stubbed (tested above)."""
    target = fake_model(tmp_path / "models" / "raccoon", 0.95, "old")
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "test-only.jpg"):
        cv2.imwrite(str(images / name), np.zeros((20, 30, 3), np.uint8))
    train_csv = tmp_path / "train_labels.csv"
    train_csv.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\na.jpg,30,20,raccoon,1,1,9,9\n")
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"ap50": {"raccoon": 0.9}, "map50": 0.9, "coco": {"map": 0.5}}))
    seen = {}

    def fake_export(model, anchors, labels, out_dir, images, **kwargs):
        seen.update(kwargs["card"], labels=labels, images=len(images))
        card = {"metrics": kwargs["card"]["metrics"]}
        (Path(out_dir) / model_card.CARD_NAME).write_text(json.dumps(card))

    monkeypatch.setattr(export, "export_model", fake_export)
    monkeypatch.setattr(export, "load_model", lambda checkpoint, num_classes: None)
    parser = argparse.ArgumentParser()
    export.add_arguments(parser)
    argv = ["--checkpoint", str(tmp_path / "work"), "--to", str(target), "--images", str(images),
            "--csv", str(train_csv), "--metrics", str(metrics), "--deployed-threshold", "0.6"]
    assert export.main(parser.parse_args(argv)) == 1
    assert seen["metrics"]["test"]["ap50"] == 0.9 and seen["deployed_threshold"] == 0.6
    assert seen["labels"] == ["raccoon"] and seen["images"] == 1  # test-only.jpg left out
    assert sorted(Path(p).name for p in seen["dataset_files"]) == ["a.jpg", "train_labels.csv"]
    assert (target / "model.tflite").read_text() == "old"
    assert export.main(parser.parse_args(argv + ["--force"])) == 0
    assert model_card.ap50_on_test(model_card.read_card(target)) == 0.9
    assert sorted(p.name for p in target.parent.iterdir()) == ["raccoon"]
