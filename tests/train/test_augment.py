"""Augmentations keep boxes valid and aligned with the pixels. Boxes: [ymin, xmin, ymax, xmax] normalised."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from train import augment
from train.augment import AugmentConfig

MAGENTA = (255, 0, 255)  # a colour that appears nowhere else in the synthetic scene
CYAN = (0, 255, 255)
BACKGROUND = (90, 110, 70)
SEEDS = range(25)
GEOMETRY_ONLY = AugmentConfig(zoom_out_probability=0.5, crop_probability=0.8, flip_probability=0.5,
                              color_probability=0.0, grayscale_probability=0.0, night_probability=0.0,
                              blur_probability=0.0, jpeg_probability=0.0)


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def photo(shared_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """raccoon-1.jpg (650x417) and its box 81,88,522,408 (xmin,ymin,xmax,ymax px) as normalised yxyx."""
    image = _rgb(shared_dir / "data" / "raccoon_dataset" / "images" / "raccoon-1.jpg")
    return image, np.array([[88 / 417, 81 / 650, 408 / 417, 522 / 650]], np.float32)


def synthetic_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """240x320 scene with a magenta box (label 1) and a cyan box (label 2), pixel-exact."""
    image = np.full((240, 320, 3), BACKGROUND, np.uint8)
    image[30:110, 40:160] = MAGENTA  # rows 30..109, cols 40..159
    image[150:220, 200:300] = CYAN
    boxes = np.array([[30 / 240, 40 / 320, 110 / 240, 160 / 320], [150 / 240, 200 / 320, 220 / 240, 300 / 320]], np.float32)
    return image, boxes, np.array([1, 2])


def assert_valid(image: np.ndarray, boxes: np.ndarray) -> None:
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert np.all(boxes >= 0) and np.all(boxes <= 1)
    assert np.all(boxes[:, 0] < boxes[:, 2]) and np.all(boxes[:, 1] < boxes[:, 3])


def colour_fraction(image: np.ndarray, box: np.ndarray, colour: tuple[int, int, int]) -> tuple[float, int]:
    """(share of the box's inner pixels that have the colour, count of that colour outside the box)."""
    h, w = image.shape[:2]
    top, left, bottom, right = np.round(box * [h, w, h, w]).astype(int)
    match = np.all(image == colour, axis=2)
    inner = match[top + 1:bottom - 1, left + 1:right - 1]
    outside = match.copy()
    outside[max(top - 1, 0):bottom + 1, max(left - 1, 0):right + 1] = False
    return float(inner.mean()) if inner.size else 1.0, int(outside.sum())


TRANSFORMS = [augment.horizontal_flip, augment.random_crop, augment.zoom_out, augment.color_jitter,
              augment.grayscale, augment.ir_night, augment.blur, augment.jpeg_recompress, augment.augment]


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda f: f.__name__)
@pytest.mark.shared  # real photos from ../shared
def test_boxes_stay_valid_on_a_real_photo(photo, transform) -> None:
    image, boxes = photo
    for seed in range(6):
        out_image, out_boxes = transform(image, boxes, np.random.default_rng(seed))
        assert_valid(out_image, out_boxes)
    _, negative_boxes = transform(image, np.zeros((0, 4), np.float32), np.random.default_rng(0))
    assert negative_boxes.shape == (0, 4)


@pytest.mark.shared  # real photos from ../shared
def test_flip_twice_is_identity(photo) -> None:
    image, boxes = photo
    once_image, once_boxes = augment.horizontal_flip(image, boxes)
    assert not np.array_equal(once_image, image)
    np.testing.assert_allclose(once_boxes, [[88 / 417, 1 - 522 / 650, 408 / 417, 1 - 81 / 650]], rtol=1e-6)
    twice_image, twice_boxes = augment.horizontal_flip(once_image, once_boxes)
    assert np.array_equal(twice_image, image)
    np.testing.assert_allclose(twice_boxes, boxes, atol=1e-6)


