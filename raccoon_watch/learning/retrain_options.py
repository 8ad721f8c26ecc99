"""The retrain's knobs a user sets, defined once (a leaf: it imports nothing from the package).

``raccoon-watch retrain`` (``retrain_cmd``) offers them as options and ``train/classifier/retrain.py``
takes its defaults from them; both import this module, so neither imports the other for them.
"""

from __future__ import annotations

import importlib.util
from typing import Literal, get_args

RetrainMode = Literal["auto", "head", "blocks"]
MODES: tuple[RetrainMode, ...] = get_args(RetrainMode)
DEFAULT_MODE: RetrainMode = "auto"
DEFAULT_STEPS = 150  # optimizer steps per mode
DEFAULT_BASE_LIMIT = 1200  # shipped training crops sampled per retrain (the trunk pass costs ~20 ms each)


TRAIN_EXTRA_HINT = ".venv/bin/pip install -c requirements.lock -e '.[train]'"


def training_missing() -> str | None:
    """None when this Python can retrain, else why not, naming the extra to install. Cheap: it looks
    for TensorFlow without importing it (the page asks on every load of its Classifier tab)."""
    if importlib.util.find_spec("tensorflow") is None:
        return (f"this install has no TensorFlow (the train extra, which `make run` leaves out): run "
                f"{TRAIN_EXTRA_HINT} in the checkout")
    return None
