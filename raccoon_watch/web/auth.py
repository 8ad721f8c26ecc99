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
  ``LOGIN_WINDOW_S`` lock it out until the oldest of them is that old (``login_allowed``, pure);
- a wrong bearer token is a failed login like a wrong password, and a locked-out client cannot use
  the token either (``check_bearer``); tokens are compared in constant time, as SHA-256 digests so
  that not even their length shows in the timing.

Argon2 costs 64 MiB and tens of milliseconds per check, so ``login`` runs them one at a time per
client (an asyncio lock per client address) and at most ``MAX_PARALLEL_VERIFIES`` at once in all,
and counts the attempt as a failure *before* the check (forgiven on success): 64 parallel wrong
logins from one address cost ``LOGIN_MAX_FAILURES`` checks and 59 quick 429s, not 64 x 64 MiB.
``verifies`` counts the argon2 checks made and ``verify_peak`` the most at once (tests and
``tools/bench.py`` read them).
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from raccoon_watch.config import HttpConfig

MAX_SESSIONS = 1000
LOGIN_MAX_FAILURES = 5
LOGIN_WINDOW_S = 300.0
MAX_TRACKED_CLIENTS = 10000
MAX_PARALLEL_VERIFIES = 2  # argon2 checks at once, all clients together (64 MiB each)
MAX_PASSWORD = 1024
COOKIE = "rw_session"


class Bearer(enum.Enum):
    """What an ``Authorization`` header says about a request (``Auth.check_bearer``)."""

    NONE = "none"  # no bearer token sent
    OK = "ok"
    WRONG = "wrong"  # counted as a failed login
    LOCKED = "locked"  # the client is locked out: not even the right token is looked at


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def same_secret(given: str, expected: str) -> bool:
    """Constant time, whatever the lengths: both sides are hashed to 32 bytes first (pure)."""
    return hmac.compare_digest(_digest(given), _digest(expected))


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
    return session is not None and token is not None and same_secret(token, session.csrf)


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
    """Sessions and the login check for one server. Sessions and failure counts are thread-safe;
    ``login`` is a coroutine for the server's event loop (the argon2 check runs in a worker thread)."""

    def __init__(self, cfg: HttpConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.login_required = cfg.login_required
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._failures: OrderedDict[str, tuple[float, ...]] = OrderedDict()
        self._hasher = PasswordHasher()
        self._gates: dict[str, _Gate] = {}  # client -> its login lock (event-loop side only)
        self._verify_slots: asyncio.Semaphore | None = None
        self.verifies = 0  # argon2 checks made, for tests and the bench
        self.verify_peak = 0  # the most argon2 checks that ran at once
        self._verifying = 0

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

    # --- failures: counted per client, first ---------------------------------------------------
    def locked_out(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it may now."""
        with self._lock:
            allowed, wait = login_allowed(self._failures.get(client, ()), self._clock())
        return 0.0 if allowed else max(wait, 0.0)

    def _charge(self, client: str) -> float:
        """One attempt by ``client``, counted as a failure before it is checked: the seconds it
        must wait when it is locked out (nothing counted then), else 0 (one failure counted)."""
        now = self._clock()
        with self._lock:
            kept = tuple(t for t in self._failures.pop(client, ()) if now - t < LOGIN_WINDOW_S)
            allowed, wait = login_allowed(kept, now)
            self._failures[client] = (*kept, now) if allowed else kept
            while len(self._failures) > MAX_TRACKED_CLIENTS:
                self._failures.popitem(last=False)
        return 0.0 if allowed else max(wait, 0.0)

    def _forgive(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    # --- the bearer token ----------------------------------------------------------------------
    def check_bearer(self, client: str, authorization: str | None) -> tuple[Bearer, float]:
        """(verdict, retry_after_s) for an ``Authorization: Bearer ...`` header from ``client``.
        A wrong token counts as a failed login; a locked-out client is refused unchecked."""
        if not authorization or authorization[:7].lower() != "bearer ":  # the scheme is case-insensitive
            return Bearer.NONE, 0.0
        wait = self._charge(client)
        if wait > 0:
            return Bearer.LOCKED, wait
        token = self.cfg.token
        if token is not None and same_secret(authorization[7:].strip(), token.get_secret_value()):
            self._forgive(client)
            return Bearer.OK, 0.0
        return Bearer.WRONG, 0.0

    # --- login ---------------------------------------------------------------------------------
    async def login(self, client: str, password: str, old: Session | None) -> tuple[Session | None, float]:
        """(a new authenticated session, 0) on success; (None, retry_after_s) when locked out or
        wrong (retry_after_s 0 when only wrong). One check at a time per client, counted first."""
        async with self._client_gate(client):
            wait = self._charge(client)
            if wait > 0:
                return None, wait
            if self._verify_slots is None:
                self._verify_slots = asyncio.Semaphore(MAX_PARALLEL_VERIFIES)
            async with self._verify_slots:
                ok = await anyio.to_thread.run_sync(self.password_ok, password)
            if not ok:
                return None, 0.0
            self._forgive(client)
        if old is not None:
            self.end_session(old.id)  # a new id at login: a planted session id is worth nothing
        return self.new_session(True), 0.0

    @asynccontextmanager
    async def _client_gate(self, client: str) -> AsyncIterator[None]:
        """Hold ``client``'s login lock; the lock is dropped when nobody holds or awaits it."""
        gate = self._gates.get(client)
        if gate is None:
            gate = self._gates[client] = _Gate()
        gate.users += 1
        try:
            async with gate.lock:
                yield
        finally:
            gate.users -= 1
            if gate.users == 0:
                del self._gates[client]

    def password_ok(self, password: str) -> bool:
        """The password (or the token typed as one) is right; blocking: argon2 runs here."""
        if not password or len(password) > MAX_PASSWORD:
            return False
        if self.cfg.token is not None and same_secret(password, self.cfg.token.get_secret_value()):
            return True
        if self.cfg.password_hash is None:
            return False
        with self._lock:
            self.verifies += 1
            self._verifying += 1
            self.verify_peak = max(self.verify_peak, self._verifying)
        try:
            return self._hasher.verify(self.cfg.password_hash.get_secret_value(), password)
        except (VerificationError, InvalidHashError):
            return False
        finally:
            with self._lock:
                self._verifying -= 1


class _Gate:
    """One client's login lock and how many requests hold or await it."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0
