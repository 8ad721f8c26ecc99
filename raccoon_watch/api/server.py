"""``raccoon-watch serve``'s ASGI app: the DeepStack / CodeProject.AI API over the daemon's recognizer.

    POST /v1/vision/detection       raccoons; with animals=1 (or serve.detection_animals) also the
                                    proposer's other animals (protocol.choose_predictions)
    POST /v1/vision/custom/raccoon  raccoons only (Frigate's ``deepstack`` detector points here)
    GET|POST /v1/vision/custom/list {"success": true, "models": ["raccoon"]}
    GET  /healthz                   {"status": "ok", "model", "workers", "queue", "answers"}: no key needed,
                                    nothing secret

Form fields (multipart/form-data): ``image`` (a file part, required), ``min_confidence`` (0..1,
default serve.min_confidence = 0.4), ``api_key``, ``animals`` (0/1, /v1/vision/detection only). The
key may also come as ``Authorization: Bearer KEY``; it is compared in constant time and never logged.

Refusals, each a JSON ``{"success": false, "code", "error"}`` with that HTTP status:

=====  ============================================================================================
400    not multipart, malformed multipart, no ``image`` file part, an ``image`` that does not decode
       (or a truncated JPEG, an empty file), a bad ``min_confidence`` or ``animals``
401    the key is missing or wrong (a server with serve.api_key; serve.keyless_clients need none)
404    another path, or a custom model other than ``raccoon``
405    a method other than POST (GET too for the list and /healthz)
408    the body did not arrive within ``BODY_TIMEOUT_S``
413    a body over serve.max_upload_mb (declared or counted while it streams: never held whole), an
       image over serve.max_megapixels (read from its header before decoding)
503    every inference thread busy and serve.queue_size requests waiting, or ``MAX_UPLOADS`` bodies
       being received at once (``Retry-After: 1``)
=====  ============================================================================================

Memory: a body is parsed as it streams by Starlette's multipart parser (python-multipart): the image
part goes to a spooled temporary file (on disk past 1 MB), and the body is counted on the way in, so
an oversized upload stops at the limit. A refused body is read to its end and dropped (at most
``DRAIN_MAX`` bytes) before the answer, so the client, still sending, gets the 413 instead of a
reset connection; past that, or when the client waits for ``100 Continue`` before sending it, the
answer goes at once and the connection closes. At most ``MAX_UPLOADS`` bodies are received at
once and at most workers + queue_size requests are admitted to inference, each holding one image.

Threads: the event loop only parses and answers. Decoding and recognition run in a pool of
serve.workers threads that live as long as the server (each keeps its own TFLite interpreters, as
the daemon's workers do); the event loop never waits on them but through ``asyncio.wrap_future``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect
from starlette.requests import Request as StarletteRequest

from raccoon_watch.config import ServeConfig
from raccoon_watch.recognition import deepstack as protocol
from raccoon_watch.recognition.recognizer import Recognizer
from raccoon_watch.support.imagefile import TOO_LARGE, decode_image
from raccoon_watch.support.logs import clip
from raccoon_watch.web.httpserver import Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

BODY_TIMEOUT_S = 30.0  # a whole request body must arrive within this
DRAIN_MAX = 64 * 1024 * 1024  # a refused body is read and dropped up to this many bytes, then the connection closes
MAX_UPLOADS = 32  # bodies received at once
MAX_FIELDS = 16  # form fields besides files
REFUSAL_LOG_EVERY_S = 10.0  # refusals of one status: one log line at most this often (a client looping on a wrong key)
MAX_FIELD = 4096  # bytes of one non-file field
VISION = "/v1/vision/"
DETECTION = "/v1/vision/detection"
CUSTOM = "/v1/vision/custom/"
LIST = "/v1/vision/custom/list"


class BodyTooLarge(Exception):
    """The body passed the upload limit while it streamed in."""


class Refusal(Exception):
    """An answer other than 200: its status, the error text and whether to close the connection."""

    def __init__(self, status: int, error: str, close: bool = False) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.close = close


class Body:
    """The request body as it streams in (``receive``), counted: over ``limit`` bytes raises
    BodyTooLarge. ``drain`` reads the rest and drops it."""

    def __init__(self, receive: Receive, limit: int) -> None:
        self._receive = receive
        self.limit = limit
        self.seen = 0
        self.done = False  # the last body message arrived (or the client left)

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            self.done = not message.get("more_body", False)
            if self.seen > self.limit:
                raise BodyTooLarge()
        else:
            self.done = True
        return message

    async def drain(self, timeout: float = BODY_TIMEOUT_S) -> bool:
        """Read what is left of the body and drop it; False when that would pass ``DRAIN_MAX`` or
        ``timeout`` (then the connection must close)."""
        try:
            async with asyncio.timeout(timeout):
                while not self.done:
                    message = await self._receive()
                    if message["type"] != "http.request":
                        return False
                    self.seen += len(message.get("body", b""))
                    self.done = not message.get("more_body", False)
                    if self.seen > DRAIN_MAX and not self.done:
                        return False
        except TimeoutError:
            return False
        return True


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an inference thread made of one upload: predictions and timings, or a refusal."""

    predictions: tuple[protocol.Prediction, ...] = ()
    width: int = 0
    height: int = 0
    inference_ms: float = 0.0
    process_ms: float = 0.0
    status: int = 200
    error: str | None = None


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


