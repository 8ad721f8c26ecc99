"""Training-time augmentation for doorbell footage (numpy + OpenCV, deterministic given a Generator).

Every transform takes ``image`` uint8 RGB (H, W, 3) and ``boxes`` float32 (N, 4) as
[ymin, xmin, ymax, xmax] normalised to [0, 1], plus a ``np.random.Generator``, and returns the same
pair (the image may change size). N may be 0 (negatives). Transforms that can drop boxes (the
random crop) have an ``*_indices`` variant returning which input boxes survive, so callers with
per-box labels can keep them aligned; ``augment_with_labels`` does that for the whole chain.

Geometry follows the SSD paper (Liu et al. 2016, sec. 2.2 "Data augmentation"): random crops whose
IoU with an object is at least one of 0.1/0.3/0.5/0.7/0.9 (keeping boxes whose centre is inside),
and "zoom out" onto a canvas up to 4x the image filled with the mean colour (sec. 3.6).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from raccoon_watch.recognition.imagemode import channel_spread

IMAGENET_MEAN_RGB = (123.68, 116.78, 103.94)  # zoom-out canvas fill
CROP_MIN_IOUS = (0.1, 0.3, 0.5, 0.7, 0.9)  # SSD paper p. 6; None = any crop
CROP_MIN_SCALE = 0.3  # crop side as a share of the image side
CROP_ASPECT_RANGE = (0.5, 2.0)
CROP_TRIALS = 50
MAX_CANVAS_SIDE = 2048  # zoom-out canvases are scaled down beyond this, to bound memory
MIN_BOX_SIDE = 1e-3  # boxes thinner than this (normalised) after clipping are dropped
GRAY_WEIGHTS_RGB = np.array([0.299, 0.587, 0.114], np.float32)


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), np.float32)


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) float32 [ymin, xmin, ymax, xmax]; raises ValueError on another shape."""
    array = np.asarray(boxes, np.float32)
    if array.size == 0:
        return _empty_boxes()
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) [ymin, xmin, ymax, xmax], got shape {array.shape}")
    return array


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 RGB (H, W, 3), got {image.dtype} {image.shape}")


# ---------------------------------------------------------------- geometry


