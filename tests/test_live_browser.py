"""The Live and Classifier tabs as a user sees them, in headless Chromium at a phone's 390 px and a
laptop's 1280 px.

Live: a real daemon (``python -m raccoon_watch run``) watches two cameras: ``porch`` plays the
raccoon clip in a loop, ``gate`` is an RTSP camera whose server is not there (a refused port). The
page must finish loading (its load event, within ``LOAD_BOUND_S``: an ``<img>`` of an MJPEG stream
that never sends a part holds it for ever), ``gate`` must show the placeholder picture saying it is
down since when and why, and the raccoon on ``porch`` must get a box drawn on the live picture
(where ``X-Live-Boxes`` says, in the snapshot's amber).

Classifier: a real App and server with a stand-in retrain process that writes its own lines among
TensorFlow's C++ noise and one very long line; candidates with the held-out table. Neither tab
scrolls sideways at either width; the log wraps and holds none of the noise.

Screenshots go to ``$RACCOON_SCREENSHOTS`` when it is set (that is how docs/live-*.jpg and
docs/classifier-*.jpg were made), else to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests

from raccoon_watch.snapshot import DEFAULT_COLOR
from testkit.ports import free_port
from tests.browser import chromium
from tests.daemon import Daemon, detector_section, write_config
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow]

WIDTHS = (390, 1280)
LOAD_BOUND_S = 15.0  # the load event of /live, dead camera and all (it fires in well under a second)
NO_SIDEWAYS_SCROLL = "() => document.documentElement.scrollWidth <= window.innerWidth"


@pytest.fixture(scope="module")
def browser():
    yield from chromium()


def _shots(tmp_path: Path) -> Path:
    value = os.environ.get("RACCOON_SCREENSHOTS")
    return Path(value) if value else tmp_path


def _box_drawn(jpeg: bytes, box: list[int]) -> bool:
    """The JPEG has the box colour along most of the box's left and top edges (pixels, xmin, ymin, xmax, ymax)."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    x1, y1, x2, y2 = box
    edge = np.concatenate([image[y1 + 2:y2 - 2, x1], image[min(y2, image.shape[0] - 1), x1 + 2:x2 - 2]])
    near = np.abs(edge.astype(int) - np.array(DEFAULT_COLOR)).max(axis=1) < 60
    return bool(near.mean() > 0.8)


def _amber_pixels(png: bytes) -> int:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    return int((np.abs(image.astype(int) - np.array(DEFAULT_COLOR)).max(axis=2) < 40).sum())


def test_live_finishes_loading_with_a_dead_camera_and_boxes_the_raccoon(tmp_path, browser, raccoon_clip_mp4,
                                                                        coco_model):
    port = free_port()
    dead = f"rtsp://127.0.0.1:{free_port()}/stream1"  # nothing listens there: refused at once
    cfg = write_config(tmp_path / "config.yaml", {
        "cameras": {
            "porch": {"source": str(raccoon_clip_mp4.path), "loop": True, "detect_fps": 5, "motion": {"enabled": False}},
            "gate": {"source": dead, "open_timeout_s": 2.0, "read_timeout_s": 2.0, "reconnect_max_s": 5.0},
        },
        "detector": detector_section(coco_model),
        "events": {"min_frames": 3, "window": 5, "end_after": 2.0, "cooldown": 0},
        "storage": {"path": str(tmp_path / "var")},
        "clips": {"enabled": False},
        "http": {"enabled": True, "port": port},
        "logging": {"format": "json"},
    })
    daemon = Daemon.start(cfg)
    url = f"http://127.0.0.1:{port}"
    shots = _shots(tmp_path)
    try:
        daemon.wait_for("http_listening", timeout=90)
        down = daemon.wait_for("camera_down", timeout=60)[0]
        assert down["camera"] == "gate"

        # the dead camera's picture is the placeholder, at once
        one = requests.get(url + "/live/gate.jpg", timeout=10)
        assert one.status_code == 200 and one.headers["X-Live-Showing"] == "down"

        # the raccoon gets a box on the live picture, where the response says it is drawn
        boxed: list[tuple[bytes, list[int]]] = []

        def raccoon_boxed() -> bool:
            resp = requests.get(url + "/live/porch.jpg", timeout=10)
            boxes = json.loads(resp.headers["X-Live-Boxes"])
            if resp.headers["X-Live-Showing"] == "frames" and boxes:
                boxed.append((resp.content, boxes[0]))
                return True
            return False

        assert wait_until(raccoon_boxed, timeout=180, interval=0.1), "no box on the live picture of the raccoon clip"
        jpeg, box = boxed[0]
        assert _box_drawn(jpeg, box), box

        for width in WIDTHS:
            page = browser.new_page(viewport={"width": width, "height": 900 if width > 600 else 844})
            t0 = time.monotonic()
            page.goto(url + "/live", wait_until="load", timeout=LOAD_BOUND_S * 1000)  # raises if it never loads
            assert time.monotonic() - t0 < LOAD_BOUND_S
            page.wait_for_function("() => [...document.querySelectorAll('img.live')].every(i => i.naturalWidth > 0)",
                                   timeout=10_000)
            gate = page.locator("#cam-gate")
            assert gate.get_attribute("data-showing") == "down"
            caption = gate.locator("figcaption").inner_text()
            assert "down since" in caption and "connection refused" in caption, caption
            assert "127.0.0.1" not in caption and "rtsp://" not in caption, caption  # the cause, never the source URL
            assert page.eval_on_selector("#cam-gate img", "i => [i.naturalWidth, i.naturalHeight]") == [640, 360]
            assert page.evaluate(NO_SIDEWAYS_SCROLL), page.evaluate("document.documentElement.scrollWidth")
            # the browser shows the box: the snapshot's amber on the porch picture as rendered
            seen: list[int] = []

            def box_in_browser() -> bool:
                seen.append(_amber_pixels(page.locator("#cam-porch img").screenshot()))
                return seen[-1] > 200

            assert wait_until(box_in_browser, timeout=120, interval=0.1), f"no box in the browser: amber pixels {seen}"
            page.screenshot(path=str(shots / f"live-{width}.jpg"), type="jpeg", quality=70, full_page=width < 600)
            page.close()
        assert not daemon.events("http_handler_failed")
    finally:
        code, _ = daemon.terminate()
    assert code == 0


