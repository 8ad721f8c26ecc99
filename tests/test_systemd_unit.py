"""systemd/raccoon-watch.service: verifies cleanly and rates "OK" (exposure <= 2.0) offline.

``systemd-analyze verify`` checks that ExecStart= points at an executable; the unit's
/opt/raccoon-watch/.venv/bin/raccoon-watch only exists after ``make install-service``. So the test
verifies a copy whose ExecStart= is this checkout's .venv/bin/raccoon-watch (same arguments, same
everything else): that is the only line that differs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "systemd" / "raccoon-watch.service"
INSTALLED_EXEC = "/opt/raccoon-watch/.venv/bin/raccoon-watch"
MAX_EXPOSURE = 2.0

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


def _unit_with_local_exec(tmp_path: Path) -> Path:
    local_exec = Path(sys.executable).parent / "raccoon-watch"
    if not local_exec.exists():
        pytest.skip(f"{local_exec} missing (pip install -e . first)")
    text = UNIT.read_text()
    assert INSTALLED_EXEC in text, "ExecStart= moved: update INSTALLED_EXEC and scripts/install-service.sh"
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_EXEC, str(local_exec)))
    return copy


def test_verify_prints_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(_unit_with_local_exec(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )
    # Misspelled keys only warn (exit code 0), so stderr must be empty too.
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_security_exposure_ok() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--threshold=20", str(UNIT)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-500:]
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


@pytest.mark.parametrize(
    "line",
    [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30",
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=raccoon-watch",
        "LoadCredential=pushover_token:/etc/raccoon-watch/credentials/pushover_token",
        "LoadCredential=mqtt_password:/etc/raccoon-watch/credentials/mqtt_password",
        "CapabilityBoundingSet=",
        "SystemCallFilter=@system-service",
        "DevicePolicy=closed",
        f"ExecStart={INSTALLED_EXEC} run --config /etc/raccoon-watch/config.yaml",
    ],
)
def test_unit_has(line: str) -> None:
    assert line in UNIT.read_text().splitlines()


def test_installer_matches_the_unit() -> None:
    script = (REPO / "scripts" / "install-service.sh").read_text()
    assert 'PREFIX="${PREFIX:-/opt/raccoon-watch}"' in script
    assert "/etc/raccoon-watch/config.yaml" in UNIT.read_text()
