"""The page's HTTP layer against hostile input (issue 21): a real App, the real uvicorn server, raw sockets.

What the probe found on the old http.server layer, each re-run here: header injection and open
redirects through ``next``; parallel logins that skipped the lock-out (one argon2 check each, 64 MiB
apiece); bearer tokens guessed freely; bind names judged loopback by their spelling; 500s for odd
query and Range values; requests smuggled behind conflicting body lengths; /healthz refused under
200 concurrent connects; a taken port that left the daemon running without its page.

No timing is asserted here (the machine is shared): ``tools/bench.py``'s ``http_probe`` stage
measures RSS during parallel logins and the /healthz latencies.
"""

from __future__ import annotations

import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from argon2 import PasswordHasher
from pydantic import SecretStr

from raccoon_watch.app import App
from raccoon_watch.config import Config, ConfigError, all_loopback, is_loopback, parse_config
from raccoon_watch.service.health import HealthServer
from raccoon_watch.store.retention import CLIP_DIR
from raccoon_watch.types import Event, EventKind
from raccoon_watch.web import httpserver
from raccoon_watch.web.auth import LOGIN_MAX_FAILURES, MAX_PARALLEL_VERIFIES, Auth
from raccoon_watch.web.httpserver import BindError, bind_listener, framing_error
from raccoon_watch.web.pages import MAX_LIVE_VIEWERS, HttpError, ReviewPages, parse_page, parse_range, safe_next
from tests.daemon import Daemon, write_config
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
PASSWORD = "correct horse battery"
TOKEN = "t" * 32
HUGE = "9" * 4300  # int() refuses more than 4,300 digits by default: the old server's 500


# --- pure parts, as tables --------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("/events/e0", "/events/e0"),
    ("/?page=2&camera=porch", "/?page=2&camera=porch"),
    ("/events/a%20b", "/events/a%20b"),
    (None, "/"),
    ("", "/"),
    ("/x\r\nSet-Cookie: rw_session=planted", "/"),  # header injection / response splitting
    ("/x\nLocation: //evil.example", "/"),
    ("/\\evil.example/", "/"),                      # browsers read "\" as "/": another host
    ("//evil.example/", "/"),
    ("/\t/evil.example", "/"),                      # browsers drop tabs: "//evil.example"
    ("https://evil.example/", "/"),
    ("javascript:alert(1)", "/"),
    ("events/e0", "/"),
    ("/\u0100", "/"),                               # non-ASCII: the old server's UnicodeEncodeError
    ("/a\x00b", "/"),
    ("/a\x7fb", "/"),
    ("/" + "a" * 3000, "/"),
])
def test_safe_next(value, expected):
    assert safe_next(value) == expected


@pytest.mark.parametrize("header, size, expected", [
    (None, 100, (0, 100, 200)),
    ("bytes=10-19", 100, (10, 20, 206)),
    ("bytes=10-", 100, (10, 100, 206)),
    ("bytes=-10", 100, (90, 100, 206)),
    ("bytes=90-1000", 100, (90, 100, 206)),
    ("bytes=0-" + HUGE, 100, (0, 100, 206)),       # an end past any file: to the end
    ("bytes=-" + HUGE, 100, (0, 100, 206)),        # more than the file: all of it
    ("bytes=abc", 100, (0, 100, 200)),             # not a range we serve: the whole file
    ("bytes=1-2,5-6", 100, (0, 100, 200)),
    ("bytes=\u0661-\u0662", 100, (0, 100, 200)),   # Arabic-Indic digits are not byte offsets
    ("bytes=5-5", 0, (0, 0, 200)),
])
def test_parse_range(header, size, expected):
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header", ["bytes=" + HUGE + "-", "bytes=" + HUGE + "-" + HUGE, "bytes=100-", "bytes=50-10"])
def test_parse_range_past_the_end_is_416(header):
    with pytest.raises(HttpError) as info:
        parse_range(header, 100)
    assert info.value.status == 416 and info.value.headers["Content-Range"] == "bytes */100"


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "0", "-1", "1e3", "9" * 4300, " 1", "100001"])
def test_parse_page_refuses_anything_but_ascii_digits_in_range(value):
    with pytest.raises(HttpError) as info:
        parse_page(value)
    assert info.value.status == 400


