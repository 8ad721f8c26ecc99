"""Disk faults for end-to-end tests: a small tmpfs to fill, and filling it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


def mount_tmpfs(where: Path, size: str = "1m") -> None:
    """A small tmpfs at ``where``; skip the test if mounting is not allowed here."""
    where.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {res.stderr.strip()}")


def fill(where: Path) -> None:
    """Write a filler file until the filesystem says ENOSPC."""
    fd = os.open(where / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)
