"""tools/night_loso.py: a held-out night source is judged at thresholds chosen without it.

The fold is table-tested on hand-made records (what ``detect --json`` writes), so each number is
known: two IR sources, one with a high-scoring raccoon-free photo that sets the IR threshold while
it is in, and a raccoon that is found only when that source is held out (the threshold falls)."""

from __future__ import annotations

from pathlib import Path

from tools.night_loso import fold, short_repo, source_of_night_frame
from train import evaluate
from train.voc import BoxRow


def _record(name: str, mode: str, *scored: tuple[float, tuple[int, int, int, int]]) -> dict:
    return {"image": name, "width": 100, "height": 100, "mode": mode,
            "detections": [{"label": "raccoon", "score": s, "box": list(b)} for s, b in scored]}


BOX = (10, 10, 50, 50)


def _data():
    records = [
        _record("day1.jpg", "color", (0.2, BOX)), _record("day2.jpg", "color"),
        # source "a": 2 IR negatives, one scoring 0.6 (with a budget of 1 in 20, it sets IR above 0.6)
        _record("a1.jpg", "ir", (0.6, BOX)), _record("a2.jpg", "ir", (0.1, BOX)),
        # source "b": 2 IR negatives at 0.35 / 0.05, and an IR raccoon at 0.5 (source "b" too)
        _record("b1.jpg", "ir", (0.35, BOX)), _record("b2.jpg", "ir"),
        _record("b_raccoon.jpg", "ir", (0.5, BOX)),
    ]
    negatives = {"day": ["day1.jpg", "day2.jpg"], "a": ["a1.jpg", "a2.jpg"], "b": ["b1.jpg", "b2.jpg"]}
    rows = [BoxRow("b_raccoon.jpg", 100, 100, "raccoon", *BOX)]
    gt = evaluate.ground_truth(rows, [n for names in negatives.values() for n in names])
    mode_of = {r["image"]: r["mode"] for r in records}
    return records, gt, negatives, {"b_raccoon.jpg": "b"}, mode_of


def test_all_groups_in_the_ir_threshold_clears_every_source_and_misses_the_raccoon() -> None:
    records, gt, negatives, positives, mode_of = _data()
    result = fold(records, gt, negatives, positives, mode_of, None)
    assert result["thresholds"] == {"color": 0.3, "ir": 0.601}
    assert result["sources"]["a"] == {"negatives": 2, "alerting": 0, "modes": ["ir"]}
    assert result["sources"]["b"]["raccoons"] == 1 and result["sources"]["b"]["found"] == 0


def test_holding_out_the_source_that_sets_the_threshold() -> None:
    records, gt, negatives, positives, mode_of = _data()
    held_a = fold(records, gt, negatives, positives, mode_of, "a")
    assert held_a["thresholds"]["ir"] == 0.351  # set by b1 now
    assert list(held_a["sources"]) == ["a"]
    assert held_a["sources"]["a"]["alerting"] == 1  # a1 (0.6) alerts at a threshold chosen without it

    held_b = fold(records, gt, negatives, positives, mode_of, "b")
    assert held_b["thresholds"]["ir"] == 0.601
    assert held_b["sources"]["b"] == {"negatives": 2, "alerting": 0, "modes": ["ir"], "raccoons": 1, "found": 0}


def test_source_names() -> None:
    assert source_of_night_frame(Path("night/negatives/mct_SEQ1_0001.jpg")) == "mct_ir"
    assert source_of_night_frame(Path("night/negatives/camtrapr_mousedeer.jpg")) == "trailcam"
    assert short_repo("alnah005/raccoon_identification") == "alnah005"


def test_sources_share_their_groups_budget_as_the_card_does() -> None:
    """One skunk photo of a camera with 1 raccoon-free photo does not set the IR threshold on its
    own: the real night photos are one group (1 in 20 may alert), as in the card's validation."""
    records = [_record("a1.jpg", "ir", (0.6, BOX))] + [_record(f"c{i}.jpg", "ir", (0.1, BOX)) for i in range(19)]
    negatives = {"a": ["a1.jpg"], "c": [f"c{i}.jpg" for i in range(19)]}
    gt = evaluate.ground_truth([], [n for names in negatives.values() for n in names])
    mode_of = {r["image"]: r["mode"] for r in records}
    result = fold(records, gt, negatives, {}, mode_of, None)
    assert result["thresholds"]["ir"] == 0.3  # the floor: a1 is the 1 in 20
    assert result["sources"]["a"]["alerting"] == 1
    held_c = fold(records, gt, negatives, {}, mode_of, "c")
    assert held_c["thresholds"]["ir"] == 0.601 and held_c["sources"]["c"]["alerting"] == 0
