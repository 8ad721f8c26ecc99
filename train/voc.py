"""Stage 1: labelImg Pascal VOC XML -> the seed's box CSV.

CSV format (the raccoon dataset's ``raccoon_labels.csv``, read by the 2017 ``generate_tfrecord.py``)::

    filename,width,height,class,xmin,ymin,xmax,ymax[,difficult]

One row per box; boxes are integer pixels of the image *as displayed* (EXIF orientation applied),
``0 <= xmin < xmax <= width`` and ``0 <= ymin < ymax <= height``. The trailing ``difficult`` column
(0/1) is written only when at least one box is difficult, so a dataset without difficult boxes gives
byte-for-byte the seed CSV; readers that select columns by name (pandas, csv.DictReader) ignore it.
``read_csv`` accepts both forms.

Command line (mounted by ``python -m train voc2csv``)::

    python -m train voc2csv --annotations my_photos/annotations --images my_photos/images \
        --output work/labels.csv [--skip-bad]
"""

from __future__ import annotations

import argparse
import csv
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import structlog

log = structlog.get_logger(__name__)

CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
DIFFICULT_COLUMN = "difficult"
BOX_TAGS = ("xmin", "ymin", "xmax", "ymax")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}  # what list_images takes from a folder


class VocError(ValueError):
    """A VOC XML file, its image or a CSV row is unusable; str() names the file and the problem."""


@dataclass(frozen=True, slots=True)
class VocObject:
    """One labelled box; pixels (xmin, ymin, xmax, ymax) of the displayed image."""

    label: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    difficult: bool = False
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class VocImage:
    """One parsed annotation file: the image it describes and its boxes."""

    xml_path: Path
    filename: str
    width: int
    height: int
    objects: tuple[VocObject, ...]


@dataclass(frozen=True, slots=True)
class BoxRow:
    """One CSV row: one box of one image. Pixels (xmin, ymin, xmax, ymax), image width x height."""

    filename: str
    width: int
    height: int
    label: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    difficult: bool = False


def _text(element: ET.Element, tag: str, xml_path: Path) -> str:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        raise VocError(f"{xml_path}: missing <{tag}>")
    return child.text.strip()


def _int(element: ET.Element, tag: str, xml_path: Path) -> int:
    """An integer field; labelImg writes ints, other tools write floats like '81.0'."""
    text = _text(element, tag, xml_path)
    try:
        return int(round(float(text)))
    except ValueError:
        raise VocError(f"{xml_path}: <{tag}> is not a number: {text!r}") from None


def _flag(element: ET.Element, tag: str, xml_path: Path) -> bool:
    child = element.find(tag)
    if child is None or child.text is None or not child.text.strip():
        return False
    return _int(element, tag, xml_path) != 0


def _parse_object(element: ET.Element, xml_path: Path) -> VocObject:
    bndbox = element.find("bndbox")
    if bndbox is None:
        raise VocError(f"{xml_path}: <object> without <bndbox>")
    xmin, ymin, xmax, ymax = (_int(bndbox, tag, xml_path) for tag in BOX_TAGS)
    return VocObject(
        label=_text(element, "name", xml_path),
        xmin=xmin,
        ymin=ymin,
        xmax=xmax,
        ymax=ymax,
        difficult=_flag(element, "difficult", xml_path),
        truncated=_flag(element, "truncated", xml_path),
    )


def check_box(obj: VocObject | BoxRow, width: int, height: int, where: str) -> None:
    """Raise VocError unless pixel box (xmin, ymin, xmax, ymax) is non-empty and inside width x height."""
    if obj.xmin >= obj.xmax or obj.ymin >= obj.ymax:
        raise VocError(
            f"{where}: empty box for {obj.label!r}: xmin,ymin,xmax,ymax = "
            f"{obj.xmin},{obj.ymin},{obj.xmax},{obj.ymax}"
        )
    if obj.xmin < 0 or obj.ymin < 0 or obj.xmax > width or obj.ymax > height:
        raise VocError(
            f"{where}: box {obj.xmin},{obj.ymin},{obj.xmax},{obj.ymax} (xmin,ymin,xmax,ymax) of "
            f"{obj.label!r} lies outside the {width}x{height} image"
        )


