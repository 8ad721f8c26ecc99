"""Run the real daemon as a subprocess and read its JSON log lines (helpers for end-to-end tests)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
BUNDLED_MODEL = REPO / "models" / "raccoon"


def detector_section(coco_model: Path) -> dict[str, Any]:
    """The shipped raccoon model at its deployed operating point (threshold null: the classifier
    card's) when it exists, else the stock COCO model with its animal labels at 0.5.

    These tests prove the daemon's path from frame to alert (capture, router, store, sinks, faults)
    on a short 640x360 clip of one raccoon; the model's quality is measured where it belongs, on
    photos (tests/test_recognition.py, train evaluate) and on validation clips (tools/eval_clips.py).
    This clip's raccoon scores 0.87 against the card's 0.741."""
    if (BUNDLED_MODEL / "model.tflite").is_file():
        return {"model": str(BUNDLED_MODEL), "labels": ["raccoon"], "threshold": None, "workers": 1}
    return {"model": str(coco_model), "labels": ["cat", "dog", "bear"], "threshold": 0.5, "workers": 1}


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@dataclass
class LoggedProcess:
    """A child process whose stdout+stderr (JSON log lines) a thread collects: ``lines`` parsed,
    ``raw`` as printed. The daemon (``Daemon``) and ``raccoon-watch serve`` (tests/serving.py) are both."""

    proc: subprocess.Popen
    lines: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    def _follow(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.raw.append(line)
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                pass

    def events(self, name: str) -> list[dict[str, Any]]:
        return [rec for rec in list(self.lines) if rec.get("event") == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no {count}x {name!r} within {timeout}s; log tail:\n{''.join(self.raw[-40:])}")


@dataclass
class Daemon(LoggedProcess):
    """A running `python -m raccoon_watch run`; collects its JSON log lines in a thread."""

    @classmethod
    def start(cls, config: Path, env: dict[str, str] | None = None, extra_args: tuple[str, ...] = ()) -> Daemon:
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = subprocess.Popen(
            [sys.executable, "-m", "raccoon_watch", "run", "--config", str(config), *extra_args],
            cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        daemon = cls(proc)
        daemon._follow()
        return daemon

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; return (exit code, seconds it took to exit)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        if self._reader:
            self._reader.join(timeout=5)
        return code, time.monotonic() - t0
