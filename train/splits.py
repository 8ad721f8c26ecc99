"""The data plan: which shared images train, validate and test, decided deterministically.

- test: the original 40-image test split (test_labels.csv); reported, never used for choices.
- heldout_negatives: a fifth of ../shared/data/negatives (by filename hash); the false-alert test
  set, never trained on.
- val: VAL_POSITIVES images of the 160-image train split + VAL_NEGATIVES raccoon-free images
  (half day negatives, half night negatives), all picked by filename hash; chooses the checkpoint
  and the deployed threshold.
- train: everything else: the rest of the train split, extra_raccoons, night positives, the other
  negatives and night negatives.
- night_extra (real night camera-trap photos): split by SOURCE repository, not by hash
  (``NIGHT_EXTRA_VAL_SOURCES`` validate the classifier stage); its training sources' raccoons and
  raccoon-free photos train the detector too, and their infrared frames serve as backgrounds for
  pasted night raccoons (``write_plan``).
Boxes here are pixels (xmin, ymin, xmax, ymax) of the original image, as in the CSVs.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2

from raccoon_watch.config import shared_dir
from raccoon_watch.recognition.imagemode import IR, image_mode
from train.voc import BoxRow, read_csv, write_csv

HOLDOUT_MODULO = 5  # one negative in five is held out for the false-alert test
NIGHT_EXTRA = "night_extra"  # real night photos: labels.csv (boxes of every animal), images/
# night_extra is split by SOURCE repository (a camera set is entirely in one part). These validate:
# the only real infrared raccoons (alnah005's barn cameras, with their skunks) and iWildCam's IR
# coyotes, foxes, opossum and empty frames; vhshen's 43 IR foxes, MLWIC, visipedia, MegaDetector's
# fox and the flash raccoon train.
NIGHT_EXTRA_VAL_SOURCES = frozenset({"alnah005/raccoon_identification", "bw4sz/iwildcam_comp"})
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Entry:
    """One image and its boxes, pixels (xmin, ymin, xmax, ymax); no boxes = negative image."""

    path: Path
    boxes_px: tuple[tuple[int, int, int, int], ...] = ()
    labels: tuple[str, ...] = ()

    @property
    def is_negative(self) -> bool:
        return not self.boxes_px


def name_hash(name: str) -> int:
    """Stable across machines and Python runs (unlike hash())."""
    return int(hashlib.md5(name.encode()).hexdigest()[:12], 16)


def entries_from_csv(csv_path: Path, image_dir: Path) -> list[Entry]:
    """Group CSV rows by filename, sorted by filename."""
    grouped: dict[str, list] = {}
    for row in read_csv(csv_path):
        grouped.setdefault(row.filename, []).append(row)
    return [
        Entry(image_dir / name,
              tuple((r.xmin, r.ymin, r.xmax, r.ymax) for r in rows),
              tuple(r.label for r in rows))
        for name, rows in sorted(grouped.items())
    ]


def entries_from_dir(image_dir: Path) -> list[Entry]:
    """Every image in a folder as a negative, sorted by name."""
    return [Entry(p) for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]


@dataclass(frozen=True, slots=True)
class NightExtraPhoto:
    """One ../shared/data/night_extra photo: ``entry`` holds its raccoon boxes only (none: a
    raccoon-free photo), ``animals`` every other animal's box, pixels (xmin, ymin, xmax, ymax)."""

    entry: Entry
    animals: tuple[tuple[int, int, int, int], ...]
    source: str


