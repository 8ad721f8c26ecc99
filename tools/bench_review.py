"""Bench stages for the review page (issue 13), run by ``tools.bench`` in their own subprocesses.

* ``recording``: the clip recorder (``clips.record_command``: ``-c copy`` into MPEG-TS segments) on the
  bench clip read at its native rate (``-re``, a live camera's pace), for ``seconds`` of video; CPU is
  the ffmpeg child's own (user + system, ``RUSAGE_CHILDREN``), per video second = cores per camera.
  Compare with ``decode.<scene>.read_all.cpu_per_video_s``, the floor of decoding the same clip.
* ``review_list``: a real App's store filled with ``events`` events over 30 days, the real HTTP
  server and ``ReviewPages``; wall ms per ``GET /`` (page 1, a deep page, a camera + day filter).
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def stage_recording(args: dict[str, Any]) -> dict[str, Any]:
    from raccoon_watch.clips import record_command

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
