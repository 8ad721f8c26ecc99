"""PushoverSink: one push per event START, with the snapshot attached, delivered through the outbox.

Flow: ``publish(event)`` (router thread) decides whether the event pushes (START of an alert only,
never a detection; not ``in_cooldown``; label filter; quiet hours -> recorded in the store by the
router, not pushed; a detection upgraded to an alert pushes at its upgrade's START, once),
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

The request is a plain ``requests`` POST of the documented message API (https://pushover.net/api:
form fields ``token``, ``user``, ``message`` and the optional ones, the snapshot as the
``attachment`` file) to ``cfg.api_url + "messages.json"``, with ``timeout=cfg.timeout_s`` (connect and
per-read), from one ``requests.Session`` kept by the sink. pushover-complete's public
``send_message`` takes neither a base URL nor a timeout, so it is not used.

Outcomes (each logged as one event):
  * ``status: 1``                         -> ``pushover_sent``; row marked done.
  * ``_Rejected`` (4xx with ``errors``)   -> ``pushover_rejected`` with the API's errors; row marked
                                             failed, never retried (a bad token will not heal).
  * network error, timeout, 5xx, non-JSON,
    JSON that is not an object, a 2xx
    without ``status: 1``, any other error -> ``pushover_retry``; retried after
                                             ``min(backoff_base * 2**attempt, backoff_max)`` s.
  * 429 (app over quota / rate limited)   -> ``pushover_rate_limited``; retried at
                                             ``X-Limit-App-Reset`` / ``Retry-After`` (capped).

Health (``health()``, for /healthz): the outcome of the latest delivery attempt. ``ok`` after a push
went out (or before any was tried: nothing is known to be wrong); ``failing`` with a reason that
tells the failures apart: ``auth: <Pushover's errors>`` (a 4xx naming the token or the user key:
never retried), ``rejected: <errors>`` (another 4xx), ``rate limited``, ``server error: HTTP 5xx``,
``dns: name not resolved (<host>)``, ``connection refused``, ``timed out``, ``bad reply: ...``, each
with "(retrying)" when the push stays pending. A later push that goes out clears it.

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
from urllib.parse import quote, urlsplit

import requests
import structlog

from raccoon_watch.config import PushoverConfig, QuietHours
from raccoon_watch.store import EventStore
from raccoon_watch.store.outbox import OutboxRow
from raccoon_watch.support.backoff import backoff_delay
from raccoon_watch.support.logs import clip
from raccoon_watch.support.netdiag import describe_error
from raccoon_watch.types import SINK_FAILING, SINK_OK, Event, EventKind, SinkSnapshot, score_text

log = structlog.get_logger(__name__)

MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024  # Pushover's documented attachment limit
EMERGENCY = 2
HEAD_OF_LINE_ATTEMPTS = 3  # failures after which the oldest pending push stops holding back the rest
SCAN_ROWS = 50  # pending rows looked at per step for one that is due
MESSAGES_ENDPOINT = "messages.json"  # POST, relative to api_url (https://pushover.net/api)


class _Rejected(Exception):
    """4xx with Pushover's list of ``errors``: the request itself is wrong, never retried."""

    def __init__(self, status: int, errors: list[str]) -> None:
        super().__init__(f"{status}: {': '.join(errors)}")
        self.status = status
        self.errors = errors

    @property
    def auth(self) -> bool:
        """The token or the user key was refused (Pushover names them in its errors)."""
        words = " ".join(self.errors).lower()
        return self.status in (401, 403) or "token" in words or "user" in words


class _ServerError(Exception):
    """5xx from Pushover: retry with backoff."""


class _RateLimited(Exception):
    """429 from Pushover: retry in ``retry_in`` seconds if known."""

    def __init__(self, message: str, retry_in: float | None) -> None:
        super().__init__(message)
        self.retry_in = retry_in


class _BadReply(Exception):
    """An answer that is neither a success nor a rejection (e.g. ``[]``): retry with backoff."""


def send_message(session: requests.Session, cfg: PushoverConfig, meta: dict[str, Any],
                 image: tuple[str, bytes, str] | None) -> dict[str, Any]:
    """POST one message (``meta``: build_message's fields) to ``cfg.api_url``; Pushover's JSON reply.

    Raises _RateLimited (429), _ServerError (5xx), _Rejected (4xx with errors), _BadReply (any other
    JSON answer that is not ``status: 1``), ValueError (not JSON) or a requests exception."""
    fields = {"token": cfg.token.get_secret_value(), "user": cfg.user.get_secret_value(), **meta}
    resp = session.post(
        cfg.api_url + MESSAGES_ENDPOINT,
        data={k: v for k, v in fields.items() if v is not None},
        files={"attachment": image} if image is not None else None,
        timeout=cfg.timeout_s,
    )
    if resp.status_code == 429:
        raise _RateLimited(f"HTTP 429: {clip(resp.text)}", _reset_in(resp))
    if resp.status_code >= 500:
        raise _ServerError(f"HTTP {resp.status_code}: {clip(resp.text)}")
    _check_reply(resp)
    body = resp.json()
    if body.get("status") != 1:
        raise _Rejected(resp.status_code, [str(e) for e in body["errors"]])
    return body


def _check_reply(resp: requests.Response) -> None:
    """Accept only the two answers Pushover documents: a JSON object with ``status: 1`` on 2xx, or a
    JSON object with a list of ``errors`` on 4xx. A non-JSON body is left to the caller's
    ``resp.json()`` (ValueError, retried)."""
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


