"""The storage folder within its caps, through the real `raccoon-watch run` (issue 22, disk).

Issue 22's done-when is 30 minutes of 3 looping file cameras with clips, the storage folder never
over its caps by more than one clip (``make soak``, ``tools/disk_soak.py``; the measured run is in the
README). This is the same run, short: 3 file cameras looping the raccoon clip (H.264, one visit every
8 s, so one event, snapshot, frame and clip per camera every 8 s), caps a few events big (a clip is
about 1 MB), the folder sampled twice a second until 8 clips were cut. Real parts: the daemon, the detector, ffmpeg cutting the clips, the folder.
"""

from __future__ import annotations

import pytest

from tools.disk_soak import get_args_parser, run

pytestmark = pytest.mark.slow


def test_three_looping_cameras_never_take_the_folder_over_its_caps_by_more_than_one_clip(tmp_path, raccoon_clip_h264):
    # about 70 s on a quiet machine (8 clips: 3 cameras, one visit each every 8 s); at most 4 minutes
    args = get_args_parser().parse_args([
        "--minutes", "4", "--until-clips", "8", "--cameras", "3", "--clip", str(raccoon_clip_h264.path),
        "--end-after", "2", "--snapshot-mb", "0.75", "--clip-mb", "3", "--interval", "0.5", "--out", str(tmp_path)])
    result = run(args)
    detail = {k: result[k] for k in ("pictures", "clips", "largest_clip_bytes", "max_overshoot_bytes", "store", "log")}

    assert result["daemon_started_at_s"] is not None, result["run_dir"]
    assert not result["daemon_exited_early"] and result["daemon_exit"] == 0, result["run_dir"]
    # the caps were reached and enforced: clips and pictures were deleted, their rows kept and marked
    assert result["log"]["clip_ready"] >= 8 and result["store"]["events"] >= 8, detail
    assert result["log"]["retention_files"] > 0 and result["store"]["clips_removed_by_retention"] > 0, detail
    assert result["store"]["events_without_snapshot"] > 0, detail
    # never over by more than the one clip being written, at any sample
    assert result["largest_clip_bytes"] > 0
    assert result["max_overshoot_bytes"] <= result["largest_clip_bytes"], detail
    assert result["met"]
    assert result["log"]["errors"] == 0, result["run_dir"]
