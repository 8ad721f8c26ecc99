"""Metrics against small hand-worked cases. Boxes are pixels (xmin, ymin, xmax, ymax)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from train import metrics
from train.metrics import GtBox, PredBox

A = (0.0, 0.0, 10.0, 10.0)
B = (20.0, 20.0, 30.0, 30.0)
C = (40.0, 0.0, 50.0, 10.0)
A_LOW_IOU = (5.0, 0.0, 15.0, 10.0)  # IoU with A = 50 / 150 = 1/3
A_NEAR = (0.0, 0.0, 10.0, 9.0)  # IoU with A = 90 / 100 = 0.9


def gt_box(box, difficult=False, label="r"):
    return GtBox(label, box, difficult)


def pred(box, score, label="r"):
    return PredBox(label, score, box)


@pytest.mark.parametrize(("box_a", "box_b", "expected"), [
    (A, A, 1.0),
    (A, B, 0.0),
    (A, A_LOW_IOU, 1 / 3),  # overlap 5x10 = 50, union 100 + 100 - 50 = 150
    (A, (0.0, 0.0, 5.0, 5.0), 0.25),  # contained: 25 / 100
    (A, (10.0, 0.0, 20.0, 10.0), 0.0),  # touching edges
])
def test_iou_xyxy(box_a, box_b, expected) -> None:
    assert metrics.iou_xyxy(np.array([box_a]), np.array([box_b]))[0, 0] == pytest.approx(expected)


AP_CASES = {
    # name: (ground truth, predictions, expected AP)
    "perfect": (
        {"i1": [gt_box(A)], "i2": [gt_box(B)]},
        {"i1": [pred(A, 0.9)], "i2": [pred(B, 0.8)]},
        1.0,  # P = 1 at R = 0.5 and 1
    ),
    "one_miss": (
        {"i1": [gt_box(A)], "i2": [gt_box(B)]},
        {"i1": [pred(A, 0.9)]},
        0.5,  # R reaches only 0.5 at P = 1: area 0.5 * 1
    ),
    "false_positive_before_hit": (
        {"i1": [gt_box(A)]},
        {"i1": [pred(B, 0.9), pred(A, 0.8)]},
        0.5,  # FP: (R 0, P 0); TP: (R 1, P 1/2) -> 1 * 0.5
    ),
    "false_positive_after_hit": (
        {"i1": [gt_box(A)]},
        {"i1": [pred(A, 0.9), pred(B, 0.8)]},
        1.0,  # TP: (R 1, P 1) first; the FP later only lowers P at the same R
    ),
    "duplicate_before_second_hit": (
        {"i1": [gt_box(A)], "i2": [gt_box(B)]},
        {"i1": [pred(A, 0.9), pred(A_NEAR, 0.8)], "i2": [pred(B, 0.7)]},
        0.5 * 1 + 0.5 * (2 / 3),  # (R .5, P 1), dup (R .5, P .5), (R 1, P 2/3) = 0.8333
    ),
    "low_iou_is_false_positive": (
        {"i1": [gt_box(A)]},
        {"i1": [pred(A_LOW_IOU, 0.9)]},
        0.0,  # IoU 1/3 < 0.5: no TP at all
    ),
    "difficult_undetected_not_counted": (
        {"i1": [gt_box(A)], "i2": [gt_box(B, difficult=True)]},
        {"i1": [pred(A, 0.9)]},
        1.0,  # npos = 1 (B is difficult); counting B would give 0.5
    ),
    "detection_on_difficult_ignored": (
        {"i1": [gt_box(A)], "i2": [gt_box(B, difficult=True)]},
        {"i2": [pred(B, 0.95)], "i1": [pred(A, 0.9)]},
        1.0,  # the 0.95 hit on B is neither TP nor FP; as a FP it would give 0.5
    ),
    "interpolated_envelope": (
        {"i1": [gt_box(A)], "i2": [gt_box(B)], "i3": [gt_box(C)]},
        {"i1": [pred(A, 0.9), pred(B, 0.8)], "i2": [pred(B, 0.7), pred(A, 0.6)], "i3": [pred(C, 0.5)]},
        # TP FP TP FP TP: P = 1, 1/2, 2/3, 1/2, 3/5 at R = 1/3, 1/3, 2/3, 2/3, 1
        # envelope: 1 on (0, 1/3], 2/3 on (1/3, 2/3], 3/5 on (2/3, 1]
        (1 + 2 / 3 + 3 / 5) / 3,  # = 0.7556
    ),
    "false_alarm_on_negative_image": (
        {"i1": [gt_box(A)], "neg": []},
        {"neg": [pred(A, 0.95)], "i1": [pred(A, 0.9)]},
        0.5,  # FP on the negative first: (R 0, P 0), then (R 1, P 1/2)
    ),
    "no_predictions": (
        {"i1": [gt_box(A)]},
        {},
        0.0,
    ),
}


@pytest.mark.parametrize("name", list(AP_CASES))
def test_voc_ap_hand_worked(name: str) -> None:
    gt, preds, expected = AP_CASES[name]
    assert metrics.voc_ap(gt, preds)["r"] == pytest.approx(expected)


def test_voc_ap_per_class_and_mean() -> None:
    gt = {"i1": [gt_box(A, label="cat"), gt_box(B, label="raccoon")], "i2": [gt_box(C, label="raccoon")]}
    preds = {"i1": [pred(A, 0.9, "cat"), pred(B, 0.8, "raccoon")]}  # raccoon C missed
    ap = metrics.voc_ap(gt, preds)
    assert ap == pytest.approx({"cat": 1.0, "raccoon": 0.5})
    assert metrics.mean_ap(ap) == pytest.approx(0.75)


def test_only_difficult_class_is_nan_and_skipped_in_mean() -> None:
    gt = {"i1": [gt_box(A, label="a"), gt_box(B, difficult=True, label="b")]}
    ap = metrics.voc_ap(gt, {"i1": [pred(A, 0.9, "a")]})
    assert math.isnan(ap["b"]) and metrics.mean_ap(ap) == 1.0


def test_pr_curve_points() -> None:
    gt, preds, _ = AP_CASES["interpolated_envelope"]
    curve = metrics.pr_curve(gt, preds, "r")
    assert curve.n_positives == 3
    np.testing.assert_allclose(curve.scores, [0.9, 0.8, 0.7, 0.6, 0.5])
    np.testing.assert_allclose(curve.precision, [1, 1 / 2, 2 / 3, 1 / 2, 3 / 5])
    np.testing.assert_allclose(curve.recall, [1 / 3, 1 / 3, 2 / 3, 2 / 3, 1])


def test_coco_map_perfect_and_partial_overlap() -> None:
    gt = {"i1": [gt_box((0.0, 0.0, 100.0, 100.0))]}
    perfect = metrics.coco_map(gt, {"i1": [pred((0.0, 0.0, 100.0, 100.0), 0.9)]})
    assert perfect["map"] == pytest.approx(1.0) and perfect["map50"] == pytest.approx(1.0)
    # IoU 0.62 is a hit at IoU thresholds 0.50, 0.55, 0.60 only: mAP = 3 / 10
    partial = metrics.coco_map(gt, {"i1": [pred((0.0, 0.0, 100.0, 62.0), 0.9)]})
    assert partial["map50"] == pytest.approx(1.0)
    assert partial["map"] == pytest.approx(0.3)
    assert partial["per_class"]["r"]["map"] == pytest.approx(0.3)
    assert metrics.coco_map(gt, {})["map"] == 0.0


def test_per_image_hits_misses_false_alarms() -> None:
    gt = {"i1": [gt_box(A), gt_box(B)], "neg": []}
    preds = {
        "i1": [pred(A, 0.9), pred(A_NEAR, 0.8), pred(C, 0.7), pred(B, 0.3)],  # hit, duplicate, stray, too low
        "neg": [pred(A, 0.6)],
    }
    results = {r.image_id: r for r in metrics.per_image_results(gt, preds, threshold=0.5)}
    assert results["i1"] == metrics.ImageResult("i1", 2, 1, 1, 2, 0.9)
    assert results["neg"] == metrics.ImageResult("neg", 0, 0, 0, 1, 0.6)
    at_low = {r.image_id: r for r in metrics.per_image_results(gt, preds, threshold=0.2)}
    assert (at_low["i1"].hits, at_low["i1"].misses) == (2, 0)


def test_false_alert_rate() -> None:
    preds = {"n1": [pred(A, 0.6)], "n2": [pred(A, 0.2)], "n4": [pred(A, 0.9, "cat"), pred(B, 0.1)]}
    negatives = ["n1", "n2", "n3", "n4"]
    assert metrics.false_alert_rate(preds, negatives, 0.5) == 0.5  # n1 and n4 of 4
    assert metrics.false_alert_rate(preds, negatives, 0.5, labels=["r"]) == 0.25  # n4's 0.9 is a cat
    assert metrics.false_alert_rate(preds, negatives, 0.95) == 0.0


@pytest.mark.parametrize(("rate", "expected"), [
    (0.0, 0.901),  # nothing may alert: just above the best negative
    (0.25, 0.601),  # 1 of 4 may alert: just above the second best (0.6)
    (0.5, 0.201),  # 2 of 4 may alert: just above 0.2
    (0.75, 0.05),  # 3 of 4: above 0.0, raised to the minimum threshold
    (1.0, 0.05),
])
def test_lowest_threshold_for_rate(rate: float, expected: float) -> None:
    assert metrics.lowest_threshold_for_rate(np.array([0.2, 0.9, 0.0, 0.6]), rate) == pytest.approx(expected)


def test_choose_threshold_trades_recall_for_false_alerts() -> None:
    # 20 negatives: one at 0.9, one at 0.6, the rest at 0.1; 3 raccoons found at 0.95, 0.7, 0.55.
    gt = {"p1": [gt_box(A)], "p2": [gt_box(A)], "p3": [gt_box(A)]}
    preds = {"p1": [pred(A, 0.95)], "p2": [pred(A, 0.7)], "p3": [pred(A, 0.55)]}
    negative_scores = [0.9, 0.6] + [0.1] * 18
    for k, score in enumerate(negative_scores):
        gt[f"n{k}"] = []
        preds[f"n{k}"] = [pred(B, score)]
    choice = metrics.choose_threshold(gt, preds, max_false_alert_rate=0.05)  # 1 of 20 may alert
    assert choice.threshold == pytest.approx(0.601)
    assert choice.false_alert_rate == pytest.approx(0.05)
    assert choice.recall == pytest.approx(2 / 3)  # the 0.55 raccoon is lost
    assert choice.image_recall == pytest.approx(2 / 3)
    assert choice.precision == pytest.approx(2 / 3)  # 2 hits, the 0.9 negative is 1 false alarm
    strict = metrics.choose_threshold(gt, preds, max_false_alert_rate=0.0)
    assert strict.threshold == pytest.approx(0.901) and strict.recall == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="no negative images"):
        metrics.choose_threshold({"p1": [gt_box(A)]}, preds)


def test_choose_threshold_holds_the_rate_in_every_group() -> None:
    # 20 day photos with 2 cats at 0.9 and 0.8; 20 night frames all at 0.1. Pooled, 2 of 40 may
    # alert: just above the third best, 0.1; per group, 1 of 20 day photos: just above 0.8.
    gt = {"p1": [gt_box(A)], "p2": [gt_box(A)]}
    preds = {"p1": [pred(A, 0.95)], "p2": [pred(A, 0.85)]}
    day, night = [f"d{k}" for k in range(20)], [f"n{k}" for k in range(20)]
    for k, name in enumerate(day + night):
        gt[name] = []
        preds[name] = [pred(B, {0: 0.9, 1: 0.8}.get(k, 0.1))]
    pooled = metrics.choose_threshold(gt, preds, max_false_alert_rate=0.05)
    assert pooled.threshold == pytest.approx(0.101) and pooled.false_alert_rate == pytest.approx(0.05)
    grouped = metrics.choose_threshold(gt, preds, max_false_alert_rate=0.05, negative_groups=[day, night])
    assert grouped.threshold == pytest.approx(0.801)  # 1 of the 20 day photos alerts, not 2
    assert grouped.false_alert_rate == pytest.approx(1 / 40) and grouped.recall == pytest.approx(1.0)


def test_tied_scores_do_not_depend_on_listing_order() -> None:
    gt = {"a": [gt_box(A)], "b": [gt_box(B)]}
    one_way = {"a": [pred(A, 0.5)], "b": [pred(C, 0.5), pred(B, 0.4)]}
    other_way = {"b": [pred(B, 0.4), pred(C, 0.5)], "a": [pred(A, 0.5)]}
    # ties broken by image id: a's hit (R .5, P 1), b's stray (R .5, P .5), b's hit (R 1, P 2/3)
    assert metrics.voc_ap(gt, one_way)["r"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert metrics.voc_ap(gt, other_way)["r"] == metrics.voc_ap(gt, one_way)["r"]