def parse_voc_xml(path: str | Path) -> VocImage:
    """Parse one labelImg/Pascal VOC XML file; boxes are pixels (xmin, ymin, xmax, ymax).

    Checks the XML itself (well-formed, size present, every box non-empty and inside the declared
    size); the image file is checked by ``check_image``. Raises VocError naming the file.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise VocError(f"{path}: not a readable XML file: {exc}") from None
    if root.tag != "annotation":
        raise VocError(f"{path}: root element is <{root.tag}>, expected <annotation>")
    size = root.find("size")
    if size is None:
        raise VocError(f"{path}: missing <size>")
    width, height = _int(size, "width", path), _int(size, "height", path)
    if width <= 0 or height <= 0:
        raise VocError(f"{path}: image size {width}x{height} is not positive")
    objects = tuple(_parse_object(element, path) for element in root.findall("object"))
    for obj in objects:
        check_box(obj, width, height, str(path))
    return VocImage(path, _text(root, "filename", path), width, height, objects)


def check_image(image_path: Path, width: int, height: int, where: str) -> None:
    """Raise VocError unless the image exists, decodes and is width x height after EXIF rotation."""
    if not image_path.is_file():
        raise VocError(f"{where}: image not found: {image_path}")
    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if image is None:
        raise VocError(f"{where}: image does not decode: {image_path}")
    actual_h, actual_w = image.shape[:2]
    if (actual_w, actual_h) != (width, height):
        raise VocError(
            f"{where}: size mismatch: annotation says {width}x{height}, image {image_path.name} is "
            f"{actual_w}x{actual_h} (width x height, EXIF orientation applied)"
        )


def _image_path_for(voc: VocImage, images_dir: Path) -> Path:
    """The image an XML describes: <filename> in images_dir, else the XML's stem with any extension."""
    named = images_dir / voc.filename
    if named.is_file():
        return named
    for candidate in sorted(images_dir.glob(voc.xml_path.stem + ".*")):
        if candidate.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp", ".webp"}:
            return candidate
    return named


def voc_image_to_rows(voc: VocImage, images_dir: Path) -> list[BoxRow]:
    """Rows (pixels xmin, ymin, xmax, ymax) for one parsed XML after checking its image."""
    image_path = _image_path_for(voc, images_dir)
    check_image(image_path, voc.width, voc.height, str(voc.xml_path))
    return [
        BoxRow(image_path.name, voc.width, voc.height, o.label, o.xmin, o.ymin, o.xmax, o.ymax, o.difficult)
        for o in voc.objects
    ]


def voc_dir_to_rows(
    annotations_dir: str | Path, images_dir: str | Path, skip_bad: bool = False
) -> list[BoxRow]:
    """All boxes of all ``*.xml`` in annotations_dir (files sorted by name, like the seed CSV), pixels (xmin, ymin, xmax, ymax).

    With skip_bad, a bad file is logged (``voc_skipped``) and left out; otherwise the first bad
    file raises VocError. An XML without objects contributes no rows (use negatives for those).
    """
    annotations_dir, images_dir = Path(annotations_dir), Path(images_dir)
    xml_paths = sorted(annotations_dir.glob("*.xml"))  # by name, as the seed CSV is
    if not xml_paths:
        raise VocError(f"{annotations_dir}: no *.xml annotation files")
    rows: list[BoxRow] = []
    skipped = 0
    for xml_path in xml_paths:
        try:
            rows.extend(voc_image_to_rows(parse_voc_xml(xml_path), images_dir))
        except VocError as exc:
            if not skip_bad:
                raise
            skipped += 1
            log.warning("voc_skipped", path=str(xml_path), problem=str(exc))
    log.info("voc_parsed", annotations=len(xml_paths), skipped=skipped, boxes=len(rows))
    return rows


