"""Stage 2: CSV rows + images -> TFRecord with the TF Object Detection API's keys, and the label map.

Every record is one ``tf.train.Example`` with exactly the keys the OD API's ``TfExampleDecoder``
reads: ``image/encoded`` (the file's own JPEG/PNG bytes; re-encoded to JPEG only for other formats
or EXIF-rotated photos, so the decoded pixels match the labelled orientation), ``image/format``
(b"jpeg"/b"png"), ``image/filename``, ``image/source_id``, ``image/key/sha256``, ``image/height``,
``image/width`` (int64), ``image/object/bbox/{xmin,ymin,xmax,ymax}`` (float, normalised to [0, 1]),
``image/object/class/text`` (bytes), ``image/object/class/label`` (int64, label-map id from 1) and
``image/object/difficult`` (int64). Negatives are records with empty object lists.

Label map: ``item { id: 1 name: 'raccoon' }``, ids from 1 (0 is background).

Command line (mounted by ``python -m train csv2tfrecord``)::

    python -m train csv2tfrecord --csv work/labels.csv --images my_photos/images \
        --negatives my_photos/no_raccoon --output work/train.tfrecord --label-map work/labelmap.pbtxt
"""

from __future__ import annotations

import argparse
import hashlib
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import cv2
import structlog
import tensorflow as tf
from PIL import Image

from raccoon_watch.recognition.labels import is_pbtxt, parse_lines, pbtxt_items, read_label_text
from train.voc import BoxRow, default_images_dir, list_images, read_csv

log = structlog.get_logger(__name__)

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXIF_ORIENTATION_TAG = 0x0112
EXIF_UPRIGHT = 1
REENCODE_JPEG_QUALITY = 95
DEFAULT_LABELS = ("raccoon",)

# The OD API TfExampleDecoder's spec for the keys written here (object_detection/data_decoders).
FEATURE_SPEC = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/format": tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
    "image/filename": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/key/sha256": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/source_id": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/height": tf.io.FixedLenFeature((), tf.int64, default_value=1),
    "image/width": tf.io.FixedLenFeature((), tf.int64, default_value=1),
    "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/ymin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/xmax": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/ymax": tf.io.VarLenFeature(tf.float32),
    "image/object/class/label": tf.io.VarLenFeature(tf.int64),
    "image/object/class/text": tf.io.VarLenFeature(tf.string),
    "image/object/difficult": tf.io.VarLenFeature(tf.int64),
}


def _bytes(values: Sequence[bytes]) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(values)))


def _floats(values: Sequence[float]) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=list(values)))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _sniff_format(data: bytes) -> str | None:
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    return None


def encoded_image(image_path: Path) -> tuple[bytes, str, int, int]:
    """(bytes, format, width, height) as a TF decoder will see the image, EXIF orientation applied.

    Keeps the original bytes for upright JPEG/PNG; re-encodes other formats and EXIF-rotated
    photos as JPEG (TF's decoders ignore EXIF). Raises ValueError naming the file if it does not decode.
    """
    data = image_path.read_bytes()
    fmt = _sniff_format(data)
    try:
        with Image.open(io.BytesIO(data)) as pil_image:
            orientation = pil_image.getexif().get(EXIF_ORIENTATION_TAG, EXIF_UPRIGHT)
            width, height = pil_image.size
            pil_image.load()  # full decode: catches truncated files
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{image_path}: image does not decode: {exc}") from None
    if fmt is not None and orientation == EXIF_UPRIGHT:
        return data, fmt, width, height
    bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)  # applies EXIF orientation
    if bgr is None:
        raise ValueError(f"{image_path}: image does not decode with OpenCV")
    ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, REENCODE_JPEG_QUALITY])
    if not ok:
        raise ValueError(f"{image_path}: JPEG re-encoding failed")
    log.info("image_reencoded", path=str(image_path), format=fmt, exif_orientation=orientation)
    return buffer.tobytes(), "jpeg", int(bgr.shape[1]), int(bgr.shape[0])


def _label_id(label: str, label_ids: Mapping[str, int], image_path: Path) -> int:
    if label not in label_ids:
        raise ValueError(f"{image_path}: label {label!r} is not in the label map {sorted(label_ids)}")
    return label_ids[label]


