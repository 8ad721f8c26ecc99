"""MqttSink: Frigate-compatible topics and Home Assistant entities over MQTT, nothing lost.

Topic layout and discovery payloads: ``raccoon_watch.sinks.discovery``.

Delivery (event messages):
  ``publish(event)`` (router thread) turns an event into its messages (pure ``event_messages``),
  writes them to the outbox in one transaction and wakes the sender thread. The sender hands pending
  rows to paho in outbox order while connected, at most ``window`` unacknowledged at a time, and
  marks a row done when its PUBACK arrives (``on_publish`` with the mid; QoS 1 by default). paho
  keeps handed-over QoS 1 messages across reconnects and re-sends them (DUP) in order after the next
  CONNACK, so within one process each row is handed to paho once: while the broker is down rows
  wait (in paho's queue and in the outbox) and go out in order when it returns. After a crash or
  ``kill -9`` the rows still pending are sent by the next process; the only duplicates possible are
  messages the broker had accepted whose PUBACK (or its commit) was lost, and consumers dedupe on
  the event id (Frigate semantics).

  ``on_publish`` runs on paho's network thread while paho holds its outgoing-message lock, so it
  only puts the mid on a queue; the sender thread owns the mid -> row map (no lock-order deadlock).

Direct publishes (not through the outbox), re-sent on every (re)connect instead:
  ``available`` (online; will: offline), discovery configs, ``detect/state`` and the last
  *acknowledged* value of every retained event topic (state, count, snapshot). These describe
  current state rather than a history, are idempotent, and must reappear whenever a broker without
  persistence comes back; queueing old copies of them would only replay stale state.

Detections (``Event.severity``) are not published at all: ``publish`` ignores them, and an upgraded
one is published from its upgrade's START on, as a new event.

Commands and verdicts coming in (``detect/set``, ``feedback/set``) and the retained states that
answer them: ``mqtt_control.ControlPlane``.

Health: ``health()`` says ``ok`` (connected), ``connecting`` (not yet) or ``failing`` with a reason
that tells the failures apart: ``dns: name not resolved (<host>)``, ``connection refused``, ``timed
out`` (no TCP answer within paho's connect timeout), ``tls: ...``, ``auth: Not authorized`` / ``auth:
Bad user name or password`` (the broker's CONNACK refused the credentials), ``refused by broker:
<CONNACK reason>`` and ``disconnected: <reason>`` (``netdiag.describe_error`` words the network ones,
from the exception paho's connect raised, which ``_Client`` keeps). A refused or failed connect is
logged once per distinct reason; paho's retries after it are debug lines, not endless warnings.
"""

from __future__ import annotations

import json
import queue
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion

from raccoon_watch.config import MqttConfig
from raccoon_watch.sinks.discovery import (
    FEEDBACK_NONE,
    OFF,
    OFFLINE,
    ON,
    ONLINE,
    Topics,
    digest,
    discovery_payloads,
    plan_discovery,
)
from raccoon_watch.sinks.mqtt_control import ControlPlane, FeedbackFn
from raccoon_watch.store import EventStore
from raccoon_watch.store.outbox import OutboxRow
from raccoon_watch.support.netdiag import describe_error
from raccoon_watch.types import (
    SINK_CONNECTING,
    SINK_FAILING,
    SINK_OK,
    Event,
    EventKind,
    PipelineStats,
    SinkSnapshot,
)

log = structlog.get_logger(__name__)

DISCOVERY_KV = "mqtt_discovery_published"  # store kv: {topic: digest} of retained discovery configs


CONNACK_WAIT_S = 10.0  # connecting this long without an error or a CONNACK: the broker does not answer
AUTH_REASONS = ("not authorized", "bad user name or password")  # CONNACK codes 5 and 4 (MQTT 3.1.1), 135/134 (5.0)


def connack_reason(reason_code: Any) -> str:
    """A refused CONNACK as a health reason: ``auth: Not authorized`` for the credential refusals,
    else ``refused by broker: <reason>`` (pure)."""
    text = str(reason_code)
    if text.lower() in AUTH_REASONS:
        return f"auth: {text}"
    return f"refused by broker: {text}"


