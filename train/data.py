"""tf.data input for SSD training: decoded examples -> augmentation -> 300x300 -> anchor targets.

An example is (image RGB uint8 (H, W, 3), boxes float32 (N, 4) [ymin, xmin, ymax, xmax]
normalised, labels int64 (N,) 1-based). Sources: image files of a ``splits.DataPlan`` or TFRecords
written by ``train.tfrecord``. Augmentation (numpy + cv2, doorbell-minded: flips, SSD crops,
zoom-out, colour jitter, grayscale, night/IR look, blur) runs in a Python generator; anchor
matching and box encoding run as TF ops in the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tensorflow as tf

from train.config import MixConfig
from train.ssd.targets import TargetAssigner

INPUT_SIZE = 300
CACHE_MAX_SIDE = 512  # decoded images are kept in memory at most this large
ALERT_LABEL_ID = 1  # cfg.data.labels[0], the class the daemon alerts on; decoys follow (2, 3, ...)
TRAIN_MIN_BOX_SIDE = 0.02  # after augmentation, boxes thinner than 6 px of 300 are dropped


@dataclass
class Example:
    image: np.ndarray  # RGB uint8 (H, W, 3)
    boxes: np.ndarray  # float32 (N, 4) [ymin, xmin, ymax, xmax] normalised
    labels: np.ndarray  # int64 (N,), 1-based class ids
    night: bool = False  # an IR night frame: copy-paste background, and its own false-alert group in validation


def load_image_rgb(path: Path, max_side: int = CACHE_MAX_SIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode to RGB uint8, shrunk so the longer side is at most max_side; also the file's
    (width, height), which the CSV pixels refer to."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path}: cannot decode image")
    size = (image.shape[1], image.shape[0])
    scale = max_side / max(image.shape[:2])
    if scale < 1.0:
        image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(image[:, :, ::-1]), size


def examples_from_entries(entries, label_ids: dict[str, int], max_side: int = CACHE_MAX_SIDE) -> list[Example]:
    """splits.Entry list (pixel boxes (xmin, ymin, xmax, ymax)) -> Examples with normalised yxyx boxes."""
    examples = []
    for entry in entries:
        image, (width, height) = load_image_rgb(entry.path, max_side)
        boxes = np.array([[y0 / height, x0 / width, y1 / height, x1 / width]
                          for x0, y0, x1, y1 in entry.boxes_px], np.float32).reshape(-1, 4)
        labels = np.array([label_ids[name] for name in entry.labels], np.int64)
        examples.append(Example(image, np.clip(boxes, 0.0, 1.0), labels))
    return examples


def examples_from_tfrecords(paths, max_side: int = CACHE_MAX_SIDE) -> tuple[list[Example], list[str]]:
    """TFRecords of ``train.tfrecord`` -> (Examples with boxes [ymin, xmin, ymax, xmax] normalised,
    their image file names)."""
    from train.tfrecord import parse_example

    examples, names = [], []
    for serialized in tf.data.TFRecordDataset([str(p) for p in paths]):
        parsed = parse_example(serialized)
        image = parsed["image"].numpy()
        scale = max_side / max(image.shape[:2])
        if scale < 1.0:
            image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        examples.append(Example(image, parsed["boxes"].numpy().astype(np.float32).reshape(-1, 4),
                                parsed["labels"].numpy().astype(np.int64).reshape(-1)))
        names.append(Path(parsed["filename"].numpy().decode()).name)
    return examples, names


def has_label(example: Example, label: int) -> bool:
    return bool(np.any(example.labels == label))


def load_crops(crop_dir: Path, max_side: int = 256, limit: int | None = None) -> list[np.ndarray]:
    """Raccoon crops (RGB uint8) for copy-paste; each whole crop is one object. ``limit``: the first N only."""
    return [load_image_rgb(p, max_side)[0] for p in sorted(crop_dir.glob("*.jpg"))[:limit]]


def to_model_input(image_rgb_uint8: np.ndarray) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> float32 (300, 300, 3) in [-1, 1], like the TFLite input quantization."""
    resized = cv2.resize(image_rgb_uint8, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
    return (resized.astype(np.float32) - 128.0) / 128.0


def _sample_source(rng, sources: dict[str, list], mix: MixConfig) -> str:
    names = [n for n in ("positives", "negatives", "copy_paste_night") if sources.get(n)]
    weights = np.array([getattr(mix, n) for n in names], np.float64)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def training_examples(examples: list[Example], night_backgrounds: list[Example], crops: list[np.ndarray],
                      aug_cfg, mix: MixConfig, seed: int, raccoon_label: int = ALERT_LABEL_ID):
    """Endless generator of augmented (image (300, 300, 3) float32 in [-1, 1], boxes (N, 4)
    [ymin, xmin, ymax, xmax] normalised, labels (N,) int64)."""
    from train.augment import augment_with_labels, copy_paste_night

    rng = np.random.default_rng(seed)
    sources = {  # raccoon-free images with decoy boxes (cats, dogs) are negatives for the mix
        "positives": [e for e in examples if has_label(e, raccoon_label)],
        "negatives": [e for e in examples if not has_label(e, raccoon_label)],
        "copy_paste_night": night_backgrounds if crops else [],
    }
    while True:
        source = _sample_source(rng, sources, mix)
        pool = sources[source]
        example = pool[int(rng.integers(len(pool)))]
        image, boxes, labels = example.image, example.boxes, example.labels
        if source == "copy_paste_night":
            image, boxes = copy_paste_night(image, crops[int(rng.integers(len(crops)))], rng)
            labels = np.full(len(boxes), raccoon_label, np.int64)
        image, boxes, labels = augment_with_labels(image, boxes, labels, rng, aug_cfg, INPUT_SIZE,
                                                   min_box_side=TRAIN_MIN_BOX_SIDE)
        yield to_model_input(image), boxes.astype(np.float32), labels.astype(np.int64)


def make_train_dataset(generator_fn, assigner: TargetAssigner, batch_size: int) -> tf.data.Dataset:
    """-> batches (images (B, 300, 300, 3), cls_targets (B, A) int32, reg_targets (B, A, 4))."""
    signature = (
        tf.TensorSpec((INPUT_SIZE, INPUT_SIZE, 3), tf.float32),
        tf.TensorSpec((None, 4), tf.float32),
        tf.TensorSpec((None,), tf.int64),
    )
    dataset = tf.data.Dataset.from_generator(generator_fn, output_signature=signature)

    def with_targets(image, boxes, labels):
        cls_targets, reg_targets = assigner(boxes, labels)
        return image, cls_targets, reg_targets

    dataset = dataset.map(with_targets, num_parallel_calls=1)
    # Fixed parallelism and buffer, so nothing to autotune. Autotune's model thread also held the
    # end of every multi-worker run 10-40 s, idle: deleting the iterator waits for that thread,
    # which sat in its timed wait (Model::OptimizeLoop).
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.batch(batch_size, drop_remainder=True).prefetch(2).with_options(options)


def eval_inputs(examples: list[Example]) -> np.ndarray:
    """Examples -> float32 (N, 300, 300, 3) in [-1, 1], plain resize (no augmentation)."""
    return np.stack([to_model_input(e.image) for e in examples]) if examples else np.zeros((0, 300, 300, 3), np.float32)
