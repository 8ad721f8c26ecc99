"""The classifier's crop dataset: what the proposer will hand the classifier, labelled.

Positives (label 1):
- the raccoon boxes of the split's images (raccoon dataset, extra_raccoons, night frames), each
  cut several times with its box jittered (shift, scale, aspect), since proposals are never exact;
- the proposer's own boxes that overlap a raccoon (IoU >= POSITIVE_IOU);
- the night crops (../shared/data/night/positives_crops: each file is one raccoon, box = the
  whole file), and the same crops pasted small onto night frames of the same part (distant, soft,
  IR-lit raccoons, as a porch camera sees them).
Negatives (label 0):
- the proposer's boxes on raccoon-free photos (what it fires on: cats, dogs, bowls, shadows), and
  on raccoon photos away from any raccoon (IoU < BACKGROUND_IOU);
- the stock COCO detector's animal boxes on raccoon-free photos (the look-alikes it must be told
  from, even where the proposer missed them);
- random background boxes of raccoon-free photos;
- real night photos (../shared/data/night_extra, split by source repository): their raccoons are
  positives like any split image's, every labelled fox, coyote, skunk, bobcat and opossum box a
  negative (``night_extra_specs``);
- those look-alikes pasted small onto night frames, as many as the pasted raccoons (below), so
  that a gray, soft, pasted animal is not a raccoon by its look alone.

The split (``train.splits.make_plan``) decides which images train and which validate; the night
crops and the ENA24 camera-trap frames are split here by SOURCE (a camera or a site is entirely
in one part), never by frame. Groups "day" / "night" follow the source folder (night/, ENA24 IR).

Crops are cut by ``raccoon_watch.recognition.recognizer.classifier_crop``, the function the daemon uses, at
the classifier's input size, and stored as uint8 RGB in one ``.npz`` per part.
Boxes here are normalised (xmin, ymin, xmax, ymax) of the image (``raccoon_watch.types.Box``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import structlog

from raccoon_watch.config import DetectorConfig
from raccoon_watch.recognition.detectors import create_detector
from raccoon_watch.recognition.recognizer import DEFAULT_MARGIN, classifier_crop
from raccoon_watch.types import Box, box_iou
from train import splits
from train.augment import is_grayish
from train.classifier.model import INPUT_SIZE
from train.splits import NIGHT_EXTRA, NIGHT_EXTRA_VAL_SOURCES, night_extra_photos  # noqa: F401 (re-exported)

log = structlog.get_logger(__name__)

POSITIVE_IOU = 0.5
BACKGROUND_IOU = 0.1
PROPOSER_MIN_SCORE = 0.02  # negatives: everything the proposer could hand over at a low threshold
COCO_MIN_SCORE = 0.3
COCO_ANIMALS = frozenset({"bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
                          "giraffe", "teddy bear"})
POSITIVE_JITTERS = 4  # crops per labelled raccoon box
NIGHT_CROP_JITTERS = 2
BACKGROUND_PER_IMAGE = 2
VAL_NIGHT_CROP_GROUPS_EXCLUDED = ("bcc_crop_game",)  # the big group trains; the other cameras validate
ENA24_VAL_MODULO = 3  # one ENA24 frame in three (by name hash) validates
NIGHT_EXTRA_ANIMAL_JITTERS = {"train": 3, "val": 1}  # crops per look-alike box (a fox, a skunk)
MAX_IMAGE_SIDE = 2048  # decoded images larger than this are shrunk first (crops are 192 px anyway)


@dataclass(frozen=True, slots=True)
class CropSpec:
    """One crop to cut: an image, a normalised (xmin, ymin, xmax, ymax) box, label 1/0, group, source."""

    path: Path
    box: Box
    label: int
    group: str
    source: str


def jitter_box(box: Box, rng: np.random.Generator, shift: float = 0.12, scale: tuple[float, float] = (0.85, 1.25)) -> Box:
    """A box like a proposal of ``box``: centre moved by up to ``shift`` of its size, sides scaled."""
    xmin, ymin, xmax, ymax = box
    w, h = xmax - xmin, ymax - ymin
    cx, cy = (xmin + xmax) / 2 + rng.uniform(-shift, shift) * w, (ymin + ymax) / 2 + rng.uniform(-shift, shift) * h
    w, h = w * rng.uniform(*scale), h * rng.uniform(*scale)
    return (max(0.0, cx - w / 2), max(0.0, cy - h / 2), min(1.0, cx + w / 2), min(1.0, cy + h / 2))


def _read(path: Path) -> tuple[np.ndarray, tuple[int, int]]:
    """BGR uint8, shrunk to MAX_IMAGE_SIDE at most, and the file's own (width, height) (CSV pixels)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: cannot decode image")
    size = (image.shape[1], image.shape[0])
    scale = MAX_IMAGE_SIDE / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return image, size


