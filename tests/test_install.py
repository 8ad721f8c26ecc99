"""The install: what `make run` gives a new user, checked on a real runtime-only venv.

- every file the packages hold is declared as package data (setup.cfg), so a wheel carries it;
- a fresh venv made as ``make run`` makes it (``pip install -e .``: the base package with LiteRT, no
  TensorFlow, no Playwright, no test tools) installs without a setuptools warning, stays under
  RUNTIME_LIMIT_MB, and in it ``check-config``, ``detect``, ``run`` and the review page work; what
  needs TensorFlow (retrain from the CLI and the page, the SavedModel backend, ``python -m train``)
  or Ray (``detect --ray``) says which extra to install, never a traceback;
- the Classifier tab of a daemon without TensorFlow says the same beside a greyed-out button.

The venv is built once, in a copy of the checkout's files (nothing is written into the checkout),
with pip's cache or PyPI: 40-190 s measured with a warm wheel cache (most of it pip asking the
index), more on a cold one. So the test is marked ``slow`` and ``venv``: ``make test`` runs it,
``make test-fast`` does not, and ``-m "not venv"`` leaves it out of any run.
"""

from __future__ import annotations

import configparser
import html
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from testkit.ports import free_port
from tests.daemon import BUNDLED_MODEL

REPO = Path(__file__).resolve().parent.parent
RUNTIME_LIMIT_MB = 700  # issue 22: the `make run` venv
CHECKOUT_FILES = ("setup.cfg", "pyproject.toml", "README.md", "requirements.lock", "config.example.yaml",
                  "raccoon_watch", "train", "models")
SETUPTOOLS_WARNINGS = ("absent from the `packages` configuration", "BuildBackendWarning",
                       "SetuptoolsDeprecationWarning", "_IncludePackageDataAbuse")
TRAIN_EXTRA = "-e '.[train]'"


def _package_data() -> dict[str, list[str]]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return {pkg.strip(): [p.strip() for p in value.replace("\n", ",").split(",") if p.strip()]
            for pkg, value in cfg["options.package_data"].items()}


def test_every_file_in_the_packages_is_declared_package_data() -> None:
    listed = subprocess.run(["git", "ls-files", "raccoon_watch"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    data = _package_data()
    missing = []
    for name in listed.stdout.splitlines():
        path = REPO / name
        if path.suffix == ".py" or not path.is_file():
            continue
        package = next(p for p in path.parents if (p / "__init__.py").is_file())
        dotted = ".".join(package.relative_to(REPO).parts)
        matched = {m for pattern in data.get(dotted, []) + data.get("*", []) for m in package.glob(pattern)}
        if path not in matched:
            missing.append(name)
    assert not missing, f"not in setup.cfg [options.package_data], so not in a wheel: {missing}"


def _runtime_venv(root: Path) -> tuple[Path, Path, str, float]:
    """(checkout copy, venv, pip's output, seconds): what ``make run`` does (``python -m venv``, pip
    upgraded, ``pip install -c requirements.lock -e .``), in a copy of the checkout's files."""
    src = root / "checkout"
    src.mkdir()
    for name in CHECKOUT_FILES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "runs", "work",
                                                                                  "saved_model", "*.egg-info"))
        elif (REPO / name).is_file():
            shutil.copy2(REPO / name, src / name)
    venv = src / ".venv"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    output = ""
    for argv in (["install", "-q", "--upgrade", "pip"], ["install", "-q", "-c", "requirements.lock", "-e", "."]):
        pip = subprocess.run([str(venv / "bin" / "pip"), *argv], capture_output=True, text=True, timeout=1200,
                             cwd=src, env=env)
        output += pip.stdout + pip.stderr
        assert pip.returncode == 0, output[-4000:]
    return src, venv, output, time.monotonic() - started


def _du_mb(path: Path) -> float:
    """Disk use of ``path`` in MiB, as ``du`` counts it (allocated blocks, each hard link once)."""
    seen, total = set(), 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total / 2**20


