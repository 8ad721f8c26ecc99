"""PushoverSink: one push per event START, with the snapshot attached, delivered through the outbox.

Flow: ``publish(event)`` (router thread) decides whether the event pushes (START only; not
``in_cooldown``; label filter; quiet hours -> recorded in the store by the router, not pushed),
writes the delivery to the outbox (key = event id) and wakes the sender thread. It never touches
the network, so a stalled Pushover cannot delay detection or the other sinks. The sender thread
drains the outbox strictly in order, one push at a time (which also keeps us far below Pushover's
concurrency limits).

How pushover-complete is made safe to use (its ``send_message`` calls ``requests.post`` with no
timeout, against the module constant ``PUSHOVER_API_URL``): we call its documented
``PushoverAPI._send_message(..., session=...)`` hook with our own ``requests.Session`` subclass,
``_PushoverSession``, whose ``request()``
  * rewrites the URL prefix ``PUSHOVER_API_URL`` -> ``cfg.api_url`` (per session, so no global is
    mutated and concurrent senders with other URLs are unaffected: thread-safe by construction),
  * applies ``timeout=cfg.timeout_s`` to every request (connect and per-read),
  * turns 5xx and 429 answers into our own exceptions *before* pushover-complete parses them, so a
    server error is retried instead of being mistaken for a rejected request.

Outcomes (each logged as one event):
  * ``status: 1``                         -> ``pushover_sent``; row marked done.
  * ``BadAPIRequestError`` (4xx)          -> ``pushover_rejected`` with the API's errors; row marked
                                             failed, never retried (a bad token will not heal).
  * network error, timeout, 5xx, non-JSON -> ``pushover_retry``; retried after
                                             ``min(backoff_base * 2**attempt, backoff_max)`` s.
  * 429 (app over quota / rate limited)   -> ``pushover_rate_limited``; retried at
                                             ``X-Limit-App-Reset`` / ``Retry-After`` (capped).

Idempotency: the outbox key is the event id, so a restart re-sends exactly the pushes that were not
acknowledged. Pushover has no idempotency key of its own, so one window remains where a push can
arrive twice: the daemon dies after Pushover answered ``status: 1`` but before ``mark_done``
committed (a few milliseconds per push), or the answer was lost on the network (a timeout after
Pushover accepted it). At most one duplicate per push, never a loss.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

import requests
import structlog
from pushover_complete import PushoverAPI
from pushover_complete import pushover_api as _po_module
from pushover_complete.error import BadAPIRequestError

from raccoon_watch.config import PushoverConfig, QuietHours
from raccoon_watch.store import EventStore, OutboxItem
from raccoon_watch.types import Event, EventKind

log = structlog.get_logger(__name__)

MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024  # Pushover's documented attachment limit
EMERGENCY = 2


class _ServerError(Exception):
    """5xx from Pushover: retry with backoff."""


class _RateLimited(Exception):
    """429 from Pushover: retry at ``retry_at`` (wall clock) if known."""

    def __init__(self, message: str, retry_at: float | None) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class _PushoverSession(requests.Session):
    """requests.Session with our base URL, a timeout on every request, and 5xx/429 as exceptions."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        super().__init__()
        self.base_url = base_url
        self.timeout_s = timeout_s

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        default_base = _po_module.PUSHOVER_API_URL
        if url.startswith(default_base):
            url = self.base_url + url[len(default_base):]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_s
        resp = super().request(method, url, *args, **kwargs)
        if resp.status_code == 429:
            raise _RateLimited(f"HTTP 429: {resp.text[:200]}", _reset_time(resp))
        if resp.status_code >= 500:
            raise _ServerError(f"HTTP {resp.status_code}: {resp.text[:200]}")
        return resp


def _reset_time(resp: requests.Response) -> float | None:
    """When a 429 may be retried (wall clock), from Pushover's headers; None if not said."""
    reset = resp.headers.get("X-Limit-App-Reset")
    if reset and reset.isdigit():
        return float(reset) + 1.0  # whole seconds: retry just after, not just before, the reset
    after = resp.headers.get("Retry-After")
    if after and after.isdigit():
        return time.time() + float(after)
    return None


def in_quiet_hours(quiet: QuietHours | None, at: dt.time) -> bool:
    """True if local time ``at`` is inside [start, end); the range may wrap past midnight."""
    if quiet is None:
        return False
    start = dt.time.fromisoformat(quiet.start)
    end = dt.time.fromisoformat(quiet.end)
    if start == end:
        return False
    if start < end:
        return start <= at < end
    return at >= start or at < end


