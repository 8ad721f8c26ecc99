"""Liveness verdict (table), /healthz and /metrics on a real HTTP server, metrics, reload plan."""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest

from raccoon_watch.app import plan_reload
from raccoon_watch.config import parse_config
from raccoon_watch.service import liveness
from raccoon_watch.service.health import MAX_CONNECTIONS, HealthServer, health_report
from raccoon_watch.service.liveness import CaptureBeat, LivenessLimits, PipelineSnapshot, RouterBeat, WorkerBeat
from raccoon_watch.service.notify import status_line
from raccoon_watch.support.metrics import Metrics
from raccoon_watch.types import (
    CaptureSnapshot,
    DeliveryCounts,
    Event,
    EventKind,
    PipelineStats,
    QueueSnapshot,
    RouterSnapshot,
    Severity,
    StorageSnapshot,
    WorkerSnapshot,
)

NOW = 1000.0
LIMITS = LivenessLimits(heartbeat_s=10, detect_s=30, model_load_s=300)


def worker(**kw) -> WorkerBeat:
    base = dict(name="detector-0", alive=True, started=NOW - 100, loaded=True, heartbeat=NOW - 0.3, busy_since=None)
    return WorkerBeat(**{**base, **kw})


def camera(**kw) -> CaptureBeat:
    base = dict(name="porch", alive=True, state="up", progress=NOW - 0.1, grace_s=15.0)
    return CaptureBeat(**{**base, **kw})


def snap(workers=None, router=RouterBeat(True, NOW - 0.2), cameras=None) -> PipelineSnapshot:
    return PipelineSnapshot(
        workers=tuple(workers if workers is not None else [worker()]),
        router=router,
        cameras=tuple(cameras if cameras is not None else [camera()]),
    )


@pytest.mark.parametrize(
    ("snapshot", "alive", "reason_has"),
    [
        (snap(), True, "ok"),
        (snap(workers=[]), False, "no detector workers"),
        (snap(workers=[worker(alive=False)]), False, "detector-0 thread is not running"),
        (snap(workers=[worker(heartbeat=NOW - 11)]), False, "detector-0 silent"),
        (snap(workers=[worker(heartbeat=NOW - 20, busy_since=NOW - 20)]), True, "ok"),  # a slow detect
        (snap(workers=[worker(heartbeat=NOW - 31, busy_since=NOW - 31)]), False, "stuck in detect()"),
        (snap(workers=[worker(), worker(name="detector-1", busy_since=NOW - 45)]), False, "detector-1 stuck"),
        (snap(workers=[worker(loaded=False, heartbeat=NOW - 100)]), True, "ok"),  # still loading
        (snap(workers=[worker(loaded=False, started=NOW - 301)]), False, "still loading"),
        (snap(router=None), False, "router thread is not running"),
        (snap(router=RouterBeat(False, NOW)), False, "router thread is not running"),
        (snap(router=RouterBeat(True, NOW - 12)), False, "router silent"),
        (snap(cameras=[camera(alive=False)]), False, "camera porch: capture thread is not running"),
        (snap(cameras=[camera(progress=NOW - 16)]), False, "camera porch: capture loop stalled"),
        # down and retrying: progress every back-off turn, inside its (longer) grace: alive
        (snap(cameras=[camera(state="down", progress=NOW - 40, grace_s=50)]), True, "ok"),
        (snap(cameras=[camera(state="connecting", progress=NOW - 51, grace_s=50)]), False, "stalled"),
        # a file source read once has ended: its thread is gone on purpose
        (snap(cameras=[camera(state="stopped", alive=False, progress=NOW - 500)]), True, "ok"),
        (snap(cameras=[]), True, "ok"),
    ],
)
def test_pipeline_alive(snapshot: PipelineSnapshot, alive: bool, reason_has: str) -> None:
    ok, reason = liveness.pipeline_alive(snapshot, NOW, LIMITS)
    assert (ok, reason_has in reason) == (alive, True), reason


def test_progress_tracker_sees_changes_only() -> None:
    tracker = liveness.ProgressTracker()
    assert tracker.observe("porch", ("up", 1, 0, 0), 10.0) == 10.0
    assert tracker.observe("porch", ("up", 1, 0, 0), 25.0) == 10.0  # nothing moved since 10 s
    assert tracker.observe("porch", ("up", 2, 0, 0), 26.0) == 26.0


def test_capture_grace() -> None:
    cam = SimpleNamespace(open_timeout_s=5, read_timeout_s=5, reconnect_max_s=30)
    assert liveness.capture_grace_s(cam, "up") == 15.0
    assert liveness.capture_grace_s(cam, "down") == 50.0


# --- /healthz body ---------------------------------------------------------------------------------

STATS = PipelineStats(
    mono=NOW,
    started_mono=NOW - 12.0,
    cameras=(
        CaptureSnapshot("porch", state="up", frames_read=120, frames_queued=60, frames_dropped=1, reconnects=2,
                        last_frame_mono=NOW - 0.1),
        CaptureSnapshot("garden", state="down"),
    ),
    workers=(WorkerSnapshot("detector-0", frames=58, last_inference_ms=31.0),),
    router=RouterSnapshot(events_emitted=2, processed={"porch": 57, "garden": 0},
                          enabled={"porch": True, "garden": True}),
    queue=QueueSnapshot(depth=1, dropped=3),
    deliveries={"mqtt": DeliveryCounts(pending=4, failed=1, dropped=0)},
)