class InferencePool:
    """The recognizer and the threads that run it: at most ``workers`` images at once, and at most
    ``workers + queue_size`` admitted (running or waiting); the event loop counts admissions."""

    def __init__(self, recognizer: Recognizer, workers: int, queue_size: int, max_pixels: int,
                 label: str = protocol.CUSTOM_MODEL) -> None:
        self.recognizer = recognizer
        self.workers = workers
        self.capacity = workers + queue_size
        self.max_pixels = max_pixels
        self.admitted = 0  # event loop only
        self.peak = 0
        self.label = recognizer.params.label if recognizer.classifier is not None else label  # a raccoon's label
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inference")

    def warm_up(self) -> None:
        """One inference in each thread, so each builds its interpreters before the first request."""
        barrier = threading.Barrier(self.workers)
        grey = np.full((240, 320, 3), 128, np.uint8)

        def once() -> None:
            self.recognizer.recognize([grey])
            classifier = self.recognizer.classifier
            if classifier is not None:  # a grey frame proposes nothing: its first invoke (XNNPACK packing) now
                classifier.classify([np.full((*classifier.input_size, 3), 128, np.uint8)])
            barrier.wait(timeout=60)  # every thread holds one task: each of them warms up

        for future in [self._pool.submit(once) for _ in range(self.workers)]:
            future.result()

    def admit(self) -> bool:
        if self.admitted >= self.capacity:
            return False
        self.admitted += 1
        self.peak = max(self.peak, self.admitted)
        return True

    def release(self) -> None:
        self.admitted -= 1

    async def run(self, data: bytes, min_confidence: float, animals: bool) -> Outcome:
        return await asyncio.wrap_future(self._pool.submit(self._infer, data, min_confidence, animals))

    def _infer(self, data: bytes, min_confidence: float, animals: bool) -> Outcome:
        t0 = time.perf_counter()
        image, problem = decode_image(data, self.max_pixels, "serve.max_megapixels")
        if image is None:
            return Outcome(status=413 if problem and TOO_LARGE in problem else 400, error=f"image: {problem}")
        t1 = time.perf_counter()
        found = self.recognizer.recognize([image])[0]
        t2 = time.perf_counter()
        chosen = protocol.choose_predictions(found, self.label, min_confidence, animals)
        height, width = image.shape[:2]
        return Outcome(tuple(chosen), width, height, (t2 - t1) * 1000.0, (time.perf_counter() - t0) * 1000.0)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.recognizer.close()


