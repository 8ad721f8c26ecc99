"""VOC XML -> CSV on the real raccoon dataset, and clear errors for bad files."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from train import voc
from train.voc import BoxRow, VocError

pytestmark = pytest.mark.shared  # real photos and models from ../shared

MULTI_OBJECT = "raccoon-119"  # three raccoons in one photo


@pytest.fixture(scope="module")
def dataset(shared_dir: Path) -> Path:
    return shared_dir / "data" / "raccoon_dataset"


def test_parse_multi_object_xml(dataset: Path) -> None:
    parsed = voc.parse_voc_xml(dataset / "annotations" / f"{MULTI_OBJECT}.xml")
    assert parsed.filename == f"{MULTI_OBJECT}.jpg"
    assert len(parsed.objects) == 3
    assert all(o.label == "raccoon" and not o.difficult for o in parsed.objects)
    assert all(0 <= o.xmin < o.xmax <= parsed.width and 0 <= o.ymin < o.ymax <= parsed.height for o in parsed.objects)


def test_csv_equals_seed_csv(dataset: Path, tmp_path: Path) -> None:
    """All 200 XML files give byte for byte the dataset's own raccoon_labels.csv (217 boxes)."""
    rows = voc.voc_dir_to_rows(dataset / "annotations", dataset / "images")
    out = tmp_path / "labels.csv"
    voc.write_csv(rows, out)
    assert len(rows) == 217
    assert out.read_text() == (dataset / "raccoon_labels.csv").read_text()
    assert voc.read_csv(out) == rows


@pytest.mark.parametrize("relative", [
    "data/raccoon_dataset/train_labels.csv",
    "data/raccoon_dataset/test_labels.csv",
    "data/extra_raccoons/positives.csv",
    "data/night/positives/positives.csv",
])
def test_reads_shared_csvs(shared_dir: Path, relative: str) -> None:
    rows = voc.read_csv(shared_dir / relative)
    assert rows and all(isinstance(r, BoxRow) and r.label == "raccoon" for r in rows)
    assert all(0 <= r.xmin < r.xmax <= r.width and 0 <= r.ymin < r.ymax <= r.height for r in rows)


def test_split_sizes_match_readme(dataset: Path) -> None:
    train = voc.read_csv(dataset / "train_labels.csv")
    test = voc.read_csv(dataset / "test_labels.csv")
    assert (len({r.filename for r in train}), len(train)) == (160, 173)
    assert (len({r.filename for r in test}), len(test)) == (40, 44)


def test_difficult_column_round_trip(tmp_path: Path) -> None:
    rows = [BoxRow("a.jpg", 100, 80, "raccoon", 1, 2, 50, 60, difficult=True),
            BoxRow("a.jpg", 100, 80, "cat", 10, 20, 30, 40)]
    path = tmp_path / "d.csv"
    voc.write_csv(rows, path)
    assert path.read_text().splitlines()[0].endswith(",difficult")
    assert voc.read_csv(path) == rows


XML_TEMPLATE = """<annotation>
  <filename>{filename}</filename>
  <size><width>{width}</width><height>{height}</height><depth>3</depth></size>
  <object><name>raccoon</name><difficult>{difficult}</difficult>
    <bndbox><xmin>{xmin}</xmin><ymin>10</ymin><xmax>{xmax}</xmax><ymax>100</ymax></bndbox>
  </object>
</annotation>
"""


def _labelled_copy(dataset: Path, tmp_path: Path, **fields: object) -> tuple[Path, Path]:
    """A one-image VOC folder in tmp_path: the real raccoon-1.jpg (650x417) and an edited XML."""
    images, annotations = tmp_path / "images", tmp_path / "annotations"
    images.mkdir(exist_ok=True)
    annotations.mkdir(exist_ok=True)
    shutil.copy(dataset / "images" / "raccoon-1.jpg", images / "raccoon-1.jpg")
    values = {"filename": "raccoon-1.jpg", "width": 650, "height": 417, "difficult": 0, "xmin": 81, "xmax": 522}
    values.update(fields)
    (annotations / "raccoon-1.xml").write_text(XML_TEMPLATE.format(**values))
    return annotations, images


