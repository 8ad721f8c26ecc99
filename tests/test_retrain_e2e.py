"""Learns your porch, end to end with real parts: a real daemon, the shipped models, real files, HTTP.

The daemon watches two file cameras in a loop: ``porch`` shows a cat photo walking in onto the
empty porch scene and sitting there (a cat the shipped classifier takes for a raccoon: it alerts; it
walks in because a picture that never moved never alerts), ``yard`` the raccoon clip the
other daemon tests use. The test marks the porch's events "not a raccoon" and the yard's "raccoon"
through the review page's HTTP form (CSRF token and all). With the first few marked, ``raccoon-watch
retrain`` says how many more visits it needs (exit 5) and trains nothing. With enough of both kinds
it runs with a small step count while the daemon keeps detecting; the test checks that the gate
promoted the candidate, that the card names the held-out cat visits the deployed classifier got
wrong from what the daemon did live (not from an offline re-score), sends SIGHUP, and then watches
which events the NEW classifier version starts: none on the porch, and the yard's raccoon still
alerts. Then ``raccoon-watch models rollback`` + SIGHUP puts the shipped classifier back.

What this does not show: the held-out site events here are later loops of the same clips, so near
identical frames are on both sides of the site split (one night, split by event); the real
comparison on held-out nights is the README's measured table. (A run that spans noon has two
nights, and then too few visits on each: it would stop at exit 5.)
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import requests

from raccoon_watch.demo import arrive_onto, empty_scene
from raccoon_watch.learning.feedback import DEFAULT_MIN_VISITS
from raccoon_watch.learning.site_models import (
    CLASSIFIER_CARD,
    CLASSIFIER_FILE,
    REFUSED_FILE,
    current,
    last_retrain,
    list_candidates,
    model_version,
    models_root,
)
from raccoon_watch.service.retrain_cmd import EXIT_NEED_MORE
from testkit.ports import free_port
from tests.daemon import BUNDLED_MODEL, REPO, Daemon, write_config
from tests.fixtures.media import make_clip

# a retrain and 12 marked visits: more than the suite's 300 s on a busy 2-core machine (the retrain's own limit is 600 s)
pytestmark = [pytest.mark.slow, pytest.mark.shared, pytest.mark.timeout(900)]

# the one cat photo of ../shared/data/negatives (of 92) whose cat the shipped
# classifier scores above its threshold when letterboxed onto the 640x360 porch scene
CAT_PHOTO = "kdvc_cat.473.jpg"  # scores 0.81 letterboxed (the raw photo 0.64: it does not alert in the gate's held-out set)
CAT_S, EMPTY_S, FPS = 3.0, 3.0, 15.0
CAT_WALK_S = 1.0  # of CAT_S: it walks in from the left edge, then sits where the letterboxed photo was
CAT_EVENTS = RACCOON_EVENTS = 2 * DEFAULT_MIN_VISITS  # one night: the latest 3 of each kind are held out


@pytest.fixture(scope="module")
def cat_clip(shared_dir: Path, tmp_path_factory) -> Path:
    photo = cv2.imread(str(shared_dir / "data" / "negatives" / CAT_PHOTO))
    if photo is None:
        pytest.skip(f"{CAT_PHOTO} not in the shared negatives")
    empty = empty_scene(shared_dir, (640, 360))
    cat = [c.image for c in arrive_onto(empty, photo, [], round(CAT_S * FPS), round(CAT_WALK_S * FPS))]
    frames = cat + [empty] * round(EMPTY_S * FPS)
    return make_clip(frames, tmp_path_factory.mktemp("cat") / "cat_at_the_porch.mp4", fps=FPS)


def _config(tmp_path: Path, porch: Path, yard: Path, port: int) -> Path:
    camera = {"detect_fps": 4, "loop": True, "realtime": True, "motion": {"enabled": False}}
    return write_config(tmp_path / "config.yaml", {
        "cameras": {"porch": {"source": str(porch), **camera}, "yard": {"source": str(yard), **camera}},
        "detector": {"model": str(BUNDLED_MODEL), "labels": ["raccoon"], "threshold": None, "workers": 1,
                     "num_threads": 1},
        "events": {"min_frames": 3, "window": 5, "end_after": 1.0, "cooldown": 0},
        "storage": {"path": str(tmp_path / "var")},
        "clips": {"enabled": False},
        "http": {"enabled": True, "port": port},
        "logging": {"format": "json"},
    })


def _mark(url: str, event_id: str, label: str) -> None:
    """What the page's button does: GET the event page (CSRF token), POST the form."""
    with requests.Session() as s:
        page = s.get(f"{url}/events/{event_id}", timeout=10)
        assert page.status_code == 200
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        resp = s.post(f"{url}/events/{event_id}/feedback", data={"label": label, "csrf": token}, timeout=10)
        assert resp.status_code in (200, 303), resp.text[:300]


