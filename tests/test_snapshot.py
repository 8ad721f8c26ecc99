"""Snapshots: boxes drawn where the normalised xyxy box says, input untouched, JPEG round trip."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from raccoon_watch.snapshot import DEFAULT_COLOR, draw_detections, encode_jpeg
from raccoon_watch.types import Detection


def test_draw_box_at_the_right_pixels_without_mutating_input() -> None:
    image = np.zeros((200, 400, 3), np.uint8)  # wide frame: a swapped x/y would land elsewhere
    before = image.copy()
    det = Detection("raccoon", 0.93, (0.25, 0.5, 0.75, 0.9))  # xmin, ymin, xmax, ymax -> x 100..300, y 100..180
    out = draw_detections(image, [det])
    assert np.array_equal(image, before) and out is not image
    assert tuple(out[140, 100]) == DEFAULT_COLOR and tuple(out[140, 300]) == DEFAULT_COLOR  # left/right edges
    assert tuple(out[180, 200]) == DEFAULT_COLOR  # bottom edge
    assert not out[140, 200].any()  # box interior untouched
    assert not out[20, 350].any()  # far from the box
    label_band = out[100 - 12 : 100, 100:150]  # "raccoon 0.93" on a filled band above the top edge
    assert (label_band == DEFAULT_COLOR).all(axis=2).mean() > 0.3


@pytest.mark.parametrize(("shape", "min_thickness"), [((120, 160, 3), 1), ((1080, 1920, 3), 5)])
def test_thickness_scales_with_image(shape: tuple[int, int, int], min_thickness: int) -> None:
    out = draw_detections(np.zeros(shape, np.uint8), [Detection("cat", 0.5, (0.2, 0.2, 0.8, 0.8))], color=(0, 255, 0))
    x = int(round(0.2 * shape[1]))
    row = out[shape[0] // 2, max(0, x - 10) : x + 10, 1]
    assert (row == 255).sum() >= min_thickness


def test_box_at_top_edge_keeps_label_inside_frame() -> None:
    out = draw_detections(np.zeros((100, 100, 3), np.uint8), [Detection("dog", 0.61, (0.0, 0.0, 1.0, 1.0))])
    assert (out[2:12, 5:40] == DEFAULT_COLOR).all(axis=2).mean() > 0.3


def test_encode_jpeg_round_trip(shared_dir: Path) -> None:
    image = cv2.imread(str(shared_dir / "data" / "raccoon_dataset" / "images" / "raccoon-1.jpg"))
    data = encode_jpeg(draw_detections(image, [Detection("raccoon", 0.9, (0.1, 0.1, 0.6, 0.9))]), quality=85)
    assert data[:2] == b"\xff\xd8"
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == image.shape
    assert len(encode_jpeg(image, quality=30)) < len(encode_jpeg(image, quality=95))
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(image, quality=0)