def failure_reason(exc: Exception, host: str | None) -> str:
    """A retried failure as a health reason: ``server error: HTTP 500``, ``bad reply: ...``, or the
    network's words (``netdiag.describe_error``: DNS, refused, timed out, TLS)."""
    if isinstance(exc, _ServerError):
        return f"server error: {str(exc).split(':', 1)[0]}"
    if isinstance(exc, requests.exceptions.JSONDecodeError):
        return "bad reply: not JSON"
    if isinstance(exc, (_BadReply, ValueError)) and not isinstance(exc, requests.RequestException):
        return f"bad reply: {clip(str(exc), 80)}"
    return describe_error(exc, host)


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
    """Pure decision: (push?, reason). Only START events of alerts of wanted labels, outside
    cooldown/quiet hours."""
    if event.kind is not EventKind.START:
        return False, "not_start"
    if not event.is_alert:
        return False, "detection"
    if cfg.labels is not None and event.label not in cfg.labels:
        return False, "label_filtered"
    if event.in_cooldown:
        return False, "cooldown"
    if in_quiet_hours(cfg.quiet_hours, dt.datetime.fromtimestamp(event.start_time).time()):
        return False, "quiet_hours"
    return True, "push"


def build_message(cfg: PushoverConfig, event: Event, public_url: str | None = None) -> dict[str, Any]:
    """The send_message keyword arguments (without user/image), kept in the outbox row's meta.

    ``public_url`` (``http.public_url``): the push links to the event's page there, so a tap opens
    its clip; ``pushover.url`` wins when it is set."""
    local = dt.datetime.fromtimestamp(event.start_time).strftime("%H:%M:%S")
    meta: dict[str, Any] = {
        "title": f"{event.label.capitalize()} at {event.camera}",
        "message": f"{event.label.capitalize()} seen at {local} (score {score_text(event.top_score)})",
        "timestamp": int(event.start_time),
        "priority": cfg.priority,
        "sound": cfg.sound,
        "device": cfg.device,
        "url": cfg.url or (f"{public_url}/events/{quote(event.id, safe='')}" if public_url else None),
        "url_title": cfg.url_title or ("Open the event" if public_url and not cfg.url else None),
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
        public_url: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.public_url = public_url
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
        self._session = requests.Session()
        self.sent = 0
        self.retries = 0
        self._outcome: tuple[str, str] = (SINK_OK, "no push tried yet")  # the latest attempt's (state, reason)

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
        self.store.enqueue(self.name, event.id, payload, build_message(self.cfg, event, self.public_url))
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=1.5)  # a stalled send stays pending and is re-sent next start
            self._thread = None
        self._session.close()

    def health(self) -> SinkSnapshot:
        """For /healthz: the latest delivery attempt's outcome (see the module doc)."""
        state, reason = self._outcome
        return SinkSnapshot(state, reason, detail={"api": urlsplit(self.cfg.api_url).netloc, "sent": self.sent})

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

    def _later(self, item: OutboxRow, delay: float, error: str) -> None:
        """Keep the row pending and try it again in ``delay`` seconds (monotonic)."""
        self._due[item.id] = self._mono() + delay
        self.store.mark_failed(item.id, error, retry_at=self._clock() + delay)
        self.retries += 1

    def _deliver(self, item: OutboxRow) -> None:
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
            body = send_message(self._session, self.cfg, meta, image)
        except _Rejected as exc:
            self._outcome = (SINK_FAILING, f"{'auth' if exc.auth else 'rejected'}: {clip('; '.join(exc.errors))} "
                                           f"(HTTP {exc.status}; not retried)")
            self._due.pop(item.id, None)
            self.store.mark_failed(item.id, f"rejected: {clip(str(exc))}", retry_at=None)
            log.error("pushover_rejected", event_id=event_id, camera=camera, errors=clip(str(exc)), retried=False)
            return
        except _RateLimited as exc:
            delay = exc.retry_in if exc.retry_in is not None else self.backoff_max
            delay = max(min(delay, self.rate_limit_max), self.backoff_base)
            self._later(item, delay, str(exc))
            self._outcome = (SINK_FAILING, f"rate limited (retrying in {delay:.0f} s)")
            log.warning("pushover_rate_limited", event_id=event_id, retry_in_s=round(delay, 1))
            return
        except Exception as exc:
            # network errors, timeouts, 5xx, non-JSON (ValueError), and any answer that is neither a
            # success nor a rejection: none can be trusted as either, so the push is retried.
            self._retry_later(item, event_id, exc)
            return
        self._due.pop(item.id, None)
        self.store.mark_done(item.id)
        self.sent += 1
        self._outcome = (SINK_OK, "the last push went out")
        log.info(
            "pushover_sent",
            event_id=event_id,
            camera=camera,
            request=body.get("request"),
            attempts=item.attempts + 1,
            send_ms=round((time.monotonic() - t0) * 1000, 1),
            delay_s=round(self._clock() - float(meta.get("timestamp", self._clock())), 1),
        )

    def _retry_later(self, item: OutboxRow, event_id: str, exc: Exception) -> None:
        delay = backoff_delay(item.attempts, self.backoff_base, self.backoff_max)
        error = f"{type(exc).__name__}: {clip(str(exc))}"
        self._later(item, delay, error)
        self._outcome = (SINK_FAILING, f"{failure_reason(exc, urlsplit(self.cfg.api_url).hostname)} (retrying)")
        log.warning("pushover_retry", event_id=event_id, attempt=item.attempts + 1, retry_in_s=delay, error=error)
