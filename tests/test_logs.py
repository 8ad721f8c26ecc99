"""Log set-up: secrets never printed (not even inside a traceback), outside input bounded, level first.

Each case runs in a fresh interpreter: structlog's configuration is process-wide.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SECRET = "uQiRzpo4DXghDmr9QzzfQu27cmVRsG"

SCRIPT = textwrap.dedent(
    """
    import sys
    import structlog
    from raccoon_watch.support.logs import register_secret, setup_logging

    setup_logging("info", sys.argv[1])
    register_secret(sys.argv[2])
    log = structlog.get_logger("t")

    def send(user, body):
        token = user  # a local holding the secret, as pushover_complete's frames do
        return body.get("status")  # a JSON list has no .get: AttributeError

    try:
        send(sys.argv[2], [])
    except AttributeError:
        log.exception("sender_error")
    try:
        raise ValueError("cannot open rtsp://admin:p@ss@cam/x for " + sys.argv[2])
    except ValueError:
        log.error("open_failed", exc_info=True)
    log.info("outside", request="GET /healthz?" + "a" * 100_000)
    log.debug("never_shown", value="x")
    print("FIRST", structlog.get_config()["processors"][0].__name__, file=sys.stderr)
    """
)


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_no_secret_in_tracebacks_and_long_values_are_cut(fmt: str) -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, fmt, SECRET], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "AttributeError" in text and "ValueError" in text  # the tracebacks are there...
    assert SECRET not in text  # ...without the user key: not in locals, not in the message
    assert "p@ss" not in text and "rtsp://admin:***@cam/x" in text
    assert "never_shown" not in text
    assert max(len(line) for line in text.splitlines()) < 20_000  # 100 KB of outside input was cut
    assert "FIRST filter_by_level" in text
