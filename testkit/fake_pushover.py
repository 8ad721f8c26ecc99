"""A local stand-in for Pushover's message API, ``POST /1/messages.json``.

It checks what the real API checks (token and user, a non-blank message, attachment <= 5 MB) and
answers the way it does: ``{"status": 1, "request": "<uuid>"}`` on success, HTTP 400 with
``{"status": 0, "errors": [...], "request": ...}`` on a bad request. Test modes: ``"ok"``,
``"error500"`` (5xx with JSON), ``"html500"`` (5xx, non-JSON body), ``"stall"`` (hold the request
``stall_s`` seconds, then drop it unanswered; recorded with status -1), ``"ratelimit"`` (429 with ``X-Limit-App-Reset``),
``"jsonlist"`` (200 with the JSON body ``[]``, an answer that is JSON but not an object). ``fail_next(n, mode)`` applies
a mode to the next n requests only, then returns to ``"ok"``; ``mode_for_title[title] = mode`` applies a mode
to every request with that title (one push that keeps failing while others succeed).

Every request is recorded (``received``): the parsed form fields, attachment bytes, its filename
and content type, and the HTTP status answered. Run standalone for manual checks:
``python -m testkit.fake_pushover 8089``.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VALID_TOKEN = "azGDORePK8gMaC0QOYAMyEEuzJnyUi"
VALID_USER = "uQiRzpo4DXghDmr9QzzfQu27cmVRsG"
MAX_ATTACHMENT = 5 * 1024 * 1024


@dataclass
class Received:
    fields: dict[str, str]
    attachment: bytes | None = None
    attachment_type: str | None = None
    attachment_name: str | None = None
    status: int = 0
    at: float = field(default_factory=time.time)


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], tuple[bytes, str, str] | None]:
    """multipart/form-data -> (fields, (attachment bytes, content type, filename) or None)."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields: dict[str, str] = {}
    attachment = None
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if name == "attachment":
            attachment = (data, part.get_content_type(), part.get_filename() or "")
        elif name:
            fields[name] = data.decode("utf-8", "replace")
    return fields, attachment


class FakePushover:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.mode = "ok"
        self.mode_for_title: dict[str, str] = {}
        self.stall_s = 3.0
        self.reset_in_s = 1
        self.received: list[Received] = []
        self._fail_left = 0
        self._fail_mode = "ok"
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="fake-pushover", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/1/"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def fail_next(self, n: int, mode: str) -> None:
        with self._lock:
            self._fail_left, self._fail_mode = n, mode

    def ok(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.status == 200]

    def wait_for(self, n_ok: int, timeout: float = 10.0) -> list[Received]:
        """Block until at least n_ok requests were answered 200 (or timeout); returns them."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while sum(r.status == 200 for r in self.received) < n_ok:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(left)
            return [r for r in self.received if r.status == 200]

    def _next_mode(self) -> str:
        with self._lock:
            if self._fail_left > 0:
                self._fail_left -= 1
                return self._fail_mode
            return self.mode

    def _record(self, rec: Received) -> None:
        with self._arrived:
            self.received.append(rec)
            self._arrived.notify_all()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output quiet
                pass

            def _reply(self, status: int, body: bytes, ctype: str = "application/json", headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.path != "/1/messages.json":
                    self._reply(404, b'{"status":0,"errors":["not found"]}')
                    return
                ctype = self.headers.get("Content-Type", "")
                if ctype.startswith("multipart/form-data"):
                    fields, att = parse_multipart(ctype, body)
                else:
                    from urllib.parse import parse_qs

                    fields = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                    att = None
                rec = Received(fields=fields)
                if att:
                    rec.attachment, rec.attachment_type, rec.attachment_name = att
                mode = server.mode_for_title.get(fields.get("title", "")) or server._next_mode()
                request_id = str(uuid.uuid4())
                if mode == "stall":  # a hung server: holds the request, then drops it unanswered
                    time.sleep(server.stall_s)
                    rec.status = -1
                    server._record(rec)
                    self.close_connection = True
                    return
                if mode == "error500":
                    rec.status = 500
                    server._record(rec)
                    self._reply(500, json.dumps({"status": 0, "errors": ["internal error"], "request": request_id}).encode())
                    return
                if mode == "html500":
                    rec.status = 502
                    server._record(rec)
                    self._reply(502, b"<html>Bad Gateway</html>", "text/html")
                    return
                if mode == "jsonlist":
                    rec.status = 201  # answered, but not with anything Pushover would say
                    server._record(rec)
                    self._reply(200, b"[]")
                    return
                if mode == "ratelimit":
                    rec.status = 429
                    server._record(rec)
                    reset = int(time.time()) + server.reset_in_s
                    self._reply(
                        429,
                        json.dumps({"status": 0, "errors": ["application over quota"], "request": request_id}).encode(),
                        headers={"X-Limit-App-Limit": "10000", "X-Limit-App-Remaining": "0", "X-Limit-App-Reset": str(reset)},
                    )
                    return
                errors = []
                if fields.get("token") != VALID_TOKEN:
                    errors.append("application token is invalid")
                if fields.get("user") != VALID_USER:
                    errors.append("user identifier is not a valid user, group, or subscribed user key")
                if not fields.get("message", "").strip():
                    errors.append("message cannot be blank")
                if rec.attachment is not None and len(rec.attachment) > MAX_ATTACHMENT:
                    errors.append("attachment size is too large")
                if errors:
                    rec.status = 400
                    server._record(rec)
                    self._reply(400, json.dumps({"status": 0, "errors": errors, "request": request_id}).encode())
                    return
                rec.status = 200
                server._record(rec)
                self._reply(200, json.dumps({"status": 1, "request": request_id}).encode())

        return Handler


if __name__ == "__main__":
    srv = FakePushover(port=int(sys.argv[1]) if len(sys.argv) > 1 else 8089)
    print(f"fake Pushover at {srv.url}", flush=True)
    srv.httpd.serve_forever()
