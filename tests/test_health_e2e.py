"""/healthz on a real daemon reads true: each component its status and its reason, the top-level
reason naming what is degraded, never "ok" while something is not.

One daemon: a file camera that plays (then its file disappears), an RTSP camera with nothing
listening on its port, and an MQTT broker whose name does not resolve (``.invalid``, RFC 2606).
While it runs, ``check-config`` on the same file passes: the port is the running daemon's own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from testkit.ports import free_port
from tests.daemon import BUNDLED_MODEL, REPO, Daemon, detector_section, write_config

pytestmark = pytest.mark.slow

UNRESOLVABLE = "broker.raccoon-watch.invalid"


def _healthz(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # 503: failing, still a body
        return json.loads(exc.read())


def _wait_health(port: int, pred, timeout: float) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            body = _healthz(port)
        except (urllib.error.URLError, ConnectionError):
            body = {}
        if body and pred(body):
            return body
        time.sleep(0.3)
    raise AssertionError(f"/healthz never met the condition; last body: {json.dumps(body)[:3000]}")


def test_healthz_names_each_degraded_component_with_its_own_reason(tmp_path: Path, small_clip,  # type: ignore[no-untyped-def]
                                                                   request: pytest.FixtureRequest) -> None:
    detector = ({"model": str(BUNDLED_MODEL), "workers": 1} if (BUNDLED_MODEL / "model.tflite").is_file()
                else detector_section(request.getfixturevalue("coco_model")))
    porch = tmp_path / "porch.mp4"
    shutil.copy(small_clip.path, porch)
    port, refused = free_port(), free_port()
    fast = {"open_timeout_s": 1, "read_timeout_s": 1, "reconnect_max_s": 1}
    cfg = write_config(tmp_path / "config.yaml", {
        "cameras": {"porch": {"source": str(porch), "loop": True, **fast},
                    "street": {"source": f"rtsp://admin:hunter22@127.0.0.1:{refused}/live", **fast}},
        "detector": detector,
        "storage": {"path": str(tmp_path / "var")},
        "mqtt": {"host": UNRESOLVABLE, "client_id": "rw-health-e2e"},
        "http": {"enabled": True, "port": port},
        "logging": {"format": "json"},
    })
    daemon = Daemon.start(cfg)
    try:
        daemon.wait_for("camera_connected", timeout=90)
        body = _wait_health(port, lambda b: b["sinks"]["mqtt"]["status"] == "degraded"
                            and "connection refused" in b["cameras"]["street"]["reason"], 30)
        assert body["status"] == "degraded" and body["reason"] != "ok"
        assert body["cameras"]["porch"]["status"] == "ok" and body["cameras"]["porch"]["reason"] == "up"
        street = body["cameras"]["street"]
        assert street["status"] == "degraded" and street["up"] is False
        assert street["reason"].startswith("no frames for ") and street["reason"].endswith(" s (connection refused)")
        mqtt = body["sinks"]["mqtt"]
        assert mqtt["reason"] == f"dns: name not resolved ({UNRESOLVABLE})" and mqtt["state"] == "failing"
        assert body["problems"] == [f"camera street: {street['reason']}", f"mqtt: {mqtt['reason']}"]
        assert body["reason"] == "; ".join(body["problems"])
        for name in ("detector", "router", "storage", "http"):
            assert body[name]["status"] == "ok" and body[name]["reason"], (name, body[name])
        assert "hunter22" not in json.dumps(body)

        # check-config on the running daemon's own file: its port is taken by that daemon, which a
        # restart frees; the camera and the broker it cannot reach only warn
        check = subprocess.run([sys.executable, "-m", "raccoon_watch", "check-config", str(cfg)], cwd=REPO,
                               capture_output=True, text=True, timeout=120)
        assert check.returncode == 0, check.stderr
        assert (f"raccoon-watch: warning: http.port: {port} is in use by the running daemon of this storage.path "
                f"(PID {daemon.proc.pid}); a restart frees it for this configuration") in check.stderr

        porch.unlink()  # the looping file camera reopens it at its end (2 s) and cannot
        body = _wait_health(port, lambda b: "no such file" in b["cameras"]["porch"]["reason"], 30)
        assert body["cameras"]["porch"]["status"] == "degraded"
        assert body["reason"].startswith("camera porch: no frames for ") and "s (no such file)" in body["reason"]
        assert body["status"] == "degraded" and daemon.proc.poll() is None
    finally:
        code, _ = daemon.terminate()
    assert code == 0
