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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from raccoon_watch.app import App
    from raccoon_watch.service.health import HealthServer
    from raccoon_watch.service.liveness import LivenessLimits
    from raccoon_watch.types import PipelineStats

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


# --- daemon side: what the main loop tells systemd -------------------------------------------------

STATUS_EVERY_S = 5.0
MAX_TICK_S = 1.0


def status_line(stats: PipelineStats, fps: float) -> str:
    """One-line STATUS= summary from ``App.stats()``: "2/2 cameras up, 4.8 fps, 3 events"."""
    up = sum(1 for c in stats.cameras if c.state == "up")
    line = f"{up}/{len(stats.cameras)} cameras up, {fps:.1f} fps, {stats.events} events"
    queue = stats.queue.depth
    return line + (f", queue {queue}" if queue else "")


class ServiceNotifier:
    """READY / STATUS / WATCHDOG / STOPPING from the main loop; a no-op without systemd.

    ``alive`` is the pipeline verdict (``liveness.AppLiveness.check``): WATCHDOG=1 is sent only
    while it says alive, so systemd restarts a daemon whose detector, router or capture wedged even
    though this loop still turns. ``stats`` is ``App.stats``. Call ``tick()`` every ``tick_s``.
    """

    def __init__(
        self,
        alive: Callable[[], tuple[bool, str]],
        stats: Callable[[], PipelineStats],
        interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._alive = alive
        self._stats = stats
        self._clock = clock
        self.interval_s = interval_s if interval_s is not None else watchdog_interval_s()
        self.tick_s = min(MAX_TICK_S, self.interval_s / 2) if self.interval_s else MAX_TICK_S
        self._last_ping = float("-inf")
        self._last_status = float("-inf")
        self._fps_mark: tuple[float, int] | None = None
        self._fps = 0.0
        self._healthy = True

    def ready(self) -> None:
        now = self._clock()
        self._last_status = now
        ready(self._summary(now))
        log.info("service_ready", watchdog_interval_s=self.interval_s)

    def tick(self) -> None:
        now = self._clock()
        ok, reason = self._alive()
        if ok != self._healthy:
            self._healthy = ok
            if ok:
                log.info("pipeline_recovered")
            else:
                log.error("pipeline_stuck_watchdog_withheld", reason=reason)
                status(f"unhealthy: {reason}")
        if ok and self.interval_s and now - self._last_ping >= self.interval_s:
            watchdog()
            self._last_ping = now
        if ok and now - self._last_status >= STATUS_EVERY_S:
            self._last_status = now
            status(self._summary(now))

    def stopping(self) -> None:
        stopping("stopping")

    def _summary(self, now: float) -> str:
        stats = self._stats()
        frames = stats.detector_frames
        if self._fps_mark is not None and now > self._fps_mark[0]:
            self._fps = (frames - self._fps_mark[1]) / (now - self._fps_mark[0])
        self._fps_mark = (now, frames)
        return status_line(stats, self._fps)


# --- SIGHUP: the sd_notify side of a reload (App.reload decides what changes) -----------------------


def reload_app(app: App, path: str | os.PathLike[str]) -> bool:
    """RELOADING=1, re-read ``path``, ``app.reload()`` it, READY=1. A bad file keeps the old config."""
    from raccoon_watch.config import ConfigError, load_config

    reloading("reloading configuration")
    log.info("reload_requested", config=str(path))
    try:
        new = load_config(path)
    except ConfigError as exc:
        log.error("reload_rejected_keeping_old_config", error=str(exc))
        ready("reload failed: kept the old configuration")
        return False
    done = app.reload(new)
    restart = list(done.restart)
    if restart:
        log.warning("reload_needs_restart", sections=restart)
    log.info("reload_applied", live_filters=done.live_filters, restart_needed=restart)
    ready("configuration reloaded" + (f"; restart to apply {', '.join(restart)}" if restart else ""))
    return True


class ServiceRuntime:
    """Everything the main loop does for systemd and monitoring, around a started App.

        runtime = ServiceRuntime(app, config_path); runtime.start()      # HTTP (if on), READY=1
        while not app.wait(runtime.tick_s): app.housekeeping(); runtime.tick()
        runtime.stop()                                                   # STOPPING=1, HTTP off

    ``listener``: the socket ``httpserver.bind_listener`` bound for ``http`` before the App started (the
    CLI binds first, so a taken port exits 2 before any camera starts).
    ``request_reload()`` is safe from a signal handler: the reload itself runs in ``tick()``.
    ``limits``: the liveness limits of the watchdog and /healthz (default ``LivenessLimits()``).
    """

    def __init__(self, app: App, config_path: str | os.PathLike[str], limits: LivenessLimits | None = None,
                 listener: socket.socket | None = None) -> None:
        from raccoon_watch.service import liveness

        self.app = app
        self.config_path = config_path
        self.listener = listener  # http.host:http.port, bound before the App started (None: bind in start())
        self.liveness = liveness.AppLiveness(app, limits or liveness.LivenessLimits())
        self.notifier = ServiceNotifier(self.liveness.check, app.stats)
        self.tick_s = self.notifier.tick_s
        self.http: HealthServer | None = None
        self._reload_requested = False

    def start(self) -> None:
        http = self.app.cfg.http
        if http.enabled:
            from raccoon_watch.service.health import HealthServer, app_health

            pages = None
            if http.review:
                from raccoon_watch.web.pages import ReviewPages
                from raccoon_watch.web.retrain_job import RetrainJob, retrain_command

                job = RetrainJob(retrain_command(Path(self.config_path)), self.app.models_root / "retrain.log",
                                 self.app.reload_classifier)
                pages = ReviewPages(self.app, retrain=job)
            self.http = HealthServer(http.host, http.port, app_health(self.liveness), self.app.metrics.render, pages,
                                     listener=self.listener)
            self.listener = None
            self.http.start()  # an OSError naming http.port when not bound beforehand and taken
        self.notifier.ready()

    def request_reload(self) -> None:
        self._reload_requested = True

    def tick(self) -> None:
        if self._reload_requested:
            self._reload_requested = False
            reload_app(self.app, self.config_path)
        self.notifier.tick()

    def stop(self) -> None:
        self.notifier.stopping()
        if self.http is not None:
            self.http.stop()
