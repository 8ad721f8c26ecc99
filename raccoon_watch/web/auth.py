"""Who may use the review page: sessions, CSRF tokens, the password or token check, login rate limits.

Policy (``http`` config):
- bound to loopback (127.0.0.1, ::1): no login; every visitor gets a session all the same, because
  state-changing requests (POST) carry the session's CSRF token;
- bound to another address: ``http.password_hash`` (argon2) or ``http.token`` is required by the
  config (it refuses to load otherwise); a visitor logs in at /login with the password (or the
  token), or sends ``Authorization: Bearer <token>``;
- sessions are random 256-bit ids in an ``HttpOnly; SameSite=Strict`` cookie, expire
  ``session_ttl_s`` after they were made (monotonic), and the id changes at login; at most
  ``MAX_SESSIONS`` are kept (the oldest is forgotten first);
- a failed login counts against the client address (behind a proxy in ``http.trusted_proxies``, the
  address its X-Forwarded-For names, ``client_address``): ``LOGIN_MAX_FAILURES`` failures within
  ``LOGIN_WINDOW_S`` lock it out until the oldest of them is that old (``login_allowed``, pure).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from raccoon_watch.config import HttpConfig

MAX_SESSIONS = 1000
LOGIN_MAX_FAILURES = 5
LOGIN_WINDOW_S = 300.0
MAX_TRACKED_CLIENTS = 10000
COOKIE = "rw_session"


@dataclass(frozen=True, slots=True)
class Session:
    """One browser's session: ``csrf`` goes in every form; ``expires`` is monotonic seconds."""

    id: str
    csrf: str
    authenticated: bool
    expires: float


def login_allowed(failures: tuple[float, ...], now: float,
                  max_failures: int = LOGIN_MAX_FAILURES, window_s: float = LOGIN_WINDOW_S) -> tuple[bool, float]:
    """(may this client try a password now, seconds until it may) from its failure times (pure)."""
    recent = sorted(t for t in failures if now - t < window_s)
    if len(recent) < max_failures:
        return True, 0.0
    return False, recent[-max_failures] + window_s - now


def csrf_ok(session: Session | None, token: str | None) -> bool:
    return session is not None and token is not None and hmac.compare_digest(session.csrf, token)


def client_address(peer: str, forwarded_for: str | None, trusted: Sequence[str]) -> str:
    """Who a request is from: ``peer`` (the TCP peer), or, when the peer is a trusted proxy, the
    rightmost X-Forwarded-For entry that is not a trusted proxy (the proxy appends what it saw;
    entries to its left come from the client and may be forged) (pure)."""
    if peer not in trusted or not forwarded_for:
        return peer
    for hop in reversed([part.strip() for part in forwarded_for.split(",")]):
        if hop and hop not in trusted:
            return hop[:64]
    return peer


class Auth:
    """Sessions and the login check for one server; thread-safe."""

    def __init__(self, cfg: HttpConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.login_required = cfg.login_required
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._failures: OrderedDict[str, tuple[float, ...]] = OrderedDict()
        self._hasher = PasswordHasher()

    # --- sessions ------------------------------------------------------------------------------
    def session(self, sid: str | None) -> Session | None:
        """The live session with this id, None if unknown or expired."""
        if not sid:
            return None
        with self._lock:
            s = self._sessions.get(sid)
            if s is not None and s.expires <= self._clock():
                del self._sessions[sid]
                return None
            return s

    def new_session(self, authenticated: bool) -> Session:
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32),
                    authenticated or not self.login_required, self._clock() + self.cfg.session_ttl_s)
        with self._lock:
            self._sessions[s.id] = s
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return s

    def end_session(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    def authenticated(self, session: Session | None, authorization: str | None) -> bool:
        """May this request see the page: loopback, a logged-in session or the bearer token."""
        if not self.login_required:
            return True
        if session is not None and session.authenticated:
            return True
        return self._bearer_ok(authorization)

    def _bearer_ok(self, authorization: str | None) -> bool:
        if self.cfg.token is None or not authorization or not authorization.startswith("Bearer "):
            return False
        return hmac.compare_digest(authorization[7:].strip().encode(), self.cfg.token.get_secret_value().encode())

    # --- login ---------------------------------------------------------------------------------
    def try_login(self, client: str, password: str, old: Session | None) -> tuple[Session | None, float]:
        """(a new authenticated session, 0) on success; (None, retry_after_s) when locked out or wrong
        (retry_after_s 0 when only wrong)."""
        now = self._clock()
        with self._lock:
            allowed, wait = login_allowed(self._failures.get(client, ()), now)
        if not allowed:
            return None, wait
        if not self._password_ok(password):
            with self._lock:
                kept = tuple(t for t in self._failures.pop(client, ()) if now - t < LOGIN_WINDOW_S)
                self._failures[client] = (*kept, now)
                while len(self._failures) > MAX_TRACKED_CLIENTS:
                    self._failures.popitem(last=False)
            return None, 0.0
        with self._lock:
            self._failures.pop(client, None)
        if old is not None:
            self.end_session(old.id)  # a new id at login: a planted session id is worth nothing
        return self.new_session(True), 0.0

    def _password_ok(self, password: str) -> bool:
        if not password or len(password) > 1024:
            return False
        if self.cfg.token is not None and hmac.compare_digest(password.encode(), self.cfg.token.get_secret_value().encode()):
            return True
        if self.cfg.password_hash is not None:
            try:
                return self._hasher.verify(self.cfg.password_hash.get_secret_value(), password)
            except (VerificationError, InvalidHashError):
                return False
        return False