def night_extra_photos(shared_data: Path, part: str) -> list[NightExtraPhoto]:
    """The night_extra photos of one part ("val": ``NIGHT_EXTRA_VAL_SOURCES``, "train": the rest),
    sorted by file name; [] when the folder is absent."""
    folder = shared_data / NIGHT_EXTRA
    if not (folder / "labels.csv").is_file():
        return []

    rows_by_file: dict[str, list[dict[str, str]]] = {}
    with (folder / "labels.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            rows_by_file.setdefault(row["filename"], []).append(row)
    out = []
    for name, rows in sorted(rows_by_file.items()):
        source = rows[0]["repo"]
        if (source in NIGHT_EXTRA_VAL_SOURCES) != (part == "val"):
            continue
        boxed = [r for r in rows if r["xmin"]]
        def box(r: dict[str, str]) -> tuple[int, int, int, int]:
            return int(r["xmin"]), int(r["ymin"]), int(r["xmax"]), int(r["ymax"])
        raccoons = tuple(box(r) for r in boxed if r["class"] == "raccoon")
        out.append(NightExtraPhoto(
            Entry(folder / "images" / name, raccoons, tuple("raccoon" for _ in raccoons)),
            tuple(box(r) for r in boxed if r["class"] != "raccoon"), source))
    return out


def _by_hash(entries: list[Entry]) -> list[Entry]:
    return sorted(entries, key=lambda e: name_hash(e.path.name))


@dataclass(frozen=True)
class DataPlan:
    train: list[Entry]
    val: list[Entry]
    test: list[Entry]
    heldout_negatives: list[Entry]


def make_plan(shared_data: Path, val_positives: int = 40, val_negatives: int = 40) -> DataPlan:
    """Split ../shared/data (or a user's folder with the same layout) as described above."""
    raccoons = shared_data / "raccoon_dataset"
    train_pos = entries_from_csv(raccoons / "train_labels.csv", raccoons / "images")
    test = entries_from_csv(raccoons / "test_labels.csv", raccoons / "images")
    if val_positives >= len(train_pos):
        raise ValueError(f"val_positives {val_positives} >= {len(train_pos)} training positives")
    extra = entries_from_csv(shared_data / "extra_raccoons/positives.csv", shared_data / "extra_raccoons")
    night_pos = entries_from_csv(shared_data / "night/positives/positives.csv", shared_data / "night/positives")
    negatives = entries_from_dir(shared_data / "negatives")
    heldout = [e for e in negatives if name_hash(e.path.name) % HOLDOUT_MODULO == 0]
    day_neg = _by_hash([e for e in negatives if name_hash(e.path.name) % HOLDOUT_MODULO != 0])
    night_neg = _by_hash(entries_from_dir(shared_data / "night/negatives"))
    pos_sorted = _by_hash(train_pos)
    n_day, n_night = val_negatives - val_negatives // 2, val_negatives // 2
    val = pos_sorted[:val_positives] + day_neg[:n_day] + night_neg[:n_night]
    train = pos_sorted[val_positives:] + extra + night_pos + day_neg[n_day:] + night_neg[n_night:]
    return DataPlan(train=train, val=val, test=test, heldout_negatives=heldout)


def write_plan(plan: DataPlan, shared_data: Path, out_dir: Path, limit: int | None = None) -> dict[str, Path]:
    """Files for the csv2tfrecord / evaluate stages: positives CSVs of the raccoon dataset's train
    and val parts (same rows and pixels as train_labels.csv) and image lists (.txt, absolute paths)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    raccoons = shared_data / "raccoon_dataset"
    rows = read_csv(raccoons / "train_labels.csv")
    val_names = {e.path.name for e in plan.val if not e.is_negative}
    train_names = {e.path.name for e in plan.train if not e.is_negative and e.path.parent == raccoons / "images"}
    files = {"train_positives": out_dir / "train_positives.csv", "val_positives": out_dir / "val_positives.csv"}
    write_csv([r for r in rows if r.filename in train_names], files["train_positives"])
    write_csv([r for r in rows if r.filename in val_names], files["val_positives"])
    night_dir = (shared_data / "night" / "negatives").resolve()
    lists = {
        "train_negatives": [e for e in plan.train if e.is_negative],
        "night_negatives": [e for e in plan.train + plan.val if e.is_negative and e.path.resolve().parent == night_dir],
        "val_negatives": [e for e in plan.val if e.is_negative],
        "heldout_negatives": plan.heldout_negatives,
    }
    extra = night_extra_photos(shared_data, "train")
    extra_free = [p.entry for p in extra if p.entry.is_negative][:limit]
    lists["night_extra_train_negatives"] = extra_free
    lists["night_negatives"] += [e for e in extra_free if _is_ir(e.path)]  # real IR backgrounds to paste onto
    files["night_extra_train_positives"] = out_dir / "night_extra_train_positives.csv"
    write_csv([BoxRow(p.entry.path.name, *_size(p.entry.path), "raccoon", *box)
               for p in extra for box in p.entry.boxes_px], files["night_extra_train_positives"])
    for name, entries in lists.items():
        files[name] = out_dir / f"{name}.txt"
        files[name].write_text("".join(f"{e.path.resolve()}\n" for e in entries))
    return files


def _size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: cannot decode image")
    return int(image.shape[1]), int(image.shape[0])


def _is_ir(path: Path) -> bool:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return image is not None and image_mode(image) == IR


def default_shared_data() -> Path:
    """The shared/ folder's data/ (``raccoon_watch.config.shared_dir``)."""
    return shared_dir() / "data"


def limited(plan: DataPlan, limit: int) -> DataPlan:
    """N positives + N negatives of each part (smoke tests)."""
    return DataPlan(*(_first_of_each(getattr(plan, f), limit) for f in ("train", "val", "test", "heldout_negatives")))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m train split``."""
    parser.add_argument("--shared-data", type=Path, default=default_shared_data(), help="folder laid out like ../shared/data")
    parser.add_argument("--output", type=Path, required=True, help="folder for the split CSVs and image lists")
    parser.add_argument("--val-positives", type=int, default=40)
    parser.add_argument("--val-negatives", type=int, default=40)
    parser.add_argument("--limit", type=int, help="keep N positives + N negatives per split (smoke tests)")


def _first_of_each(entries: list[Entry], limit: int) -> list[Entry]:
    return [e for e in entries if not e.is_negative][:limit] + [e for e in entries if e.is_negative][:limit]


def main(args: argparse.Namespace) -> int:
    plan = make_plan(args.shared_data, args.val_positives, args.val_negatives)
    if args.limit:  # smoke tests: N positives + N negatives per split
        plan = limited(plan, args.limit)
    files = write_plan(plan, args.shared_data, args.output, args.limit)
    for name in ("train", "val", "test", "heldout_negatives"):
        entries = getattr(plan, name)
        print(f"split {name}: {len(entries)} images, {sum(e.is_negative for e in entries)} without raccoons")
    print(f"split: wrote {', '.join(str(p) for p in files.values())}")
    return 0
