"""The ffmpeg commands of the clips, built (never run) here: record by stream copy, remux, cut.

Every command copies the first video stream as it came (``-map 0:v:0 -c copy``): no decode, no
encode, no audio. ``review/clips.py`` runs them.
"""

from __future__ import annotations

from pathlib import Path


def record_command(ffmpeg: str, source: str, out_dir: Path, run: str, segment_s: float) -> list[str]:
    """The recorder's ffmpeg command: stream copy of the first video stream into MPEG-TS segments."""
    src = ["-rtsp_transport", "tcp", "-timeout", "5000000"] if source.lower().startswith("rtsp") else []
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", *src, "-i", source,
        "-map", "0:v:0", "-c", "copy", "-f", "segment", "-segment_time", f"{segment_s:g}",
        "-segment_format", "mpegts", "-reset_timestamps", "0",
        "-segment_list", str(out_dir / f"{run}.csv"), "-segment_list_type", "csv",
        str(out_dir / f"{run}-%06d.ts"),
    ]


def remux_command(ffmpeg: str, joined: Path, out: Path) -> list[str]:
    """Joined MPEG-TS segments -> one MP4 (stream copy), so the cut can seek by its index."""
    return [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(joined),
            "-map", "0:v:0", "-c", "copy", "-f", "mp4", str(out)]


def cut_command(ffmpeg: str, full: Path, offset: float, duration: float, out: Path) -> list[str]:
    """[offset, offset + duration] of ``full`` (an MP4) by stream copy into a faststart MP4."""
    return [
        ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-ss", f"{max(offset, 0.0):.3f}",
        "-i", str(full), "-t", f"{duration:.3f}", "-map", "0:v:0", "-c", "copy", "-movflags", "+faststart",
        "-f", "mp4", str(out),
    ]