def backoff_delay(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Capped exponential backoff: ``min(base * 2**attempt, cap)`` seconds (attempt from 0)."""
    return min(base * (2 ** min(attempt, 30)), cap)


def should_push(cfg: PushoverConfig, event: Event) -> tuple[bool, str]:
    """Pure decision: (push?, reason). Only START events of wanted labels, outside cooldown/quiet hours."""
    if event.kind is not EventKind.START:
        return False, "not_start"
    if cfg.labels is not None and event.label not in cfg.labels:
        return False, "label_filtered"
    if event.in_cooldown:
        return False, "cooldown"
    if in_quiet_hours(cfg.quiet_hours, dt.datetime.fromtimestamp(event.start_time).time()):
        return False, "quiet_hours"
    return True, "push"


def build_message(cfg: PushoverConfig, event: Event) -> dict[str, Any]:
    """The send_message keyword arguments (without user/image), kept in the outbox row's meta."""
    local = dt.datetime.fromtimestamp(event.start_time).strftime("%H:%M:%S")
    meta: dict[str, Any] = {
        "title": f"{event.label.capitalize()} at {event.camera}",
        "message": f"{event.label.capitalize()} seen at {local} (score {event.top_score:.0%})",
        "timestamp": int(event.start_time),
        "priority": cfg.priority,
        "sound": cfg.sound,
        "device": cfg.device,
        "url": cfg.url,
        "url_title": cfg.url_title,
        "event_id": event.id,
        "camera": event.camera,
    }
    if cfg.priority == EMERGENCY:
        meta["retry"] = cfg.retry
        meta["expire"] = cfg.expire
    return meta


class PushoverSink:
    """Sink pushing event starts to Pushover from its own sender thread, via the store's outbox."""

    name = "pushover"

    def __init__(
        self,
        cfg: PushoverConfig,
        store: EventStore,
        clock: Callable[[], float] = time.time,
        *,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        rate_limit_max: float = 3600.0,
        poll_s: float = 1.0,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self._clock = clock
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.rate_limit_max = rate_limit_max
        self._poll_s = poll_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._api = PushoverAPI(cfg.token.get_secret_value())
        self._session = _PushoverSession(cfg.api_url, cfg.timeout_s)
        self.sent = 0
        self.retries = 0

    # --- Sink -----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pushover-sender", daemon=True)
        self._thread.start()
        pending = self.store.pending_count(self.name)
        if pending:
            log.info("pushover_resuming", pending=pending)
        self._wake.set()

    def publish(self, event: Event) -> None:
        push, reason = should_push(self.cfg, event)
        if not push:
            if reason in ("cooldown", "quiet_hours"):
                log.info("pushover_skipped", reason=reason, event_id=event.id, camera=event.camera, label=event.label)
            return
        payload = event.snapshot_jpeg or b""
        self.store.enqueue(self.name, event.id, payload, build_message(self.cfg, event))
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=1.5)  # a stalled send stays pending and is re-sent next start
            self._thread = None
        self._session.close()

    def metrics(self) -> dict[str, int]:
        return {
            "pending": self.store.pending_count(self.name),
            "failed": self.store.failed_count(self.name),
            "sent": self.sent,
            "retries": self.retries,
        }

    # --- sender thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self._step()
            except Exception:  # never let the sender die; the row stays pending
                log.exception("pushover_sender_error")
                wait = self._poll_s
            if wait > 0:
                self._wake.wait(timeout=wait)
                self._wake.clear()

    def _step(self) -> float:
        """Send the head of the outbox if due; return how long to wait before the next step."""
        head = self.store.pending(self.name, limit=1)
        if not head:
            return self._poll_s
        item = head[0]
        due_in = item.retry_at - self._clock()
        if due_in > 0:
            return min(due_in, self._poll_s)
        self._deliver(item)
        return 0.0

    def _deliver(self, item: OutboxItem) -> None:
        meta = dict(item.meta)
        event_id = meta.pop("event_id", item.key)
        camera = meta.pop("camera", None)
        image = None
        if item.payload and len(item.payload) <= MAX_ATTACHMENT_BYTES:
            image = ("snapshot.jpg", item.payload, "image/jpeg")
        elif item.payload:
            log.warning("pushover_attachment_dropped", event_id=event_id, bytes=len(item.payload))
        t0 = time.monotonic()
        try:
            body = self._api._send_message(
                self.cfg.user.get_secret_value(), image=image, session=self._session, **meta
            )
        except BadAPIRequestError as exc:
            self.store.mark_failed(item.id, f"rejected: {exc}", retry_at=None)
            log.error("pushover_rejected", event_id=event_id, camera=camera, errors=str(exc), retried=False)
            return
        except _RateLimited as exc:
            fallback = self._clock() + self.backoff_max
            retry_at = min(exc.retry_at or fallback, self._clock() + self.rate_limit_max)
            retry_at = max(retry_at, self._clock() + self.backoff_base)
            self.store.mark_failed(item.id, str(exc), retry_at=retry_at)
            self.retries += 1
            log.warning("pushover_rate_limited", event_id=event_id, retry_in_s=round(retry_at - self._clock(), 1))
            return
        except (requests.RequestException, _ServerError, ValueError, TypeError) as exc:
            # ValueError covers a non-JSON body (requests' JSONDecodeError); TypeError a body
            # without "errors"; both are answers we cannot trust as either success or rejection.
            self._retry_later(item, event_id, exc)
            return
        self.store.mark_done(item.id)
        self.sent += 1
        log.info(
            "pushover_sent",
            event_id=event_id,
            camera=camera,
            request=body.get("request"),
            attempts=item.attempts + 1,
            send_ms=round((time.monotonic() - t0) * 1000, 1),
            delay_s=round(self._clock() - float(meta.get("timestamp", self._clock())), 1),
        )

    def _retry_later(self, item: OutboxItem, event_id: str, exc: Exception) -> None:
        delay = backoff_delay(item.attempts, self.backoff_base, self.backoff_max)
        self.store.mark_failed(item.id, f"{type(exc).__name__}: {exc}", retry_at=self._clock() + delay)
        self.retries += 1
        log.warning(
            "pushover_retry",
            event_id=event_id,
            attempt=item.attempts + 1,
            retry_in_s=delay,
            error=f"{type(exc).__name__}: {str(exc)[:200]}",
        )
