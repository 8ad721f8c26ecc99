"""PushoverSink against a local server that behaves like POST /1/messages.json (testkit/fake_pushover.py)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import structlog

from raccoon_watch.config import PushoverConfig, QuietHours
from raccoon_watch.sinks.pushover import PushoverSink, backoff_delay, build_message, in_quiet_hours, should_push
from raccoon_watch.store import EventStore
from raccoon_watch.types import EventKind
from testkit.fake_pushover import VALID_TOKEN, VALID_USER, FakePushover
from tests.fixtures.pushover import make_event
from tests.waiting import wait_until

FAST = {"backoff_base": 0.05, "backoff_max": 0.2, "rate_limit_max": 2.0, "poll_s": 0.05}


def pcfg(server: FakePushover | None = None, **kw: object) -> PushoverConfig:
    data: dict[str, object] = {
        "token": VALID_TOKEN,
        "user": VALID_USER,
        "api_url": server.url if server else "http://127.0.0.1:9/1/",
        "timeout_s": 0.5,
    }
    data.update(kw)
    return PushoverConfig.model_validate(data)


@pytest.fixture()
def store(tmp_path: Path) -> EventStore:
    return EventStore(tmp_path / "var", outbox_max=100)


def running(sink: PushoverSink) -> PushoverSink:
    sink.start()
    return sink


# --- pure decisions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end", "at", "quiet"),
    [
        ("22:00", "07:00", "23:30", True),
        ("22:00", "07:00", "03:00", True),
        ("22:00", "07:00", "07:00", False),
        ("22:00", "07:00", "12:00", False),
        ("09:00", "17:00", "12:00", True),
        ("09:00", "17:00", "08:59", False),
        ("09:00", "09:00", "09:00", False),
    ],
)
def test_quiet_hours_table(start: str, end: str, at: str, quiet: bool) -> None:
    assert in_quiet_hours(QuietHours(start=start, end=end), dt.time.fromisoformat(at)) is quiet


@pytest.mark.parametrize(
    ("kind", "label", "cooldown", "labels", "expected"),
    [
        (EventKind.START, "raccoon", False, None, (True, "push")),
        (EventKind.UPDATE, "raccoon", False, None, (False, "not_start")),
        (EventKind.END, "raccoon", False, None, (False, "not_start")),
        (EventKind.START, "raccoon", True, None, (False, "cooldown")),
        (EventKind.START, "cat", False, ["raccoon"], (False, "label_filtered")),
        (EventKind.START, "raccoon", False, ["raccoon"], (True, "push")),
    ],
)
def test_should_push_table(kind, label, cooldown, labels, expected) -> None:  # type: ignore[no-untyped-def]
    event = make_event(kind, label=label, in_cooldown=cooldown, snapshot=False)
    assert should_push(pcfg(labels=labels), event) == expected


def test_backoff_is_capped_exponential() -> None:
    assert [backoff_delay(a) for a in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]


def test_emergency_message_carries_retry_and_expire() -> None:
    meta = build_message(pcfg(priority=2, retry=30, expire=600, sound="siren"), make_event(snapshot=False))
    assert (meta["priority"], meta["retry"], meta["expire"], meta["sound"]) == (2, 30, 600, "siren")
    assert "retry" not in build_message(pcfg(), make_event(snapshot=False))


# --- against the local Pushover server -------------------------------------------------------


def test_push_arrives_once_with_jpeg_attachment(fake_pushover: FakePushover, store: EventStore) -> None:
    sink = running(PushoverSink(pcfg(fake_pushover, priority=1, sound="pushover", url="http://ha.local",
                                     url_title="Open HA"), store, **FAST))
    try:
        event = make_event(top_score=0.93)
        sink.publish(event)
        sink.publish(make_event(EventKind.UPDATE, event_id=event.id))
        sink.publish(make_event(EventKind.END, event_id=event.id))
        got = fake_pushover.wait_for(1)
        time.sleep(0.3)  # nothing else arrives
    finally:
        sink.stop()
    assert len(fake_pushover.received) == 1 and len(got) == 1
    rec = got[0]
    assert rec.fields["title"] == "Raccoon at front_door"
    assert "(score 0.93)" in rec.fields["message"]  # types.score_text, as on the page
    assert rec.fields["timestamp"] == str(int(event.start_time))
    assert (rec.fields["priority"], rec.fields["sound"], rec.fields["url"], rec.fields["url_title"]) == (
        "1", "pushover", "http://ha.local", "Open HA")
    assert rec.attachment_type == "image/jpeg" and rec.attachment_name == "snapshot.jpg"
    assert rec.attachment == event.snapshot_jpeg
    img = cv2.imdecode(np.frombuffer(rec.attachment, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape[:2] == (48, 64)
    assert store.pending_count("pushover") == 0 and store.outbox_state("pushover", event.id) == "done"


def test_bad_token_is_logged_and_not_retried(fake_pushover: FakePushover, store: EventStore) -> None:
    sink = PushoverSink(pcfg(fake_pushover, token="a" * 30), store, **FAST)
    with structlog.testing.capture_logs() as logs:
        sink.start()
        try:
            sink.publish(make_event(event_id="bad"))
            assert wait_until(lambda: store.failed_count("pushover") == 1)
            time.sleep(0.5)  # several backoff periods: no second attempt
        finally:
            sink.stop()
    assert [r.status for r in fake_pushover.received] == [400]
    rejected = [e for e in logs if e["event"] == "pushover_rejected"]
    assert rejected and "application token is invalid" in rejected[0]["errors"]
    assert "a" * 30 not in repr(logs)  # the token never reaches the logs


@pytest.mark.parametrize("mode", ["error500", "html500"])
def test_server_errors_then_recovery_deliver_exactly_once(
    fake_pushover: FakePushover, store: EventStore, mode: str
) -> None:
    fake_pushover.fail_next(3, mode)
    sink = running(PushoverSink(pcfg(fake_pushover), store, **FAST))
    try:
        sink.publish(make_event(event_id="e5xx"))
        assert len(fake_pushover.wait_for(1)) == 1
        time.sleep(0.3)
    finally:
        sink.stop()
    assert [r.status for r in fake_pushover.received][-1] == 200
    assert sum(r.status == 200 for r in fake_pushover.received) == 1
    assert len(fake_pushover.received) == 4
    assert store.outbox_state("pushover", "e5xx") == "done"


def test_stall_does_not_block_publish_and_is_retried_in_order(
    fake_pushover: FakePushover, store: EventStore
) -> None:
    fake_pushover.stall_s = 2.0
    fake_pushover.fail_next(1, "stall")
    sink = running(PushoverSink(pcfg(fake_pushover, timeout_s=0.4), store, **FAST))
    try:
        sink.publish(make_event(event_id="stalled", camera="cam0"))
        assert wait_until(lambda: len(fake_pushover.received) == 0 and store.pending_count("pushover") == 1)
        time.sleep(0.1)  # the sender is now inside the stalled request
        t0 = time.monotonic()
        for i in range(1, 6):
            sink.publish(make_event(event_id=f"later{i}", camera=f"cam{i}"))
        publish_s = time.monotonic() - t0
        got = fake_pushover.wait_for(6, timeout=15)
    finally:
        sink.stop()
    # relative, not absolute: publish() must not wait for the stalled request (stall_s = 2 s)
    assert publish_s < fake_pushover.stall_s / 4, f"publish() took {publish_s:.3f}s while Pushover stalled"
    # the stalled push was retried after the client timeout, then the rest went out in order
    assert [r.fields["title"] for r in got] == [f"Raccoon at cam{i}" for i in range(6)]
    assert wait_until(lambda: len(fake_pushover.received) == 7, timeout=5)  # the stalled one ends
    assert [r.status for r in fake_pushover.received].count(-1) == 1


def test_rate_limit_backs_off_then_delivers(fake_pushover: FakePushover, store: EventStore) -> None:
    fake_pushover.reset_in_s = 1
    fake_pushover.fail_next(1, "ratelimit")
    sink = running(PushoverSink(pcfg(fake_pushover), store, **FAST))
    try:
        with structlog.testing.capture_logs() as logs:
            sink.publish(make_event(event_id="rl"))
            got = fake_pushover.wait_for(1, timeout=10)
    finally:
        sink.stop()
    assert len(got) == 1
    first, second = fake_pushover.received[0], fake_pushover.received[1]
    assert first.status == 429 and second.at - first.at >= 0.9  # waited for the reset, not hammered
    assert any(e["event"] == "pushover_rate_limited" for e in logs)


def test_a_reply_that_is_not_an_object_backs_off_and_does_not_block_later_pushes(
    fake_pushover: FakePushover, store: EventStore
) -> None:
    fake_pushover.mode_for_title["Raccoon at stuck"] = "jsonlist"  # JSON, but `[]`: no .get()
    sink = running(PushoverSink(pcfg(fake_pushover), store, **FAST))
    try:
        with structlog.testing.capture_logs() as logs:
            sink.publish(make_event(event_id="stuck", camera="stuck"))
            for i in range(3):
                sink.publish(make_event(event_id=f"later{i}", camera=f"cam{i}"))
            got = fake_pushover.wait_for(3, timeout=10)
            t0 = time.monotonic()
            time.sleep(1.0)
            stuck_in_1s = sum(r.fields["title"] == "Raccoon at stuck" and r.at >= time.time() - 1.0
                              for r in fake_pushover.received)
    finally:
        sink.stop()
    assert [r.fields["title"] for r in got] == [f"Raccoon at cam{i}" for i in range(3)]
    [row] = store.pending("pushover")
    assert row.key == "stuck" and row.attempts >= 3  # every bad answer counted as a failed attempt
    assert stuck_in_1s <= 10, f"{stuck_in_1s} requests in 1 s: not backing off"  # backoff_max 0.2 s
    retries = [e for e in logs if e["event"] == "pushover_retry" and e["event_id"] == "stuck"]
    assert retries and "reply" in retries[0]["error"]
    assert not any(e["event"] == "pushover_sender_error" for e in logs)
    assert time.monotonic() - t0 >= 1.0


def test_a_wall_clock_step_back_does_not_delay_the_retry(fake_pushover: FakePushover, store: EventStore) -> None:
    offset = {"s": 0.0}
    fake_pushover.fail_next(1, "error500")
    sink = PushoverSink(pcfg(fake_pushover), store, clock=lambda: time.time() - offset["s"], **FAST)
    sink.start()
    try:
        sink.publish(make_event(event_id="ntp"))
        assert wait_until(lambda: len(fake_pushover.received) >= 1)
        offset["s"] = 3600.0  # NTP steps the clock back an hour right after the failed attempt
        got = fake_pushover.wait_for(1, timeout=10)
    finally:
        sink.stop()
    assert len(got) == 1, "the retry waited for the wall clock to come back"


def test_cooldown_and_quiet_hours_are_not_pushed(fake_pushover: FakePushover, store: EventStore) -> None:
    now = dt.datetime.now()
    quiet = QuietHours(start=(now - dt.timedelta(hours=1)).strftime("%H:%M"),
                       end=(now + dt.timedelta(hours=1)).strftime("%H:%M"))
    quiet_sink = running(PushoverSink(pcfg(fake_pushover, quiet_hours=quiet), store, **FAST))
    loud = running(PushoverSink(pcfg(fake_pushover), EventStore(store.path / "b", outbox_max=100), **FAST))
    try:
        with structlog.testing.capture_logs() as logs:
            quiet_sink.publish(make_event(event_id="night"))
            loud.publish(make_event(event_id="cool", in_cooldown=True))
        time.sleep(0.4)
    finally:
        quiet_sink.stop()
        loud.stop()
    assert fake_pushover.received == []
    reasons = sorted(e["reason"] for e in logs if e["event"] == "pushover_skipped")
    assert reasons == ["cooldown", "quiet_hours"]


def test_restart_resends_pending_exactly_once(fake_pushover: FakePushover, tmp_path: Path) -> None:
    """A daemon whose Pushover was down dies with pushes pending; the next one sends each once, in
    order: back-off times live in memory on the monotonic clock, so after a restart every pending
    row is due at once and rows go out in outbox order (the promise this test holds)."""
    db = tmp_path / "var"
    down = PushoverSink(pcfg(None), EventStore(db, outbox_max=100), **FAST)  # nothing listens on :9
    down.start()
    events = [make_event(event_id=f"p{i}", camera=f"cam{i}") for i in range(3)]
    for e in events:
        down.publish(e)
    assert wait_until(lambda: down.store.pending("pushover")[0].attempts >= 1)
    down.stop()  # stands in for kill -9: nothing is flushed, rows stay pending
    down.store.close()

    fresh_store = EventStore(db, outbox_max=100)
    assert fresh_store.pending_count("pushover") == 3
    sink = running(PushoverSink(pcfg(fake_pushover), fresh_store, **FAST))
    try:
        for e in events:  # the router replaying the same events after restart is a no-op
            sink.publish(e)
        got = fake_pushover.wait_for(3)
        time.sleep(0.3)
    finally:
        sink.stop()
    assert [r.fields["title"] for r in got] == [f"Raccoon at cam{i}" for i in range(3)]
    assert len(fake_pushover.received) == 3
    assert fresh_store.pending_count("pushover") == 0

    # and a third start sends nothing again
    third = running(PushoverSink(pcfg(fake_pushover), EventStore(db, outbox_max=100), **FAST))
    time.sleep(0.3)
    third.stop()
    assert len(fake_pushover.received) == 3


def test_oversized_attachment_rejected_by_server_rules(fake_pushover: FakePushover, store: EventStore) -> None:
    """A > 5 MB snapshot is sent without the attachment rather than rejected."""
    sink = running(PushoverSink(pcfg(fake_pushover), store, **FAST))
    try:
        sink.publish(make_event(event_id="huge", snapshot=b"\xff\xd8" + bytes(5 * 1024 * 1024 + 10)))
        got = fake_pushover.wait_for(1)
    finally:
        sink.stop()
    assert len(got) == 1 and got[0].attachment is None


_CHILD = """
import sys, time
from pathlib import Path
from raccoon_watch.config import PushoverConfig
from raccoon_watch.sinks.pushover import PushoverSink
from raccoon_watch.store import EventStore
from testkit.fake_pushover import VALID_TOKEN, VALID_USER
from tests.fixtures.pushover import make_event

