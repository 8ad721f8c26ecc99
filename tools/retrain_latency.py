"""Does a retrain slow detection down? Frame-to-event latency and dropped frames of a real daemon, idle and
during a ``raccoon-watch retrain`` on the same machine (README "Learns your porch").

    python -m tools.retrain_latency --config RETRAIN.yaml --feedback DIR --base-crops DIR [--idle-s 95]

The daemon (``App``, in this process, normal priority) watches the demo raccoon clip in a loop at
5 fps with one worker thread; an observer takes each START event's latency (emitted wall time minus
its frame's capture time). First ``--idle-s`` seconds alone, then while the retrain runs as the
systemd unit runs it (``nice -n 19``, one thread). Prints one JSON line per phase.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from raccoon_watch.app import App, Observer
from raccoon_watch.config import parse_config, shared_dir
from raccoon_watch.demo import ensure_demo_clip
from raccoon_watch.types import EventKind
REPO = Path(__file__).resolve().parent.parent


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.retrain_latency", description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True, help="config of the retrain (its storage.path)")
    p.add_argument("--feedback", required=True, help="an exported feedback folder")
    p.add_argument("--base-crops", required=True, help="train.npz / val.npz folder (built once)")
    p.add_argument("--idle-s", type=float, default=95.0, help="seconds measured before the retrain starts")
    p.add_argument("--storage", default="var/retrain_latency", help="the measured daemon's storage.path")
    return p


def main(args: argparse.Namespace) -> int:
    clip = ensure_demo_clip(shared_dir())
    cfg = parse_config(f"""
cameras: {{porch: {{source: "{clip}", loop: true, realtime: true, detect_fps: 5, motion: {{enabled: false}}}}}}
detector: {{workers: 1, num_threads: 1}}
events: {{min_frames: 3, window: 5, end_after: 2, cooldown: 0}}
storage: {{path: {args.storage}}}
""")
    lat: list[float] = []

    def on_event(e) -> None:  # type: ignore[no-untyped-def]
        if e.kind is EventKind.START and e.is_alert:  # each alert once, never a detection
            lat.append((time.time() - e.frame_ts) * 1000.0)

    app = App(cfg, observers=[Observer(on_event=on_event)])
    app.start()

    def phase(name: str, seconds: float | None = None, proc: subprocess.Popen | None = None) -> None:
        lat.clear()
        d0, f0, t0 = app.stats().queue.dropped, sum(w.frames for w in app.stats().workers), time.monotonic()
        while (proc is not None and proc.poll() is None) or (proc is None and time.monotonic() - t0 < (seconds or 0)):
            time.sleep(0.5)
        s, elapsed = app.stats(), time.monotonic() - t0
        frames = sum(w.frames for w in s.workers) - f0
        print(json.dumps({"phase": name, "seconds": round(elapsed, 1), "events": len(lat),
                          "start_latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if lat else None,
                          "start_latency_ms_p95": round(float(np.percentile(lat, 95)), 1) if lat else None,
                          "frames_detected": frames, "detected_fps": round(frames / elapsed, 2),
                          "dropped_frames": s.queue.dropped - d0}), flush=True)

    try:
        time.sleep(10)  # the clip opened, the first visit under way
        phase("idle", args.idle_s)
        proc = subprocess.Popen(["nice", "-n", "19", sys.executable, "-m", "raccoon_watch", "retrain",
                                 "--config", args.config, "--feedback", args.feedback, "--base-crops", args.base_crops,
                                 "--quiet", "--no-promote", "--threads", "1"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
        phase("during_retrain", proc=proc)
        print(json.dumps({"retrain_exit": proc.returncode}))
    finally:
        app.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