def with_states(stats: PipelineStats, **states: str) -> PipelineStats:
    """``stats`` with some cameras in another state."""
    return dataclasses.replace(stats, cameras=tuple(
        dataclasses.replace(cam, state=states.get(cam.camera, cam.state)) for cam in stats.cameras))


@pytest.mark.parametrize(
    ("alive", "cameras_up", "status"),
    [(True, ("up", "up"), "ok"), (True, ("up", "down"), "degraded"), (False, ("up", "up"), "failing")],
)
def test_health_report_status(alive: bool, cameras_up: tuple[str, str], status: str) -> None:
    stats = with_states(STATS, **dict(zip(("porch", "garden"), cameras_up)))
    ok, body = health_report(alive, "ok" if alive else "detector-0 stuck", alive, stats)
    assert ok is alive and body["status"] == status
    assert body["cameras"]["porch"]["last_frame_age_s"] == 0.1


@pytest.mark.parametrize(
    ("storage", "status", "problem"),
    [
        ({"persistent": True, "recovered": None}, "ok", None),
        ({"persistent": True, "recovered": {"moved_to": "/v/events.db.corrupt-1"}}, "degraded", "damaged and replaced"),
        ({"persistent": False, "recovered": None}, "degraded", "in memory only"),
        ({"vanished": {"reason": "/v/events.db is gone", "restored": True}}, "degraded", "re-created"),
        ({"vanished": {"reason": "/v/events.db is gone", "restored": False}}, "degraded", "could not re-create"),
        ({"held_media": 3}, "degraded", "3 snapshot/frame files wait"),
    ],
)
def test_health_report_storage(storage: dict, status: str, problem: str | None) -> None:
    stats = dataclasses.replace(with_states(STATS, garden="up"), storage=StorageSnapshot(**storage))
    _, body = health_report(True, "ok", True, stats)
    expected = {"persistent": True, "recovered": None, "vanished": None, "held_media": 0, **storage}
    assert body["status"] == status and {k: body["storage"][k] for k in expected} == expected
    assert body["storage"]["status"] == status and (problem or "on disk") in body["storage"]["reason"]
    assert (problem is None and body["problems"] == []) or problem in " ".join(body["problems"])


# --- the real HTTP server --------------------------------------------------------------------------

def _get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


@pytest.fixture
def served():
    """A HealthServer on 127.0.0.1 (free port) whose verdict the test can flip."""
    state = {"alive": True}
    metrics = Metrics(lambda: STATS)

    def health():
        return health_report(state["alive"], "ok" if state["alive"] else "event router silent for 12s",
                             True, STATS)

    server = HealthServer("127.0.0.1", 0, health, metrics.render)
    server.start()
    yield server, state, metrics
    server.stop()


def test_healthz_200_then_503(served) -> None:
    server, state, _ = served
    code, ctype, body = _get(server.port, "/healthz")
    assert code == 200 and ctype == "application/json"
    data = json.loads(body)
    assert data["status"] == "degraded"  # garden is down, the pipeline is alive
    assert data["cameras"]["garden"] == {"state": "down", "up": False, "last_frame_age_s": None, "reconnects": 0,
                                         "detect_enabled": True, "status": "degraded",
                                         "reason": "no frames for 12 s (down)"}  # never a frame: since start
    assert data["reason"] == "camera garden: no frames for 12 s (down)" and data["problems"] == [data["reason"]]
    assert data["detector"]["alive"] is True and data["detector"]["status"] == "ok"
    assert data["http"] == {"status": "ok", "reason": f"listening on 127.0.0.1:{server.port}", "review_page": False}
    state["alive"] = False
    code, _, body = _get(server.port, "/healthz")
    failing = json.loads(body)
    assert code == 503 and failing["status"] == "failing"
    assert failing["reason"] == "event router silent for 12s; camera garden: no frames for 12 s (down)"
    assert _get(server.port, "/nope")[0] == 404


