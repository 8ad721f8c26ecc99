"""Bad input (issue 5): fuzzed configs, corrupt frames, and secrets that must never be shown.

- ``parse_config`` on random text, on YAML-ish token soup and on random structures dumped to YAML
  raises nothing but ``ConfigError`` (hypothesis, bounded examples).
- Corrupt or odd frames (all-zero, 1x1, grey 2-D, 4-channel, float) are refused by the capture
  check, and even when one reaches a real DetectorWorker it neither kills the worker nor stops the
  next good frame.
- The real daemon with an RTSP password in the URL, an MQTT password and the Pushover token/user:
  none of them appears in its logs, in ``check-config``, in /metrics, /healthz, or any MQTT payload.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from raccoon_watch.capture import check_image
from raccoon_watch.config import ConfigError, DetectorConfig, parse_config
from raccoon_watch.framequeue import FrameQueue
from raccoon_watch.recognition.detectors import create_detector
from raccoon_watch.types import Frame
from raccoon_watch.workers import DetectorWorker
from testkit.fake_pushover import VALID_TOKEN, VALID_USER
from testkit.ports import free_port
from tests.daemon import REPO, Daemon, detector_section, write_config
from tests.fixtures.mqtt import BROKER_PASSWORD, BROKER_USER

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parses_or_config_error(text: str) -> None:
    with mock.patch.dict(os.environ, clear=False) as env:
        env.pop("CREDENTIALS_DIRECTORY", None)
        try:
            parse_config(text)
        except ConfigError as exc:
            assert str(exc), "a ConfigError must say what is wrong"


# --- config fuzzing -------------------------------------------------------------------------------

YAML_TOKENS = [
    "cameras:", "  porch:", "    source: rtsp://u:p@h/x", "source: 0", "detector:", "events:", "mqtt:", "pushover:",
    "storage:", "http:", "logging:", "motion:", "zones:", "- [0, 0]", "- [1, 1]", "detect_fps: ", "threshold: ",
    "port: ", "token: ", "user: ", "1", "-1", "0.5", "1e999", ".nan", ".inf", "null", "~", "true", "no", "0x1F",
    "'", '"', "[", "]", "{", "}", ",", ":", ": ", "- ", "? ", "&a ", "*a", "*b", "!!binary ", "!!python/object:os.system ",
    "!!str ", "!!int ", "!!map ", "!!set ", "<<: *a", "${RW_FUZZ_UNSET}", "${cred:x}", "${HOME:-/tmp}", "#", "|",
    ">", "%YAML 1.1", "---", "...", "\t", "\n", "\n  ", "\n    ", "\\u0000", "\u2028", "\ufeff",
]
yamlish = st.lists(st.sampled_from(YAML_TOKENS), max_size=40).map("".join)

SCHEMA_KEYS = [
    "cameras", "porch", "source", "detect_fps", "realtime", "loop", "motion", "enabled", "zones", "masks",
    "min_area", "max_area", "labels", "threshold", "detector", "model", "backend", "workers", "queue_size",
    "events", "min_frames", "window", "end_after", "cooldown", "storage", "path", "outbox_max", "mqtt", "host",
    "port", "password", "tls", "topic_prefix", "pushover", "token", "user", "api_url", "quiet_hours", "start",
    "end", "http", "logging", "level", "format",
]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20), st.sampled_from(["rtsp://a:b@c/d", "0", "/dev/video0", "${RW_FUZZ_UNSET}", "12:00", "auto"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(SCHEMA_KEYS), st.text(max_size=8), st.integers()), inner, max_size=4),
    ),
    max_leaves=25,
)
structures = st.dictionaries(st.sampled_from(SCHEMA_KEYS), values, max_size=6)


@FUZZ
@given(st.text(max_size=300))
@example("? [a, b]\n: c\n")  # a list as a mapping key (was TypeError: unhashable type)
@example("cameras: &c {x: *c}\n")  # a recursive alias (was RecursionError)
@example("!!python/object:os.system ls\n")  # an unsafe tag (was yaml ConstructorError)
@example("a: " + "[" * 600 + "]" * 600)  # nesting deeper than the walker's recursion (was RecursionError)
def test_random_text_gives_config_error_or_config(text):
    _parses_or_config_error(text)


@FUZZ
@given(yamlish)
def test_yaml_token_soup_gives_config_error_or_config(text):
    _parses_or_config_error(text)


@FUZZ
@given(structures)
def test_random_structures_give_config_error_or_config(data):
    _parses_or_config_error(yaml.safe_dump(data, allow_unicode=True))


def test_alias_bomb_is_refused_quickly():
    layers = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcdef", "bcdefg"):
        layers.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="runaway"):
        parse_config("\n".join(layers) + "\n")
    assert time.monotonic() - t0 < 10.0  # 10**7 values would take minutes and gigabytes


# --- corrupt and odd frames -----------------------------------------------------------------------

GOOD = np.full((240, 320, 3), 90, np.uint8)
ODD_FRAMES = {
    "all_zero": np.zeros((240, 320, 3), np.uint8),
    "one_pixel": np.zeros((1, 1, 3), np.uint8),
    "grey_2d": np.full((240, 320), 128, np.uint8),
    "four_channel": np.full((240, 320, 4), 128, np.uint8),
    "float64": np.random.default_rng(0).random((240, 320, 3)),
    "float32_huge": np.full((240, 320, 3), 1e30, np.float32),
    "empty": np.zeros((0, 0, 3), np.uint8),
}
REFUSED_BY_CAPTURE = set(ODD_FRAMES) - {"all_zero"}  # an all-black frame is a valid (dark) frame


@pytest.mark.parametrize("name", sorted(ODD_FRAMES))
def test_capture_refuses_unusable_frames(name):
    problem = check_image(ODD_FRAMES[name])
    assert (problem is not None) == (name in REFUSED_BY_CAPTURE), problem


@pytest.fixture(scope="module")
def worker_parts(coco_model):
    section = detector_section(coco_model)
    cfg = DetectorConfig(model=Path(section["model"]), labels=section["labels"], workers=1)
    frames, results, stop = FrameQueue(4), queue.Queue(maxsize=64), threading.Event()
    worker = DetectorWorker(0, lambda: create_detector(cfg), frames, results, stop)
    worker.start()
    yield worker, frames, results
    stop.set()
    worker.join(timeout=5)


@pytest.mark.parametrize("name", sorted(ODD_FRAMES))
def test_odd_frame_does_not_stop_a_detector_worker(name, worker_parts):
    worker, frames, results = worker_parts
    errors_before, frames_before = worker.stats.errors, worker.stats.frames
    frames.put(Frame(camera="odd", seq=1, ts=time.time(), mono=time.monotonic(), image=ODD_FRAMES[name]))
    frames.put(Frame(camera="good", seq=2, ts=time.time(), mono=time.monotonic(), image=GOOD))
    deadline = time.monotonic() + 30
    got = []
    while time.monotonic() < deadline and not any(r.frame.camera == "good" for r in got):
        try:
            got.append(results.get(timeout=0.5))
        except queue.Empty:
            pass
    assert worker.is_alive()
    assert any(r.frame.camera == "good" for r in got), "the good frame after the odd one was not processed"
    odd_done = any(r.frame.camera == "odd" for r in got)
    assert odd_done or worker.stats.errors == errors_before + 1, "an odd frame must be processed or counted as an error"
    assert worker.stats.frames >= frames_before + 1


# --- secrets ----------------------------------------------------------------------------------------

RTSP_PASSWORD = "rtsp-Pa55word-9x7"


@pytest.mark.slow
def test_secrets_never_leak(tmp_path, raccoon_clip_h264, rtsp_server, coco_model, mosquitto, recorder, fake_pushover):
    server = rtsp_server(raccoon_clip_h264)
    broker = mosquitto(password=True)
    rec = recorder(broker, "#", username=BROKER_USER, password=BROKER_PASSWORD)
    port = free_port()
    url = server.url.replace("rtsp://", f"rtsp://admin:{RTSP_PASSWORD}@")
    cfg = write_config(tmp_path / "config.yaml", {
        "cameras": {"porch": {"source": url, "detect_fps": 5, "motion": {"enabled": False}}},
        "detector": detector_section(coco_model),
        "events": {"min_frames": 3, "window": 5, "end_after": 2.0, "cooldown": 60},
        "storage": {"path": str(tmp_path / "var")},
        "mqtt": {"host": broker.host, "port": broker.port, "username": BROKER_USER, "password": BROKER_PASSWORD,
                 "topic_prefix": "rw", "stats_interval": 2},
        "pushover": {"token": VALID_TOKEN, "user": VALID_USER, "api_url": fake_pushover.url, "timeout_s": 2},
        "http": {"enabled": True, "port": port},
        "logging": {"format": "json", "level": "debug"},
    })
    secrets = [RTSP_PASSWORD, BROKER_PASSWORD, VALID_TOKEN, VALID_USER]
    daemon = Daemon.start(cfg)
    try:
        daemon.wait_for("event_started", timeout=90)
        fake_pushover.wait_for(1, timeout=30)
        rec.wait(lambda ms: any(m.topic == "rw/events" for m in ms), timeout=20)
        rec.wait(lambda ms: any(m.topic.startswith("rw/") and m.topic.endswith("stats") for m in ms), timeout=20)
        bodies = {path: urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).read().decode()
                  for path in ("/metrics", "/healthz")}
    finally:
        code, _ = daemon.terminate()
    assert code == 0
    assert fake_pushover.ok()[0].fields["token"] == VALID_TOKEN  # the secrets were really in use
    check = subprocess.run([sys.executable, "-m", "raccoon_watch", "check-config", str(cfg)], cwd=REPO,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    places = {
        "daemon output": "".join(daemon.raw),
        "check-config": check.stdout + check.stderr,
        **bodies,
        "mqtt payloads": "\n".join(m.payload.decode("utf-8", "replace") + " " + m.topic for m in rec.messages),
    }
    assert len(rec.messages) > 3 and "porch" in places["check-config"]
    for where, text in places.items():
        for secret in secrets:
            assert secret not in text, f"{secret[:4]}... leaked into {where}"
