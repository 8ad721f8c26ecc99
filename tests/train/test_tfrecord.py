"""TFRecord round trip with real photos, OD API keys/dtypes, negatives, label maps."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from train import tfrecord
from train.voc import BoxRow, read_csv

pytestmark = pytest.mark.shared  # real photos and models from ../shared

MULTI_OBJECT = "raccoon-119.jpg"
ONE_OBJECT = "raccoon-1.jpg"

# The TF OD API TfExampleDecoder's keys_to_features (object_detection/data_decoders/tf_example_decoder.py),
# written out here independently of train.tfrecord.FEATURE_SPEC.
OD_API_SPEC = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/format": tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
    "image/filename": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/key/sha256": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/source_id": tf.io.FixedLenFeature((), tf.string, default_value=""),
    "image/height": tf.io.FixedLenFeature((), tf.int64, default_value=1),
    "image/width": tf.io.FixedLenFeature((), tf.int64, default_value=1),
    "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/xmax": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/ymin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/ymax": tf.io.VarLenFeature(tf.float32),
    "image/object/class/label": tf.io.VarLenFeature(tf.int64),
    "image/object/class/text": tf.io.VarLenFeature(tf.string),
    "image/object/area": tf.io.VarLenFeature(tf.float32),
    "image/object/is_crowd": tf.io.VarLenFeature(tf.int64),
    "image/object/difficult": tf.io.VarLenFeature(tf.int64),
    "image/object/group_of": tf.io.VarLenFeature(tf.int64),
    "image/object/weight": tf.io.VarLenFeature(tf.float32),
}


@pytest.fixture(scope="module")
def dataset(shared_dir: Path) -> Path:
    return shared_dir / "data" / "raccoon_dataset"


@pytest.fixture(scope="module")
def rows_by_file(dataset: Path) -> dict[str, list[BoxRow]]:
    grouped: dict[str, list[BoxRow]] = {}
    for row in read_csv(dataset / "raccoon_labels.csv"):
        grouped.setdefault(row.filename, []).append(row)
    return grouped


@pytest.fixture(scope="module")
def negative_image(shared_dir: Path) -> Path:
    return shared_dir / "data" / "negatives" / "kdvc_cat.58.jpg"


def test_od_api_decoder_reads_keys_and_types(dataset: Path, rows_by_file, tmp_path: Path) -> None:
    rows = rows_by_file[MULTI_OBJECT]
    example = tfrecord.make_example(dataset / "images" / MULTI_OBJECT, rows)
    parsed = tf.io.parse_single_example(example.SerializeToString(), OD_API_SPEC)
    width, height = rows[0].width, rows[0].height
    assert parsed["image/encoded"].numpy() == (dataset / "images" / MULTI_OBJECT).read_bytes()  # original bytes kept
    assert parsed["image/format"].numpy() == b"jpeg"
    assert parsed["image/filename"].numpy() == parsed["image/source_id"].numpy() == MULTI_OBJECT.encode()
    assert (parsed["image/height"].numpy(), parsed["image/width"].numpy()) == (height, width)
    xmin = tf.sparse.to_dense(parsed["image/object/bbox/xmin"]).numpy()
    ymax = tf.sparse.to_dense(parsed["image/object/bbox/ymax"]).numpy()
    np.testing.assert_allclose(xmin, [r.xmin / width for r in rows], rtol=1e-6)
    np.testing.assert_allclose(ymax, [r.ymax / height for r in rows], rtol=1e-6)
    assert tf.sparse.to_dense(parsed["image/object/class/text"]).numpy().tolist() == [b"raccoon"] * 3
    assert tf.sparse.to_dense(parsed["image/object/class/label"]).numpy().tolist() == [1, 1, 1]
    assert tf.sparse.to_dense(parsed["image/object/difficult"]).numpy().tolist() == [0, 0, 0]


def test_round_trip_through_file(dataset: Path, rows_by_file, negative_image: Path, tmp_path: Path) -> None:
    rows = rows_by_file[ONE_OBJECT] + rows_by_file[MULTI_OBJECT]
    path = tmp_path / "small.tfrecord"
    count = tfrecord.write_tfrecord(tfrecord.rows_to_examples(rows, dataset / "images", [negative_image]), path)
    assert count == 3
    parsed = list(tf.data.TFRecordDataset(str(path)).map(tfrecord.parse_example))
    assert [p["filename"].numpy() for p in parsed] == [ONE_OBJECT.encode(), MULTI_OBJECT.encode(), negative_image.name.encode()]
    first = parsed[0]
    expected_rgb = cv2.cvtColor(cv2.imread(str(dataset / "images" / ONE_OBJECT)), cv2.COLOR_BGR2RGB)
    assert first["image"].dtype == tf.uint8 and first["image"].shape == expected_rgb.shape
    assert np.mean(np.abs(first["image"].numpy().astype(int) - expected_rgb)) < 2  # decoder rounding only
    row = rows_by_file[ONE_OBJECT][0]
    assert first["boxes"].dtype == tf.float32 and first["labels"].dtype == tf.int64
    np.testing.assert_allclose(first["boxes"].numpy(),  # [ymin, xmin, ymax, xmax] normalised
                               [[row.ymin / row.height, row.xmin / row.width, row.ymax / row.height, row.xmax / row.width]],
                               rtol=1e-6)
    assert parsed[1]["boxes"].shape == (3, 4) and parsed[1]["labels"].numpy().tolist() == [1, 1, 1]
    negative = parsed[2]
    assert negative["boxes"].shape == (0, 4) and negative["labels"].shape == (0,)
    assert negative["image"].shape[2] == 3


def test_batches_in_tf_data(dataset: Path, rows_by_file, negative_image: Path, tmp_path: Path) -> None:
    path = tmp_path / "b.tfrecord"
    tfrecord.write_tfrecord(tfrecord.rows_to_examples(rows_by_file[MULTI_OBJECT], dataset / "images", [negative_image]), path)
    ds = tf.data.TFRecordDataset(str(path)).map(tfrecord.parse_example).map(
        lambda d: (tf.image.resize(d["image"], (64, 64)), d["boxes"])).padded_batch(2)
    images, boxes = next(iter(ds))
    assert images.shape == (2, 64, 64, 3) and boxes.shape == (2, 3, 4)


def test_png_kept_and_rotated_jpeg_reencoded(dataset: Path, tmp_path: Path) -> None:
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:, :30] = (255, 0, 0)
    png = tmp_path / "frame.png"
    Image.fromarray(rgb).save(png)
    data, fmt, width, height = tfrecord.encoded_image(png)
    assert (data, fmt, width, height) == (png.read_bytes(), "png", 60, 40)
    # a real photo stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view)
    source = Image.open(dataset / "images" / ONE_OBJECT)  # 650 x 417
    exif = Image.Exif()
    exif[tfrecord.EXIF_ORIENTATION_TAG] = 6
    rotated = tmp_path / "rotated.jpg"
    source.save(rotated, exif=exif)
    data, fmt, width, height = tfrecord.encoded_image(rotated)
    assert fmt == "jpeg" and (width, height) == (417, 650) and data != rotated.read_bytes()
    assert tf.io.decode_jpeg(data).shape == (650, 417, 3)  # TF now sees the upright picture


def test_errors_name_the_file(dataset: Path, rows_by_file, tmp_path: Path) -> None:
    wrong_size = [BoxRow(ONE_OBJECT, 640, 417, "raccoon", 1, 1, 10, 10)]
    with pytest.raises(ValueError, match=r"raccoon-1\.jpg: CSV says 640x417, image is 650x417"):
        tfrecord.make_example(dataset / "images" / ONE_OBJECT, wrong_size)
    with pytest.raises(ValueError, match=r"label 'raccoon' is not in the label map \['cat'\]"):
        tfrecord.make_example(dataset / "images" / ONE_OBJECT, rows_by_file[ONE_OBJECT], {"cat": 1})
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((dataset / "images" / ONE_OBJECT).read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"broken\.jpg: image does not decode"):
        tfrecord.make_example(broken, [])


def test_label_map_round_trip_and_formats(shared_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "labelmap.pbtxt"
    tfrecord.write_label_map(["raccoon", "cat"], path)
    assert "item {\n  id: 1\n  name: 'raccoon'\n}" in path.read_text()
    assert tfrecord.read_label_map(path) == ["raccoon", "cat"]
    one_line = tmp_path / "one_line.pbtxt"
    one_line.write_text("item { id: 2 name: \"cat\" }\nitem { id: 1 name: 'raccoon' }\n")
    assert tfrecord.read_label_map(one_line) == ["raccoon", "cat"]
    coco = tfrecord.read_label_map(shared_dir / "pretrained" / "coco_labelmap.txt")
    assert len(coco) == 90 and coco[0] == "person" and coco[16] == "cat"  # 0-based class 16 = line 17
    gap = tmp_path / "gap.pbtxt"
    gap.write_text("item { id: 0 name: 'background' }\n")
    with pytest.raises(ValueError, match=r"gap\.pbtxt: label map ids must be 1\.\.1"):
        tfrecord.read_label_map(gap)


def test_cli_writes_record_and_label_map(shared_dir: Path, tmp_path: Path) -> None:
    extra = shared_dir / "data" / "extra_raccoons" / "positives.csv"
    negatives = tmp_path / "negatives.txt"
    negatives.write_text(str(shared_dir / "data" / "negatives" / "kdvc_cat.58.jpg") + "\n")
    parser = argparse.ArgumentParser()
    tfrecord.add_arguments(parser)
    out = tmp_path / "work" / "train.tfrecord"
    args = parser.parse_args(["--csv", str(extra), "--negatives", str(negatives), "--output", str(out)])
    assert tfrecord.main(args) == 0
    records = list(tf.data.TFRecordDataset(str(out)).map(tfrecord.parse_example))
    assert len(records) == 11  # 10 photos + 1 negative
    assert sum(int(r["boxes"].shape[0]) for r in records) == 11  # 11 boxes in positives.csv
    assert tfrecord.read_label_map(out.parent / "labelmap.pbtxt") == ["raccoon"]
