"""Routes of the review page: an ASGI app (Starlette requests and responses, on uvicorn) that
``health.monitoring_app`` hands every path but /healthz and /metrics.

    GET  /                              event list: newest first, ?page=N&camera=NAME&day=YYYY-MM-DD
                                        &severity=alert|detection (absent or empty: both)
                                        &verdict=unreviewed|raccoon|not_raccoon (absent or empty: any)
    GET  /events/<id>                   event view: feedback buttons, next/previous within the list's
                                        filter (the same query), snapshot, clip, score chart, scores
    GET  /events/<id>/snapshot.jpg      the snapshot file the store recorded (box drawn)
    GET  /events/<id>/clip.mp4          the clip file the store recorded (Range requests for seeking)
    POST /events/<id>/feedback          label=raccoon|not_raccoon|none, csrf=<token>[, back=<path>]:
                                        303 to ``back`` (a path of this site) or the event; with
                                        ``Accept: application/json`` (the page's script) a JSON answer
    GET  /static/review.js              the list's and the event's keys and marking without a page
                                        load (progressive: every form works without it)
    GET  /live                          every camera: live image, state, last frame age, events today
    GET  /live/<camera>.mjpg            MJPEG stream, at most http.live_fps, the counted boxes drawn, or a
                                        placeholder picture saying why there is no frame (down since, reason);
                                        .jpg: one picture (X-Live-Boxes: the boxes drawn, pixel
                                        [xmin, ymin, xmax, ymax] of that JPEG)
    GET  /models, POST /models/rollback, POST /models/retrain   the site's classifier
    GET  /login, POST /login, POST /logout, GET /static/style.css

Bad input never reaches a traceback: an unknown event or camera is a 404 page, a malformed page
number, day, camera filter or Range a 400 or 416, a query string over ``MAX_QUERY`` characters a
414, a POST without the session's CSRF token a 403, a form body over ``MAX_FORM`` bytes a 413, one
not sent within ``BODY_TIMEOUT_S`` a 408, a method other than GET and POST a 501; each says what
was wrong. ``next`` after a login is only ever a path of this site (``safe_next``): anything else
(another host, a scheme, a backslash, a control or non-ASCII character) becomes ``/``. A file URL
resolves only through the store's record of the event (``media_file``): no path from the request
touches the filesystem. Every response carries the Content-Security-Policy ``CSP`` and
``X-Content-Type-Options: nosniff``; pages are ``Cache-Control: no-store``.

Threads: the event loop only parses, checks and streams; what blocks (SQLite, templates, files,
JPEG encodes) runs in worker threads, at most ``PAGE_THREADS`` at once, and argon2 runs in
``Auth.login`` (one check at a time per client).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import anyio
import anyio.to_thread
import structlog
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.requests import ClientDisconnect
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response, StreamingResponse

from raccoon_watch.config import HttpConfig
from raccoon_watch.learning import site_models
from raccoon_watch.review.live import placeholder_jpeg, placeholder_lines
from raccoon_watch.store.events import UNREVIEWED, EventRow
from raccoon_watch.store.retention import CLIP_DIR, SNAPSHOT_DIR
from raccoon_watch.store.schema import FEEDBACK_LABELS, SEVERITIES
from raccoon_watch.support.logs import clip as clip_text
from raccoon_watch.types import score_text
from raccoon_watch.web.auth import COOKIE, Auth, Bearer, Session, client_address, csrf_ok
from raccoon_watch.web.chart import duration_text, event_span, rows_in_span, score_chart_svg
from raccoon_watch.web.httpserver import Receive, Scope, Send
from raccoon_watch.web.retrain_job import RetrainJob

log = structlog.get_logger(__name__)

MAX_QUERY = 2048
MAX_FORM = 4096
MAX_PAGE = 100_000
MAX_LIVE_VIEWERS = 8
MAX_RANGE_DIGITS = 18  # a byte offset longer than this is past any file (and int() refuses 4,300 digits)
BODY_TIMEOUT_S = 5.0
LIVE_STALE_S = 10.0  # an "up" camera whose newest frame is older than this shows a placeholder
LIVE_RESEND_S = 2.0  # an unchanged live picture (a placeholder, a still file) is sent again this often
LIVE_STREAM_MAX_S = 3600.0  # a live stream ends after this, with a placeholder asking to reload
MODELS_REFRESH_S = 5  # the Classifier tab reloads itself this often while a retrain runs or a swap loads
ROLLBACK_WAIT_S = 15.0  # a roll back answers once the daemon runs the classifier it returned to (or this)
PAGE_THREADS = 8
CHUNK = 256 * 1024
EVENT_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
# a path of this site: "/" then RFC 3986 path/query characters only (no "\\", no controls, no
# spaces, no non-ASCII); not "//" or "/\\" (a browser reads both as another host)
NEXT_PATH = re.compile(r"/(?![/\\])[A-Za-z0-9\-._~!$&'()*+,;=:@/%?]*")
STATIC = Path(__file__).resolve().parent / "static"
FEEDBACK_NAMES = {"raccoon": "raccoon", "not_raccoon": "not a raccoon", None: "no verdict"}
VERDICTS = (UNREVIEWED, *FEEDBACK_LABELS)  # the list's ?verdict= filter
STATIC_FILES = {"style.css": "text/css; charset=utf-8", "review.js": "text/javascript; charset=utf-8"}


class HttpError(Exception):
    """A 4xx answer with a message for the error page."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class PageRequest:
    """One request as the routes see it (parsed from the ASGI scope; the form read when it is a POST)."""

    method: str
    path: str  # percent-decoded
    target: str  # the raw path and query, ASCII (h11 refuses anything else in a request line)
    query: dict[str, list[str]]
    client: str
    host: str
    session: Session | None
    authorization: str | None
    range: str | None
    form: dict[str, list[str]] = field(default_factory=dict)
    accept: str = ""  # the Accept header: the page's script asks for JSON
    new_cookie: Session | None = None  # a session made for this request: set its cookie
    bearer: bool = False  # let in by the bearer token (no CSRF token needed: a browser never sends one)

    def arg(self, name: str) -> str | None:
        values = self.query.get(name) or self.form.get(name)
        return values[0] if values else None


