"""Does a retrain slow detection down? Dropped frames, read from ``/metrics``, of a real daemon while a
real ``raccoon-watch retrain`` runs on the same machine (README "Learns your porch").

    python -m tools.retrain_latency [--idle-s 30] [--compare normal] [--feedback DIR] [--base-crops DIR]
                                    [--steps 20] [--work var/retrain_latency] [--out FILE]

The daemon: ``python -m raccoon_watch run`` in its own process at normal priority, as ``make run``
starts it, on one file camera, the demo raccoon clip in a loop, paced in real time, detecting at 5
fps with the motion gate off (every sampled frame goes to the detector: the most work it can have),
with config.example.yaml's detector (2 workers x 2 threads) and its page on a free port.

The retrain: ``python -m raccoon_watch retrain`` as a user types it in a shell: no ``nice``, no
flags but the data and ``--no-promote``: its own defaults (idle CPU class, nice 19, one thread;
``raccoon_watch.learning.retrain_priority``) are what is measured. ``--compare normal`` adds a run with
``--priority normal --threads 2``, which is what the command did before issue 22.

Each phase reads ``/metrics`` before and after: ``raccoon_watch_queue_dropped_total`` (frames the
full queue evicted, any camera), ``raccoon_watch_camera_frames_dropped_total{camera="porch"}``,
``..._camera_frames_queued_total`` and ``..._camera_frames_processed_total``, and counts the alerts
(``event_started``, severity alert) in the daemon's JSON log. One JSON line per phase on stdout.

Without ``--feedback`` it makes a site's feedback once (``tools.make_site_feedback``: 40 cat and 20
raccoon visits over 5 nights) under ``--work``; without ``--base-crops`` the retrain builds small
ones there once (``--base-build-limit 40``). ``measure`` is the same run for ``make bench``
(``tools.bench``, stage ``retrain``).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from testkit.ports import free_port

REPO = Path(__file__).resolve().parent.parent
CAMERA = "porch"
DETECT_FPS = 5.0
METRICS = ("raccoon_watch_queue_dropped_total", f'raccoon_watch_camera_frames_dropped_total{{camera="{CAMERA}"}}',
           f'raccoon_watch_camera_frames_queued_total{{camera="{CAMERA}"}}',
           f'raccoon_watch_camera_frames_processed_total{{camera="{CAMERA}"}}')
METRIC_LINE = re.compile(r"^(\S+) ([0-9.eE+-]+)$")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.retrain_latency", description=__doc__.splitlines()[0])
    p.add_argument("--idle-s", type=float, default=30.0, help="seconds measured before the first retrain")
    p.add_argument("--compare", choices=("normal",), help="also a retrain with --priority normal --threads 2")
    p.add_argument("--feedback", type=Path, help="an exported feedback folder (default: made under --work)")
    p.add_argument("--base-crops", type=Path, help="train.npz / val.npz folder (default: built under --work once)")
    p.add_argument("--steps", type=int, default=20, help="the retrain's optimizer steps per mode (its default: 150)")
    p.add_argument("--work", type=Path, default=REPO / "var" / "retrain_latency", help="storage and made data")
    p.add_argument("--out", type=Path, help="also write the phases as one JSON file")
    return p


def scrape(url: str) -> dict[str, float]:
    """The ``METRICS`` samples of one /metrics page (absent ones: 0)."""
    values = {name: 0.0 for name in METRICS}
    for line in requests.get(url + "/metrics", timeout=10).text.splitlines():
        m = METRIC_LINE.match(line)
        if m and m.group(1) in values:
            values[m.group(1)] = float(m.group(2))
    return values


class DaemonRun:
    """``python -m raccoon_watch run`` on the demo clip; its JSON log lines counted as they come."""

    def __init__(self, work: Path) -> None:
        from raccoon_watch.config import shared_dir
        from raccoon_watch.demo import ensure_demo_clip

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = work / "daemon.yaml"
        self.config.write_text(yaml.safe_dump({
            "cameras": {CAMERA: {"source": str(ensure_demo_clip(shared_dir())), "loop": True, "realtime": True,
                                 "detect_fps": DETECT_FPS, "motion": {"enabled": False}}},
            "detector": {"workers": 2, "num_threads": 2},  # config.example.yaml's
            "events": {"min_frames": 3, "window": 5, "end_after": 2, "cooldown": 0},
            "storage": {"path": str(work / "var")}, "clips": {"enabled": False},
            "http": {"enabled": True, "port": self.port}, "logging": {"format": "json"},
        }, sort_keys=False))
        self.alerts = 0
        self.proc = subprocess.Popen([sys.executable, "-m", "raccoon_watch", "run", "--config", str(self.config)],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if '"event_started"' in line and '"alert"' in line:
                self.alerts += 1

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the daemon exited {self.proc.returncode}")
            try:
                if scrape(self.url)[METRICS[3]] > 0:  # it has processed a frame
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the daemon processed no frame within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def phase(daemon: DaemonRun, name: str, seconds: float | None = None,
          proc: subprocess.Popen[bytes] | None = None) -> dict[str, Any]:
    """Metrics over one phase: ``seconds`` long, or while ``proc`` runs."""
    before, alerts0, t0 = scrape(daemon.url), daemon.alerts, time.monotonic()
    while (proc is not None and proc.poll() is None) or (proc is None and time.monotonic() - t0 < (seconds or 0)):
        time.sleep(0.5)
    after, elapsed = scrape(daemon.url), time.monotonic() - t0
    delta = {k: after[k] - before[k] for k in METRICS}
    processed = delta[METRICS[3]]
    return {"phase": name, "seconds": round(elapsed, 1), "alerts": daemon.alerts - alerts0,
            "dropped_frames": int(delta[METRICS[0]]), "dropped_frames_porch": int(delta[METRICS[1]]),
            "frames_to_detector": int(delta[METRICS[2]]), "frames_processed": int(processed),
            "processed_fps": round(processed / elapsed, 2)}


def ensure_feedback(work: Path) -> Path:
    folder = work / "site_feedback"
    if not (folder / "labels.csv").is_file():
        subprocess.run([sys.executable, "-m", "tools.make_site_feedback", "--out", str(folder), "--raccoons", "20"],
                       cwd=REPO, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
    return folder


def retrain_cmd(daemon: DaemonRun, feedback: Path, base_crops: Path, steps: int, extra: list[str]) -> list[str]:
    """The retrain as typed in a shell (``extra``: flags that override its priority defaults)."""
    return [sys.executable, "-m", "raccoon_watch", "retrain", "--config", str(daemon.config), "--feedback",
            str(feedback), "--base-crops", str(base_crops), "--base-build-limit", "40", "--steps", str(steps),
            "--quiet", "--no-promote", *extra]


def measure(work: Path, idle_s: float = 30.0, compare: str | None = None, feedback: Path | None = None,
            base_crops: Path | None = None, steps: int = 20, say: Any = None,
            on_phase: Any = None) -> list[dict[str, Any]]:
    """The phases (idle, during the default retrain, and with ``compare`` during a normal-priority one);
    ``on_phase`` gets each as soon as it is measured."""
    work.mkdir(parents=True, exist_ok=True)
    feedback = feedback or ensure_feedback(work)
    base_crops = base_crops or work / "base_crops"
    if not (base_crops / "train.npz").is_file():  # built once, before anything is measured
        if say:
            say("building the base crops once")
        build = ("import sys; from pathlib import Path; from raccoon_watch.config import shared_dir; "
                 "from raccoon_watch.recognition.detectors import resolve_default_model; "
                 "from train.classifier.retrain import ensure_base_crops; "
                 "ensure_base_crops(Path(sys.argv[1]), Path(resolve_default_model()), shared_dir(), 40)")
        subprocess.run([sys.executable, "-c", build, str(base_crops)], cwd=REPO, check=True, timeout=1800,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    daemon = DaemonRun(work)
    phases = []
    try:
        daemon.wait_ready()
        time.sleep(5)  # the first visit under way
        phases.append(phase(daemon, "idle", idle_s))
        if on_phase:
            on_phase(phases[-1])
        runs = [("during_cli_retrain", [])]
        if compare == "normal":
            runs.append(("during_cli_retrain_normal_priority_2_threads", ["--priority", "normal", "--threads", "2"]))
        for name, extra in runs:
            if say:
                say(f"phase {name}")
            proc = subprocess.Popen(retrain_cmd(daemon, feedback, base_crops, steps, extra), cwd=REPO,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            result = phase(daemon, name, proc=proc)
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            prio = next((ln for ln in err.splitlines() if "retrain_priority" in ln), "")
            result.update({"retrain_exit": proc.returncode, "retrain_priority": prio.split("retrain_priority", 1)[-1].strip()})
            phases.append(result)
            if on_phase:
                on_phase(result)
    finally:
        daemon.stop()
    return phases


def main(args: argparse.Namespace) -> int:
    phases = measure(args.work, args.idle_s, args.compare, args.feedback, args.base_crops, args.steps,
                     say=lambda m: print(f"retrain_latency: {m}", file=sys.stderr, flush=True),
                     on_phase=lambda p: print(json.dumps(p), flush=True))
    if args.out:
        args.out.write_text(json.dumps(phases, indent=1) + "\n")
    return 0 if all(p.get("retrain_exit") in (None, 0, 4) for p in phases) else 1


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