def _norm(boxes_px, width: int, height: int) -> list[Box]:
    return [(x0 / width, y0 / height, x1 / width, y1 / height) for x0, y0, x1, y1 in boxes_px]


def _group(entry_path: Path, shared_data: Path, image: np.ndarray) -> str:
    parent = entry_path.resolve()
    if any((shared_data / folder).resolve() in parent.parents for folder in ("night", NIGHT_EXTRA)):
        return "night"
    if (shared_data / "ena24").resolve() in parent.parents and is_grayish(image):
        return "night"
    return "day"


class CropPlanner:
    """Turns split entries into CropSpecs, running the proposer and the COCO model once per image."""

    def __init__(self, proposer_model: Path, coco_model: Path | None, shared_data: Path, seed: int = 0) -> None:
        self.proposer = create_detector(DetectorConfig(model=proposer_model, backend="tflite"), min_score=PROPOSER_MIN_SCORE)
        self.coco = (create_detector(DetectorConfig(model=coco_model, backend="tflite"), min_score=COCO_MIN_SCORE)
                     if coco_model else None)
        self.shared_data = shared_data
        self.rng = np.random.default_rng(seed)

    def specs_for(self, entry: splits.Entry, jitters: int) -> list[CropSpec]:
        image, (width, height) = _read(entry.path)
        group = _group(entry.path, self.shared_data, image)
        out: list[CropSpec] = []
        truth = _norm(entry.boxes_px, width, height)
        for box in truth:
            out.append(CropSpec(entry.path, box, 1, group, "box"))
            out += [CropSpec(entry.path, jitter_box(box, self.rng), 1, group, "box_jitter") for _ in range(jitters - 1)]
        for det in self.proposer.detect([image])[0]:
            best = max((box_iou(det.box, t) for t in truth), default=0.0)
            if best >= POSITIVE_IOU:
                out.append(CropSpec(entry.path, det.box, 1, group, "proposal_raccoon"))
            elif best < BACKGROUND_IOU:
                out.append(CropSpec(entry.path, det.box, 0, group, "proposal"))
        if not truth:
            if self.coco is not None:
                out += [CropSpec(entry.path, d.box, 0, group, f"coco_{d.label}")
                        for d in self.coco.detect([image])[0] if d.label in COCO_ANIMALS]
            out += [CropSpec(entry.path, self._background_box(), 0, group, "background") for _ in range(BACKGROUND_PER_IMAGE)]
        return out

    def _background_box(self) -> Box:
        side = self.rng.uniform(0.1, 0.5)
        aspect = self.rng.uniform(0.6, 1.6)
        w, h = min(1.0, side * aspect), min(1.0, side / aspect)
        x, y = self.rng.uniform(0, 1 - w), self.rng.uniform(0, 1 - h)
        return (x, y, x + w, y + h)

    def close(self) -> None:
        self.proposer.close()
        if self.coco is not None:
            self.coco.close()


def night_crop_specs(shared_data: Path, part: str, rng: np.random.Generator) -> list[CropSpec]:
    """The night raccoon crops of one part ("train": the big group, "val": the other cameras)."""
    folder = shared_data / "night" / "positives_crops"
    specs = []
    for path in sorted(folder.glob("*.jpg")):
        held_out = not path.name.startswith(VAL_NIGHT_CROP_GROUPS_EXCLUDED)
        if held_out != (part == "val"):
            continue
        jitters = NIGHT_CROP_JITTERS if part == "train" else 1
        specs.append(CropSpec(path, (0.0, 0.0, 1.0, 1.0), 1, "night", "night_crop"))
        specs += [CropSpec(path, jitter_box((0.05, 0.05, 0.95, 0.95), rng), 1, "night", "night_crop_jitter")
                  for _ in range(jitters - 1)]
    return specs