class _Client(mqtt.Client):
    """paho's client, keeping what its last connect attempt raised: paho catches it in its network
    loop and calls ``on_connect_fail`` without it, so a wrong host and a refused port looked alike."""

    last_connect_error: BaseException | None = None

    def reconnect(self) -> mqtt.MQTTErrorCode:
        try:
            rc = super().reconnect()
        except OSError as exc:
            self.last_connect_error = exc
            raise
        self.last_connect_error = None
        return rc


@dataclass(frozen=True, slots=True)
class Message:
    """One MQTT message derived from an event; ``part`` names it inside the event's outbox keys."""

    part: str
    topic: str
    payload: bytes
    retain: bool





def event_messages(event: Event, before: Mapping[str, object] | None, topics: Topics,
                   send_snapshot: bool = True, extra: Mapping[str, object] | None = None) -> list[Message]:
    """The messages one event produces, in the order they are delivered (pure).

    START: events(new), count, state ON, camera event, snapshot. UPDATE: events(update), count,
    snapshot (if ``send_snapshot``). END: events(end), count 0, state OFF. ``extra`` (``has_clip``,
    ``clip_path``) is added to the event body and the camera event's attributes.
    """
    after = {**event.to_dict(), **(extra or {})}
    body = {"type": event.kind.value, "before": dict(before) if before else after, "after": after}
    out = [Message("events", topics.events, json.dumps(body).encode(), False)]
    cam, label = event.camera, event.label
    count = 0 if event.kind is EventKind.END else event.count
    out.append(Message("count", topics.count(cam, label), str(count).encode(), True))
    if event.kind is EventKind.START:
        out.append(Message("state", topics.state(cam, label), ON.encode(), True))
        fired = {
            "event_type": label,
            "id": event.id,
            "camera": cam,
            "score": after["score"],
            "top_score": after["top_score"],
            "start_time": event.start_time,
            "in_cooldown": event.in_cooldown,
            **(extra or {}),
        }
        out.append(Message("event", topics.event(cam), json.dumps(fired).encode(), False))
    if event.kind is EventKind.END:
        out.append(Message("state", topics.state(cam, label), OFF.encode(), True))
    if event.snapshot_jpeg is not None and send_snapshot and event.kind is not EventKind.END:
        out.append(Message("snapshot", topics.snapshot(cam, label), event.snapshot_jpeg, True))
    return out


