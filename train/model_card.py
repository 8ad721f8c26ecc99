"""``model_card.json``: what a model directory is, how it was made and how good it is.

Every exported model directory carries one (see /work/shared/STYLE.md). The promotion gate in
``train.export.promote`` reads ``metrics.test.ap50`` from it, so that key is part of the format.

Fields (``CARD_FIELDS``):
    format_version  int, 1
    labels          ["raccoon", ...]: label of 1-based class id k is labels[k - 1]
    input_size      [height, width] the network sees (300, 300)
    box_format      where boxes come from and in which order / units (text)
    outputs         per artifact, output names, shapes and meanings
    postprocessing  score_threshold, iou_threshold, max_detections, nms kind
    metrics         {"test": {"ap50": float, ...}, ...} as ``train evaluate`` writes them
    deployed_threshold  the score above which the daemon alerts
    training        {"command": str, "config": dict | None}
    dataset         {"files": int, "sha256": hex} over sorted (relative name, content) pairs
    git_revision    ``git rev-parse HEAD`` plus "-dirty" when tracked files are modified
    created         ISO-8601 UTC time of the export
    artifacts       {file name: {"bytes": int, "sha256": hex}} of the files in the directory
    latency_ms      per TFLite file, median / p90 ms per 300x300 frame, threads, runs; the
                    reference file timed alongside, int8_vs_reference (median ratio) and the 1-min
                    load average, since other jobs on the machine inflate absolute numbers
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from raccoon_watch.recognition.modelfiles import MODEL_CARD

CARD_NAME = MODEL_CARD
FORMAT_VERSION = 1
CARD_FIELDS = (
    "format_version", "labels", "input_size", "box_format", "outputs", "postprocessing", "metrics",
    "deployed_threshold", "training", "dataset", "git_revision", "created", "artifacts", "latency_ms",
)
_CHUNK = 1 << 20


class ModelCardError(ValueError):
    """model_card.json is missing or malformed; str() names the file and the problem."""


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_sha256(paths: Iterable[str | os.PathLike[str]]) -> dict:
    """{"files": n, "sha256": hex} over the files sorted by their path relative to their common
    folder; each file contributes ``name NUL sha256(content) NUL``, so renames change the hash too."""
    files = [Path(p).resolve() for p in paths]
    if not files:
        raise ValueError("dataset_sha256: no files given")
    root = Path(os.path.commonpath([str(p.parent) for p in files]))
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(file_sha256(path).encode() + b"\0")
    return {"files": len(files), "sha256": digest.hexdigest()}


def git_revision(repo: str | os.PathLike[str] | None = None) -> str:
    """``git rev-parse HEAD`` of ``repo`` (default: this checkout), "-dirty" if tracked files
    differ from HEAD; "unknown" outside a git checkout."""
    cwd = Path(repo) if repo else Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                              text=True, check=True, timeout=30).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if status.strip() else "")


def artifact_entry(path: Path) -> dict:
    """{"bytes": n, "sha256": hex} of a file, or of every file under a folder (hash of hashes)."""
    if path.is_file():
        return {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    files = sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(path).as_posix().encode() + b"\0" + file_sha256(f).encode())
    return {"bytes": sum(f.stat().st_size for f in files), "sha256": digest.hexdigest()}


def build_card(*, labels: list[str], input_size: int, box_format: str, outputs: dict,
               postprocessing: dict, metrics: dict | None, deployed_threshold: float | None,
               training: dict | None, dataset: dict | None, artifacts: dict, latency_ms: dict,
               git_rev: str | None = None) -> dict:
    """All CARD_FIELDS, in that order; ``metrics`` etc. are copied as given (None stays None)."""
    card = {
        "format_version": FORMAT_VERSION,
        "labels": list(labels),
        "input_size": [input_size, input_size],
        "box_format": box_format,
        "outputs": outputs,
        "postprocessing": postprocessing,
        "metrics": metrics or {},
        "deployed_threshold": deployed_threshold,
        "training": training or {"command": None, "config": None},
        "dataset": dataset,
        "git_revision": git_rev or git_revision(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "artifacts": artifacts,
        "latency_ms": latency_ms,
    }
    return card


def write_card(card: dict, model_dir: str | os.PathLike[str]) -> Path:
    path = Path(model_dir) / CARD_NAME
    path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    return path


def read_card(model_dir: str | os.PathLike[str]) -> dict:
    path = Path(model_dir) / CARD_NAME
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelCardError(f"{path}: no model card") from None
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"{path}: not JSON: {exc}") from None
    if not isinstance(card, dict):
        raise ModelCardError(f"{path}: expected a JSON object, got {type(card).__name__}")
    return card


def ap50_on_test(card: dict) -> float | None:
    """The card's AP@0.5 on the test split (``metrics.test.ap50``), or None if it has none."""
    value = ((card.get("metrics") or {}).get("test") or {}).get("ap50")
    return None if value is None else float(value)


def summarize_evaluation(result: dict) -> dict:
    """``train evaluate``'s metrics JSON -> the card's compact form: ``ap50`` is the mean over
    classes (``map50``), per-class values under ``ap50_per_class``; curves and per-image rows
    stay in the evaluate output."""
    if "ap50" in result and not isinstance(result["ap50"], dict):
        return dict(result)  # already compact
    keys = ("iou", "images", "positive_images", "negative_images", "objects", "threshold",
            "at_threshold", "threshold_for_false_alert_target")
    summary = {"ap50": result.get("map50"), "ap50_per_class": result.get("ap50")}
    summary["coco_map"] = (result.get("coco") or {}).get("map")
    summary.update({key: result[key] for key in keys if key in result})
    return summary
