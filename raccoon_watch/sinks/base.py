"""The one interface every event sink implements.

A sink receives every Event (START, UPDATE, END) from the event router thread, detections too
(``Event.severity``); a sink that pushes to people (Pushover, MQTT and so Home Assistant) ignores
detections and sees an upgraded one first as the START with severity alert. ``publish`` must
return quickly: a sink that talks to the network records the delivery (outbox) and sends it from its
own thread, so a slow or dead service never delays detection or the other sinks.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from raccoon_watch.types import Event


@runtime_checkable
class Sink(Protocol):
    name: str

    def start(self) -> None:
        """Open connections / start sender threads. Must not raise for an unreachable service."""

    def publish(self, event: Event) -> None:
        """Accept one event; never blocks on the network."""

    def stop(self) -> None:
        """Flush what can be flushed quickly (bounded, < 2 s) and release resources."""
