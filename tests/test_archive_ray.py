"""``detect DIR --recursive --ray``: a real Ray cluster on this machine (``ray start --head`` in its own
temporary folder, joined by ADDRESS), and a local Ray started by the command itself. Killed halfway
and run again, a run ends with exactly one record per photo, the same records as ``detect --json``."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from testkit.ports import free_port

pytest.importorskip("ray", reason="Ray is the scale extra: make test installs it (pip install '.[scale]')")
pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
DETECT = [str(BIN / "raccoon-watch"), "detect"]
START_TIMEOUT_S = 240  # Ray's start on a loaded 2-core machine; waits end as soon as the condition holds


def _wait_for(condition, timeout_s: float, what: str, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


@pytest.fixture(scope="module")
def ray_cluster():
    """A one-node Ray cluster: ``ray start --head --block`` (it stops what it started when it is
    terminated), in a temporary folder of its own so no other Ray on the machine is touched."""
    temp = tempfile.mkdtemp(prefix="rw-ray-", dir="/tmp")  # short: Ray's unix sockets live under it
    port = free_port()
    env = {**os.environ, **cluster_env(), "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen([str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", f"--temp-dir={temp}", "--disable-usage-stats"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        _wait_for(lambda: head.poll() is not None or _connects(address), START_TIMEOUT_S, "the Ray head", poll_s=2)
        if head.poll() is not None:
            pytest.fail(f"ray start exited {head.returncode}: {head.stderr.read().decode()[-2000:]}")
        yield address
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # only the processes this fixture started
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


_TOKEN = secrets.token_hex(32)


def cluster_env() -> dict[str, str]:
    """What the head and every driver share (README, "Process a season"): the cluster's token (Ray's
    token authentication; this one is the test cluster's own, not ~/.ray's) and worker niceness 0."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": _TOKEN, "RAY_worker_niceness": "0"}


def _connects(address: str) -> bool:
    probe = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address={address!r}); print(ray.cluster_resources().get('CPU'))"],
                           capture_output=True, text=True, timeout=120, env={**os.environ, **cluster_env()})
    return probe.returncode == 0 and probe.stdout.strip().endswith("2.0")


@pytest.fixture(scope="module")
def season(shared_dir, tmp_path_factory) -> Path:
    """24 real photos in three camera folders, and a truncated one."""
    root = tmp_path_factory.mktemp("season") / "card"
    photos = sorted((shared_dir / "data" / "raccoon_dataset" / "images").glob("*.jpg"))[:12]
    photos += sorted((shared_dir / "data" / "negatives").rglob("*.jpg"))[:12]
    for i, photo in enumerate(photos):
        target = root / f"cam{i % 3}" / f"{i:03d}_{photo.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(photo)
    (root / "cam0" / "zz_truncated.jpg").write_bytes(photos[0].read_bytes()[:1500])
    return root


def _lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def _one_process(root: Path) -> list[str]:
    files = sorted(str(p) for p in root.rglob("*.jpg"))
    run = subprocess.run([*DETECT, "--json", *files], capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stderr[-2000:]  # the truncated photo
    return run.stdout.splitlines()


def test_killed_halfway_and_rerun_gives_one_record_per_photo_identical_to_one_process(ray_cluster, season, tmp_path):
    out = tmp_path / "season.jsonl"
    checkpoint = Path(str(out) + ".checkpoint.jsonl")
    argv = [*DETECT, str(season), "--recursive", "--output", str(out), "--ray", ray_cluster, "--batch-size", "2"]
    env = {**os.environ, **cluster_env()}
    first = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_for(lambda: first.poll() is not None or _lines(checkpoint) > 1 + 6, START_TIMEOUT_S, "six photos in the checkpoint")
    finally:
        first.send_signal(signal.SIGKILL)  # a crash: no clean-up, no results file
        first.wait()
    assert first.returncode == -signal.SIGKILL, "the run finished before it could be killed halfway"
    done_before = _lines(checkpoint) - 1
    assert 6 <= done_before < 25 and not out.exists()

    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert rerun.returncode == 1, rerun.stderr[-3000:]  # 1: the truncated photo's record says it failed
    assert f"{done_before} from the checkpoint, {25 - done_before} recognized on Ray ({ray_cluster}" in rerun.stderr
    assert "archive: 25/25 files" in rerun.stderr  # the progress line
    lines = out.read_text().splitlines()
    files = [json.loads(line)["image"] for line in lines]
    assert len(files) == len(set(files)) == 25  # exactly one record per photo
    assert _lines(checkpoint) - 1 == 25
    truncated = json.loads(lines[files.index(str(season / "cam0" / "zz_truncated.jpg"))])
    assert "truncated JPEG" in truncated["error"]
    assert lines == _one_process(season)  # the same records, byte for byte, sorted by file


def test_local_ray_when_no_address_is_given(season, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    for photo in sorted(season.rglob("*.jpg"))[:3]:
        (small / photo.name).symlink_to(photo.resolve() if photo.is_symlink() else photo)
    out = tmp_path / "md.json"
    run = subprocess.run([*DETECT, str(small), "--recursive", "--ray", "--format", "megadetector", "--output", str(out)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "RAY_ADDRESS": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    assert "recognized on Ray (local," in run.stderr
    doc = json.loads(out.read_text())
    assert [e["file"] for e in doc["images"]] == sorted(p.name for p in small.iterdir())
