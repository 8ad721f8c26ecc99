"""Draw detections on a frame and encode it as JPEG (event snapshots, `detect --out`).

Boxes come in as normalised (xmin, ymin, xmax, ymax) (raccoon_watch.types.Box) and are turned into
pixels of the image being drawn on with ``types.box_to_pixels``; nothing here knows any model's order.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from raccoon_watch.types import Detection, box_to_pixels, score_text

DEFAULT_COLOR = (0, 200, 255)  # BGR amber: visible on day and IR-grey night frames
TEXT_COLOR = (0, 0, 0)
REFERENCE_SIDE = 640  # line thickness 2 and font scale 0.6 look right on a 640-px-wide frame


def draw_detections(image_bgr: np.ndarray, detections: Sequence[Detection],
                    color: tuple[int, int, int] = DEFAULT_COLOR) -> np.ndarray:
    """A copy of ``image_bgr`` (BGR uint8, H x W x 3) with each box and "label 0.93" drawn on it.

    Thickness and font size scale with the image's larger side; labels sit above the box (inside it
    when the box touches the top edge). The input array is never modified.
    """
    out = image_bgr.copy()
    height, width = out.shape[:2]
    scale = max(height, width) / REFERENCE_SIDE
    thickness = max(1, round(2 * scale))
    font_scale = max(0.4, 0.6 * scale)
    for det in detections:
        x1, y1, x2, y2 = box_to_pixels(det.box, width, height)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness, cv2.LINE_8)
        text = f"{det.label} {score_text(det.score)}"
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        top = y1 - th - baseline - thickness if y1 - th - baseline - thickness >= 0 else y1
        cv2.rectangle(out, (x1, top), (min(x1 + tw + 2 * thickness, width - 1), top + th + baseline + thickness),
                      color, cv2.FILLED)
        cv2.putText(out, text, (x1 + thickness, top + th + thickness // 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    TEXT_COLOR, thickness, cv2.LINE_AA)
    return out


def encode_jpeg(image_bgr: np.ndarray, quality: int = 85) -> bytes:
    """BGR uint8 image -> JPEG bytes; ValueError when OpenCV cannot encode it."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1..100, got {quality}")
    ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"cannot encode a {image_bgr.dtype} {image_bgr.shape} image as JPEG")
    return buf.tobytes()