def horizontal_flip(
    image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Mirror left-right; boxes [ymin, xmin, ymax, xmax] normalised -> xmin' = 1 - xmax."""
    boxes = _as_boxes(boxes)
    flipped = boxes[:, [0, 3, 2, 1]] * np.array([1, -1, 1, -1], np.float32) + np.array([0, 1, 0, 1], np.float32)
    return np.ascontiguousarray(image[:, ::-1]), flipped.astype(np.float32)


def _iou_yxyx(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box (4,) with boxes (N, 4), all [ymin, xmin, ymax, xmax]."""
    inter_h = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    inter_w = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = inter_h * inter_w
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def _sample_window(rng: np.random.Generator) -> np.ndarray:
    """A crop window [ymin, xmin, ymax, xmax] normalised: sides >= CROP_MIN_SCALE, aspect in range."""
    while True:
        height, width = rng.uniform(CROP_MIN_SCALE, 1.0, size=2)
        if CROP_ASPECT_RANGE[0] <= width / height <= CROP_ASPECT_RANGE[1]:
            top, left = rng.uniform(0, 1 - height), rng.uniform(0, 1 - width)
            return np.array([top, left, top + height, left + width], np.float32)


def _boxes_in_window(boxes: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes whose centre lies in the window, clipped and re-normalised to it -> (boxes, kept indices)."""
    centre_y = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_x = (boxes[:, 1] + boxes[:, 3]) / 2
    inside = (centre_y > window[0]) & (centre_y < window[2]) & (centre_x > window[1]) & (centre_x < window[3])
    kept = np.flatnonzero(inside)
    height, width = window[2] - window[0], window[3] - window[1]
    moved = (boxes[kept] - window[[0, 1, 0, 1]]) / np.array([height, width, height, width], np.float32)
    moved = np.clip(moved, 0.0, 1.0)
    big_enough = ((moved[:, 2] - moved[:, 0]) > MIN_BOX_SIDE) & ((moved[:, 3] - moved[:, 1]) > MIN_BOX_SIDE)
    return moved[big_enough].astype(np.float32), kept[big_enough]


def _crop_pixels(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Crop a normalised [ymin, xmin, ymax, xmax] window, at least 1x1 pixel."""
    h, w = image.shape[:2]
    top, bottom = int(round(window[0] * h)), max(int(round(window[2] * h)), int(round(window[0] * h)) + 1)
    left, right = int(round(window[1] * w)), max(int(round(window[3] * w)), int(round(window[1] * w)) + 1)
    return np.ascontiguousarray(image[top:bottom, left:right])


def _pixel_window(image: np.ndarray, window: np.ndarray) -> np.ndarray:
    """The window actually cut by _crop_pixels, normalised, so boxes match the pixels exactly."""
    h, w = image.shape[:2]
    top, left = round(window[0] * h), round(window[1] * w)
    bottom, right = max(round(window[2] * h), top + 1), max(round(window[3] * w), left + 1)
    return np.array([top / h, left / w, bottom / h, right / w], np.float32)


def random_crop_indices(
    image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """SSD random crop -> (image, boxes [ymin, xmin, ymax, xmax] normalised, kept input box indices).

    Picks a minimum IoU from CROP_MIN_IOUS; a window is accepted when some box has its centre
    inside and IoU >= that minimum with the window. After CROP_TRIALS misses the input is returned.
    """
    boxes = _as_boxes(boxes)
    all_indices = np.arange(len(boxes))
    if len(boxes) == 0:  # a negative: any window will do
        window = _pixel_window(image, _sample_window(rng))
        return _crop_pixels(image, window), _empty_boxes(), all_indices
    min_iou = float(rng.choice(CROP_MIN_IOUS))
    for _ in range(CROP_TRIALS):
        window = _pixel_window(image, _sample_window(rng))
        moved, kept = _boxes_in_window(boxes, window)
        if len(kept) and _iou_yxyx(window, boxes[kept]).max() >= min_iou:
            return _crop_pixels(image, window), moved, kept
    return image, boxes, all_indices


def random_crop(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """SSD random crop; boxes [ymin, xmin, ymax, xmax] normalised in and out (see random_crop_indices)."""
    cropped, moved, _ = random_crop_indices(image, boxes, rng)
    return cropped, moved


def zoom_out(
    image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, max_ratio: float = 4.0,
    fill: tuple[float, float, float] = IMAGENET_MEAN_RGB,
) -> tuple[np.ndarray, np.ndarray]:
    """Place the image at a random spot of a canvas up to max_ratio times larger, filled with the
    mean colour (small, distant raccoons). Boxes [ymin, xmin, ymax, xmax] normalised in and out."""
    boxes = _as_boxes(boxes)
    h, w = image.shape[:2]
    ratio = float(rng.uniform(1.0, max_ratio))
    shrink = min(1.0, MAX_CANVAS_SIDE / (ratio * max(h, w)))
    if shrink < 1.0:
        image = cv2.resize(image, (max(1, round(w * shrink)), max(1, round(h * shrink))), interpolation=cv2.INTER_AREA)
    ih, iw = image.shape[:2]
    canvas_h, canvas_w = max(ih, round(ratio * ih)), max(iw, round(ratio * iw))
    top, left = int(rng.integers(0, canvas_h - ih + 1)), int(rng.integers(0, canvas_w - iw + 1))
    canvas = np.empty((canvas_h, canvas_w, 3), np.uint8)
    canvas[:] = np.round(fill).astype(np.uint8)
    canvas[top:top + ih, left:left + iw] = image
    scale = np.array([ih / canvas_h, iw / canvas_w, ih / canvas_h, iw / canvas_w], np.float32)
    offset = np.array([top / canvas_h, left / canvas_w, top / canvas_h, left / canvas_w], np.float32)
    return canvas, (boxes * scale + offset).astype(np.float32)


# ---------------------------------------------------------------- colour and sensor


def color_jitter(
    image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, brightness: float = 32.0,
    contrast: float = 0.5, saturation: float = 0.5, hue_degrees: float = 18.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Random brightness (+-brightness levels), contrast and saturation (x[1-c, 1+c]) and hue
    (+-hue_degrees). Boxes [ymin, xmin, ymax, xmax] normalised, returned unchanged."""
    _check_image(image)
    out = image.astype(np.float32) + rng.uniform(-brightness, brightness)
    mean = out.mean()
    out = (out - mean) * rng.uniform(1 - contrast, 1 + contrast) + mean
    hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-hue_degrees, hue_degrees) * 256 / 360) % 256  # HSV_FULL hue: 0..255
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1 - saturation, 1 + saturation), 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB_FULL), _as_boxes(boxes)