def make_example(
    image_path: str | Path, boxes_rows: Sequence[BoxRow], label_ids: Mapping[str, int] | None = None
) -> tf.train.Example:
    """One OD API example; rows are pixel boxes (xmin, ymin, xmax, ymax) of this image, [] for a negative.

    Stored boxes are normalised (xmin/width, ...). label_ids maps names to ids from 1 (default:
    raccoon = 1). Raises ValueError if a row's width/height differ from the image's.
    """
    image_path = Path(image_path)
    label_ids = label_ids or {name: i + 1 for i, name in enumerate(DEFAULT_LABELS)}
    data, fmt, width, height = encoded_image(image_path)
    for row in boxes_rows:
        if (row.width, row.height) != (width, height):
            raise ValueError(f"{image_path}: CSV says {row.width}x{row.height}, image is {width}x{height} (width x height)")
    name = image_path.name.encode()
    feature = {
        "image/height": _ints([height]),
        "image/width": _ints([width]),
        "image/filename": _bytes([name]),
        "image/source_id": _bytes([name]),
        "image/key/sha256": _bytes([hashlib.sha256(data).hexdigest().encode()]),
        "image/encoded": _bytes([data]),
        "image/format": _bytes([fmt.encode()]),
        "image/object/bbox/xmin": _floats([r.xmin / width for r in boxes_rows]),
        "image/object/bbox/xmax": _floats([r.xmax / width for r in boxes_rows]),
        "image/object/bbox/ymin": _floats([r.ymin / height for r in boxes_rows]),
        "image/object/bbox/ymax": _floats([r.ymax / height for r in boxes_rows]),
        "image/object/class/text": _bytes([r.label.encode() for r in boxes_rows]),
        "image/object/class/label": _ints([_label_id(r.label, label_ids, image_path) for r in boxes_rows]),
        "image/object/difficult": _ints([int(r.difficult) for r in boxes_rows]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def rows_to_examples(
    rows: Sequence[BoxRow], images_dir: str | Path, negative_images: Iterable[str | Path] = (),
    label_ids: Mapping[str, int] | None = None,
) -> Iterator[tf.train.Example]:
    """Examples for every image of the rows (grouped by filename, CSV order), then the negatives."""
    by_image: dict[str, list[BoxRow]] = {}
    for row in rows:
        by_image.setdefault(row.filename, []).append(row)
    for filename, image_rows in by_image.items():
        yield make_example(Path(images_dir) / filename, image_rows, label_ids)
    for path in negative_images:
        yield make_example(path, [], label_ids)


def write_tfrecord(examples: Iterable[tf.train.Example | bytes], path: str | Path) -> int:
    """Write examples (or already serialised ones) to one TFRecord file; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in examples:
            writer.write(example if isinstance(example, bytes) else example.SerializeToString())
            count += 1
    log.info("tfrecord_written", path=str(path), images=count)
    return count


def _difficult_or_zeros(difficult: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
    """Records written without ``image/object/difficult`` (other tools) count as not difficult."""
    return tf.cond(tf.size(difficult) == tf.size(labels), lambda: difficult, lambda: tf.zeros_like(labels))


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Parse one serialised example (usable in ``tf.data.Dataset.map``).

    Returns ``image`` uint8 (H, W, 3), ``boxes`` float32 (N, 4) as [ymin, xmin, ymax, xmax]
    normalised, ``labels`` int64 (N,) label-map ids from 1, ``difficult`` int64 (N,), ``filename``
    string, ``height``/``width`` int64.
    """
    features = tf.io.parse_single_example(serialized, FEATURE_SPEC)
    dense = {key: tf.sparse.to_dense(value) for key, value in features.items() if isinstance(value, tf.SparseTensor)}
    image = tf.io.decode_image(features["image/encoded"], channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    boxes = tf.stack(
        [dense["image/object/bbox/ymin"], dense["image/object/bbox/xmin"],
         dense["image/object/bbox/ymax"], dense["image/object/bbox/xmax"]], axis=1)  # (N, 4)
    return {
        "image": tf.cast(image, tf.uint8),
        "boxes": tf.reshape(boxes, [-1, 4]),
        "labels": dense["image/object/class/label"],
        "difficult": _difficult_or_zeros(dense["image/object/difficult"], dense["image/object/class/label"]),
        "filename": features["image/filename"],
        "height": features["image/height"],
        "width": features["image/width"],
    }


# ---------------------------------------------------------------- label map


def write_label_map(labels: Sequence[str], path: str | Path) -> None:
    """Write ``item { id: k name: '...' }`` entries, label i getting id i + 1 (0 is background)."""
    if not labels or len(set(labels)) != len(labels):
        raise ValueError(f"{path}: labels must be non-empty and unique, got {list(labels)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    items = [f"item {{\n  id: {i + 1}\n  name: '{name}'\n}}\n" for i, name in enumerate(labels)]
    path.write_text("\n".join(items))


def read_label_map(path: str | Path) -> list[str]:
    """Labels in id order: element k is id k + 1, i.e. the 0-based class k of a TFLite SSD's output.

    Parsed by the daemon's reader, ``raccoon_watch.recognition.labels`` (``.pbtxt`` and one-label-per-line lists,
    a first line '???' or 'background' being the background), whose tuples start with the background
    at index 0: dropped here. A ``.pbtxt`` written for training must also number its ids 1..n.
    """
    text = read_label_text(path)
    if not is_pbtxt(path, text):
        return list(parse_lines(text, str(path))[1:])
    by_id = pbtxt_items(text, str(path))
    if sorted(by_id) != list(range(1, len(by_id) + 1)):
        raise ValueError(f"{path}: label map ids must be 1..{len(by_id)} (0 is background), got {sorted(by_id)}")
    return [by_id[i] for i in range(1, len(by_id) + 1)]


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m train csv2tfrecord``."""
    parser.add_argument("--csv", type=Path, action="append", required=True,
                        help="seed-format box CSV (repeatable: several datasets into one record)")
    parser.add_argument("--images", type=Path, action="append", default=[],
                        help="image folder of each --csv, in the same order (one value applies to all; "
                        "default: <csv dir>/images or <csv dir>)")
    parser.add_argument("--negatives", type=Path, action="append", default=[],
                        help="images without objects: a folder, a .txt list or a .csv with filename (repeatable)")
    parser.add_argument("--output", type=Path, required=True, help="TFRecord to write")
    parser.add_argument("--label-map", type=Path, help="label map to write (default: labelmap.pbtxt beside --output)")
    parser.add_argument("--labels", help="comma-separated class names in id order (default: sorted CSV classes)")


def _images_dirs(args: argparse.Namespace) -> list[Path]:
    if not args.images:
        return [default_images_dir(c) for c in args.csv]
    if len(args.images) == 1:
        return args.images * len(args.csv)
    if len(args.images) != len(args.csv):
        raise ValueError(f"--images given {len(args.images)} times for {len(args.csv)} --csv; give one or one per CSV")
    return list(args.images)


def _examples(args: argparse.Namespace, labels: list[str]) -> Iterator[tf.train.Example]:
    label_ids = {name: i + 1 for i, name in enumerate(labels)}
    for csv_path, images_dir in zip(args.csv, _images_dirs(args)):
        yield from rows_to_examples(read_csv(csv_path), images_dir, (), label_ids)
    negatives = [p for source in args.negatives for p in list_images(source)]
    yield from rows_to_examples([], ".", negatives, label_ids)


def main(args: argparse.Namespace) -> int:
    """Run the csv2tfrecord stage; returns a process exit code."""
    try:
        all_rows = [row for c in args.csv for row in read_csv(c)]
        labels = [s.strip() for s in args.labels.split(",")] if args.labels else sorted({r.label for r in all_rows})
        write_tfrecord(_examples(args, labels), args.output)
    except ValueError as exc:  # VocError is a ValueError too
        log.error("csv2tfrecord_failed", problem=str(exc))
        return 1
    label_map = args.label_map or args.output.parent / "labelmap.pbtxt"
    write_label_map(labels, label_map)
    log.info("label_map_written", path=str(label_map), labels=labels)
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(_parser)
    raise SystemExit(main(_parser.parse_args()))
