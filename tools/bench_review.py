"""Bench stages for the review page (issue 13), run by ``tools.bench`` in their own subprocesses.

* ``recording``: the clip recorder (``ffmpeg.record_command``: ``-c copy`` into MPEG-TS segments) on the
  bench clip read at its native rate (``-re``, a live camera's pace), for ``seconds`` of video; CPU is
  the ffmpeg child's own (user + system, ``RUSAGE_CHILDREN``), per video second = cores per camera.
  Compare with ``decode.<scene>.read_all.cpu_per_video_s``, the floor of decoding the same clip.
* ``review_list``: a real App's store filled with ``events`` events over 30 days, the real HTTP
  server and ``ReviewPages``; wall ms per ``GET /`` (page 1, a deep page, a camera + day filter).
* ``http_probe`` (issue 21's probe, re-run): the real server (uvicorn + ``ReviewPages``) with an argon2
  password (the hasher's defaults: 64 MiB per check). ``logins``: ``parallel`` wrong logins at once from
  one address; the argon2 checks made, the answers, and this process's RSS sampled every 10 ms meanwhile
  (the server and its clients: the whole process). ``healthz``: ``concurrent`` connections opened at
  once, then each sends ``GET /healthz``; how many were answered, and within 1 s of the connect.
"""

from __future__ import annotations

import re
import resource
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def stage_recording(args: dict[str, Any]) -> dict[str, Any]:
    from raccoon_watch.review.ffmpeg import record_command

    clip, fps, seconds = args["clip"], float(args["fps"]), float(args["seconds"])
    with tempfile.TemporaryDirectory(prefix="raccoon-rec-") as tmp:
        cmd = record_command("ffmpeg", clip, Path(tmp), "bench", 2.0)
        cmd[cmd.index("-i"):cmd.index("-i")] = ["-re", "-stream_loop", "-1"]  # a live camera's pace
        c0, w0 = _children_cpu(), time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=10)
        wall = time.monotonic() - w0
        cpu = _children_cpu() - c0
        segments = len(list(Path(tmp).glob("*.ts")))
        size = sum(p.stat().st_size for p in Path(tmp).glob("*.ts"))
    return {"video_s": round(wall, 2), "cpu_s": round(cpu, 3), "cpu_per_video_s": round(cpu / wall, 4),
            "segments": segments, "mb_per_min": round(size / 1e6 / wall * 60, 2), "fps": fps,
            "note": "ffmpeg -c copy of the clip at its native rate (-re): demux + write, no decode"}


def stage_review_list(args: dict[str, Any]) -> dict[str, Any]:
    from raccoon_watch.app import App
    from raccoon_watch.config import Config
    from raccoon_watch.service.health import HealthServer
    from raccoon_watch.types import Event, EventKind
    from raccoon_watch.web.pages import ReviewPages

    n, runs = int(args["events"]), int(args["runs"])
    with tempfile.TemporaryDirectory(prefix="raccoon-list-") as tmp:
        cfg = Config.model_validate({"cameras": {"porch": {"source": "0"}, "yard": {"source": "1"}},
                                     "storage": {"path": tmp}, "http": {"enabled": True}})
        app = App(cfg)
        app._open_store()  # the store alone: no model, no cameras
        now = time.time()
        t0 = time.monotonic()
        for i in range(n):
            start = now - i * (30 * 86400 / n)
            app.store.record(Event(id=f"{start:.6f}-{i:06x}", kind=EventKind.END, camera=("porch", "yard")[i % 2],
                                   label="raccoon", start_time=start, end_time=start + 12, score=0.8, top_score=0.9,
                                   box=(0.1, 0.1, 0.4, 0.5)))
        fill_s = time.monotonic() - t0
        server = HealthServer("127.0.0.1", 0, lambda: (True, {}), lambda: b"", ReviewPages(app))
        server.start()
        day = time.strftime("%Y-%m-%d", time.localtime(now - 5 * 86400))
        out: dict[str, Any] = {"events": n, "fill_s": round(fill_s, 2), "page_size": cfg.http.page_size}
        try:
            for name, path in (("page_1", "/"), ("page_100", "/?page=100"), ("camera_day", f"/?camera=yard&day={day}")):
                ms = []
                for _ in range(runs):
                    w0 = time.perf_counter()
                    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}") as resp:
                        body = resp.read()
                    ms.append((time.perf_counter() - w0) * 1000)
                out[name] = {"p50_ms": round(statistics.median(ms), 1), "max_ms": round(max(ms), 1), "bytes": len(body)}
        finally:
            server.stop()
            app.store.close()
    return out


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _healthz_burst(port: int, n: int) -> dict[str, Any]:
    """``n`` connections opened at once, then each sends GET /healthz: seconds from connect to answer."""
    def one(_: int) -> tuple[int, float]:
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            got = b""
            while chunk := s.recv(65536):
                got += chunk
        m = re.match(rb"HTTP/1\.1 (\d{3})", got)
        return (int(m.group(1)) if m else 0), time.monotonic() - t0

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(one, range(n)))
    took = sorted(t for _, t in results)
    return {"concurrent": n, "answered_200": sum(code == 200 for code, _ in results),
            "within_1s": sum(t < 1.0 for t in took), "p50_ms": round(statistics.median(took) * 1000, 1),
            "max_ms": round(took[-1] * 1000, 1)}


def stage_http_probe(args: dict[str, Any]) -> dict[str, Any]:
    import requests
    from argon2 import PasswordHasher

    from raccoon_watch.app import App
    from raccoon_watch.config import Config
    from raccoon_watch.service.health import HealthServer
    from raccoon_watch.web.pages import ReviewPages

    parallel, concurrent = int(args["parallel"]), int(args["concurrent"])
    with tempfile.TemporaryDirectory(prefix="raccoon-http-") as tmp:
        cfg = Config.model_validate({"cameras": {"porch": {"source": "0"}}, "storage": {"path": tmp},
                                     "http": {"enabled": True, "password_hash": PasswordHasher().hash("a right one")}})
        app = App(cfg)
        app._open_store()  # the store alone: no model, no cameras
        pages = ReviewPages(app)
        server = HealthServer("127.0.0.1", 0, lambda: (True, {"status": "ok"}), lambda: b"", pages)
        server.start()
        url = f"http://127.0.0.1:{server.port}"
        out: dict[str, Any] = {"server": "uvicorn (h11) + Starlette"}
        try:
            login = requests.get(url + "/login")
            sid = login.cookies["rw_session"]
            csrf = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
            rss_before, peak, done = _rss_mb(), [0.0], threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], _rss_mb())
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            w0 = time.monotonic()

            def attempt(i: int) -> int:
                return requests.post(url + "/login", data={"csrf": csrf, "password": f"guess{i}"},
                                     cookies={"rw_session": sid}, allow_redirects=False, timeout=300).status_code

            with ThreadPoolExecutor(parallel) as pool:
                codes = list(pool.map(attempt, range(parallel)))
            done.set()
            sampler.join()
            out["logins"] = {"parallel": parallel, "argon2_checks": pages.auth.verifies,
                             "answers": {str(c): codes.count(c) for c in sorted(set(codes))},
                             "wall_s": round(time.monotonic() - w0, 2), "rss_before_mb": round(rss_before, 1),
                             "rss_peak_mb": round(peak[0], 1)}
            out["healthz"] = _healthz_burst(server.port, concurrent)
        finally:
            server.stop()
            app.store.close()
    return out