PASTES_PER_NIGHT_CROP = {"train": 3, "val": 1}
SCENE_DIR = "scenes"


def _cut(spec: CropSpec) -> np.ndarray:
    """The pixels of a spec's box (RGB uint8), at least 2 x 2."""
    image, _ = _read(spec.path)
    h, w = image.shape[:2]
    x0, y0, x1, y1 = spec.box
    px0, py0 = int(x0 * w), int(y0 * h)
    px1, py1 = max(px0 + 2, int(round(x1 * w))), max(py0 + 2, int(round(y1 * h)))
    return cv2.cvtColor(image[py0:py1, px0:px1], cv2.COLOR_BGR2RGB)


def pasted_night_specs(animals: list[CropSpec], backgrounds: list[Path], part: str, out_dir: Path,
                       rng: np.random.Generator, label: int = 1, pastes: int | None = None) -> list[CropSpec]:
    """Night scenes like a porch camera's: each animal (a night raccoon crop, or a look-alike's box
    from a raccoon-free photo) pasted small onto night frames of the same part
    (``augment.copy_paste_night``: gray on IR frames, brightness matched, feathered), written as
    JPEGs under ``out_dir``; the pasted rectangle (jittered for training) is the box, ``label`` its
    label. The classifier then sees distant, soft, IR-lit animals as the proposer hands them over,
    raccoons and cats alike, so "pasted and gray" cannot mean "raccoon"."""
    from train import augment

    if not animals or not backgrounds:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    tag = "raccoon" if label else "other"
    specs = []
    for i, animal in enumerate(animals):
        crop = _cut(animal)
        for k in range(pastes if pastes is not None else PASTES_PER_NIGHT_CROP[part]):
            background = cv2.cvtColor(_read(backgrounds[int(rng.integers(len(backgrounds)))])[0], cv2.COLOR_BGR2RGB)
            image, boxes = augment.copy_paste_night(background, crop, rng)
            path = out_dir / f"{part}_{tag}_{i:03d}_{k}.jpg"
            cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(60, 95))])
            ymin, xmin, ymax, xmax = (float(v) for v in boxes[0])
            box = (xmin, ymin, xmax, ymax)
            specs.append(CropSpec(path, box if part == "val" else jitter_box(box, rng), label, "night",
                                  "night_pasted" if label else "night_pasted_other"))
    return specs


def night_extra_specs(photos: list[splits.NightExtraPhoto], planner: CropPlanner, part: str) -> list[CropSpec]:
    """Crops of real night photos: as ``CropPlanner.specs_for`` cuts any split image (raccoons and
    their jitters positive; the proposer's boxes away from raccoons, COCO animals and background
    negative), plus every labelled look-alike (fox, coyote, skunk, ...) box as a negative."""
    specs: list[CropSpec] = []
    for photo in photos:
        specs += planner.specs_for(photo.entry, POSITIVE_JITTERS if part == "train" else 1)
        _, (width, height) = _read(photo.entry.path)
        for box in _norm(photo.animals, width, height):
            specs.append(CropSpec(photo.entry.path, box, 0, "night", "night_extra_animal"))
            specs += [CropSpec(photo.entry.path, jitter_box(box, planner.rng), 0, "night", "night_extra_animal")
                      for _ in range(NIGHT_EXTRA_ANIMAL_JITTERS[part] - 1)]
    return specs


def ena24_entries(shared_data: Path, part: str) -> list[splits.Entry]:
    """ENA24 camera-trap frames (raccoon-free) of one part, by name hash."""
    entries = splits.entries_from_dir(shared_data / "ena24") if (shared_data / "ena24").is_dir() else []
    return [e for e in entries if (splits.name_hash(e.path.name) % ENA24_VAL_MODULO == 0) == (part == "val")]


