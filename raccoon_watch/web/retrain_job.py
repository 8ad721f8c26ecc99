"""The review page's "Retrain now": one ``raccoon-watch retrain`` at a time, as its own process.

The process runs at nice 19 with one thread (as ``raccoon-watch-retrain.service`` does), its output
goes to ``<storage>/models/retrain.log``, and when it exits 0 (the gate promoted the candidate) the
daemon loads the new classifier in the background (``App.reload_classifier``), as after SIGHUP.
Exit 4 is a refused candidate (it stays on disk with the reason), exit 5 too little feedback to judge
one (nothing trained: the page says how many more visits to mark); anything else is a failure,
shown on the page with the end of the log. Detection never waits for it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

EXIT_PROMOTED, EXIT_REFUSED, EXIT_NEED_MORE = 0, 4, 5  # = raccoon_watch.retrain_cmd's
LOG_TAIL_BYTES = 2000


@dataclass(frozen=True, slots=True)
class RetrainState:
    """What the page shows: running or not, since when (wall), the last exit and its meaning."""

    running: bool = False
    started: float | None = None
    exit_code: int | None = None
    outcome: str = "never run from the page"
    log_tail: str = ""


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
    """``raccoon-watch retrain --config PATH --quiet`` with this Python, at nice 19 where ``nice`` exists."""
    cmd = [sys.executable, "-m", "raccoon_watch", "retrain", "--config", str(config_path), "--quiet"]
    nice = shutil.which("nice")
    return [nice, "-n", "19", *cmd] if nice else cmd


class RetrainJob:
    """Starts and watches the retrain process; ``on_promoted`` runs when it exits 0."""

    def __init__(self, command: Sequence[str], log_path: Path, on_promoted: Callable[[], object]) -> None:
        self.command = list(command)
        self.log_path = log_path
        self.on_promoted = on_promoted
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started: float | None = None
        self._exit: int | None = None

    def start(self) -> bool:
        """Start a retrain; False when one is running already (or the process cannot start: logged)."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                return False
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "RACCOON_RETRAIN_THREADS": "1", "OMP_NUM_THREADS": "1",
                   "TF_NUM_INTRAOP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
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
            return RetrainState()
        return RetrainState(running, started, None if running else code,
                            "running" if running else outcome_of(code), self._tail())

    def _tail(self) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, fh.seek(0, os.SEEK_END) - LOG_TAIL_BYTES))
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        with self._lock:
            proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
