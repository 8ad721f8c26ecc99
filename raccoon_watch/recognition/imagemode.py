"""Image mode: is a frame in colour, or infrared/monochrome (a night camera's IR mode)?

Night scores run lower for raccoons and look-alikes alike, so each mode has its own deployed
threshold (``classifier_card.json`` ``thresholds``: ``{"color": .., "ir": ..}``, chosen on validation
from that mode's own negatives). The decision is one pure function of the frame's channel spread:
an IR camera (and a black-and-white photo) gives R = G = B up to JPEG chroma noise, a colour
camera does not, even lamp-lit at night.

Measured on ../shared/data (mean |B-G| + |G-R| over every 4th pixel, 0..510): IR night frames
0.0-1.0 (95 % under 0.5; the highest IR camera-trap frame 1.0), colour photos 5th percentile
10-11, the lowest colour ones dim indoor cats and dogs at 6.8-9. ``IR_MAX_SPREAD`` sits between,
nearer the colour side: a USB webcam's IR picture carries more chroma noise than a trail camera's.
"""

from __future__ import annotations

from typing import Final, Literal

import numpy as np

ImageMode = Literal["color", "ir"]
COLOR: Final = "color"
IR: Final = "ir"
MODES: Final[tuple[ImageMode, ...]] = (COLOR, IR)

IR_MAX_SPREAD = 5.0
"""A frame whose mean channel spread (|B-G| + |G-R|, grey levels) is below this is infrared/monochrome."""
SAMPLE_STEP = 4
"""Every this-many-th pixel in each direction is looked at: about 130k pixels of a 1080p frame."""


def channel_spread(image: np.ndarray, step: int = SAMPLE_STEP) -> float:
    """Mean of |c0 - c1| + |c1 - c2| over a strided sample of a (H, W, 3) uint8 image, 0..510.

    The channel order does not matter (BGR or RGB give the same number). A (H, W) grey image is 0.
    """
    if image.ndim == 2:
        return 0.0
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) or (H, W) image, got shape {image.shape}")
    sample = image[::step, ::step].astype(np.int16)
    return float(np.abs(sample[..., 0] - sample[..., 1]).mean() + np.abs(sample[..., 1] - sample[..., 2]).mean())


def mode_of_spread(spread: float) -> ImageMode:
    """The decision itself, over the measured spread (table-tested)."""
    return IR if spread < IR_MAX_SPREAD else COLOR


def image_mode(image: np.ndarray) -> ImageMode:
    """``"ir"`` for an infrared/monochrome frame, else ``"color"``."""
    return mode_of_spread(channel_spread(image))
