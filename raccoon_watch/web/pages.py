"""Routes of the review page; called by ``health._Handler`` for every path but /healthz and /metrics.

    GET  /                              event list: newest first, ?page=N&camera=NAME&day=YYYY-MM-DD
                                        &severity=alert|detection (absent or empty: both)
    GET  /events/<id>                   event view: snapshot, clip, score chart, scores, feedback buttons
    GET  /events/<id>/snapshot.jpg      the snapshot file the store recorded (box drawn)
    GET  /events/<id>/clip.mp4          the clip file the store recorded (Range requests for seeking)
    POST /events/<id>/feedback          label=raccoon|not_raccoon|none, csrf=<token>
    GET  /live                          every camera: live image, state, last frame age, events today
    GET  /live/<camera>.mjpg            MJPEG stream, at most http.live_fps; .jpg: one frame
    GET  /login, POST /login, POST /logout, GET /static/style.css

Bad input never reaches a traceback: an unknown event or camera is a 404 page, a malformed page
number, day or camera filter a 400, a query string over ``MAX_QUERY`` characters a 414, a POST
without the session's CSRF token a 403, a form body over ``MAX_FORM`` bytes a 413; each says what
was wrong. A file URL resolves only through the store's record of the event (``media_file``): no
path from the request touches the filesystem. Every response carries the Content-Security-Policy
``CSP`` and ``X-Content-Type-Options: nosniff``; pages are ``Cache-Control: no-store``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

import structlog
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from raccoon_watch.config import HttpConfig
from raccoon_watch.service.logs import clip as clip_text
from raccoon_watch.store import CLIP_DIR, FEEDBACK_LABELS, SEVERITIES, SNAPSHOT_DIR
from raccoon_watch.web.auth import COOKIE, Auth, Session, client_address, csrf_ok
from raccoon_watch import site_models
from raccoon_watch.web.chart import score_chart_svg
from raccoon_watch.web.retrain_job import RetrainJob

log = structlog.get_logger(__name__)

MAX_QUERY = 2048
MAX_FORM = 4096
MAX_PAGE = 100_000
MAX_LIVE_VIEWERS = 8
CHUNK = 256 * 1024
EVENT_ID = re.compile(r"[A-Za-z0-9._-]{1,100}")
DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
STATIC = Path(__file__).resolve().parent / "static"
FEEDBACK_NAMES = {"raccoon": "raccoon", "not_raccoon": "not a raccoon", None: "no verdict"}


class HttpError(Exception):
    """A 4xx answer with a message for the error page."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    client: str
    session: Session | None
    authorization: str | None
    form: dict[str, list[str]] = field(default_factory=dict)
    new_cookie: Session | None = None  # a session made for this request: set its cookie

    def arg(self, name: str) -> str | None:
        values = self.query.get(name) or self.form.get(name)
        return values[0] if values else None


def csp(frame_ancestors: list[str]) -> str:
    ancestors = " ".join(["'self'", *frame_ancestors])
    return ("default-src 'none'; img-src 'self'; media-src 'self'; style-src 'self'; form-action 'self'; "
            f"base-uri 'none'; frame-ancestors {ancestors}")


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
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise HttpError(400, f"page must be a whole number from 1 to {MAX_PAGE}, got {clip_text(value, 40)!r}")
    return int(value)