def test_the_classifier_tab_wraps_its_log_and_fits_a_phone(tmp_path, browser, small_clip):
    from raccoon_watch.learning import site_models
    from raccoon_watch.learning.replay import VisitOutcome
    from raccoon_watch.recognition.detectors import find_model
    from raccoon_watch.service.health import HealthServer
    from raccoon_watch.web.pages import ReviewPages
    from raccoon_watch.web.retrain_job import RetrainJob
    from tests.test_review_page import _event, _serve

    app, server = _serve(tmp_path, small_clip, {})
    long_line = ("2026-12-07 20:51:33 [info     ] retrain_feedback   holdout=['2026-11-05', '2026-11-06'] "
                 + " ".join(f"split_{i}={{'raccoon': {i}, 'not_raccoon': {2 * i}}}" for i in range(30)))
    script = ("import sys, time\n"
              "print('I0000 00:00:1796676560.876151 4205 cpu_feature_guard.cc:227] This TensorFlow binary', file=sys.stderr)\n"
              f"print({long_line!r}, flush=True)\n"
              "print('oneDNN custom operations are on.', file=sys.stderr, flush=True)\n"
              "print('2026-12-07 20:52:16 [info     ] retrain_mode_fitted   ap=0.9611 mode=head', flush=True)\n"
              "time.sleep(60)\n")
    job = RetrainJob([sys.executable, "-c", script], tmp_path / "retrain.log", lambda: None)
    pages = HealthServer("127.0.0.1", 0, lambda: (True, {}), lambda: b"", ReviewPages(app, retrain=job))
    pages.start()
    url = f"http://127.0.0.1:{pages.port}"
    shots = _shots(tmp_path)
    try:
        now = time.time()
        for i in range(9):
            app.store.record(_event(f"v{i}", now - 60 * i))
            app.set_feedback(f"v{i}", None, "raccoon" if i < 4 else "not_raccoon", "page")
        files = find_model(app.model_path)
        root = site_models.models_root(app.cfg.storage.path)
        wrong = [VisitOutcome(f"v{i}", "porch", now - 60 * i, "not_raccoon", 0.741, "ir", "trace", 12, 0.91, True,
                              "live", 0.52, False, True, True).to_dict() for i in range(3)]
        for name, refused in (("20261206T221500Z-3f9a2c1b7d4e", True), ("20261207T205108Z-cfd219189cbe", False)):
            folder = root / "candidates" / name
            folder.mkdir(parents=True)
            shutil.copy(files.classifier, folder / site_models.CLASSIFIER_FILE)
            gate = {"promote": not refused, "wrong": wrong,
                    "reasons": ["not better on the held-out site feedback: 9 of 15 events wrong, deployed 9"] if refused else []}
            (folder / site_models.CLASSIFIER_CARD).write_text(json.dumps({"gate": gate}))
            if refused:
                (folder / site_models.REFUSED_FILE).write_text("\n".join(gate["reasons"]) + "\n")
        site_models.write_last_retrain(root, {"time": now, "outcome": "refused", "candidate": "20261206T221500Z-3f9a2c1b7d4e",
                                              "message": "not better on the held-out site feedback", "wrong": wrong})
        assert job.start()
        assert wait_until(lambda: "retrain_mode_fitted" in job.state().log_tail, timeout=20)
        for width in WIDTHS:
            page = browser.new_page(viewport={"width": width, "height": 900 if width > 600 else 844})
            page.goto(url + "/models", wait_until="load", timeout=LOAD_BOUND_S * 1000)
            log = page.locator("#retrain-log")
            assert "split_29" in log.inner_text() and "cpu_feature_guard" not in page.content()
            assert "oneDNN" not in page.content()
            assert page.eval_on_selector("#retrain-log", "e => getComputedStyle(e).whiteSpace") == "pre-wrap"
            assert page.eval_on_selector("#retrain-log", "e => e.scrollWidth <= e.clientWidth")  # wrapped, not cut
            assert page.locator('meta[http-equiv="refresh"]').count() == 1  # it reloads itself while it runs
            assert "Marked so far: 9 events (4 raccoon, 5 not a raccoon)" in page.inner_text("#verdicts")
            assert page.evaluate(NO_SIDEWAYS_SCROLL), page.evaluate("document.documentElement.scrollWidth")
            page.screenshot(path=str(shots / f"classifier-{width}.jpg"), type="jpeg", quality=75, full_page=False)
            page.close()
    finally:
        job.stop()
        pages.stop()
        server.stop()
        app.stop_event.set()
        app.stop()