@pytest.mark.parametrize("addresses, loopback", [
    (["127.0.0.1"], True),
    (["127.8.9.10"], True),
    (["::1"], True),
    (["127.0.0.1", "::1"], True),
    (["::ffff:127.0.0.1"], True),        # IPv4 loopback written as IPv6
    ([], False),                         # resolves to nothing
    (["0.0.0.0"], False),                # what 127.evil.example may resolve to: every interface
    (["127.0.0.1", "0.0.0.0"], False),   # one address that is not loopback is enough to ask a login
    (["192.168.1.20"], False),
    (["::"], False),
    (["fe80::1%eth0"], False),
    (["not-an-address"], False),
])
def test_all_loopback(addresses, loopback):
    assert all_loopback(addresses) is loopback


def test_is_loopback_decides_on_the_resolved_address_not_the_name():
    table = {"127.evil.example": ["0.0.0.0"], "127.0.0.1.nip.example": ["203.0.113.9"], "localhost": ["127.0.0.1"],
             "home.example": ["127.0.0.1", "::1"]}

    def resolve(host: str) -> list[str]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table[host]

    assert is_loopback("127.evil.example", resolve) is False
    assert is_loopback("127.0.0.1.nip.example", resolve) is False
    assert is_loopback("home.example", resolve) is True
    assert is_loopback("nowhere.example", resolve) is False  # does not resolve: not loopback
    assert is_loopback("127.0.0.1") is True and is_loopback("::1") is True  # the real getaddrinfo
    assert is_loopback("0.0.0.0") is False


def test_a_name_that_only_looks_like_loopback_needs_a_login():
    cfg = Config.model_validate({"cameras": {"c": {"source": "0"}}, "http": {"host": "127.evil.example"}}).http
    assert cfg.login_required  # it does not resolve here; what it resolves to elsewhere is not for the name to say
    with pytest.raises(ConfigError, match="does not resolve to loopback addresses only"):
        parse_config("cameras: {c: {source: '0'}}\nhttp: {enabled: true, host: 127.evil.example}\n")


def test_the_bind_refuses_a_non_loopback_address_when_no_login_is_set():
    with pytest.raises(BindError, match="http.host"):
        bind_listener("0.0.0.0", 0, loopback_only=True)
    with pytest.raises(BindError, match="http.host .* does not resolve"):
        bind_listener("nowhere.invalid", 0)
    sock = bind_listener("127.0.0.1", 0, loopback_only=True)
    try:
        with pytest.raises(BindError, match=f"http.port {sock.getsockname()[1]}"):
            bind_listener("127.0.0.1", sock.getsockname()[1])
    finally:
        sock.close()


@pytest.mark.parametrize("headers, why", [
    ([(b"host", b"x")], None),
    ([(b"content-length", b"4")], None),
    ([(b"transfer-encoding", b"chunked")], None),
    ([(b"content-length", b"4"), (b"transfer-encoding", b"chunked")], "Transfer-Encoding"),
])
def test_framing_error(headers, why):
    got = framing_error(headers)
    assert (got is None) if why is None else (why in got)


# --- a real App and the real server -----------------------------------------------------------------

def _event(eid: str, start: float) -> Event:
    return Event(id=eid, kind=EventKind.END, camera="porch", label="raccoon", start_time=start, end_time=start + 7,
                 score=0.9, top_score=0.91, box=(0.2, 0.2, 0.6, 0.7), snapshot_jpeg=None, first_seen_ts=start)