class MqttSink:
    """Sink publishing events over MQTT (paho 2.x, own network + sender threads)."""

    name = "mqtt"

    def __init__(
        self,
        cfg: MqttConfig,
        cameras: list[str],
        labels: list[str],
        store: EventStore,
        commands: Callable[[str, bool], None] | None = None,
        stats: Callable[[], PipelineStats] | None = None,
        *,
        event_fields: Callable[[Event], Mapping[str, object]] | None = None,
        feedback: FeedbackFn | None = None,
        detect_enabled: Mapping[str, bool] | None = None,
        reconnect_min: float = 1.0,
        reconnect_max: float = 60.0,
        window: int = 50,
        poll_s: float = 0.2,
    ) -> None:
        self.cfg = cfg
        self.cameras = list(cameras)
        self.labels = list(labels)
        self.store = store
        self.topics = Topics(cfg.topic_prefix, cfg.discovery_prefix)
        self._stats = stats
        self._event_fields = event_fields
        self._window = window
        self._poll_s = poll_s
        self._connected = threading.Event()
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._acks: queue.SimpleQueue[tuple[int, str | None]] = queue.SimpleQueue()
        self._inflight: dict[int, int] = {}  # outbox row id -> mid (sender thread only)
        self._by_mid: dict[int, OutboxRow] = {}  # mid -> row (sender thread only)
        self._lock = threading.Lock()  # guards the caches below (network + sender + router threads)
        self._retained: dict[str, bytes] = {}  # topic -> last acknowledged retained event payload
        self._last_after: dict[str, dict[str, object]] = {}  # event id -> last "after" body
        self._last_snapshot: dict[str, str] = {}  # event id -> digest of the last snapshot sent
        self._last_connect_error: str | None = None  # why the broker is not reachable/accepting us
        self._connecting_since: float | None = None  # monotonic; None while connected
        self._next_stats = 0.0
        self._thread: threading.Thread | None = None
        self.acked = 0
        self.control = ControlPlane(self.name, self.topics, lambda: self.cameras, store, self._direct, self._wake.set,
                                    commands=commands, feedback=feedback, detect_enabled=detect_enabled)
        self.client = self._make_client(reconnect_min, reconnect_max)

    # --- client set-up ----------------------------------------------------------------------

    def _make_client(self, reconnect_min: float, reconnect_max: float) -> mqtt.Client:
        cfg = self.cfg
        client_id = cfg.client_id or f"raccoon_watch-{socket.gethostname()}"
        client = _Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
        if cfg.tls is not None:
            client.tls_set(
                ca_certs=str(cfg.tls.ca_file) if cfg.tls.ca_file else None,
                certfile=str(cfg.tls.cert_file) if cfg.tls.cert_file else None,
                keyfile=str(cfg.tls.key_file) if cfg.tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            if cfg.tls.insecure:
                client.tls_insecure_set(True)
        client.will_set(self.topics.available, OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(min_delay=max(1, int(reconnect_min)), max_delay=max(1, int(reconnect_max)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    # --- Sink -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._connecting_since = time.monotonic()
        try:
            self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive)
        except (OSError, ValueError) as exc:  # the loop keeps retrying
            self._set_connect_error(describe_error(exc, self.cfg.host) if isinstance(exc, OSError) else str(exc))
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name="mqtt-sender", daemon=True)
        self._thread.start()
        pending = self.store.pending_count(self.name)
        if pending:
            log.info("mqtt_resuming", pending=pending)

    def publish(self, event: Event) -> None:
        if not event.is_alert:  # detections are for the review page; Home Assistant sees alerts only
            return
        with self._lock:
            before = self._last_after.get(event.id)
            snap = digest(event.snapshot_jpeg) if event.snapshot_jpeg is not None else None
            send_snapshot = snap is not None and self._last_snapshot.get(event.id) != snap
            if event.kind is EventKind.END:
                self._last_after.pop(event.id, None)
                self._last_snapshot.pop(event.id, None)
            else:
                self._last_after[event.id] = event.to_dict()
                if snap is not None:
                    self._last_snapshot[event.id] = snap
        extra = self._event_fields(event) if self._event_fields is not None else None
        messages = event_messages(event, before, self.topics, send_snapshot, extra)
        if event.kind is EventKind.START:  # a new latest event has no verdict yet
            self.control.set_feedback_state(event.camera, FEEDBACK_NONE)
        # Outbox keys: the same event message replayed (e.g. after a restart) maps to the same
        # keys and is a no-op; two different UPDATEs differ in frame_ts or content.
        stamp = f"{event.frame_ts:.6f}:{digest(json.dumps(event.to_dict(), sort_keys=True).encode())[:8]}"
        self.store.enqueue_many(
            self.name,
            [
                (f"{event.id}:{event.kind.value}:{stamp}:{m.part}", m.payload, {"topic": m.topic, "retain": m.retain})
                for m in messages
            ],
        )
        self._wake.set()

    def stop(self) -> None:
        """Publish ``offline`` (bounded wait), disconnect, stop threads; pending rows stay queued."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None
        if self._connected.is_set():
            try:  # PUBACKs come in order: once "offline" is acked, earlier messages are too
                info = self.client.publish(self.topics.available, OFFLINE, qos=1, retain=True)
                info.wait_for_publish(timeout=1.0)
            except (RuntimeError, ValueError) as exc:
                log.warning("mqtt_offline_not_sent", reason=str(exc))
        self._drain_acks()
        self.client.disconnect()
        self.client.loop_stop()
        self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def health(self) -> SinkSnapshot:
        """For /healthz: ``state`` ok | connecting | failing, ``reason``, retained detect commands."""
        since = self._connecting_since
        if self.connected:
            state, reason = SINK_OK, "connected"
        elif self._last_connect_error:
            state, reason = SINK_FAILING, self._last_connect_error
        elif since is not None and time.monotonic() - since > CONNACK_WAIT_S:
            state, reason = SINK_FAILING, f"no answer from the broker for {time.monotonic() - since:.0f} s (no CONNACK)"
        else:
            state, reason = SINK_CONNECTING, "connecting"
        return SinkSnapshot(state, reason, retained_commands=self.control.retained_commands(),
                            detail={"broker": f"{self.cfg.host}:{self.cfg.port}"})

    def metrics(self) -> dict[str, int]:
        return {
            "pending": self.store.pending_count(self.name),
            "failed": self.store.failed_count(self.name),
            "acked": self.acked,
            "connected": int(self.connected),
        }

    def set_detect_state(self, camera: str, enabled: bool) -> None:
        """Report a detection on/off change made elsewhere (e.g. config reload) on detect/state."""
        self.control.set_detect_state(camera, enabled)

    def update_discovery(self, cameras: list[str], labels: list[str]) -> None:
        """After a config reload: publish only the discovery configs that changed (and removals)."""
        self.cameras, self.labels = list(cameras), list(labels)
        self.control.cameras_changed()
        if self.connected:
            self._publish_discovery(force=False)

    # --- paho callbacks (network thread): never raise ----------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            reason = connack_reason(reason_code)
            if reason != self._last_connect_error:
                log.error("mqtt_connect_refused", host=self.cfg.host, port=self.cfg.port, reason=reason)
                self._last_connect_error = reason
            return
        self._last_connect_error = None
        self._connecting_since = None
        try:
            log.info("mqtt_connected", host=self.cfg.host, port=self.cfg.port,
                     session_present=bool(getattr(flags, "session_present", False)))
            q = self.cfg.qos
            client.publish(self.topics.available, ONLINE, qos=q, retain=True)
            subs = [(self.topics.detect_set_filter, q), (self.topics.feedback_set_filter, q)]
            if self.cfg.discovery:
                subs.append((self.topics.ha_status, q))
            client.subscribe(subs)
            if self.cfg.discovery:
                self._publish_discovery(force=True)
            with self._lock:
                retained = dict(self._retained)
            for state_topic, state in self.control.states():  # detect/state and feedback/state
                client.publish(state_topic, state, qos=q, retain=True)
            for topic, payload in retained.items():  # last acknowledged state, for brokers that forgot it
                client.publish(topic, payload, qos=q, retain=True)
        except Exception:
            log.exception("mqtt_on_connect_error")
        finally:
            self._connected.set()
            self._wake.set()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._stopping.is_set():
            return
        if was_connected or self._connecting_since is None:
            self._connecting_since = time.monotonic()
        if was_connected:
            self._last_connect_error = f"disconnected: {reason_code}"
            log.warning("mqtt_disconnected", reason=str(reason_code), pending=len(self._inflight))
        else:  # the close after a refused or failed connect: already said once
            log.debug("mqtt_disconnected", reason=str(reason_code), after=self._last_connect_error)

    def _on_connect_fail(self, client: mqtt.Client, _userdata: Any) -> None:
        """paho could not open the connection (no CONNACK involved): DNS, refused, timed out, TLS."""
        exc = getattr(client, "last_connect_error", None)
        self._set_connect_error(describe_error(exc, self.cfg.host) if exc is not None else "cannot connect")

    def _set_connect_error(self, reason: str) -> None:
        """Record why the broker cannot be reached; logged once per distinct reason."""
        if reason != self._last_connect_error:
            log.warning("mqtt_connect_failed", host=self.cfg.host, port=self.cfg.port, reason=reason)
            self._last_connect_error = reason

    def _on_publish(self, _client: mqtt.Client, _userdata: Any, mid: int, reason_code: Any, _props: Any) -> None:
        failure = str(reason_code) if getattr(reason_code, "is_failure", False) else None
        self._acks.put((mid, failure))
        self._wake.set()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
            if topic == self.topics.ha_status:
                if msg.payload.strip().lower() == ONLINE.encode() and self.cfg.discovery:
                    log.info("mqtt_ha_online", action="republish_discovery")
                    self._publish_discovery(force=True)
                return
            self.control.handle(topic, bytes(msg.payload), retained=bool(msg.retain))
        except Exception:  # a malformed message never takes the network thread down
            log.exception("mqtt_message_error")

    def feedback_changed(self, event_id: str, label: str | None, source: str = "") -> None:
        """A verdict was stored (from any source): published as ``ControlPlane.feedback_changed`` says."""
        self.control.feedback_changed(event_id, label, source)

    # --- direct (retained state) publishes -------------------------------------------------

    def _direct(self, topic: str, payload: bytes | str, retain: bool) -> None:
        try:
            self.client.publish(topic, payload, qos=self.cfg.qos, retain=retain)
        except ValueError as exc:
            log.error("mqtt_publish_invalid", topic=topic, reason=str(exc))

    def _publish_discovery(self, force: bool) -> None:
        current = discovery_payloads(self.cameras, self.labels, self.topics, self.cfg.qos)
        try:
            published: dict[str, str] = json.loads(self.store.kv_get(DISCOVERY_KV) or "{}")
        except ValueError:
            published = {}
        plan = plan_discovery(current, published, force)
        for topic, payload in plan:
            self._direct(topic, payload, retain=True)
            if payload:
                published[topic] = digest(payload)
            else:
                published.pop(topic, None)
                log.info("mqtt_discovery_removed", topic=topic)
        if plan:
            self.store.kv_set(DISCOVERY_KV, json.dumps(published, sort_keys=True))
            log.info("mqtt_discovery_published", configs=sum(1 for _, p in plan if p), removed=sum(1 for _, p in plan if not p))

    # --- sender thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._drain_acks()
                if self._connected.is_set():
                    self._fill()
                    self._maybe_stats()
            except Exception:
                log.exception("mqtt_sender_error")
            self._wake.wait(timeout=self._poll_s)
            self._wake.clear()
        self._drain_acks()

    def _drain_acks(self) -> None:
        while True:
            try:
                mid, failure = self._acks.get_nowait()
            except queue.Empty:
                return
            item = self._by_mid.pop(mid, None)
            if item is None:
                continue  # a direct publish (availability, discovery, state)
            self._inflight.pop(item.id, None)
            if failure:
                self.store.mark_failed(item.id, f"broker refused: {failure}", retry_at=None)
                log.error("mqtt_publish_refused", topic=item.meta.get("topic"), reason=failure)
                continue
            self.store.mark_done(item.id)
            self.acked += 1
            if item.meta.get("retain"):
                with self._lock:
                    self._retained[str(item.meta["topic"])] = item.payload

    def _fill(self) -> None:
        room = self._window - len(self._inflight)
        if room <= 0:
            return
        for item in self.store.pending(self.name, limit=len(self._inflight) + room):
            if item.id in self._inflight:
                continue
            topic = str(item.meta.get("topic", ""))
            try:
                info = self.client.publish(topic, item.payload, qos=self.cfg.qos, retain=bool(item.meta.get("retain")))
            except ValueError as exc:  # invalid topic / payload too large: will never succeed
                self.store.mark_failed(item.id, f"invalid: {exc}", retry_at=None)
                log.error("mqtt_publish_invalid", topic=topic, reason=str(exc))
                continue
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                break  # paho's queue is full; try again on the next wake
            self._inflight[item.id] = info.mid
            self._by_mid[info.mid] = item
            if self.cfg.qos == 0:  # no PUBACK at QoS 0: "sent" is as good as it gets
                self._acks.put((info.mid, None))

    def _maybe_stats(self) -> None:
        if self._stats is None or time.monotonic() < self._next_stats:
            return
        self._next_stats = time.monotonic() + self.cfg.stats_interval
        try:
            body = self._stats().to_dict()
            body.setdefault("mqtt", self.metrics())
            payload = json.dumps(body, default=str)
        except Exception:
            log.exception("mqtt_stats_failed")
            return
        self._direct(self.topics.stats, payload, retain=False)
