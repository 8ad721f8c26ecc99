"""Developer tools that drive the daemon from outside: never imported by ``raccoon_watch``.

* ``tools.bench`` / ``tools.bench_clips``: the performance benchmark (``make bench``,
  ``raccoon-watch bench``) and its generated doorstep clips.
* ``tools.video``: writing clips (H.264 through ffmpeg, else OpenCV mp4v) and the IR night look.
* ``tools.make_clips``: validation clips with a known raccoon timeline (``make clips``).
* ``tools.eval_clips``: event-level evaluation of the real pipeline on clips (``make eval-clips``).

Run them from the checkout (``python -m tools.NAME``): the package is not installed with the daemon.
"""