def _gray(image: np.ndarray) -> np.ndarray:
    """Luma (H, W) float32 of an RGB uint8 image."""
    return image.astype(np.float32) @ GRAY_WEIGHTS_RGB


def _to_rgb(gray: np.ndarray) -> np.ndarray:
    """(H, W) float -> uint8 RGB with three equal channels."""
    plane = np.clip(np.round(gray), 0, 255).astype(np.uint8)
    return np.repeat(plane[..., None], 3, axis=2)


def grayscale(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Three equal luma channels (a camera in black-and-white mode); boxes unchanged."""
    _check_image(image)
    return _to_rgb(_gray(image)), _as_boxes(boxes)


def _vignette(height: int, width: int, strength: float) -> np.ndarray:
    """(H, W) gain falling from 1 at the centre to 1 - strength in the corners."""
    ys = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    xs = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    radius2 = (ys ** 2 + xs ** 2) / 2  # 0 at the centre, 1 in the corners
    return 1 - strength * radius2


def _glare(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) additive bright blob: an IR illuminator reflecting near the lens."""
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    sigma = rng.uniform(0.05, 0.25) * max(height, width)
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    return rng.uniform(120, 300) * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma ** 2))


def ir_night(
    image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, glare_probability: float = 0.3,
) -> tuple[np.ndarray, np.ndarray]:
    """Look like an infrared night camera: grayscale, low light, gamma, vignetting, sensor noise
    and sometimes IR glare with blown highlights. Boxes [ymin, xmin, ymax, xmax] unchanged."""
    _check_image(image)
    height, width = image.shape[:2]
    gray = _gray(image) / 255.0
    gray = gray ** rng.uniform(0.7, 1.6)  # IR reflectance differs from visible: re-map tones
    gray = gray * rng.uniform(0.25, 0.8) * _vignette(height, width, rng.uniform(0.2, 0.7))
    level = gray * 255.0
    if rng.random() < glare_probability:
        level = level + _glare(height, width, rng)  # clipped below: blown highlights
    noise_sigma = rng.uniform(2.0, 12.0)  # read noise, in grey levels
    shot = np.sqrt(np.maximum(level, 0)) * rng.uniform(0.2, 0.8)  # shot noise grows with signal
    level = level + rng.normal(0.0, 1.0, size=level.shape).astype(np.float32) * (noise_sigma + shot)
    return _to_rgb(level), _as_boxes(boxes)


PORCH_FLASH_REACH = (0.35, 0.9)  # flash falls to half at this share of the frame's half-diagonal
PORCH_BLOWN_LEVEL = (150.0, 215.0)  # grey levels above this saturate (white bowls, bottles, siding)
PORCH_EYE_PROBABILITY = 0.35  # eyeshine on some animal crops, raccoon and look-alike alike
PORCH_JPEG_QUALITY = (18, 55)  # a cheap webcam's blocky night JPEG


