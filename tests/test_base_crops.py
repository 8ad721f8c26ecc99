"""retrain/base_crops under storage.base_crops_mb (issue 22, disk).

The base crops (the shipped classifier's training crops a retrain mixes with the site's) are built
once into the storage folder: 790 MB of .npz and 97 MB of pasted scenes with the shipped recipe. They
are kept under their own cap: the scenes go (their crops are in the .npz), then each part keeps a
stratified sample. The counts are a pure function, tested as a table; the cut on a small folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")  # train.classifier imports the model's module

from train.classifier.crops import load_part, save_arrays  # noqa: E402
from train.classifier.retrain import (  # noqa: E402
    DEFAULT_VAL_LIMIT,
    base_crop_counts,
    cap_base_crops,
    ensure_base_crops,
    stratified_keep,
)


@pytest.mark.parametrize("n_train, n_val, max_bytes, expected", [
    (100, 50, 150 * 110_000, (100, 50)),  # everything fits
    (5990, 1112, 2383 * 110_000, (1783, 600)),  # the shipped set at 250 MB: 600 to measure on, the rest to train
    (5990, 1112, 700 * 110_000, (100, 600)),  # validation first, up to what a retrain measures on
    (5990, 300, 1000 * 110_000, (700, 300)),  # a small validation part: the training part takes the rest
    (100, 1112, 1000 * 110_000, (100, 900)),  # a small training part: validation takes the rest
    (5990, 1112, 400 * 110_000, (0, 400)),  # not even the validation part fits
])
def test_base_crop_counts(n_train, n_val, max_bytes, expected):
    assert base_crop_counts(n_train, n_val, 110_000, max_bytes, DEFAULT_VAL_LIMIT) == expected


def test_stratified_keep_keeps_each_stratums_share():
    strata = np.array(["1day"] * 30 + ["0day"] * 50 + ["1night"] * 20)
    keep = stratified_keep(strata, 10, np.random.default_rng(0))
    assert len(keep) == 10 and list(keep) == sorted(set(keep))
    assert {s: int((strata[keep] == s).sum()) for s in ("1day", "0day", "1night")} == {"1day": 3, "0day": 5, "1night": 2}
    assert len(stratified_keep(strata, 7, np.random.default_rng(0))) == 7  # largest remainder: exactly k


def _part(n: int, positives: int) -> dict[str, np.ndarray]:
    labels = np.array([1] * positives + [0] * (n - positives), np.int8)
    return {"crops": np.arange(n * 8 * 8 * 3, dtype=np.uint32).astype(np.uint8).reshape(n, 8, 8, 3),
            "labels": labels, "groups": np.array(["day", "night"] * (n // 2)),
            "sources": np.array(["box"] * n), "files": np.array([f"f{i}.jpg" for i in range(n)]),
            "boxes": np.zeros((n, 4), np.float32)}


def test_the_base_crops_are_cut_to_their_cap(tmp_path):
    folder = tmp_path / "retrain" / "base_crops"
    save_arrays(_part(400, 100), folder / "train.npz")
    save_arrays(_part(100, 20), folder / "val.npz")
    (folder / "scenes").mkdir()
    (folder / "scenes" / "train_raccoon_000_0.jpg").write_bytes(bytes(5000))
    (folder / "crops.json").write_text(json.dumps({"margin": 0.2}))
    before = sum((folder / f"{p}.npz").stat().st_size for p in ("train", "val"))
    cap = before // 2

    summary = cap_base_crops(folder, cap)
    assert summary is not None and summary["bytes"] <= cap
    assert not (folder / "scenes").exists()
    train, val = load_part(folder / "train.npz"), load_part(folder / "val.npz")
    assert len(val["labels"]) == 100 and len(train["labels"]) == summary["train"]["crops"] < 400
    assert train["labels"].mean() == pytest.approx(0.25, abs=0.02)  # the share of raccoons stays
    assert json.loads((folder / "crops.json").read_text())["capped"]["train"]["of"] == 400
    assert not list(folder.glob(".*"))  # no temp file left
    # under the cap now: the next retrain changes nothing, and builds nothing
    assert cap_base_crops(folder, cap) is None
    assert ensure_base_crops(folder, tmp_path / "no-model", tmp_path / "no-shared", max_bytes=cap) == folder
