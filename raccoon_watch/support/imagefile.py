"""Read one image file safely for one-shot detection: size checked before decoding, truncation found.

``read_image(path, max_pixels)`` returns ``(image, None)`` or ``(None, error)``; the error is a
short sentence for a per-input record. Before anything is read, the file may be at most
``max_file_bytes(max_pixels)`` long (4 bytes a pixel and 1 MiB: more than any image of that many
pixels needs), so a huge non-image is never loaded; before anything is decoded, the header's width x
height (``header_size``: PNG, JPEG, BMP, WebP, PNM) must be at most ``max_pixels``: a small file can
declare 30000 x 30000 pixels and take gigabytes to decode. ``detect`` and ``retrain`` read every
image through it. A JPEG without its end-of-image marker
(a file cut short: libjpeg only warns and fills the rest with grey) is an error, not 0 detections.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

DEFAULT_MAX_PIXELS = 50_000_000  # 50 MP: above any camera still; 30000 x 30000 is 900 MP
NOT_AN_IMAGE = "not an image (OpenCV cannot decode it)"

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the file's header declares it, without decoding; None if not known."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
        if data.startswith(b"BM") and len(data) >= 26:
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:2] in (b"P5", b"P6", b"P2", b"P3"):
            fields = b" ".join(line.split(b"#")[0] for line in data[2:200].splitlines()).split()
            return int(fields[0]), int(fields[1])
    except (struct.error, ValueError, IndexError):
        return None
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in _JPEG_SOF:
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(data[24:27], "little") + 1
        h = int.from_bytes(data[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def max_file_bytes(max_pixels: int) -> int:
    """The longest file ``read_image`` reads: 4 bytes a pixel (an uncompressed BGRA BMP) and 1 MiB."""
    return 4 * max_pixels + (1 << 20)


def read_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray | None, str | None]:
    """Decode ``path`` as BGR, or say why not (too large, truncated, not an image, unreadable)."""
    try:
        size_bytes = path.stat().st_size
        if size_bytes > max_file_bytes(max_pixels):
            return None, (f"file is {size_bytes / 1e6:.0f} MB, more than an image of {max_pixels / 1e6:g} MP "
                          "(--max-megapixels) can be")
        with open(path, "rb") as fh:
            data = fh.read(max_file_bytes(max_pixels) + 1)
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    return decode_image(data, max_pixels, "--max-megapixels")


TOO_LARGE = "over the limit of"  # in the error of an image with too many pixels (an API answers 413 for it)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, setting: str = "max megapixels") -> tuple[np.ndarray | None, str | None]:
    """Decode an image file's bytes as BGR, or say why not: more pixels than ``max_pixels`` (from the
    header, before decoding; the error holds ``TOO_LARGE`` and names ``setting``), a truncated JPEG,
    not an image. ``read_image`` and ``raccoon-watch serve`` decode through it."""
    size = header_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        return None, (f"image is {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.0f} MP), {TOO_LARGE} "
                      f"{max_pixels / 1e6:g} MP ({setting})")
    if not data:
        return None, "empty file"
    if data.startswith(b"\xff\xd8") and not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        return None, "truncated JPEG (the file ends before its end-of-image marker)"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None, NOT_AN_IMAGE
    if image.shape[0] * image.shape[1] > max_pixels:  # a format whose header we do not read
        return None, f"image is {image.shape[1]}x{image.shape[0]}, {TOO_LARGE} {max_pixels / 1e6:g} MP ({setting})"
    return image, None
