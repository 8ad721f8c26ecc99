"""``raccoon-watch detect DIR --recursive``: the archive options of ``detect``, and the run.

    raccoon-watch detect DIR --recursive --output results.jsonl [--ray [ADDRESS]]
        [--format jsonl|megadetector] [--checkpoint FILE] [--workers N] [--worker-threads T]
        [--video-fps F] [--batch-size B]   (and detect's --model, --threshold, --labels, --no-classifier ...)

- ``--output`` (required) is written when the run ends, whole (a temporary file renamed into place):
  ``jsonl``, one record per line in ``detect --json``'s format (photos exactly as ``detect`` writes
  them, clips as ``clip.py`` says), sorted by file; or ``megadetector``, MegaDetector's batch JSON
  (``megadetector.py``).
- The checkpoint (default ``OUTPUT.checkpoint.jsonl``) keeps every finished file's record as it
  arrives; it stays after the run, so a rerun (after a crash, Ctrl-C, or with new photos added to the
  folder) recognizes only the files it lacks and rewrites ``--output`` from it. A checkpoint made with
  other settings or another model is refused (exit 2): delete it or name another.
- ``--ray``: on a local Ray (started for this run); ``--ray ADDRESS``: on the Ray cluster there
  (``ray start --head`` on one machine, ``ray start --address=...`` on the others). Without
  ``--ray``, in this process with ``--threads`` TFLite threads.

Exit status: 0 every file recognized, 1 some files failed (their records say why), 2 bad arguments or
an unusable checkpoint, 3 the model is missing, 130 interrupted (rerun to continue).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from raccoon_watch.archive.checkpoint import CheckpointError, open_checkpoint
from raccoon_watch.archive.clip import DEFAULT_VIDEO_FPS
from raccoon_watch.archive.megadetector import batch_results
from raccoon_watch.archive.runner import DEFAULT_BATCH, Finished, Progress, run_local
from raccoon_watch.archive.walk import ArchiveFile, find_files
from raccoon_watch.archive.worker import RecognitionSettings
from raccoon_watch.recognition.detectors import ModelError

EXIT_OK, EXIT_INPUT_FAILED, EXIT_USAGE, EXIT_MODEL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
FORMATS = ("jsonl", "megadetector")
LOCAL = "local"  # --ray without an address


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("archive (a folder tree; raccoon_watch/archive)")
    group.add_argument("--recursive", action="store_true", help="INPUT is a folder: every photo and clip under it")
    group.add_argument("--ray", nargs="?", const=LOCAL, metavar="ADDRESS",
                       help="run on Ray: a local one, or the cluster at ADDRESS (needs raccoon-watch[scale])")
    group.add_argument("--output", type=Path, help="results file (required with --recursive)")
    group.add_argument("--format", choices=FORMATS, default="jsonl", help="results format (default: %(default)s)")
    group.add_argument("--checkpoint", type=Path, help="finished files' records (default: OUTPUT.checkpoint.jsonl)")
    group.add_argument("--workers", type=int, help="Ray actors (default: the cluster's CPUs / --worker-threads)")
    group.add_argument("--worker-threads", type=int, default=1, help="TFLite threads per Ray actor (default: 1)")
    group.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="files per batch (default: %(default)s)")
    group.add_argument("--video-fps", type=float, default=DEFAULT_VIDEO_FPS,
                       help="clip frames recognized per second of video (default: %(default)g, the daemon's detect_fps)")


def check_arguments(args: argparse.Namespace) -> str | None:
    """The problem with the archive options, or None."""
    if not args.recursive:
        return "--ray, --output, --format and --checkpoint go with --recursive DIR (a folder tree)"
    if len(args.inputs) != 1:
        return f"--recursive takes one folder, got {len(args.inputs)} inputs"
    if not Path(args.inputs[0]).is_dir():
        return f"{args.inputs[0]} is not a folder" if Path(args.inputs[0]).exists() else f"{args.inputs[0]}: no such folder"
    if args.output is None:
        return "--recursive needs --output FILE (the results; its checkpoint sits beside it)"
    if args.output.is_dir():
        return f"--output {args.output} is a folder; name a file"
    if args.out is not None:
        return "--out (annotated images) is not available with --recursive"
    for name in ("workers", "worker_threads", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return f"--{name.replace('_', '-')} must be >= 1, got {value}"
    if not (math.isfinite(args.video_fps) and args.video_fps > 0):
        return f"--video-fps must be a positive number, got {args.video_fps}"
    return None


def settings_from(args: argparse.Namespace, max_pixels: int) -> RecognitionSettings:
    from raccoon_watch.recognition.records import parse_labels

    labels = parse_labels(args.labels)
    return RecognitionSettings(
        model=str(args.model) if args.model else None, backend=args.backend,
        threads=args.worker_threads if args.ray else max(1, args.threads), classifier=not args.no_classifier,
        proposal_threshold=args.proposal_threshold, threshold=args.threshold,
        labels=tuple(sorted(labels)) if labels else None, max_pixels=max_pixels, video_fps=args.video_fps)


def main(args: argparse.Namespace, max_pixels: int) -> int:
    problem = check_arguments(args)
    if problem is not None:
        print(f"detect: {problem}", file=sys.stderr)
        return EXIT_USAGE
    try:
        files = find_files(args.inputs[0], recursive=True)
    except (ValueError, OSError) as exc:
        print(f"detect: cannot list {args.inputs[0]}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    settings = settings_from(args, max_pixels)
    try:
        fingerprint = settings.fingerprint()
    except ModelError as exc:
        print(f"detect: cannot load the model: {exc}", file=sys.stderr)
        return EXIT_MODEL
    checkpoint_path = args.checkpoint or args.output.with_name(args.output.name + ".checkpoint.jsonl")
    try:
        checkpoint = open_checkpoint(checkpoint_path, fingerprint)
    except CheckpointError as exc:
        print(f"detect: {exc}", file=sys.stderr)
        return EXIT_USAGE
    with checkpoint:
        todo = [f for f in files if f.relative not in checkpoint.done]
        progress = Progress(len(files), len(files) - len(todo))
        started = time.monotonic()

        def on_done(finished: Finished) -> None:
            progress.update(checkpoint.append(finished))

        try:
            where = _run(todo, settings, args, on_done)
        except KeyboardInterrupt:
            progress.close()
            print(f"detect: interrupted; {len(checkpoint.done)} files are in {checkpoint_path}, rerun to continue",
                  file=sys.stderr)
            return EXIT_INTERRUPTED
        except (ModelError, RuntimeError) as exc:
            progress.close()
            print(f"detect: {exc}", file=sys.stderr)
            return EXIT_MODEL if isinstance(exc, ModelError) else EXIT_USAGE
        progress.close()
        elapsed = time.monotonic() - started
        records = [(f.relative, _as_walked(checkpoint.done[f.relative], f)) for f in files if f.relative in checkpoint.done]
    failed = sum("error" in r for _, r in records)
    write_results(args.output, records, args.format, settings)
    rate = len(todo) / elapsed if elapsed > 0 and todo else 0.0
    print(f"detect: {len(records)} files ({len(files) - len(todo)} from the checkpoint, {len(todo)} recognized "
          f"{where} at {rate:.2f} files/s), {failed} failed; wrote {args.output}", file=sys.stderr)
    return EXIT_INPUT_FAILED if failed else EXIT_OK


def _run(todo: list[ArchiveFile], settings: RecognitionSettings, args: argparse.Namespace, on_done) -> str:
    """Run the files; returns where they ran, for the summary line."""
    if not args.ray:
        run_local(todo, settings, on_done, args.batch_size)
        return "in this process"
    from raccoon_watch.archive.ray_runner import run_ray

    address = None if args.ray == LOCAL else args.ray
    actors = run_ray(todo, settings, on_done, address=address, workers=args.workers, batch_size=args.batch_size)
    return f"on Ray ({address or 'local'}, {actors} workers)"


def _as_walked(record: dict[str, Any], f: ArchiveFile) -> dict[str, Any]:
    """The record with its path as this run spells it (a rerun may name the folder differently)."""
    key = "video" if "video" in record else "image"
    return {key: f.path, **{k: v for k, v in record.items() if k != key}}


def write_results(output: Path, records: list[tuple[str, dict[str, Any]]], fmt: str, settings: RecognitionSettings) -> None:
    """The results file, whole: written beside ``output`` and renamed over it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        if fmt == "megadetector":
            detector, classifier = _model_names(settings)
            json.dump(batch_results(records, detector, classifier), fh, indent=1)
            fh.write("\n")
        else:
            for _, record in records:
                fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, output)


def _model_names(settings: RecognitionSettings) -> tuple[str, str | None]:
    """(detector file name, classifier file name or None) for MegaDetector's info block."""
    from raccoon_watch.recognition.detectors.factory import find_model, resolve_default_model

    files = find_model(settings.model or resolve_default_model())
    detector = f"raccoon-watch {files.path.name}/{(files.tflite or files.saved_model or files.path).name}"
    classifier = files.classifier.name if files.classifier is not None and settings.classifier else None
    return detector, classifier