def safe_next(value: str | None) -> str:
    """Where to go after a login: ``value`` when it is a path of this site, else "/" (pure).

    Refused: another host (``//evil``, ``/\\evil``: browsers read a backslash as a slash), a
    scheme, anything but printable ASCII path and query characters (CR/LF would split the header)."""
    if value and len(value) <= MAX_QUERY and NEXT_PATH.fullmatch(value):
        return value
    return "/"


def csp(frame_ancestors: list[str]) -> str:
    """Only this site's own files: one script (``static/review.js``, no inline script anywhere), which
    may only talk to this site."""
    ancestors = " ".join(["'self'", *frame_ancestors])
    return ("default-src 'none'; img-src 'self'; media-src 'self'; style-src 'self'; script-src 'self'; "
            f"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors {ancestors}")


def verdict_title(label: str, feedback: str | None) -> str:
    """An event's title as its verdict says (pure): "Raccoon (unreviewed)", "Raccoon (confirmed)",
    "Not a raccoon"."""
    if feedback == "not_raccoon":
        return f"Not a {label}"
    return f"{label.capitalize()} ({'confirmed' if feedback == 'raccoon' else 'unreviewed'})"


@dataclass(frozen=True)
class ListFilter:
    """The event list's filter (``?camera=&day=&severity=&verdict=``), carried to the event pages so
    next / previous step within it."""

    camera: str | None = None
    day: str | None = None
    severity: str | None = None
    verdict: str | None = None

    def query(self, **extra: Any) -> str:
        """``?camera=...`` of the fields that are set (and ``extra``), or "" (pure)."""
        pairs = {"camera": self.camera, "day": self.day, "severity": self.severity, "verdict": self.verdict, **extra}
        encoded = urlencode({k: v for k, v in pairs.items() if v})
        return "?" + encoded if encoded else ""

    def store_args(self) -> dict[str, Any]:
        """``list_events`` / ``neighbours`` keyword arguments."""
        since, until = local_day_range(self.day) if self.day else (None, None)
        return {"camera": self.camera, "since": since, "until": until, "severity": self.severity,
                "verdict": self.verdict}


def local_day_range(day: str) -> tuple[float, float]:
    """YYYY-MM-DD (local time) -> [start, end) in wall-clock seconds; ValueError if not a date."""
    if not DAY.fullmatch(day):
        raise ValueError(day)
    d = dt.date.fromisoformat(day)
    start = dt.datetime.combine(d, dt.time()).astimezone()
    end = dt.datetime.combine(d + dt.timedelta(days=1), dt.time()).astimezone()
    return start.timestamp(), end.timestamp()


def parse_page(value: str | None) -> int:
    """?page= -> 1.. ; HttpError 400 for anything but a whole number in range."""
    if value is None:
        return 1
    # isascii: "²".isdigit() is True, and int("²") raises
    if not (value.isascii() and value.isdigit() and len(value) <= 6) or not 1 <= int(value) <= MAX_PAGE:
        raise HttpError(400, f"page must be a whole number from 1 to {MAX_PAGE}, got {clip_text(value, 40)!r}")
    return int(value)


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "–"


def _fmt_duration(row: EventRow) -> str:
    """First to last sighting (``chart.event_span``): what the chart's time axis spans too."""
    span = event_span(row)
    return "ongoing" if span is None else duration_text(span[1] - span[0])


