"""Doorbell-minded augmentation in numpy + cv2, per example.

Images are RGB uint8 (H, W, 3); boxes float32 (N, 4) [ymin, xmin, ymax, xmax] normalised to the
image they come with; labels int64 (N,). Every function returns a new (image, boxes, labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

SSD_CROP_MIN_IOUS = (None, 0.1, 0.3, 0.5, 0.7, 0.9)  # SSD paper p. 6; None = keep whole image
MIN_BOX_SIDE = 0.02  # boxes thinner than this after cropping are dropped


@dataclass(frozen=True)
class AugmentConfig:
    flip: float = 0.5
    zoom_out: float = 0.3
    zoom_out_max: float = 3.0
    ssd_crop: float = 0.5
    color_jitter: float = 0.8
    grayscale: float = 0.1
    night: float = 0.15  # grayscale IR look: dark, low contrast, noise, blur, glare
    blur: float = 0.1


def hflip(image, boxes, labels):
    """Mirror left-right; boxes [ymin, xmin, ymax, xmax] normalised."""
    flipped = boxes.copy()
    flipped[:, 1], flipped[:, 3] = 1.0 - boxes[:, 3], 1.0 - boxes[:, 1]
    return np.ascontiguousarray(image[:, ::-1]), flipped, labels


def zoom_out(image, boxes, labels, rng, max_ratio: float):
    """Place the image on a larger mean-coloured canvas: objects get smaller (SSD paper p. 7)."""
    h, w = image.shape[:2]
    ratio = rng.uniform(1.0, max_ratio)
    canvas_h, canvas_w = int(h * ratio), int(w * ratio)
    top, left = int(rng.uniform(0, canvas_h - h)), int(rng.uniform(0, canvas_w - w))
    canvas = np.empty((canvas_h, canvas_w, 3), np.uint8)
    canvas[:] = image.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    canvas[top:top + h, left:left + w] = image
    scale = np.array([h, w, h, w], np.float32) / np.array([canvas_h, canvas_w, canvas_h, canvas_w], np.float32)
    offset = np.array([top / canvas_h, left / canvas_w] * 2, np.float32)
    return canvas, boxes * scale + offset, labels


def _iou_one_to_many(box, boxes):
    inter_h = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    inter_w = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = inter_h * inter_w
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def ssd_random_crop(image, boxes, labels, rng, tries: int = 30):
    """SSD paper p. 6: a crop whose IoU with some object >= a random minimum; keep objects whose
    centre lies inside, clipped. Negatives (no boxes) get a plain random crop."""
    min_iou = SSD_CROP_MIN_IOUS[rng.integers(len(SSD_CROP_MIN_IOUS))]
    if min_iou is None:
        return image, boxes, labels
    for _ in range(tries):
        ch, cw = rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0)
        if not 0.5 <= ch / cw <= 2.0:
            continue
        y0, x0 = rng.uniform(0, 1 - ch), rng.uniform(0, 1 - cw)
        crop = np.array([y0, x0, y0 + ch, x0 + cw], np.float32)
        if len(boxes) and _iou_one_to_many(crop, boxes).max() < min_iou:
            continue
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2
        keep = np.all((centres >= crop[:2]) & (centres <= crop[2:]), axis=1)
        if len(boxes) and not keep.any():
            continue
        new = (np.clip(boxes[keep], crop[[0, 1, 0, 1]], crop[[2, 3, 2, 3]]) - crop[[0, 1, 0, 1]])
        new = new / np.array([ch, cw, ch, cw], np.float32)
        h, w = image.shape[:2]
        pixels = image[int(y0 * h):int((y0 + ch) * h), int(x0 * w):int((x0 + cw) * w)]
        if pixels.size == 0:
            continue
        return pixels, new.astype(np.float32), labels[keep]
    return image, boxes, labels


def color_jitter(image, rng):
    """Brightness, contrast, saturation, and a small hue shift."""
    img = image.astype(np.float32)
    img = img * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25)  # contrast-ish gain, brightness
    gray = img.mean(axis=2, keepdims=True)
    img = gray + (img - gray) * rng.uniform(0.6, 1.4)  # saturation
    img = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int16) + rng.integers(-8, 9)) % 180).astype(np.uint8)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return img


def grayscale(image):
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return np.repeat(gray[:, :, None], 3, axis=2)


def night_ir(image, rng):
    """Infrared night camera look: grayscale, dark and flat, gamma, sensor noise, soft focus,
    sometimes a bright IR glare blob (reflective eyes/porch lamp)."""
    img = grayscale(image).astype(np.float32)
    img = 255.0 * (img / 255.0) ** rng.uniform(0.8, 1.8)  # darker mid-tones
    img = img * rng.uniform(0.35, 1.0) + rng.uniform(0, 30)
    img += rng.normal(0, rng.uniform(2, 12), img.shape[:2])[:, :, None]
    if rng.random() < 0.3:
        h, w = img.shape[:2]
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.05, 0.3) * max(h, w)
        yy, xx = np.ogrid[:h, :w]
        img += 120.0 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[:, :, None]
    img = np.clip(img, 0, 255).astype(np.uint8)
    return cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.5))


def blur(image, rng):
    """Motion or focus blur, as from a cheap camera at dusk."""
    if rng.random() < 0.5:
        k = int(rng.integers(3, 9))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        return cv2.filter2D(image, -1, kernel)
    return cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 2.0))


def augment(image, boxes, labels, rng: np.random.Generator, cfg: AugmentConfig, out_size: int | None = None):
    """One random augmentation chain; same formats in and out (see module docstring). With
    out_size the image comes back resized to (out_size, out_size) (boxes are normalised, so unchanged)."""
    if rng.random() < cfg.zoom_out:
        image, boxes, labels = zoom_out(image, boxes, labels, rng, cfg.zoom_out_max)
    if rng.random() < cfg.ssd_crop:
        image, boxes, labels = ssd_random_crop(image, boxes, labels, rng)
    if rng.random() < cfg.flip:
        image, boxes, labels = hflip(image, boxes, labels)
    if out_size:  # photometric work at the network's resolution is ~3x cheaper
        image = cv2.resize(image, (out_size, out_size), interpolation=cv2.INTER_AREA
                           if min(image.shape[:2]) > out_size else cv2.INTER_LINEAR)
    if rng.random() < cfg.color_jitter:
        image = color_jitter(image, rng)
    if rng.random() < cfg.night:
        image = night_ir(image, rng)
    elif rng.random() < cfg.grayscale:
        image = grayscale(image)
    if rng.random() < cfg.blur:
        image = blur(image, rng)
    keep = ((boxes[:, 2] - boxes[:, 0]) > MIN_BOX_SIDE) & ((boxes[:, 3] - boxes[:, 1]) > MIN_BOX_SIDE)
    return image, boxes[keep], labels[keep]


def copy_paste(background, crops, label: int, rng, max_objects: int = 1):
    """Paste 1..max_objects raccoon crops onto a raccoon-free frame; each pasted rectangle is its
    box [ymin, xmin, ymax, xmax] normalised. Crops are matched to the frame's look (grayscale if the
    frame is grayscale, brightness scaled to the frame's)."""
    image = background.copy()
    h, w = image.shape[:2]
    frame_is_gray = np.abs(image[..., 0].astype(np.int16) - image[..., 2]).mean() < 4
    boxes = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        crop = crops[int(rng.integers(len(crops)))]
        target_h = rng.uniform(0.15, 0.6) * h
        scale = target_h / crop.shape[0]
        ch, cw = int(crop.shape[0] * scale), int(crop.shape[1] * scale)
        if ch < 8 or cw < 8 or ch >= h or cw >= w:
            continue
        patch = cv2.resize(crop, (cw, ch), interpolation=cv2.INTER_AREA)
        if frame_is_gray:
            patch = grayscale(patch)
        gain = (image.mean() + 1.0) / (patch.mean() + 1.0)
        patch = np.clip(patch.astype(np.float32) * np.clip(gain, 0.5, 1.5), 0, 255).astype(np.uint8)
        y0, x0 = int(rng.integers(0, h - ch)), int(rng.integers(0, w - cw))
        image[y0:y0 + ch, x0:x0 + cw] = patch
        boxes.append([y0 / h, x0 / w, (y0 + ch) / h, (x0 + cw) / w])
    boxes_arr = np.array(boxes, np.float32).reshape(-1, 4)
    return image, boxes_arr, np.full(len(boxes_arr), label, np.int64)
