"""Health that reads true: each component says its own status and reason, told apart with real parts.

MQTT against a real mosquitto (tests/fixtures/mqtt.py) and the failures a user meets: a host that
does not resolve (a ``.invalid`` name, RFC 2606), a port nothing listens on, a host that does not
answer (a full accept queue: SYNs dropped), and a broker with a password file refusing bad
credentials. Pushover against the local fake (testkit/fake_pushover.py): a bad token, 500s, a name that
does not resolve, a refused port, a server that stalls. Cameras through the real capture thread. The
/healthz body that puts them together is checked as a table (pure) and on a real daemon in
tests/test_health_e2e.py.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from pathlib import Path

import pytest

from raccoon_watch.capture import CaptureThread
from raccoon_watch.config import CameraConfig, MqttConfig, PushoverConfig
from raccoon_watch.framequeue import FrameQueue
from raccoon_watch.service.health import health_report
from raccoon_watch.sinks.mqtt import MqttSink
from raccoon_watch.sinks.pushover import PushoverSink
from raccoon_watch.store import EventStore
from raccoon_watch.support.netdiag import describe_error, probe_tcp
from raccoon_watch.types import (
    CaptureSnapshot,
    PipelineStats,
    RouterSnapshot,
    SinkSnapshot,
    StorageSnapshot,
    WorkerSnapshot,
)
from testkit.fake_pushover import VALID_TOKEN, VALID_USER, FakePushover
from testkit.ports import free_port, unanswered_port
from tests.fixtures.mqtt import BROKER_PASSWORD, BROKER_USER
from tests.fixtures.pushover import make_event
from tests.waiting import wait_until

UNRESOLVABLE = "broker.raccoon-watch.invalid"  # RFC 2606: .invalid never resolves


@pytest.fixture()
def store(tmp_path: Path) -> EventStore:
    return EventStore(tmp_path / "var", outbox_max=100)


# --- netdiag: the words ------------------------------------------------------------------------------


def test_probe_tells_dns_refused_and_timeout_apart() -> None:
    assert probe_tcp(UNRESOLVABLE, 554, 2.0) == f"dns: name not resolved ({UNRESOLVABLE})"
    assert probe_tcp("127.0.0.1", free_port(), 2.0) == "connection refused"
    with unanswered_port() as port:
        assert probe_tcp("127.0.0.1", port, 0.5) == "timed out"


def test_describe_error_digs_out_the_socket_error_that_requests_wraps() -> None:
    import requests

    with pytest.raises(requests.ConnectionError) as dns:
        requests.get(f"http://{UNRESOLVABLE}/", timeout=2)
    assert describe_error(dns.value, UNRESOLVABLE) == f"dns: name not resolved ({UNRESOLVABLE})"
    with pytest.raises(requests.ConnectionError) as refused:
        requests.get(f"http://127.0.0.1:{free_port()}/", timeout=2)
    assert describe_error(refused.value) == "connection refused"


# --- MQTT, real broker ---------------------------------------------------------------------------------


def _mqtt(host: str, port: int, store: EventStore, **kw: object) -> MqttSink:
    cfg = MqttConfig.model_validate({"host": host, "port": port, "client_id": f"rw-health-{uuid.uuid4().hex[:6]}",
                                     "discovery": False, "stats_interval": 3600, **kw})
    return MqttSink(cfg, ["porch"], ["raccoon"], store, reconnect_max=1, poll_s=0.05)


def _mqtt_health_after(sink: MqttSink, timeout: float = 15.0) -> SinkSnapshot:
    sink.start()
    try:
        assert wait_until(lambda: sink.health().state != "connecting", timeout), sink.health()
        return sink.health()
    finally:
        sink.stop()


@pytest.mark.mqtt
def test_mqtt_ok_with_a_real_broker(mosquitto, store) -> None:  # type: ignore[no-untyped-def]
    broker = mosquitto(password=True)
    health = _mqtt_health_after(_mqtt(broker.host, broker.port, store, username=BROKER_USER, password=BROKER_PASSWORD))
    assert (health.state, health.reason) == ("ok", "connected")


@pytest.mark.mqtt
def test_mqtt_bad_credentials_say_auth_with_the_brokers_connack_reason(mosquitto, store) -> None:  # type: ignore[no-untyped-def]
    broker = mosquitto(password=True)
    health = _mqtt_health_after(_mqtt(broker.host, broker.port, store, username=BROKER_USER, password="wrong-pw!"))
    assert health.state == "failing"
    assert health.reason in ("auth: Not authorized", "auth: Bad user name or password"), health.reason
    anonymous = _mqtt_health_after(_mqtt(broker.host, broker.port, store))  # no user at all: refused too
    assert anonymous.reason in ("auth: Not authorized", "auth: Bad user name or password"), anonymous.reason


def test_mqtt_unresolvable_host_says_dns(store) -> None:  # type: ignore[no-untyped-def]
    health = _mqtt_health_after(_mqtt(UNRESOLVABLE, 1883, store))
    assert (health.state, health.reason) == ("failing", f"dns: name not resolved ({UNRESOLVABLE})")


def test_mqtt_refused_port_says_refused(store) -> None:  # type: ignore[no-untyped-def]
    health = _mqtt_health_after(_mqtt("127.0.0.1", free_port(), store))
    assert (health.state, health.reason) == ("failing", "connection refused")


def test_mqtt_host_that_does_not_answer_says_timed_out(store) -> None:  # type: ignore[no-untyped-def]
    with unanswered_port() as port:  # paho's connect timeout is 5 s
        health = _mqtt_health_after(_mqtt("127.0.0.1", port, store), timeout=15)
    assert (health.state, health.reason) == ("failing", "timed out")


@pytest.mark.mqtt
def test_mqtt_reason_follows_the_broker_going_away_and_coming_back(mosquitto, store) -> None:  # type: ignore[no-untyped-def]
    broker = mosquitto()
    sink = _mqtt(broker.host, broker.port, store)
    sink.start()
    try:
        assert wait_until(lambda: sink.health().state == "ok", 10)
        broker.stop()
        assert wait_until(lambda: sink.health().reason == "connection refused", 15), sink.health()
        broker.start()
        assert wait_until(lambda: sink.health().state == "ok", 15), sink.health()
    finally:
        sink.stop()


# --- Pushover, local fake ------------------------------------------------------------------------------


def _pushover(url: str, store: EventStore, **kw: object) -> PushoverSink:
    cfg = PushoverConfig.model_validate({"token": VALID_TOKEN, "user": VALID_USER, "api_url": url,
                                         "timeout_s": 0.5, **kw})
    return PushoverSink(cfg, store, backoff_base=0.05, backoff_max=0.2, poll_s=0.05)


def _pushover_health_after_one_push(sink: PushoverSink, until: str = "failing") -> SinkSnapshot:
    sink.start()
    try:
        assert (sink.health().state, sink.health().reason) == ("ok", "no push tried yet")  # nothing known wrong
        sink.publish(make_event())
        assert wait_until(lambda: sink.health().state == until, 10), sink.health()
        return sink.health()
    finally:
        sink.stop()


def test_pushover_bad_token_says_auth_and_not_retried(fake_pushover: FakePushover, store: EventStore) -> None:
    health = _pushover_health_after_one_push(_pushover(fake_pushover.url, store, token="a" * 30))
    assert health.reason == "auth: application token is invalid (HTTP 400; not retried)"


def test_pushover_500_says_server_error_then_ok_once_it_goes_out(fake_pushover: FakePushover,
                                                                  store: EventStore) -> None:
    fake_pushover.mode = "error500"
    sink = _pushover(fake_pushover.url, store)
    sink.start()
    try:
        sink.publish(make_event())
        assert wait_until(lambda: sink.health().state == "failing", 10)
        assert sink.health().reason == "server error: HTTP 500 (retrying)"
        fake_pushover.mode = "ok"
        assert wait_until(lambda: sink.health().state == "ok", 10), sink.health()
        assert sink.health().detail["sent"] == 1 and sink.health().reason == "the last push went out"
    finally:
        sink.stop()


def test_pushover_unresolvable_api_says_dns(store: EventStore) -> None:
    health = _pushover_health_after_one_push(_pushover("http://api.pushover.invalid/1/", store))
    assert health.reason == "dns: name not resolved (api.pushover.invalid) (retrying)"


def test_pushover_refused_port_says_refused(store: EventStore) -> None:
    health = _pushover_health_after_one_push(_pushover(f"http://127.0.0.1:{free_port()}/1/", store))
    assert health.reason == "connection refused (retrying)"


def test_pushover_stalled_server_says_timed_out(fake_pushover: FakePushover, store: EventStore) -> None:
    fake_pushover.mode = "stall"
    fake_pushover.stall_s = 1.0
    health = _pushover_health_after_one_push(_pushover(fake_pushover.url, store))
    assert health.reason == "timed out (retrying)"


# --- cameras: the capture thread says why it is down ---------------------------------------------------


def _camera_down_reason(source: str, **kw: object) -> CaptureSnapshot:
    cfg = CameraConfig.model_validate({"source": source, "open_timeout_s": 1, "read_timeout_s": 1,
                                       "reconnect_max_s": 1, **kw})
    stop = threading.Event()
    thread = CaptureThread("porch", cfg, FrameQueue(4), stop)
    thread.start()
    try:
        assert wait_until(lambda: thread.snapshot().state == "down", 15), thread.snapshot()
        return thread.snapshot()
    finally:
        stop.set()
        thread.join(5)


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("rtsp://user:pw@127.0.0.1:{port}/cam", "connection refused"),
        (f"rtsp://{UNRESOLVABLE}/cam", f"dns: name not resolved ({UNRESOLVABLE})"),
        ("/nonexistent/porch.mp4", "no such file"),
    ],
)
def test_a_down_camera_says_why_without_its_url(source: str, reason: str) -> None:
    snap = _camera_down_reason(source.format(port=free_port()))
    assert snap.reason == reason and "pw" not in snap.reason


def test_a_camera_whose_server_accepts_but_sends_no_stream_says_so() -> None:
    import socket

    with socket.socket() as server:  # accepts TCP, never speaks RTSP
        server.bind(("127.0.0.1", free_port()))
        server.listen(8)
        snap = _camera_down_reason(f"rtsp://127.0.0.1:{server.getsockname()[1]}/cam")
    assert snap.reason == "the server accepts connections, but the stream did not open"


# --- the /healthz body: every component its status and reason (pure) -----------------------------------

NOW = 1000.0
BASE = PipelineStats(
    mono=NOW, started_mono=NOW - 30.0,
    cameras=(CaptureSnapshot("porch", state="up", frames_read=10, last_frame_mono=NOW - 0.2),),
    workers=(WorkerSnapshot("detector-0"),),
    router=RouterSnapshot(enabled={"porch": True}),
    storage=StorageSnapshot(),
)


def _with_camera(**kw: object) -> PipelineStats:
    return dataclasses.replace(BASE, cameras=(dataclasses.replace(BASE.cameras[0], **kw),))


@pytest.mark.parametrize(
    ("stats", "kw", "status", "reason"),
    [
        (BASE, {}, "ok", "ok"),
        # the case: a dead camera said "degraded" with reason "ok"
        (_with_camera(state="down", reason="connection refused", last_frame_mono=NOW - 12.0), {}, "degraded",
         "camera porch: no frames for 12 s (connection refused)"),
        (_with_camera(state="down", reason="no such file", last_frame_mono=0.0), {}, "degraded",
         "camera porch: no frames for 30 s (no such file)"),  # never a frame: since start
        (_with_camera(state="connecting", last_frame_mono=0.0), {}, "degraded",
         "camera porch: no frames for 30 s (connecting)"),
        (_with_camera(state="stopped", reason="file ended (loop: false)"), {}, "degraded",
         "camera porch: stopped: file ended (loop: false)"),
        (_with_camera(state="up", last_frame_mono=NOW - 20), {"alive": False, "stalled": {"porch": "capture loop "
         "stalled for 20s (state up)"}}, "failing", "camera porch: capture loop stalled for 20s (state up)"),
        (BASE, {"alive": False, "detector_alive": False, "detector_reason": "detector-0 stuck in detect() for 41s"},
         "failing", "detector: detector-0 stuck in detect() for 41s"),
        (BASE, {"alive": False, "router": (False, "event router silent for 12s")}, "failing",
         "router: event router silent for 12s"),
        (dataclasses.replace(BASE, storage=StorageSnapshot(persistent=False)), {}, "degraded",
         "storage: event store is in memory only"),
        (dataclasses.replace(BASE, sinks={"mqtt": SinkSnapshot("failing", f"dns: name not resolved ({UNRESOLVABLE})")}),
         {}, "degraded", f"mqtt: dns: name not resolved ({UNRESOLVABLE})"),
        (dataclasses.replace(BASE, sinks={"pushover": SinkSnapshot("failing", "auth: application token is invalid "
                                                                   "(HTTP 400; not retried)")}),
         {}, "degraded", "pushover: auth: application token is invalid"),
    ],
)
def test_health_reason_names_what_is_not_ok(stats: PipelineStats, kw: dict, status: str, reason: str) -> None:
    alive = kw.pop("alive", True)
    detector_alive = kw.pop("detector_alive", True)
    ok, body = health_report(alive, "ok" if alive else "stuck", detector_alive, stats, **kw)
    assert ok is alive and body["status"] == status
    assert body["reason"].startswith(reason), body["reason"]
    assert (body["reason"] == "ok") is (status == "ok")  # never "ok" when not ok
    for entry in [*body["cameras"].values(), body["detector"], body["router"], body["storage"], *body["sinks"].values()]:
        assert entry["status"] in ("ok", "degraded", "failing") and entry["reason"]


def test_health_lists_every_component_failing_first() -> None:
    stats = dataclasses.replace(
        BASE,
        cameras=(CaptureSnapshot("porch", state="down", reason="connection refused", last_frame_mono=NOW - 5),
                 CaptureSnapshot("garden", state="up", last_frame_mono=NOW - 40)),
        sinks={"mqtt": SinkSnapshot("failing", "auth: Not authorized"), "pushover": SinkSnapshot()},
    )
    ok, body = health_report(False, "camera garden: capture loop stalled", True, stats,
                             stalled={"garden": "capture loop stalled for 40s (state up)"})
    assert not ok and body["status"] == "failing"
    assert body["problems"] == ["camera garden: capture loop stalled for 40s (state up)",
                                "camera porch: no frames for 5 s (connection refused)",
                                "mqtt: auth: Not authorized"]
    assert body["reason"] == "; ".join(body["problems"])
    assert body["cameras"]["garden"]["status"] == "failing" and body["cameras"]["porch"]["status"] == "degraded"
    assert body["sinks"]["mqtt"]["status"] == "degraded" and body["sinks"]["pushover"] == {
        "state": "ok", "reason": "ok", "retained_commands": {}, "status": "ok"}
