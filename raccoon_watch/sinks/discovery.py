"""MQTT topic layout and Home Assistant device-based discovery payloads.

Topics (``P`` = ``mqtt.topic_prefix``, ``D`` = ``mqtt.discovery_prefix``)::

    P/available                      online/offline, retained (last will: offline)
    P/events                         Frigate-style {"type": new|update|end, "before": {}, "after": {}}
    P/stats                          JSON of the daemon's PipelineStats.to_dict(), every mqtt.stats_interval s
    P/<camera>/<label>               count of <label> in view (Frigate), retained
    P/<camera>/<label>/snapshot      best frame of the last event, JPEG bytes, retained
    P/<camera>/<label>/state         ON/OFF while an event is open (HA binary_sensor), retained
    P/<camera>/event                 {"event_type": <label>, ...} on event START (HA event), not retained
    P/<camera>/detect/state          ON/OFF, retained (HA switch state)
    P/<camera>/detect/set            ON/OFF command (HA switch command), case-insensitive
    P/<camera>/feedback              {"id", "camera", "label", "source"} on every verdict, not retained
    P/<camera>/feedback/state        raccoon | not_raccoon | none: the verdict on the camera's latest
                                     event, retained (HA select state; "none" again at each new event)
    P/<camera>/feedback/set          raccoon | not_raccoon | none for the camera's latest event, or JSON
                                     {"id": "<event id>", "label": "not_raccoon"} for any event (HA select)
    D/device/raccoon_watch_<camera>/config    device discovery, retained; empty payload removes it
    D/status                         Home Assistant's birth/will; "online" -> discovery re-published

Stats contract (what ``PipelineStats.to_dict()`` publishes for the diagnostic sensors)::

    {"cameras": {"<camera>": {"detect_fps": float, "inference_ms": float, "dropped_frames": int, ...}},
     ...anything else...}

Discovery payloads are built from frozen dataclasses and serialised with ``None`` dropped.
Device-based discovery (HA 2024.11+): one config per device with ``dev`` (device), ``o`` (origin),
shared availability (``avty_t``) and ``cmps`` (components, each with ``p`` = platform and a
``unique_id``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from raccoon_watch import __version__

PROJECT_URL = "https://github.com/raccoon-watch/raccoon_watch"
DEVICE_ID_PREFIX = "raccoon_watch_"
ON, OFF = "ON", "OFF"
ONLINE, OFFLINE = "online", "offline"
FEEDBACK_NONE = "none"
FEEDBACK_OPTIONS = (FEEDBACK_NONE, "raccoon", "not_raccoon")  # HA select options; store.FEEDBACK_LABELS + none


@dataclass(frozen=True, slots=True)
class Topics:
    """Every topic the MQTT sink uses, from the configured prefixes."""

    prefix: str
    discovery_prefix: str = "homeassistant"

    @property
    def available(self) -> str:
        return f"{self.prefix}/available"

    @property
    def events(self) -> str:
        return f"{self.prefix}/events"

    @property
    def stats(self) -> str:
        return f"{self.prefix}/stats"

    def count(self, camera: str, label: str) -> str:
        return f"{self.prefix}/{camera}/{label}"

    def snapshot(self, camera: str, label: str) -> str:
        return f"{self.prefix}/{camera}/{label}/snapshot"

    def state(self, camera: str, label: str) -> str:
        return f"{self.prefix}/{camera}/{label}/state"

    def event(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/event"

    def detect_state(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/detect/state"

    def detect_set(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/detect/set"

    @property
    def detect_set_filter(self) -> str:
        return f"{self.prefix}/+/detect/set"

    def feedback(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/feedback"

    def feedback_state(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/feedback/state"

    def feedback_set(self, camera: str) -> str:
        return f"{self.prefix}/{camera}/feedback/set"

    @property
    def feedback_set_filter(self) -> str:
        return f"{self.prefix}/+/feedback/set"

    @property
    def ha_status(self) -> str:
        return f"{self.discovery_prefix}/status"

    def discovery(self, camera: str) -> str:
        return f"{self.discovery_prefix}/device/{DEVICE_ID_PREFIX}{camera}/config"


def _drop_none(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {k: _drop_none(v) for k, v in dataclasses.asdict(obj).items() if v is not None}
    if isinstance(obj, Mapping):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, (list, tuple)):
        return [_drop_none(v) for v in obj]
    return obj


@dataclass(frozen=True, slots=True)
class Device:
    identifiers: tuple[str, ...]
    name: str
    manufacturer: str = "raccoon_watch"
    model: str = "Camera raccoon detector"
    sw_version: str = __version__


@dataclass(frozen=True, slots=True)
class Origin:
    name: str = "raccoon_watch"
    sw: str = __version__
    url: str = PROJECT_URL


@dataclass(frozen=True, slots=True)
class Component:
    """One entity of the device. ``p`` is the HA platform; unset (None) options are not sent."""

    p: str
    unique_id: str
    name: str
    state_topic: str | None = None
    command_topic: str | None = None
    image_topic: str | None = None
    content_type: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    unit_of_measurement: str | None = None
    entity_category: str | None = None
    value_template: str | None = None
    payload_on: str | None = None
    payload_off: str | None = None
    state_on: str | None = None
    state_off: str | None = None
    event_types: tuple[str, ...] | None = None
    options: tuple[str, ...] | None = None
    icon: str | None = None
    retain: bool | None = None
    qos: int | None = None


@dataclass(frozen=True, slots=True)
class DeviceDiscovery:
    """The whole device config; field names are HA's abbreviations for the top-level keys."""

    dev: Device
    o: Origin
    avty_t: str
    cmps: Mapping[str, Component]
    pl_avail: str = ONLINE
    pl_not_avail: str = OFFLINE
    qos: int | None = None

    def to_json(self) -> bytes:
        body = _drop_none({
            "dev": self.dev,
            "o": self.o,
            "avty_t": self.avty_t,
            "pl_avail": self.pl_avail,
            "pl_not_avail": self.pl_not_avail,
            "qos": self.qos,
            "cmps": dict(self.cmps),
        })
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


