"""Stage 4: score a detector's predictions against a ground-truth CSV and negative images.

Predictions use the daemon's ``raccoon-watch detect --json`` format, one JSON object per line::

    {"image": PATH, "width": W, "height": H,
     "detections": [{"label": "raccoon", "score": 0.93, "box": [xmin, ymin, xmax, ymax]}]}

with boxes in pixels of the original image. Images are matched to the CSV's ``filename`` column and
to the negative images by file name (basename), so names must be unique across both.

Command line (mounted by ``python -m train evaluate``)::

    # run a TFLite model and score it
    python -m train evaluate --model models/raccoon/model_int8.tflite --label-map models/raccoon/labelmap.txt \
        --csv ../shared/data/raccoon_dataset/test_labels.csv --images ../shared/data/raccoon_dataset/images \
        --negatives work/negatives_holdout.txt --threshold 0.5 --output work/eval/metrics.json
    # or score predictions made elsewhere (raccoon-watch detect --json ... > preds.jsonl)
    python -m train evaluate --predictions preds.jsonl --csv ... --images ... --output work/eval/metrics.json
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import structlog

from train import metrics
from train.voc import BoxRow, read_csv

log = structlog.get_logger(__name__)

DEFAULT_THRESHOLD = 0.5
SWEEP_THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))  # 0.05 .. 0.95
COCO_TO_RACCOON = {"cat": "raccoon", "dog": "raccoon", "bear": "raccoon"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
JSON_DIGITS = 4

Record = dict  # one `detect --json` line: {"image", "width", "height", "detections": [...]}


def read_detections(path: str | Path) -> list[Record]:
    """Read ``detect --json`` lines (boxes pixels xmin, ymin, xmax, ymax); blank lines are skipped."""
    path = Path(path)
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} line {number}: not JSON: {exc}") from None
        if not isinstance(record, dict) or "image" not in record or "detections" not in record:
            raise ValueError(f"{path} line {number}: expected an object with 'image' and 'detections'")
        records.append(record)
    return records


def write_detections(records: Iterable[Record], path: str | Path) -> int:
    """Write records as ``detect --json`` lines; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
            count += 1
    return count


def remap_labels(records: Iterable[Record], mapping: Mapping[str, str], drop_unmapped: bool = True) -> list[Record]:
    """Rename detection labels (e.g. cat/dog/bear -> raccoon); others are dropped unless drop_unmapped=False.

    Boxes are left as they are (pixels xmin, ymin, xmax, ymax); no NMS across the merged classes.
    """
    remapped = []
    for record in records:
        detections = [
            {**d, "label": mapping.get(d["label"], d["label"])}
            for d in record["detections"]
            if d["label"] in mapping or not drop_unmapped
        ]
        remapped.append({**record, "detections": detections})
    return remapped


def parse_mapping(text: str) -> dict[str, str]:
    """'cat=raccoon,dog=raccoon' -> {'cat': 'raccoon', 'dog': 'raccoon'}."""
    mapping = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        source, sep, target = item.partition("=")
        if not sep or not source.strip() or not target.strip():
            raise ValueError(f"--remap: expected FROM=TO pairs separated by commas, got {item!r}")
        mapping[source.strip()] = target.strip()
    return mapping


def records_to_predictions(records: Iterable[Record]) -> dict[str, list[metrics.PredBox]]:
    """Records -> ``{basename: [PredBox]}``, boxes pixels (xmin, ymin, xmax, ymax)."""
    preds: dict[str, list[metrics.PredBox]] = {}
    for record in records:
        image_id = Path(record["image"]).name
        boxes = [metrics.PredBox(d["label"], float(d["score"]), tuple(float(v) for v in d["box"])) for d in record["detections"]]
        preds.setdefault(image_id, []).extend(boxes)
    return preds


def ground_truth(rows: Sequence[BoxRow], negative_images: Sequence[str | Path] = ()) -> dict[str, list[metrics.GtBox]]:
    """CSV rows (pixels) + negative image paths -> ``{basename: [GtBox]}``; negatives map to []."""
    gt: dict[str, list[metrics.GtBox]] = {}
    for row in rows:
        box = (float(row.xmin), float(row.ymin), float(row.xmax), float(row.ymax))
        gt.setdefault(row.filename, []).append(metrics.GtBox(row.label, box, row.difficult))
    for path in negative_images:
        name = Path(path).name
        if name in gt:
            raise ValueError(f"negative image {path}: its name {name!r} is also a labelled image or a duplicate")
        gt[name] = []
    return gt


# ---------------------------------------------------------------- running a TFLite SSD

ROLE_KEYWORDS = {"boxes": ("box",), "classes": ("class",), "scores": ("score",), "count": ("num", "count")}
POSTPROCESS_SUFFIX = {"": "boxes", ":1": "classes", ":2": "scores", ":3": "count"}  # TFLite_Detection_PostProcess
FLOAT_INPUT_MEAN = 127.5  # float SSD-MobileNet inputs are (rgb - 127.5) / 127.5, in [-1, 1]
FLOAT_INPUT_STD = 127.5
INT8_ZERO_SHIFT = 128  # int8 input: uint8 pixel - 128, the same real value as the uint8 model sees


