"""Archive recognition (raccoon_watch/archive) in this process: the folder walk, the checkpoint, and
``detect DIR --recursive`` end to end with the bundled model on real shared photos and clips. The Ray
runs are in test_archive_ray.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from raccoon_watch.archive.checkpoint import CheckpointError, open_checkpoint
from raccoon_watch.archive.clip import sampled
from raccoon_watch.archive.walk import find_files
from raccoon_watch.service import detect_cmd
from raccoon_watch.support.imagefile import NOT_AN_IMAGE
from tests.test_megadetector_format import spec_problems


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def test_walk_finds_photos_and_clips_sorted_by_relative_path(tmp_path):
    _touch(tmp_path, "b/IMG_2.JPG", "a/x/IMG_1.jpg", "a/clip.MP4", "a/notes.txt", "a/IMG_1.xmp", ".cache/IMG_9.jpg",
           "a/._IMG_1.jpg", "top.png")
    found = find_files(tmp_path)
    assert [(f.relative, f.kind) for f in found] == [
        ("a/clip.MP4", "video"), ("a/x/IMG_1.jpg", "image"), ("b/IMG_2.JPG", "image"), ("top.png", "image")]
    assert found[1].path == os.path.join(str(tmp_path), "a", "x", "IMG_1.jpg")  # the root as given + relative
    assert [f.relative for f in find_files(tmp_path, recursive=False)] == ["top.png"]


@pytest.mark.parametrize(("make", "message"), [(lambda p: p / "gone", "no such directory"),
                                               (lambda p: (p / "f.jpg").write_bytes(b"") or p / "f.jpg", "not a directory")])
def test_walk_refuses_what_is_not_a_folder(tmp_path, make, message):
    with pytest.raises(ValueError, match=message):
        find_files(make(tmp_path))


SETTINGS = {"model_sha256": "abc", "threshold": None}


def test_checkpoint_keeps_finished_files_across_runs(tmp_path):
    path = tmp_path / "run.checkpoint.jsonl"
    with open_checkpoint(path, SETTINGS) as cp:
        assert cp.done == {}
        assert cp.append([("a.jpg", {"image": "a.jpg", "detections": []}), ("b.jpg", {"image": "b.jpg", "error": "x"})]) == 2
        assert cp.append([("a.jpg", {"image": "a.jpg", "detections": [1]})]) == 0  # done once, first wins
    with open_checkpoint(path, SETTINGS) as cp:
        assert cp.done == {"a.jpg": {"image": "a.jpg", "detections": []}, "b.jpg": {"image": "b.jpg", "error": "x"}}
    assert len(path.read_text().splitlines()) == 3  # header + one line per file


def test_a_torn_last_line_is_cut_off_and_its_file_done_again(tmp_path):
    path = tmp_path / "c.jsonl"
    with open_checkpoint(path, SETTINGS) as cp:
        cp.append([("a.jpg", {"image": "a.jpg", "detections": []})])
    with open(path, "ab") as fh:
        fh.write(b'{"file": "b.jpg", "record": {"ima')  # killed mid-write
    with open_checkpoint(path, SETTINGS) as cp:
        assert list(cp.done) == ["a.jpg"]
        cp.append([("b.jpg", {"image": "b.jpg", "detections": []})])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line.get("file") for line in lines] == [None, "a.jpg", "b.jpg"]


def test_a_checkpoint_refuses_other_settings_a_second_run_and_foreign_files(tmp_path):
    path = tmp_path / "c.jsonl"
    open_checkpoint(path, SETTINGS).close()
    with pytest.raises(CheckpointError, match=r"other settings \(threshold: None then, 0.5 now\)"):
        open_checkpoint(path, {**SETTINGS, "threshold": 0.5})
    with open_checkpoint(path, SETTINGS):
        with pytest.raises(CheckpointError, match="another run is using"):
            open_checkpoint(path, SETTINGS)
    foreign = tmp_path / "notes.txt"
    foreign.write_text("shopping list\nmilk\n")
    with pytest.raises(CheckpointError, match="not a checkpoint line"):
        open_checkpoint(foreign, SETTINGS)


@pytest.mark.parametrize(("fps", "video_fps", "expected"), [
    (15.0, 5.0, [0, 3, 6, 9]),  # every third frame
    (10.0, 4.0, [0, 3, 5, 8]),  # the first frame of each 0.25 s
    (5.0, 5.0, list(range(10))), (2.0, 5.0, list(range(10))),  # slower clips: every frame
])
def test_clip_frames_sampled_at_the_detect_rate(fps, video_fps, expected):
    assert [i for i in range(10) if sampled(i, fps, video_fps)][:len(expected)] == expected


@pytest.fixture(scope="module")
def archive(shared_dir, tmp_path_factory) -> Path:
    """A small card dump: real photos in nested folders, a truncated JPEG, a text file named .jpg."""
    root = tmp_path_factory.mktemp("archive") / "season"
    photos = sorted((shared_dir / "data" / "raccoon_dataset" / "images").glob("*.jpg"))[:3]
    negatives = sorted((shared_dir / "data" / "negatives").rglob("*.jpg"))[:2]
    for i, photo in enumerate(photos + negatives):
        target = root / f"cam{i % 2 + 1}" / "DCIM" / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(photo)
    (root / "cam1" / "broken.jpg").write_bytes(photos[0].read_bytes()[:2000])
    (root / "cam2" / "readme.jpg").write_text("not a photo")
    return root


def _one_process(files: list[str], capsys) -> list[str]:
    capsys.readouterr()
    detect_cmd.run(["--json", *files])
    return capsys.readouterr().out.splitlines()


def test_archive_records_equal_detect_and_a_rerun_only_writes_the_output(archive, tmp_path, capsys):
    out = tmp_path / "results.jsonl"
    assert detect_cmd.run([str(archive), "--recursive", "--output", str(out)]) == 1  # two files failed
    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 7 and [r["image"] for r in records] == sorted(r["image"] for r in records)
    assert {r["image"].rsplit("/", 1)[1]: r["error"] for r in records if "error" in r} == {
        "broken.jpg": "truncated JPEG (the file ends before its end-of-image marker)", "readme.jpg": NOT_AN_IMAGE}
    assert lines == _one_process([r["image"] for r in records], capsys)  # the same records, byte for byte
    checkpoint = Path(str(out) + ".checkpoint.jsonl")
    before = checkpoint.read_text()
    out.unlink()
    assert detect_cmd.run([str(archive), "--recursive", "--output", str(out)]) == 1
    assert out.read_text().splitlines() == lines and checkpoint.read_text() == before  # nothing recognized again
    err = capsys.readouterr().err
    assert "7 from the checkpoint, 0 recognized" in err


def test_megadetector_output_of_a_real_archive_passes_the_spec(archive, tmp_path):
    out = tmp_path / "md.json"
    assert detect_cmd.run([str(archive), "--recursive", "--output", str(out), "--format", "megadetector"]) == 1
    doc = json.loads(out.read_text())
    assert spec_problems(doc) == []
    by_file = {e["file"]: e for e in doc["images"]}
    assert by_file["cam1/broken.jpg"]["detections"] is None and "truncated" in by_file["cam1/broken.jpg"]["failure"]
    found = [d for e in doc["images"] for d in e["detections"] or []]
    assert found and all(d["classifications"][0][0] == "1" for d in found)  # P(raccoon) from the classifier
    assert max(d["classifications"][0][1] for d in found) > 0.5  # the raccoon photos are found


@pytest.mark.parametrize(("argv", "message"), [
    (["--recursive", "--output", "o.jsonl", "a", "b"], "takes one folder"),
    (["--recursive", "{archive}"], "needs --output"),
    (["--recursive", "--output", "o.jsonl", "{missing}"], "no such folder"),
    (["--output", "o.jsonl", "{archive}"], "go with --recursive"),
    (["--format", "megadetector", "{archive}"], "go with --recursive"),
    (["--recursive", "--output", "o.jsonl", "--video-fps", "0", "{archive}"], "--video-fps must be a positive"),
    (["--recursive", "--output", "o.jsonl", "--batch-size", "0", "{archive}"], "--batch-size must be >= 1"),
])
def test_bad_archive_arguments_are_named(archive, tmp_path, capsys, argv, message):
    argv = [a.format(archive=archive, missing=tmp_path / "gone") for a in argv]
    assert detect_cmd.run(argv) == 2
    assert message in capsys.readouterr().err


def test_a_clip_in_the_archive_gives_its_visit(raccoon_clip_mp4, corrupt_clip, tmp_path):
    root = tmp_path / "videos"
    root.mkdir()
    (root / "walk.mp4").symlink_to(raccoon_clip_mp4.path)
    (root / "corrupt.mp4").symlink_to(corrupt_clip.path)
    out = tmp_path / "clips.jsonl"
    assert detect_cmd.run([str(root), "--recursive", "--output", str(out)]) == 1
    corrupt, walk = (json.loads(line) for line in out.read_text().splitlines())
    assert corrupt["video"].endswith("corrupt.mp4") and "error" in corrupt
    assert walk["frames"] == raccoon_clip_mp4.frames and walk["frames_processed"][:3] == [0, 3, 6]  # 15 fps at 5/s
    assert len(walk["visits"]) >= 1
    visit = max(walk["visits"], key=lambda v: v["score"])
    shown = raccoon_clip_mp4.raccoon_frames
    assert visit["label"] == "raccoon" and visit["score"] >= 0.5
    assert shown.start - 3 <= visit["first_frame"] and visit["frame"] < shown.stop  # seen while it is on screen


def test_the_bench_archive_repeats_the_photos_into_camera_folders(shared_dir, tmp_path):
    from tools.bench_archive import build_archive, shared_photos

    photos = shared_photos(shared_dir)[:3]
    made = build_archive(tmp_path / "archive", photos, 7)
    assert len(made) == len(set(made)) == 7
    assert sorted({p.relative_to(tmp_path / "archive").parts[0] for p in made}) == ["cam01", "cam02", "cam03"]
    assert all(p.is_symlink() and p.resolve() in {q.resolve() for q in photos} for p in made)
    assert [f.path for f in find_files(tmp_path / "archive")] == [str(p) for p in made]  # the walk's order
