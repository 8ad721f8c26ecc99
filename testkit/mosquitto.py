"""A real mosquitto broker on 127.0.0.1 and a free port, for the tests and the benchmark.

``Broker(workdir, tls=..., password=..., persistence=...)``: plain or TLS + password; ``start`` waits
until it listens, ``stop`` (SIGTERM) / ``kill`` (SIGKILL) / ``start`` keep the same port and config.
``BrokerUnavailable`` when the binaries are missing (the pytest fixture turns it into a skip).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from testkit.ports import free_port

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")

BROKER_USER = "raccoon"
BROKER_PASSWORD = "s3cret-broker-pw"


class BrokerUnavailable(RuntimeError):
    """mosquitto (or mosquitto_passwd) is not installed."""


@dataclass(frozen=True)
class TlsMaterial:
    cert: Path
    key: Path


class Broker:
    """One mosquitto process; ``stop``/``kill``/``start`` keep the same port and config."""

    def __init__(self, workdir: Path, tls: TlsMaterial | None = None, password: bool = False,
                 persistence: bool = False) -> None:
        if MOSQUITTO is None:
            raise BrokerUnavailable("mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
        self.host = "127.0.0.1"
        self.port = free_port()
        self.workdir = workdir
        self.tls = tls
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} {self.host}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {workdir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to 'mosquitto', which cannot read our key
        if password:
            if MOSQUITTO_PASSWD is None:
                raise BrokerUnavailable("mosquitto_passwd is not installed")
            pwfile = workdir / "passwd"
            subprocess.run([MOSQUITTO_PASSWD, "-b", "-c", str(pwfile), BROKER_USER, BROKER_PASSWORD],
                           check=True, capture_output=True)
            pwfile.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            lines.append("allow_anonymous true")
        if tls is not None:
            lines += [f"certfile {tls.cert}", f"keyfile {tls.key}"]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
