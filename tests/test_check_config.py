"""check-config checks the world it can see, through the real CLI as a subprocess.

Each case of issue 22 exits 2 with one line naming the key: a model folder that does not exist, a
file camera whose file is missing (or not a video), an HTTP port that is taken, a near-miss key
("did you mean `detect_fps`?"). ``run`` agrees on the codes it shares: a missing model folder is 2
for both, a model that is there but does not load is 3 for both, a taken port 2 for both. Live
sources and the MQTT broker only warn: ``run`` retries them.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from raccoon_watch.config import CameraConfig, Config, MotionConfig, TlsConfig, did_you_mean, section_at
from testkit.ports import free_port

REPO = Path(__file__).resolve().parent.parent


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raccoon_watch", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)


def _config(tmp_path: Path, cameras: dict[str, Any], **sections: Any) -> Path:
    data = {"cameras": cameras, "storage": {"path": str(tmp_path / "var")}, "logging": {"format": "json"},
            **sections}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture()
def clip(tmp_path: Path, small_clip) -> Path:  # type: ignore[no-untyped-def]
    path = tmp_path / "porch.mp4"
    shutil.copy(small_clip.path, path)
    return path


def _lines(stderr: str) -> list[str]:
    """The problem lines (JSON log lines and TFLite's own chatter left out)."""
    return [line for line in stderr.splitlines() if line.startswith("raccoon-watch: ")]


def test_a_good_config_is_ok_and_prints_the_effective_config(tmp_path: Path, clip: Path) -> None:
    cfg = _config(tmp_path, {"porch": {"source": str(clip)}}, http={"enabled": True, "port": free_port()})
    done = _cli("check-config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["cameras"]["porch"]["source"] == str(clip)
    assert "configuration OK (1 camera(s); model loads, 1 file camera(s) read, http.port free)" in done.stderr
    assert _lines(done.stderr) == [] and "Traceback" not in done.stderr
    assert not (tmp_path / "var").exists()  # checked, not started: no store, no lock file


def test_missing_model_folder_exits_2_naming_detector_model_and_run_agrees(tmp_path: Path, clip: Path) -> None:
    missing = tmp_path / "models" / "nope"
    cfg = _config(tmp_path, {"porch": {"source": str(clip)}}, detector={"model": str(missing)})
    check = _cli("check-config", str(cfg))
    assert check.returncode == 2, check.stderr
    assert _lines(check.stderr) == [f"raccoon-watch: detector.model: {missing}: not found (no such file or folder)"]
    run = _cli("run", "--config", str(cfg), timeout=60)
    assert run.returncode == 2, run.stderr
    assert f"raccoon-watch: detector.model: {missing}: not found" in run.stderr
    assert "camera_connected" not in run.stderr and "Traceback" not in run.stderr


def test_a_model_that_is_there_but_does_not_load_exits_3_in_both(tmp_path: Path, clip: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.tflite").write_bytes(b"not a model at all")
    (folder / "labelmap.txt").write_text("raccoon\n")
    cfg = _config(tmp_path, {"porch": {"source": str(clip)}}, detector={"model": str(folder)})
    check = _cli("check-config", str(cfg))
    run = _cli("run", "--config", str(cfg), timeout=60)
    for done in (check, run):
        assert done.returncode == 3, done.stderr
        assert "raccoon-watch: detector.model: the model cannot be used: " in done.stderr
        assert "not a TFLite model" in done.stderr and "Traceback" not in done.stderr


def test_missing_labelmap_exits_2_naming_detector_labelmap(tmp_path: Path, clip: Path) -> None:
    missing = tmp_path / "labels.txt"
    cfg = _config(tmp_path, {"porch": {"source": str(clip)}}, detector={"labelmap": str(missing)})
    done = _cli("check-config", str(cfg))
    assert done.returncode == 2, done.stderr
    assert _lines(done.stderr) == [f"raccoon-watch: detector.labelmap: {missing}: not found (no such file or folder)"]


def test_missing_file_source_exits_2_naming_the_camera(tmp_path: Path, clip: Path, corrupt_clip) -> None:  # type: ignore[no-untyped-def]
    gone = tmp_path / "gone.mp4"
    cfg = _config(tmp_path, {
        "porch": {"source": str(clip)},
        "garden": {"source": str(gone)},
        "shed": {"source": str(corrupt_clip.path)},
        "attic": {"source": str(tmp_path / "also-gone.mp4"), "enabled": False},  # off: not checked
    })
    done = _cli("check-config", str(cfg))
    assert done.returncode == 2, done.stderr
    assert _lines(done.stderr) == [
        f"raccoon-watch: cameras.garden.source: {gone}: no such file",
        f"raccoon-watch: cameras.shed.source: {corrupt_clip.path}: not a video OpenCV can open",
    ]
    assert f"{cfg}: 2 problem(s); exit 2" in done.stderr


def test_unreadable_file_source_exits_2(tmp_path: Path, clip: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads any file")
    clip.chmod(0)
    cfg = _config(tmp_path, {"porch": {"source": str(clip)}})
    done = _cli("check-config", str(cfg))
    assert done.returncode == 2 and f"cameras.porch.source: {clip}: permission denied" in done.stderr


def test_taken_port_exits_2_naming_http_port_and_run_agrees(tmp_path: Path, clip: Path) -> None:
    with socket.socket() as other:  # another program on the port
        other.bind(("127.0.0.1", free_port()))
        other.listen(1)
        port = other.getsockname()[1]
        cfg = _config(tmp_path, {"porch": {"source": str(clip)}}, http={"enabled": True, "port": port})
        check = _cli("check-config", str(cfg))
        run = _cli("run", "--config", str(cfg), timeout=60)
    assert check.returncode == 2, check.stderr
    assert _lines(check.stderr) == [f"raccoon-watch: http.port: {port} on 127.0.0.1 cannot be bound: "
                                    "Address already in use"]
    assert run.returncode == 2 and f"http.port {port} on 127.0.0.1 cannot be bound" in run.stderr


def test_near_miss_keys_exit_2_with_did_you_mean_at_every_level(tmp_path: Path) -> None:
    cfg = tmp_path / "typos.yaml"
    cfg.write_text(
        "cameras:\n"
        "  porch:\n"
        "    source: '0'\n"
        "    detect_fsp: 5\n"
        "    motion: {treshold: 30}\n"
        "detecter: {workers: 1}\n"
        "mqtt: {host: broker, usrname: me, tls: {ca_fle: /etc/ca.pem}}\n"
        "threshold: 0.6\n"
    )
    done = _cli("check-config", str(cfg))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    for line in ("cameras.porch.detect_fsp (line 4): unknown key; did you mean `detect_fps`?",
                 "cameras.porch.motion.treshold (line 5): unknown key; did you mean `threshold`?",
                 "detecter (line 6): unknown key; did you mean `detector`?",
                 "mqtt.usrname (line 7): unknown key; did you mean `username`?",
                 "mqtt.tls.ca_fle (line 7): unknown key; did you mean `ca_file`?",
                 "threshold (line 8): unknown key; `threshold` is a key of cameras.<name>, "
                 "cameras.<name>.motion, detector"):
        assert line in done.stderr, done.stderr
    run = _cli("run", "--config", str(cfg), timeout=60)
    assert run.returncode == 2 and "did you mean `detect_fps`?" in run.stderr


def test_live_sources_and_the_broker_only_warn(tmp_path: Path) -> None:
    refused = free_port()
    cfg = _config(tmp_path, {"street": {"source": f"rtsp://admin:hunter22@127.0.0.1:{refused}/live"},
                             "door": {"source": "rtsp://cam.raccoon-watch.invalid/live"}},
                  mqtt={"host": "broker.raccoon-watch.invalid"})
    done = _cli("check-config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert _lines(done.stderr) == [
        f"raccoon-watch: warning: cameras.street.source: rtsp://admin:***@127.0.0.1:{refused}/live: not reachable "
        "now (connection refused); run starts and retries it",
        "raccoon-watch: warning: cameras.door.source: rtsp://cam.raccoon-watch.invalid/live: not reachable now "
        "(dns: name not resolved (cam.raccoon-watch.invalid)); run starts and retries it",
        "raccoon-watch: warning: mqtt.host: broker.raccoon-watch.invalid:1883 not reachable now (dns: name not "
        "resolved (broker.raccoon-watch.invalid)); run starts and retries it",
    ]
    assert "hunter22" not in done.stdout + done.stderr


def test_missing_tls_files_exit_2(tmp_path: Path, clip: Path) -> None:
    cfg = _config(tmp_path, {"porch": {"source": str(clip)}},
                  mqtt={"host": "127.0.0.1", "port": free_port(), "tls": {"ca_file": str(tmp_path / "ca.pem")}})
    done = _cli("check-config", str(cfg))
    assert done.returncode == 2
    assert f"raccoon-watch: mqtt.tls.ca_file: {tmp_path / 'ca.pem'}: no such file" in _lines(done.stderr)


@pytest.mark.parametrize("args", [("--help",), ("run", "--help"), ("check-config", "--help")])
def test_help_documents_the_exit_codes(args: tuple[str, ...]) -> None:
    done = _cli(*args)
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "exit codes (run and check-config):" in text
    assert "2 configuration problem, the message names the key" in text and "http.port taken" in text
    assert "3 the model is there but cannot be used" in text


# --- did you mean (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("loc", "section"),
    [((), Config), (("cameras", "porch"), CameraConfig), (("cameras", "porch", "motion"), MotionConfig),
     (("mqtt", "tls"), TlsConfig), (("cameras",), None), (("nope",), None), (("cameras", "porch", "source"), None)],
)
def test_section_at(loc: tuple[str, ...], section: type | None) -> None:
    assert section_at(loc) is section


@pytest.mark.parametrize(
    ("loc", "hint"),
    [
        (("cameras", "porch", "detect_fsp"), "; did you mean `detect_fps`?"),
        (("cameras", "porch", "Detect_FPS"), "; did you mean `detect_fps`?"),
        (("events", "min_frame"), "; did you mean `min_frames`?"),
        (("pushover", "quiet_hours", "strat"), "; did you mean `start`?"),
        (("http", "passwd_hash"), "; did you mean `password_hash`?"),
        (("cameras", "porch", "workers"), "; `workers` is a key of detector, serve"),  # serve: its inference threads
        (("cameras", "porch", "zzz"), ""),
    ],
)
def test_did_you_mean(loc: tuple[str, ...], hint: str) -> None:
    assert did_you_mean(loc) == hint
