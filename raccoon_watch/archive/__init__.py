"""Archive recognition: a season of camera-trap photos (and clips) through the daemon's recognizer.

    raccoon-watch detect DIR --recursive [--ray [ADDRESS]] --output results.json
                         [--format jsonl|megadetector] [--checkpoint FILE] [--video-fps F]

One stage per module, each doing one job:

    walk.py          DIR -> the image and video files under it, sorted by relative path
    checkpoint.py    the finished files' records, appended as they arrive (a rerun skips them)
    worker.py        settings -> a recognizer in each worker; one file -> one record (``detect``'s own
                     ``image_record`` for photos, ``clip.py`` for videos); any failure is that file's record
    clip.py          a video -> per-clip visits, scored as the daemon scores them (tracking + visits)
    runner.py        the files still to do -> records: in this process, or on Ray (``ray_runner.py``)
    megadetector.py  records -> MegaDetector's batch-results JSON (Timelapse, AddaxAI)
    cli.py           the ``detect`` options above, and the run from walk to the results file

Nothing here is imported by the daemon; Ray is imported only when ``--ray`` is given (the ``scale``
extra: ``pip install 'raccoon-watch[scale]'``).
"""
