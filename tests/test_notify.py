"""sd_notify over a real AF_UNIX datagram socket, and the daemon's READY/STATUS/WATCHDOG/STOPPING.

Unit part: ``raccoon_watch.service.notify`` against a socket bound in tmp_path (and in the abstract
namespace). Daemon part: the real ``python -m raccoon_watch run`` as a subprocess with
NOTIFY_SOCKET and WATCHDOG_USEC, a looping video file camera and the stock COCO TFLite model.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from raccoon_watch.service import notify
from testkit.ports import free_port
from tests import wedged_daemon

REPO = Path(__file__).resolve().parent.parent


class NotifyListener:
    """A bound AF_UNIX SOCK_DGRAM socket that collects sd_notify datagrams."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, list[str]]] = []

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.messages.append((time.monotonic(), data.decode().split("\n")))

    def wait_for(self, line: str, timeout: float, after: float = 0.0) -> float:
        """Monotonic time at which ``line`` arrived (at or after ``after``); fails after ``timeout`` s."""
        end = time.monotonic() + timeout
        while True:
            for t, lines in self.messages:
                if line in lines and t >= after:
                    return t
            if time.monotonic() > end:
                raise AssertionError(f"no {line!r} within {timeout}s; got {self.messages}")
            self.drain(0.2)

    def times(self, line: str, after: float = 0.0) -> list[float]:
        return [t for t, lines in self.messages if line in lines and t >= after]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = str(tmp_path / "notify.sock")
    lst = NotifyListener(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield lst
    lst.close()


# --- the protocol --------------------------------------------------------------------------------

def test_messages_reach_the_socket(listener: NotifyListener) -> None:
    assert notify.ready("1 camera up")
    assert notify.status("2 cameras up,\n4.8 fps")
    assert notify.watchdog()
    assert notify.reloading()
    assert notify.stopping()
    listener.drain(0.3)
    got = [lines for _, lines in listener.messages]
    assert got[0] == ["READY=1", "STATUS=1 camera up"]
    assert got[1] == ["STATUS=2 cameras up, 4.8 fps"]  # one line: a newline would start a new key
    assert got[2] == ["WATCHDOG=1"]
    assert got[3][0] == "RELOADING=1" and got[3][1].startswith("MONOTONIC_USEC=")
    usec = int(got[3][1].split("=")[1])
    assert abs(usec / 1e6 - time.clock_gettime(time.CLOCK_MONOTONIC)) < 5
    assert got[4] == ["STOPPING=1"]


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"raccoon-watch-test-{uuid.uuid4().hex}"
    lst = NotifyListener("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.watchdog()
        lst.drain(0.3)
        assert [lines for _, lines in lst.messages] == [["WATCHDOG=1"]]
    finally:
        lst.close()


@pytest.mark.parametrize("value", ["", None])
def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    else:
        monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert notify.ready() is False
    assert notify.watchdog() is False


def test_dead_socket_never_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert notify.stopping() is False


@pytest.mark.parametrize(
    ("env", "pid", "expected"),
    [
        ({}, 10, None),
        ({"WATCHDOG_USEC": "30000000"}, 10, 15.0),  # half the timeout
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "10"}, 10, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "11"}, 10, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, 10, None),
        ({"WATCHDOG_USEC": "soon"}, 10, None),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "x"}, 10, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], pid: int, expected: float | None) -> None:
    assert notify.watchdog_interval_s(env, pid=pid) == expected


# --- the real daemon -------------------------------------------------------------------------------

def _make_clip(path: Path, frames: int = 40, fps: float = 10.0) -> Path:
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (320, 240))
    rng = np.random.default_rng(0)
    for i in range(frames):
        img = np.full((240, 320, 3), 90, np.uint8)
        img[60:180, 40 + 4 * i: 120 + 4 * i] = rng.integers(0, 255, (120, 80, 3), dtype=np.uint8)
        writer.write(img)
    writer.release()
    return path


def _config(tmp_path: Path, coco_model: Path, http_port: int | None = None, end_after: float = 10) -> Path:
    clip = tmp_path / "clip.mp4"
    if not clip.exists():
        _make_clip(clip)
    http = f"http: {{enabled: true, port: {http_port}}}" if http_port else ""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"""
cameras:
  porch: {{source: "{clip}", loop: true, detect_fps: 5}}
detector: {{model: "{coco_model}", backend: tflite, workers: 1, num_threads: 1, labels: [cat, dog]}}
events: {{end_after: {end_after}}}
storage: {{path: "{tmp_path / 'var'}"}}
logging: {{level: info, format: json}}
{http}
"""
    )
    return cfg


def _get(port: int, path: str) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _start_daemon(cfg: Path, sock: str, extra_env: dict[str, str] | None = None,
                  module: str = "raccoon_watch") -> subprocess.Popen[bytes]:
    """The daemon (``python -m <module> run``) with its log in ``<tmp>/daemon.log`` (a pipe nobody
    reads would fill and block it)."""
    env = {**os.environ, "NOTIFY_SOCKET": sock, "WATCHDOG_USEC": "2000000", **(extra_env or {})}
    env.pop("WATCHDOG_PID", None)
    with open(cfg.parent / "daemon.log", "wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", module, "run", "--config", str(cfg)],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=log_file,
        )


