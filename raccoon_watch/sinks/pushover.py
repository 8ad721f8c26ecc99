"""PushoverSink: one push per event START, with the snapshot attached, delivered through the outbox.

Flow: ``publish(event)`` (router thread) decides whether the event pushes (START only; not
``in_cooldown``; label filter; quiet hours -> recorded in the store by the router, not pushed),
writes the delivery to the outbox (key = event id) and wakes the sender thread. It never touches
the network, so a stalled Pushover cannot delay detection or the other sinks. The sender thread
drains the outbox one push at a time (which also keeps us far below Pushover's concurrency limits),
in order while the oldest pending push is failing only briefly: a push that has failed
``HEAD_OF_LINE_ATTEMPTS`` times no longer holds back the later ones (they go out while it keeps
retrying with back-off), so one stuck push cannot silence every later alert. Order is not a
promise Pushover makes anyway (each push carries its event's own timestamp).

Retry times run on ``time.monotonic()`` (kept in memory, row id -> due time), so an NTP step of
the wall clock neither delays nor hurries a retry; the outbox row's ``retry_at`` (wall clock) is
only the record. A restarted process retries its pending rows at once.

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
  * network error, timeout, 5xx, non-JSON,
    JSON that is not an object, a 2xx
    without ``status: 1``, any other error -> ``pushover_retry``; retried after
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

from raccoon_watch.backoff import backoff_delay
from raccoon_watch.config import PushoverConfig, QuietHours
from raccoon_watch.logs import clip
from raccoon_watch.store import EventStore, OutboxItem
from raccoon_watch.types import Event, EventKind

log = structlog.get_logger(__name__)

MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024  # Pushover's documented attachment limit
EMERGENCY = 2
HEAD_OF_LINE_ATTEMPTS = 3  # failures after which the oldest pending push stops holding back the rest
SCAN_ROWS = 50  # pending rows looked at per step for one that is due


class _ServerError(Exception):
    """5xx from Pushover: retry with backoff."""


class _RateLimited(Exception):
    """429 from Pushover: retry in ``retry_in`` seconds if known."""

    def __init__(self, message: str, retry_in: float | None) -> None:
        super().__init__(message)
        self.retry_in = retry_in


class _BadReply(Exception):
    """An answer that is neither a success nor a rejection (e.g. ``[]``): retry with backoff."""


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
            raise _RateLimited(f"HTTP 429: {clip(resp.text)}", _reset_in(resp))
        if resp.status_code >= 500:
            raise _ServerError(f"HTTP {resp.status_code}: {clip(resp.text)}")
        _check_reply(resp)
        return resp


def _check_reply(resp: requests.Response) -> None:
    """Let pushover-complete see only the two answers it understands: a JSON object with
    ``status: 1`` on 2xx, or a JSON object with a list of ``errors`` on 4xx. A non-JSON body is
    left to it (requests raises ValueError, retried)."""
    try:
        body = resp.json()
    except ValueError:
        return
    if not isinstance(body, dict):
        raise _BadReply(f"HTTP {resp.status_code}: reply is JSON {type(body).__name__}, not an object: "
                        f"{clip(resp.text)}")
    if resp.status_code < 300 and body.get("status") != 1:
        raise _BadReply(f"HTTP {resp.status_code}: reply without status 1: {clip(resp.text)}")
    if resp.status_code >= 300 and not (isinstance(body.get("errors"), list)
                                        and all(isinstance(e, str) for e in body["errors"])):
        raise _BadReply(f"HTTP {resp.status_code}: reply without a list of errors: {clip(resp.text)}")


def _reset_in(resp: requests.Response) -> float | None:
    """Seconds until a 429 may be retried, from Pushover's headers; None if not said.

    ``X-Limit-App-Reset`` is a Unix time, so it is compared with the wall clock once, here."""
    reset = resp.headers.get("X-Limit-App-Reset")
    if reset and reset.isdigit():
        return float(reset) + 1.0 - time.time()  # whole seconds: retry just after the reset
    after = resp.headers.get("Retry-After")
    if after and after.isdigit():
        return float(after)
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
        mono: Callable[[], float] = time.monotonic,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        rate_limit_max: float = 3600.0,
        poll_s: float = 1.0,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self._clock = clock  # wall clock: records and the delay shown in logs only
        self._mono = mono  # every wait and back-off
        self._due: dict[int, float] = {}  # outbox row id -> monotonic time of its next attempt
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
        """Send the oldest due push; return how long to wait before the next step.

        Rows are looked at oldest first; one not yet due holds back the later ones only while it
        has failed fewer than ``HEAD_OF_LINE_ATTEMPTS`` times."""
        rows = self.store.pending(self.name, limit=SCAN_ROWS)
        now = self._mono()
        wait = self._poll_s
        for item in rows:
            due_in = self._due.get(item.id, now) - now
            if due_in <= 0:
                self._deliver(item)
                return 0.0
            wait = min(wait, due_in)
            if item.attempts < HEAD_OF_LINE_ATTEMPTS:
                break
        return wait

    def _later(self, item: OutboxItem, delay: float, error: str) -> None:
        """Keep the row pending and try it again in ``delay`` seconds (monotonic)."""
        self._due[item.id] = self._mono() + delay
        self.store.mark_failed(item.id, error, retry_at=self._clock() + delay)
        self.retries += 1

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
            self._due.pop(item.id, None)
            self.store.mark_failed(item.id, f"rejected: {clip(str(exc))}", retry_at=None)
            log.error("pushover_rejected", event_id=event_id, camera=camera, errors=clip(str(exc)), retried=False)
            return
        except _RateLimited as exc:
            delay = exc.retry_in if exc.retry_in is not None else self.backoff_max
            delay = max(min(delay, self.rate_limit_max), self.backoff_base)
            self._later(item, delay, str(exc))
            log.warning("pushover_rate_limited", event_id=event_id, retry_in_s=round(delay, 1))
            return
        except Exception as exc:  # noqa: BLE001
            # network errors, timeouts, 5xx, non-JSON (ValueError), and any answer that is neither a
            # success nor a rejection: none can be trusted as either, so the push is retried.
            self._retry_later(item, event_id, exc)
            return
        self._due.pop(item.id, None)
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
        error = f"{type(exc).__name__}: {clip(str(exc))}"
        self._later(item, delay, error)
        log.warning("pushover_retry", event_id=event_id, attempt=item.attempts + 1, retry_in_s=delay, error=error)
