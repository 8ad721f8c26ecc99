"""Label maps: TF OD API .pbtxt and plain text, index 0 = background, index k = class id k."""

from __future__ import annotations

from pathlib import Path

import pytest

from raccoon_watch.recognition.labels import BACKGROUND, LabelMapError, load_labels

PBTXT_WITH_GAPS = """
# written by train/ (ids from 1)
item {
  id: 1
  name: 'raccoon'
}
item { id: 3 name: "/m/01yrx" display_name: "cat" }
item {
  name: 'bear'
  id: 4
  display_name: 'bear'
}
"""


@pytest.mark.parametrize(
    ("filename", "text", "expected"),
    [
        ("labelmap.pbtxt", PBTXT_WITH_GAPS, ("???", "raccoon", "???", "cat", "bear")),
        ("map.txt", "item { id: 1 name: 'raccoon' }\n", ("???", "raccoon")),  # pbtxt content, .txt name
        ("labels.txt", "raccoon\n", ("???", "raccoon")),  # Model Maker style: no background line
        ("labels.txt", "raccoon\ncat\n\n\n", ("???", "raccoon", "cat")),
        ("labels.txt", "???\nperson\n\ncar\n", ("???", "person", "???", "car")),
        ("labels.txt", "background\nraccoon\n", ("???", "raccoon")),
    ],
)
def test_load_labels_table(tmp_path: Path, filename: str, text: str, expected: tuple[str, ...]) -> None:
    path = tmp_path / filename
    path.write_text(text)
    assert load_labels(path) == expected


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("empty.pbtxt", b"", "empty"),
        ("blank.txt", b"\n  \n", "empty"),
        ("noid.pbtxt", b"item { name: 'raccoon' }", "has no id"),
        ("zero.pbtxt", b"item { id: 0 name: 'raccoon' }", "must be >= 1"),
        ("dup.pbtxt", b"item { id: 1 name: 'a' } item { id: 1 name: 'b' }", "duplicate id 1"),
        ("noname.pbtxt", b"item { id: 2 }", "no name"),
        ("badid.pbtxt", b"item { id: one name: 'a' }", "not an integer"),
        ("unclosed.pbtxt", b"item { id: 1 name: 'a' ", "unexpected text"),
        ("junk.pbtxt", b"hello world", "unexpected text"),
        ("binary.txt", bytes(range(128, 256)) * 4, "not UTF-8"),
        ("bgonly.txt", b"???\n", "only a background"),
    ],
)
def test_bad_label_maps_name_file_and_problem(tmp_path: Path, filename: str, content: bytes, message: str) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(LabelMapError, match=message) as info:
        load_labels(path)
    assert filename in str(info.value)


def test_missing_label_map(tmp_path: Path) -> None:
    with pytest.raises(LabelMapError, match="not found"):
        load_labels(tmp_path / "nope.pbtxt")


def test_stock_coco_labelmap_indexing(shared_dir: Path) -> None:
    labels = load_labels(shared_dir / "pretrained" / "coco_labelmap.txt")
    assert len(labels) == 91 and labels[0] == BACKGROUND
    # TFLite class k (0-based) -> labels[k + 1]: COCO class 0 is person, 16 cat, 17 dog, 22 bear.
    assert [labels[k + 1] for k in (0, 16, 17, 22)] == ["person", "cat", "dog", "bear"]
