"""Shared test set-up. Fixtures live in tests/fixtures/<part>.py, one module per real part."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog

from raccoon_watch.config import shared_dir as configured_shared_dir

pytest_plugins = [
    "tests.fixtures.media",
    "tests.fixtures.rtsp",
    "tests.fixtures.mqtt",
    "tests.fixtures.pushover",
]

REPO = Path(__file__).resolve().parent.parent


def shared_path() -> Path:
    """raccoon_watch.config.shared_dir(), resolved."""
    return configured_shared_dir().resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = shared_path()
    if not (path / "data" / "raccoon_dataset").is_dir():
        pytest.skip(f"shared data not found at {path} (set RACCOON_SHARED to the shared/ folder)")
    return path


@pytest.fixture(scope="session")
def coco_model(shared_dir: Path) -> Path:
    path = shared_dir / "pretrained" / "coco_ssd_mobilenet_v1_0.75_quant_300.tflite"
    if not path.is_file():
        pytest.skip(f"stock COCO TFLite model not found at {path}")
    return path


@pytest.fixture(scope="session")
def raccoon_images(shared_dir: Path) -> list[Path]:
    return sorted((shared_dir / "data" / "raccoon_dataset" / "images").glob("*.jpg"))


@pytest.fixture(autouse=True)
def _structlog_defaults_after_each_test():
    """A test that runs a command's main() in-process may configure structlog (setup_logging caches
    loggers on first use); later tests' ``structlog.testing.capture_logs`` must still see events."""
    yield
    structlog.reset_defaults()
