"""Event-level evaluation: run the real pipeline on video clips and score its events against when a
raccoon is in view.

    python -m tools.eval_clips --clips var/clips/val/clips.csv [--config config.example.yaml]
                               [--model DIR] [--threshold T] --output report.json

CLIPS.csv has the columns ``clip,group,start_s,end_s``: one row per interval during which a raccoon is
in view (seconds from the clip's first frame); a clip whose only row has empty ``start_s``/``end_s``
is raccoon-free. ``clip`` is a path, relative to the CSV's folder unless absolute; ``group`` (e.g.
``night``, ``day``, ``cat``) groups the report.

Each clip runs through the daemon's own ``App`` with the given configuration: its first enabled
camera's settings (detect_fps, motion gate, zones, threshold...) with the clip as the source, read
once (``loop: false``) and drained (``drain: true``: as fast as the detectors take frames, none
dropped, frames stamped with file time), the router on the same clip clock, sinks off, storage in a
temporary folder. It runs until the file ends and every frame is processed; stopping the app then
closes the events still open.

Scoring (``score_clip``, a pure function), in clip seconds (``Frame.seq / fps``):

* a visit (interval) is **found** when at least one event START lies in
  ``[start_s - grace_s, end_s + grace_s]`` (``grace_s`` = 2 s); each START counts for the first
  visit whose window holds it;
* **time to first alert** = first matched START - ``start_s`` (the START's frame is the frame that
  confirmed the event);
* **events per visit**: matched STARTs per found visit (the target is 1);
* a **false event** is a START that matches no visit; false events per hour are per hour of
  raccoon-free footage (clip duration minus the visits' intervals).

Output: the JSON report (``--output``) and a short table on stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path("config.example.yaml")
GRACE_S = 2.0
CAMERA = "clip"
SCHEMA = 1


# --- ground truth ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Interval:
    """A raccoon is in view from ``start_s`` to ``end_s`` (clip seconds, start <= end)."""

    start_s: float
    end_s: float

    def __post_init__(self) -> None:
        if not 0 <= self.start_s <= self.end_s:
            raise ValueError(f"expected 0 <= start_s <= end_s, got {self.start_s}, {self.end_s}")


@dataclass(frozen=True, slots=True)
class ClipTruth:
    path: Path
    group: str
    visits: tuple[Interval, ...]  # empty: raccoon-free


def read_clips_csv(path: Path) -> list[ClipTruth]:
    """The clips of a CLIPS.csv, in first-seen order; ValueError naming the line when a row is bad."""
    path = Path(path)
    rows: dict[str, tuple[str, list[Interval | None]]] = {}
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = {"clip", "group", "start_s", "end_s"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing columns {sorted(missing)}")
        for line, row in enumerate(reader, start=2):
            clip, group = row["clip"].strip(), row["group"].strip()
            start, end = row["start_s"].strip(), row["end_s"].strip()
            if not clip or not group:
                raise ValueError(f"{path}:{line}: clip and group must not be empty")
            if bool(start) != bool(end):
                raise ValueError(f"{path}:{line}: start_s and end_s are both set or both empty")
            try:
                interval = Interval(float(start), float(end)) if start else None
            except ValueError as exc:
                raise ValueError(f"{path}:{line}: {exc}") from None
            known_group, intervals = rows.setdefault(clip, (group, []))
            if known_group != group:
                raise ValueError(f"{path}:{line}: clip {clip} is in group {known_group!r} and {group!r}")
            intervals.append(interval)
    out = []
    for clip, (group, intervals) in rows.items():
        if None in intervals and len(intervals) > 1:
            raise ValueError(f"{path}: clip {clip} has an empty (raccoon-free) row and visits")
        clip_path = Path(clip) if Path(clip).is_absolute() else path.parent / clip
        visits = tuple(sorted((i for i in intervals if i is not None), key=lambda i: i.start_s))
        out.append(ClipTruth(clip_path, group, visits))
    return out


# --- scoring (pure) ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VisitScore:
    start_s: float
    end_s: float
    events: int  # STARTs matched to this visit
    first_alert_s: float | None  # first matched START - start_s; None when missed

    @property
    def found(self) -> bool:
        return self.events > 0


@dataclass(frozen=True, slots=True)
class ClipScore:
    visits: tuple[VisitScore, ...]
    false_starts_s: tuple[float, ...]  # clip times of STARTs that match no visit
    raccoon_free_s: float

    @property
    def found(self) -> int:
        return sum(v.found for v in self.visits)


def score_clip(visits: Sequence[Interval], starts_s: Iterable[float], duration_s: float,
               grace_s: float = GRACE_S) -> ClipScore:
    """Match event STARTs (clip seconds) to visits; see the module docstring for the rules."""
    matched: list[list[float]] = [[] for _ in visits]
    false: list[float] = []
    for t in sorted(starts_s):
        for k, v in enumerate(visits):
            if v.start_s - grace_s <= t <= v.end_s + grace_s:
                matched[k].append(t)
                break
        else:
            false.append(t)
    scored = tuple(
        VisitScore(v.start_s, v.end_s, len(m), (m[0] - v.start_s) if m else None) for v, m in zip(visits, matched)
    )
    return ClipScore(scored, tuple(false), max(0.0, duration_s - _union_length(visits, duration_s)))


def _union_length(visits: Sequence[Interval], duration_s: float) -> float:
    """Seconds of [0, duration_s] covered by the intervals."""
    total, reach = 0.0, 0.0
    for v in sorted(visits, key=lambda i: i.start_s):
        start, end = max(v.start_s, reach), min(v.end_s, duration_s)
        if end > start:
            total += end - start
        reach = max(reach, end)
    return total


def summarize(scores: Sequence[ClipScore]) -> dict[str, Any]:
    """Totals over clips: visits found/total, time to first alert, events per visit, false events/h."""
    visits = [v for s in scores for v in s.visits]
    found = [v for v in visits if v.found]
    alerts = [v.first_alert_s for v in found if v.first_alert_s is not None]
    false = sum(len(s.false_starts_s) for s in scores)
    free_h = sum(s.raccoon_free_s for s in scores) / 3600.0
    return {
        "clips": len(scores),
        "visits_total": len(visits),
        "visits_found": len(found),
        "visits_missed": len(visits) - len(found),
        "recall": round(len(found) / len(visits), 3) if visits else None,
        "first_alert_s": {"median": _round(statistics.median(alerts)) if alerts else None,
                          "max": _round(max(alerts)) if alerts else None},
        "events_per_found_visit": round(sum(v.events for v in found) / len(found), 2) if found else None,
        "visits_with_several_events": sum(v.events > 1 for v in found),
        "false_events": false,
        "raccoon_free_h": round(free_h, 4),
        "false_events_per_h": round(false / free_h, 1) if free_h > 0 else None,
    }


def _round(x: float) -> float:
    return round(x, 2)


# --- running the pipeline ----------------------------------------------------------------------------


@dataclass
class ClipProbe:
    """What the router shows of one clip run (router thread writes; the main thread reads after)."""

    labels: frozenset[str]
    seq_at_ts: dict[float, int] = field(default_factory=dict)
    latest_mono: float | None = None  # Frame.mono of the newest processed frame (clip time)
    start_ts: list[float] = field(default_factory=list)  # frame_ts of each START
    frames: list[tuple[int, float, bool]] = field(default_factory=list)  # (seq, best label score, counted)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_result(self, result: Any, hits: tuple[Any, ...]) -> None:
        frame = result.frame
        best = max((d.score for d in result.detections if d.label in self.labels), default=0.0)
        with self.lock:
            self.seq_at_ts[frame.ts] = frame.seq
            self.latest_mono = frame.mono if self.latest_mono is None else max(self.latest_mono, frame.mono)
            self.frames.append((frame.seq, best, bool(hits)))

    def on_event(self, event: Any) -> None:
        if event.kind.value == "new" and event.severity.value == "alert":  # each alert once, never a detection
            with self.lock:
                self.start_ts.append(event.frame_ts)

    def clock(self) -> float:
        """The router's (monotonic) clock: the clip's ``Frame.mono`` of the newest processed frame
        (time.monotonic() before any)."""
        latest = self.latest_mono
        return latest if latest is not None else time.monotonic()


@dataclass(frozen=True, slots=True)
class ClipRun:
    fps: float
    frames_read: int
    frames_processed: int
    starts_s: tuple[float, ...]
    frame_scores: tuple[tuple[int, float, bool], ...]  # (seq, best score, counted), in seq order
    wall_s: float
    errors: int

    @property
    def duration_s(self) -> float:
        return self.frames_read / self.fps if self.fps else 0.0


def clip_config(base: Any, clip: Path, storage: Path, model: Path | None, threshold: float | None) -> Any:
    """The evaluation's Config: ``base``'s first enabled camera with the clip as a drained source,
    sinks off, storage in ``storage``."""
    enabled = [cam for cam in base.cameras.values() if cam.enabled]
    if not enabled:
        raise ValueError("the configuration has no enabled camera to take settings from")
    camera = enabled[0].model_copy(update={"source": str(clip), "loop": False, "realtime": False, "drain": True})
    detector = base.detector
    if model is not None:
        detector = detector.model_copy(update={"model": model})
    if threshold is not None:
        detector = detector.model_copy(update={"threshold": threshold})
    storage_cfg = base.storage.model_copy(update={"path": storage})
    clips = base.clips.model_copy(update={"enabled": False})  # events are scored, not watched: no clip cuts
    return base.model_copy(update={"cameras": {CAMERA: camera}, "detector": detector, "storage": storage_cfg,
                                   "clips": clips, "mqtt": None, "pushover": None})


def run_clip(cfg: Any, timeout_s: float) -> ClipRun:
    """Run the App on ``cfg`` (from ``clip_config``) until the clip is read and every frame processed."""
    from raccoon_watch.app import App, Observer
    from raccoon_watch.capture import DEFAULT_FILE_FPS

    probe = ClipProbe(labels=frozenset(cfg.detector.labels))
    app = App(cfg, observers=[Observer(on_result=probe.on_result, on_event=probe.on_event)], clock=probe.clock)
    t0 = time.monotonic()
    app.start()
    try:
        thread, deadline = app.cameras[CAMERA], t0 + timeout_s
        while thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        router = app.router
        assert router is not None
        while router.processed.get(CAMERA, 0) < thread.stats.frames_queued - _errors(app) and time.monotonic() < deadline:
            time.sleep(0.02)
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{cfg.cameras[CAMERA].source}: not done after {timeout_s:.0f} s")
    finally:
        app.stop()  # ends the events still open (router end_all on the clip clock)
    fps = thread.stats.fps or DEFAULT_FILE_FPS
    with probe.lock:
        starts = tuple(probe.seq_at_ts[ts] / fps for ts in probe.start_ts)
        frames = tuple(sorted(probe.frames))
    return ClipRun(fps, thread.stats.frames_read, len(frames), starts, frames, time.monotonic() - t0, _errors(app))


def _errors(app: Any) -> int:
    return sum(w.stats.errors for w in app.workers)


def _visit_frames(run: ClipRun, visit: Interval) -> dict[str, Any]:
    """Diagnostics for one visit: processed frames inside it, how many counted, the best score."""
    inside = [(s, c) for seq, s, c in run.frame_scores if visit.start_s <= seq / run.fps <= visit.end_s]
    return {"frames_processed": len(inside), "frames_counted": sum(c for _, c in inside),
            "best_score": round(max((s for s, _ in inside), default=0.0), 3)}


def evaluate(clips: Sequence[ClipTruth], base_cfg: Any, model: Path | None = None, threshold: float | None = None,
             grace_s: float = GRACE_S, log: Any = None) -> dict[str, Any]:
    """Run and score every clip; the report (``clips``, ``groups``, ``overall``)."""
    per_clip, scores_by_group = [], {}
    for n, truth in enumerate(clips, start=1):
        if not truth.path.is_file():
            raise FileNotFoundError(f"clip not found: {truth.path}")
        with tempfile.TemporaryDirectory(prefix="raccoon-eval-") as tmp:
            cfg = clip_config(base_cfg, truth.path, Path(tmp), model, threshold)
            run = run_clip(cfg, timeout_s=600.0)
        score = score_clip(truth.visits, run.starts_s, run.duration_s, grace_s)
        scores_by_group.setdefault(truth.group, []).append(score)
        outside = [s for seq, s, _ in run.frame_scores
                   if not any(v.start_s <= seq / run.fps <= v.end_s for v in truth.visits)]
        per_clip.append({
            "clip": str(truth.path), "group": truth.group, "duration_s": round(run.duration_s, 2),
            "fps": run.fps, "frames_read": run.frames_read, "frames_processed": run.frames_processed,
            "detector_errors": run.errors, "wall_s": round(run.wall_s, 2),
            "event_starts_s": [round(t, 2) for t in run.starts_s],
            "visits": [{**asdict(v), "found": v.found,
                        "first_alert_s": None if v.first_alert_s is None else round(v.first_alert_s, 2),
                        **_visit_frames(run, Interval(v.start_s, v.end_s))} for v in score.visits],
            "false_events": len(score.false_starts_s), "false_starts_s": [round(t, 2) for t in score.false_starts_s],
            "raccoon_free_s": round(score.raccoon_free_s, 2),
            "best_score_outside_visits": round(max(outside, default=0.0), 3),
        })
        if log is not None:
            found = f"{score.found}/{len(score.visits)} visits" if score.visits else "raccoon-free"
            print(f"eval_clips: [{n}/{len(clips)}] {truth.path.name} ({truth.group}): {found}, "
                  f"{len(score.false_starts_s)} false, {run.wall_s:.1f} s", file=log, flush=True)
    all_scores = [s for group in scores_by_group.values() for s in group]
    return {
        "schema": SCHEMA,
        "settings": {"grace_s": grace_s, "threshold": threshold if threshold is not None else "config / model card",
                     "model": str(model) if model else str(base_cfg.detector.model or "bundled (models/raccoon)"),
                     "camera": {k: v for k, v in clip_config(base_cfg, Path("-"), Path("-"), model, threshold)
                                .cameras[CAMERA].model_dump(mode="json").items() if k not in ("source",)},
                     "events": base_cfg.events.model_dump(mode="json")},
        "groups": {g: summarize(s) for g, s in scores_by_group.items()},
        "overall": summarize(all_scores),
        "clips": per_clip,
    }


def table(report: dict[str, Any]) -> str:
    """The short stderr table: one line per group, then all."""
    head = f"{'group':<10} {'clips':>5} {'visits':>9} {'1st alert':>9} {'ev/visit':>8} {'false':>5} {'free h':>7} {'false/h':>7}"
    lines = [head, "-" * len(head)]
    for name, g in [*report["groups"].items(), ("ALL", report["overall"])]:
        visits = f"{g['visits_found']}/{g['visits_total']}" if g["visits_total"] else "-"
        alert = g["first_alert_s"]["median"]
        lines.append(
            f"{name:<10} {g['clips']:>5} {visits:>9} {'-' if alert is None else f'{alert:.1f} s':>9} "
            f"{'-' if g['events_per_found_visit'] is None else g['events_per_found_visit']:>8} {g['false_events']:>5} "
            f"{g['raccoon_free_h']:>7.3f} {'-' if g['false_events_per_h'] is None else g['false_events_per_h']:>7}"
        )
    return "\n".join(lines)


# --- CLI ---------------------------------------------------------------------------------------------


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.eval_clips", description=__doc__.splitlines()[0])
    parser.add_argument("--clips", required=True, type=Path, help="CLIPS.csv: clip,group,start_s,end_s")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="daemon config (default: %(default)s)")
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: the config's)")
    parser.add_argument("--threshold", type=float, default=None, help="override detector.threshold")
    parser.add_argument("--grace", type=float, default=GRACE_S, help="seconds of grace around a visit (default 2)")
    parser.add_argument("--group", action="append", default=None, help="only these groups (repeatable)")
    parser.add_argument("--output", required=True, type=Path, help="JSON report")
    return parser


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this report (for the JSON)."""
    parts = ["--clips", str(args.clips), "--config", str(args.config)]
    parts += ["--model", str(args.model)] if args.model else []
    parts += ["--threshold", f"{args.threshold:g}"] if args.threshold is not None else []
    parts += ["--grace", f"{args.grace:g}"] if args.grace != GRACE_S else []
    parts += [x for g in args.group or () for x in ("--group", g)]
    return "python -m tools.eval_clips " + shlex.join([*parts, "--output", str(args.output)])


def main(args: argparse.Namespace) -> int:
    from raccoon_watch.config import ConfigError, load_config

    try:
        base = load_config(args.config)
        clips = read_clips_csv(args.clips)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"eval_clips: {exc}", file=sys.stderr)
        return 2
    if args.group:
        clips = [c for c in clips if c.group in set(args.group)]
    if not clips:
        print("eval_clips: no clips to evaluate", file=sys.stderr)
        return 2
    report = evaluate(clips, base, args.model, args.threshold, args.grace, log=sys.stderr)
    report["command"] = command_line(args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report), file=sys.stderr)
    print(f"eval_clips: report written to {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from raccoon_watch.support.logs import setup_logging

    setup_logging("warning", "json")  # the process's logging is the command line's business, not main()'s
    sys.exit(main(get_args_parser().parse_args()))