def plan_crops(plan: splits.DataPlan, planner: CropPlanner, shared_data: Path, out_dir: Path,
               night_extra: bool = False) -> dict[str, list[CropSpec]]:
    """{"train": [...], "val": [...]}; the test split and the held-out negatives are never used.
    Pasted night scenes are written under ``out_dir/scenes``."""
    parts = {"train": plan.train + ena24_entries(shared_data, "train"), "val": plan.val + ena24_entries(shared_data, "val")}
    night_dir = (shared_data / "night").resolve()
    out = {}
    for part, entries in parts.items():
        jitters = POSITIVE_JITTERS if part == "train" else 1
        specs = [s for e in entries for s in planner.specs_for(e, jitters)]
        night_crops = night_crop_specs(shared_data, part, planner.rng)
        backgrounds = [e.path for e in entries if e.is_negative and night_dir in e.path.resolve().parents]
        raccoons = [c for c in night_crops if c.source == "night_crop"]
        pasted = pasted_night_specs(raccoons, backgrounds, part, out_dir / SCENE_DIR, planner.rng)
        look_alikes = [c for c in specs if c.source.startswith("coco_")]  # cats, dogs, ... of raccoon-free photos
        pasted += pasted_night_specs(look_alikes, backgrounds, part, out_dir / SCENE_DIR, planner.rng, label=0,
                                     pastes=max(1, round(len(pasted) / max(len(look_alikes), 1))))
        extra = night_extra_specs(night_extra_photos(shared_data, part), planner, part) if night_extra else []
        out[part] = specs + night_crops + pasted + extra
    return out


def cut_crops(specs: list[CropSpec], size: int = INPUT_SIZE, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """(N, size, size, 3) uint8 RGB, each image decoded once."""
    out = np.zeros((len(specs), size, size, 3), np.uint8)
    by_path: dict[Path, list[int]] = {}
    for i, spec in enumerate(specs):
        by_path.setdefault(spec.path, []).append(i)
    for path, indices in by_path.items():
        image, _ = _read(path)
        for i in indices:
            out[i] = classifier_crop(image, specs[i].box, margin, (size, size))
    return out


def save_part(specs: list[CropSpec], crops: np.ndarray, path: Path) -> None:
    save_arrays({"crops": crops, "labels": np.array([s.label for s in specs], np.int8),
                 "groups": np.array([s.group for s in specs]), "sources": np.array([s.source for s in specs]),
                 "files": np.array([str(s.path) for s in specs]), "boxes": np.array([s.box for s in specs], np.float32)},
                path)


def save_arrays(arrays: dict[str, np.ndarray], path: Path) -> None:
    """One part's arrays (as ``load_part`` returns them) into ``path``: a temp file, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_part(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m train crops``."""
    parser.add_argument("--shared-data", type=Path, default=splits.default_shared_data(), help="folder laid out like ../shared/data")
    parser.add_argument("--proposer", type=Path, required=True, help="the detector (model folder or .tflite) that proposes candidates")
    parser.add_argument("--coco-model", type=Path, help="stock COCO TFLite whose animal boxes become negatives")
    parser.add_argument("--output", type=Path, required=True, help="folder for train.npz, val.npz and crops.json")
    parser.add_argument("--margin", type=float, default=DEFAULT_MARGIN, help="context around each box (share of its longer side)")
    parser.add_argument("--limit", type=int, help="N positives + N negatives per split (smoke tests)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--night-extra", action="store_true",
                        help="add night_extra's crops (split by source; off in the shipped recipe, train/README.md § 5b)")


def main(args: argparse.Namespace) -> int:
    plan = splits.make_plan(args.shared_data)
    if args.limit:
        plan = splits.limited(plan, args.limit)
    planner = CropPlanner(args.proposer, args.coco_model, args.shared_data, args.seed)
    try:
        parts = plan_crops(plan, planner, args.shared_data, args.output, night_extra=args.night_extra)
    finally:
        planner.close()
    summary = {}
    for part, specs in parts.items():
        if args.limit:
            specs = specs[: 20 * args.limit]
        crops = cut_crops(specs, INPUT_SIZE, args.margin)
        save_part(specs, crops, args.output / f"{part}.npz")
        summary[part] = {"crops": len(specs), "positives": sum(s.label for s in specs),
                         "by_source": dict(Counter(f"{s.source}:{s.label}" for s in specs)),
                         "by_group": dict(Counter(f"{s.group}:{s.label}" for s in specs))}
        log.info("crops_written", part=part, **{k: v for k, v in summary[part].items() if k != "by_source"})
    summary["margin"] = args.margin
    (args.output / "crops.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0