def write_csv(rows: list[BoxRow], path: str | Path) -> None:
    """Write rows in the seed CSV format (pixels); adds the ``difficult`` column only if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with_difficult = any(row.difficult for row in rows)
    header = CSV_COLUMNS + ((DIFFICULT_COLUMN,) if with_difficult else ())
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        for row in rows:
            values = [row.filename, row.width, row.height, row.label, row.xmin, row.ymin, row.xmax, row.ymax]
            writer.writerow(values + ([int(row.difficult)] if with_difficult else []))
    log.info("csv_written", path=str(path), boxes=len(rows), images=len({r.filename for r in rows}))


def _row_from_record(record: dict[str, str], where: str) -> BoxRow:
    try:
        row = BoxRow(
            filename=record["filename"],
            width=int(record["width"]),
            height=int(record["height"]),
            label=record["class"],
            xmin=int(round(float(record["xmin"]))),
            ymin=int(round(float(record["ymin"]))),
            xmax=int(round(float(record["xmax"]))),
            ymax=int(round(float(record["ymax"]))),
            difficult=bool(int(record.get(DIFFICULT_COLUMN) or 0)),
        )
    except (TypeError, ValueError) as exc:
        raise VocError(f"{where}: bad value: {exc}") from None
    if not row.filename or not row.label:
        raise VocError(f"{where}: empty filename or class")
    check_box(row, row.width, row.height, where)
    return row


def read_csv(path: str | Path) -> list[BoxRow]:
    """Read a seed-format CSV (with or without ``difficult``); pixels (xmin, ymin, xmax, ymax)."""
    path = Path(path)
    if not path.is_file():
        raise VocError(f"{path}: CSV not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise VocError(f"{path}: missing columns {missing}; expected {','.join(CSV_COLUMNS)}")
        return [_row_from_record(rec, f"{path} line {n}") for n, rec in enumerate(reader, start=2)]


# ---------------------------------------------------------------- image lists


def list_images(source: str | Path) -> list[Path]:
    """Image paths from a folder (its image files, sorted), a ``.txt`` list (one path per line) or a
    ``.csv`` with a ``filename`` column; relative entries are relative to the list's folder."""
    source = Path(source)
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not source.is_file():
        raise ValueError(f"{source}: no such folder or image list")
    if source.suffix.lower() == ".csv":
        with source.open(newline="") as handle:
            names = [row["filename"] for row in csv.DictReader(handle) if row.get("filename")]
    else:
        names = [line.strip() for line in source.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [p if p.is_absolute() else source.parent / p for p in map(Path, names)]


def default_images_dir(csv_path: Path) -> Path:
    """Where a CSV's images live by default: ``<csv folder>/images`` if it exists, else the CSV's folder."""
    return csv_path.parent / "images" if (csv_path.parent / "images").is_dir() else csv_path.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m train voc2csv``."""
    parser.add_argument("--annotations", type=Path, required=True, help="folder of labelImg *.xml files")
    parser.add_argument("--images", type=Path, required=True, help="folder of the photos the XML describe")
    parser.add_argument("--output", type=Path, required=True, help="CSV to write")
    parser.add_argument("--skip-bad", action="store_true", help="report and skip bad files instead of stopping")


def main(args: argparse.Namespace) -> int:
    """Run the voc2csv stage; returns a process exit code."""
    try:
        rows = voc_dir_to_rows(args.annotations, args.images, skip_bad=args.skip_bad)
    except VocError as exc:
        log.error("voc2csv_failed", problem=str(exc))
        return 1
    write_csv(rows, args.output)
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(_parser)
    raise SystemExit(main(_parser.parse_args()))
