"""The store's outbox: every delivery a network sink makes, written before it is tried.

Outbox: every delivery a network sink makes (one push, one MQTT message) is written here *before*
it is attempted and marked done only when the other side acknowledged it. Rows are unique per
``(sink, key)`` so re-enqueueing the same delivery (e.g. after a restart replays an event) is a
no-op. States: ``pending`` -> ``done`` (acknowledged) | ``failed`` (rejected for good) |
``dropped`` (evicted by the bound). Payloads of finished rows are cleared to free space; the rows
themselves stay (so the key stays known) until the retention sweep prunes them.

Bound policy: at most ``outbox_max`` *pending* rows per sink. Enqueueing beyond that evicts that
sink's oldest pending rows (state ``dropped``) and logs ``outbox_dropped`` with the counts: the
newest alerts are the ones worth having after a long outage.

"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from raccoon_watch.store.db import Database
from raccoon_watch.store.schema import DONE, DROPPED, FAILED, PENDING
from raccoon_watch.types import DeliveryCounts

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One pending delivery. ``payload`` is bytes (text payloads are stored UTF-8 encoded); times are
    wall clock (``retry_at`` 0: now)."""

    id: int
    sink: str
    key: str
    payload: bytes
    meta: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    retry_at: float = 0.0
    created: float = 0.0


class Outbox(Database):
    """Deliveries per sink, unique per ``(sink, key)``, at most ``outbox_max`` pending per sink."""

    def __init__(self, path: Path, *, outbox_max: int = 10000, **rest: Any) -> None:
        self.outbox_max = outbox_max
        super().__init__(path, **rest)

    def enqueue(self, sink: str, key: str, payload: bytes | str, meta: Mapping[str, Any] | None = None) -> int:
        """Record one delivery; returns its row id. Same (sink, key) again: no-op, existing id."""
        return self.enqueue_many(sink, [(key, payload, meta or {})])[0]

    def enqueue_many(
        self, sink: str, items: Iterable[tuple[str, bytes | str, Mapping[str, Any]]]
    ) -> list[int]:
        """Several deliveries in one transaction (in order); returns their row ids."""
        rows = [
            (sink, key, payload.encode() if isinstance(payload, str) else bytes(payload), json.dumps(dict(meta)))
            for key, payload, meta in items
        ]

        def ops(conn: sqlite3.Connection) -> tuple[list[int], int, int]:
            now = self._clock()
            ids = []
            for s, key, payload, meta in rows:
                cur = conn.execute(
                    "INSERT INTO outbox (sink, key, payload, meta, state, created, updated)"
                    " VALUES (?,?,?,?,?,?,?) ON CONFLICT(sink, key) DO NOTHING",
                    (s, key, payload, meta, PENDING, now, now),
                )
                if cur.rowcount and cur.lastrowid is not None:
                    ids.append(cur.lastrowid)
                else:
                    ids.append(int(conn.execute("SELECT id FROM outbox WHERE sink=? AND key=?", (s, key)).fetchone()[0]))
            dropped, pending = self._enforce_bound(conn, sink, now)
            return ids, dropped, pending

        try:
            ids, dropped, pending = self._write(ops, "outbox")
        except sqlite3.Error as exc:  # even the memory DB failed: nothing sensible left to do
            log.error("store_write_failed", what="outbox", sink=sink, reason=str(exc))
            return [-1] * len(rows)
        if dropped:
            log.warning("outbox_dropped", sink=sink, dropped=dropped, pending=pending, outbox_max=self.outbox_max,
                        policy="oldest pending first")
        return ids

    def _enforce_bound(self, conn: sqlite3.Connection, sink: str, now: float) -> tuple[int, int]:
        pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE sink=? AND state=?", (sink, PENDING)).fetchone()[0]
        excess = pending - self.outbox_max
        if excess <= 0:
            return 0, pending
        conn.execute(
            "UPDATE outbox SET state=?, payload=NULL, error='evicted by outbox_max', updated=? WHERE id IN ("
            " SELECT id FROM outbox WHERE sink=? AND state=? ORDER BY id LIMIT ?)",
            (DROPPED, now, sink, PENDING, excess),
        )
        return excess, pending - excess

    def pending(self, sink: str, limit: int = 100) -> list[OutboxRow]:
        """Pending deliveries of ``sink`` in insertion order (including ones waiting for retry_at)."""
        rows = self._read(
            lambda conn: conn.execute(
                "SELECT id, sink, key, payload, meta, attempts, retry_at, created FROM outbox"
                " WHERE sink=? AND state=? ORDER BY id LIMIT ?",
                (sink, PENDING, int(limit)),
            ).fetchall(),
            [],
        )
        return [
            OutboxRow(id=r[0], sink=r[1], key=r[2], payload=bytes(r[3] or b""), meta=json.loads(r[4]),
                       attempts=r[5], retry_at=r[6], created=r[7])
            for r in rows
        ]

    def mark_done(self, item_id: int) -> None:
        self._finish(item_id, DONE, None)

    def mark_failed(self, item_id: int, error: str, retry_at: float | None = None) -> None:
        """``retry_at`` (wall clock) given: stays pending, attempts+1. None: failed for good."""
        if retry_at is None:
            self._finish(item_id, FAILED, error)
            return
        self._safe_write(
            lambda c: c.execute(
                "UPDATE outbox SET attempts=attempts+1, retry_at=?, error=?, updated=? WHERE id=? AND state=?",
                (retry_at, error[:500], self._clock(), item_id, PENDING),
            ),
            "outbox",
        )

    def _finish(self, item_id: int, state: str, error: str | None) -> None:
        self._safe_write(
            lambda c: c.execute(
                "UPDATE outbox SET state=?, payload=NULL, error=?, updated=?,"
                " attempts=attempts+1 WHERE id=? AND state=?",
                (state, error[:500] if error else None, self._clock(), item_id, PENDING),
            ),
            "outbox",
        )

    def _count(self, sink: str, state: str) -> int:
        return int(self._read(
            lambda conn: conn.execute("SELECT COUNT(*) FROM outbox WHERE sink=? AND state=?", (sink, state)).fetchone()[0],
            0,
        ))

    def pending_count(self, sink: str) -> int:
        return self._count(sink, PENDING)

    def failed_count(self, sink: str) -> int:
        return self._count(sink, FAILED)

    def dropped_count(self, sink: str) -> int:
        return self._count(sink, DROPPED)

    def outbox_state(self, sink: str, key: str) -> str | None:
        row = self._read(
            lambda conn: conn.execute("SELECT state FROM outbox WHERE sink=? AND key=?", (sink, key)).fetchone(), None,
        )
        return row[0] if row else None

    def delivery_counts(self, sink: str) -> DeliveryCounts:
        """``sink``'s outbox now: pending, failed for good, dropped by the bound."""
        return DeliveryCounts(self.pending_count(sink), self.failed_count(sink), self.dropped_count(sink))


    def prune_outbox(self, older_than: float) -> int:
        """Delete finished rows (done, failed, dropped) last updated before ``older_than`` (wall
        clock); how many went. Pending rows are never pruned."""
        try:
            return self._write(lambda c: c.execute("DELETE FROM outbox WHERE state != ? AND updated < ?",
                                                   (PENDING, older_than)).rowcount, "sweep") or 0
        except sqlite3.Error as exc:
            log.error("store_write_failed", what="sweep", reason=str(exc))
            return 0
