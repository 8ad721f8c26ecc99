"""LogSink: every event as one structured log line; the default sink, always enabled."""

from __future__ import annotations

import structlog

from raccoon_watch.types import Event, EventKind

log = structlog.get_logger(__name__)

LOG_EVENT_NAMES = {
    EventKind.START: "event_started",
    EventKind.UPDATE: "event_updated",
    EventKind.END: "event_ended",
}


class LogSink:
    """Logs ``event_started`` / ``event_updated`` / ``event_ended`` with the event's fields.

    Every event, alerts and detections alike, with its ``severity``: a detection that is upgraded
    logs a second ``event_started`` with the same id and ``severity: "alert"``, so the
    ``event_started`` lines with ``severity: "alert"`` are each alert exactly once.
    The box is normalised (xmin, ymin, xmax, ymax), as everywhere in the daemon.
    """

    name = "log"

    def start(self) -> None:
        pass

    def publish(self, event: Event) -> None:
        log.info(
            LOG_EVENT_NAMES[event.kind],
            camera=event.camera,
            label=event.label,
            id=event.id,
            severity=event.severity.value,
            mode=event.mode,
            top_score=round(event.top_score, 4),
            box=[round(v, 4) for v in event.box],
            in_cooldown=event.in_cooldown,
            duration_s=None if event.end_time is None else round(event.end_time - event.start_time, 2),
            model_version=event.model_version,
        )

    def stop(self) -> None:
        pass
