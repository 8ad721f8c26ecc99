"""build_sinks: the enabled sinks for a config, LogSink first and always.

Wiring (done by the app): one ``EventStore`` for the process; the router thread calls
``store.record(event)`` and then ``sink.publish(event)`` for every sink; ``start()`` each sink after
building, ``stop()`` in reverse order; ``store.sweep()`` hourly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from raccoon_watch.config import Config
from raccoon_watch.sinks.base import Sink
from raccoon_watch.sinks.log import LogSink
from raccoon_watch.sinks.mqtt_control import FeedbackFn
from raccoon_watch.store import EventStore
from raccoon_watch.support.logs import register_secret
from raccoon_watch.types import Event, PipelineStats


def watched_labels(cfg: Config) -> list[str]:
    """Every label any enabled camera raises events for, in config order, without duplicates."""
    labels = list(cfg.detector.labels)
    for cam in cfg.cameras.values():
        if cam.enabled:
            labels += cam.labels or []
    return list(dict.fromkeys(labels))


def build_sinks(
    cfg: Config,
    store: EventStore,
    commands: Callable[[str, bool], None] | None = None,
    stats: Callable[[], PipelineStats] | None = None,
    event_fields: Callable[[Event], Mapping[str, object]] | None = None,
    feedback: FeedbackFn | None = None,
) -> list[Sink]:
    """``commands(camera, enabled)`` is called for MQTT detect on/off; ``stats()`` feeds P/stats
    (its ``to_dict()``; shape documented in ``raccoon_watch.sinks.discovery``); ``event_fields(event)`` adds
    ``has_clip``/``clip_path`` to MQTT event payloads; ``feedback(event_id, camera, label, source)``
    stores a verdict sent over MQTT. Sinks are returned not yet started."""
    sinks: list[Sink] = [LogSink()]
    if cfg.mqtt is not None and cfg.mqtt.enabled:
        from raccoon_watch.sinks.mqtt import MqttSink

        if cfg.mqtt.password is not None:
            register_secret(cfg.mqtt.password.get_secret_value())
        cameras = [name for name, cam in cfg.cameras.items() if cam.enabled]
        sinks.append(MqttSink(cfg.mqtt, cameras, watched_labels(cfg), store, commands, stats,
                              event_fields=event_fields, feedback=feedback))
    if cfg.pushover is not None and cfg.pushover.enabled:
        from raccoon_watch.sinks.pushover import PushoverSink

        register_secret(cfg.pushover.token.get_secret_value())
        register_secret(cfg.pushover.user.get_secret_value())
        sinks.append(PushoverSink(cfg.pushover, store, public_url=cfg.http.public_url))
    return sinks
