"""No line that is not JSON in the JSON log: what C++ libraries print on fd 2 (LiteRT's
``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``, TensorFlow/absl start-up lines) is
routed into the structured log (raccoon_watch/support/nativelog.py), checked on the real commands.

Each case that sets up logging runs in a fresh interpreter: structlog's configuration and fd 2 are
process-wide.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from raccoon_watch.support.nativelog import parse_native_line, replay
from tests.daemon import BUNDLED_MODEL, Daemon, detector_section, write_config

REPO = Path(__file__).resolve().parent.parent
XNNPACK = "Created TensorFlow Lite XNNPACK delegate for CPU."


def _json_lines(text: str) -> list[dict]:
    """Every non-empty line of ``text`` as JSON; fails naming the first line that is not."""
    records = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            pytest.fail(f"a line of the log is not JSON: {line[:300]!r}")
    return records


@pytest.mark.parametrize(("line", "expected"), [
    (f"INFO: {XNNPACK}\n", (logging.DEBUG, XNNPACK, None)),
    ("WARNING: Attempting to use a delegate that only supports static-sized tensors", (logging.WARNING,
     "Attempting to use a delegate that only supports static-sized tensors", None)),
    ("ERROR: failed to apply XNNPACK delegate", (logging.ERROR, "failed to apply XNNPACK delegate", None)),
    ("I0000 00:00:1796676579.193729    4582 cpu_feature_guard.cc:227] This TensorFlow binary is optimized",
     (logging.DEBUG, "This TensorFlow binary is optimized", "cpu_feature_guard.cc:227")),
    ("E0000 00:00:1733435961.154264   12345 cuda_dnn.cc:8310] Unable to register cuDNN factory",
     (logging.ERROR, "Unable to register cuDNN factory", "cuda_dnn.cc:8310")),
    ('{"event": "camera_connected", "level": "info"}', None),  # a log line: not a C++ line
    ("Traceback (most recent call last):", None),
    ("INFO:root:a stdlib basicConfig line", None),
])
def test_native_lines_are_recognised(line: str, expected: tuple | None) -> None:
    assert parse_native_line(line) == expected


def test_replay_joins_continued_lines_and_passes_log_lines_through(caplog: pytest.LogCaptureFixture,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG, logger="raccoon_watch.native")
    replay(b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
           b"I0000 00:00:1796676579.193729    4582 cpu_feature_guard.cc:227] This TensorFlow binary is optimized.\n"
           b"To enable the following instructions: AVX2 FMA.\n"
           b'{"event": "camera_connected"}\n'
           b"E0000 00:00:1796676579.2   4582 cuda_dnn.cc:8310] Unable to register cuDNN factory\n", "tensorflow")
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "raccoon_watch.native"] == [
        (logging.DEBUG, "tensorflow: All log messages before absl::InitializeLog() is called are written to STDERR"),
        (logging.DEBUG, "tensorflow: This TensorFlow binary is optimized. To enable the following instructions: "
                        "AVX2 FMA. (cpu_feature_guard.cc:227)"),
        (logging.ERROR, "tensorflow: Unable to register cuDNN factory (cuda_dnn.cc:8310)"),
    ]
    assert '{"event": "camera_connected"}\n' in capsys.readouterr().err  # another thread's log line, as it was


ROUTE_SCRIPT = textwrap.dedent(
    """
    import os, sys, threading
    import structlog
    from raccoon_watch.support.nativelog import routed_native_stderr
    from raccoon_watch.support.logs import setup_logging

    setup_logging(sys.argv[1], "json")
    log = structlog.get_logger("t")
    with routed_native_stderr("litert"):
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\\n")
        t = threading.Thread(target=lambda: log.info("meanwhile", where="another thread"))
        t.start(); t.join()
        os.write(2, b"E0000 00:00:1733435961.154264   12345 cuda_dnn.cc:8310] Unable to register cuDNN factory\\n")
    log.info("after")
    """
)


@pytest.mark.parametrize("level", ["info", "debug"])
def test_routed_lines_become_log_records_and_log_lines_pass_through(level: str) -> None:
    out = subprocess.run([sys.executable, "-c", ROUTE_SCRIPT, level], capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    records = _json_lines(out.stderr)
    events = [r["event"] for r in records]
    assert "meanwhile" in events and events[-1] == "after"  # another thread's line came out, unchanged
    error = next(r for r in records if "cuDNN" in r["event"])
    assert error["level"] == "error" and error["logger"] == "raccoon_watch.native"
    assert error["event"] == "litert: Unable to register cuDNN factory (cuda_dnn.cc:8310)"
    xnnpack = [r for r in records if XNNPACK in r["event"]]
    assert xnnpack == [] if level == "info" else [{**xnnpack[0], "level": "debug"}]  # INFO lines: debug level


def test_detect_json_prints_only_json(shared_dir: Path) -> None:
    if not (BUNDLED_MODEL / "model.tflite").is_file():
        pytest.skip("no bundled model in models/raccoon")
    photo = shared_dir / "data" / "raccoon_dataset" / "images" / "raccoon-1.jpg"
    out = subprocess.run([sys.executable, "-m", "raccoon_watch", "detect", "--json", str(photo)],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert XNNPACK not in out.stderr
    records = _json_lines(out.stdout)
    assert len(records) == 1 and records[0]["detections"][0]["label"] == "raccoon"
    _json_lines(out.stderr)  # warnings, if any, are JSON too


@pytest.mark.slow
def test_every_line_the_daemon_prints_is_json(tmp_path: Path, small_clip, coco_model: Path) -> None:
    """The real ``raccoon-watch run`` at debug level (the most it prints), stdout and stderr
    together: every line is JSON, and LiteRT's XNNPACK line is one of them, as a debug record."""
    config = write_config(tmp_path / "config.yaml", {
        "cameras": {"porch": {"source": str(small_clip.path), "detect_fps": 5, "loop": True,
                              "motion": {"enabled": False}}},
        "detector": detector_section(coco_model),
        "storage": {"path": str(tmp_path / "var")},
        "logging": {"format": "json", "level": "debug"},
    })
    daemon = Daemon.start(config)
    try:
        daemon.wait_for("daemon_started", timeout=60)
        daemon.wait_for("camera_connected", timeout=30)
        time.sleep(1.0)
    finally:
        code, _ = daemon.terminate()
    assert code == 0, "".join(daemon.raw[-30:])
    records = _json_lines("".join(daemon.raw))
    assert len(records) == len([line for line in daemon.raw if line.strip()])
    routed = [r for r in records if r.get("logger") == "raccoon_watch.native"]
    assert [r["event"] for r in routed] == [f"litert: {XNNPACK}"] and routed[0]["level"] == "debug"
    first = next(i for i, r in enumerate(records) if r.get("event") == "detector_loaded")
    assert records.index(routed[0]) < first  # said while the first interpreter was built, logged there
