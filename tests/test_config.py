"""Config: strict validation with the key (and line) named, secrets substituted and masked."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from raccoon_watch.config import ConfigError, effective_config, load_config, parse_config, redact_url

REPO = Path(__file__).resolve().parent.parent
MIN = "cameras:\n  front: {source: '0'}\n"


def test_example_config_is_valid():
    cfg = load_config(REPO / "config.example.yaml")
    assert "front_door" in cfg.cameras
    assert cfg.events.min_frames == 3 and cfg.events.window == 5


def test_defaults_follow_the_documented_shape():
    cfg = parse_config(MIN)
    cam = cfg.cameras["front"]
    assert cam.detect_fps == 5.0
    assert cfg.detector.backend == "auto" and cfg.detector.labels == ["raccoon"]
    assert (cfg.events.min_frames, cfg.events.window, cfg.events.end_after, cfg.events.cooldown) == (3, 5, 10.0, 300.0)
    assert cfg.mqtt is None and cfg.pushover is None and cfg.http.host == "127.0.0.1"


def test_visit_scoring_defaults_are_the_visit_params_defaults():
    from raccoon_watch.app import visit_params
    from raccoon_watch.visits import VisitParams

    assert visit_params(parse_config(MIN)) == VisitParams()
    assert visit_params(parse_config(MIN + "events: {score_window: 1, score_min_frames: 1, score_match_iou: 0.3}\n")) \
        == VisitParams(window=1, min_frames=1, match_iou=0.3)
    example = load_config(REPO / "config.example.yaml").events
    assert (example.score_window, example.score_min_frames, example.score_match_iou) == (10, 3, 0.1)


@pytest.mark.parametrize(
    "text, names",
    [
        ("", ["empty"]),
        ("cameras: [", ["not valid YAML"]),
        ("- a\n- b\n", ["top level must be a mapping"]),
        ("detector: {}\n", ["cameras", "required"]),
        (MIN + "detectr: {}\n", ["detectr", "unknown key", "line 3"]),
        (MIN + "detector:\n  treshold: 0.5\n", ["detector.treshold", "unknown key", "line 4"]),
        (MIN + "detector: {threshold: 1.5}\n", ["detector.threshold", "line 3"]),
        (MIN + "detector: {backend: cuda}\n", ["detector.backend"]),
        (MIN + "detector: {workers: 0}\n", ["detector.workers"]),
        (MIN + "events: {min_frames: 6, window: 5}\n", ["events", "min_frames (6) cannot exceed window (5)"]),
        (MIN + "events: {score_min_frames: 4, score_window: 3}\n",
         ["events", "score_min_frames (4) cannot exceed score_window (3)"]),
        (MIN + "events: {score_window: 0}\n", ["events.score_window", "line 3"]),
        (MIN + "events: {score_window: 101}\n", ["events.score_window"]),
        (MIN + "events: {score_match_iou: 1.5}\n", ["events.score_match_iou"]),
        ("cameras:\n  front: {source: '0', detect_fps: -1}\n", ["cameras.front.detect_fps", "line 2"]),
        ("cameras:\n  Front Door: {source: '0'}\n", ["cameras", "lowercase"]),
        ("cameras:\n  front: {}\n", ["cameras.front.source", "required"]),
        ("cameras:\n  front: {source: '0', zones: [[[0, 0], [2, 0], [1, 1]]]}\n", ["cameras.front.zones", "normalised"]),
        ("cameras:\n  front: {source: '0', min_area: 0.5, max_area: 0.1}\n", ["min_area"]),
        (MIN + "mqtt: {port: 70000}\n", ["mqtt.port"]),
        (MIN + "mqtt: {topic_prefix: 'a/#'}\n", ["mqtt.topic_prefix"]),
        (MIN + "pushover: {token: abc}\n", ["pushover.user", "required"]),
        (MIN + "pushover: {token: a, user: b, api_url: 'ftp://x'}\n", ["pushover.api_url"]),
        (MIN + "pushover: {token: a, user: b, quiet_hours: {start: '25:00', end: '07:00'}}\n", ["quiet_hours.start"]),
        (MIN + "cameras: {}\n", ["duplicate key"]),
        (MIN + "pushover: {token: '${RW_TEST_UNSET_VAR}', user: b}\n", ["pushover.token", "RW_TEST_UNSET_VAR is not set"]),
        # booleans are not numbers, and infinities/NaN are not durations or scores
        (MIN + "detector: {threshold: yes}\n", ["detector.threshold", "line 3", "not a boolean"]),
        (MIN + "detector: {workers: true}\n", ["detector.workers", "not a boolean"]),
        (MIN + "events: {end_after: .inf}\n", ["events.end_after", "finite"]),
        (MIN + "events: {cooldown: .nan}\n", ["events.cooldown", "finite"]),
        ("cameras:\n  front: {source: '0', threshold: false}\n", ["cameras.front.threshold", "not a boolean"]),
        # labels become MQTT topic levels
        (MIN + "detector: {labels: ['a/b']}\n", ["detector.labels", "topic"]),
        (MIN + "detector: {labels: ['#']}\n", ["detector.labels"]),
        ("cameras:\n  front: {source: '0', labels: ['+']}\n", ["cameras.front.labels"]),
        (MIN + "pushover: {token: a, user: b, labels: ['']}\n", ["pushover.labels"]),
    ],
)
def test_bad_config_names_the_problem(text, names):
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.yaml")
    for name in names:
        assert name in str(info.value)


def test_env_and_credential_substitution(monkeypatch, tmp_path):
    (tmp_path / "pushover_token").write_text("tok-from-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("RW_USER", "user-from-env")
    monkeypatch.setenv("RW_CAM_PW", "s3cret")
    cfg = parse_config(
        "cameras:\n  front: {source: 'rtsp://admin:${RW_CAM_PW}@10.0.0.2/s1'}\n"
        "pushover: {token: '${cred:pushover_token}', user: '${RW_USER}'}\n"
        "storage: {path: '${RW_UNSET_DIR:-/tmp/rw}'}\n"
    )
    assert cfg.pushover.token.get_secret_value() == "tok-from-credential"
    assert cfg.pushover.user.get_secret_value() == "user-from-env"
    assert cfg.cameras["front"].source == "rtsp://admin:s3cret@10.0.0.2/s1"
    assert str(cfg.storage.path) == "/tmp/rw"
    shown = json.dumps(effective_config(cfg))
    assert "s3cret" not in shown and "tok-from-credential" not in shown and "user-from-env" not in shown
    assert "rtsp://admin:***@10.0.0.2/s1" in shown


def test_missing_credential_names_it(monkeypatch, tmp_path):
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(ConfigError, match="pushover.token.*'nope'"):
        parse_config(MIN + "pushover: {token: '${cred:nope}', user: u}\n")


@pytest.mark.parametrize(
    "url, shown",
    [
        ("rtsp://user:pass@192.168.1.20:554/stream1", "rtsp://user:***@192.168.1.20:554/stream1"),
        ("http://a:b@cam/x.mjpg", "http://a:***@cam/x.mjpg"),
        ("rtsp://192.168.1.20/stream1", "rtsp://192.168.1.20/stream1"),
        ("/dev/video0", "/dev/video0"),
        # FFmpeg splits the authority at its LAST '@': everything before it is credentials
        ("rtsp://admin:p@ssW0rdCam2@host/cam", "rtsp://admin:***@host/cam"),
        ("rtsp://admin:a@b@c@10.0.0.2:554/s?x=1@2", "rtsp://admin:***@10.0.0.2:554/s?x=1@2"),
        ("camera rtsp://u:pw@h/a and http://v:pw2@k/b", "camera rtsp://u:***@h/a and http://v:***@k/b"),
        ("RTSP://U:Secret@H/", "RTSP://U:***@H/"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


@pytest.mark.parametrize("text", ["a" * 200_000, "ab+" * 70_000, "a://" * 50_000, "x:" + "y" * 200_000])
def test_redact_url_is_linear_on_long_input(text):
    # the old pattern took ~2 s on 16,000 letters (quadratic); 200 KB must be a matter of milliseconds
    t0 = time.monotonic()
    redact_url(text)
    assert time.monotonic() - t0 < 1.0


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raccoon_watch", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


def test_check_config_cli_masks_secrets_and_exits_2_on_bad_key(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(MIN.replace("'0'", "'rtsp://u:hunter22@h/s'") + "pushover: {token: tokentoken, user: useruser}\n")
    ok = _cli("check-config", str(good))
    assert ok.returncode == 0, ok.stderr
    assert "hunter22" not in ok.stdout and "tokentoken" not in ok.stdout
    assert json.loads(ok.stdout)["cameras"]["front"]["source"] == "rtsp://u:***@h/s"
    bad = tmp_path / "bad.yaml"
    bad.write_text(MIN + "events:\n  min_frame: 3\n")
    res = _cli("check-config", str(bad))
    assert res.returncode == 2
    assert "events.min_frame" in res.stderr and "line 4" in res.stderr
    assert "Traceback" not in res.stderr


def test_run_with_bad_config_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cameras:\n  front: {source: '0', detect_fps: fast}\n")
    res = _cli("run", "--config", str(bad))
    assert res.returncode == 2
    assert "cameras.front.detect_fps" in res.stderr and "Traceback" not in res.stderr
