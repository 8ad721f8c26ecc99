"""The review page over real HTTP: a real App (file camera, bundled model), the real server, a real store.

Bad input of every kind gets a clear 4xx page and never a traceback; files resolve only through the
store; state changes need POST and the session's CSRF token; off loopback a login is needed and
failed logins are rate-limited. The browser test (tests/test_review_browser.py) drives the same
page end to end in Chromium.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from argon2 import PasswordHasher
from pydantic import SecretStr

from raccoon_watch.app import App
from raccoon_watch.config import Config, ConfigError, parse_config
from raccoon_watch.service.health import HealthServer
from raccoon_watch.store.events import EventRow
from raccoon_watch.store.schema import CLIP_MISSING
from raccoon_watch.types import Event, EventKind
from raccoon_watch.web.auth import Auth, client_address, login_allowed
from raccoon_watch.web.chart import duration_text, event_span, score_chart_svg
from raccoon_watch.web.pages import ReviewPages, verdict_title
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
JPEG = cv2.imencode(".jpg", np.full((90, 160, 3), 120, np.uint8))[1].tobytes()


def _event(eid: str, start: float, camera: str = "porch", snapshot: bool = True) -> Event:
    return Event(id=eid, kind=EventKind.END, camera=camera, label="raccoon", start_time=start, end_time=start + 7,
                 score=0.9, top_score=0.91, box=(0.2, 0.2, 0.6, 0.7), snapshot_jpeg=JPEG if snapshot else None,
                 first_seen_ts=start)


def _serve(tmp_path: Path, small_clip, http: dict) -> tuple[App, HealthServer]:
    cfg = Config.model_validate({
        "cameras": {"porch": {"source": str(small_clip.path), "loop": True, "motion": {"enabled": False}}},
        "detector": {"workers": 1}, "storage": {"path": str(tmp_path / "var")},
        "http": {"enabled": True, **http},
    })
    app = App(cfg)
    app.start()
    server = HealthServer(cfg.http.host, 0, lambda: (True, {}), lambda: b"", ReviewPages(app))
    server.start()
    return app, server


@pytest.fixture(scope="module")
def page(tmp_path_factory, request):
    small_clip = request.getfixturevalue("small_clip")
    tmp = tmp_path_factory.mktemp("review")
    app, server = _serve(tmp, small_clip, {})
    now = time.time()
    for i in range(7):
        app.store.record(_event(f"e{i}", now - 3600 * i))
    app.store.record(_event("nosnap", now - 3 * 86400, snapshot=False))  # another day at any time of day
    app.store.set_clip("e1", CLIP_MISSING, reason="no recorded segment between 10:00:00 and 10:00:12")
    app.store.set_scores("e0", [(now + 0.2 * i, 0.4 + 0.05 * i, 0.7, 0.3) for i in range(10)])
    (app.store.path / "secret.txt").write_text("not for the web")
    yield app, f"http://127.0.0.1:{server.port}"
    server.stop()
    app.stop_event.set()
    app.stop()


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def _message(resp: requests.Response) -> str:
    m = re.search(r'id="error-message">([^<]*)<', resp.text)
    return m.group(1) if m else resp.text[:200]


def test_the_list_is_newest_first_paginated_and_filtered(page):
    app, url = page
    html = requests.get(url + "/").text
    ids = re.findall(r'class="event" data-id="([^"]+)"', html)
    assert ids == [f"e{i}" for i in range(7)] + ["nosnap"]
    assert "8 in all" in html
    today = time.strftime("%Y-%m-%d", time.localtime(time.time() - 3600 * 6))
    day_ids = re.findall(r'data-id="([^"]+)"', requests.get(url + f"/?day={today}&camera=porch").text)
    assert day_ids and set(day_ids) <= {f"e{i}" for i in range(7)}


def test_the_event_page_shows_scores_and_takes_feedback(page):
    app, url = page
    s = requests.Session()
    html = s.get(url + "/events/e0").text
    assert "<svg" in html and "threshold" in html and 'id="snapshot"' in html
    resp = s.post(url + "/events/e0/feedback", data={"label": "not_raccoon", "csrf": _csrf(html)})
    assert resp.status_code == 200 and resp.url.endswith("/events/e0")  # 303 back to the event
    assert app.store.get_event("e0").feedback == "not_raccoon"
    assert 'class="feedback not_raccoon"' in resp.text


def test_the_title_follows_the_verdict_and_a_mark_goes_back_where_it_came_from(page):
    app, url = page
    s = requests.Session()
    html = s.get(url + "/events/e5").text
    assert "<title>Raccoon (unreviewed) at porch" in html
    for label, title in (("not_raccoon", "Not a raccoon at porch"), ("raccoon", "Raccoon (confirmed) at porch"),
                         ("none", "Raccoon (unreviewed) at porch")):
        resp = s.post(url + "/events/e5/feedback", data={"label": label, "csrf": _csrf(html)})
        assert f"<title>{title} · raccoon_watch</title>" in resp.text and f'id="title-text">{title}<' in resp.text
    # from the list without the script: back to the same list (only a path of this site)
    back = s.post(url + "/events/e5/feedback", data={"label": "raccoon", "csrf": _csrf(html),
                                                      "back": "/?verdict=unreviewed&page=1"}, allow_redirects=False)
    assert back.status_code == 303 and back.headers["Location"] == "/?verdict=unreviewed&page=1"
    evil = s.post(url + "/events/e5/feedback", data={"label": "raccoon", "csrf": _csrf(html),
                                                      "back": "//evil.example/"}, allow_redirects=False)
    assert evil.headers["Location"] == "/"
    # the page's script asks for JSON: the same store write, the new title, no redirect
    got = s.post(url + "/events/e5/feedback", data={"label": "not_raccoon", "csrf": _csrf(html)},
                 headers={"Accept": "application/json"}, allow_redirects=False)
    assert got.status_code == 200 and got.json() == {"id": "e5", "feedback": "not_raccoon", "verdict": "not a raccoon",
                                                     "title": "Not a raccoon at porch"}
    row = app.store.get_event("e5")
    assert (row.feedback, row.feedback_source) == ("not_raccoon", "page")
    app.store.set_feedback("e5", None, "test")


def test_the_unreviewed_filter_and_next_previous_within_it(page):
    app, url = page
    ids = [f"e{i}" for i in range(7)] + ["nosnap"]
    for eid in ids:  # other tests mark some
        app.store.set_feedback(eid, None, "test")
    try:
        app.store.set_feedback("e2", "raccoon", "test")
        app.store.set_feedback("e4", "not_raccoon", "test")
        html = requests.get(url + "/?verdict=unreviewed").text
        assert re.findall(r'class="event" data-id="([^"]+)"', html) == [i for i in ids if i not in ("e2", "e4")]
        assert 'href="/events/e3?verdict=unreviewed"' in html  # the event keeps the filter
        marked = requests.get(url + "/?verdict=not_raccoon").text
        assert re.findall(r'class="event" data-id="([^"]+)"', marked) == ["e4"]
        event = requests.get(url + "/events/e3?verdict=unreviewed").text
        assert 'id="newer" rel="prev"' in event and 'href="/events/e1?verdict=unreviewed"' in event  # e2 is marked
        assert 'href="/events/e5?verdict=unreviewed"' in event  # e4 is marked
        # a marked event (no longer in the filter) is still a place to step from
        event = requests.get(url + "/events/e2?verdict=unreviewed").text
        assert 'href="/events/e1?verdict=unreviewed"' in event and 'href="/events/e3?verdict=unreviewed"' in event
        newest = requests.get(url + "/events/e0").text
        assert 'id="newer"' not in newest and 'href="/events/e1"' in newest
    finally:
        for eid in ("e2", "e4"):
            app.store.set_feedback(eid, None, "test")


def test_the_script_is_served_and_allowed_by_the_csp(page):
    app, url = page
    js = requests.get(url + "/static/review.js")
    assert js.status_code == 200 and js.headers["Content-Type"].startswith("text/javascript")
    policy = requests.get(url + "/").headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy and "unsafe-inline" not in policy
    assert "<script>" not in requests.get(url + "/events/e0").text  # no inline script: only the file


@pytest.mark.parametrize("method, path, data, status, says", [
    ("GET", "/events/unknown-id", None, 404, "no event"),
    ("GET", "/events/%2e%2e%2fsecret.txt", None, 404, "no page"),
    ("GET", "/events/..%5Csecret.txt", None, 404, "no event"),
    ("GET", "/events/e0/../../secret.txt", None, 404, "no page"),
    ("GET", "/secret.txt", None, 404, "no page"),
    ("GET", "/static/", None, 404, "no page"),
    ("GET", "/?page=abc", None, 400, "page must be a whole number"),
    ("GET", "/?page=-1", None, 400, "page must be a whole number"),
    ("GET", "/?page=99", None, 404, "only 1 pages"),
    ("GET", "/?day=2026-02-30", None, 400, "day must be a date"),
    ("GET", "/?camera=../../x", None, 400, "no camera named"),
    ("GET", "/?severity=warning", None, 400, "severity must be alert or detection"),
    ("GET", "/?verdict=maybe", None, 400, "verdict must be unreviewed"),
    ("GET", "/events/e0?verdict=maybe", None, 400, "verdict must be unreviewed"),
    ("GET", "/static/other.js", None, 404, "no page"),
    ("GET", "/?" + "q=1&" * 1500, None, 414, "longer than"),
    ("GET", "/events/e0/clip.mp4", None, 404, "no clip"),
    ("GET", "/events/e1/clip.mp4", None, 404, "no recorded segment"),
    ("GET", "/events/nosnap/snapshot.jpg", None, 404, "no snapshot"),
    ("GET", "/live/garage.mjpg", None, 404, "no camera named"),
    ("POST", "/events/e0/feedback", {"label": "raccoon"}, 403, "CSRF token"),
    ("POST", "/events/e0/feedback", {"label": "raccoon", "csrf": "forged"}, 403, "CSRF token"),
    ("PUT", "/", None, 501, None),  # only GET and POST are served
])
def test_bad_input_gets_a_clear_4xx_page(page, method, path, data, status, says):
    app, url = page
    resp = requests.request(method, url + path, data=data, allow_redirects=False)
    assert resp.status_code == status
    assert "Traceback" not in resp.text
    if says is not None:
        assert says in _message(resp)
        assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")


def test_a_foreign_host_name_is_refused_without_a_login(page):
    """DNS rebinding: a site that points its own name at 127.0.0.1 must not read the events."""
    app, url = page
    resp = requests.get(url + "/", headers={"Host": "evil.example:8765"})
    assert resp.status_code == 421 and "answers only to" in _message(resp)
    assert requests.get(url + "/", headers={"Host": "localhost:8765"}).status_code == 200


def test_a_deleted_snapshot_is_a_404_and_the_daemon_keeps_detecting(page):
    app, url = page
    app.store.media_file("e2", "snapshots").unlink()
    assert requests.get(url + "/events/e2/snapshot.jpg").status_code == 404
    assert requests.get(url + "/events/e2").status_code == 200  # the page says so instead of the image
    before = app.stats().detector_frames
    assert wait_until(lambda: app.stats().detector_frames > before, 10.0)


def test_clip_ranges_for_seeking(page, tmp_path):
    app, url = page
    clip = app.store.media_path("clips", "porch", "e3")
    clip.parent.mkdir(parents=True, exist_ok=True)
    clip.write_bytes(bytes(range(256)) * 40)
    app.store.set_clip("e3", "ready", clip=clip)
    whole = requests.get(url + "/events/e3/clip.mp4")
    assert whole.status_code == 200 and len(whole.content) == 10240 and whole.headers["Accept-Ranges"] == "bytes"
    part = requests.get(url + "/events/e3/clip.mp4", headers={"Range": "bytes=256-511"})
    assert part.status_code == 206 and part.content == bytes(range(256))
    assert part.headers["Content-Range"] == "bytes 256-511/10240"
    assert requests.get(url + "/events/e3/clip.mp4", headers={"Range": "bytes=99999-"}).status_code == 416


def test_behind_a_proxy_at_a_sub_path_every_link_keeps_it(page):
    app, _ = page
    http = app.cfg.http.model_copy(update={"public_url": "https://cams.example.net/rw", "token": SecretStr("t" * 32)})
    server = HealthServer("127.0.0.1", 0, lambda: (True, {}), lambda: b"", ReviewPages(app, http))
    server.start()
    bearer = {"Authorization": "Bearer " + "t" * 32}
    try:
        url = f"http://127.0.0.1:{server.port}"  # the proxy strips /rw before it forwards
        login = requests.get(url + "/", allow_redirects=False)  # served to others by the proxy: a login
        assert login.status_code == 303 and login.headers["Location"].startswith("/rw/login")
        html = requests.get(url + "/", headers=bearer).text
        links = re.findall(r'(?:href|src|action)="([^"]+)"', html)
        assert links and all(link.startswith("/rw/") for link in links), links
        first = requests.get(url + "/events/e4", headers=bearer)
        cookie = first.headers["Set-Cookie"]
        assert "Path=/rw;" in cookie and "Secure" in cookie  # public_url is https: the cookie only goes there
        sid = re.match(r"rw_session=([^;]+)", cookie).group(1)
        resp = requests.post(url + "/events/e4/feedback", data={"label": "raccoon", "csrf": _csrf(first.text)},
                             headers={"Cookie": f"rw_session={sid}", **bearer}, allow_redirects=False)
        assert resp.status_code == 303 and resp.headers["Location"] == "/rw/events/e4"
    finally:
        server.stop()


def test_the_live_view_streams_jpeg_frames(page):
    app, url = page
    with requests.get(url + "/live/porch.mjpg", stream=True, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        got = b""
        for chunk in resp.iter_content(4096):
            got += chunk
            if got.count(b"--frame") >= 2:
                break
    assert got.count(b"\xff\xd8") >= 1  # JPEG start markers
    assert "porch" in requests.get(url + "/live").text


# --- off loopback: a login ------------------------------------------------------------------------

def test_another_bind_address_needs_a_password_or_token():
    with pytest.raises(ConfigError, match="http.*password_hash or http.token"):
        parse_config("cameras: {c: {source: '0'}}\nhttp: {enabled: true, host: 0.0.0.0}\n")
    with pytest.raises(ConfigError, match="argon2"):
        parse_config("cameras: {c: {source: '0'}}\nhttp: {enabled: true, host: 0.0.0.0, password_hash: plain}\n")
    ok = parse_config("cameras: {c: {source: '0'}}\nhttp: {enabled: true, host: 0.0.0.0, token: abcdefghijklmnop}\n")
    assert ok.http.token is not None


@pytest.mark.parametrize("http, required, error", [
    ("{enabled: true}", False, None),                                          # loopback, used there
    ("{enabled: true, public_url: 'http://127.0.0.1:8765'}", False, None),
    ("{enabled: true, public_url: 'https://cams.example.net/rw'}", True, "public_url"),  # a proxy serves it out
    ("{enabled: true, public_url: 'https://cams.example.net/rw', token: abcdefghijklmnop}", True, None),
    ("{enabled: true, token: abcdefghijklmnop}", True, None),                 # a token set: asked for
])
def test_a_page_served_to_other_machines_asks_for_a_login(http, required, error):
    text = f"cameras: {{c: {{source: '0'}}}}\nhttp: {http}\n"
    if error:
        with pytest.raises(ConfigError, match=error):
            parse_config(text)
    else:
        assert parse_config(text).http.login_required is required


@pytest.mark.parametrize("peer, forwarded, expected", [
    ("10.0.0.5", None, "10.0.0.5"),
    ("10.0.0.5", "1.2.3.4", "10.0.0.5"),                   # not a trusted proxy: its header is ignored
    ("127.0.0.1", None, "127.0.0.1"),
    ("127.0.0.1", "203.0.113.7", "203.0.113.7"),           # the proxy names the client
    ("127.0.0.1", "6.6.6.6, 203.0.113.7", "203.0.113.7"),  # the left part is the client's own claim
    ("127.0.0.1", "203.0.113.7, 127.0.0.1", "203.0.113.7"),
    ("127.0.0.1", " , ", "127.0.0.1"),
])
def test_client_address(peer, forwarded, expected):
    assert client_address(peer, forwarded, ["127.0.0.1", "::1"]) == expected


def test_login_sessions_and_the_lockout(tmp_path, small_clip):
    hashed = PasswordHasher().hash("correct horse")
    app, server = _serve(tmp_path, small_clip, {"host": "0.0.0.0", "password_hash": hashed, "token": "t" * 32})
    url = f"http://127.0.0.1:{server.port}"
    try:
        app.store.record(_event("e0", time.time()))
        s = requests.Session()
        first = s.get(url + "/events/e0")
        assert first.url.startswith(url + "/login") and "Password" in first.text
        assert s.get(url + "/events/e0/snapshot.jpg").status_code == 401
        assert requests.get(url + "/events/e0/snapshot.jpg",
                            headers={"Authorization": "Bearer " + "t" * 32}).status_code == 200
        token = _csrf(first.text)
        wrong = s.post(url + "/login", data={"csrf": token, "password": "nope", "next": "/events/e0"})
        assert wrong.status_code == 401 and "Wrong password" in wrong.text
        ok = s.post(url + "/login", data={"csrf": token, "password": "correct horse", "next": "/events/e0"})
        assert ok.status_code == 200 and ok.url == url + "/events/e0"
        assert "HttpOnly" in ok.history[0].headers["Set-Cookie"] and "SameSite=Strict" in ok.history[0].headers["Set-Cookie"]
        assert s.get(url + "/events/e0/snapshot.jpg").status_code == 200
        other = requests.Session()
        form = _csrf(other.get(url + "/").text)
        codes = [other.post(url + "/login", data={"csrf": form, "password": f"guess{i}"}).status_code for i in range(7)]
        assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
        assert s.get(url + "/events/e0").status_code == 200  # the lockout is per client, the session still works
        # behind a proxy (a trusted peer, here 127.0.0.1) the lockout is per forwarded client, not per proxy
        proxied = requests.Session()
        form = _csrf(proxied.get(url + "/", headers={"X-Forwarded-For": "203.0.113.7"}).text)
        codes = [proxied.post(url + "/login", data={"csrf": form, "password": f"guess{i}"},
                              headers={"X-Forwarded-For": "203.0.113.7"}).status_code for i in range(6)]
        assert codes == [401] * 5 + [429]
        other_client = requests.Session()
        form = _csrf(other_client.get(url + "/", headers={"X-Forwarded-For": "198.51.100.2"}).text)
        assert other_client.post(url + "/login", data={"csrf": form, "password": "correct horse"},
                                 headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 200
    finally:
        server.stop()
        app.stop_event.set()
        app.stop()


@pytest.mark.parametrize("failures, now, allowed", [
    ((), 100.0, True),
    ((1.0, 2.0, 3.0, 4.0), 10.0, True),
    ((1.0, 2.0, 3.0, 4.0, 5.0), 10.0, False),
    ((1.0, 2.0, 3.0, 4.0, 5.0), 302.0, True),   # the oldest is 300 s old: one try again
])
def test_login_allowed(failures, now, allowed):
    assert login_allowed(failures, now)[0] is allowed


def test_sessions_expire():
    t = [0.0]
    auth = Auth(Config.model_validate({"cameras": {"c": {"source": "0"}},
                                       "http": {"session_ttl_s": 60}}).http, clock=lambda: t[0])
    s = auth.new_session(False)
    assert auth.session(s.id) == s
    t[0] = 61.0
    assert auth.session(s.id) is None


def test_score_chart_is_numbers_only():
    svg = score_chart_svg([(0.0, 0.2, 0.5, 0.1), (1.0, 0.8, None, None)], threshold=0.6)
    assert svg.startswith("<svg") and "<script" not in svg and svg.count("<circle") == 2
    assert score_chart_svg([], 0.5) == ""


def test_the_chart_spans_the_event_as_its_duration_says():
    """The store keeps rows around the sighting (the visit window, a second either side) for the
    retrain's replay; the chart's axis is first to last sighting, the same span as Duration."""
    rows = [(100.0 + 0.2 * k, 0.7 if 0 <= k <= 5 else 0.0, 0.8, 0.5) for k in range(-10, 11)]
    row = EventRow("e1", "porch", "raccoon", start_time=100.4, end_time=101.0, top_score=0.7, first_seen=100.0,
                   box=(0.1, 0.1, 0.5, 0.5), in_cooldown=False, snapshot=None, updated=101.0)
    span = event_span(row)
    assert span == (100.0, 101.0) and duration_text(span[1] - span[0]) == "1.0 s"
    svg = score_chart_svg(rows, 0.6, span)
    assert svg.count('class="clf"') == 6 and '<text class="axis-end" x="616" y="154" text-anchor="end">1.0 s</text>' in svg
    assert event_span(replace(row, first_seen=None)) == (100.4, 101.0)  # older rows
    assert event_span(replace(row, end_time=None)) is None  # still going


@pytest.mark.parametrize("seconds, text", [(0.0, "0.0 s"), (1.04, "1.0 s"), (9.96, "10 s"), (12.4, "12 s"),
                                           (119.4, "119 s"), (150.0, "2.5 min")])
def test_duration_text(seconds, text):
    assert duration_text(seconds) == text


@pytest.mark.parametrize("feedback, title", [(None, "Raccoon (unreviewed)"), ("raccoon", "Raccoon (confirmed)"),
                                             ("not_raccoon", "Not a raccoon")])
def test_verdict_title(feedback, title):
    assert verdict_title("raccoon", feedback) == title


# --- the site's classifier: which runs, roll back, retrain ----------------------------------------

@pytest.mark.parametrize("code, says", [(0, "promoted"), (4, "refused by the gate"), (2, "failed (exit 2)"),
                                        (5, "not enough marked visits"), (None, "running")])
def test_retrain_outcome_words(code, says):
    from raccoon_watch.web.retrain_job import outcome_of

    assert says in outcome_of(code)


def test_the_classifier_page_says_what_the_gate_needs_and_which_held_out_visits_were_wrong(page):
    import json
    import shutil

    from raccoon_watch.learning import site_models
    from raccoon_watch.learning.replay import VisitOutcome

    app, url = page
    root = site_models.models_root(app.cfg.storage.path)
    split = {"by": "by_night", "holdout_groups": ["2026-05-03"], "minimum_per_kind_and_side": 3,
             "train_visits": {"raccoon": 7, "not_raccoon": 24}, "holdout_visits": {"raccoon": 1, "not_raccoon": 7},
             "enough": False, "need_more": {"raccoon": 2, "not_raccoon": 0, "nights": 1},
             "message": "need 2 more raccoon visits marked (from 1 more night)"}
    wrong = [VisitOutcome("e0", "porch", time.time() - 60, "not_raccoon", 0.741, "ir", "trace", 12, 0.91, True, "live",
                          0.52, False, True, True).to_dict(),
             VisitOutcome("still-7", "porch", None, "raccoon", 0.741, "color", "best_frame", 10, 0.80, True,
                          "replayed", 0.60, False, False, None).to_dict()]
    candidate = root / "candidates" / "20261207T120000-0123456789ab"
    try:
        site_models.write_last_retrain(root, {"time": time.time(), "outcome": "need_more", "candidate": None,
                                              "message": split["message"], "split": split})
        html = requests.get(url + "/models", timeout=10).text
        assert "need 2 more raccoon visits marked (from 1 more night)" in html and "not judged yet" in html
        assert re.search(r"held out now\s+1 raccoon, 7 raccoon-free; training\s+7 raccoon, 24 raccoon-free", html)

        candidate.mkdir(parents=True)
        card = {"gate": {"promote": False, "reasons": ["not better on the held-out site feedback"], "wrong": wrong}}
        (candidate / site_models.CLASSIFIER_CARD).write_text(json.dumps(card))
        (candidate / site_models.REFUSED_FILE).write_text("not better\n")
        site_models.write_last_retrain(root, {"time": time.time(), "outcome": "refused", "candidate": candidate.name,
                                              "message": "not better on the held-out site feedback", "wrong": wrong})
        html = requests.get(url + "/models", timeout=10).text
        assert "<strong>refused</strong>" in html and "2 held-out visits wrong" in html
        assert html.count('href="/events/e0"') == 2  # the last retrain's table and the candidate's
        assert "still-7" in html and 'href="/events/still-7"' not in html  # not in this store: no link
        assert "0.910 alert ✗" in html and "0.520 no alert" in html and "0.600 no alert ✗" in html
        assert "only its best frame is kept" in html and "what happened live" in html
    finally:
        shutil.rmtree(candidate, ignore_errors=True)
        (root / site_models.LAST_RETRAIN).unlink(missing_ok=True)


def test_the_classifier_page_rolls_back_and_runs_one_retrain_at_a_time(tmp_path, small_clip):
    import shutil
    import sys

    from raccoon_watch.learning import site_models
    from raccoon_watch.recognition.detectors import find_model
    from raccoon_watch.web.pages import MODELS_REFRESH_S
    from raccoon_watch.web.retrain_job import RetrainJob

    app, server = _serve(tmp_path, small_clip, {})
    reloads: list[int] = []
    # a stand-in for `raccoon-watch retrain` (a real process): writes its own log lines among
    # TensorFlow's C++ noise, takes a moment, is refused
    noise = ("I0000 00:00:1796676560.876151    4205 cpu_feature_guard.cc:227] This TensorFlow binary is optimized",
             "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
             "oneDNN custom operations are on. You may see slightly different numerical results")
    script = ("import sys, time\n"
              + "".join(f"print({n!r}, file=sys.stderr)\n" for n in noise)
              + "print('2026-12-07 20:51:33 [info     ] retrain_data   site_crops=12 site_events=9', flush=True)\n"
              "time.sleep(3)\n"
              "print('raccoon-watch retrain: the gate refused the candidate', flush=True)\n"
              "sys.exit(4)\n")
    job = RetrainJob([sys.executable, "-c", script], tmp_path / "retrain.log", lambda: reloads.append(1))
    pages = HealthServer("127.0.0.1", 0, lambda: (True, {}), lambda: b"", ReviewPages(app, retrain=job))
    pages.start()
    url = f"http://127.0.0.1:{pages.port}"
    try:
        now = time.time()
        for i in range(9):  # 9 verdicts, as the user who saw "None yet: mark events" had
            app.store.record(_event(f"v{i}", now - 60 * i))
            app.set_feedback(f"v{i}", None, "raccoon" if i < 4 else "not_raccoon", "page")
        shipped = app.swap.active.version
        files = find_model(app.model_path)
        candidate = site_models.models_root(app.cfg.storage.path) / "candidates" / "20261202T120000-site"
        candidate.mkdir(parents=True)
        # another file (its own version), the same network: the bytes after a flatbuffer are not read
        (candidate / site_models.CLASSIFIER_FILE).write_bytes(files.classifier.read_bytes() + b"site")
        shutil.copy(files.classifier.parent / site_models.CLASSIFIER_CARD, candidate / site_models.CLASSIFIER_CARD)
        site_models.promote(app.models_root, candidate)
        site_version = site_models.model_version(candidate / site_models.CLASSIFIER_FILE)

        s = requests.Session()
        html = s.get(url + "/models").text  # promoted on disk, not loaded yet (as after `models promote`)
        assert shipped in html and "retrained here: 20261202T120000-site" in html
        assert f"Chosen on disk: {site_version}" in html and 'http-equiv="refresh"' not in html
        app.reload_classifier()
        app.swap.join(30)
        assert app.swap.active.version == site_version

        # roll back: the answer after the redirect already shows what runs now (no reload needed)
        resp = s.post(url + "/models/rollback", data={"csrf": _csrf(html)})
        assert resp.history[0].status_code == 303 and resp.history[0].headers["Location"] == "/models"
        assert site_models.current(app.models_root) is None  # back to the shipped classifier
        assert re.search(rf'id="running-version">{shipped}<', resp.text), resp.text[:600]
        assert "the shipped classifier" in resp.text and "Before it: 20261202T120000-site" in resp.text
        assert 'id="switching"' not in resp.text
        assert s.post(url + "/models/rollback", data={}).status_code == 403  # no CSRF token: refused

        first = s.post(url + "/models/retrain", data={"csrf": _csrf(html)}, allow_redirects=False)
        assert first.status_code == 303
        again = s.post(url + "/models/retrain", data={"csrf": _csrf(html)}, allow_redirects=False)
        assert again.status_code == 409 and "running already" in _message(again)
        # while it runs: the page reloads itself, counts the verdicts, shows only the retrain's lines
        assert wait_until(lambda: "site_crops=12" in s.get(url + "/models").text, timeout=10)
        html = s.get(url + "/models").text
        assert f'<meta http-equiv="refresh" content="{MODELS_REFRESH_S}">' in html
        assert 'data-running="yes"' in html and "None yet: mark events" not in html
        assert re.search(r'id="verdicts">Marked so far: <strong>9</strong>\s*events\s*\(4 raccoon, 5 not a raccoon\)', html)
        assert not any(n[:30] in html for n in noise)
        assert wait_until(lambda: not job.state().running, timeout=30)
        html = s.get(url + "/models").text
        assert "refused by the gate" in html and "site_crops=12" in html and "the gate refused the candidate" in html
        assert 'http-equiv="refresh"' not in html  # done: it stops reloading
        assert not any(n[:30] in html for n in noise)
        assert reloads == []  # refused: the running classifier is not reloaded
    finally:
        pages.stop()
        server.stop()
        app.stop_event.set()
        app.stop()