def _fmt_time(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "–"


def _fmt_duration(row: Mapping[str, Any]) -> str:
    if row.get("end_time") is None:
        return "ongoing"
    s = max(0.0, row["end_time"] - row["start_time"])
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _read_json(path: Path) -> dict[str, Any]:
    """A card as a dict; {} when it is missing or not JSON (a hand-edited folder must not break the page)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class ReviewPages:
    """Bound to a running App (its config, store, stats, live frames, clips and feedback)."""

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
        self.env.globals["FEEDBACK_NAMES"] = FEEDBACK_NAMES
        self.env.globals["root"] = self.root
        self._viewers = 0
        self._viewers_lock = threading.Lock()

    # --- entry point (handler thread) ------------------------------------------------------------
    def handle(self, h: Any, method: str) -> None:
        """Answer one request on the stdlib handler ``h``; never raises for bad input."""
        try:
            req = self._request(h, method)
            self._route(h, req)
        except HttpError as exc:
            self._error(h, exc.status, exc.message, exc.headers)

    def _request(self, h: Any, method: str) -> Request:
        if len(h.path) > MAX_QUERY:
            raise HttpError(414, f"the address is longer than {MAX_QUERY} characters")
        parts = urlsplit(h.path)
        try:
            query = parse_qs(parts.query, max_num_fields=20, strict_parsing=False)
        except ValueError:
            raise HttpError(400, "too many query parameters") from None
        sid = None
        try:
            cookie = SimpleCookie(h.headers.get("Cookie", ""))
            sid = cookie[COOKIE].value if COOKIE in cookie else None
        except CookieError:
            sid = None
        client = client_address(h.client_address[0], h.headers.get("X-Forwarded-For"), self.cfg.trusted_proxies)
        req = Request(method, unquote(parts.path), query, client, self.auth.session(sid), h.headers.get("Authorization"))
        if method == "POST":
            req.form = self._read_form(h)
        return req

    def _read_form(self, h: Any) -> dict[str, list[str]]:
        try:
            length = int(h.headers.get("Content-Length") or 0)
        except ValueError:
            raise HttpError(400, "Content-Length is not a number") from None
        if length > MAX_FORM:
            raise HttpError(413, f"a form is at most {MAX_FORM} bytes")
        body = h.rfile.read(length) if length > 0 else b""
        try:
            return parse_qs(body.decode("utf-8"), max_num_fields=20)
        except (UnicodeDecodeError, ValueError):
            raise HttpError(400, "the form is not valid UTF-8 url-encoded data") from None

    def _host_ok(self, h: Any) -> bool:
        host = (h.headers.get("Host") or "").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return self.auth.login_required or name in self.hosts

    def _route(self, h: Any, req: Request) -> None:
        path = req.path
        if not self._host_ok(h):
            raise HttpError(421, "this page answers only to 127.0.0.1 / localhost (or http.public_url's host)")
        if path == "/static/style.css" and req.method == "GET":
            return self._send(h, 200, "text/css; charset=utf-8", (STATIC / "style.css").read_bytes(), cache=True)
        if path == "/login":
            return self._login(h, req)
        if not self.auth.authenticated(req.session, req.authorization):
            if req.method == "GET" and not path.endswith((".jpg", ".mp4", ".mjpg")):
                return self._redirect(h, req, "/login?" + urlencode({"next": h.path}))
            raise HttpError(401, "log in first", {"WWW-Authenticate": 'Bearer realm="raccoon_watch"'})
        if req.session is None:
            req.session = req.new_cookie = self.auth.new_session(False)
        if req.method == "POST":
            bearer = self.auth.login_required and self.auth.authenticated(None, req.authorization)
            if not bearer and not csrf_ok(req.session, req.arg("csrf")):
                raise HttpError(403, "the form's CSRF token is missing or stale: reload the page and try again")
            if path == "/logout":
                self.auth.end_session(req.session.id)
                return self._redirect(h, req, "/login" if self.auth.login_required else "/")
            m = re.fullmatch(r"/events/([^/]+)/feedback", path)
            if m:
                return self._feedback(h, req, m.group(1))
            if path == "/models/rollback":
                return self._roll_back(h, req)
            if path == "/models/retrain":
                return self._start_retrain(h, req)
            raise HttpError(404, "nothing to post to here")
        if req.method != "GET":
            raise HttpError(405, "only GET and POST")
        if path == "/":
            return self._list(h, req)
        if path == "/live":
            return self._live_page(h, req)
        if path == "/models":
            return self._models_page(h, req)
        m = re.fullmatch(r"/live/([a-z0-9_]+)\.(mjpg|jpg)", path)
        if m:
            return self._live(h, m.group(1), m.group(2))
        m = re.fullmatch(r"/events/([^/]+)(/snapshot\.jpg|/clip\.mp4)?", path)
        if m:
            if m.group(2) is None:
                return self._event(h, req, m.group(1))
            return self._media(h, m.group(1), SNAPSHOT_DIR if m.group(2) == "/snapshot.jpg" else CLIP_DIR)
        raise HttpError(404, f"no page at {clip_text(path, 80)}")

    # --- pages ---------------------------------------------------------------------------------
    def _cameras(self) -> list[str]:
        return [name for name, cam in self.app.cfg.cameras.items() if cam.enabled]

    def _list(self, h: Any, req: Request) -> None:
        page = parse_page(req.arg("page"))
        camera = req.arg("camera") or None
        if camera is not None and camera not in self._cameras():
            raise HttpError(400, f"no camera named {clip_text(camera, 64)!r}")
        day = req.arg("day") or None
        since = until = None
        if day is not None:
            try:
                since, until = local_day_range(day)
            except ValueError:
                raise HttpError(400, f"day must be a date, YYYY-MM-DD, got {clip_text(day, 40)!r}") from None
        severity = req.arg("severity") or None
        if severity is not None and severity not in SEVERITIES:
            raise HttpError(400, f"severity must be alert or detection, got {clip_text(severity, 40)!r}")
        size = self.cfg.page_size
        rows, total = self.app.store.list_events(camera, since, until, limit=size, offset=(page - 1) * size,
                                                 severity=severity)
        pages = max(1, -(-total // size))
        if page > pages and total:
            raise HttpError(404, f"there are only {pages} pages")
        link = lambda p: self.root + "/?" + urlencode({k: v for k, v in (("page", p), ("camera", camera), ("day", day), ("severity", severity)) if v})  # noqa: E731
        for row in rows:
            row["duration"] = _fmt_duration(row)
        self._page(h, req, "list.html", events=rows, total=total, page=page, pages=pages, camera=camera, day=day,
                   severity=severity,
                   cameras=self._cameras(), prev=link(page - 1) if page > 1 else None,
                   next=link(page + 1) if page < pages else None)

    def _get_event(self, event_id: str) -> dict[str, Any]:
        row = self.app.store.get_event(event_id) if EVENT_ID.fullmatch(event_id) else None
        if row is None:
            raise HttpError(404, f"no event {clip_text(event_id, 100)!r} (deleted, or never was)")
        return row

    def _event(self, h: Any, req: Request, event_id: str) -> None:
        row = self._get_event(event_id)
        row["duration"] = _fmt_duration(row)
        scores = row["scores"]
        has_snapshot = self.app.store.media_file(event_id, SNAPSHOT_DIR) is not None
        has_clip = self.app.store.media_file(event_id, CLIP_DIR) is not None
        summary = {
            "frames": len(scores),
            "visit": max((r[1] for r in scores), default=None),
            "classifier": max((r[2] for r in scores if r[2] is not None), default=None),
            "detector": max((r[3] for r in scores if len(r) > 3 and r[3] is not None), default=None),
        }
        threshold = self.app.threshold
        self._page(h, req, "event.html", e=row, has_snapshot=has_snapshot, has_clip=has_clip, summary=summary,
                   chart=Markup(score_chart_svg(scores, threshold)), threshold=threshold, labels=FEEDBACK_LABELS)

    def _feedback(self, h: Any, req: Request, event_id: str) -> None:
        self._get_event(event_id)
        label = req.arg("label")
        if label not in (*FEEDBACK_LABELS, "none"):
            raise HttpError(400, "label must be raccoon, not_raccoon or none")
        self.app.set_feedback(event_id, None, None if label == "none" else label, "page")
        self._redirect(h, req, f"/events/{quote(event_id, safe='')}")

    # --- the site's classifiers: which runs, roll back, retrain -----------------------------------
    def _models_page(self, h: Any, req: Request) -> None:
        root = self.app.models_root
        running = self.app.swap.active.version if getattr(self.app, "swap", None) is not None else None
        now, before = site_models.current(root), site_models.previous(root)
        candidates = []
        for folder in reversed(site_models.list_candidates(root)):
            card = _read_json(folder / site_models.CLASSIFIER_CARD)
            gate = card.get("gate") if isinstance(card.get("gate"), dict) else {}
            candidates.append({"name": folder.name, "current": now is not None and folder == now,
                               "previous": before is not None and folder == before,
                               "refused": (folder / site_models.REFUSED_FILE).is_file(),
                               "reasons": gate.get("reasons") or []})
        self._page(h, req, "models.html", running=running, site=now.name if now else None,
                   previous=before.name if before else None, candidates=candidates[:20],
                   retrain=self.retrain.state() if self.retrain is not None else None)

    def _roll_back(self, h: Any, req: Request) -> None:
        try:
            now, was = site_models.roll_back(self.app.models_root)
        except FileNotFoundError:
            raise HttpError(409, "nothing to roll back to: the shipped classifier is running") from None
        log.info("classifier_rolled_back", source="page", now=now.name if now else "shipped",
                 was=was.name if was else "shipped")
        self.app.reload_classifier()
        self._redirect(h, req, "/models")

    def _start_retrain(self, h: Any, req: Request) -> None:
        if self.retrain is None:
            raise HttpError(409, "this daemon was started without a config file: run raccoon-watch retrain")
        if not self.retrain.start():
            raise HttpError(409, "a retrain is running already (or could not start: see the log)")
        self._redirect(h, req, "/models")

    def _live_page(self, h: Any, req: Request) -> None:
        stats = self.app.stats()
        midnight = dt.datetime.combine(dt.date.today(), dt.time()).astimezone().timestamp()
        today = self.app.store.count_events_since(midnight)
        recording = self.app.clips.snapshot() if self.app.clips is not None else {}
        cams = []
        for cam in stats.cameras:
            cams.append({"name": cam.camera, "state": cam.state, "age": stats.last_frame_age_s(cam),
                         "today": today.get(cam.camera, 0), "detect": stats.detect_enabled(cam.camera),
                         "recording": recording.get(cam.camera, {}).get("recording", "off")})
        self._page(h, req, "live.html", cams=cams, fps=self.cfg.live_fps)

    def _login(self, h: Any, req: Request) -> None:
        if not self.auth.login_required:
            return self._redirect(h, req, "/")
        nxt = req.arg("next") or "/"
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"
        if req.method == "GET":
            if req.session is None:
                req.session = req.new_cookie = self.auth.new_session(False)
            return self._page(h, req, "login.html", next=nxt, failed=False)
        if not csrf_ok(req.session, req.arg("csrf")):
            raise HttpError(403, "the login form's CSRF token is missing or stale: reload the page")
        session, wait = self.auth.try_login(req.client, req.arg("password") or "", req.session)
        if session is None and wait > 0:
            log.warning("http_login_locked_out", client=req.client, retry_after_s=round(wait))
            raise HttpError(429, f"too many failed logins: try again in {wait:.0f} s",
                            {"Retry-After": str(int(wait) + 1)})
        if session is None:
            log.warning("http_login_failed", client=req.client)
            return self._page(h, req, "login.html", next=nxt, failed=True, status=401)
        log.info("http_login", client=req.client)
        req.new_cookie = req.session = session
        self._redirect(h, req, nxt)

    # --- files and streams ---------------------------------------------------------------------
    def _media(self, h: Any, event_id: str, kind: str) -> None:
        self._get_event(event_id)
        path = self.app.store.media_file(event_id, kind)
        what = "snapshot" if kind == SNAPSHOT_DIR else "clip"
        if path is None:
            row = self.app.store.get_event(event_id) or {}
            why = row.get("clip_reason") if kind == CLIP_DIR else None
            raise HttpError(404, f"this event has no {what}" + (f": {why}" if why else " (deleted by retention?)"))
        ctype = "image/jpeg" if kind == SNAPSHOT_DIR else "video/mp4"
        try:
            size = path.stat().st_size
            start, end, status = self._range(h.headers.get("Range"), size)
            with open(path, "rb") as fh:
                h.send_response(status)
                h.send_header("Content-Type", ctype)
                h.send_header("Accept-Ranges", "bytes")
                h.send_header("Content-Length", str(end - start))
                if status == 206:
                    h.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
                h.send_header("Cache-Control", "private, max-age=3600")
                self._common_headers(h)
                h.end_headers()
                fh.seek(start)
                left = end - start
                while left > 0:
                    chunk = fh.read(min(CHUNK, left))
                    if not chunk:
                        break
                    h.wfile.write(chunk)
                    left -= len(chunk)
        except FileNotFoundError:  # swept between the lookup and the open
            raise HttpError(404, f"this event's {what} was just deleted") from None

    @staticmethod
    def _range(header: str | None, size: int) -> tuple[int, int, int]:
        """(start, end exclusive, status) for a ``Range: bytes=a-b`` header (one range; else the whole)."""
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", (header or "").strip())
        if not m or size == 0 or (not m.group(1) and not m.group(2)):
            return 0, size, 200
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)) + 1, size) if m.group(2) else size
        else:  # the last N bytes
            start, end = max(0, size - int(m.group(2))), size
        if start >= size or start >= end:
            raise HttpError(416, "requested range not satisfiable", {"Content-Range": f"bytes */{size}"})
        return start, end, 206

    def _live(self, h: Any, camera: str, kind: str) -> None:
        tap = self.app.live.get(camera)
        if tap is None:
            raise HttpError(404, f"no camera named {camera!r}")
        if kind == "jpg":
            got = tap.jpeg()
            if got is None:
                raise HttpError(404, f"camera {camera} has sent no frame yet")
            return self._send(h, 200, "image/jpeg", got[0])
        with self._viewers_lock:
            if self._viewers >= MAX_LIVE_VIEWERS:
                raise HttpError(503, f"at most {MAX_LIVE_VIEWERS} live views at once")
            self._viewers += 1
        try:
            self._stream(h, tap)
        finally:
            with self._viewers_lock:
                self._viewers -= 1

    def _stream(self, h: Any, tap: Any) -> None:
        h.close_connection = True
        h.send_response(200)
        h.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        h.send_header("Cache-Control", "no-store")
        self._common_headers(h)
        h.end_headers()
        period = 1.0 / self.cfg.live_fps
        last = None
        while not self.stop.is_set():
            t0 = time.monotonic()
            got = tap.jpeg()
            if got is not None and got[0] is not last:
                last = got[0]
                h.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                              + str(len(last)).encode() + b"\r\n\r\n" + last + b"\r\n")
                h.wfile.flush()
            self.stop.wait(max(0.0, period - (time.monotonic() - t0)))

    # --- responses -----------------------------------------------------------------------------
    def _common_headers(self, h: Any) -> None:
        h.send_header("Content-Security-Policy", self.csp)
        h.send_header("X-Content-Type-Options", "nosniff")
        h.send_header("Referrer-Policy", "same-origin")

    def _cookie(self, h: Any, req: Request) -> None:
        s = req.new_cookie
        if s is not None:
            secure = "; Secure" if self.secure_cookie else ""
            h.send_header("Set-Cookie", f"{COOKIE}={s.id}; Path={self.root or '/'}; HttpOnly; SameSite=Strict; "
                                        f"Max-Age={int(self.cfg.session_ttl_s)}{secure}")

    def _page(self, h: Any, req: Request, template: str, status: int = 200, **ctx: Any) -> None:
        body = self.env.get_template(template).render(
            csrf=req.session.csrf if req.session else "", login=self.auth.login_required, **ctx).encode()
        self._send(h, status, "text/html; charset=utf-8", body, req=req)

    def _send(self, h: Any, status: int, ctype: str, body: bytes, req: Request | None = None,
              headers: Mapping[str, str] | None = None, cache: bool = False) -> None:
        h.send_response(status)
        h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        self._common_headers(h)
        if req is not None:
            self._cookie(h, req)
        h.end_headers()
        h.wfile.write(body)

    def _redirect(self, h: Any, req: Request, location: str) -> None:
        """303 to ``location``, a path of this server (the public_url's path is put in front)."""
        h.send_response(303)
        h.send_header("Location", self.root + location)
        h.send_header("Content-Length", "0")
        self._common_headers(h)
        self._cookie(h, req)
        h.end_headers()

    def _error(self, h: Any, status: int, message: str, headers: Mapping[str, str]) -> None:
        body = self.env.get_template("error.html").render(status=status, message=message, csrf="", login=False)
        self._send(h, status, "text/html; charset=utf-8", body.encode(), headers=headers)
