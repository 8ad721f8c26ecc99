"""Label maps: TF Object Detection API ``.pbtxt`` and plain one-label-per-line text.

``load_labels`` always returns a tuple whose index 0 is the background (``BACKGROUND``) and whose
index k is the label of class id k in the TF OD API's 1-based numbering. Backends index it like so:

- TF2 SavedModel (``detection_classes`` are 1-based floats): ``labels[int(c)]``.
- TFLite SSD with the post-processing op (classes are 0-based, background excluded):
  ``labels[int(c) + 1]``.

Accepted files:

- ``.pbtxt`` (``item { id: 1 name: 'raccoon' display_name: 'raccoon' }``): ids start at 1 (0 is
  reserved for the background); ``display_name`` wins over ``name`` when both are given (the COCO
  map's ``name`` is a Freebase id such as ``/m/01g317``); ids missing from the file become
  ``UNKNOWN``.
- Plain text, one label per line: if the first line is ``???`` or ``background`` the file already
  has the background at line 0 (the stock ``coco_labelmap.txt``: 91 lines, class k -> line k+1);
  otherwise (``raccoon`` alone, as TFLite Model Maker writes it) a background is prepended, so
  line 0 is class id 1. Blank lines at the end are ignored; blank lines inside become ``UNKNOWN``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

BACKGROUND = "???"
UNKNOWN = "???"
_BACKGROUND_NAMES = {"???", "background", "__background__"}

_ITEM = re.compile(r"\bitem\s*\{(?P<body>[^{}]*)\}", re.S)
_FIELD = re.compile(r"""\b(?P<key>id|name|display_name)\s*:\s*(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>[^\s}]+))""")


class LabelMapError(ValueError):
    """The label map is missing, empty or malformed; str() names the file and the problem."""


def load_labels(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Read a label map; result[0] is the background, result[k] the label of 1-based class id k."""
    text = read_label_text(path)
    if is_pbtxt(path, text):
        return parse_pbtxt(text, str(path))
    return parse_lines(text, str(path))


def read_label_text(path: str | os.PathLike[str]) -> str:
    """The label map file's text; LabelMapError when it is missing, unreadable, not UTF-8 or empty."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabelMapError(f"{p}: label map not found") from None
    except UnicodeDecodeError:
        raise LabelMapError(f"{p}: label map is not UTF-8 text") from None
    except OSError as exc:
        raise LabelMapError(f"{p}: cannot read label map: {exc.strerror}") from None
    if not text.strip():
        raise LabelMapError(f"{p}: label map is empty")
    return text


def is_pbtxt(path: str | os.PathLike[str], text: str) -> bool:
    """A ``.pbtxt`` name, or ``item {`` entries under any name."""
    return Path(path).suffix == ".pbtxt" or re.search(r"\bitem\s*\{", text) is not None


def parse_pbtxt(text: str, source: str = "<pbtxt>") -> tuple[str, ...]:
    """TF OD API StringIntLabelMap text -> (background, label of id 1, label of id 2, ...)."""
    by_id = pbtxt_items(text, source)
    if min(by_id) < 1:
        raise LabelMapError(f"{source}: id {min(by_id)} must be >= 1 (0 is the background)")
    return (BACKGROUND,) + tuple(by_id.get(i, UNKNOWN) for i in range(1, max(by_id) + 1))


def pbtxt_items(text: str, source: str = "<pbtxt>") -> dict[int, str]:
    """TF OD API StringIntLabelMap text -> {id: label} as written (any integer ids, gaps allowed).

    ``display_name`` wins over ``name``; each item needs an id and one of them, ids are unique."""
    text = re.sub(r"#[^\n]*", "", text)  # comments
    by_id: dict[int, str] = {}
    for match in _ITEM.finditer(text):
        fields: dict[str, str] = {}
        for f in _FIELD.finditer(match["body"]):
            fields[f["key"]] = next(v for v in (f["dq"], f["sq"], f["bare"]) if v is not None)
        where = f"{source}: item at offset {match.start()}"
        if "id" not in fields:
            raise LabelMapError(f"{where}: has no id")
        try:
            item_id = int(fields["id"])
        except ValueError:
            raise LabelMapError(f"{where}: id {fields['id']!r} is not an integer") from None
        if item_id in by_id:
            raise LabelMapError(f"{where}: duplicate id {item_id}")
        label = fields.get("display_name") or fields.get("name")
        if not label:
            raise LabelMapError(f"{where}: id {item_id} has no name or display_name")
        by_id[item_id] = label
    leftover = _ITEM.sub("", text).strip()
    if leftover:
        raise LabelMapError(f"{source}: not a label map: unexpected text {leftover[:40]!r}")
    if not by_id:
        raise LabelMapError(f"{source}: no 'item {{ id: ... name: ... }}' entries")
    return by_id


def parse_lines(text: str, source: str = "<labels>") -> tuple[str, ...]:
    """One label per line -> (background, label of id 1, ...); see the module doc for line 0."""
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise LabelMapError(f"{source}: label map is empty")
    bad = [line for line in lines if "{" in line or "}" in line or "\x00" in line]
    if bad:
        raise LabelMapError(f"{source}: not a one-label-per-line file (line {bad[0][:40]!r})")
    labels = [line or UNKNOWN for line in lines]
    if labels[0].lower() in _BACKGROUND_NAMES:
        labels[0] = BACKGROUND
        if len(labels) == 1:
            raise LabelMapError(f"{source}: only a background line, no labels")
        return tuple(labels)
    return (BACKGROUND, *labels)
