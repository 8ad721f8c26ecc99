#!/usr/bin/python3
"""A local RTSP camera for tests: serves an H.264 .mp4 file, looped forever, at its native fps.

Run with the system Python, which has GStreamer's introspection bindings (the project venv has
no ``gi``; Debian: python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-{base,good,bad}):

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --file clip.mp4 --path /cam

Prints ``READY rtsp://127.0.0.1:8554/cam`` on stdout once listening (bound to 127.0.0.1 only),
and serves until SIGTERM/SIGINT. The file's H.264 access units are read once at start
(``filesrc ! qtdemux ! h264parse ! appsink``) and pushed round and round through
``appsrc ! h264parse ! rtph264pay config-interval=1`` with steadily increasing timestamps, so the
stream never ends and clients see one continuous, live-like camera. The media is shared: every
client sees the same position, as with a real camera. Use a clip encoded with a short GOP and no
B-frames (``-g 15 -bf 0``) so a new client gets a picture within a second.
"""

from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import dataclass

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


@dataclass(frozen=True)
class AccessUnit:
    data: bytes
    keyframe: bool


@dataclass(frozen=True)
class Stream:
    units: list[AccessUnit]
    caps: str  # appsrc caps: byte-stream H.264 with size and framerate
    frame_ns: int  # duration of one frame


def load_h264(path: str) -> Stream:
    """All H.264 access units of an .mp4 file, in byte-stream form with SPS/PPS before keyframes."""
    pipeline = Gst.parse_launch(
        f'filesrc location="{path}" ! qtdemux ! h264parse config-interval=-1 '
        "! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    units: list[AccessUnit] = []
    caps = None
    while True:
        sample = sink.emit("pull-sample")
        if sample is None:
            break
        caps = caps or sample.get_caps()
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        units.append(AccessUnit(bytes(info.data), not buf.has_flags(Gst.BufferFlags.DELTA_UNIT)))
        buf.unmap(info)
    pipeline.set_state(Gst.State.NULL)
    if not units or caps is None:
        raise SystemExit(f"no H.264 video in {path}")
    s = caps.get_structure(0)
    ok, num, den = s.get_fraction("framerate")
    if not ok or num <= 0:
        num, den = 15, 1
    frame_ns = Gst.util_uint64_scale_int(Gst.SECOND, den, num)
    appsrc_caps = (
        f"video/x-h264,stream-format=byte-stream,alignment=au,"
        f"width={s.get_value('width')},height={s.get_value('height')},framerate={num}/{den}"
    )
    return Stream(units, appsrc_caps, frame_ns)


class LoopingFactory(GstRtspServer.RTSPMediaFactory):
    """Builds ``appsrc ! h264parse ! rtph264pay`` and feeds it the stream's units in a loop."""

    def __init__(self, stream: Stream) -> None:
        super().__init__()
        self.stream = stream
        self.set_shared(True)
        self.set_launch(
            f'( appsrc name=src is-live=false format=time caps="{stream.caps}" '
            "! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )
        self.connect("media-configure", self._configure)

    def _configure(self, factory, media) -> None:
        appsrc = media.get_element().get_child_by_name("src")
        state = {"n": 0}  # frames pushed into this media, for timestamps

        def need_data(src, _length) -> None:
            n = state["n"]
            unit = self.stream.units[n % len(self.stream.units)]
            buf = Gst.Buffer.new_wrapped(unit.data)
            buf.pts = buf.dts = n * self.stream.frame_ns
            buf.duration = self.stream.frame_ns
            if not unit.keyframe:
                buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
            state["n"] = n + 1
            src.emit("push-buffer", buf)

        appsrc.connect("need-data", need_data)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port on 127.0.0.1")
    parser.add_argument("--file", required=True, help="H.264 .mp4 file to serve, looped")
    parser.add_argument("--path", default="/cam", help="mount path (default /cam)")
    return parser


def main(args: argparse.Namespace) -> int:
    Gst.init(None)
    stream = load_h264(args.file)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.path, LoopingFactory(stream))
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(get_args_parser().parse_args()))