def _crop(image, boxes, rng):
    cropped, moved, kept = augment.random_crop_indices(image, boxes, rng)
    return cropped, moved, kept


def _keep_all(transform):
    def run(image, boxes, rng):
        out_image, out_boxes = transform(image, boxes, rng)
        return out_image, out_boxes, np.arange(len(boxes))
    run.__name__ = transform.__name__
    return run


@pytest.mark.parametrize("transform", [_keep_all(augment.horizontal_flip), _crop, _keep_all(augment.zoom_out)],
                         ids=["flip", "crop", "zoom_out"])
def test_geometry_moves_boxes_with_the_pixels(transform) -> None:
    image, boxes, _ = synthetic_scene()
    colours = np.array([MAGENTA, CYAN])
    for seed in SEEDS:
        out_image, out_boxes, kept = transform(image, boxes, np.random.default_rng(seed))
        assert_valid(out_image, out_boxes)
        for box, colour in zip(out_boxes, colours[kept]):
            inside, outside = colour_fraction(out_image, box, tuple(colour))
            assert inside > 0.97, (seed, box)
            assert outside == 0, (seed, box)


def test_crop_keeps_labels_aligned() -> None:
    image, boxes, labels = synthetic_scene()
    dropped = 0
    for seed in SEEDS:
        out_image, out_boxes, out_labels = augment.augment_with_labels(image, boxes, labels, np.random.default_rng(seed), GEOMETRY_ONLY)
        assert len(out_boxes) == len(out_labels)
        dropped += len(out_boxes) < 2
        for box, label in zip(out_boxes, out_labels):
            inside, _ = colour_fraction(out_image, box, MAGENTA if label == 1 else CYAN)
            assert inside > 0.97, (seed, box, label)
    assert dropped > 0  # some crops really did cut a box away


@pytest.mark.shared  # real photos from ../shared
def test_ir_night_is_dark_grayscale(photo) -> None:
    image, boxes = photo
    for seed in range(4):
        night, night_boxes = augment.ir_night(image, boxes, np.random.default_rng(seed), glare_probability=0.0)
        assert np.array_equal(night[..., 0], night[..., 1]) and np.array_equal(night[..., 1], night[..., 2])
        assert night.mean() < image.mean()
        assert augment.is_grayish(night) and not augment.is_grayish(image)
        np.testing.assert_array_equal(night_boxes, boxes)


@pytest.mark.shared  # real photos from ../shared
def test_photometric_transforms_change_pixels_not_boxes(photo) -> None:
    image, boxes = photo
    for transform in (augment.color_jitter, augment.blur, augment.jpeg_recompress, augment.grayscale):
        out, out_boxes = transform(image, boxes, np.random.default_rng(3))
        assert out.shape == image.shape and not np.array_equal(out, image)
        np.testing.assert_array_equal(out_boxes, boxes)


@pytest.mark.shared  # real photos from ../shared
def test_same_seed_same_result(photo) -> None:
    image, boxes = photo
    first = augment.augment(image, boxes, np.random.default_rng(7))
    again = augment.augment(image, boxes, np.random.default_rng(7))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])


@pytest.mark.shared  # real photos from ../shared
def test_copy_paste_night_box_is_the_pasted_rectangle(shared_dir: Path) -> None:
    night = shared_dir / "data" / "night"
    background = _rgb(sorted((night / "negatives").glob("mct_*.jpg"))[0])
    assert augment.is_grayish(background)
    crop = np.full((60, 40, 3), (200, 120, 60), np.uint8)  # a flat colour crop, turned gray on an IR frame
    for seed in range(5):
        image, boxes = augment.copy_paste_night(background, crop, np.random.default_rng(seed), soft_edge_probability=0.0)
        assert_valid(image, boxes)
        assert boxes.shape == (1, 4)
        h, w = image.shape[:2]
        top, left, bottom, right = np.round(boxes[0] * [h, w, h, w]).astype(int)
        changed = np.any(image != background, axis=2)
        assert not changed[:top].any() and not changed[bottom:].any()
        assert not changed[:, :left].any() and not changed[:, right:].any()
        patch = image[top:bottom, left:right].astype(int)
        assert patch.std() < 1.0 and np.array_equal(patch[..., 0], patch[..., 2])  # flat and gray
        assert abs((bottom - top) / (right - left) - 60 / 40) < 0.1  # aspect kept


