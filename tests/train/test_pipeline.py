"""The training pipeline end to end on a handful of real images for a few steps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from train import data as data_lib
from train.__main__ import main as train_cli
from train.augment import AugmentConfig, augment_with_labels, copy_paste_night
from train.config import TrainConfig, load_config
from train.splits import HOLDOUT_MODULO, make_plan, name_hash
from train.train import DEFAULT_CONFIG, WarmupCosine


@pytest.fixture
def shared_env(shared_dir, monkeypatch):
    monkeypatch.setenv("RACCOON_SHARED", str(shared_dir))
    return shared_dir


def test_committed_config_is_valid():
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.optim.steps >= cfg.optim.warmup_steps
    with pytest.raises(ValueError, match="extra"):
        TrainConfig.model_validate({"optim": {"stpes": 10}})


def test_plan_never_trains_on_test_or_heldout(shared_dir):
    plan = make_plan(shared_dir / "data")
    train_names = {e.path.name for e in plan.train}
    assert len(plan.test) == 40
    assert not train_names & {e.path.name for e in plan.test}
    assert not train_names & {e.path.name for e in plan.val}
    assert not train_names & {e.path.name for e in plan.heldout_negatives}
    assert all(name_hash(e.path.name) % HOLDOUT_MODULO == 0 for e in plan.heldout_negatives)
    assert sum(not e.is_negative for e in plan.val) == 40 and sum(e.is_negative for e in plan.val) == 40


def test_split_lists_night_frames_of_train_and_val(shared_dir, tmp_path):
    from train.splits import write_plan

    plan = make_plan(shared_dir / "data")
    files = write_plan(plan, shared_dir / "data", tmp_path)
    night = {Path(p).name for p in files["night_negatives"].read_text().split()}
    val_night = {e.path.name for e in plan.val if e.is_negative and e.path.parent.parent.name == "night"}
    assert len(val_night) == 20 and val_night <= night  # validation groups its night frames apart
    assert not night & {e.path.name for e in plan.heldout_negatives}


def test_warmup_cosine_schedule():
    schedule = WarmupCosine(1e-3, 10, 110, 0.1)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(60)) == pytest.approx(0.55e-3, rel=1e-3)
    assert float(schedule(110)) == pytest.approx(1e-4)


def test_augment_and_copy_paste_keep_boxes_valid(shared_dir):
    plan = make_plan(shared_dir / "data")
    examples = data_lib.examples_from_entries([e for e in plan.train if not e.is_negative][:4], {"raccoon": 1})
    crops = data_lib.load_crops(shared_dir / "data/night/positives_crops")[:3]
    rng = np.random.default_rng(0)
    cfg = AugmentConfig(zoom_out_probability=1.0, crop_probability=1.0, night_probability=0.5, blur_probability=0.5)
    for example in examples * 5:
        image, boxes, labels = augment_with_labels(example.image, example.boxes, example.labels, rng, cfg, 300,
                                                   min_box_side=data_lib.TRAIN_MIN_BOX_SIDE)
        assert image.shape == (300, 300, 3) and image.dtype == np.uint8
        assert len(boxes) == len(labels)
        assert np.all(boxes >= -1e-6) and np.all(boxes <= 1 + 1e-6)
        assert np.all(boxes[:, 2:] - boxes[:, :2] > data_lib.TRAIN_MIN_BOX_SIDE)
    image, boxes = copy_paste_night(examples[0].image, crops[0], rng)
    assert boxes.shape == (1, 4) and np.all(boxes[:, 2:] > boxes[:, :2])


def test_weight_average_follows_the_weights_and_swaps_back():
    import tensorflow as tf

    from train.train import WeightAverage

    weight = tf.Variable([1.0, 2.0])
    average = WeightAverage([weight], decay=0.5)
    weight.assign([3.0, 4.0])
    average.update(step=100)  # decay min(0.5, 101/110) = 0.5
    assert average.averages[0].numpy().tolist() == [2.0, 3.0]
    average.update(step=0)  # early steps: decay min(0.5, 1/10) = 0.1, mostly the new weights
    assert np.allclose(average.averages[0].numpy(), [0.1 * 2 + 0.9 * 3, 0.1 * 3 + 0.9 * 4])
    before = average.averages[0].numpy().copy()
    average.swap()
    assert np.allclose(weight.numpy(), before) and average.averages[0].numpy().tolist() == [3.0, 4.0]
    average.swap()
    assert weight.numpy().tolist() == [3.0, 4.0]


def test_the_default_config_trains_the_raccoon_alone():
    """What the shipped detector is trained for (the decoy run below adds cat and dog to it)."""
    assert load_config(DEFAULT_CONFIG).data.labels == ["raccoon"]


@pytest.mark.slow
def test_all_end_to_end_with_decoys_exports_raccoon_first_and_scores_only_raccoons(shared_env, tmp_path):
    """Every stage of ``train all`` end to end on a handful of images (one run: it takes minutes),
    with data.decoys: the teacher's boxes ride in the train record, the export has the labels
    [raccoon, cat, dog], and evaluate counts only raccoon detections as alerts. Then the train stage
    resumes from the run's checkpoint."""
    import yaml

    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    config["data"]["decoys"] = ["cat", "dog"]
    config_path = tmp_path / "decoys.yaml"
    config_path.write_text(yaml.safe_dump(config))
    work, target = tmp_path / "work", tmp_path / "models" / "raccoon"
    argv = ["all", "--shared", str(shared_env), "--work-dir", str(work), "--to", str(target), "--config", str(config_path),
            "--limit", "2", "--steps", "2", "--batch-size", "2", "--eval-every", "2"]
    assert train_cli(argv) == 0
    assert (work / "records" / "train.tfrecord").is_file()
    train_dir = work / "train"
    result = json.loads((train_dir / "training_result.json").read_text())
    assert [h["step"] for h in result["history"]] == [0, 2]
    assert (train_dir / "best.weights.h5").is_file()
    assert (train_dir / "checkpoints" / "ckpt-2.index").is_file()
    for name in ("model.tflite", "labelmap.pbtxt", "model_card.json", "classifier.tflite", "classifier_card.json"):
        assert (target / name).is_file()
    card = json.loads((target / "model_card.json").read_text())
    assert 0.0 <= card["metrics"]["test"]["ap50"] <= 1.0
    assert card["deployed_threshold"] > 0
    decoy_rows = (work / "csv" / "decoys.csv").read_text().splitlines()[1:]
    assert decoy_rows and all(row.split(",")[3] in ("cat", "dog") for row in decoy_rows)
    card = json.loads((target / "model_card.json").read_text())
    assert card["labels"] == ["raccoon", "cat", "dog"]
    assert "item {\n  id: 2\n  name: 'cat'" in (target / "labelmap.pbtxt").read_text()
    test = json.loads((work / "eval" / "test.json").read_text())
    assert set(test["ap50"]) == {"raccoon"}
    # the model reports decoys; evaluate scores as if only its raccoon detections existed
    negatives = str(work / "split" / "heldout_negatives.txt")
    common = ["evaluate", "--csv", str(shared_env / "data/raccoon_dataset/test_labels.csv"), "--negatives", negatives,
              "--threshold", "0.05"]
    preds = tmp_path / "preds.jsonl"
    assert train_cli(common + ["--model", str(target / "model.tflite"), "--save-predictions", str(preds),
                               "--output", str(tmp_path / "a.json")]) == 0
    labels = {d["label"] for line in preds.read_text().splitlines() for d in json.loads(line)["detections"]}
    assert labels & {"cat", "dog"}
    assert train_cli(common + ["--predictions", str(preds), "--remap", "raccoon=raccoon", "--output", str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f"{k}.json").read_text()) for k in "ab")
    assert a["at_threshold"] == b["at_threshold"] and a["per_image"] == b["per_image"]

    # the train stage resumes from the run's latest checkpoint (here rather than in a test of its
    # own: building the model and its data is most of a train stage's cost)
    records, split = work / "records", work / "split"
    assert train_cli(["train", "--config", str(config_path), "--work-dir", str(train_dir),
                      "--train-records", str(records / "train.tfrecord"), "--val-records", str(records / "val.tfrecord"),
                      "--night-list", str(split / "night_negatives.txt"), "--limit", "2", "--batch-size", "2",
                      "--eval-every", "2", "--steps", "3", "--resume"]) == 0
    result = json.loads((train_dir / "training_result.json").read_text())
    assert [h["step"] for h in result["history"]] == [0, 2, 3]  # continued from step 2
    assert 0.0 <= result["best"]["val_ap50"] <= 1.0
