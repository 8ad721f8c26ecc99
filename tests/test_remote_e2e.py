"""``detector.backend: remote`` end to end: a real daemon sends its frames to a real ``raccoon-watch
serve`` and raises its event on the answers; the server is killed, and the daemon goes on detecting
with its local models, saying so on /healthz; a bad remote URL is a config error (exit 2).

Also the client's fallback and back-off rules on their own (``RemoteLink``, ``RemoteRecognizer``)
against a server that is not there or answers garbage.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from raccoon_watch.config import ConfigError, DetectorConfig, RemoteConfig, parse_config
from raccoon_watch.recognition.detectors import create_recognizer
from raccoon_watch.recognition.detectors.remote import RemoteLink, RemoteRecognizer
from testkit.ports import free_port
from tests.daemon import BUNDLED_MODEL, Daemon, write_config
from tests.serving import Server

KEY = "remote-test-key-0123456789"


def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as resp:
        return json.loads(resp.read())


def _health_any(port: int) -> dict[str, Any]:
    """/healthz whether it answers 200 or 503."""
    try:
        return _health(port)
    except urllib.error.HTTPError as exc:  # 503 carries the same body
        return json.loads(exc.read())


@pytest.mark.slow
def test_daemon_raises_its_event_through_the_service_then_goes_on_locally(tmp_path: Path, raccoon_clip_mp4) -> None:
    if not (BUNDLED_MODEL / "model.tflite").is_file():
        pytest.skip("needs the shipped raccoon model (models/raccoon)")
    server = Server.start("--port", str(free_port()), "--config",
                          str(write_config(tmp_path / "serve.yaml", {"serve": {"api_key": KEY},
                                                                     "logging": {"format": "json"}})))
    http_port = free_port()
    config = write_config(tmp_path / "daemon.yaml", {
        "cameras": {"porch": {"source": str(raccoon_clip_mp4.path), "loop": True, "detect_fps": 5,
                              "motion": {"enabled": False}}},
        "detector": {"model": str(BUNDLED_MODEL), "labels": ["raccoon"], "threshold": None, "workers": 1,
                     "backend": "remote",
                     "remote": {"url": f"{server.url}/v1/vision/custom/raccoon", "api_key": KEY,
                                "timeout": 3.0, "retry_s": 1.0, "retry_max_s": 2.0}},
        "events": {"min_frames": 3, "window": 5, "end_after": 1.5, "cooldown": 0, "update_interval": 0},
        "storage": {"path": str(tmp_path / "var")},
        "http": {"enabled": True, "port": http_port},
        "logging": {"format": "json"},
    })
    daemon = Daemon.start(config)
    try:
        daemon.wait_for("event_started", timeout=90)
        through = _health(http_port)["recognizer"]
        served = requests_answered(server)
        assert through["backend"] == "remote" and through["in_use"] == "remote", through
        assert through["remote_frames"] >= 3 and through["local_frames"] == 0, through
        assert served >= through["remote_frames"], "the server answered fewer frames than the daemon counted"
        assert through["local"] == "tflite+tflite-classifier"
        daemon.wait_for("event_ended", timeout=30)

        server.kill()  # the stronger machine goes away mid-run
        first_events = len(daemon.events("event_started"))
        daemon.wait_for("recognizer_remote_down", timeout=30)
        daemon.wait_for("event_started", count=first_events + 1, timeout=60)  # the clip loops: the raccoon again
        health = _health_any(http_port)
        local = health["recognizer"]
        assert local["in_use"] == "local" and local["local_frames"] > 0, local
        assert "cannot be reached" in local["reason"] and "local models" in local["reason"], local
        assert local["failures"] >= 1 and local["retry_in_s"] is not None
        assert health["status"] == "degraded" and any(p.startswith("recognizer:") for p in health["problems"])
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10).read().decode()
        assert "raccoon_watch_recognizer_remote 0.0" in metrics
        assert "raccoon_watch_recognizer_local_frames_total" in metrics
        assert KEY not in "".join(daemon.raw), "the API key appeared in the daemon's log"
        assert KEY not in json.dumps(health)
    finally:
        code, _ = daemon.terminate()
        if server.proc.poll() is None:
            server.terminate()
    assert code == 0


def requests_answered(server: Server) -> int:
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=10) as resp:
        return int(json.loads(resp.read())["answers"].get("200", 0))


@pytest.mark.slow
def test_bad_remote_url_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path / "bad.yaml", {
        "cameras": {"porch": {"source": "0"}},
        "detector": {"backend": "remote", "remote": {"url": "bigbox:32168/v1/vision/custom/raccoon"}},
        "storage": {"path": str(tmp_path / "var")},
    })
    daemon = Daemon.start(config)
    daemon.proc.wait(timeout=60)
    code, _ = daemon.terminate()
    assert code == 2
    assert "detector.remote.url" in "".join(daemon.raw)


@pytest.mark.parametrize(("detector", "key"), [
    ({"backend": "remote"}, "detector.remote is missing"),
    ({"backend": "remote", "remote": {"url": "ftp://bigbox/x"}}, "detector.remote.url"),
    ({"backend": "remote", "remote": {"url": "http://user:secret@bigbox/x"}}, "detector.remote.url"),
    ({"backend": "remote", "remote": {"url": "http://bigbox/x?k=1"}}, "detector.remote.url"),
    ({"backend": "remote", "remote": {"url": "http://bigbox:32168"}}, "must name the endpoint"),
    ({"backend": "remote", "remote": {"url": "http://bigbox/x", "timeout": 0}}, "detector.remote.timeout"),
    ({"backend": "remote", "remote": {"url": "http://bigbox/x", "retry_s": 10, "retry_max_s": 5}}, "detector.remote"),
    ({"backend": "tflite", "remote": {"url": "http://bigbox/x"}}, "detector.remote is set"),
])
def test_remote_config_errors_name_the_key(detector: dict[str, Any], key: str) -> None:
    text = yaml.safe_dump({"cameras": {"porch": {"source": "0"}}, "detector": detector})
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert key in str(info.value)
    assert "secret" not in str(info.value)


# --- the client's rules, against servers that misbehave --------------------------------------------


class _Garbage(BaseHTTPRequestHandler):
    status = 200
    body = b"<html>not json</html>"
    delay = 0.0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(self.delay)
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


def _fake(status: int, body: bytes, delay: float = 0.0) -> ThreadingHTTPServer:
    handler = type("H", (_Garbage,), {"status": status, "body": body, "delay": delay})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def local_recognizer():
    rec = create_recognizer(DetectorConfig(num_threads=1))
    yield rec
    rec.close()


@pytest.fixture(scope="module")
def raccoon_frame(shared_dir: Path) -> np.ndarray:
    return cv2.imread(str(shared_dir / "data" / "raccoon_dataset" / "images" / "raccoon-186.jpg"))


@pytest.mark.parametrize(("status", "body", "delay", "words"), [
    (200, b"<html>not json</html>", 0.0, "not JSON"),
    (401, b'{"success": false, "error": "wrong API key"}', 0.0, "HTTP 401 (check detector.remote.api_key): wrong API key"),
    (500, b"oops", 0.0, "HTTP 500"),
    (200, b'{"success": true, "predictions": [{"label": "raccoon"}]}', 0.0, "another format"),
    (200, b'{"success": true, "predictions": []}', 1.5, "no answer within 0.5 s"),
])
def test_a_failing_remote_falls_back_to_the_local_models(local_recognizer, raccoon_frame, status: int, body: bytes,
                                                        delay: float, words: str) -> None:
    fake = _fake(status, body, delay)
    try:
        clock = _Clock()
        link = RemoteLink(RemoteConfig(url=f"http://127.0.0.1:{fake.server_port}/v1/vision/custom/raccoon",
                                       timeout=0.5, retry_s=5, retry_max_s=20), local="local", clock=clock)
        rec = RemoteRecognizer(local_recognizer, link)
        (dets,) = rec.recognize([raccoon_frame])
        assert dets and dets[0].label == "raccoon" and dets[0].score > 0.7  # the local models answered
        snap = link.snapshot()
        assert snap.in_use == "local" and words in snap.reason and snap.retry_in_s == 5.0, snap
        assert snap.local_frames == 1 and snap.failures == 1
        rec.recognize([raccoon_frame])  # within the back-off: not even tried
        assert link.snapshot().failures == 1 and link.snapshot().local_frames == 2
        clock.now += 5.1  # the back-off is over: one try, which fails again: 10 s now
        rec.recognize([raccoon_frame])
        snap = link.snapshot()
        assert snap.failures == 2 and snap.retry_in_s == 10.0
    finally:
        fake.shutdown()


def test_nothing_listening_falls_back_and_comes_back(local_recognizer, raccoon_frame) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    clock = _Clock()
    link = RemoteLink(RemoteConfig(url=f"http://127.0.0.1:{port}/v1/vision/custom/raccoon", timeout=0.5, retry_s=1,
                                   retry_max_s=4), local="local", clock=clock)
    rec = RemoteRecognizer(local_recognizer, link)
    (dets,) = rec.recognize([raccoon_frame])
    assert dets and link.snapshot().in_use == "local" and "connection refused" in link.snapshot().reason
    fake = _fake(200, json.dumps({"success": True, "predictions": [
        {"label": "raccoon", "confidence": 0.88, "x_min": 64, "y_min": 42.8, "x_max": 320, "y_max": 214}]}).encode())
    try:
        rec.cfg = link.cfg = RemoteConfig(url=f"http://127.0.0.1:{fake.server_port}/v1/vision/custom/raccoon",
                                          timeout=2, retry_s=1, retry_max_s=4)
        clock.now += 1.1
        (dets,) = rec.recognize([raccoon_frame], crops=[(0, 0, 640, 428)])
        assert [(d.label, d.score) for d in dets] == [("raccoon", 0.88)]
        assert np.allclose(dets[0].box, (0.1, 0.1, 0.5, 0.5)) and dets[0].mode == "color"
        snap = link.snapshot()
        assert snap.in_use == "remote" and snap.remote_frames == 1 and snap.retry_in_s is None
        # a crop's boxes come back in the full frame
        (dets,) = rec.recognize([raccoon_frame], crops=[(320, 214, 640, 428)])
        assert np.allclose(dets[0].box, (0.6, 0.6, 1.0, 1.0), atol=1e-3)
    finally:
        fake.shutdown()


def test_after_the_back_off_one_worker_tries_the_remote_and_the_others_stay_local() -> None:
    clock = _Clock()
    link = RemoteLink(RemoteConfig(url="http://127.0.0.1:9/v1/vision/custom/raccoon", retry_s=2, retry_max_s=8),
                      clock=clock)
    assert link.should_try() and link.should_try()  # in use: every worker asks it
    link.failed("cannot be reached (connection refused)")
    link.failed("cannot be reached (connection refused)")  # the other worker's call, in flight meanwhile
    assert link.snapshot().retry_in_s == 2.0 and link.snapshot().failures == 2  # not doubled by the second
    assert not link.should_try()
    clock.now += 2.0
    assert link.should_try() is True  # this worker tries it...
    assert link.should_try() is False  # ...and the others stay local meanwhile
    link.failed("gave no answer within 0.5 s (detector.remote.timeout)")
    assert link.snapshot().retry_in_s == 4.0
    clock.now += 4.0
    assert link.should_try()
    link.succeeded(42.0)
    snap = link.snapshot()
    assert snap.in_use == "remote" and snap.retry_in_s is None and "42 ms" in snap.reason and link.should_try()
    link.failed("answered HTTP 500")
    assert link.snapshot().retry_in_s == 2.0  # back in use, then down: the back-off starts over