def _run(venv: Path, *argv: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``venv/bin/argv[0] argv[1:]``, run outside the checkout (its packages must not shadow the venv's)."""
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or venv)


def _json_lines(text: str) -> list[dict]:
    records = []
    for line in text.splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                pytest.fail(f"a line of the log is not JSON: {line[:300]!r}")
    return records


def _config(src: Path, tmp_path: Path, **override: object) -> Path:
    """The copy's config.example.yaml, storage under ``tmp_path``, with ``override``'s sections."""
    cfg = yaml.safe_load((src / "config.example.yaml").read_text())
    cfg["storage"]["path"] = str(tmp_path / "var")
    cfg.update(override)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.slow
@pytest.mark.venv
@pytest.mark.timeout(1500)
def test_a_runtime_only_venv_runs_everything_but_training(tmp_path: Path, shared_dir: Path, small_clip) -> None:
    """One venv (built once: under xdist, tests of a module may run on several workers), then
    each part in turn."""
    if not (BUNDLED_MODEL / "model.tflite").is_file():
        pytest.skip("no bundled model in models/raccoon")
    src, venv, output, seconds = _runtime_venv(tmp_path)
    _small_quiet_and_without_tensorflow(venv, output, seconds)
    _check_config_and_detect(src, venv, shared_dir)
    _what_needs_tensorflow_names_the_extra(src, venv, tmp_path / "retrain")
    _daemon_and_page(src, venv, tmp_path / "run", small_clip)


def _small_quiet_and_without_tensorflow(venv: Path, output: str, seconds: float) -> None:
    size = _du_mb(venv)
    print(f"runtime venv: {size:.0f} MiB, installed in {seconds:.0f} s")
    assert not [w for w in SETUPTOOLS_WARNINGS if w in output], output[-4000:]
    assert size <= RUNTIME_LIMIT_MB, f"the runtime venv takes {size:.0f} MiB"
    found = _run(venv, "python", "-c", "import importlib.util as u; print([m for m in ('tensorflow', 'keras', "
                 "'playwright', 'pytest', 'matplotlib', 'pycocotools', 'ray') if u.find_spec(m)])")
    assert found.stdout.strip() == "[]", found.stderr


def _check_config_and_detect(src: Path, venv: Path, shared_dir: Path) -> None:
    """As a new user runs them, from the checkout: the example config and the bundled model."""
    checked = _run(venv, "raccoon-watch", "check-config", "config.example.yaml", cwd=src)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    photo = shared_dir / "data" / "raccoon_dataset" / "images" / "raccoon-1.jpg"
    detect = _run(venv, "raccoon-watch", "detect", "--json", str(photo), cwd=src)
    assert detect.returncode == 0, detect.stderr
    [record] = _json_lines(detect.stdout)
    assert record["detections"] and record["detections"][0]["label"] == "raccoon"
    assert _json_lines(detect.stderr) == []  # not even LiteRT's INFO line

    # the SavedModel backend: exit 3 naming the extra that brings TensorFlow
    model = src / "models" / "with_saved_model"
    shutil.copytree(src / "models" / "raccoon", model)
    (model / "saved_model").mkdir()
    (model / "saved_model" / "saved_model.pb").write_bytes(b"not loaded: TensorFlow is missing first")
    tf = _run(venv, "raccoon-watch", "detect", "--json", "--backend", "tensorflow", "--model", str(model), str(photo))
    assert tf.returncode == 3 and "-e '.[cpu]'" in tf.stderr and "Traceback" not in tf.stderr, tf.stderr

    # an archive on Ray: the scale extra, named the same way
    archive = src / "archive"
    archive.mkdir()
    shutil.copy2(photo, archive / photo.name)
    ray = _run(venv, "raccoon-watch", "detect", str(archive), "--recursive", "--output", str(src / "archive.jsonl"),
               "--ray", cwd=src)
    assert ray.returncode != 0 and "[scale]" in ray.stderr and "Traceback" not in ray.stderr, ray.stderr


def _what_needs_tensorflow_names_the_extra(src: Path, venv: Path, tmp_path: Path) -> None:
    tmp_path.mkdir()
    retrain = _run(venv, "raccoon-watch", "retrain", "--config", str(_config(src, tmp_path)), cwd=src)
    assert retrain.returncode == 3, retrain.stdout + retrain.stderr
    assert TRAIN_EXTRA in retrain.stderr and "Traceback" not in retrain.stderr
    train = _run(venv, "python", "-m", "train", "all", cwd=src)
    assert train.returncode == 1 and TRAIN_EXTRA in train.stderr and "Traceback" not in train.stderr, train.stderr


def _daemon_and_page(src: Path, venv: Path, tmp_path: Path, small_clip) -> None:
    """``raccoon-watch run`` from the runtime venv: JSON log lines only, the page renders, and its
    Classifier tab says retraining needs the train extra; asked to retrain anyway, it answers 409
    with the same words."""
    tmp_path.mkdir()
    port = free_port()
    config = _config(src, tmp_path, cameras={"porch": {"source": str(small_clip.path), "loop": True, "detect_fps": 5,
                                                       "motion": {"enabled": False}}},
                     http={"enabled": True, "host": "127.0.0.1", "port": port},
                     logging={"format": "json", "level": "info"})
    proc = subprocess.Popen([str(venv / "bin" / "raccoon-watch"), "run", "--config", str(config)], cwd=src,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    s = requests.Session()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                models = s.get(url + "/models", timeout=5)
                break
            except requests.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "the daemon did not serve its page"
                time.sleep(0.3)
        text = html.unescape(models.text)
        assert models.status_code == 200 and "Retrain is not available" in text and TRAIN_EXTRA in text
        assert re.search(r'name="retrain" value="1" disabled>', text)
        assert s.get(url + "/", timeout=5).status_code == 200
        assert s.get(url + "/static/style.css", timeout=5).status_code == 200
        csrf = re.search(r'name="csrf" value="([^"]+)"', models.text).group(1)
        refused = s.post(url + "/models/retrain", data={"csrf": csrf}, timeout=10, allow_redirects=False)
        assert refused.status_code == 409 and TRAIN_EXTRA in html.unescape(refused.text)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out[-3000:]
    events = [r["event"] for r in _json_lines(out)]
    assert "daemon_started" in events and "daemon_stopped" in events


def test_the_classifier_tab_without_tensorflow_says_which_extra(tmp_path: Path, small_clip) -> None:
    """In-process (no venv): a RetrainJob that finds no TensorFlow greys out the button, says why, and
    refuses a retrain with the same words; the real check (``training_missing``) finds TensorFlow
    exactly when it is installed."""
    from raccoon_watch.service.health import HealthServer
    from raccoon_watch.learning.retrain_options import training_missing
    from raccoon_watch.web.pages import ReviewPages
    from raccoon_watch.web.retrain_job import RetrainJob
    from tests.test_review_page import _csrf, _message, _serve

    assert (training_missing() is None) == (importlib.util.find_spec("tensorflow") is not None)
    app, server = _serve(tmp_path, small_clip, {})
    started: list[int] = []
    job = RetrainJob([sys.executable, "-c", "raise SystemExit(0)"], tmp_path / "retrain.log", lambda: started.append(1),
                     unavailable=lambda: f"this install has no TensorFlow: run .venv/bin/pip install {TRAIN_EXTRA}")
    pages = HealthServer("127.0.0.1", 0, lambda: (True, {}), lambda: b"", ReviewPages(app, retrain=job))
    pages.start()
    url = f"http://127.0.0.1:{pages.port}"
    try:
        s = requests.Session()
        page = s.get(url + "/models", timeout=10).text
        text = html.unescape(page)
        assert "Retrain is not available: this install has no TensorFlow" in text and TRAIN_EXTRA in text
        assert re.search(r'name="retrain" value="1" disabled>', text)  # the button is there, greyed out
        refused = s.post(url + "/models/retrain", data={"csrf": _csrf(page)}, allow_redirects=False, timeout=10)
        assert refused.status_code == 409 and TRAIN_EXTRA in html.unescape(_message(refused))
        assert not job.state().running and job.state().started is None  # nothing was started
    finally:
        pages.stop()
        server.stop()
        app.stop_event.set()
        app.stop()
