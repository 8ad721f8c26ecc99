"""What the review page shows of an event besides its row: its clip, its trace, the live view.

- ``clips.py``: an ffmpeg stream-copy recorder per camera and a clip cut per event (or from a file
  camera's own file), each clip's state on the event row; ``clipwindow.py``: the pure maths of which
  seconds a clip covers and which segments hold them; ``ffmpeg.py``: the commands, built not run;
- ``eventtrace.py``: per-frame scores of each event and its clean best frame (no box drawn);
- ``live.py``: the newest frame per camera, for the page's live view.
"""