def test_good_edited_xml_with_difficult(dataset: Path, tmp_path: Path) -> None:
    annotations, images = _labelled_copy(dataset, tmp_path, difficult=1)
    rows = voc.voc_dir_to_rows(annotations, images)
    assert rows == [BoxRow("raccoon-1.jpg", 650, 417, "raccoon", 81, 10, 522, 100, difficult=True)]


@pytest.mark.parametrize(("fields", "message"), [
    ({"xmax": 700}, "outside the 650x417 image"),
    ({"xmin": 300, "xmax": 300}, "empty box"),
    ({"width": 640}, "size mismatch: annotation says 640x417, image raccoon-1.jpg is 650x417"),
    ({"filename": "missing.jpg"}, "image not found"),
    ({"xmin": "eighty"}, "<xmin> is not a number"),
])
def test_bad_annotation_errors_name_file_and_problem(dataset: Path, tmp_path: Path, fields: dict, message: str) -> None:
    if fields.get("filename") == "missing.jpg":
        (tmp_path / "images").mkdir()
        (tmp_path / "annotations").mkdir()
        (tmp_path / "annotations" / "raccoon-1.xml").write_text(XML_TEMPLATE.format(
            **{"filename": "missing.jpg", "width": 650, "height": 417, "difficult": 0, "xmin": 81, "xmax": 522}))
        annotations, images = tmp_path / "annotations", tmp_path / "images"
    else:
        annotations, images = _labelled_copy(dataset, tmp_path, **fields)
    with pytest.raises(VocError, match="raccoon-1.xml") as info:
        voc.voc_dir_to_rows(annotations, images)
    assert message in str(info.value)


def test_broken_xml_and_undecodable_image(dataset: Path, tmp_path: Path) -> None:
    annotations, images = _labelled_copy(dataset, tmp_path)
    (annotations / "broken.xml").write_text("<annotation><size>")
    with pytest.raises(VocError, match=r"broken\.xml: not a readable XML file"):
        voc.parse_voc_xml(annotations / "broken.xml")
    (annotations / "broken.xml").unlink()
    (images / "raccoon-1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(VocError, match="image does not decode"):
        voc.voc_dir_to_rows(annotations, images)


def test_skip_bad_keeps_the_good_files(dataset: Path, tmp_path: Path) -> None:
    annotations, images = _labelled_copy(dataset, tmp_path)
    (annotations / "raccoon-2.xml").write_text(XML_TEMPLATE.format(
        filename="raccoon-1.jpg", width=650, height=417, difficult=0, xmin=81, xmax=9999))
    with pytest.raises(VocError):
        voc.voc_dir_to_rows(annotations, images)
    rows = voc.voc_dir_to_rows(annotations, images, skip_bad=True)
    assert [r.xmax for r in rows] == [522]


def test_bad_csv_row_names_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\na.jpg,100,100,raccoon,10,10,120,50\n")
    with pytest.raises(VocError, match=r"bad\.csv line 2: box .* outside the 100x100 image"):
        voc.read_csv(path)
    path.write_text("filename,width,class\n")
    with pytest.raises(VocError, match="missing columns"):
        voc.read_csv(path)


def test_cli_main(dataset: Path, tmp_path: Path) -> None:
    annotations, images = _labelled_copy(dataset, tmp_path)
    parser = argparse.ArgumentParser()
    voc.add_arguments(parser)
    out = tmp_path / "out" / "labels.csv"
    args = parser.parse_args(["--annotations", str(annotations), "--images", str(images), "--output", str(out)])
    assert voc.main(args) == 0
    assert out.read_text().splitlines()[1] == "raccoon-1.jpg,650,417,raccoon,81,10,522,100"
    (images / "raccoon-1.jpg").unlink()
    assert voc.main(args) == 1
