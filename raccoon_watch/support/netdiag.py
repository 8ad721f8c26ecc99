"""Why a network connection failed, in a few stable words: for /healthz, logs and check-config.

``describe_error(exc)`` turns what a connect raised (directly, or wrapped by paho, requests or
urllib3) into one reason:

    dns: name not resolved (<host>)      the name does not resolve (getaddrinfo failed)
    connection refused                   the host answered; nothing listens on that port
    timed out                            no answer within the timeout (a firewall dropping packets,
                                         a host that is off, a listener whose queue is full)
    network unreachable / host unreachable / connection reset / tls: ...
    anything else: the OS's own words

``probe_tcp(host, port, timeout)`` opens (and closes) one TCP connection to say which of these
applies to a source that failed without saying why (OpenCV's FFmpeg open of an RTSP URL only says
"not opened"); None when the connection is accepted.
"""

from __future__ import annotations

import errno
import socket
import ssl
from urllib.parse import urlsplit

DNS_FAILED = "dns: name not resolved"
REFUSED = "connection refused"
TIMED_OUT = "timed out"

_ERRNO_WORDS = {
    errno.ECONNREFUSED: REFUSED,
    errno.ETIMEDOUT: TIMED_OUT,
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ECONNRESET: "connection reset",
    errno.EADDRNOTAVAIL: "address not available",
}


def find_oserror(exc: BaseException | None) -> BaseException | None:
    """The OSError (or TimeoutError) at the root of ``exc``: itself, or the first one found along
    ``__cause__`` / ``__context__`` / ``.reason`` / ``args`` (requests wraps urllib3's error, which
    wraps the socket's). None when there is none."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc] if exc is not None else []
    while todo:
        cur = todo.pop(0)
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        if isinstance(cur, (socket.gaierror, ssl.SSLError, TimeoutError)) or (
                isinstance(cur, OSError) and cur.errno is not None):
            return cur
        nxt = [getattr(cur, "reason", None), cur.__cause__, cur.__context__,
               *(a for a in getattr(cur, "args", ()) if isinstance(a, BaseException))]
        todo += [n for n in nxt if isinstance(n, BaseException)]
    return None


def describe_error(exc: BaseException, host: str | None = None) -> str:
    """A short reason for a failed connection (see the module doc); ``host`` goes into the DNS one."""
    name = f" ({host})" if host else ""
    root = find_oserror(exc)
    if root is None:
        text = type(exc).__name__.lower()
        if "timeout" in text:
            return TIMED_OUT
        if "nameresolution" in text:
            return DNS_FAILED + name
        return str(exc).strip() or type(exc).__name__
    if isinstance(root, socket.gaierror):
        return DNS_FAILED + name
    if isinstance(root, ssl.SSLCertVerificationError):
        return f"tls: certificate not accepted ({root.verify_message or root.reason})"
    if isinstance(root, ssl.SSLError):
        return f"tls: {root.reason or root}"
    if isinstance(root, TimeoutError) or getattr(root, "errno", None) == errno.ETIMEDOUT:
        return TIMED_OUT
    words = _ERRNO_WORDS.get(getattr(root, "errno", None) or 0)
    if words:
        return words
    return (getattr(root, "strerror", None) or str(root) or type(root).__name__).strip()


def probe_tcp(host: str, port: int, timeout: float) -> str | None:
    """Open one TCP connection to ``host``:``port``; None when it is accepted, else the reason."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except (OSError, UnicodeError) as exc:
        return describe_error(exc, host)


DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}


def url_endpoint(url: str) -> tuple[str, int] | None:
    """(host, port) of an rtsp/http URL (the scheme's default port when none is given); None when
    the URL names no host (pure)."""
    try:
        parts = urlsplit(url.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host, port or DEFAULT_PORTS.get(parts.scheme.lower(), 80)