cfg = PushoverConfig(token=VALID_TOKEN, user=VALID_USER, api_url=sys.argv[2], timeout_s=0.5)
store = EventStore(Path(sys.argv[1]), outbox_max=100)
sink = PushoverSink(cfg, store, backoff_base=0.05, backoff_max=0.2, poll_s=0.05)
sink.start()
for i in range(3):
    sink.publish(make_event(event_id=f"k{i}", camera=f"cam{i}"))
print("queued", flush=True)
time.sleep(60)
"""


def test_sigkill_mid_retry_then_restart_sends_each_push_once(fake_pushover: FakePushover, tmp_path: Path) -> None:
    """A real process is killed with SIGKILL while its pushes are failing; a new one delivers them."""
    import signal
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    fake_pushover.mode = "error500"
    db = tmp_path / "var"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(db), fake_pushover.url], cwd=repo,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "queued"
        assert wait_until(lambda: len(fake_pushover.received) >= 2)  # it is retrying the 500s
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
    fake_pushover.mode = "ok"
    before = len(fake_pushover.received)
    store = EventStore(db, outbox_max=100)
    assert store.pending_count("pushover") == 3
    sink = running(PushoverSink(pcfg(fake_pushover), store, **FAST))
    try:
        got = fake_pushover.wait_for(3)
        time.sleep(0.3)
    finally:
        sink.stop()
    assert [r.fields["title"] for r in got] == [f"Raccoon at cam{i}" for i in range(3)]
    assert len(fake_pushover.received) == before + 3


def test_pushes_still_go_out_when_storage_is_unusable(fake_pushover: FakePushover, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    store = EventStore(blocker / "var", outbox_max=100)
    assert not store.persistent
    sink = running(PushoverSink(pcfg(fake_pushover), store, **FAST))
    try:
        event = make_event(event_id="disk")
        store.record(event)  # logs store_write_failed, does not raise
        sink.publish(event)
        got = fake_pushover.wait_for(1)
    finally:
        sink.stop()
    assert len(got) == 1 and got[0].attachment == event.snapshot_jpeg