def _read_json(path: Path) -> dict[str, Any]:
    """A card as a dict; {} when it is missing or not JSON (a hand-edited folder must not break the page)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def parse_range(header: str | None, size: int) -> tuple[int, int, int]:
    """(start, end exclusive, status) for a ``Range: bytes=a-b`` header over a file of ``size`` bytes
    (one range; anything else: the whole file, 200); HttpError 416 when it lies past the end (pure)."""
    m = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip(), flags=re.ASCII)
    if not m or size == 0 or (not m.group(1) and not m.group(2)):
        return 0, size, 200
    first, last = (_offset(g) if g else None for g in m.groups())
    if first is not None:
        start, end = first, min(last + 1, size) if last is not None else size
    else:  # the last N bytes
        start, end = max(0, size - (last or 0)), size
    if start >= size or start >= end:
        raise HttpError(416, "requested range not satisfiable", {"Content-Range": f"bytes */{size}"})
    return start, end, 206


def _offset(digits: str) -> int:
    """A byte offset; one with more than ``MAX_RANGE_DIGITS`` digits is past any file."""
    return int(digits) if len(digits) <= MAX_RANGE_DIGITS else 10 ** MAX_RANGE_DIGITS


def _file_chunks(fh: Any, start: int, end: int) -> Iterator[bytes]:
    """Bytes [start, end) of the open file ``fh`` in ``CHUNK``s, then closes it (Starlette iterates
    a plain iterator in a worker thread)."""
    try:
        fh.seek(start)
        left = end - start
        while left > 0:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    finally:
        fh.close()


class ReviewPages:
    """Bound to a running App (its config, store, stats, live frames, clips and feedback); an ASGI app."""

    def __init__(self, app: Any, http: HttpConfig | None = None, retrain: RetrainJob | None = None) -> None:
        self.app = app
        self.cfg = http or app.cfg.http
        self.retrain = retrain  # "Retrain now" (None: the page has no config file to run it with)
        self.auth = Auth(self.cfg)
        self.csp = csp(self.cfg.frame_ancestors)
        self.secure_cookie = bool(self.cfg.public_url and self.cfg.public_url.startswith("https://"))
        # behind a reverse proxy at a sub-path (public_url https://host/raccoon, the proxy strips
        # /raccoon): every link, form and redirect the page writes starts with it
        self.root = urlsplit(self.cfg.public_url).path.rstrip("/") if self.cfg.public_url else ""
        # without a login (loopback), only these Host names are answered: a web page elsewhere that
        # points its own name at 127.0.0.1 (DNS rebinding) gets a 421, not the events
        self.hosts = {"127.0.0.1", "localhost", "[::1]", self.cfg.host.lower()}
        if self.cfg.public_url:
            self.hosts.add((urlsplit(self.cfg.public_url).hostname or "").lower())
        self.stop = app.stop_event
        self.env = Environment(loader=PackageLoader("raccoon_watch.web", "templates"),
                               autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
        self.env.filters["t"] = _fmt_time
        self.env.filters["q"] = lambda s: quote(str(s), safe="")
        self.env.filters["score"] = score_text
        self.env.globals["FEEDBACK_NAMES"] = FEEDBACK_NAMES
        self.env.globals["root"] = self.root
        self._viewers = 0
        self._viewers_lock = threading.Lock()
        self._limiters: dict[int, anyio.CapacityLimiter] = {}
        self._placeholders: dict[str, tuple[list[str], bytes]] = {}  # camera -> (words, JPEG)

    # --- entry point (event loop) --------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        response = await self.respond(StarletteRequest(scope, receive))
        if response is not None:
            await response(scope, receive, send)

    async def respond(self, request: StarletteRequest) -> Response | None:
        """The response to one request; never raises for bad input (None: the client has gone)."""
        req: PageRequest | None = None
        try:
            req = await self._request(request)
            return self._finish(await self._route(req), req)
        except HttpError as exc:
            return self._error(exc.status, exc.message, exc.headers)
        except ClientDisconnect:
            log.debug("http_client_gone", path=clip_text(request.url.path))
            return None
        except Exception as exc:  # a bug in a page must not kill the server
            log.error("http_handler_failed", path=clip_text(request.url.path), error=clip_text(repr(exc)))
            return self._finish(Response("internal error\n", 500, media_type="text/plain; charset=utf-8"), None)

    async def _request(self, request: StarletteRequest) -> PageRequest:
        scope = request.scope
        query_string = scope.get("query_string", b"").decode("ascii", "replace")
        target = scope.get("raw_path", b"/").decode("ascii", "replace") + ("?" + query_string if query_string else "")
        if len(target) > MAX_QUERY:
            raise HttpError(414, f"the address is longer than {MAX_QUERY} characters")
        try:
            query = parse_qs(query_string, max_num_fields=20)
        except ValueError:
            raise HttpError(400, "too many query parameters") from None
        headers = request.headers
        sid = None
        try:
            cookie = SimpleCookie(headers.get("cookie", ""))
            sid = cookie[COOKIE].value if COOKIE in cookie else None
        except CookieError:
            sid = None
        peer = scope["client"][0] if scope.get("client") else ""
        req = PageRequest(
            method=scope["method"], path=scope["path"], target=target, query=query,
            client=client_address(peer, headers.get("x-forwarded-for"), self.cfg.trusted_proxies),
            host=headers.get("host", ""), session=self.auth.session(sid), authorization=headers.get("authorization"),
            range=headers.get("range"), accept=headers.get("accept", ""))
        if req.method == "POST":
            req.form = await self._read_form(request)
        return req

    async def _read_form(self, request: StarletteRequest) -> dict[str, list[str]]:
        declared = request.headers.get("content-length")  # digits only: h11 refuses anything else
        if declared is not None and (len(declared) > 9 or int(declared) > MAX_FORM):
            raise HttpError(413, f"a form is at most {MAX_FORM} bytes", {"Connection": "close"})
        body = bytearray()
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                async for chunk in request.stream():
                    body += chunk
                    if len(body) > MAX_FORM:
                        raise HttpError(413, f"a form is at most {MAX_FORM} bytes", {"Connection": "close"})
        except TimeoutError:
            raise HttpError(408, f"the form did not arrive within {BODY_TIMEOUT_S:.0f} s", {"Connection": "close"}) from None
        try:
            return parse_qs(body.decode("utf-8"), max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise HttpError(400, "the form is not valid UTF-8 url-encoded data") from None

    def _host_ok(self, req: PageRequest) -> bool:
        host = req.host.lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return self.auth.login_required or name in self.hosts

    async def _sync(self, fn: Callable[..., Response], *args: Any) -> Response:
        """Run a blocking page handler in a worker thread (at most ``PAGE_THREADS`` at once)."""
        key = id(asyncio.get_running_loop())
        if key not in self._limiters:
            self._limiters[key] = anyio.CapacityLimiter(PAGE_THREADS)
        return await anyio.to_thread.run_sync(functools.partial(fn, *args), limiter=self._limiters[key])

    async def _route(self, req: PageRequest) -> Response:
        path = req.path
        if req.method not in ("GET", "POST"):
            raise HttpError(501, f"{clip_text(req.method, 20)} is not supported here: only GET and POST")
        if not self._host_ok(req):
            raise HttpError(421, "this page answers only to 127.0.0.1 / localhost (or http.public_url's host)")
        if path.startswith("/static/") and path[len("/static/"):] in STATIC_FILES and req.method == "GET":
            return await self._sync(self._static, path[len("/static/"):])
        if path == "/login":
            return await self._login(req)
        self._authorize(req)
        if req.session is None:
            req.session = req.new_cookie = self.auth.new_session(False)
        if req.method == "POST":
            if not req.bearer and not csrf_ok(req.session, req.arg("csrf")):
                raise HttpError(403, "the form's CSRF token is missing or stale: reload the page and try again")
            if path == "/logout":
                self.auth.end_session(req.session.id)
                return self._redirect("/login" if self.auth.login_required else "/")
            m = re.fullmatch(r"/events/([^/]+)/feedback", path)
            if m:
                return await self._sync(self._feedback, req, m.group(1))
            if path == "/models/rollback":
                return await self._sync(self._roll_back)
            if path == "/models/retrain":
                return await self._sync(self._start_retrain)
            raise HttpError(404, "nothing to post to here")
        if path == "/":
            return await self._sync(self._list, req)
        if path == "/live":
            return await self._sync(self._live_page, req)
        if path == "/models":
            return await self._sync(self._models_page, req)
        m = re.fullmatch(r"/live/([a-z0-9_]+)\.(mjpg|jpg)", path)
        if m:
            return await self._live(m.group(1), m.group(2))
        m = re.fullmatch(r"/events/([^/]+)(/snapshot\.jpg|/clip\.mp4)?", path)
        if m:
            if m.group(2) is None:
                return await self._sync(self._event, req, m.group(1))
            kind = SNAPSHOT_DIR if m.group(2) == "/snapshot.jpg" else CLIP_DIR
            return await self._sync(self._media, req, m.group(1), kind)
        raise HttpError(404, f"no page at {clip_text(path, 80)}")

    def _authorize(self, req: PageRequest) -> None:
        """Let the request in (loopback, a logged-in session, the bearer token) or raise: a redirect
        to the login for a page, 401 for a file or a POST, 429 for a locked-out client's token."""
        if not self.auth.login_required or (req.session is not None and req.session.authenticated):
            return
        verdict, wait = self.auth.check_bearer(req.client, req.authorization)
        if verdict is Bearer.OK:
            req.bearer = True
            return
        if verdict is Bearer.LOCKED:
            log.warning("http_login_locked_out", client=req.client, retry_after_s=round(wait), by="token")
            raise HttpError(429, f"too many failed logins: try again in {wait:.0f} s", {"Retry-After": str(int(wait) + 1)})
        if verdict is Bearer.WRONG:
            log.warning("http_token_failed", client=req.client)
        elif req.method == "GET" and not req.path.endswith((".jpg", ".mp4", ".mjpg")):
            raise _Redirect("/login?" + urlencode({"next": req.target}))
        raise HttpError(401, "log in first", {"WWW-Authenticate": 'Bearer realm="raccoon_watch"'})

    # --- pages (worker threads) ----------------------------------------------------------------
    def _static(self, name: str) -> Response:
        return Response((STATIC / name).read_bytes(), 200, media_type=STATIC_FILES[name],
                        headers={"Cache-Control": "max-age=3600"})

    def _cameras(self) -> list[str]:
        return [name for name, cam in self.app.cfg.cameras.items() if cam.enabled]

    def _filter(self, req: PageRequest) -> ListFilter:
        """The list's filter from the query; HttpError 400 for a value it cannot be."""
        camera = req.arg("camera") or None
        if camera is not None and camera not in self._cameras():
            raise HttpError(400, f"no camera named {clip_text(camera, 64)!r}")
        day = req.arg("day") or None
        if day is not None:
            try:
                local_day_range(day)
            except ValueError:
                raise HttpError(400, f"day must be a date, YYYY-MM-DD, got {clip_text(day, 40)!r}") from None
        severity = req.arg("severity") or None
        if severity is not None and severity not in SEVERITIES:
            raise HttpError(400, f"severity must be alert or detection, got {clip_text(severity, 40)!r}")
        verdict = req.arg("verdict") or None
        if verdict is not None and verdict not in VERDICTS:
            raise HttpError(400, f"verdict must be unreviewed, raccoon or not_raccoon, got {clip_text(verdict, 40)!r}")
        return ListFilter(camera, day, severity, verdict)

    def _list(self, req: PageRequest) -> Response:
        page = parse_page(req.arg("page"))
        flt = self._filter(req)
        size = self.cfg.page_size
        rows, total = self.app.store.list_events(limit=size, offset=(page - 1) * size, **flt.store_args())
        pages = max(1, -(-total // size))
        if page > pages and total:
            raise HttpError(404, f"there are only {pages} pages")
        link = lambda p: self.root + "/" + flt.query(page=p if p > 1 else None)
        here = "/" + flt.query(page=page if page > 1 else None)  # where a mark without the script comes back to
        return self._page(req, "list.html", events=rows, durations={r.id: _fmt_duration(r) for r in rows}, total=total, page=page, pages=pages, camera=flt.camera,
                          day=flt.day, severity=flt.severity, verdict=flt.verdict, filter_query=flt.query(),
                          here=here, unreviewed_link=self.root + "/" + replace(flt, verdict=UNREVIEWED).query(),
                          cameras=self._cameras(), prev=link(page - 1) if page > 1 else None,
                          next=link(page + 1) if page < pages else None)

    def _get_event(self, event_id: str) -> EventRow:
        row = self.app.store.get_event(event_id) if EVENT_ID.fullmatch(event_id) else None
        if row is None:
            raise HttpError(404, f"no event {clip_text(event_id, 100)!r} (deleted, or never was)")
        return row

    def _event(self, req: PageRequest, event_id: str) -> Response:
        row = self._get_event(event_id)
        flt = self._filter(req)
        span = event_span(row)
        in_span = rows_in_span(row.scores, span)
        has_snapshot = self.app.store.media_file(event_id, SNAPSHOT_DIR) is not None
        has_clip = self.app.store.media_file(event_id, CLIP_DIR) is not None
        summary = {
            "frames": len(in_span),
            "classifier": max((r[2] for r in in_span if r[2] is not None), default=None),
            "detector": max((r[3] for r in in_span if len(r) > 3 and r[3] is not None), default=None),
        }
        newer, older = self.app.store.neighbours(event_id, **flt.store_args())
        query = flt.query()
        step = lambda other: f"{self.root}/events/{quote(other, safe='')}{query}" if other else None
        threshold = self.app.threshold
        return self._page(req, "event.html", e=row, duration=_fmt_duration(row), has_snapshot=has_snapshot, has_clip=has_clip, summary=summary,
                          chart=Markup(score_chart_svg(row.scores, threshold, span)), threshold=threshold,
                          labels=FEEDBACK_LABELS, title=verdict_title(row.label, row.feedback),
                          newer=step(newer), older=step(older), list_url=self.root + "/" + query,
                          here=f"/events/{quote(event_id, safe='')}{query}", filter_query=query,
                          verdict=flt.verdict)

    def _feedback(self, req: PageRequest, event_id: str) -> Response:
        self._get_event(event_id)
        label = req.arg("label")
        if label not in (*FEEDBACK_LABELS, "none"):
            raise HttpError(400, "label must be raccoon, not_raccoon or none")
        verdict = None if label == "none" else label
        self.app.set_feedback(event_id, None, verdict, "page")
        if "application/json" in req.accept:  # the page's script: no page load
            row = self._get_event(event_id)
            body = {"id": event_id, "feedback": row.feedback, "verdict": FEEDBACK_NAMES[row.feedback],
                    "title": f"{verdict_title(row.label, row.feedback)} at {row.camera}"}
            return Response(json.dumps(body).encode(), 200, media_type="application/json")
        back = req.arg("back")
        return self._redirect(safe_next(back) if back else f"/events/{quote(event_id, safe='')}")

    # --- the site's classifiers: which runs, roll back, retrain -----------------------------------
    def _chosen_version(self, site: Path | None) -> str | None:
        """The version of the classifier chosen on disk: the site's promoted one, else the model
        folder's own (None when it cannot be read)."""
        try:
            if site is not None:
                return site_models.model_version(site / site_models.CLASSIFIER_FILE)
            from raccoon_watch.recognition.detectors import find_model

            files = find_model(self.app.model_path)
            return site_models.model_version(files.classifier) if files.classifier is not None else None
        except Exception:  # a folder changed under us: the page shows what runs
            return None

    def _models_page(self, req: PageRequest) -> Response:
        root = self.app.models_root
        swap = getattr(self.app, "swap", None)
        running = swap.active.version if swap is not None else None
        now, before = site_models.current(root), site_models.previous(root)
        chosen = self._chosen_version(now) if swap is not None else None
        # the daemon runs another classifier than the one chosen on disk: loading it now, or waiting
        # for a reload (a `models promote` / `rollback` from the command line, before SIGHUP)
        switching = None if chosen is None or chosen == running else ("loading" if swap.loading else "waiting")
        candidates = []
        for folder in reversed(site_models.list_candidates(root)):
            card = _read_json(folder / site_models.CLASSIFIER_CARD)
            gate = card.get("gate") if isinstance(card.get("gate"), dict) else {}
            candidates.append({"name": folder.name, "current": now is not None and folder == now,
                               "previous": before is not None and folder == before,
                               "refused": (folder / site_models.REFUSED_FILE).is_file(),
                               "reasons": gate.get("reasons") or [], "wrong": gate.get("wrong") or []})
        retrain = self.retrain.state() if self.retrain is not None else None
        refresh = MODELS_REFRESH_S if (retrain is not None and retrain.running) or switching == "loading" else None
        return self._page(req, "models.html", running=running, site=now.name if now else None,
                          previous=before.name if before else None, candidates=candidates[:20],
                          retrain=retrain, last=site_models.last_retrain(root), chosen=chosen, switching=switching,
                          verdicts=self.app.store.count_feedback(), refresh=refresh)

    def _roll_back(self) -> Response:
        try:
            now, was = site_models.roll_back(self.app.models_root)
        except FileNotFoundError:
            raise HttpError(409, "nothing to roll back to: the shipped classifier is running") from None
        log.info("classifier_rolled_back", source="page", now=now.name if now else "shipped",
                 was=was.name if was else "shipped")
        loader = self.app.reload_classifier()
        if loader is not None:  # the page after the redirect shows the classifier that runs now
            loader.join(ROLLBACK_WAIT_S)
        return self._redirect("/models")

    def _start_retrain(self) -> Response:
        if self.retrain is None:
            raise HttpError(409, "this daemon was started without a config file: run raccoon-watch retrain")
        missing = self.retrain.unavailable()
        if missing:
            raise HttpError(409, missing)
        if not self.retrain.start():
            raise HttpError(409, "a retrain is running already (or could not start: see the log)")
        return self._redirect("/models")

    def _live_page(self, req: PageRequest) -> Response:
        stats = self.app.stats()
        midnight = dt.datetime.combine(dt.date.today(), dt.time()).astimezone().timestamp()
        today = self.app.store.count_events_since(midnight)
        recording = self.app.clips.snapshot() if self.app.clips is not None else {}
        cams = []
        for cam in stats.cameras:
            status = self._camera_status(cam.camera)
            cams.append({"name": cam.camera, "state": cam.state, "age": stats.last_frame_age_s(cam),
                         "today": today.get(cam.camera, 0), "detect": stats.detect_enabled(cam.camera),
                         "recording": recording.get(cam.camera, {}).get("recording", "off"),
                         "since": status.since, "reason": status.reason, "showing": status.showing})
        return self._page(req, "live.html", cams=cams, fps=self.cfg.live_fps)

    def _camera_status(self, camera: str) -> CameraStatus:
        """What the live picture of ``camera`` shows: its frames ("frames") or a placeholder (the
        state's name), since when (wall clock) and why."""
        thread = self.app.cameras.get(camera)
        tap = self.app.live.get(camera)
        if thread is None or tap is None:
            return CameraStatus("stopped", None, "not started")
        st = thread.stats
        state, since, reason = st.state, st.state_since or None, st.cause  # the URL-free cause, as /healthz shows it
        frame = tap.frame
        if state == "up" and frame is None:
            return CameraStatus("connecting", since, "connected, no frame decoded yet")
        if state == "up" and frame is not None and time.monotonic() - frame.mono > LIVE_STALE_S:
            return CameraStatus("stale", None, f"no frame for {time.monotonic() - frame.mono:.0f} s")
        if state in ("down", "connecting", "stopped") or frame is None:
            return CameraStatus(state, since, reason)
        return CameraStatus("frames", since, "")

    def _live_picture(self, camera: str, tap: Any) -> tuple[bytes, tuple[Any, ...], str]:
        """Worker thread: (JPEG, boxes drawn in its pixels, what it shows) of ``camera`` now: the
        newest frame with its boxes, or the placeholder for its state (cached while its words stay)."""
        status = self._camera_status(camera)
        if status.showing == "frames":
            picture = tap.picture()
            if picture is not None:
                return picture.jpeg, picture.boxes, "frames"
        return self._placeholder(camera, status.showing, status.since, status.reason), (), status.showing

    def _placeholder(self, camera: str, state: str, since: float | None, reason: str) -> bytes:
        lines = placeholder_lines(camera, state, since, reason)
        cached = self._placeholders.get(camera)
        if cached is None or cached[0] != lines:
            cached = self._placeholders[camera] = (lines, placeholder_jpeg(lines))
        return cached[1]

    # --- login (event loop; argon2 in Auth.login) ----------------------------------------------
    async def _login(self, req: PageRequest) -> Response:
        if not self.auth.login_required:
            return self._redirect("/")
        nxt = safe_next(req.arg("next"))
        if req.method == "GET":
            if req.session is None:
                req.session = req.new_cookie = self.auth.new_session(False)
            return await self._sync(functools.partial(self._page, req, "login.html", next=nxt, failed=False))
        if not csrf_ok(req.session, req.arg("csrf")):
            raise HttpError(403, "the login form's CSRF token is missing or stale: reload the page")
        session, wait = await self.auth.login(req.client, req.arg("password") or "", req.session)
        if session is None and wait > 0:
            log.warning("http_login_locked_out", client=req.client, retry_after_s=round(wait))
            raise HttpError(429, f"too many failed logins: try again in {wait:.0f} s",
                            {"Retry-After": str(int(wait) + 1)})
        if session is None:
            log.warning("http_login_failed", client=req.client)
            return await self._sync(functools.partial(self._page, req, "login.html", next=nxt, failed=True,
                                                      status=401))
        log.info("http_login", client=req.client)
        req.new_cookie = req.session = session
        return self._redirect(nxt)

    # --- files and streams ---------------------------------------------------------------------
    def _media(self, req: PageRequest, event_id: str, kind: str) -> Response:
        self._get_event(event_id)
        path = self.app.store.media_file(event_id, kind)
        what = "snapshot" if kind == SNAPSHOT_DIR else "clip"
        if path is None:
            row = self.app.store.get_event(event_id)
            why = row.clip_reason if kind == CLIP_DIR and row is not None else None
            raise HttpError(404, f"this event has no {what}" + (f": {why}" if why else " (deleted by retention?)"))
        try:
            fh = open(path, "rb")
        except FileNotFoundError:  # swept between the lookup and the open
            raise HttpError(404, f"this event's {what} was just deleted") from None
        try:
            size = path.stat().st_size
            start, end, status = parse_range(req.range, size)
        except BaseException:
            fh.close()
            raise
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start), "Cache-Control": "private, max-age=3600"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        ctype = "image/jpeg" if kind == SNAPSHOT_DIR else "video/mp4"
        return StreamingResponse(_file_chunks(fh, start, end), status, headers=headers, media_type=ctype)

    async def _live(self, camera: str, kind: str) -> Response:
        tap = self.app.live.get(camera)
        if tap is None:
            raise HttpError(404, f"no camera named {camera!r}")
        if kind == "jpg":  # one picture: the frame, or the placeholder saying why there is none
            jpeg, boxes, showing = await anyio.to_thread.run_sync(self._live_picture, camera, tap)
            return Response(jpeg, 200, media_type="image/jpeg",
                            headers={"X-Live-Showing": showing, "X-Live-Boxes": json.dumps([list(b) for b in boxes])})
        with self._viewers_lock:
            if self._viewers >= MAX_LIVE_VIEWERS:
                raise HttpError(503, f"at most {MAX_LIVE_VIEWERS} live views at once")
            self._viewers += 1
        return _LiveView(self._stream(camera, tap), self._viewer_left, 200,
                         media_type="multipart/x-mixed-replace; boundary=frame",
                         headers={"Cache-Control": "no-store", "Connection": "close"})

    def _viewer_left(self) -> None:
        with self._viewers_lock:
            self._viewers -= 1

    async def _stream(self, camera: str, tap: Any) -> AsyncIterator[bytes]:
        """MJPEG parts at most ``live_fps``, until the daemon stops, the viewer leaves (cancelled) or
        ``LIVE_STREAM_MAX_S`` have passed. The first part goes out at once, whatever the camera's
        state (a frame or its placeholder), so a page with a dead camera finishes loading; a part
        that did not change is sent again every ``LIVE_RESEND_S``, which also finds a viewer gone."""
        period = 1.0 / self.cfg.live_fps
        last, sent, started = None, 0.0, time.monotonic()
        while not self.stop.is_set():
            t0 = time.monotonic()
            if t0 - started >= LIVE_STREAM_MAX_S:  # a forgotten tab does not hold a viewer slot for ever
                yield _mjpeg_part(await anyio.to_thread.run_sync(
                    self._placeholder, camera, "paused", None, f"after {LIVE_STREAM_MAX_S / 60:.0f} min: reload the page"))
                return
            jpeg = (await anyio.to_thread.run_sync(self._live_picture, camera, tap))[0]
            if jpeg is not last or t0 - sent >= LIVE_RESEND_S:
                last, sent = jpeg, t0
                yield _mjpeg_part(jpeg)
            await asyncio.sleep(max(0.0, period - (time.monotonic() - t0)))

    # --- responses -----------------------------------------------------------------------------
    def _finish(self, response: Response, req: PageRequest | None) -> Response:
        """Every response's security headers, and the cookie of a session made for ``req``."""
        headers = response.headers
        headers["Content-Security-Policy"] = self.csp
        headers["X-Content-Type-Options"] = "nosniff"
        headers["Referrer-Policy"] = "same-origin"
        if "cache-control" not in headers:
            headers["Cache-Control"] = "no-store"
        s = req.new_cookie if req is not None else None
        if s is not None:
            secure = "; Secure" if self.secure_cookie else ""
            headers.append("Set-Cookie", f"{COOKIE}={s.id}; Path={self.root or '/'}; HttpOnly; SameSite=Strict; "
                                         f"Max-Age={int(self.cfg.session_ttl_s)}{secure}")
        return response

    def _page(self, req: PageRequest, template: str, status: int = 200, **ctx: Any) -> Response:
        body = self.env.get_template(template).render(
            csrf=req.session.csrf if req.session else "", login=self.auth.login_required, **ctx)
        return Response(body.encode(), status, media_type="text/html; charset=utf-8")

    def _redirect(self, location: str) -> Response:
        """303 to ``location``, a path of this server (the public_url's path is put in front)."""
        return Response(b"", 303, headers={"Location": quote(self.root + location, safe="/?&=%:@!$'()*+,;~-._")})

    def _error(self, status: int, message: str, headers: Mapping[str, str]) -> Response:
        if status == 303:  # _Redirect: the login page
            return self._finish(self._redirect(headers["Location"]), None)
        body = self.env.get_template("error.html").render(status=status, message=message, csrf="", login=False)
        response = Response(body.encode(), status, headers=dict(headers), media_type="text/html; charset=utf-8")
        return self._finish(response, None)


def _mjpeg_part(jpeg: bytes) -> bytes:
    return (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(jpeg)).encode()
            + b"\r\n\r\n" + jpeg + b"\r\n")


@dataclass(frozen=True, slots=True)
class CameraStatus:
    """What a camera's live picture shows: ``showing`` "frames", or the placeholder's state ("down",
    "connecting", "stopped", "stale"); ``since``: wall-clock time of the state, None when unknown."""

    showing: str
    since: float | None
    reason: str


class _LiveView(StreamingResponse):
    """A live stream that gives its viewer slot back however it ends: streamed to the end, the viewer
    gone, or the viewer gone before the first frame (when the stream's generator never even starts)."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(content, *args, **kwargs)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


class _Redirect(HttpError):
    """Go log in first (raised where a page needs a login it does not have)."""

    def __init__(self, location: str) -> None:
        super().__init__(303, "log in first", {"Location": location})
