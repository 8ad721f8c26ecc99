"""systemd/raccoon-watch-retrain.{service,timer}: verify cleanly, run as the daemon's user at idle priority,
and are installed but never enabled by scripts/install-service.sh (the timer is off by default)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SERVICE = REPO / "systemd" / "raccoon-watch-retrain.service"
TIMER = REPO / "systemd" / "raccoon-watch-retrain.timer"
INSTALLED_EXEC = "/opt/raccoon-watch/.venv/bin/raccoon-watch"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_retrain_units_verify_without_a_word(tmp_path):
    local_exec = Path(sys.executable).parent / "raccoon-watch"
    if not local_exec.exists():
        pytest.skip(f"{local_exec} missing (pip install -e . first)")
    text = SERVICE.read_text()
    assert INSTALLED_EXEC in text
    (tmp_path / SERVICE.name).write_text(text.replace(INSTALLED_EXEC, str(local_exec)))
    shutil.copyfile(TIMER, tmp_path / TIMER.name)
    result = subprocess.run(["systemd-analyze", "verify", SERVICE.name, TIMER.name], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_retrain_shares_the_daemons_user_never_competes_and_stays_off():
    service = SERVICE.read_text()
    for line in ("User=raccoon-watch", "StateDirectory=raccoon-watch", "CPUSchedulingPolicy=idle", "Nice=19",
                 "RACCOON_RETRAIN_THREADS=1", "SuccessExitStatus=4 5", "ExecStartPost=-+/bin/systemctl reload raccoon-watch.service"):
        assert line in service
    install = (REPO / "scripts" / "install-service.sh").read_text()
    assert "raccoon-watch-retrain.timer" in install
    assert "enable --now \"$UNIT\"" in install and "enable --now raccoon-watch-retrain" not in install