def _flash_gain(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W) gain of an IR flash/illuminator: bright near a centre close to the frame's, falling
    off to black (inverse-square-like: 1 / (1 + (r / reach)^2)^1.5), never a plain vignette."""
    cy = height * rng.uniform(0.3, 0.7)
    cx = width * rng.uniform(0.3, 0.7)
    reach = rng.uniform(*PORCH_FLASH_REACH) * 0.5 * float(np.hypot(height, width))
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    r2 = ((ys - cy) ** 2 + (xs - cx) ** 2) / reach ** 2
    return (1.0 + r2) ** -1.5


def _eyeshine(level: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two small saturated dots side by side in the upper half: eyes reflecting the IR light."""
    height, width = level.shape
    radius = max(1.0, rng.uniform(0.012, 0.03) * min(height, width))
    cy = rng.uniform(0.2, 0.5) * height
    cx = rng.uniform(0.3, 0.7) * width
    gap = rng.uniform(3.0, 7.0) * radius
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    glow = np.zeros_like(level)
    for ex in (cx - gap / 2, cx + gap / 2):
        glow += 400.0 * np.exp(-((ys - cy) ** 2 + (xs - ex) ** 2) / (2 * radius ** 2))
    return level + glow


def porch_ir(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
             eye_probability: float = PORCH_EYE_PROBABILITY) -> tuple[np.ndarray, np.ndarray]:
    """Look like a cheap porch webcam or doorbell in infrared mode at night: grey, lit by its own IR
    LEDs so the centre is bright and the edges fall off to black, white things (a bowl, a bottle)
    blown out to 255 with a soft bloom, sometimes eyeshine, grey noise, then blocky JPEG.
    Boxes [ymin, xmin, ymax, xmax] unchanged. Shared by the proposer's and the classifier's data."""
    _check_image(image)
    height, width = image.shape[:2]
    gray = (_gray(image) / 255.0) ** rng.uniform(0.6, 1.3)  # IR reflectance: fur and foliage look pale
    level = gray * 255.0 * rng.uniform(1.1, 2.2) * _flash_gain(height, width, rng)
    blown = rng.uniform(*PORCH_BLOWN_LEVEL)
    over = np.clip(level - blown, 0, None)
    if over.any():  # blown highlights bleed into their surroundings
        sigma = max(1.0, 0.01 * max(height, width))
        level = level + cv2.GaussianBlur(over, (0, 0), sigma) * rng.uniform(0.5, 1.5)
    if rng.random() < eye_probability:
        level = _eyeshine(level, rng)
    level = level + rng.normal(0.0, rng.uniform(3.0, 14.0), size=level.shape).astype(np.float32)
    out = _to_rgb(level)
    quality = int(rng.integers(*PORCH_JPEG_QUALITY))
    ok, encoded = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if ok:
        out = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
    return out, _as_boxes(boxes)


def blur(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian (defocus) or motion blur (a moving animal at night exposure); boxes unchanged."""
    _check_image(image)
    if rng.random() < 0.5:
        kernel = int(rng.choice([3, 5, 7, 9]))
        return cv2.GaussianBlur(image, (kernel, kernel), 0), _as_boxes(boxes)
    length = int(rng.integers(5, 16))
    line = np.zeros((length, length), np.float32)
    line[length // 2, :] = 1.0
    rotation = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
    line = cv2.warpAffine(line, rotation, (length, length))
    return cv2.filter2D(image, -1, line / max(line.sum(), 1e-6)), _as_boxes(boxes)


def jpeg_recompress(
    image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, quality_range: tuple[int, int] = (20, 70),
) -> tuple[np.ndarray, np.ndarray]:
    """Re-encode as a low-quality JPEG (camera streams and snapshots); boxes unchanged."""
    _check_image(image)
    quality = int(rng.integers(quality_range[0], quality_range[1] + 1))
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB), _as_boxes(boxes)


# ---------------------------------------------------------------- copy-paste onto night frames

GRAYISH_CHANNEL_SPREAD = 8.0  # mean |R-G| + |G-B| below this: treat a frame as grayscale IR
PASTE_HEIGHT_RANGE = (0.12, 0.5)  # pasted crop height as a share of the frame height
PASTE_GAIN_RANGE = (0.8, 1.6)  # crop brightness relative to the spot it lands on (IR shine)
PASTE_GAIN_LIMITS = (0.3, 3.0)
MAX_PASTE_WIDTH = 0.9  # share of the frame width


def is_grayish(image: np.ndarray) -> bool:
    """True when the RGB channels are nearly equal (IR night frame): the daemon's own measure
    (``imagemode.channel_spread``, every pixel) with training's looser line (8 grey levels, so that
    washed-out near-grey backgrounds also take pasted crops grey)."""
    return channel_spread(image, step=1) < GRAYISH_CHANNEL_SPREAD


def _paste_size(background: np.ndarray, crop: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """(height, width) in pixels for the pasted crop, keeping its aspect ratio and inside the frame."""
    bg_h, bg_w = background.shape[:2]
    crop_h, crop_w = crop.shape[:2]
    height = rng.uniform(*PASTE_HEIGHT_RANGE) * bg_h
    width = height * crop_w / crop_h
    if width > MAX_PASTE_WIDTH * bg_w:
        height, width = height * MAX_PASTE_WIDTH * bg_w / width, MAX_PASTE_WIDTH * bg_w
    return max(2, int(round(height))), max(2, int(round(width)))


def _soft_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 1) alpha: 1 inside, feathered to ~0 at the border of the pasted rectangle."""
    feather = max(1, int(round(rng.uniform(0.05, 0.15) * min(height, width))))
    mask = np.zeros((height, width), np.float32)
    mask[feather:height - feather, feather:width - feather] = 1.0
    kernel = 2 * feather + 1
    return cv2.GaussianBlur(mask, (kernel, kernel), 0)[..., None]