# diagnostic sensors: (key in PipelineStats.to_dict()["cameras"][camera], name, unit, device_class, state_class)
DIAGNOSTICS: tuple[tuple[str, str, str | None, str | None, str], ...] = (
    ("detect_fps", "Detector fps", "fps", None, "measurement"),
    ("inference_ms", "Inference time", "ms", "duration", "measurement"),
    ("dropped_frames", "Dropped frames", None, None, "total_increasing"),
)


def camera_discovery(camera: str, labels: Iterable[str], topics: Topics, qos: int = 1) -> DeviceDiscovery:
    """Device discovery for one camera: occupancy/count/image per label, event, switch, diagnostics."""
    uid = f"{DEVICE_ID_PREFIX}{camera}"
    labels = list(dict.fromkeys(labels))
    cmps: dict[str, Component] = {}
    for label in labels:
        title = label.replace("_", " ").capitalize()
        cmps[f"{label}_occupancy"] = Component(
            p="binary_sensor", unique_id=f"{uid}_{label}_occupancy", name=f"{title} present",
            state_topic=topics.state(camera, label), device_class="occupancy", payload_on=ON, payload_off=OFF,
        )
        cmps[f"{label}_count"] = Component(
            p="sensor", unique_id=f"{uid}_{label}_count", name=f"{title} count",
            state_topic=topics.count(camera, label), state_class="measurement", icon="mdi:counter",
        )
        cmps[f"{label}_snapshot"] = Component(
            p="image", unique_id=f"{uid}_{label}_snapshot", name=f"{title} snapshot",
            image_topic=topics.snapshot(camera, label), content_type="image/jpeg",
        )
    cmps["event"] = Component(
        p="event", unique_id=f"{uid}_event", name="Detection", state_topic=topics.event(camera),
        event_types=tuple(labels), icon="mdi:paw",
    )
    cmps["detect"] = Component(
        p="switch", unique_id=f"{uid}_detect", name="Detection enabled", state_topic=topics.detect_state(camera),
        command_topic=topics.detect_set(camera), payload_on=ON, payload_off=OFF, state_on=ON, state_off=OFF,
        icon="mdi:cctv", qos=qos,
    )
    cmps["feedback"] = Component(
        p="select", unique_id=f"{uid}_feedback", name="Last event feedback", state_topic=topics.feedback_state(camera),
        command_topic=topics.feedback_set(camera), options=FEEDBACK_OPTIONS, icon="mdi:thumbs-up-down", qos=qos,
    )
    for key, name, unit, device_class, state_class in DIAGNOSTICS:
        cmps[key] = Component(
            p="sensor", unique_id=f"{uid}_{key}", name=name, state_topic=topics.stats,
            value_template=f"{{{{ value_json.cameras['{camera}'].{key} }}}}",
            unit_of_measurement=unit, device_class=device_class, state_class=state_class,
            entity_category="diagnostic",
        )
    return DeviceDiscovery(
        dev=Device(identifiers=(uid,), name=f"Raccoon watch {camera.replace('_', ' ')}"),
        o=Origin(),
        avty_t=topics.available,
        cmps=cmps,
        qos=qos,
    )


def discovery_payloads(cameras: Iterable[str], labels: Iterable[str], topics: Topics, qos: int = 1) -> dict[str, bytes]:
    """topic -> retained payload, for every configured camera."""
    labels = list(labels)
    return {topics.discovery(cam): camera_discovery(cam, labels, topics, qos).to_json() for cam in cameras}


def digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()[:16]


def plan_discovery(
    current: Mapping[str, bytes], published: Mapping[str, str], force: bool
) -> list[tuple[str, bytes]]:
    """What to publish (retained): changed (or all, if ``force``) configs, and an empty payload for
    every topic published before that is no longer configured (a camera left the config).

    ``published`` maps topic -> digest of the payload last published (kept in the store).
    """
    out = [(topic, payload) for topic, payload in current.items() if force or published.get(topic) != digest(payload)]
    out += [(topic, b"") for topic in published if topic not in current]
    return out
