"""``raccoon-watch retrain`` / ``models`` on bad input: a clear message and exit 2, never a traceback
(real subprocesses, real store and folders; none of these paths needs TensorFlow)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest

from raccoon_watch.learning import site_models
from raccoon_watch.service.retrain_cmd import EXIT_NEED_MORE
from raccoon_watch.store import EventStore
from raccoon_watch.types import Event, EventKind
from tests.daemon import REPO, write_config


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raccoon_watch", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture()
def cfg(tmp_path: Path) -> Path:
    EventStore(tmp_path / "var").close()
    return write_config(tmp_path / "config.yaml", {"cameras": {"porch": {"source": "0"}},
                                                   "storage": {"path": str(tmp_path / "var")}})


def test_retrain_without_feedback_says_what_to_do(cfg, shared_dir):
    run = _run("retrain", "--config", str(cfg))
    assert run.returncode == 2, run.stderr
    assert "no usable feedback" in run.stderr and "review page" in run.stderr and "Traceback" not in run.stderr
    assert (cfg.parent / "var" / "feedback" / "labels.csv").is_file()  # it exported first (nothing to export)


def test_retrain_reports_each_bad_row_with_its_event_and_stops_cleanly(cfg, tmp_path, shared_dir):
    folder = tmp_path / "mine"
    (folder / "images").mkdir(parents=True)
    (folder / "labels.csv").write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n"
                                       "porch_e1.jpg,640,360,cat,1,1,5,5\nporch_e2.jpg,640,360,raccoon,1,1,5,5\n")
    (folder / "events.csv").write_text("filename,event_id,camera,start_time\nporch_e1.jpg,e1,porch,1.0\n")
    run = _run("retrain", "--config", str(cfg), "--feedback", str(folder))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "feedback_skipped" in run.stderr and "event e1" in run.stderr and "class 'cat'" in run.stderr
    assert "porch_e2.jpg is gone" in run.stderr
    assert sorted(p.name for p in folder.rglob("*")) == ["events.csv", "images", "labels.csv"]  # nothing deleted


@pytest.mark.parametrize("args, says", [
    (("models", "rollback"), "nothing to roll back"),
    (("models", "promote"), "name the candidate"),
    (("models", "promote", "nope"), "no candidate 'nope'"),
])
def test_models_bad_input(cfg, args, says):
    run = _run(*args[:1], "--config", str(cfg), *args[1:])
    assert run.returncode == 2 and says in run.stderr and "Traceback" not in run.stderr


def test_models_list_shows_the_shipped_one_and_a_bad_config_is_exit_2(cfg, tmp_path):
    run = _run("models", "--config", str(cfg), "list")
    assert run.returncode == 0 and json.loads(run.stdout) == {"current": site_models.SHIPPED, "candidates": []}
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras: {porch: {source: '0'}}\nstorage: {pth: x}\n")
    run = _run("retrain", "--config", str(bad))
    assert run.returncode == 2 and "storage.pth" in run.stderr


def _marked(store: EventStore, event_id: str, when: str, label: str) -> None:
    """An event the daemon stored (its clean frame too) and the user marked."""
    start = datetime.fromisoformat(when).timestamp()
    store.record(Event(id=event_id, kind=EventKind.END, camera="porch", label="raccoon", start_time=start,
                       end_time=start + 5, score=0.9, top_score=0.9, box=(0.25, 0.2, 0.75, 0.8), first_seen_ts=start))
    frame = np.full((120, 160, 3), 90, np.uint8)
    store.write_frame("porch", event_id, cv2.imencode(".jpg", frame)[1].tobytes())
    assert store.set_feedback(event_id, label, "page")


def test_too_little_feedback_says_how_many_more_visits_and_trains_nothing(cfg, shared_dir):
    """Two nights, one raccoon: exit 5 with how many more to mark; no candidate, no refusal, the page's record."""
    store = EventStore(cfg.parent / "var")
    try:
        _marked(store, "e1", "2026-05-03T22:00:00", "raccoon")
        for i, when in enumerate(("2026-05-03T23:00:00", "2026-05-04T01:00:00", "2026-05-04T22:30:00",
                                  "2026-05-04T23:30:00", "2026-05-05T02:00:00", "2026-05-05T03:00:00")):
            _marked(store, f"c{i}", when, "not_raccoon")
    finally:
        store.close()
    run = _run("retrain", "--config", str(cfg))
    assert run.returncode == EXIT_NEED_MORE == 5, run.stderr
    assert "Traceback" not in run.stderr
    # night 05-03: 1 raccoon, 2 raccoon-free; night 05-04: 4 raccoon-free. Either night held out leaves a side
    # without raccoons; at half a raccoon a night, 6 raccoons take 10 more nights
    message = "need 5 more raccoon visits and 1 more raccoon-free visit marked (from 10 more nights)"
    assert message in run.stderr and "Nothing was trained or promoted" in run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["need_more"] and not summary["promoted"] and summary["message"] == message
    assert summary["split"]["holdout_visits"] == {"raccoon": 1, "not_raccoon": 2}  # a whole night: the nearer to 30 %
    root = site_models.models_root(cfg.parent / "var")
    assert site_models.list_candidates(root) == [] and not (root / "candidates").exists()
    listing = json.loads(_run("models", "--config", str(cfg), "list").stdout)
    assert listing["candidates"] == [] and listing["last_retrain"]["outcome"] == "need_more"
    assert listing["last_retrain"]["message"] == message


# --- a retrain yields the machine; promoting what the gate refused takes --force -------------------

