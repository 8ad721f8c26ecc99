"""The MQTT control plane: commands and verdicts coming in, the retained states that answer them.

Commands: ``P/<camera>/detect/set`` with ON/OFF (case-insensitive, surrounding whitespace ignored);
anything else is logged as ``mqtt_command_ignored`` and changes nothing (``parse_command``). A
*retained* command (delivered on every connect, so it switches detection at every start) is
obeyed but logged as a warning, ``mqtt_retained_command``, with the command that clears it, and
shown in ``health()`` (and so /healthz).

Feedback: ``P/<camera>/feedback/set`` (the HA select) with ``raccoon``, ``not_raccoon`` or ``none``
sets the verdict on the camera's latest alert, a JSON ``{"id": ..., "label": ...}`` on any event
(``parse_feedback``); the sink calls ``feedback(event_id, camera, label, source)`` (the App stores it),
then publishes ``P/<camera>/feedback`` (JSON, through the outbox) and, for the latest event,
``P/<camera>/feedback/state``. A verdict given on the page is published the same way
(``feedback_changed``). Event payloads carry ``event_fields(event)`` (``has_clip``, ``clip_path``).

The sink (``mqtt.py``) hands every message on a subscribed topic to ``ControlPlane.handle``
(paho's network thread) and republishes ``states()`` on every connect; what goes out through the
outbox (event messages, the ``feedback`` message) is the sink's job.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping

import structlog

from raccoon_watch.sinks.discovery import FEEDBACK_NONE, FEEDBACK_OPTIONS, OFF, ON, Topics
from raccoon_watch.store import EventStore
from raccoon_watch.types import Severity

log = structlog.get_logger(__name__)

MAX_COMMAND_BYTES = 32
MAX_FEEDBACK_BYTES = 512


# (event id or None for the camera's latest, camera, label or None to clear, source) -> the event id stored, or None
FeedbackFn = Callable[[str | None, str | None, str | None, str], str | None]


def parse_command(payload: bytes | str) -> bool | None:
    """``ON``/``OFF`` (any case, surrounding whitespace ignored) -> True/False; anything else None."""
    if isinstance(payload, str):
        text = payload
    else:
        if len(payload) > MAX_COMMAND_BYTES:
            return None
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            return None
    word = text.strip().upper()
    if word == ON:
        return True
    if word == OFF:
        return False
    return None


def parse_command_topic(topic: str, topics: Topics, cameras: Iterable[str]) -> str | None:
    """``P/<camera>/detect/set`` -> camera if it is a configured camera, else None."""
    head = f"{topics.prefix}/"
    tail = "/detect/set"
    if not (topic.startswith(head) and topic.endswith(tail)):
        return None
    camera = topic[len(head):-len(tail)]
    return camera if camera in set(cameras) else None


def parse_feedback(topic: str, payload: bytes, topics: Topics, cameras: Iterable[str]
                   ) -> tuple[str, str | None, str | None] | None:
    """``P/<camera>/feedback/set`` -> (camera, event id or None for the latest, label or None to clear);
    None for an unknown camera or payload (pure)."""
    head, tail = f"{topics.prefix}/", "/feedback/set"
    if not (topic.startswith(head) and topic.endswith(tail)) or len(payload) > MAX_FEEDBACK_BYTES:
        return None
    camera = topic[len(head):-len(tail)]
    if camera not in set(cameras):
        return None
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    event_id = None
    if text.startswith("{"):
        try:
            body = json.loads(text)
        except ValueError:
            return None
        if not isinstance(body, dict) or not isinstance(body.get("id"), str) or not isinstance(body.get("label"), str):
            return None
        event_id, text = body["id"], body["label"]
    word = text.lower()
    if word not in FEEDBACK_OPTIONS:
        return None
    return camera, event_id, None if word == FEEDBACK_NONE else word



class ControlPlane:
    """Detection on/off per camera, the verdict of each camera's latest alert, retained commands.

    ``direct(topic, payload, retain)`` publishes a retained state now (not through the outbox);
    ``wake()`` tells the sender a row is waiting. Thread-safe: paho's network thread, the router
    thread (``latest_started``) and the App (``set_detect_state``, ``feedback_changed``) call it."""

    def __init__(self, sink: str, topics: Topics, cameras: Callable[[], Iterable[str]], store: EventStore,
                 direct: Callable[[str, bytes | str, bool], None], wake: Callable[[], None], *,
                 commands: Callable[[str, bool], None] | None = None, feedback: FeedbackFn | None = None,
                 detect_enabled: Mapping[str, bool] | None = None) -> None:
        self.sink = sink
        self.topics = topics
        self._cameras = cameras
        self.store = store
        self._direct = direct
        self._wake = wake
        self._commands = commands
        self._feedback = feedback
        self._lock = threading.Lock()  # guards the three maps below
        self.detect = {cam: bool((detect_enabled or {}).get(cam, True)) for cam in cameras()}
        self._feedback_state: dict[str, str] = {}  # camera -> last published verdict of its latest event
        self._retained_commands: dict[str, str] = {}  # camera -> ON/OFF set by a retained command

    def cameras_changed(self) -> None:
        """After a config reload: a new camera starts with detection on."""
        with self._lock:
            for cam in self._cameras():
                self.detect.setdefault(cam, True)

    def states(self) -> list[tuple[str, str]]:
        """(topic, payload) of every retained state to publish on a (re)connect."""
        with self._lock:
            detect, feedback = dict(self.detect), dict(self._feedback_state)
        return ([(self.topics.detect_state(cam), ON if on else OFF) for cam, on in detect.items()]
                + [(self.topics.feedback_state(cam), verdict) for cam, verdict in feedback.items()])

    def retained_commands(self) -> dict[str, str]:
        with self._lock:
            return dict(self._retained_commands)

    def handle(self, topic: str, payload: bytes, retained: bool) -> None:
        """A message on ``detect/set`` or ``feedback/set`` (paho's network thread)."""
        if topic.endswith("/feedback/set"):
            self.handle_feedback(topic, payload, retained=retained)
        else:
            self.handle_command(topic, payload, retained=retained)

    def handle_command(self, topic: str, payload: bytes, retained: bool = False) -> None:
        camera = parse_command_topic(topic, self.topics, self._cameras())
        enabled = parse_command(payload) if camera is not None else None
        if camera is None or enabled is None:
            log.warning("mqtt_command_ignored", topic=topic[:200], payload=repr(payload[:MAX_COMMAND_BYTES]))
            return
        if self._commands is not None:
            try:
                self._commands(camera, enabled)
            except Exception:
                log.exception("mqtt_command_failed", camera=camera, enabled=enabled)
                return
        if retained:
            with self._lock:
                self._retained_commands[camera] = ON if enabled else OFF
            log.warning("mqtt_retained_command", camera=camera, detect=enabled, topic=topic,
                        consequence="a retained command applies again at every start",
                        clear_with=f"mosquitto_pub -r -n -t {topic}")
        else:
            with self._lock:
                self._retained_commands.pop(camera, None)
            log.info("mqtt_command", camera=camera, detect=enabled)
        self.set_detect_state(camera, enabled)

    def handle_feedback(self, topic: str, payload: bytes, retained: bool) -> None:
        parsed = parse_feedback(topic, payload, self.topics, self._cameras())
        if parsed is None or retained:  # a retained verdict would land on whichever event is latest
            log.warning("mqtt_feedback_ignored", topic=topic[:200], payload=repr(payload[:64]),
                        why="retained" if parsed is not None else "not raccoon | not_raccoon | none | JSON")
            return
        camera, event_id, label = parsed
        stored = self._feedback(event_id, camera, label, "mqtt") if self._feedback is not None else None
        if stored is None:
            log.warning("mqtt_feedback_no_event", camera=camera, event_id=(event_id or "")[:80])

    def set_detect_state(self, camera: str, enabled: bool) -> None:
        """Report a detection on/off change made elsewhere (e.g. config reload) on detect/state."""
        with self._lock:
            self.detect[camera] = enabled
        self._direct(self.topics.detect_state(camera), ON if enabled else OFF, True)

    def feedback_changed(self, event_id: str, label: str | None, source: str = "") -> None:
        """A verdict was stored (from any source): ``P/<camera>/feedback`` says so for every alert
        (through the outbox, like event messages), and the retained select state follows it when the
        event is its camera's latest alert. A detection's verdict is not published: MQTT never saw it."""
        row = self.store.get_event(event_id)
        if row is None or row.severity != Severity.ALERT.value:
            return
        camera = row.camera
        body = json.dumps({"id": event_id, "camera": camera, "label": label, "source": source}).encode()
        self.store.enqueue(self.sink, f"{event_id}:feedback:{time.time():.6f}", body,
                           {"topic": self.topics.feedback(camera), "retain": False})
        self._wake()
        if self.store.latest_event_id(camera, Severity.ALERT.value) == event_id:
            self.set_feedback_state(camera, label or FEEDBACK_NONE)

    def set_feedback_state(self, camera: str, verdict: str) -> None:
        with self._lock:
            self._feedback_state[camera] = verdict
        self._direct(self.topics.feedback_state(camera), verdict, True)
