"""Bench stage ``serve`` (``make bench``; also ``python -m tools.bench_serve`` alone): ``raccoon-watch
serve`` under issue 24's load: 640x480 JPEGs from 4 concurrent clients.

A real server process (its defaults: 2 inference threads of 1 TFLite thread, the shipped model) on
127.0.0.1; the clients are threads of this process, each posting one multipart request at a time
to /v1/vision/custom/raccoon the way Frigate's deepstack plugin does (``requests.post(url,
data={"api_key": ...}, files={"image": jpeg}, timeout=...)``: a new connection per request), for a
fixed time after a warm-up. The pictures: dataset raccoon photos resized to 640x480 (a raccoon
in each, so every answer runs the classifier too), cycled.

Reported: requests/s, client-side latency p50/p95/p99 (connect, upload, queue, decode, inference,
answer), the server's own inferenceMs and processMs p50/p95, answers by status, the server's CPU
(user + system from /proc) per request and its peak RSS, and the load average around the run (this
machine is shared: a busy neighbour shows there, not as a slower server). A second pass with
kept-alive connections (``requests.Session``, what the daemon's remote backend uses) shows what
connection set-up costs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

KEY = "bench-serve-key-0123456789abcdef"
TARGET_RPS_MIN = 20.0
TARGET_P95_MS_MAX = 150.0


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None}
    import numpy as np

    return {f"p{q}": round(float(np.percentile(values, q)), 1) for q in (50, 95, 99)}


def _jpegs(count: int) -> list[bytes]:
    import cv2

    from raccoon_watch.config import shared_dir

    photos = sorted((shared_dir() / "data" / "raccoon_dataset" / "images").glob("raccoon-1*.jpg"))[:count]
    out = []
    for path in photos:
        image = cv2.imread(str(path))
        if image is not None:
            out.append(cv2.imencode(".jpg", cv2.resize(image, (640, 480)), [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    if not out:
        raise RuntimeError("no raccoon photos under shared/data/raccoon_dataset/images")
    return out


def _proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _proc_hwm_mb(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024.0, 1)
    return None


def _start_server(workdir: Path, port: int, workers: int, threads: int) -> subprocess.Popen:
    config = workdir / "serve.yaml"
    config.write_text(json.dumps({"serve": {"api_key": KEY, "port": port, "workers": workers, "num_threads": threads},
                                  "logging": {"format": "json", "level": "warning"}}))
    proc = subprocess.Popen([sys.executable, "-m", "raccoon_watch", "serve", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    import requests

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited {proc.returncode}: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("serve did not answer /healthz within 120 s")


def _load(url: str, jpegs: list[bytes], clients: int, seconds: float, keep_alive: bool) -> dict[str, Any]:
    import requests

    latencies: list[float] = []
    inference: list[float] = []
    process: list[float] = []
    statuses: dict[str, int] = {}
    errors: list[str] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(index: int) -> None:
        session = requests.Session() if keep_alive else None
        post = session.post if session is not None else requests.post
        i = index
        while time.monotonic() < stop_at:
            jpeg = jpegs[i % len(jpegs)]
            i += clients
            t0 = time.perf_counter()
            try:
                r = post(url, data={"api_key": KEY}, files={"image": jpeg}, timeout=10)
                ms = (time.perf_counter() - t0) * 1000.0
                body = r.json()
            except (requests.RequestException, ValueError) as exc:
                with lock:
                    errors.append(type(exc).__name__)
                continue
            with lock:
                statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
                if r.status_code == 200:
                    latencies.append(ms)
                    inference.append(float(body["inferenceMs"]))
                    process.append(float(body["processMs"]))
        if session is not None:
            session.close()

    t0 = time.monotonic()
    pool = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    wall = time.monotonic() - t0
    return {"clients": clients, "seconds": round(wall, 2), "keep_alive": keep_alive,
            "requests_ok": len(latencies), "requests_per_s": round(len(latencies) / wall, 1),
            "latency_ms": _percentiles(latencies), "server_inference_ms": _percentiles(inference),
            "server_process_ms": _percentiles(process), "answers": statuses, "errors": len(errors),
            "error_kinds": sorted(set(errors))}


def stage_serve(args: dict[str, Any]) -> dict[str, Any]:
    """The bench stage: ``run`` with the plan's clients and seconds."""
    return run(clients=int(args.get("clients", 4)), seconds=float(args.get("seconds", 20.0)),
               workers=int(args.get("workers", 2)), threads=int(args.get("threads", 1)))


def run(clients: int = 4, seconds: float = 20.0, warmup_s: float = 3.0, workers: int = 2, threads: int = 1,
        keep_alive_pass: bool = True) -> dict[str, Any]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    jpegs = _jpegs(12)
    with tempfile.TemporaryDirectory(prefix="raccoon-serve-bench-") as tmp:
        proc = _start_server(Path(tmp), port, workers, threads)
        url = f"http://127.0.0.1:{port}/v1/vision/custom/raccoon"
        try:
            _load(url, jpegs, clients, warmup_s, keep_alive=False)
            load_before = os.getloadavg()[0]
            cpu0 = _proc_cpu_s(proc.pid)
            frigate = _load(url, jpegs, clients, seconds, keep_alive=False)
            cpu1 = _proc_cpu_s(proc.pid)
            frigate["server_cpu_ms_per_request"] = round((cpu1 - cpu0) * 1000.0 / max(1, frigate["requests_ok"]), 1)
            frigate["server_cores_busy"] = round((cpu1 - cpu0) / frigate["seconds"], 2)
            out: dict[str, Any] = {
                "server": {"workers": workers, "tflite_threads": threads, "model": "shipped (models/raccoon)",
                           "peak_rss_mb": None},
                "images": {"count": len(jpegs), "size": "640x480", "mean_kb": round(sum(map(len, jpegs)) / len(jpegs) / 1024, 1)},
                "frigate_style": frigate,
                "load_avg_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
                "cpus": os.cpu_count(),
            }
            if keep_alive_pass:
                out["keep_alive"] = _load(url, jpegs, clients, seconds / 2, keep_alive=True)
            out["server"]["peak_rss_mb"] = _proc_hwm_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    rps, p95 = frigate["requests_per_s"], frigate["latency_ms"]["p95"]
    out["targets"] = {
        "requests_per_s_ge_20": {"value": rps, "met": rps >= TARGET_RPS_MIN},
        "p95_le_150ms": {"value": p95, "met": p95 is not None and p95 <= TARGET_P95_MS_MAX},
        "load": f"{clients} concurrent clients, 640x480 JPEGs, a new connection per request (as Frigate's plugin)",
    }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.bench_serve", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    ns = parser.parse_args(argv)
    print(json.dumps(run(ns.clients, ns.seconds, workers=ns.workers, threads=ns.threads), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
