"""The site's own classifiers on disk: candidates, the promoted one, the one before it.

Layout under ``<storage.path>/models`` (``models_root``)::

    candidates/<UTC time>-<sha256[:12]>/   classifier.tflite + classifier_card.json of one retrain,
                                           written as .tmp-<name> and renamed into place when whole;
                                           a refused one keeps its card (gate.reasons) and REFUSED.txt
    current  -> candidates/<name>          symlink: the classifier the daemon runs instead of the
                                           model folder's own; absent = the shipped classifier
    previous -> candidates/<name>          symlink: what ``roll_back`` returns to
    last_retrain.json                      what the latest ``raccoon-watch retrain`` did (promoted,
                                           refused, or needs more feedback, and why), for the page

Switching is ``os.replace`` of a freshly made symlink: atomic, so a daemon reading ``current``
(at start-up or on SIGHUP) sees the old or the new target, never half of one. Nothing here deletes a
candidate. The model version everywhere (events, MQTT, /metrics, the page) is ``model_version``:
the first 12 hex digits of the classifier file's SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from raccoon_watch.recognition.modelfiles import CLASSIFIER_CARD, CLASSIFIER_FILE

CANDIDATES = "candidates"
CURRENT, PREVIOUS = "current", "previous"
REFUSED_FILE = "REFUSED.txt"
LAST_RETRAIN = "last_retrain.json"
VERSION_DIGITS = 12
SHIPPED = "shipped"  # the ``previous`` link's target name when the model folder's own classifier was running


def models_root(storage_path: Path) -> Path:
    return Path(storage_path) / "models"


def model_version(classifier_file: Path) -> str:
    """First 12 hex digits of the file's SHA-256 (the version events and metrics carry)."""
    digest = hashlib.sha256()
    with open(classifier_file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:VERSION_DIGITS]


def current(root: Path) -> Path | None:
    """The promoted classifier folder, or None (the model folder's own classifier runs)."""
    return _target(root / CURRENT)


def previous(root: Path) -> Path | None:
    return _target(root / PREVIOUS)


def _target(link: Path) -> Path | None:
    if not link.is_symlink():
        return None
    target = link.resolve()
    return target if (target / CLASSIFIER_FILE).is_file() else None


def install_candidate(root: Path, staged: Path, name: str) -> Path:
    """Move a fully written staging folder to ``candidates/<name>`` (one rename); returns it."""
    final = root / CANDIDATES / name
    if final.exists():
        raise FileExistsError(f"{final}: a candidate of that name exists")
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staged, final)
    return final


def staging_dir(root: Path, name: str) -> Path:
    """An empty ``candidates/.tmp-<name>`` to write a candidate into before ``install_candidate``."""
    path = root / CANDIDATES / f".tmp-{name}"
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _point(link: Path, target: Path | None) -> None:
    """Atomically make ``link`` point at ``target`` (relative), or remove it for None."""
    if target is None:
        link.unlink(missing_ok=True)
        return
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


def promote(root: Path, candidate: Path) -> Path | None:
    """``current`` -> candidate, ``previous`` -> what ran before (None: the shipped classifier).
    Returns the previous folder."""
    candidate = Path(candidate).resolve()
    if not (candidate / CLASSIFIER_FILE).is_file() or not (candidate / CLASSIFIER_CARD).is_file():
        raise FileNotFoundError(f"{candidate}: not a classifier folder ({CLASSIFIER_FILE} + {CLASSIFIER_CARD})")
    before = current(root)
    _point(root / PREVIOUS, before)
    _point(root / CURRENT, candidate)
    return before


def roll_back(root: Path) -> tuple[Path | None, Path | None]:
    """Swap ``current`` and ``previous``: (what runs now, what ran). With no ``previous`` the site
    returns to the shipped classifier (``current`` removed). Rolling back twice undoes it."""
    now, before = current(root), previous(root)
    if now is None and before is None:
        raise FileNotFoundError(f"{root}: nothing to roll back (the shipped classifier is running)")
    _point(root / CURRENT, before)
    _point(root / PREVIOUS, now)
    return before, now


def list_candidates(root: Path) -> list[Path]:
    folder = root / CANDIDATES
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def write_last_retrain(root: Path, report: dict[str, Any]) -> None:
    """Replace ``last_retrain.json`` (a new file, then one rename)."""
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{LAST_RETRAIN}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, root / LAST_RETRAIN)


def last_retrain(root: Path) -> dict[str, Any] | None:
    """What the latest retrain did, or None (never run, or the file is unreadable)."""
    try:
        report = json.loads((root / LAST_RETRAIN).read_text())
    except (OSError, ValueError):
        return None
    return report if isinstance(report, dict) else None