def _roles_by_name(outputs: list[dict]) -> dict[str, int]:
    """Output role -> output index from tensor names (keywords, or the PostProcess op's :1/:2/:3)."""
    roles: dict[str, int] = {}
    for i, detail in enumerate(outputs):
        name = detail["name"].lower()
        for role, words in ROLE_KEYWORDS.items():
            if any(word in name for word in words) and role not in roles:
                roles[role] = i
        if "tflite_detection_postprocess" in name:
            suffix = name[name.index("tflite_detection_postprocess") + len("tflite_detection_postprocess"):]
            roles.setdefault(POSTPROCESS_SUFFIX.get(suffix, "?"), i)
    roles.pop("?", None)
    return roles


def _roles_by_shape(outputs: list[dict], values: list[np.ndarray]) -> dict[str, int]:
    """Output role -> index from shapes ([1,N,4] boxes, one-element count) and values (integral classes)."""
    boxes = [i for i, d in enumerate(outputs) if len(d["shape"]) == 3 and d["shape"][-1] == 4]
    count = [i for i, d in enumerate(outputs) if int(np.prod(d["shape"])) == 1]
    pair = [i for i in range(len(outputs)) if i not in boxes + count]
    if len(boxes) != 1 or len(count) != 1 or len(pair) != 2:
        shapes = [list(d["shape"]) for d in outputs]
        raise ValueError(f"not an SSD with boxes/classes/scores/count outputs: output shapes {shapes}")
    integral = [bool(np.all(np.equal(np.mod(values[i], 1), 0))) for i in pair]
    classes = pair[1] if integral == [False, True] else pair[0]  # ambiguous: standard order
    return {"boxes": boxes[0], "count": count[0], "classes": classes, "scores": pair[1] if classes == pair[0] else pair[0]}


def identify_outputs(outputs: list[dict], values: list[np.ndarray]) -> dict[str, int]:
    """Map roles boxes/classes/scores/count to output indices: by name when all four are named
    unambiguously, otherwise by shape and value (classes are whole numbers, scores are not)."""
    by_name = _roles_by_name(outputs)
    if len(by_name) == 4 and len(set(by_name.values())) == 4:
        return by_name
    return _roles_by_shape(outputs, values)


def _input_tensor(rgb: np.ndarray, detail: dict) -> np.ndarray:
    """Resize an RGB uint8 image to the model input and convert to its dtype: (1, h, w, 3)."""
    import cv2

    _, height, width, _ = detail["shape"]
    resized = cv2.resize(rgb, (int(width), int(height)), interpolation=cv2.INTER_LINEAR)
    dtype = detail["dtype"]
    if dtype == np.uint8:
        tensor = resized
    elif dtype == np.int8:
        tensor = (resized.astype(np.int16) - INT8_ZERO_SHIFT).astype(np.int8)
    elif dtype == np.float32:
        tensor = ((resized.astype(np.float32) - FLOAT_INPUT_MEAN) / FLOAT_INPUT_STD).astype(np.float32)
    else:
        raise ValueError(f"unsupported model input dtype {dtype}")
    return tensor[None]


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # BGR, EXIF orientation applied
    if image is None:
        raise ValueError(f"{path}: image missing or does not decode")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _record(path: Path, shape: tuple[int, ...], out: dict[str, np.ndarray], labels: Sequence[str], min_score: float) -> Record:
    """Model outputs (boxes ymin,xmin,ymax,xmax normalised) -> record with pixel xmin,ymin,xmax,ymax."""
    height, width = shape[:2]
    detections = []
    count = int(np.asarray(out["count"]).reshape(-1)[0])
    for box, cls, score in zip(out["boxes"][0][:count], out["classes"][0][:count], out["scores"][0][:count]):
        cls = int(round(float(cls)))
        if score < min_score or not 0 <= cls < len(labels):
            continue
        ymin, xmin, ymax, xmax = np.clip(box, 0.0, 1.0)
        pixel_box = [round(float(xmin * width), 2), round(float(ymin * height), 2),
                     round(float(xmax * width), 2), round(float(ymax * height), 2)]
        detections.append({"label": labels[cls], "score": round(float(score), 5), "box": pixel_box})
    return {"image": str(path), "width": int(width), "height": int(height), "detections": detections}


def predict_with_tflite(
    model_path: str | Path, images: Iterable[str | Path], labels: Sequence[str],
    min_score: float = 0.01, num_threads: int = 2,
) -> Iterator[Record]:
    """Run a TFLite SSD (outputs boxes [1,N,4] ymin,xmin,ymax,xmax normalised, classes [1,N] 0-based,
    scores [1,N], count [1]) on image files; yields ``detect --json`` records (pixel xmin,ymin,xmax,ymax).

    labels[k] names 0-based class k (``train.tfrecord.read_label_map`` gives that list). Input:
    uint8 fed raw RGB, int8 as RGB - 128, float32 as (RGB - 127.5) / 127.5.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    outputs = interpreter.get_output_details()
    roles: dict[str, int] | None = None
    for path in map(Path, images):
        rgb = _read_rgb(path)
        interpreter.set_tensor(input_detail["index"], _input_tensor(rgb, input_detail))
        interpreter.invoke()
        values = [interpreter.get_tensor(d["index"]) for d in outputs]
        roles = roles or identify_outputs(outputs, values)
        yield _record(path, rgb.shape, {role: values[i] for role, i in roles.items()}, labels, min_score)
