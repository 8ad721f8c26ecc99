"""Run a real ``raccoon-watch serve`` as a subprocess and read its JSON log lines (helpers for tests).

Logs go to stderr (JSON when it is not a terminal), so both streams are read together.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.daemon import LoggedProcess

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Server(LoggedProcess):
    """A running ``raccoon-watch serve``; ``port`` from its ``serve_listening`` line."""

    port: int = 0

    @classmethod
    def start(cls, *args: str, env: dict[str, str] | None = None, wait: bool = True, timeout: float = 90.0) -> Server:
        proc = subprocess.Popen([sys.executable, "-m", "raccoon_watch", "serve", *args], cwd=REPO,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        server = cls(proc)
        server._follow()
        if wait:
            server.port = int(server.wait_for("serve_listening", timeout=timeout)[0]["port"])
        return server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
