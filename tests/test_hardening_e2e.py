"""The real daemon against hostile input and a damaged disk (issue 11).

One daemon run on the raccoon clip, with a local Pushover and /healthz on, starting from an
events.db whose middle pages were overwritten: it must move the file aside, salvage the pending
push, keep detecting (one visit -> one push), report the recovery on /healthz, and keep /healthz
answering within a second while another client sends 60 KB request lines.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from testkit.fake_pushover import VALID_TOKEN, VALID_USER
from testkit.ports import free_port
from tests import corrupt_db
from tests.daemon import Daemon, detector_section, write_config

pytestmark = pytest.mark.slow


def _healthz(port: int) -> tuple[int, dict, float]:
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as resp:
            return resp.status, json.loads(resp.read()), time.monotonic() - t0
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), time.monotonic() - t0


def _hostile(port: int, stop: threading.Event, sent: list[int]) -> None:
    """Send 60 KB request lines, one connection after another, until told to stop."""
    line = b"GET /healthz?" + b"a" * 60_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
                s.sendall(line)
                s.recv(64)
                sent.append(len(line))
        except OSError:
            time.sleep(0.05)


def test_damaged_database_and_long_request_lines_do_not_stop_detection(
        tmp_path: Path, raccoon_clip_mp4, coco_model, fake_pushover) -> None:
    storage = tmp_path / "var"
    db = corrupt_db.build(storage, {"title": "Raccoon at salvaged", "message": "pending before the damage"})
    corrupt_db.damage(db, "pages")
    port = free_port()
    cfg = write_config(tmp_path / "config.yaml", {
        "cameras": {"porch": {"source": str(raccoon_clip_mp4.path), "detect_fps": 5, "motion": {"enabled": False}}},
        "detector": detector_section(coco_model),
        "events": {"min_frames": 3, "window": 5, "end_after": 2.0, "cooldown": 60},
        "storage": {"path": str(storage)},
        "pushover": {"token": VALID_TOKEN, "user": VALID_USER, "api_url": fake_pushover.url, "timeout_s": 2},
        "http": {"enabled": True, "port": port},
        "logging": {"format": "json"},
    })
    daemon = Daemon.start(cfg)
    stop = threading.Event()
    sent: list[int] = []
    attacker = threading.Thread(target=_hostile, args=(port, stop, sent), daemon=True)
    answers = []
    try:
        [recovered] = daemon.wait_for("store_corrupt_recovered", timeout=60)
        daemon.wait_for("http_listening", timeout=60)
        attacker.start()
        for _ in range(8):
            answers.append(_healthz(port))
            time.sleep(0.3)
        daemon.wait_for("event_ended", timeout=120)
        fake_pushover.wait_for(2, timeout=30)
        time.sleep(1.0)
    finally:
        stop.set()
        code, took = daemon.terminate()
    log = "".join(daemon.raw)
    assert code == 0 and took < 5.0, log[-3000:]
    # the damaged file: moved aside, the pending push salvaged and sent, a new file in use
    assert Path(recovered["moved_to"]).is_file() and recovered["salvaged"]["outbox"] >= 1
    titles = sorted(r.fields["title"] for r in fake_pushover.ok())
    assert titles == ["Raccoon at porch", "Raccoon at salvaged"], titles  # one visit -> one push
    # /healthz answered while attacked, and says what happened to the store
    assert len(sent) >= 3, "the hostile client never got its requests through"
    assert all(status == 200 for status, _, _ in answers), answers
    slowest = max(took for _, _, took in answers)
    assert slowest < 1.5, f"/healthz took {slowest:.1f}s while a client sent 60 KB request lines"
    body = answers[-1][1]
    assert body["status"] == "degraded" and body["storage"]["recovered"]["moved_to"] == recovered["moved_to"]
    assert VALID_USER not in log and VALID_TOKEN not in log
    assert "Traceback" not in log