@pytest.fixture(scope="module")
def app(tmp_path_factory, request):
    small_clip = request.getfixturevalue("small_clip")
    tmp = tmp_path_factory.mktemp("hardening")
    cfg = Config.model_validate({
        "cameras": {"porch": {"source": str(small_clip.path), "loop": True, "motion": {"enabled": False}}},
        "detector": {"workers": 1}, "storage": {"path": str(tmp / "var")}, "http": {"enabled": True},
    })
    app = App(cfg)
    app.start()
    app.store.record(_event("e0", time.time()))
    clip = app.store.media_path(CLIP_DIR, "porch", "e0")
    clip.parent.mkdir(parents=True, exist_ok=True)
    clip.write_bytes(bytes(range(256)) * 8)
    app.store.set_clip("e0", "ready", clip=clip)
    yield app
    app.stop_event.set()
    app.stop()


def _serve(app: App, **http) -> tuple[HealthServer, ReviewPages]:
    pages = ReviewPages(app, app.cfg.http.model_copy(update=http))
    server = HealthServer("127.0.0.1", 0, lambda: (True, {"status": "ok"}), lambda: b"", pages)
    server.start()
    return server, pages


@pytest.fixture(scope="module")
def open_page(app):
    """Loopback, no login."""
    server, pages = _serve(app)
    yield server.port, pages
    server.stop()


@pytest.fixture
def locked_page(app):
    """A password and a token (a fresh server per test: its own lock-out counts)."""
    hashed = PasswordHasher().hash(PASSWORD)
    server, pages = _serve(app, password_hash=SecretStr(hashed), token=SecretStr(TOKEN))
    yield server.port, pages
    server.stop()


