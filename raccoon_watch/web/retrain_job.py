"""The review page's "Retrain now": one ``raccoon-watch retrain`` at a time, as its own process.

The process lowers its own priority to the idle CPU class and nice 19 and trains with one thread, as
every ``raccoon-watch retrain`` does by default (``raccoon_watch.learning.retrain_priority``, the one definition
of those defaults); its output goes to ``<storage>/models/retrain.log``, and the page shows only the
retrain's own lines of it (``retrain_lines``: its log lines and its messages, never TensorFlow's), and when it exits 0 (the gate promoted the candidate) the
daemon loads the new classifier in the background (``App.reload_classifier``), as after SIGHUP.
Exit 4 is a refused candidate (it stays on disk with the reason), exit 5 too little feedback to judge
one (nothing trained: the page says how many more visits to mark); anything else is a failure,
shown on the page with the end of the log. Detection never waits for it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from raccoon_watch.learning.retrain_options import training_missing
from raccoon_watch.learning.retrain_priority import default_threads, tf_env

log = structlog.get_logger(__name__)

EXIT_PROMOTED, EXIT_REFUSED, EXIT_NEED_MORE = 0, 4, 5  # = raccoon_watch.service.retrain_cmd's
LOG_READ_BYTES = 256 * 1024  # the end of retrain.log that is read for the page
LOG_LINES = 40  # of the retrain's own lines, the last this many are shown
LOG_LINE_CHARS = 1500
# a structlog console line: "2026-12-07 20:51:08 [info     ] retrain_feedback   usable=38 ..."
CONSOLE_LINE = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\S* \[\s*\w+\s*\] \w")
OWN_MESSAGE = "raccoon-watch"  # "raccoon-watch retrain: too little feedback ...": the command's own words


@dataclass(frozen=True, slots=True)
class RetrainState:
    """What the page shows: running or not, since when (wall), the last exit and its meaning."""

    running: bool = False
    started: float | None = None
    exit_code: int | None = None
    outcome: str = "never run from the page"
    log_tail: str = ""  # the retrain's own lines (``retrain_lines``), whole lines, newest last
    unavailable: str | None = None  # why this install cannot retrain (no TensorFlow: the train extra), else None


def outcome_of(exit_code: int | None) -> str:
    """The words for a retrain's exit code (pure)."""
    if exit_code is None:
        return "running"
    if exit_code == EXIT_PROMOTED:
        return "promoted: the new classifier is being loaded"
    if exit_code == EXIT_REFUSED:
        return "refused by the gate: the candidate stays on disk with the reason"
    if exit_code == EXIT_NEED_MORE:
        return "not enough marked visits to judge a candidate yet: nothing was trained (see below)"
    return f"failed (exit {exit_code}): see the log below"


def retrain_command(config_path: Path) -> list[str]:
    """``raccoon-watch retrain --config PATH --quiet`` with this Python: its default priority (idle)
    and threads (1) are those of a retrain typed in a shell (``retrain_priority``)."""
    return [sys.executable, "-m", "raccoon_watch", "retrain", "--config", str(config_path), "--quiet"]


def retrain_lines(text: str, keep: int = LOG_LINES, cut: bool = False) -> list[str]:
    """The retrain's own lines of its log, the last ``keep`` (pure): its structlog lines (console or
    JSON), the command's own messages (``raccoon-watch retrain: ...``) and the last line of a Python
    traceback (what failed). Everything else is dropped: TensorFlow's and absl's C++ lines
    (``I0000 00:00:...``, ``WARNING: All log messages before absl::InitializeLog()``), oneDNN and
    LiteRT notices, Python warnings. With ``cut`` (the text was read from the middle of the file)
    its first line is a piece of one and is dropped; each kept line is at most ``LOG_LINE_CHARS``
    characters."""
    lines = text.split("\n")[1 if cut else 0:]
    kept: list[str] = []
    in_traceback = False
    for raw in lines:
        line = raw.rstrip("\r")
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
            continue
        if in_traceback:
            if line[:1].isspace() or not line:
                continue
            in_traceback = False
            kept.append(line)
            continue
        if _own(line):
            kept.append(_readable(line))
    return [k if len(k) <= LOG_LINE_CHARS else k[:LOG_LINE_CHARS - 1] + "…" for k in kept[-keep:]]


def _own(line: str) -> bool:
    return bool(CONSOLE_LINE.match(line) or line.startswith(OWN_MESSAGE) or _json_object(line) is not None)


def _json_object(line: str) -> dict[str, object] | None:
    if not line.startswith("{"):
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _readable(line: str) -> str:
    """A JSON log line as "HH:MM:SS level event key=value ..." (other lines as they are)."""
    record = _json_object(line)
    if record is None or "event" not in record:
        return line
    stamp = str(record.pop("timestamp", ""))[11:19]
    level, event = record.pop("level", ""), record.pop("event")
    rest = " ".join(f"{k}={v}" for k, v in record.items() if k != "logger")
    return " ".join(str(p) for p in (stamp, level, event, rest) if p)


class RetrainJob:
    """Starts and watches the retrain process; ``on_promoted`` runs when it exits 0."""

    def __init__(self, command: Sequence[str], log_path: Path, on_promoted: Callable[[], object],
                 unavailable: Callable[[], str | None] | None = None) -> None:
        self.command = list(command)
        self.log_path = log_path
        self.on_promoted = on_promoted
        self._unavailable = unavailable or training_missing
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started: float | None = None
        self._exit: int | None = None

    def unavailable(self) -> str | None:
        """Why a retrain cannot run in this install (``retrain_options.training_missing``), else None."""
        return self._unavailable()

    def start(self) -> bool:
        """Start a retrain; False when one is running already (or the process cannot start: logged)."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return False
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            # the command applies these itself before TensorFlow starts; here too, so that nothing the
            # process runs before that (or a stand-in command) writes C++ log lines or starts threads
            env = {**os.environ, **tf_env(default_threads()), "PYTHONUNBUFFERED": "1"}
            try:
                with open(self.log_path, "wb") as out:
                    self._proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=out,
                                                  stderr=subprocess.STDOUT, env=env, start_new_session=True)
            except OSError as exc:
                log.error("retrain_start_failed", error=str(exc))
                self._proc, self._exit = None, 127
                return False
            self._started, self._exit = time.time(), None
            proc = self._proc
        log.info("retrain_started", pid=proc.pid, log=str(self.log_path))
        threading.Thread(target=self._watch, args=(proc,), name="retrain-watch", daemon=True).start()
        return True

    def _watch(self, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        with self._lock:
            self._exit = code
        log.info("retrain_finished", exit_code=code, outcome=outcome_of(code))
        if code == EXIT_PROMOTED:
            try:
                self.on_promoted()
            except Exception as exc:  # the old classifier keeps running
                log.error("retrain_reload_failed", error=str(exc))

    def state(self) -> RetrainState:
        with self._lock:
            running = self._proc is not None and self._proc.poll() is None
            started, code = self._started, self._exit
        if started is None and code is None:
            return RetrainState(unavailable=self.unavailable())
        return RetrainState(running, started, None if running else code,
                            "running" if running else outcome_of(code), self._tail(), self.unavailable())

    def _tail(self) -> str:
        """The retrain's own lines at the end of its log (``retrain_lines``), whole lines."""
        try:
            with open(self.log_path, "rb") as fh:
                start = max(0, fh.seek(0, os.SEEK_END) - LOG_READ_BYTES)
                fh.seek(start)
                text = fh.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(retrain_lines(text, cut=start > 0))

    def stop(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
