"""Evaluation of the stock COCO TFLite model on the 40 test photos, and the JSON/PNG outputs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from train import evaluate
from train.voc import read_csv

pytestmark = pytest.mark.shared  # real photos and models from ../shared

README_STOCK_AP50 = 0.88  # ../shared/data/raccoon_dataset/README.md
AP_TOLERANCE = 0.03
NEGATIVE_SAMPLE = 10  # raccoon-free photos run through the model in this test
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def test_csv(shared_dir: Path) -> Path:
    return shared_dir / "data" / "raccoon_dataset" / "test_labels.csv"


@pytest.fixture(scope="module")
def negatives(shared_dir: Path) -> list[Path]:
    return evaluate.list_images(shared_dir / "data" / "negatives")[:NEGATIVE_SAMPLE]


@pytest.fixture(scope="module")
def stock_records(coco_model: Path, test_csv: Path, shared_dir: Path, negatives: list[Path]) -> list[dict]:
    images_dir = evaluate.default_images_dir(test_csv)
    images = [images_dir / name for name in dict.fromkeys(r.filename for r in read_csv(test_csv))] + negatives
    return list(evaluate.predict_with_model(coco_model, images, shared_dir / "pretrained" / "coco_labelmap.txt"))


def test_predictions_are_detect_json_records(stock_records: list[dict]) -> None:
    assert len(stock_records) == 40 + NEGATIVE_SAMPLE
    first = stock_records[0]
    assert set(first) == {"image", "width", "height", "mode", "detections"}
    for record in stock_records:
        for detection in record["detections"]:
            xmin, ymin, xmax, ymax = detection["box"]  # pixels of the original image
            assert 0 <= xmin <= xmax <= record["width"] and 0 <= ymin <= ymax <= record["height"]
            assert 0.01 <= detection["score"] <= 1
    labels = {d["label"] for r in stock_records for d in r["detections"]}
    assert {"cat", "dog", "bear"} & labels and "???" not in labels


def test_stock_model_reproduces_readme_ap(stock_records: list[dict], test_csv: Path, negatives: list[Path]) -> None:
    remapped = evaluate.remap_labels(stock_records, evaluate.COCO_TO_RACCOON)
    assert {d["label"] for r in remapped for d in r["detections"]} == {"raccoon"}
    result = evaluate.evaluate_records(remapped, read_csv(test_csv), negatives, threshold=0.5)
    assert result["ap50"]["raccoon"] == pytest.approx(README_STOCK_AP50, abs=AP_TOLERANCE)
    assert result["map50"] == result["ap50"]["raccoon"]
    # cats and dogs renamed to raccoon are false positives once the negatives count too
    assert result["ap50_with_negatives"]["raccoon"] < result["ap50"]["raccoon"]
    assert 0.3 < result["coco"]["map"] < result["coco"]["map50"] <= 1
    assert (result["positive_images"], result["negative_images"], result["objects"]) == (40, NEGATIVE_SAMPLE, 44)
    assert len(result["per_image"]) == 40 + NEGATIVE_SAMPLE
    assert 0 <= result["at_threshold"]["false_alert_rate"] <= 1


def test_remap_keeps_or_drops_other_labels() -> None:
    record = {"image": "x.jpg", "width": 10, "height": 10, "detections": [
        {"label": "cat", "score": 0.9, "box": [0, 0, 5, 5]}, {"label": "person", "score": 0.8, "box": [1, 1, 4, 4]}]}
    assert [d["label"] for d in evaluate.remap_labels([record], {"cat": "raccoon"})[0]["detections"]] == ["raccoon"]
    kept = evaluate.remap_labels([record], {"cat": "raccoon"}, drop_unmapped=False)[0]["detections"]
    assert [d["label"] for d in kept] == ["raccoon", "person"]
    assert record["detections"][0]["label"] == "cat"  # input untouched
    assert evaluate.parse_mapping("cat=raccoon, dog=raccoon") == {"cat": "raccoon", "dog": "raccoon"}
    with pytest.raises(ValueError, match="FROM=TO"):
        evaluate.parse_mapping("cat")


def test_cli_writes_json_and_png(stock_records: list[dict], test_csv: Path, negatives: list[Path], tmp_path: Path) -> None:
    predictions = tmp_path / "preds.jsonl"
    evaluate.write_detections(stock_records, predictions)
    negative_list = tmp_path / "negatives.txt"
    negative_list.write_text("\n".join(str(p) for p in negatives) + "\n")
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    output = tmp_path / "eval" / "metrics.json"
    args = parser.parse_args(["--predictions", str(predictions), "--csv", str(test_csv), "--negatives", str(negative_list),
                              "--remap", "cat=raccoon,dog=raccoon,bear=raccoon", "--threshold", "0.5", "--output", str(output)])
    assert evaluate.evaluate_main(args) == 0
    result = json.loads(output.read_text())
    assert result["ap50"]["raccoon"] == pytest.approx(README_STOCK_AP50, abs=AP_TOLERANCE)
    assert result["threshold_for_false_alert_target"]["max_false_alert_rate"] == 0.05
    assert len(result["pr_curve"]["raccoon"]["recall"]) == len(result["pr_curve"]["raccoon"]["precision"]) > 0
    png = output.with_suffix(".png")
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000


def test_cli_runs_tflite_model(coco_model: Path, shared_dir: Path, tmp_path: Path) -> None:
    csv_path = tmp_path / "two.csv"
    lines = (shared_dir / "data" / "raccoon_dataset" / "test_labels.csv").read_text().splitlines()
    csv_path.write_text("\n".join(lines[:3]) + "\n")
    parser = argparse.ArgumentParser()
    evaluate.add_arguments(parser)
    output = tmp_path / "m.json"
    args = parser.parse_args([
        "--model", str(coco_model), "--label-map", str(shared_dir / "pretrained" / "coco_labelmap.txt"),
        "--csv", str(csv_path), "--images", str(shared_dir / "data" / "raccoon_dataset" / "images"),
        "--remap", "cat=raccoon,dog=raccoon,bear=raccoon", "--output", str(output),
        "--save-predictions", str(tmp_path / "p.jsonl")])
    assert evaluate.main(args) == 0
    assert json.loads(output.read_text())["images"] == 2
    assert len(evaluate.read_detections(tmp_path / "p.jsonl")) == 2
    args.csv = tmp_path / "missing.csv"
    assert evaluate.main(args) == 1
