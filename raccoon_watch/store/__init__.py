"""The event store: SQLite record of every event, its media files, and the delivery outbox.

One object, ``EventStore``, for the callers (router, sinks, clips, the page, retention), built from
one part per job, each in its own module:

- ``db.py``: ``events.db`` kept working through damage, deletion and a full disk (memory fallback,
  back to disk); ``schema.py``: its tables and state values; ``salvage.py``: rows read out of a
  damaged file, a memory database merged back;
- ``events.py``: event rows, read as frozen ``EventRow`` values;
- ``outbox.py``: deliveries written before they are tried, read as ``OutboxRow``;
- ``media.py``: snapshots, frames and clips on disk, held in memory while the disk refuses them, and
  retention (``retention.py``: the pure plan of what to delete);
- ``lock.py``: one daemon per storage folder.

Failure policy: the store never raises into its caller for storage problems (``db.py`` says how).
Durability: ``synchronous=NORMAL`` in WAL mode survives a process crash / ``kill -9`` (the case
the outbox exists for); only an OS crash or power loss can lose the last transactions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import structlog

from raccoon_watch.store.events import EventRows
from raccoon_watch.store.outbox import Outbox
from raccoon_watch.store.retention import RetentionPolicy

log = structlog.get_logger(__name__)


class EventStore(EventRows, Outbox):
    """SQLite event store + outbox + media; thread-safe (one connection, one lock)."""

    def __init__(self, path: Path, retention: RetentionPolicy | None = None, outbox_max: int = 10000, *,
                 clock: Any = time.time) -> None:
        super().__init__(path, retention=retention, outbox_max=outbox_max, clock=clock)

    def sweep(self, now: float | None = None) -> dict[str, int]:
        """The retention limits once more (the age limit is the one that needs it: nothing is
        written for days), then prune finished outbox rows older than the retention (at least a
        day). Call it hourly."""
        now = self._clock() if now is None else now
        plan = self.sweep_media(now)
        pruned = self.prune_outbox(now - max(self.retention.days, 1.0) * 86400)
        result = {"media_deleted": len(plan.delete), "bytes_freed": sum(f.size for f in plan.delete),
                  "outbox_pruned": pruned}
        log.info("store_swept", **result)
        return result
