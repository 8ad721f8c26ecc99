"""What the review page shows of an event besides its row: its clip, its trace, the live view.

- ``clips.py``: an ffmpeg stream-copy recorder per camera and a clip cut per event (or from a file
  camera's own file), each clip's state on the event row;
- ``eventtrace.py``: per-frame scores of each event and its clean best frame (no box drawn);
- ``live.py``: the newest frame per camera, for the page's live view.
"""