@pytest.mark.shared  # real photos from ../shared
def test_copy_paste_with_a_real_crop_and_soft_edges(shared_dir: Path) -> None:
    night = shared_dir / "data" / "night"
    background = _rgb(sorted((night / "negatives").glob("*.jpg"))[3])
    crop = _rgb(sorted((night / "positives_crops").glob("*.jpg"))[0])
    image, boxes = augment.copy_paste_night(background, crop, np.random.default_rng(1), soft_edge_probability=1.0)
    h, w = image.shape[:2]
    top, left, bottom, right = np.round(boxes[0] * [h, w, h, w]).astype(int)
    assert np.array_equal(image[top, left], background[top, left])  # feathered corner: background shows
    assert not np.array_equal(image[(top + bottom) // 2, left:right], background[(top + bottom) // 2, left:right])


def test_config_rejects_bad_probability() -> None:
    with pytest.raises(ValueError, match="flip_probability must be in"):
        AugmentConfig(flip_probability=1.5)
    with pytest.raises(ValueError, match=r"boxes must be \(N, 4\)"):
        augment.horizontal_flip(np.zeros((4, 4, 3), np.uint8), np.zeros((2, 3)))


@pytest.mark.shared  # real photos from ../shared
def test_contact_sheet(photo, tmp_path: Path) -> None:
    image, boxes = photo
    rng = np.random.default_rng(0)
    samples = [augment.augment(image, boxes, rng) for _ in range(7)]
    path = tmp_path / "sheet.png"
    sheet = augment.save_contact_sheet(samples, str(path), columns=4)
    assert sheet.shape == (2 * augment.SHEET_TILE, 4 * augment.SHEET_TILE, 3)
    assert cv2.imread(str(path)).shape == sheet.shape


@pytest.mark.parametrize("seed", range(6))
def test_porch_ir_looks_like_a_porch_webcam_at_night(seed: int) -> None:
    """Grey, lit from near the centre falling off towards the corners, white things blown out,
    boxes untouched; the same seed gives the same picture."""
    image = np.full((240, 320, 3), 150, np.uint8)
    image[100:140, 140:180] = 255  # a white bowl in the middle
    boxes = np.array([[0.2, 0.2, 0.6, 0.6]], np.float32)
    out, out_boxes = augment.porch_ir(image, boxes, np.random.default_rng(seed), eye_probability=0.0)
    again, _ = augment.porch_ir(image, boxes, np.random.default_rng(seed), eye_probability=0.0)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.array_equal(out, again)
    np.testing.assert_array_equal(out_boxes, boxes)
    spread = np.abs(out[..., 0].astype(int) - out[..., 1]).mean() + np.abs(out[..., 1].astype(int) - out[..., 2]).mean()
    assert spread < 1.0  # infrared: no colour
    grey = out[..., 0].astype(float)
    corners = np.mean([grey[:30, :30].mean(), grey[:30, -30:].mean(), grey[-30:, :30].mean(), grey[-30:, -30:].mean()])
    assert grey[80:160, 120:200].mean() > corners + 20  # the flash falls off towards the edges
    assert np.percentile(grey[105:135, 145:175], 50) >= 235  # the white bowl is blown out


def test_porch_ir_eyeshine_adds_two_bright_spots() -> None:
    image = np.full((192, 192, 3), 60, np.uint8)
    empty = np.zeros((0, 4), np.float32)
    plain, _ = augment.porch_ir(image, empty, np.random.default_rng(1), eye_probability=0.0)
    eyes, _ = augment.porch_ir(image, empty, np.random.default_rng(1), eye_probability=1.0)
    assert (eyes[..., 0] >= 250).sum() > (plain[..., 0] >= 250).sum() + 4
