"""Run a real ``raccoon-watch serve`` as a subprocess and read its JSON log lines (helpers for tests).

Logs go to stderr (JSON when it is not a terminal), so both streams are read together.
"""

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

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Server:
    proc: subprocess.Popen
    lines: list[dict[str, Any]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    port: int = 0
    _reader: threading.Thread | None = None

    @classmethod
    def start(cls, *args: str, env: dict[str, str] | None = None, wait: bool = True, timeout: float = 90.0) -> Server:
        proc = subprocess.Popen([sys.executable, "-m", "raccoon_watch", "serve", *args], cwd=REPO,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        server = cls(proc)
        server._reader = threading.Thread(target=server._read, daemon=True)
        server._reader.start()
        if wait:
            server.port = int(server.wait_for("serve_listening", timeout=timeout)[0]["port"])
        return server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
        raise AssertionError(f"no {count}x {name!r} within {timeout}s; log tail:\n{''.join(self.raw[-30:])}")

    def peak_rss_mb(self) -> float:
        """VmHWM of the server process (its peak resident memory so far), MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        raise AssertionError("no VmHWM")

    def wait_exit(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout=timeout)
        if self._reader:
            self._reader.join(timeout=5)
        return code

    def terminate(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.wait_exit(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.wait_exit()

    def kill(self) -> None:
        """SIGKILL: the server gone at once, as a crashed or unplugged machine."""
        self.proc.kill()
        self.wait_exit()