def _starts(daemon: Daemon, camera: str, version: str | None = None) -> list[dict]:
    """The camera's alerts (``event_started`` with severity alert; a detection is stored, never pushed)."""
    return [e for e in daemon.events("event_started")
            if e.get("camera") == camera and e.get("severity", "alert") == "alert"
            and (version is None or e.get("model_version") == version)]


def _wait(predicate, timeout: float, what: str, daemon: Daemon) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if daemon.proc.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout}s; log tail:\n{''.join(daemon.raw[-30:])}")


def _ended(daemon: Daemon, camera: str) -> list[str]:
    """The camera's ended alerts (the visits marked here; a detection would be marked the same way)."""
    return [e["id"] for e in daemon.events("event_ended")
            if e.get("camera") == camera and e.get("severity", "alert") == "alert"]


def _retrain(cfg: Path, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "raccoon_watch", "retrain", "--config", str(cfg), "--steps", "150", "--mode", "blocks",
         "--base-crops", str(tmp_path / "base"), "--base-build-limit", "20", "--base-limit", "600",
         "--threads", "1", "--quiet", "--priority", "normal"],  # idle would wait on the other test workers
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_marked_cat_stops_alerting_after_retrain_and_sighup(tmp_path, shared_dir, cat_clip, raccoon_clip_mp4):
    port = free_port()
    cfg = _config(tmp_path, cat_clip, raccoon_clip_mp4.path, port)
    url = f"http://127.0.0.1:{port}"
    shipped = model_version(BUNDLED_MODEL / CLASSIFIER_FILE)
    env = {**os.environ, "RACCOON_SHARED": str(shared_dir)}
    root = models_root(tmp_path / "var")
    daemon = Daemon.start(cfg)
    try:
        # 1. the first visits marked: too few to judge a candidate, so it says how many more and trains nothing
        _wait(lambda: len(_ended(daemon, "porch")) >= 2 and len(_ended(daemon, "yard")) >= 1, 90,
              "two cat events and a raccoon event", daemon)
        first_cats, first_raccoons = _ended(daemon, "porch"), _ended(daemon, "yard")
        for event_id in first_cats:
            _mark(url, event_id, "not_raccoon")
        for event_id in first_raccoons:
            _mark(url, event_id, "raccoon")
        early = _retrain(cfg, tmp_path, env)
        assert early.returncode == EXIT_NEED_MORE, f"exit {early.returncode}:\n{early.stderr[-3000:]}"
        assert "Traceback" not in early.stderr
        short = json.loads(early.stdout.strip().splitlines()[-1])
        needed = (max(0, 2 * DEFAULT_MIN_VISITS - len(first_raccoons)), max(0, 2 * DEFAULT_MIN_VISITS - len(first_cats)))
        assert (short["split"]["need_more"]["raccoon"], short["split"]["need_more"]["not_raccoon"]) == needed
        assert short["message"].startswith(f"need {needed[0]} more raccoon visit") and short["message"] in early.stderr
        assert list_candidates(root) == [] and last_retrain(root)["outcome"] == "need_more"

        # 2. the cat alerts, loop after loop, with the shipped classifier; the yard's raccoon too: mark them all
        _wait(lambda: len(_ended(daemon, "porch")) >= CAT_EVENTS and len(_ended(daemon, "yard")) >= RACCOON_EVENTS,
              150, f"{CAT_EVENTS} cat events and {RACCOON_EVENTS} raccoon events", daemon)
        cat_events, raccoon_events = _ended(daemon, "porch"), _ended(daemon, "yard")
        assert all(e["model_version"] == shipped for e in _starts(daemon, "porch"))
        for event_id in cat_events:
            _mark(url, event_id, "not_raccoon")
        for event_id in raccoon_events:
            _mark(url, event_id, "raccoon")

        # 3. retrain while the daemon keeps detecting
        t0 = time.monotonic()
        run = _retrain(cfg, tmp_path, env)
        retrain_s = time.monotonic() - t0
        assert run.returncode == 0, f"retrain exit {run.returncode} after {retrain_s:.0f} s:\n{run.stdout}\n{run.stderr[-3000:]}"
        assert "Traceback" not in run.stderr
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        assert summary["promoted"] and summary["reasons"] == []
        candidate = Path(summary["candidate"])
        card = json.loads((candidate / CLASSIFIER_CARD).read_text())
        assert card["retrain"]["data"]["site_judged_crops"] >= 1
        assert card["retrain"]["data"]["site_holdout_events"] >= 1
        gate = card["gate"]
        assert gate["candidate"]["site_not_raccoon_mean"] < gate["deployed"]["site_not_raccoon_mean"]
        assert gate["candidate"]["recall"] >= gate["deployed"]["recall"] - gate["tolerance"]["recall_drop"]
        assert gate["candidate"]["false_alerts"] <= gate["deployed"]["false_alerts"]
        assert current(models_root(tmp_path / "var")) == candidate.resolve()
        # both kinds on both sides; each held-out visit judged from what the daemon did live
        split = card["retrain"]["data"]["site_split"]
        assert split["enough"] and min(*split["holdout_visits"].values(), *split["train_visits"].values()) >= 3
        held = {v["event_id"]: v for v in gate["site_holdout"]}
        assert all(v["deployed_from"] == "live" and v["kept"] == "trace" and v["in_store"] for v in held.values())
        assert gate["replay_disagrees_with_live"] == 0, [v for v in held.values() if v["replay_agrees"] is False]
        cats_held = [v for v in held.values() if v["verdict"] == "not_raccoon"]
        raccoons_held = [v for v in held.values() if v["verdict"] == "raccoon"]
        assert len(cats_held) >= 3 and len(raccoons_held) >= 3
        assert all(v["deployed_alerted"] and v["deployed_wrong"] for v in cats_held)  # every cat alerted live
        assert not any(v["deployed_wrong"] for v in raccoons_held)  # every raccoon did too: right, as it was live
        assert {v["event_id"] for v in gate["wrong"]} == {v["event_id"] for v in cats_held} | {
            v["event_id"] for v in raccoons_held if v["candidate_wrong"]}
        assert gate["site_holdout"] and not (candidate / REFUSED_FILE).exists()
        assert last_retrain(root)["outcome"] == "promoted" and last_retrain(root)["candidate"] == candidate.name
        page = requests.get(f"{url}/models", timeout=10).text
        assert all(f'href="/events/{v["event_id"]}"' in page for v in cats_held)  # the page names them, linked
        new = model_version(candidate / CLASSIFIER_FILE)
        assert new != shipped

        # 4. SIGHUP: the daemon loads it in the background and the workers switch between frames
        daemon.proc.send_signal(signal.SIGHUP)
        _wait(lambda: any(e.get("version") == new for e in daemon.events("classifier_swapped")), 60,
              "classifier_swapped to the candidate", daemon)
        _wait(lambda: len(_starts(daemon, "yard", new)) >= 2, 90, "two raccoon events scored by the new classifier",
              daemon)
        assert _starts(daemon, "porch", new) == []  # the cat came back loop after loop: no alert
        metrics = requests.get(f"{url}/metrics", timeout=10).text
        assert f'raccoon_watch_classifier_info{{version="{new}"}} 1.0' in metrics

        # 5. roll back: the shipped classifier again
        back = subprocess.run([sys.executable, "-m", "raccoon_watch", "models", "--config", str(cfg), "rollback"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        assert back.returncode == 0, back.stderr
        daemon.proc.send_signal(signal.SIGHUP)
        _wait(lambda: any(e.get("version") == shipped for e in daemon.events("classifier_swapped")), 60,
              "classifier_swapped back to the shipped one", daemon)
    finally:
        code, _ = daemon.terminate()
    assert code == 0
