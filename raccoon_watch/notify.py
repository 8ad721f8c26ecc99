"""sd_notify(3) over the stdlib: tell systemd we are ready, alive, reloading or stopping.

Protocol (systemd.io/NOTIFY): one AF_UNIX SOCK_DGRAM datagram of newline-separated ``KEY=VALUE``
lines to the path in ``$NOTIFY_SOCKET``; a leading ``@`` means the Linux abstract namespace (``\\0``).
Without ``$NOTIFY_SOCKET`` (not under systemd, or ``NotifyAccess=none``) every call is a no-op, so
the daemon runs the same from a terminal.

Watchdog: systemd sets ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``) when the unit has ``WatchdogSec=``;
``watchdog_interval_s()`` is the period at which to send ``WATCHDOG=1`` (half the timeout, as
sd_watchdog_enabled(3) recommends), or None when no watchdog is expected of this process.
"""

from __future__ import annotations

import os
import socket
import time

import structlog

log = structlog.get_logger(__name__)

_SEND_TIMEOUT_S = 1.0


def _address(env: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    """The socket address from ``$NOTIFY_SOCKET``; ``@name`` becomes ``\\0name`` (abstract)."""
    value = (env if env is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # vsock:CID:PORT and relative paths exist too; we only speak AF_UNIX paths.
    log.warning("notify_socket_unsupported", notify_socket=value)
    return None


def notify(*lines: str) -> bool:
    """Send ``lines`` as one datagram. Returns True if sent, False if no socket or on error.

    Never raises: a notification that cannot be delivered must not take the daemon down (systemd
    will notice on its own: start timeout or watchdog).
    """
    address = _address()
    if address is None:
        return False
    payload = "\n".join(lines).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_SEND_TIMEOUT_S)
            sock.connect(address)
            sock.sendall(payload)
        return True
    except OSError as exc:
        log.warning("notify_failed", error=repr(exc), message=lines[0] if lines else "")
        return False


def ready(status: str | None = None) -> bool:
    return notify("READY=1", *([f"STATUS={_one_line(status)}"] if status else []))


def status(text: str) -> bool:
    return notify(f"STATUS={_one_line(text)}")


def watchdog() -> bool:
    return notify("WATCHDOG=1")


def stopping(status: str | None = None) -> bool:
    return notify("STOPPING=1", *([f"STATUS={_one_line(status)}"] if status else []))


def reloading(status: str | None = None) -> bool:
    """RELOADING=1 with MONOTONIC_USEC (required by Type=notify-reload, harmless for Type=notify)."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *([f"STATUS={_one_line(status)}"] if status else []))


def watchdog_interval_s(env: dict[str, str] | os._Environ[str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of ``WATCHDOG_USEC``), or None if not expected.

    ``WATCHDOG_PID``, when set, must be our pid: a child that inherited the environment must not
    ping on its parent's behalf (sd_watchdog_enabled(3)).
    """
    env = env if env is not None else os.environ
    usec_text = env.get("WATCHDOG_USEC", "")
    if not usec_text:
        return None
    try:
        usec = int(usec_text)
    except ValueError:
        log.warning("watchdog_usec_invalid", value=usec_text)
        return None
    if usec <= 0:
        return None
    pid_text = env.get("WATCHDOG_PID", "")
    if pid_text:
        try:
            if int(pid_text) != (pid if pid is not None else os.getpid()):
                return None
        except ValueError:
            return None
    return usec / 1_000_000 / 2


def _one_line(text: str) -> str:
    """STATUS= is one line: newlines would start a new KEY=VALUE."""
    return " ".join(str(text).split())
