"""``raccoon-watch detect``: one-shot detection on images, video files or camera sources.

    raccoon-watch detect [--model PATH] [--backend auto|tflite|tensorflow] [--threshold T]
                         [--no-classifier] [--proposal-threshold P]
                         [--labels a,b] [--json] [--out OUT] [--threads N] [--max-frames N] INPUT...

It runs exactly what the daemon runs (``raccoon_watch.recognition.recognizer.Recognizer``): with the bundled
two-stage model, the detector proposes and the raccoon classifier scores each candidate on a crop of
the full-resolution image.

Images, ``--json``: exactly one JSON object per input, one per line, in input order (stable format,
the evaluation tooling reads it)::

    {"image": PATH, "width": W, "height": H, "mode": "color",
     "detections": [{"label": "raccoon", "score": 0.93, "detector_score": 0.41,
                     "box": [xmin, ymin, xmax, ymax]}]}

``mode`` is the image's mode (``raccoon_watch.recognition.imagemode``: ``color``, or ``ir`` for an infrared or
monochrome picture); the default threshold is the cards' threshold for that mode.

``score`` is the final score (the classifier's P(raccoon) with a two-stage model; what
``--threshold`` compares), ``detector_score`` the detector's score for the box (present with a
two-stage model only). ``image`` is the path as given; ``box`` is in integer pixels of the ORIGINAL image (not the model
input), 0 <= xmin <= xmax <= W, 0 <= ymin <= ymax <= H; ``score`` is rounded to 4 decimals; detections
are sorted by score, best first, and only those with score >= threshold (and a wanted label, with
``--labels``) are listed. An input that is missing, not an image, a truncated JPEG or over
``--max-megapixels`` (checked from the header, before decoding; default 50) gives ``{"image": PATH, "error":
"..."}`` instead (no ``detections`` key), a message on stderr, and exit status 1 at the end; the
other inputs are still processed. Without ``--json`` a human-readable line per image.

A folder tree (``detect DIR --recursive --output FILE [--ray [ADDRESS]] [--format megadetector]``):
every photo and clip under DIR, resumable from a checkpoint, in this process or on a Ray cluster,
photo records exactly as above; see ``raccoon_watch/archive/cli.py``.

Videos and camera sources (a video file, ``0``, ``/dev/video0``, ``rtsp://...``): every frame is
detected; with ``--out annotated.mp4`` the frames are written with boxes and scores drawn (mp4v, the
source's fps and size). One summary line per source (a JSON object with ``--json``: ``video``,
``frames``, ``fps``, ``width``, ``height``, ``frames_with_detections``, ``max_score``, ``labels``,
``out``). ``--max-frames`` bounds a live source (default: until it ends or Ctrl-C).

``--out`` (``plan_outputs``, checked before the model loads; any problem is exit 2 and nothing is
written): ``--out FILE.mp4`` (a video suffix) is one annotated video for exactly one video or camera
input; ``--out FILE.jpg`` (an image suffix) is one annotated image for exactly one image input;
anything else is a directory (created if missing): annotated images go to DIR/<stem>.jpg, videos to
DIR/<stem>.mp4. No output file may exist already, and no two inputs may map to the same output
(``a/x.jpg b/x.jpg``): nothing is ever overwritten. The default threshold is the model card's deployed threshold, else 0.5. Exit status: 0 ok, 1 some
input failed, 2 bad arguments, 3 the model is missing or not a model (as the other commands). Logs
go to stderr so stdout stays parseable.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2

from raccoon_watch.config import DEFAULT_THRESHOLD, DetectorConfig
from raccoon_watch.recognition.detectors import DEFAULT_MIN_SCORE, ModelError, create_recognizer
from raccoon_watch.recognition.recognizer import Recognizer
from raccoon_watch.recognition.records import IMAGE_SUFFIXES, VIDEO_SUFFIXES, image_record, keep_filter, parse_labels
from raccoon_watch.snapshot import draw_detections
from raccoon_watch.support.imagefile import DEFAULT_MAX_PIXELS, NOT_AN_IMAGE
from raccoon_watch.support.logs import setup_logging

FALLBACK_FPS = 15.0  # when a source does not report its frame rate
OPEN_TIMEOUT_MS = 5000
EXIT_OK, EXIT_INPUT_FAILED, EXIT_USAGE, EXIT_MODEL = 0, 1, 2, 3  # as raccoon_watch.service.cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, video files or camera sources")
    parser.add_argument("--model", type=Path, help="model directory or file (default: the bundled raccoon model)")
    parser.add_argument("--backend", choices=("auto", "tflite", "tensorflow"), default="auto")
    parser.add_argument("--threshold", type=float, help=f"minimum score (default: the model card's, else {DEFAULT_THRESHOLD})")
    parser.add_argument("--no-classifier", action="store_true", help="the detector alone, even if the model has a classifier stage")
    parser.add_argument("--proposal-threshold", type=float, help="detector score from which a box is classified "
                        "(default: the classifier card's)")
    parser.add_argument("--labels", help="comma-separated labels to report (default: all)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image per line")
    parser.add_argument("--out", type=Path, help="annotated video file (.mp4) or directory for annotated images")
    parser.add_argument("--threads", type=int, default=2, help="TFLite interpreter threads")
    parser.add_argument("--max-frames", type=int, help="stop a video/camera source after this many frames")
    parser.add_argument("--max-megapixels", type=float, default=DEFAULT_MAX_PIXELS / 1e6,
                        help="refuse images larger than this, before decoding them (default: %(default)g)")
    from raccoon_watch.archive import cli as archive_cli

    archive_cli.add_arguments(parser)  # DIR --recursive [--ray [ADDRESS]] --output ...


def main(args: argparse.Namespace) -> int:
    setup_logging("warning")  # logs to stderr: stdout carries only the results (--json lines)
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        print(f"detect: --threshold must be in 0..1, got {args.threshold}", file=sys.stderr)
        return EXIT_USAGE
    if args.proposal_threshold is not None and not 0.0 <= args.proposal_threshold <= 1.0:
        print(f"detect: --proposal-threshold must be in 0..1, got {args.proposal_threshold}", file=sys.stderr)
        return EXIT_USAGE
    max_mp = getattr(args, "max_megapixels", DEFAULT_MAX_PIXELS / 1e6)
    if not (math.isfinite(max_mp) and max_mp > 0):
        print(f"detect: --max-megapixels must be a positive number, got {max_mp}", file=sys.stderr)
        return EXIT_USAGE
    if any(getattr(args, name, None) for name in ("recursive", "output", "ray", "checkpoint")) \
            or getattr(args, "format", "jsonl") != "jsonl":
        from raccoon_watch.archive import cli as archive_cli

        return archive_cli.main(args, int(max_mp * 1e6))  # a folder tree, resumable, optionally on Ray
    targets, problem = plan_outputs(args.inputs, args.out)
    if problem is not None:
        print(f"detect: {problem}", file=sys.stderr)
        return EXIT_USAGE
    min_score = DEFAULT_MIN_SCORE if args.threshold is None else min(args.threshold, DEFAULT_MIN_SCORE)
    try:
        cfg = DetectorConfig(model=args.model, backend=args.backend, num_threads=max(1, args.threads),
                             classifier=not args.no_classifier, proposal_threshold=args.proposal_threshold)
        detector = create_recognizer(cfg, min_score=min_score)
    except ModelError as exc:
        print(f"detect: cannot load the model: {exc}", file=sys.stderr)
        return EXIT_MODEL
    keep = keep_filter(detector, args.threshold, parse_labels(args.labels))
    failed = 0
    try:
        for source in args.inputs:
            target = targets.get(source)
            if _kind(source) == "image":
                record = image_record(detector, source, keep, target, int(max_mp * 1e6))
                if record.get("error") == NOT_AN_IMAGE and Path(source).suffix.lower() not in IMAGE_SUFFIXES:
                    as_video = None if target is None else target.with_suffix(".mp4")  # a clip with an odd name?
                    if as_video is not None and as_video.exists():
                        record = {"image": source, "error": f"would overwrite {as_video}"}
                    else:
                        record = _video(detector, source, keep, as_video, args.max_frames)
                    if "error" in record:
                        record = {"image": source, "error": "neither an image nor a video"}
            else:
                record = _video(detector, source, keep, target, args.max_frames)
            failed += "error" in record
            _report(record, args.json)
    finally:
        detector.close()
    return EXIT_INPUT_FAILED if failed else EXIT_OK


def _kind(source: str) -> str:
    """'image' or 'video' (files by suffix; digits, devices and URLs are camera sources)."""
    suffix = Path(source).suffix.lower()
    if suffix in VIDEO_SUFFIXES or source.isdigit() or "://" in source or source.startswith("/dev/video"):
        return "video"
    return "image"


def plan_outputs(inputs: Sequence[str], out: Path | None) -> tuple[dict[str, Path], str | None]:
    """Where each input's annotated output goes, or the reason ``--out`` cannot be used (pure but
    for looking at what exists). See the module docstring for the rule."""
    if out is None:
        return {}, None
    suffix = out.suffix.lower()
    kinds = [_kind(s) for s in inputs]
    if suffix in VIDEO_SUFFIXES or suffix in IMAGE_SUFFIXES:
        kind = "video" if suffix in VIDEO_SUFFIXES else "image"
        if len(inputs) != 1 or kinds[0] != kind:
            return {}, (f"--out {out} is one {kind} file, for exactly one {kind} input"
                        + (" or camera" if kind == "video" else "")
                        + "; pass a directory for several inputs or for other kinds")
        if out.exists():
            return {}, f"--out {out} exists already; remove it or choose another name (nothing is overwritten)"
        return {inputs[0]: out}, None
    if out.exists() and not out.is_dir():
        return {}, f"--out {out} is a file, not a directory; a file name needs a video or image suffix"
    targets: dict[str, Path] = {}
    claimed: dict[Path, str] = {}
    for source, kind in zip(inputs, kinds):
        stem = Path(source).stem or "camera"
        target = out / f"{stem}{'.jpg' if kind == 'image' else '.mp4'}"
        if target in claimed:
            return {}, f"{claimed[target]} and {source} would both write {target}; run them separately"
        if target.exists():
            return {}, f"{target} exists already (for {source}); nothing is overwritten: use another --out"
        claimed[target] = source
        targets[source] = target
    return targets, None


def _open(source: str) -> cv2.VideoCapture:
    target: int | str = int(source) if source.isdigit() else source
    return cv2.VideoCapture(target, cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                                                   cv2.CAP_PROP_READ_TIMEOUT_MSEC, OPEN_TIMEOUT_MS])


def _video(detector: Recognizer, source: str, keep, target: Path | None, max_frames: int | None) -> dict[str, Any]:
    if "://" not in source and not source.isdigit() and not Path(source).exists():
        return {"video": source, "error": "no such file"}
    cap = _open(source)
    if not cap.isOpened():
        return {"video": source, "error": "cannot open as a video or camera source"}
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = fps if math.isfinite(fps) and 0 < fps <= 240 else FALLBACK_FPS
    writer: cv2.VideoWriter | None = None
    frames, with_dets, max_score = 0, 0, 0.0
    labels: Counter[str] = Counter()
    width = height = 0
    started = time.monotonic()
    try:
        while max_frames is None or frames < max_frames:
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            height, width = frame.shape[:2]
            dets = keep(detector.detect([frame])[0])
            frames += 1
            with_dets += bool(dets)
            max_score = max([max_score] + [d.score for d in dets])
            labels.update(d.label for d in dets)
            if target is not None:
                writer = writer or _writer(target, fps, width, height)
                writer.write(draw_detections(frame, dets))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        return {"video": source, "error": str(exc)}
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        return {"video": source, "error": "no frame could be read"}
    return {"video": source, "frames": frames, "fps": round(fps, 3), "width": width, "height": height,
            "frames_with_detections": with_dets, "max_score": round(max_score, 4), "labels": dict(labels),
            "out": None if target is None else str(target),
            "ms_per_frame": round((time.monotonic() - started) * 1000 / frames, 1)}


def _writer(target: Path, fps: float, width: int, height: int) -> cv2.VideoWriter:
    target.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"cannot write video {target}")
    return writer


def _report(record: dict[str, Any], as_json: bool) -> None:
    if "error" in record:
        name = record.get("image", record.get("video"))
        print(f"detect: {name}: {record['error']}", file=sys.stderr)
        if as_json:
            print(json.dumps(record), flush=True)
        return
    if as_json:
        print(json.dumps(record), flush=True)
    elif "image" in record:
        found = ", ".join(f"{d['label']} {d['score']:.2f} {d['box']}" for d in record["detections"])
        print(f"{record['image']} ({record['width']}x{record['height']}): {found or 'nothing detected'}", flush=True)
    else:
        top = ", ".join(f"{k} x{v}" for k, v in record["labels"].items()) or "nothing detected"
        print(f"{record['video']}: {record['frames']} frames at {record['fps']} fps, {record['frames_with_detections']} "
              f"with detections ({top}; best {record['max_score']:.2f}), {record['ms_per_frame']} ms/frame"
              + (f", wrote {record['out']}" if record["out"] else ""), flush=True)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raccoon-watch detect", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    return main(get_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(run())
