"""The files of an archive folder: what ``detect DIR --recursive`` recognizes, in the order it reports them.

Files are chosen by suffix (``recognition.records.IMAGE_SUFFIXES`` photos, ``VIDEO_SUFFIXES`` clips, any case);
everything else (sidecar XMP, CSV, hidden files) is left alone. Directories are walked without
following directory symlinks (a link back up the tree would never end); file symlinks are files.
Hidden files and folders (a name starting with ".": ``.thumbnails``, macOS ``._IMG_0001.JPG``) are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from raccoon_watch.recognition.records import IMAGE_SUFFIXES, VIDEO_SUFFIXES

IMAGE, VIDEO = "image", "video"


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One file to recognize. ``relative``: POSIX path from the root (the sort key, MegaDetector's
    ``file``); ``path``: the path as records name it, the root as given joined with ``relative``."""

    relative: str
    path: str
    kind: str  # IMAGE or VIDEO


def file_kind(name: str) -> str | None:
    """IMAGE, VIDEO or None (not ours) by the name's suffix."""
    suffix = os.path.splitext(name)[1].lower()
    return IMAGE if suffix in IMAGE_SUFFIXES else VIDEO if suffix in VIDEO_SUFFIXES else None


def find_files(root: str | os.PathLike[str], recursive: bool = True) -> list[ArchiveFile]:
    """The photos and clips under ``root`` (only its top level unless ``recursive``), sorted by relative
    path. ValueError when ``root`` is not a directory."""
    root_text = os.fspath(root)
    if not Path(root_text).is_dir():
        raise ValueError(f"{root_text} is not a directory" if Path(root_text).exists() else f"{root_text}: no such directory")
    found: list[ArchiveFile] = []
    for folder, dirs, files in os.walk(root_text, onerror=_raise):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if not recursive:
            dirs[:] = []
        for name in files:
            kind = file_kind(name)
            if kind is None or name.startswith("."):
                continue
            full = os.path.join(folder, name)
            found.append(ArchiveFile(Path(os.path.relpath(full, root_text)).as_posix(), full, kind))
    found.sort(key=lambda f: f.relative)
    return found


def _raise(error: OSError) -> None:
    raise error
