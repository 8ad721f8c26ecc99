"""The review page as a user uses it, in a real browser (Debian's headless Chromium, driven by Playwright).

A real daemon watches a raccoon clip served by a real RTSP server, with a real mosquitto: the page
lists the event, its snapshot loads, its clip plays in ``<video>`` (readyState >= 3, the duration the
daemon meant to cut within a second), the live view shows frames, and pressing "Not a raccoon"
changes the stored label, the MQTT feedback state and the exported training set.

Screenshots of the list and the event page go to the test's temporary folder (the ones in docs/
come from tests/test_review_keys_browser.py, at 390 and 1280 px).
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from testkit.ports import free_port
from tests.browser import chromium
from tests.daemon import REPO, Daemon, detector_section, write_config

pytestmark = [pytest.mark.slow, pytest.mark.rtsp, pytest.mark.mqtt]


@pytest.fixture(scope="module")
def browser():
    yield from chromium("--autoplay-policy=no-user-gesture-required")


def _config(tmp_path: Path, source: str, coco_model: Path, broker, port: int) -> Path:
    return write_config(tmp_path / "config.yaml", {
        "cameras": {"porch": {"source": source, "detect_fps": 5, "motion": {"enabled": False}}},
        "detector": detector_section(coco_model),
        "events": {"min_frames": 3, "window": 5, "end_after": 2.0, "cooldown": 60},
        "storage": {"path": str(tmp_path / "var")},
        "clips": {"pre_roll": 2.0, "post_roll": 2.0, "segment_s": 1.0},
        "mqtt": {"host": broker.host, "port": broker.port, "topic_prefix": "rw", "client_id": "rw-browser"},
        "http": {"enabled": True, "port": port},
        "logging": {"format": "json"},
    })


def test_review_page_in_chromium(tmp_path, browser, raccoon_clip_h264, rtsp_server, coco_model, mosquitto, recorder):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed: no clips to play")
    server = rtsp_server(raccoon_clip_h264)
    broker = mosquitto()
    rec = recorder(broker, "rw/#")
    port = free_port()
    cfg = _config(tmp_path, server.url, coco_model, broker, port)
    daemon = Daemon.start(cfg)
    url = f"http://127.0.0.1:{port}"
    shots = tmp_path
    try:
        ready = daemon.wait_for("clip_ready", timeout=150)[0]
        event_id, wanted_s = ready["event_id"], ready["seconds"]
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        # the list: the event is there, newest first, with its thumbnail
        page.goto(url + "/")
        row = page.locator(f'tr.event[data-id="{event_id}"]')
        assert row.count() == 1
        page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
        page.screenshot(path=str(shots / "review-list.png"))

        # the event: snapshot loaded, clip playable with the duration the daemon cut
        row.locator("a").first.click()
        page.wait_for_url(f"**/events/{event_id}")
        assert page.eval_on_selector("#snapshot", "i => i.complete && i.naturalWidth") > 0
        page.wait_for_function("() => document.querySelector('#clip').readyState >= 3", timeout=15000)
        duration = page.eval_on_selector("#clip", "v => v.duration")
        assert abs(duration - wanted_s) <= 1.0, (duration, wanted_s)
        assert page.locator("svg.chart").count() == 1  # the per-frame scores
        page.screenshot(path=str(shots / "review-event.png"), full_page=True)

        # "not a raccoon": stored, published on MQTT, exported
        page.click("#btn-not-raccoon")
        page.wait_for_selector("#feedback.not_raccoon")
        with sqlite3.connect(tmp_path / "var" / "events.db") as db:
            assert db.execute("SELECT feedback FROM events WHERE id=?", (event_id,)).fetchone() == ("not_raccoon",)
        said = rec.wait(lambda ms: any(m.topic == "rw/porch/feedback" for m in ms), timeout=10)
        verdict = json.loads(next(m.payload for m in said if m.topic == "rw/porch/feedback"))
        assert verdict == {"id": event_id, "camera": "porch", "label": "not_raccoon", "source": "page"}
        out = tmp_path / "export"
        done = subprocess.run([sys.executable, "-m", "raccoon_watch", "export-feedback", str(out), "--config", str(cfg)],
                              cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.strip().splitlines()[-1])["exported"] == 1
        rows = list(csv.DictReader((out / "labels.csv").open()))
        assert [r["class"] for r in rows] == ["not_raccoon"] and (out / "images" / rows[0]["filename"]).is_file()

        # the same verdict from Home Assistant / any MQTT client, on the command topic
        rec.clear()
        rec.client.publish("rw/porch/feedback/set", json.dumps({"id": event_id, "label": "raccoon"}), qos=1)
        said = rec.wait(lambda ms: any(m.topic == "rw/porch/feedback" for m in ms), timeout=10)
        assert json.loads(next(m.payload for m in said if m.topic == "rw/porch/feedback"))["source"] == "mqtt"
        with sqlite3.connect(tmp_path / "var" / "events.db") as db:
            assert db.execute("SELECT feedback FROM events WHERE id=?", (event_id,)).fetchone() == ("raccoon",)

        # the live view shows frames from the camera
        page.goto(url + "/live")
        page.wait_for_function("() => document.querySelector('#cam-porch img').naturalWidth > 0", timeout=15000)
        assert "up" in page.inner_text("#cam-porch figcaption")
        page.close()
    finally:
        code, _ = daemon.terminate()
    assert code == 0
    assert not daemon.events("http_handler_failed")
