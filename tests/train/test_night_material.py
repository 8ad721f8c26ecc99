"""Night material for the classifier: real night photos split by source, thresholds per image mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from train import evaluate, metrics
from train.classifier.crops import NIGHT_EXTRA_VAL_SOURCES, night_extra_photos
from train.classifier.stage import mode_thresholds, recall_group


def test_night_extra_is_split_by_source(shared_dir: Path) -> None:
    data = shared_dir / "data"
    if not (data / "night_extra" / "labels.csv").is_file():
        pytest.skip(f"no {data / 'night_extra'} in this shared folder")
    train, val = night_extra_photos(data, "train"), night_extra_photos(data, "val")
    assert train and val
    assert not {p.entry.path for p in train} & {p.entry.path for p in val}
    assert {p.source for p in val} <= NIGHT_EXTRA_VAL_SOURCES
    assert not {p.source for p in train} & NIGHT_EXTRA_VAL_SOURCES
    assert sum(len(p.entry.boxes_px) for p in val) >= 4  # the real infrared raccoons validate
    for photo in train + val:
        assert photo.entry.path.is_file()
        assert all(label == "raccoon" for label in photo.entry.labels)
        for x0, y0, x1, y1 in photo.entry.boxes_px + photo.animals:
            assert 0 <= x0 < x1 and 0 <= y0 < y1


def _preds(scores: dict[str, float]) -> dict[str, list[metrics.PredBox]]:
    return {name: [metrics.PredBox("raccoon", s, (0.0, 0.0, 10.0, 10.0))] for name, s in scores.items()}


@pytest.mark.parametrize(("scores", "modes", "expected"), [
    # 20 colour negatives, one at 0.8 (1 in 20 may alert), the next at 0.6; IR ones peak at 0.4
    ({**{f"d{i}": 0.1 for i in range(18)}, "d18": 0.6, "d19": 0.8, **{f"n{i}": 0.4 - i / 100 for i in range(20)}},
     {**{f"d{i}": "color" for i in range(20)}, **{f"n{i}": "ir" for i in range(20)}},
     {"color": 0.601, "ir": 0.391}),
    # no IR negatives at all: IR takes the colour threshold
    ({f"d{i}": 0.5 for i in range(20)}, {f"d{i}": "color" for i in range(20)}, {"color": 0.501, "ir": 0.501}),
    # the floor holds when negatives score nothing
    ({f"n{i}": 0.0 for i in range(10)}, {f"n{i}": "ir" for i in range(10)}, {"color": 0.3, "ir": 0.3}),
])
def test_mode_thresholds(scores, modes, expected) -> None:
    groups = {"all": sorted(scores)}
    assert mode_thresholds(_preds(scores), groups, modes, 0.05, 0.3) == pytest.approx(expected)


def test_mode_thresholds_hold_every_groups_budget() -> None:
    """A small group with one high IR negative sets the IR threshold even if a big group would allow it."""
    scores = {**{f"a{i}": 0.1 for i in range(40)}, "a40": 0.9, "b0": 0.7, "b1": 0.1}
    modes = {name: "ir" for name in scores}
    groups = {"big": [f"a{i}" for i in range(41)], "small": ["b0", "b1"]}
    assert mode_thresholds(_preds(scores), groups, modes, 0.05, 0.3)["ir"] == pytest.approx(0.701)


def test_on_one_scale_makes_one_threshold_the_per_mode_rule() -> None:
    records = [{"image": "a.jpg", "mode": "color", "detections": [{"label": "raccoon", "score": 0.7, "box": [0, 0, 1, 1]}]},
               {"image": "b.jpg", "mode": "ir", "detections": [{"label": "raccoon", "score": 0.5, "box": [0, 0, 1, 1]}]},
               {"image": "c.jpg", "mode": "ir", "detections": [{"label": "raccoon", "score": 0.39, "box": [0, 0, 1, 1]}]},
               {"image": "d.jpg", "mode": "ir", "detections": [{"label": "raccoon", "score": 0.95, "box": [0, 0, 1, 1]}]}]
    scaled = evaluate.on_one_scale(records, 0.8, 0.4)
    passes = {r["image"]: r["detections"][0]["score"] >= 0.8 for r in scaled}
    assert passes == {"a.jpg": False, "b.jpg": True, "c.jpg": False, "d.jpg": True}
    assert max(d["score"] for r in scaled for d in r["detections"]) <= 1.0
    assert evaluate.on_one_scale(records, 0.8, None) == records
    assert records[1]["detections"][0]["score"] == 0.5  # the input is not changed


@pytest.mark.parametrize(("path", "group"), [
    (Path("/x/night_scenes/night_scene_003.jpg"), "night_scenes"),
    (Path("/s/data/night_extra/images/alnah005__C2.jpg"), "night_real"),
    (Path("/s/data/raccoon_dataset/images/raccoon-12.jpg"), "day"),
])
def test_recall_group(path: Path, group: str) -> None:
    assert recall_group(path) == group


def test_mode_thresholds_need_negatives() -> None:
    with pytest.raises(ValueError, match="no raccoon-free"):
        mode_thresholds({}, {"day": []}, {}, 0.05, 0.3)


@pytest.mark.parametrize(("recall", "expected"), [
    ({0.02: 1.0, 0.05: 1.0, 0.1: 0.91}, 0.05),  # the highest value that still reaches the target
    ({0.02: 0.96, 0.05: 0.96, 0.1: 0.88}, 0.05),  # none reaches it: the highest with the best recall
    ({0.02: 0.96, 0.05: 0.95, 0.1: 0.88}, 0.02),
    ({0.02: 0.97, 0.05: 0.97, 0.1: 0.97}, 0.1),
])
def test_pick_proposal_threshold(recall, expected) -> None:
    from train.classifier.stage import pick_proposal_threshold

    assert pick_proposal_threshold(recall, 0.97) == expected