def copy_paste_night(
    background: np.ndarray, crop: np.ndarray, rng: np.random.Generator, soft_edge_probability: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste a raccoon crop (RGB uint8) onto a night frame (RGB uint8) at a random scale and place.

    The crop is turned gray when the frame is an IR frame, its brightness matched to where it lands,
    and its edges optionally feathered. Returns (image, boxes (1, 4)): the pasted rectangle as
    [ymin, xmin, ymax, xmax] normalised to the frame.
    """
    _check_image(background)
    _check_image(crop)
    height, width = _paste_size(background, crop, rng)
    bg_h, bg_w = background.shape[:2]
    top, left = int(rng.integers(0, bg_h - height + 1)), int(rng.integers(0, bg_w - width + 1))
    patch = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    if is_grayish(background):
        patch = np.repeat((patch @ GRAY_WEIGHTS_RGB)[..., None], 3, axis=2)
    spot = background[top:top + height, left:left + width].astype(np.float32)
    gain = (spot.mean() + 1.0) / (patch.mean() + 1.0) * rng.uniform(*PASTE_GAIN_RANGE)
    patch = np.clip(patch * np.clip(gain, *PASTE_GAIN_LIMITS), 0, 255)
    alpha = _soft_mask(height, width, rng) if rng.random() < soft_edge_probability else 1.0
    image = background.copy()
    image[top:top + height, left:left + width] = np.round(alpha * patch + (1 - alpha) * spot).astype(np.uint8)
    box = np.array([[top / bg_h, left / bg_w, (top + height) / bg_h, (left + width) / bg_w]], np.float32)
    return image, box


# ---------------------------------------------------------------- the composed pipeline


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    """Probabilities (0..1) of each augmentation; geometry first, then colour/sensor effects."""

    zoom_out_probability: float = 0.3
    zoom_out_max_ratio: float = 3.0
    crop_probability: float = 0.5
    flip_probability: float = 0.5
    color_probability: float = 0.8
    grayscale_probability: float = 0.1
    night_probability: float = 0.15  # IR-night look; excludes grayscale and colour jitter
    porch_ir_probability: float = 0.0  # porch-webcam IR look (``porch_ir``); excludes the other looks
    blur_probability: float = 0.1
    jpeg_probability: float = 0.2

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name.endswith("_probability") and not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{name} must be in [0, 1], got {value}")
        if self.zoom_out_max_ratio < 1.0:
            raise ValueError(f"AugmentConfig.zoom_out_max_ratio must be >= 1, got {self.zoom_out_max_ratio}")


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to (size, size) (the network input); normalised boxes are unchanged by this."""
    shrinking = min(image.shape[:2]) > size
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def augment_with_labels(
    image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig,
    out_size: int | None = None, min_box_side: float = MIN_BOX_SIDE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole chain with per-box labels kept aligned; boxes [ymin, xmin, ymax, xmax] normalised.

    With ``out_size`` the image is resized to (out_size, out_size) after the geometric steps, so the
    colour and sensor effects run at the network's resolution (about 3x cheaper for training).
    Boxes thinner than ``min_box_side`` (normalised) at the end are dropped with their labels.
    """
    _check_image(image)
    boxes, labels = _as_boxes(boxes), np.asarray(labels)
    if len(labels) != len(boxes):
        raise ValueError(f"got {len(boxes)} boxes but {len(labels)} labels")
    if rng.random() < cfg.zoom_out_probability:
        image, boxes = zoom_out(image, boxes, rng, cfg.zoom_out_max_ratio)
    if rng.random() < cfg.crop_probability:
        image, boxes, kept = random_crop_indices(image, boxes, rng)
        labels = labels[kept]
    if rng.random() < cfg.flip_probability:
        image, boxes = horizontal_flip(image, boxes)
    if out_size:
        image = resize_square(image, out_size)
    look = rng.random()
    if look < cfg.night_probability:
        image, boxes = ir_night(image, boxes, rng)
    elif look < cfg.night_probability + cfg.porch_ir_probability:
        image, boxes = porch_ir(image, boxes, rng)
    elif look < cfg.night_probability + cfg.porch_ir_probability + cfg.grayscale_probability:
        image, boxes = grayscale(image, boxes)
    elif rng.random() < cfg.color_probability:
        image, boxes = color_jitter(image, boxes, rng)
    if rng.random() < cfg.blur_probability:
        image, boxes = blur(image, boxes, rng)
    if rng.random() < cfg.jpeg_probability:
        image, boxes = jpeg_recompress(image, boxes, rng)
    keep = ((boxes[:, 2] - boxes[:, 0]) > min_box_side) & ((boxes[:, 3] - boxes[:, 1]) > min_box_side)
    return image, boxes[keep], labels[keep]


def augment(
    image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig = AugmentConfig(),
) -> tuple[np.ndarray, np.ndarray]:
    """Augment one training image: uint8 RGB (H, W, 3) and boxes (N, 4) [ymin, xmin, ymax, xmax]
    normalised in, the same out (size may change, boxes may be dropped by the crop)."""
    labels = np.zeros(len(_as_boxes(boxes)), np.int64)
    image, boxes, _ = augment_with_labels(image, boxes, labels, rng, cfg)
    return image, boxes


# ---------------------------------------------------------------- looking at it

SHEET_TILE = 256  # pixels per contact-sheet cell
SHEET_BOX_COLOR = (255, 40, 40)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, tile: int = SHEET_TILE) -> np.ndarray:
    """Letterbox an RGB image into a tile x tile cell and draw boxes [ymin, xmin, ymax, xmax] normalised."""
    h, w = image.shape[:2]
    scale = tile / max(h, w)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    cell = np.zeros((tile, tile, 3), np.uint8)
    cell[:small.shape[0], :small.shape[1]] = small
    for ymin, xmin, ymax, xmax in _as_boxes(boxes):
        top_left = (int(xmin * small.shape[1]), int(ymin * small.shape[0]))
        bottom_right = (int(xmax * small.shape[1]) - 1, int(ymax * small.shape[0]) - 1)
        cv2.rectangle(cell, top_left, bottom_right, SHEET_BOX_COLOR, 2)
    return cell


def save_contact_sheet(samples: list[tuple[np.ndarray, np.ndarray]], path: str, columns: int = 6) -> np.ndarray:
    """Grid PNG of (RGB image, boxes [ymin, xmin, ymax, xmax] normalised) pairs; returns the RGB sheet."""
    cells = [draw_boxes(image, boxes) for image, boxes in samples]
    cells += [np.zeros_like(cells[0])] * (-len(cells) % columns)
    rows = [np.concatenate(cells[i:i + columns], axis=1) for i in range(0, len(cells), columns)]
    sheet = np.concatenate(rows, axis=0)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise ValueError(f"{path}: could not write the contact sheet")
    return sheet
