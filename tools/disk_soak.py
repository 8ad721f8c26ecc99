"""``python -m tools.disk_soak`` (``make soak``): does the storage folder stay within its caps?

Issue 22's done-when: "30 minutes of 3 looping file cameras with clips: the storage folder never
exceeds its caps by more than one clip". This runs exactly that and measures it:

    .venv/bin/python -m tools.disk_soak --minutes 30        # JSON on stdout and in var/disk_soak/<time>/

1. the demo clip (``raccoon_watch.demo``: two raccoons walking across an empty scene, 35 s, built
   once from ../shared) or ``--clip``, played by ``--cameras`` looping file cameras in real time
   (each camera: two events per loop, each with a snapshot, a clean frame and a clip);
2. the real daemon (``python -m raccoon_watch run``) with small caps (``--snapshot-mb``,
   ``--clip-mb``), so that retention deletes something every few events;
3. every ``--interval`` seconds (1), the storage folder walked: the bytes of snapshots/ + frames/
   (the picture cap), of clips/ (the clip cap; temp files included: they are on the disk) and of
   everything else (events.db and its WAL, the lock file), and the largest clip file seen so far;
4. SIGTERM at the end, and one JSON object: per cap the most it held and the most it was over,
   the folder's largest total against the caps plus the uncapped rest, the events and clips, and
   ``met``: no sample over the caps by more than the largest clip.

The overshoot of a sample is ``max(0, pictures - snapshot cap) + max(0, clips - clip cap)``: what
the capped media hold beyond their caps at that second. events.db is not capped (a row is about a
kilobyte; the rows stay when their media go) and is reported on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from raccoon_watch.config import DEFAULT_MODEL_DIR, shared_dir
from raccoon_watch.store.retention import CLIP_DIR, FRAME_DIR, MB, SNAPSHOT_DIR

REPO = Path(__file__).resolve().parent.parent
PICTURE_DIRS = (SNAPSHOT_DIR, FRAME_DIR)
START_TIMEOUT_S = 300.0  # model load on a busy machine


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0,
                   help="length of the run from the daemon's daemon_started line (default 30)")
    p.add_argument("--until-clips", type=int, default=0,
                   help="stop earlier, once this many clips were cut (tests: a busy machine cuts them later)")
    p.add_argument("--cameras", type=int, default=3, help="looping file cameras (default 3)")
    p.add_argument("--clip", type=Path, help="the video each camera loops (default: the demo clip)")
    p.add_argument("--snapshot-mb", type=float, default=2.0, help="storage.snapshot_retention_mb (default 2)")
    p.add_argument("--clip-mb", type=float, default=10.0, help="storage.clip_retention_mb (default 10)")
    p.add_argument("--end-after", type=float, default=None, help="events.end_after (default: the config's)")
    p.add_argument("--detect-fps", type=float, default=5.0)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    p.add_argument("--out", type=Path, default=REPO / "var" / "disk_soak", help="runs go to <out>/<time>/")
    return p


# --- the run ----------------------------------------------------------------------------------------


def write_config(run_dir: Path, clip: Path, args: argparse.Namespace) -> Path:
    """The daemon's config: ``args.cameras`` looping file cameras on ``clip``, the shipped model at its
    deployed thresholds, the small caps."""
    cameras = {f"cam{i + 1}": {"source": str(clip), "loop": True, "realtime": True, "detect_fps": args.detect_fps}
               for i in range(args.cameras)}
    data: dict[str, Any] = {
        "cameras": cameras,
        "detector": {"model": str(DEFAULT_MODEL_DIR), "workers": 1},
        "storage": {"path": str(run_dir / "var"), "snapshot_retention_mb": args.snapshot_mb,
                    "clip_retention_mb": args.clip_mb},
        "logging": {"format": "json", "level": "info"},
    }
    if args.end_after is not None:
        data["events"] = {"end_after": args.end_after}
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass(frozen=True, slots=True)
class Sample:
    """The storage folder at one moment: bytes by part; ``largest_clip``: the largest clip file now."""

    t: float  # seconds since the daemon started
    pictures: int  # snapshots/ + frames/
    clips: int  # clips/, temp files included
    other: int  # events.db, its WAL, the lock file, anything else
    largest_clip: int

    @property
    def total(self) -> int:
        return self.pictures + self.clips + self.other


def folder_bytes(root: Path) -> tuple[dict[str, int], int]:
    """Bytes of every regular file under ``root``, by top-level name; and the largest ``clips/*/*.mp4``."""
    parts: dict[str, int] = {}
    largest = 0
    for dirpath, _dirs, names in os.walk(root):
        rel = Path(dirpath).relative_to(root).parts
        for name in names:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:  # deleted between the listing and the stat
                continue
            top = rel[0] if rel else name
            parts[top] = parts.get(top, 0) + st.st_size
            if rel and rel[0] == CLIP_DIR and name.endswith(".mp4") and not name.startswith("."):
                largest = max(largest, st.st_size)
    return parts, largest


def take_sample(root: Path, t: float) -> Sample:
    parts, largest = folder_bytes(root)
    pictures = sum(parts.pop(d, 0) for d in PICTURE_DIRS)
    clips = parts.pop(CLIP_DIR, 0)
    return Sample(round(t, 1), pictures, clips, sum(parts.values()), largest)


def overshoot(s: Sample, snapshot_cap: int, clip_cap: int) -> int:
    """What the capped media hold beyond their caps (0 when within both)."""
    return max(0, s.pictures - snapshot_cap) + max(0, s.clips - clip_cap)


def summarize(samples: Sequence[Sample], snapshot_cap: int, clip_cap: int) -> dict[str, Any]:
    """The samples against the caps: per cap the most held and the most over; ``met`` when no sample
    is over by more than the largest clip seen in the run."""
    if not samples:
        return {"samples": 0, "met": False}
    largest_clip = max(s.largest_clip for s in samples)
    worst = max(samples, key=lambda s: overshoot(s, snapshot_cap, clip_cap))
    over = overshoot(worst, snapshot_cap, clip_cap)
    return {
        "samples": len(samples),
        "seconds": samples[-1].t,
        "pictures": {"cap_bytes": snapshot_cap, "max_bytes": max(s.pictures for s in samples),
                     "max_over_bytes": max(max(0, s.pictures - snapshot_cap) for s in samples)},
        "clips": {"cap_bytes": clip_cap, "max_bytes": max(s.clips for s in samples),
                  "max_over_bytes": max(max(0, s.clips - clip_cap) for s in samples),
                  "samples_over": sum(s.clips > clip_cap for s in samples)},
        "largest_clip_bytes": largest_clip,
        "max_overshoot_bytes": over,
        "max_overshoot_at_s": worst.t if over else None,
        "max_overshoot_in_clips": round(over / largest_clip, 3) if largest_clip else None,
        "folder_max_bytes": max(s.total for s in samples),
        "uncapped_max_bytes": max(s.other for s in samples),
        "met": over <= largest_clip,
    }


def store_counts(db: Path) -> dict[str, Any]:
    """Events, clips by state, and media removed by retention, from events.db."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            events = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            states = dict(conn.execute("SELECT COALESCE(clip_state, 'none'), COUNT(*) FROM events GROUP BY 1"))
            removed = conn.execute("SELECT COUNT(*) FROM events WHERE clip_reason LIKE 'removed by retention%'"
                                   ).fetchone()[0]
            no_snapshot = conn.execute("SELECT COUNT(*) FROM events WHERE snapshot IS NULL").fetchone()[0]
    except sqlite3.Error as exc:
        return {"error": str(exc)}
    return {"events": events, "clip_states": states, "clips_removed_by_retention": removed,
            "events_without_snapshot": no_snapshot}


def log_counts(path: Path) -> dict[str, Any]:
    """From the daemon's JSON log: retention deletions, caps exceeded, clips cut, error lines."""
    out = {"retention_runs": 0, "retention_files": 0, "retention_cap_exceeded": 0, "clip_ready": 0,
           "clip_missing": 0, "errors": 0}
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        name = rec.get("event")
        if name == "retention_deleted":
            out["retention_runs"] += 1
            out["retention_files"] += int(rec.get("files", 0))
        elif name in ("retention_cap_exceeded", "clip_ready", "clip_missing"):
            out[name] += 1
        if rec.get("level") == "error":
            out["errors"] += 1
    return out


class LogWatch:
    """Counts of the daemon's log events so far, reading only what was appended since the last poll."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.counts: dict[str, int] = {}

    def poll(self) -> dict[str, int]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return self.counts
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next poll
        self.offset += len(complete)
        for line in complete.splitlines():
            try:
                name = json.loads(line).get("event")
            except (ValueError, AttributeError):
                continue
            self.counts[name] = self.counts.get(name, 0) + 1
        return self.counts


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole run; returns the result (also written to ``<run dir>/result.json``)."""
    from raccoon_watch.demo import ensure_demo_clip

    clip = args.clip or ensure_demo_clip(shared_dir(), REPO / "var" / "demo" / "raccoon_demo_walk.mp4")
    run_dir = args.out / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    config = write_config(run_dir, Path(clip).resolve(), args)
    storage = run_dir / "var"
    snapshot_cap, clip_cap = int(args.snapshot_mb * MB), int(args.clip_mb * MB)
    samples: list[Sample] = []
    with open(run_dir / "daemon.log", "wb") as log, open(run_dir / "samples.jsonl", "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "raccoon_watch", "run", "--config", str(config)], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        t0 = time.monotonic()
        seen = LogWatch(run_dir / "daemon.log")
        started: float | None = None
        try:
            while proc.poll() is None:
                s = take_sample(storage, time.monotonic() - t0)
                samples.append(s)
                out.write(json.dumps({**asdict(s), "over": overshoot(s, snapshot_cap, clip_cap)}) + "\n")
                out.flush()
                counts = seen.poll()
                if started is None and counts.get("daemon_started"):
                    started = s.t
                if started is None and s.t > START_TIMEOUT_S:
                    break
                if started is not None and (s.t - started >= args.minutes * 60
                                            or 0 < args.until_clips <= counts.get("clip_ready", 0)):
                    break
                time.sleep(max(0.0, args.interval - (time.monotonic() - t0 - s.t)))
        finally:
            exited_early = proc.poll()
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
    result = {
        "run_dir": str(run_dir), "clip": str(clip), "cameras": args.cameras, "minutes": args.minutes,
        "caps_mb": {"snapshot_retention_mb": args.snapshot_mb, "clip_retention_mb": args.clip_mb},
        "daemon_started_at_s": started,
        **summarize(samples, snapshot_cap, clip_cap),
        "store": store_counts(storage / "events.db"), "log": log_counts(run_dir / "daemon.log"),
        "daemon_exit": code, "daemon_exited_early": exited_early is not None,
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    result = run(args)
    print(json.dumps(result, indent=1))
    return 0 if result["met"] and result["daemon_started_at_s"] is not None and not result["daemon_exited_early"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