def test_a_cli_retrain_runs_at_idle_priority_with_one_thread_unless_told(cfg, shared_dir):
    """The process itself drops to the idle CPU class and nice 19 before any work (its log says what
    the kernel reports back), as the page's button and the systemd unit run it; flags override."""
    import os

    run = _run("retrain", "--config", str(cfg))  # no feedback: exit 2, after the priority is set
    assert run.returncode == 2, run.stderr
    line = next(ln for ln in run.stderr.splitlines() if "retrain_priority" in ln)
    assert "priority=idle" in line and "threads=1" in line and "nice=19" in line
    if hasattr(os, "SCHED_IDLE"):
        assert "sched=idle" in line
    run = _run("retrain", "--config", str(cfg), "--priority", "normal", "--threads", "2")
    line = next(ln for ln in run.stderr.splitlines() if "retrain_priority" in ln)
    assert "priority=normal" in line and "threads=2" in line and f"nice={os.getpriority(os.PRIO_PROCESS, 0)}" in line
    run = _run("retrain", "--config", str(cfg), "--threads", "0")
    assert run.returncode == 2 and "--threads must be at least 1" in run.stderr


def test_the_page_and_the_cli_share_the_retrain_defaults():
    import argparse

    from raccoon_watch.learning.retrain_priority import DEFAULT_PRIORITY, DEFAULT_THREADS, default_threads, tf_env
    from raccoon_watch.service.retrain_cmd import add_parsers
    from raccoon_watch.web.retrain_job import retrain_command

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["retrain", "--config", "x.yaml"])
    assert (args.priority, args.threads) == (DEFAULT_PRIORITY, DEFAULT_THREADS) == ("idle", 1)
    # the page runs the command as typed, no overrides: the command's defaults are the page's
    assert retrain_command(Path("c.yaml"))[-4:] == ["retrain", "--config", "c.yaml", "--quiet"]
    assert not {"--priority", "--threads", "nice"} & set(retrain_command(Path("c.yaml")))
    assert default_threads({"RACCOON_RETRAIN_THREADS": "3"}) == 3 and default_threads({"RACCOON_RETRAIN_THREADS": "x"}) == 1
    env = tf_env(1)
    assert env["TF_CPP_MIN_LOG_LEVEL"] == "3" and env["OMP_NUM_THREADS"] == env["TF_NUM_INTRAOP_THREADS"] == "1"


def _candidate(root: Path, name: str, refused: bool) -> Path:
    folder = root / site_models.CANDIDATES / name
    folder.mkdir(parents=True)
    (folder / site_models.CLASSIFIER_FILE).write_bytes(b"not read by promote")
    gate = {"promote": not refused, "reasons": ["not better on the held-out site feedback"] if refused else []}
    (folder / site_models.CLASSIFIER_CARD).write_text(json.dumps({"gate": gate}))
    if refused:
        (folder / site_models.REFUSED_FILE).write_text("not better on the held-out site feedback\n")
    return folder


def test_promoting_a_refused_candidate_needs_force_and_says_it_was_forced(cfg):
    root = site_models.models_root(cfg.parent / "var")
    good, bad = _candidate(root, "20261201T000000Z-good", False), _candidate(root, "20261202T000000Z-bad", True)
    run = _run("models", "--config", str(cfg), "promote", bad.name)
    assert run.returncode == 4, run.stderr
    assert "the gate refused 20261202T000000Z-bad: not better on the held-out site feedback" in run.stderr
    assert "--force" in run.stderr and site_models.current(root) is None  # nothing changed

    run = _run("models", "--config", str(cfg), "promote", good.name)  # a passed one: as before
    assert run.returncode == 0 and json.loads(run.stdout) == {"current": good.name, "forced": False}
    run = _run("models", "--config", str(cfg), "promote", bad.name, "--force")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {"current": bad.name, "forced": True}
    assert site_models.current(root) == bad.resolve() and site_models.previous(root) == good.resolve()
    line = next(ln for ln in run.stderr.splitlines() if "classifier_promoted" in ln)
    assert "forced=True" in line and "not better on the held-out site feedback" in line


def test_the_retrain_heap_gives_freed_buffers_back() -> None:
    """glibc's mmap and trim thresholds are set in a fresh process (this machine runs glibc): after a
    big buffer is freed (which, left to glibc's defaults, raises its mmap threshold so that later 256 KB
    blocks stay on the heap when freed: 0 MB returned), 100 MB of such blocks freed go back at once."""
    probe = (
        "import ctypes, resource, sys\n"
        "from raccoon_watch.learning.retrain_priority import release_heap_early\n"
        "def rss():\n"
        "    return int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()\n"
        "ok = release_heap_early()\n"
        "libc = ctypes.CDLL('libc.so.6'); libc.malloc.restype = ctypes.c_void_p\n"
        "libc.free.argtypes = [ctypes.c_void_p]\n"
        "big = libc.malloc(8 << 20); ctypes.memset(big, 1, 8 << 20); libc.free(big)\n"  # as TF frees big buffers
        "blocks = [libc.malloc(256 * 1024) for _ in range(400)]\n"
        "for b in blocks: ctypes.memset(b, 1, 256 * 1024)\n"
        "held = rss()\n"
        "for b in blocks: libc.free(b)\n"
        "print(ok, held - rss())\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 0, done.stderr
    ok, returned = done.stdout.split()
    assert ok == "True"
    assert int(returned) > 80 * 1024 * 1024  # of the 100 MB written, nearly all went back
