"""``raccoon-watch retrain`` / ``models`` on bad input: a clear message and exit 2, never a traceback
(real subprocesses, real store and folders; none of these paths needs TensorFlow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from raccoon_watch import site_models
from raccoon_watch.store import EventStore
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