def raw(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` as is on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except TimeoutError:
            pass
    return got


def statuses(answer: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


def header(answer: bytes, name: bytes) -> list[bytes]:
    head = answer.split(b"\r\n\r\n", 1)[0]
    return [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")[1:] if line.lower().startswith(name.lower() + b":")]


def _csrf_session(port: int) -> tuple[str, str]:
    """(session id, its CSRF token) from GET /login."""
    resp = requests.get(f"http://127.0.0.1:{port}/login")
    sid = re.match(r"rw_session=([^;]+)", resp.headers["Set-Cookie"]).group(1)
    return sid, re.search(r'name="csrf" value="([^"]+)"', resp.text).group(1)


def _post_login(port: int, sid: str, form: bytes, extra: bytes = b"") -> bytes:
    return raw(port, b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: rw_session=" + sid.encode()
               + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n" + extra
               + b"Content-Length: " + str(len(form)).encode() + b"\r\n\r\n" + form)


@pytest.mark.parametrize("nxt, location", [
    (b"/events/e0", b"/events/e0"),
    (b"/x%0D%0ASet-Cookie:%20rw_session=planted%0D%0A%0D%0A<html>", b"/"),
    (b"/%5Cevil.example/", b"/"),     # /\evil.example/
    (b"//evil.example/", b"/"),
    (b"/%C4%80", b"/"),               # /\u0100: the old server's truncated 303
    (b"https://evil.example/", b"/"),
])
def test_login_next_never_leaves_the_site_or_splits_the_answer(locked_page, nxt, location):
    port, _ = locked_page
    sid, csrf = _csrf_session(port)
    answer = _post_login(port, sid, b"csrf=" + csrf.encode() + b"&password=" + PASSWORD.replace(" ", "+").encode()
                         + b"&next=" + nxt)
    assert statuses(answer) == [303], answer[:300]
    assert header(answer, b"Location") == [location]
    cookies = header(answer, b"Set-Cookie")
    assert len(cookies) == 1 and b"planted" not in cookies[0]
    assert answer.split(b"\r\n\r\n", 1)[1] == b""  # no body planted, no session id in one


def test_the_login_form_keeps_only_a_safe_next(locked_page):
    port, _ = locked_page
    for nxt, kept in (("/events/e0", "/events/e0"), ("/\\evil.example/", "/"), ("/\r\nX: y", "/")):
        html = requests.get(f"http://127.0.0.1:{port}/login", params={"next": nxt}).text
        assert f'name="next" value="{kept}"' in html


@pytest.mark.parametrize("request_bytes", [
    # Content-Length and Transfer-Encoding: chunked together, with a request hidden behind the body
    b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n"
    b"0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    # two different Content-Lengths
    b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n"
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -1\r\n\r\nGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: +4\r\n\r\nabcdGET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n"
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
])
def test_conflicting_body_lengths_are_refused_and_nothing_is_smuggled(locked_page, request_bytes):
    port, _ = locked_page
    answer = raw(port, request_bytes)
    codes = statuses(answer)
    assert len(codes) == 1 and 400 <= codes[0] < 502, answer[:400]  # one answer: the hidden request is never read
    assert b'"status"' not in answer


def test_a_bare_newline_or_a_control_character_in_a_header_is_refused(open_page):
    port, _ = open_page
    for head in (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: a\rb\r\n\r\n", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX: a\x00b\r\n\r\n",
                 b"GET /\xc4\x80 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n"):
        assert statuses(raw(port, head)) == [400], head


@pytest.mark.parametrize("target, extra, status", [
    (b"/?page=%C2%B2", b"", 400),                          # "\u00b2".isdigit() is True: the old 500
    (b"/?page=" + HUGE.encode(), b"", 414),
    (b"/?page=" + b"9" * 1000, b"", 400),
    (b"/?day=%D9%A2%D9%A0%D9%A2%D9%A6-%D9%A0%D9%A1-%D9%A0%D9%A1", b"", 400),  # Arabic-Indic digits
    (b"/?camera=%FF%FE", b"", 400),
    (b"/events/%00", b"", 404),
    (b"/events/%FF", b"", 404),
    (b"/events/e0/clip.mp4", b"Range: bytes=" + HUGE.encode() + b"-\r\n", 416),
    (b"/events/e0/clip.mp4", b"Range: bytes=0-" + HUGE.encode() + b"\r\n", 206),
    (b"/events/e0/clip.mp4", b"Range: bytes=-" + HUGE.encode() + b"\r\n", 206),
    (b"/events/e0/clip.mp4", b"Range: bytes=" + b"1" * 4301 + b"-" + b"2" * 4301 + b"\r\n", 416),
    (b"/", b"Cookie: rw_session=\xff\xfe; \x80=\x81\r\n", 200),
    (b"/", b"X-Forwarded-For: " + b"\xff" * 100 + b"\r\n", 200),
])
def test_odd_values_get_4xx_never_500(open_page, target, extra, status):
    port, _ = open_page
    answer = raw(port, b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + extra + b"\r\n")
    assert statuses(answer) == [status], answer[:300]
    assert b"Traceback" not in answer


@pytest.mark.parametrize("form, extra, status", [
    (b"csrf=x", b"Content-Length: 99999999999999999999\r\n", 413),
    (b"a=" + b"b" * 5000, None, 413),
    (b"csrf=%FF%FE", None, 403),
    (b"csrf=\xc4\x80&password=\xff", None, 400),
    (b"&" * 100, None, 400),
])
def test_odd_forms_get_4xx(locked_page, form, extra, status):
    port, _ = locked_page
    sid, _ = _csrf_session(port)
    if extra is None:
        answer = _post_login(port, sid, form)
    else:
        answer = raw(port, b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: rw_session=" + sid.encode() + b"\r\n"
                     + extra + b"Connection: close\r\n\r\n" + form)
    assert statuses(answer) == [status], answer[:300]


def test_a_chunked_form_is_bounded_too(locked_page):
    port, _ = locked_page
    chunk = b"a=" + b"b" * 2000
    body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(4)) + b"0\r\n\r\n"
    answer = raw(port, b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert statuses(answer) == [413]


def test_methods_other_than_get_and_post(open_page):
    port, _ = open_page
    for method in (b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"TRACE"):
        answer = raw(port, method + b" / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert statuses(answer) == [501], (method, answer[:200])


def test_a_request_head_must_arrive_in_time(open_page, monkeypatch):
    """Slowloris: a half-sent request head is closed after HEAD_TIMEOUT_S (here 1 s), from the accept
    and from the end of the previous answer, with no thread held meanwhile."""
    monkeypatch.setattr(httpserver, "HEAD_TIMEOUT_S", 1.0)
    port, _ = open_page
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        t0 = time.monotonic()
        assert s.recv(100) == b""  # closed by the server, unanswered
        assert time.monotonic() - t0 >= 0.5
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert s.recv(12) == b"HTTP/1.1 200"
        for _ in range(3):  # a byte now and then does not keep it open
            time.sleep(0.4)
            s.sendall(b"G")
        s.settimeout(5)
        rest = b""
        while chunk := s.recv(65536):
            rest += chunk
        assert b"HTTP/1.1" not in rest.split(b"\r\n\r\n", 1)[1]


def test_live_view_slots_come_back_however_the_viewer_leaves(open_page):
    """Viewers that hang up before the first frame, or after it, give their slot back: the ninth of
    nine open streams is refused (503), and after they leave eight can watch again."""
    port, pages = open_page
    for i in range(2 * MAX_LIVE_VIEWERS):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /live/porch.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            if i % 2:
                assert s.recv(12) == b"HTTP/1.1 200"
    assert wait_until(lambda: pages._viewers == 0, timeout=10), pages._viewers
    streams = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(MAX_LIVE_VIEWERS + 1)]
    try:
        codes = []
        for s in streams:
            s.sendall(b"GET /live/porch.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            codes.append(int(s.recv(12)[9:12]))
        assert codes == [200] * MAX_LIVE_VIEWERS + [503]
    finally:
        for s in streams:
            s.close()
    assert wait_until(lambda: pages._viewers == 0, timeout=10)


# --- logins: one argon2 check at a time per client, counted first ------------------------------------

def test_parallel_wrong_logins_from_one_client_cost_at_most_the_lockout_in_argon2_checks(locked_page):
    port, pages = locked_page
    sid, csrf = _csrf_session(port)
    url = f"http://127.0.0.1:{port}/login"

    def attempt(i: int) -> int:
        return requests.post(url, data={"csrf": csrf, "password": f"guess{i}"}, cookies={"rw_session": sid},
                             allow_redirects=False, timeout=120).status_code

    with ThreadPoolExecutor(64) as pool:
        codes = list(pool.map(attempt, range(64)))
    assert pages.auth.verifies <= LOGIN_MAX_FAILURES, pages.auth.verifies
    assert codes.count(401) == pages.auth.verifies and codes.count(429) == 64 - codes.count(401), codes
    # the right password is refused too while locked out, and costs no check
    right = requests.post(url, data={"csrf": csrf, "password": PASSWORD}, cookies={"rw_session": sid},
                          allow_redirects=False)
    assert right.status_code == 429 and int(right.headers["Retry-After"]) > 0
    assert pages.auth.verifies <= LOGIN_MAX_FAILURES


def test_argon2_checks_are_bounded_across_clients_too(locked_page):
    """6 clients (behind the trusted proxy, each its own X-Forwarded-For) at once: at most
    MAX_PARALLEL_VERIFIES argon2 checks run together."""
    port, pages = locked_page
    sid, csrf = _csrf_session(port)

    def attempt(i: int) -> int:
        return requests.post(f"http://127.0.0.1:{port}/login", data={"csrf": csrf, "password": f"guess{i}"},
                             headers={"X-Forwarded-For": f"203.0.113.{i}"}, cookies={"rw_session": sid},
                             allow_redirects=False, timeout=120).status_code

    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(attempt, range(6)))
    assert codes == [401] * 6  # one failure each: nobody is locked out by the others
    assert pages.auth.verifies == 6 and 1 <= pages.auth.verify_peak <= MAX_PARALLEL_VERIFIES


def test_wrong_tokens_count_like_wrong_passwords(locked_page):
    port, pages = locked_page
    url = f"http://127.0.0.1:{port}/events/e0"
    codes = [requests.get(url, headers={"Authorization": f"Bearer guess{i}"}, allow_redirects=False).status_code
             for i in range(LOGIN_MAX_FAILURES + 2)]
    assert codes == [401] * LOGIN_MAX_FAILURES + [429, 429]
    # locked out: the right token is refused too, and so is the password form, from this client
    locked = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert locked.status_code == 429 and "Retry-After" in locked.headers
    sid, csrf = _csrf_session(port)
    assert requests.post(f"http://127.0.0.1:{port}/login", data={"csrf": csrf, "password": PASSWORD},
                         cookies={"rw_session": sid}, allow_redirects=False).status_code == 429
    assert pages.auth.verifies == 0
    # another client (named by the trusted proxy) is not locked out, and the token works for it
    other = requests.get(url, headers={"Authorization": f"bearer {TOKEN}", "X-Forwarded-For": "198.51.100.2"})
    assert other.status_code == 200


def test_failed_passwords_lock_the_token_out_too(locked_page):
    port, _ = locked_page
    sid, csrf = _csrf_session(port)
    for i in range(LOGIN_MAX_FAILURES):
        assert requests.post(f"http://127.0.0.1:{port}/login", data={"csrf": csrf, "password": f"guess{i}"},
                             cookies={"rw_session": sid}, allow_redirects=False).status_code == 401
    answer = requests.get(f"http://127.0.0.1:{port}/events/e0", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 429


def test_login_counts_first_even_when_called_directly():
    """Auth alone (no server): the failure is counted before the check; success forgives it."""
    import asyncio

    hashed = PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSWORD)
    cfg = Config.model_validate({"cameras": {"c": {"source": "0"}}, "http": {"password_hash": hashed}}).http
    auth = Auth(cfg)

    async def many() -> list[float]:
        results = await asyncio.gather(*(auth.login("10.0.0.9", f"guess{i}", None) for i in range(20)))
        return [wait for _, wait in results]

    waits = asyncio.run(many())
    assert auth.verifies == LOGIN_MAX_FAILURES and sum(w > 0 for w in waits) == 20 - LOGIN_MAX_FAILURES
    session, wait = asyncio.run(auth.login("10.0.0.10", PASSWORD, None))
    assert session is not None and session.authenticated and wait == 0
    assert auth.locked_out("10.0.0.10") == 0 and auth.locked_out("10.0.0.9") > 0


# --- many at once ------------------------------------------------------------------------------------

def test_200_concurrent_healthz_are_all_answered(open_page):
    """All 200 connect first (the listen backlog holds them), then all send, then all are read."""
    port, _ = open_page
    socks = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(200)]
    try:
        for s in socks:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        answers = []
        for s in socks:
            got = b""
            while chunk := s.recv(65536):
                got += chunk
            answers.append(got)
    finally:
        for s in socks:
            s.close()
    assert [statuses(a) for a in answers] == [[200]] * 200
    assert all(a.endswith(b'{"status": "ok"}') for a in answers)


# --- the daemon: a taken port ------------------------------------------------------------------------

def test_a_taken_port_exits_2_naming_http_port_before_any_camera_starts(tmp_path: Path):
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    cfg = write_config(tmp_path / "config.yaml", {
        "cameras": {"porch": {"source": str(tmp_path / "no-such-clip.mp4")}},
        "storage": {"path": str(tmp_path / "var")},
        "http": {"enabled": True, "port": port},
        "logging": {"format": "json"},
    })
    try:
        daemon = Daemon.start(cfg)
        code = daemon.proc.wait(timeout=60)
    finally:
        holder.close()
    daemon.terminate()  # collects the rest of its output
    out = "".join(daemon.raw)
    assert code == 2, out[-2000:]
    assert f"http.port {port}" in out and "Address already in use" in out
    [failed] = daemon.events("http_bind_failed")
    assert failed["port"] == port
    for started in ("model_loaded", "daemon_started", "service_ready"):
        assert not daemon.events(started), f"{started} before the port was checked"
    assert "Traceback" not in out
