#!/usr/bin/env python3
"""Soak run: the real daemon on a 15 fps RTSP camera for N minutes; memory, frames, threads, fds.

Issue 5 asks for "a 30-minute run on a 15 fps stream with resident memory growth under 5 % after
warm-up and zero unexplained dropped frames". This script is that run (a benchmark, not a CI test):

    .venv/bin/python scripts/soak.py --minutes 30          # JSON result on stdout and in var/soak/

What it does:

1. builds (once, cached in var/bench/) the 720p, 15 fps, H.264 bench clip of ``seconds`` length
   with a raccoon visit (``tools.bench_clips``: empty doorstep, raccoon walks in, stays,
   leaves); the RTSP server loops it, so there is one visit per loop;
2. serves it with the GStreamer RTSP server of the tests (``tests/rtsp_server.py`` under
   ``/usr/bin/python3``, which has ``gi``) on 127.0.0.1;
3. runs ``python -m raccoon_watch run`` on it with the HTTP endpoint on, motion gating on (the
   default), one detector worker, the shipped raccoon model if ``models/raccoon/model.tflite``
   exists, else the stock COCO model (cat/dog/bear labels, as the tests do);
4. every ``--interval`` seconds samples VmRSS, Threads (``/proc/PID/status``), the open fd count
   (``/proc/PID/fd``) and the ``/metrics`` counters;
5. at the end sends SIGTERM and prints one JSON object (also written to ``<run dir>/result.json``).

Frame accounting (per camera, from /metrics and the daemon's ``camera_stopped`` log line):

- ``read``: frames grabbed from the stream; ``expected``: 15 fps x the time the camera was up; the
  difference is frames the stream never delivered (RTSP start-up, RTP loss).
- ``decoded``: frames sampled at ``detect_fps`` and decoded; ``queued``: handed to the detector.
- ``motion_skipped`` = decoded - queued - bad: still frames the motion gate kept from the
  detector by design. These are *not* drops.
- ``dropped``: queue evictions (the frame queue was full and its oldest frame was discarded):
  the only real drops. ``unexplained_dropped`` is dropped frames with no ``camera_down`` /
  reconnect in the run to explain them; the issue's target is 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from raccoon_watch.config import shared_dir  # noqa: E402
from tools.bench_clips import ClipSpec, ensure_clip  # noqa: E402

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SERVER = REPO / "tests" / "rtsp_server.py"
BUNDLED_MODEL = REPO / "models" / "raccoon"
STREAM_FPS = 15.0
CAMERA = "doorbell"
PREFIX = "raccoon_watch_"


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="length of the run (default 30)")
    p.add_argument("--warmup-minutes", type=float, default=None,
                   help="RSS baseline taken at this point (default: 5, or a third of a shorter run)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    p.add_argument("--resolution", choices=("720p", "1080p"), default="720p")
    p.add_argument("--clip-seconds", type=float, default=30.0, help="loop length; one raccoon visit per loop")
    p.add_argument("--detect-fps", type=float, default=5.0)
    p.add_argument("--threshold", type=float, default=0.5,
                   help="detector threshold (default 0.5; a negative value: the model card's). The clip's "
                        "pasted raccoon scores mostly under the shipped model's deployed threshold (near 0.9), "
                        "and the soak measures the pipeline, so it uses 0.5 to make every visit an event")
    p.add_argument("--out", type=Path, default=REPO / "var" / "soak", help="runs go to <out>/<timestamp>/")
    p.add_argument("--shared", type=Path, default=shared_dir())
    return p


# --- the parts -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_rtsp(clip: Path, run_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = open(run_dir / "rtsp_server.log", "ab")  # noqa: SIM115 (kept open for the server's life)
    proc = subprocess.Popen([SYSTEM_PYTHON, str(RTSP_SERVER), "--port", str(port), "--file", str(clip), "--path", "/cam"],
                            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("READY"):
        proc.kill()
        raise RuntimeError(f"RTSP server did not start: {line!r}; see {run_dir / 'rtsp_server.log'}")
    return proc, f"rtsp://127.0.0.1:{port}/cam"


def detector_section(shared: Path, threshold: float = 0.5) -> dict[str, Any]:
    """The shipped raccoon model when it exists, else the stock COCO model with its animal labels."""
    if (BUNDLED_MODEL / "model.tflite").is_file():
        section: dict[str, Any] = {"model": str(BUNDLED_MODEL), "labels": ["raccoon"], "workers": 1}
    else:
        coco = shared / "pretrained" / "coco_ssd_mobilenet_v1_0.75_quant_300.tflite"
        section = {"model": str(coco), "labels": ["cat", "dog", "bear"], "workers": 1}
    if threshold >= 0:
        section["threshold"] = threshold
    return section


def write_config(run_dir: Path, url: str, http_port: int, args: argparse.Namespace) -> Path:
    data = {
        "cameras": {CAMERA: {"source": url, "detect_fps": args.detect_fps}},
        "detector": detector_section(args.shared, args.threshold),
        "events": {"end_after": 5.0, "cooldown": 60},
        "storage": {"path": str(run_dir / "var")},
        "http": {"enabled": True, "port": http_port},
        "logging": {"format": "json", "level": "info"},
    }
    path = run_dir / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# --- sampling --------------------------------------------------------------------------------------


@dataclass
class Sample:
    t: float  # seconds since the daemon started
    rss_kb: int
    threads: int
    fds: int
    metrics: dict[str, float] = field(default_factory=dict)


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def scrape(port: int) -> dict[str, float]:
    """/metrics as {name{labels}: value} (only raccoon_watch_* samples, histogram buckets left out)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.name.startswith(PREFIX) or s.name.endswith("_bucket") or s.name.endswith("_created"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            values[s.name[len(PREFIX):] + (f"{{{labels}}}" if labels else "")] = s.value
    return values


def sample(pid: int, port: int, t0: float) -> Sample:
    st = proc_status(pid)
    try:
        metrics = scrape(port)
    except OSError as exc:
        metrics = {"scrape_error": 1.0}
        print(f"soak: /metrics failed: {exc}", file=sys.stderr)
    return Sample(t=round(time.monotonic() - t0, 1), rss_kb=int(st["VmRSS"].split()[0]), threads=int(st["Threads"]),
                  fds=len(os.listdir(f"/proc/{pid}/fd")), metrics=metrics)


def wait_http(port: int, proc: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited with {proc.returncode} before /metrics answered")
        try:
            scrape(port)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("daemon /metrics did not answer")


# --- the summary -----------------------------------------------------------------------------------


def read_log(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    return records


def summarize(samples: list[Sample], records: list[dict[str, Any]], warmup_s: float, exit_code: int,
              took_s: float, args: argparse.Namespace, clip: Path) -> dict[str, Any]:
    first, last = samples[0], samples[-1]
    warm = next((s for s in samples if s.t >= warmup_s), first)
    after = [s for s in samples if s.t >= warm.t]
    m = last.metrics
    cam = f"{{camera={CAMERA}}}"
    stopped = next((r for r in records if r.get("event") == "camera_stopped"), {})
    read, queued = int(m.get(f"camera_frames_read_total{cam}", 0)), int(m.get(f"camera_frames_queued_total{cam}", 0))
    bad, dropped = int(m.get(f"camera_frames_bad_total{cam}", 0)), int(m.get(f"camera_frames_dropped_total{cam}", 0))
    decoded = int(stopped.get("frames_decoded", 0))
    downs = [r for r in records if r.get("event") == "camera_down"]
    first_read = int(first.metrics.get(f"camera_frames_read_total{cam}", 0))
    window_s = max(last.t - first.t, 1e-6)  # between the first and last sample the camera was up
    return {
        "minutes": args.minutes,
        "duration_s": last.t,
        "clip": {"path": str(clip.relative_to(REPO) if clip.is_relative_to(REPO) else clip), "fps": STREAM_FPS,
                 "loop_s": args.clip_seconds, "resolution": args.resolution},
        "detect_fps": args.detect_fps,
        "detector": detector_section(args.shared, args.threshold),
        "rss_mb": {
            "start": round(first.rss_kb / 1024, 1),
            "after_warmup": round(warm.rss_kb / 1024, 1),
            "warmup_at_s": warm.t,
            "end": round(last.rss_kb / 1024, 1),
            "max_after_warmup": round(max(s.rss_kb for s in after) / 1024, 1),
            "growth_pct_after_warmup": round(100.0 * (last.rss_kb - warm.rss_kb) / warm.rss_kb, 2),
        },
        "frames": {
            "read": read,
            "read_in_sampled_window": read - first_read,
            "expected_in_sampled_window": round(STREAM_FPS * window_s),
            "read_fps": round((read - first_read) / window_s, 2),
            "decoded": decoded,
            "queued": queued,
            "motion_skipped": max(0, decoded - queued - bad),
            "bad": bad,
            "processed": int(m.get(f"camera_frames_processed_total{cam}", 0)),
            "detector_frames": int(m.get("detector_frames_total", 0)),
            "dropped_queue_evictions": dropped,
            "unexplained_dropped": dropped if not downs else 0,
            "queue_dropped_total": int(m.get("queue_dropped_total", 0)),
        },
        "events": {kind: int(sum(v for k, v in m.items() if k.startswith("events_total{") and f"kind={kind}," in k))
                   for kind in ("new", "update", "end")},
        "events_started_logged": sum(r.get("event") == "event_started" for r in records),
        "camera_down": len(downs),
        "reconnects": int(m.get(f"camera_reconnects_total{cam}", 0)),
        "detector_errors": int(m.get("detector_errors_total", 0)),
        "errors_logged": sorted({r["event"] for r in records if r.get("level") == "error"}),
        "threads": {"start": first.threads, "end": last.threads},
        "fds": {"start": first.fds, "end": last.fds},
        "threads_fds_after_warmup": {"threads": warm.threads, "fds": warm.fds},
        "inference_ms_mean": _mean_ms(m),
        "sigterm": {"exit_code": exit_code, "seconds": round(took_s, 2)},
        "samples": len(samples),
    }


def _mean_ms(m: dict[str, float]) -> float | None:
    count, total = m.get("inference_seconds_count"), m.get("inference_seconds_sum")
    return round(1000 * total / count, 1) if count and total is not None else None


# --- main ------------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    run_dir = args.out / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    warmup_s = 60 * (args.warmup_minutes if args.warmup_minutes is not None else min(5.0, args.minutes / 3))
    clip, _timeline, codec = ensure_clip(ClipSpec(args.resolution, "raccoon", "day", args.clip_seconds), args.shared)
    if codec != "h264":
        raise SystemExit("soak: needs ffmpeg for an H.264 clip (the RTSP server streams H.264)")
    rtsp, url = start_rtsp(clip, run_dir)
    http_port = free_port()
    cfg = write_config(run_dir, url, http_port, args)
    log_path = run_dir / "daemon.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        daemon = subprocess.Popen([sys.executable, "-m", "raccoon_watch", "run", "--config", str(cfg)],
                                  cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    samples: list[Sample] = []
    t0 = time.monotonic()
    code, took = -1, 0.0
    try:
        wait_http(http_port, daemon)
        end = t0 + 60 * args.minutes
        with open(run_dir / "samples.jsonl", "a") as out:
            while True:
                s = sample(daemon.pid, http_port, t0)
                samples.append(s)
                out.write(json.dumps(s.__dict__) + "\n")
                out.flush()
                if daemon.poll() is not None:
                    raise RuntimeError(f"daemon exited with {daemon.returncode} during the soak; see {log_path}")
                if time.monotonic() >= end:
                    break
                time.sleep(min(args.interval, max(0.0, end - time.monotonic())))
    finally:
        t_term = time.monotonic()
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        try:
            code = daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            code = daemon.wait()
        took = time.monotonic() - t_term
        rtsp.kill()
        rtsp.wait()
    result = summarize(samples, read_log(log_path), warmup_s, code, took, args, clip)
    result["run_dir"] = str(run_dir)
    (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
