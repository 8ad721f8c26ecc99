"""Writing generated clips, and the infrared night look. Used by the bench clips and make_clips.

Frames are BGR uint8 arrays of shape (H, W, 3), or grey uint8 (H, W) (IR clips: a third of the
bytes to make and to pipe), all of one shape within a clip.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from raccoon_watch.demo import write_mp4v

GOP_S = 2.0  # keyframe interval, as an IP camera's main stream
CRF = 23


def ir_look(image: np.ndarray, gain: float, offset: float = 8.0) -> np.ndarray:
    """An IR camera's picture of ``image``: grey, scaled by ``gain`` plus ``offset`` grey levels, as BGR."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    dark = cv2.convertScaleAbs(grey, alpha=gain, beta=offset)
    return cv2.cvtColor(dark, cv2.COLOR_GRAY2BGR)


def encode_h264(frames: Iterable[np.ndarray], path: Path, size: tuple[int, int], fps: float,
                max_rate: str = "4M", ffmpeg: str | None = None, preset: str = "veryfast") -> int:
    """Encode ``frames`` of ``size`` (width, height) to an H.264 MP4 with Debian's ffmpeg: libx264
    (``preset`` veryfast), CRF 23 capped at ``max_rate``, yuv420p, a keyframe every 2 s, no B-frames (like an IP
    camera). Written to a temporary name and renamed; returns the frame count. The first frame's
    shape says BGR (H, W, 3) or grey (H, W)."""
    ffmpeg = ffmpeg or shutil.which("ffmpeg")
    if ffmpeg is None:
        raise FileNotFoundError("ffmpeg is not installed (apt-get install ffmpeg)")
    width, height = size
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.mp4")
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError("no frames to write")
    shape = first.shape
    cmd = [
        ffmpeg, "-nostdin", "-y", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "gray" if first.ndim == 2 else "bgr24", "-s", f"{width}x{height}", "-r", f"{fps:g}", "-i", "-",
        "-c:v", "libx264", "-preset", preset, "-g", str(round(GOP_S * fps)), "-bf", "0",
        "-crf", str(CRF), "-maxrate", max_rate, "-bufsize", max_rate,
        "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(tmp),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    count = 0
    try:
        for image in itertools.chain([first], frames):
            if image.shape != shape or shape[:2] != (height, width):
                raise ValueError(f"frame {count} has shape {image.shape}, expected {shape} of {width}x{height}")
            proc.stdin.write(np.ascontiguousarray(image).tobytes())
            count += 1
        proc.stdin.close()
        if proc.wait(timeout=600) != 0:
            raise OSError(f"ffmpeg failed: {proc.stderr.read().decode(errors='replace')[-500:] if proc.stderr else ''}")
    finally:
        if proc.poll() is None:
            proc.kill()
    tmp.replace(path)
    return count


def write_clip(frames: Iterable[np.ndarray], path: Path, size: tuple[int, int], fps: float,
               max_rate: str = "4M", preset: str = "veryfast") -> str:
    """H.264 when ffmpeg is installed, else OpenCV's mp4v; returns the codec used ("h264" | "mp4v")."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        encode_h264(frames, path, size, fps, max_rate, ffmpeg, preset)
        return "h264"
    write_mp4v((cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) if f.ndim == 2 else f for f in frames), path, fps)
    return "mp4v"