def test_metrics_endpoint(served) -> None:
    server, _, metrics = served
    metrics.on_inference(31.0, 1)
    metrics.on_event(Event("e1", EventKind.START, "porch", "raccoon", 1.0, None, 0.9, 0.9, (0.1, 0.1, 0.5, 0.5)))
    for kind in (EventKind.START, EventKind.END):  # a detection: counted apart from the alerts
        metrics.on_event(Event("e2", kind, "porch", "raccoon", 2.0, None, 0.6, 0.6, (0.1, 0.1, 0.5, 0.5),
                               severity=Severity.DETECTION))
    code, ctype, body = _get(server.port, "/metrics")
    assert code == 200 and ctype.startswith("text/plain")
    text = body.decode()
    for line in [
        'raccoon_watch_camera_frames_read_total{camera="porch"} 120.0',
        'raccoon_watch_camera_frames_dropped_total{camera="porch"} 1.0',
        'raccoon_watch_camera_reconnects_total{camera="porch"} 2.0',
        'raccoon_watch_camera_up{camera="garden"} 0.0',
        'raccoon_watch_camera_frames_processed_total{camera="porch"} 57.0',
        "raccoon_watch_queue_depth 1.0",
        "raccoon_watch_queue_dropped_total 3.0",
        'raccoon_watch_events_total{camera="porch",kind="new",label="raccoon",severity="alert"} 1.0',
        'raccoon_watch_events_total{camera="porch",kind="new",label="raccoon",severity="detection"} 1.0',
        'raccoon_watch_events_total{camera="porch",kind="end",label="raccoon",severity="detection"} 1.0',
        'raccoon_watch_deliveries_pending{sink="mqtt"} 4.0',
        'raccoon_watch_deliveries_failed{sink="mqtt"} 1.0',
        "raccoon_watch_inference_seconds_count 1.0",
        'raccoon_watch_inference_seconds_bucket{le="0.035"} 1.0',
    ]:
        assert line in text, line
    assert "rtsp://" not in text and "python_gc" not in text  # private registry, no URLs


def test_server_stops_and_frees_the_port() -> None:
    server = HealthServer("127.0.0.1", 0, lambda: (True, {}), lambda: b"")
    server.start()
    port = server.port
    server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
    again = HealthServer("127.0.0.1", port, lambda: (True, {}), lambda: b"")
    again.start()  # rebinding the same port works: the socket was closed
    again.stop()


def test_a_failing_report_is_a_500_not_a_dead_server() -> None:
    def broken():
        raise RuntimeError("bug")

    server = HealthServer("127.0.0.1", 0, broken, lambda: b"x")
    server.start()
    try:
        assert _get(server.port, "/healthz")[0] == 500
        assert _get(server.port, "/metrics")[0] == 200
    finally:
        server.stop()


def _timed_healthz(port: int) -> tuple[int, float]:
    t0 = time.monotonic()
    code = _get(port, "/healthz")[0]
    return code, time.monotonic() - t0


def test_half_open_flood_holds_bounded_threads_and_healthz_still_answers(served) -> None:
    server, _, _ = served
    baseline = threading.active_count()
    socks = []
    try:
        for _ in range(3 * MAX_CONNECTIONS):  # slowloris: connect, start a request line, never finish it
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.sendall(b"GET /healthz?")
            socks.append(s)
        time.sleep(0.5)
        threads = threading.active_count() - baseline
        code, took = _timed_healthz(server.port)
    finally:
        for s in socks:
            s.close()
    assert threads <= MAX_CONNECTIONS + 2, f"{threads} handler threads for {len(socks)} half-open connections"
    assert code == 200 and took < 3.0, f"/healthz took {took:.2f}s under a half-open flood"


def test_long_request_line_does_not_stall_the_server(served) -> None:
    server, _, _ = served
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as hostile:
        hostile.sendall(b"GET /healthz?" + b"a" * 60_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        code, took = _timed_healthz(server.port)
        assert hostile.recv(12).startswith(b"HTTP/1.")  # the hostile request got its answer too
    assert code == 200 and took < 3.0


def test_clients_hanging_up_mid_reply_leave_no_raw_traceback(served, capfd) -> None:
    server, _, _ = served
    for path in (b"/metrics", b"/healthz", b"/nope"):
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            s.close()
    time.sleep(0.5)
    assert _get(server.port, "/healthz")[0] == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err[-2000:]


# --- STATUS= line and SIGHUP plan -------------------------------------------------------------------

def test_status_line() -> None:
    assert status_line(STATS, 4.83) == "1/2 cameras up, 4.8 fps, 2 events, queue 1"


BASE = """
cameras:
  porch: {source: "rtsp://u:p@10.0.0.2/s", threshold: 0.6}
detector: {threshold: 0.5, workers: 2}
events: {end_after: 10}
logging: {level: info}
"""


@pytest.mark.parametrize(
    ("change", "filters_live", "restart"),
    [
        (("logging: {level: info}", "logging: {level: debug}"), False, []),
        (("end_after: 10", "end_after: 4"), True, []),
        (("end_after: 10", "end_after: 4"), False, ["events"]),
        (("threshold: 0.6", "threshold: 0.7"), True, []),
        (("workers: 2", "workers: 3"), True, ["detector"]),
        (("10.0.0.2", "10.0.0.3"), True, ["cameras"]),
        (("logging: {level: info}", "logging: {level: info, format: console}"), True, ["logging"]),
    ],
)
def test_plan_reload(change: tuple[str, str], filters_live: bool, restart: list[str]) -> None:
    old = parse_config(BASE)
    new = parse_config(BASE.replace(*change))
    merged, needs = plan_reload(old, new, filters_live)
    assert needs == restart
    assert merged.logging.level == new.logging.level  # always live
    assert merged.detector.workers == old.detector.workers  # never live
    assert merged.cameras["porch"].source == old.cameras["porch"].source