def _log(tmp_path: Path) -> str:
    return (tmp_path / "daemon.log").read_text(errors="replace")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


@pytest.mark.slow
def test_daemon_ready_status_watchdog_reload_stopping(tmp_path: Path, coco_model: Path) -> None:
    """READY, STATUS, WATCHDOG every second, /healthz + /metrics, SIGHUP reload (good, then a bad
    file that is rejected), STOPPING on SIGTERM and exit 0 within 5 s: the real daemon."""
    import json

    sock = str(tmp_path / "notify.sock")
    lst = NotifyListener(sock)
    port = free_port()
    cfg = _config(tmp_path, coco_model, http_port=port)
    proc = _start_daemon(cfg, sock)
    try:
        ready_at = lst.wait_for("READY=1", timeout=60)
        lst.drain(3.5)  # WATCHDOG_USEC=2 s -> a ping every second
        assert len(lst.times("WATCHDOG=1", after=ready_at)) >= 2, lst.messages
        assert any(line.startswith("STATUS=") and "cameras up" in line for _, lines in lst.messages for line in lines)

        code, body = _get(port, "/healthz")
        health = json.loads(body)
        assert code == 200 and health["status"] in ("ok", "degraded"), health
        assert health["detector"]["alive"] is True and "porch" in health["cameras"]
        code, metrics = _get(port, "/metrics")
        assert code == 200 and b'raccoon_watch_camera_frames_read_total{camera="porch"}' in metrics
        assert b"raccoon_watch_inference_seconds_count" in metrics

        _config(tmp_path, coco_model, http_port=port, end_after=4)  # a live change
        sent = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        reloading_at = lst.wait_for("RELOADING=1", timeout=5, after=sent)
        lst.wait_for("READY=1", timeout=5, after=reloading_at)

        cfg.write_text("cameras: {porch: {source: x, no_such_key: 1}}\n")  # rejected, old kept
        sent = time.monotonic()
        proc.send_signal(signal.SIGHUP)
        reloading_at = lst.wait_for("RELOADING=1", timeout=5, after=sent)
        lst.wait_for("READY=1", timeout=5, after=reloading_at)
        lst.drain(2.0)
        assert lst.times("WATCHDOG=1", after=reloading_at + 0.5), "pings stopped after a rejected reload"
        assert "reload_rejected_keeping_old_config" in _log(tmp_path)

        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        lst.wait_for("STOPPING=1", timeout=5)
        proc.wait(timeout=5)
        assert time.monotonic() - t0 < 5.0
        assert proc.returncode == 0, _log(tmp_path)[-3000:]
    finally:
        _stop(proc)
        lst.close()


@pytest.mark.slow
def test_watchdog_stops_when_the_detector_is_wedged(tmp_path: Path, coco_model: Path) -> None:
    """A worker stuck inside detect() must silence WATCHDOG=1 (systemd would then restart us)."""
    sock = str(tmp_path / "notify.sock")
    lst = NotifyListener(sock)
    proc = _start_daemon(
        _config(tmp_path, coco_model), sock,
        {wedged_daemon.WEDGE_AFTER_ENV: "2", wedged_daemon.DETECT_LIMIT_ENV: "2"}, module="tests.wedged_daemon",
    )
    try:
        ready_at = lst.wait_for("READY=1", timeout=60)
        lst.drain(1.5)
        assert lst.times("WATCHDOG=1", after=ready_at), "no ping while healthy"
        # wedge after 2 s + detect limit 2 s -> pings must stop by ~5 s after READY
        lst.drain(max(0.0, ready_at + 6.0 - time.monotonic()))
        silent_from = time.monotonic()
        lst.drain(3.0)
        assert lst.times("WATCHDOG=1", after=silent_from) == [], "still pinging with a wedged detector"
        assert proc.poll() is None, "the daemon itself keeps running; systemd does the restart"
        log = _log(tmp_path)
        assert "pipeline_stuck_watchdog_withheld" in log and "stuck in detect()" in log, log[-3000:]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=8)
        finally:
            _stop(proc)
            lst.close()


class _RecordingRouter:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def reconfigure(self, filters, params, visit_params) -> None:
        self.calls.append((filters, params, visit_params))


def test_sighup_reload_hands_the_router_its_visit_scoring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from raccoon_watch.app import App
    from raccoon_watch.config import parse_config
    from raccoon_watch.visits import VisitParams

    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    base = "cameras:\n  porch: {source: '0'}\nlogging: {level: info}\n"
    path = tmp_path / "config.yaml"
    path.write_text(base + "events: {score_window: 5, score_min_frames: 2, score_match_iou: 0.3}\n")
    router = _RecordingRouter()
    app = App(parse_config(base))  # not started: only its router is set, to one that records
    app.router = router
    root = logging.getLogger()
    level = root.level
    try:
        assert notify.reload_app(app, path)
    finally:
        root.setLevel(level)  # reload_app sets the process's log level
    (filters, _, visits), = router.calls
    assert set(filters) == {"porch"} and visits == VisitParams(window=5, min_frames=2, match_iou=0.3)
    assert app.cfg.events.score_window == 5