class DeepStackApi:
    """The ASGI app. ``answers`` counts responses by status (read by /healthz and the tests)."""

    def __init__(self, pool: InferencePool, cfg: ServeConfig, model: str = "") -> None:
        self.pool = pool
        self.cfg = cfg
        self.model = model
        self.limit = int(cfg.max_upload_mb * 1_000_000)
        self._key = _digest(cfg.api_key.get_secret_value()) if cfg.api_key is not None else None
        self._keyless = tuple(ipaddress.ip_network(n, strict=False) for n in cfg.keyless_clients)
        self.uploads = 0  # bodies being received now (event loop only)
        self.answers: Counter[int] = Counter()
        self.started = time.monotonic()
        self._logged_at: dict[int, float] = {}  # status -> when its last refusal was logged
        self._unlogged: Counter[int] = Counter()  # refusals since then, not logged

    # --- entry point (event loop) --------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        t0 = time.perf_counter()
        body = Body(receive, self.limit)
        path, method = scope["path"], scope["method"]
        command = "list" if path == LIST else ("detect" if path == DETECTION else "custom")
        try:
            status, answer, close = 200, await self._route(scope, body, path, method, t0), False
        except Refusal as refusal:
            status, answer, close = refusal.status, protocol.error_body(refusal.status, refusal.error, command), refusal.close
        except ClientDisconnect:
            log.debug("api_client_gone", path=clip(path, 80))
            return
        except Exception as exc:  # a bug must not kill the server: a 500, logged
            log.error("api_handler_failed", path=clip(path, 80), error=clip(repr(exc)))
            status, answer, close = 500, protocol.error_body(500, "internal error", command), True
        if status != 200 and not body.done and not close:
            headers = dict(scope["headers"])
            declared = headers.get(b"content-length", b"")
            if headers.get(b"expect", b"").lower() == b"100-continue" or (declared.isdigit() and int(declared) > DRAIN_MAX):
                close = True  # it has not sent the body yet (it waits for 100 Continue), or it is too big to read
            else:
                close = not await body.drain()  # the client, still sending, gets the answer, not a reset
        self.answers[status] += 1
        if status >= 400:
            self._log_refusal(status, path, answer.get("error", ""), _peer(scope))
        await _send_json(send, status, answer, close)

    def _log_refusal(self, status: int, path: str, error: str, client: str) -> None:
        """One line per status per ``REFUSAL_LOG_EVERY_S``, saying how many it stands for; never the key."""
        now = time.monotonic()
        if now - self._logged_at.get(status, -REFUSAL_LOG_EVERY_S) < REFUSAL_LOG_EVERY_S:
            self._unlogged[status] += 1
            return
        self._logged_at[status] = now
        (log.error if status >= 500 else log.info)(
            "api_refused", path=clip(path, 80), status=status, error=clip(error, 200), client=client,
            more_since_last=self._unlogged.pop(status, 0))

    async def _route(self, scope: Scope, body: Body, path: str, method: str, t0: float) -> dict[str, Any]:
        if path == "/healthz":
            if method != "GET":
                raise Refusal(405, "use GET for /healthz")
            return self.health()
        if path == LIST:
            if method not in ("GET", "POST"):
                raise Refusal(405, f"use GET or POST for {LIST}")
            if method == "POST":
                form = await self._form(scope, body, required=False)
                self._authorize(scope, form)
                await form.close()
            else:
                self._authorize(scope, None)
            return protocol.list_body([protocol.CUSTOM_MODEL])
        if path == DETECTION:
            custom = False
        elif path.startswith(CUSTOM):
            name = path[len(CUSTOM):]
            if name != protocol.CUSTOM_MODEL:
                raise Refusal(404, f"no custom model {clip(name, 60)!r} here: this server has "
                                   f"{protocol.CUSTOM_MODEL!r} (see {LIST})")
            custom = True
        else:
            raise Refusal(404, f"no endpoint at {clip(path, 80)}: use {CUSTOM}{protocol.CUSTOM_MODEL} or {DETECTION}")
        if method != "POST":
            raise Refusal(405, f"use POST (multipart/form-data with an image file field) for {clip(path, 80)}")
        return await self._vision(scope, body, custom, t0)

    async def _vision(self, scope: Scope, body: Body, custom: bool, t0: float) -> dict[str, Any]:
        form = await self._form(scope, body, required=True)
        try:
            self._authorize(scope, form)
            image = form.get("image")
            if image is None:
                raise Refusal(400, "missing the image field: send the picture as a multipart file field named 'image'")
            if not isinstance(image, UploadFile):
                raise Refusal(400, "the image field must be a file part (Content-Disposition with a filename), "
                                   "not a text field")
            try:
                min_confidence = protocol.parse_confidence(_text(form, "min_confidence"), self.cfg.min_confidence)
                animals = False if custom else protocol.parse_flag(_text(form, "animals"), self.cfg.detection_animals,
                                                                   "animals")
            except ValueError as exc:
                raise Refusal(400, str(exc)) from None
            if not self.pool.admit():
                raise Refusal(503, f"busy: {self.pool.workers} inference threads at work and "
                                   f"{self.pool.capacity - self.pool.workers} requests waiting; try again")
            try:
                data = await image.read()
                outcome = await self.pool.run(data, min_confidence, animals)
            finally:
                self.pool.release()
        finally:
            await form.close()
        if outcome.error is not None:
            raise Refusal(outcome.status, outcome.error)
        return protocol.success_body(outcome.predictions, outcome.width, outcome.height,
                                     "custom" if custom else "detect", outcome.inference_ms, outcome.process_ms,
                                     (time.perf_counter() - t0) * 1000.0)

    async def _form(self, scope: Scope, body: Body, required: bool) -> FormData:
        """The multipart form, parsed as it streams in, within the size and time limits."""
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (len(declared) > 12 or int(declared) > self.limit):
            raise Refusal(413, f"the upload is {int(declared) / 1e6:.1f} MB, over the limit of "
                               f"{self.cfg.max_upload_mb:g} MB (serve.max_upload_mb)")
        content_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if content_type != b"multipart/form-data" and (required or content_type != b"application/x-www-form-urlencoded"):
            if not required and declared in (None, b"0"):
                return FormData()
            raise Refusal(400, "send multipart/form-data with the picture as a file field named 'image' "
                               f"(got Content-Type {clip(content_type.decode('latin-1'), 60) or 'none'})")
        if self.uploads >= MAX_UPLOADS:
            raise Refusal(503, f"busy: {MAX_UPLOADS} uploads arriving at once; try again")
        self.uploads += 1
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                request = StarletteRequest(scope, body.receive)
                return await request.form(max_files=2, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD)
        except BodyTooLarge:
            raise Refusal(413, f"the upload is over the limit of {self.cfg.max_upload_mb:g} MB (serve.max_upload_mb)") from None
        except TimeoutError:
            raise Refusal(408, f"the request body did not arrive within {BODY_TIMEOUT_S:.0f} s", close=True) from None
        except (MultiPartException, HTTPException) as exc:
            detail = getattr(exc, "message", None) or getattr(exc, "detail", None) or "invalid multipart data"
            raise Refusal(400, f"malformed multipart/form-data: {clip(str(detail), 120)}") from None
        finally:
            self.uploads -= 1

    def _authorize(self, scope: Scope, form: FormData | None) -> None:
        """Let the request in (no key configured, a keyless client, the right key) or raise 401."""
        if self._key is None or self._keyless_peer(scope):
            return
        given = _text(form, "api_key") if form is not None else None
        if not given:
            auth = dict(scope["headers"]).get(b"authorization", b"").decode("latin-1")
            if auth[:7].lower() == "bearer ":
                given = auth[7:].strip()
        if not given:
            raise Refusal(401, "this server needs an API key: send it as the api_key form field "
                               "(Frigate: api_key in the deepstack detector)")
        if not hmac.compare_digest(_digest(given), self._key):
            raise Refusal(401, "wrong API key")

    def _keyless_peer(self, scope: Scope) -> bool:
        if not self._keyless or not scope.get("client"):
            return False
        try:
            address = ipaddress.ip_address(scope["client"][0].split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self._keyless)

    def health(self) -> dict[str, Any]:
        rec = self.pool.recognizer
        return {
            "status": "ok",
            "model": self.model,
            "recognizer": rec.name,
            "thresholds": {"color": rec.threshold, "ir": rec.threshold_for("ir")},
            "workers": self.pool.workers,
            "queue": {"admitted": self.pool.admitted, "capacity": self.pool.capacity, "peak": self.pool.peak},
            "answers": {str(k): v for k, v in sorted(self.answers.items())},
            "api_key": self._key is not None,
            "uptime_s": round(time.monotonic() - self.started, 1),
        }


def _text(form: FormData | None, name: str) -> str | None:
    value = form.get(name) if form is not None else None
    return value if isinstance(value, str) else None


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


async def _send_json(send: Send, status: int, body: dict[str, Any], close: bool) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
               (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]
    if status == 503:
        headers.append((b"retry-after", b"1"))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


def endpoints() -> Sequence[str]:
    return (DETECTION, f"{CUSTOM}{protocol.CUSTOM_MODEL}", LIST, "/healthz")
