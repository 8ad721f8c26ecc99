"""The retrain's knobs a user sets, defined once (a leaf: it imports nothing from the package).

``raccoon-watch retrain`` (``retrain_cmd``) offers them as options and ``train/classifier/retrain.py``
takes its defaults from them; both import this module, so neither imports the other for them.
"""

from __future__ import annotations

from typing import Literal, get_args

RetrainMode = Literal["auto", "head", "blocks"]
MODES: tuple[RetrainMode, ...] = get_args(RetrainMode)
DEFAULT_MODE: RetrainMode = "auto"
DEFAULT_STEPS = 150  # optimizer steps per mode
DEFAULT_BASE_LIMIT = 1200  # shipped training crops sampled per retrain (the trunk pass costs ~20 ms each)
