"""raccoon_watch: a real-time doorbell-camera raccoon detector."""

import os as _os

# OpenCV reads these once, when cv2 is first imported, and every module that imports cv2 imports this
# package first: set here, before anything else, so OpenCV/FFmpeg do not print their own
# "[ WARN:...]" lines on every failed open or read (our capture logs say it once, structured).
# setdefault: an operator's own value still wins.
_os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
_os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

__version__ = "0.1.0"
