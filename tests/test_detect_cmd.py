"""`detect` command: the --json format the evaluation tooling relies on, errors per input, videos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from raccoon_watch.config import REPO_ROOT
from raccoon_watch.service import detect_cmd
from raccoon_watch.snapshot import DEFAULT_COLOR
from raccoon_watch.support import imagefile

PHOTOS = ["raccoon-57.jpg", "raccoon-146.jpg", "raccoon-197.jpg"]
GT_57 = (82, 6, 638, 423)  # test_labels.csv, pixels (xmin, ymin, xmax, ymax) of raccoon-57.jpg (640x425)


@pytest.fixture(scope="module")
def photos(shared_dir: Path) -> list[str]:
    return [str(shared_dir / "data" / "raccoon_dataset" / "images" / n) for n in PHOTOS]


def run_json(capsys: pytest.CaptureFixture[str], coco_model: Path, *argv: str) -> tuple[int, list[dict]]:
    code = detect_cmd.run(["--model", str(coco_model), "--json", *argv])
    out = capsys.readouterr().out
    return code, [json.loads(line) for line in out.splitlines()]


def check_record(record: dict, path: str) -> None:
    """The exact --json shape: keys, types, pixel boxes inside the original image, sorted scores."""
    assert set(record) == {"image", "width", "height", "mode", "detections"}
    assert record["mode"] in ("color", "ir")
    image = cv2.imread(path)
    assert record["image"] == path and (record["height"], record["width"]) == image.shape[:2]
    assert isinstance(record["width"], int) and isinstance(record["height"], int)
    scores = [d["score"] for d in record["detections"]]
    assert scores == sorted(scores, reverse=True)
    for det in record["detections"]:
        assert set(det) == {"label", "score", "box"} and isinstance(det["label"], str)
        assert isinstance(det["score"], float) and round(det["score"], 4) == det["score"] and det["score"] >= 0.5
        xmin, ymin, xmax, ymax = det["box"]
        assert all(isinstance(v, int) for v in det["box"])
        assert 0 <= xmin <= xmax <= record["width"] and 0 <= ymin <= ymax <= record["height"]


def test_json_format_on_real_photos(capsys: pytest.CaptureFixture[str], coco_model: Path, photos: list[str]) -> None:
    code, records = run_json(capsys, coco_model, *photos)
    assert code == 0 and len(records) == len(photos)
    for record, path in zip(records, photos):
        check_record(record, path)
        assert record["detections"] and record["detections"][0]["label"] in {"cat", "dog", "bear"}
    top = records[0]["detections"][0]["box"]  # pixels of the original 640x425 image, xmin first
    iw = min(top[2], GT_57[2]) - max(top[0], GT_57[0])
    ih = min(top[3], GT_57[3]) - max(top[1], GT_57[1])
    union = (top[2] - top[0]) * (top[3] - top[1]) + (GT_57[2] - GT_57[0]) * (GT_57[3] - GT_57[1]) - iw * ih
    assert iw * ih / union > 0.8


def test_threshold_and_label_filters(capsys: pytest.CaptureFixture[str], coco_model: Path, photos: list[str]) -> None:
    _, low = run_json(capsys, coco_model, "--threshold", "0.2", photos[0])
    assert len(low[0]["detections"]) > 1 and min(d["score"] for d in low[0]["detections"]) >= 0.2
    _, only_bear = run_json(capsys, coco_model, "--threshold", "0.2", "--labels", "bear,raccoon", photos[0])
    assert [d["label"] for d in only_bear[0]["detections"]] == ["bear"]
    _, strict = run_json(capsys, coco_model, "--threshold", "0.99", photos[0])
    assert strict[0]["detections"] == []


def test_bad_inputs_are_reported_and_the_rest_processed(capsys: pytest.CaptureFixture[str], coco_model: Path,
                                                        photos: list[str], tmp_path: Path) -> None:
    fake = tmp_path / "fake.jpg"
    fake.write_text("not a jpeg")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    code = detect_cmd.run(["--model", str(coco_model), "--json", str(fake), photos[0], str(tmp_path / "gone.png"), str(notes)])
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert code == 1 and len(records) == 4
    assert records[0] == {"image": str(fake), "error": "not an image (OpenCV cannot decode it)"}
    check_record(records[1], photos[0])
    assert records[2] == {"image": str(tmp_path / "gone.png"), "error": "no such file"}
    assert records[3]["error"] == "neither an image nor a video"
    assert f"{fake}: not an image" in captured.err and "gone.png: no such file" in captured.err


def test_bad_model_exits_3(capsys: pytest.CaptureFixture[str], tmp_path: Path, photos: list[str]) -> None:
    bad = tmp_path / "model.tflite"
    bad.write_text("nope")
    assert detect_cmd.run(["--model", str(bad), photos[0]]) == 3
    assert f"{bad}: not a TFLite model" in capsys.readouterr().err


def test_out_dir_writes_annotated_images(capsys: pytest.CaptureFixture[str], coco_model: Path, photos: list[str],
                                         tmp_path: Path) -> None:
    code = detect_cmd.run(["--model", str(coco_model), "--out", str(tmp_path / "annotated"), *photos[:2]])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and len(lines) == 2 and "bear 0.76" in lines[0]
    for path in photos[:2]:
        written = cv2.imread(str(tmp_path / "annotated" / Path(path).name))
        original = cv2.imread(path)
        assert written.shape == original.shape and not np.array_equal(written, original)


def test_standalone_module_entry_point(coco_model: Path, photos: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "raccoon_watch.service.detect_cmd", "--model", str(coco_model), "--json", photos[1]],
                         capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    [line] = out.stdout.splitlines()  # logs went to stderr
    check_record(json.loads(line), photos[1])


@pytest.fixture(scope="module")
def clip(shared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-frame 320x240 mp4v clip at 10 fps: raccoon photos, with two empty frames in between."""
    path = tmp_path_factory.mktemp("clip") / "raccoons.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (320, 240))
    images = sorted((shared_dir / "data" / "raccoon_dataset" / "images").glob("raccoon-1*.jpg"))[:10]
    frames = [cv2.resize(cv2.imread(str(p)), (320, 240)) for p in images]
    for frame in frames[:5] + [np.zeros((240, 320, 3), np.uint8)] * 2 + frames[5:]:
        writer.write(frame)
    writer.release()
    return path


def read_frames(path: Path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, fps


def amber_pixels(frame: np.ndarray) -> int:
    return int((np.abs(frame.astype(int) - DEFAULT_COLOR).max(axis=2) < 40).sum())


def test_video_out_writes_annotated_clip(capsys: pytest.CaptureFixture[str], coco_model: Path, clip: Path,
                                         tmp_path: Path) -> None:
    out = tmp_path / "annotated.mp4"
    code = detect_cmd.run(["--model", str(coco_model), "--json", "--out", str(out), str(clip)])
    [summary] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    source, source_fps = read_frames(clip)
    written, written_fps = read_frames(out)
    assert code == 0 and len(source) == 12 and len(written) == 12 and summary["frames"] == 12
    assert written_fps == pytest.approx(source_fps) and written[0].shape == source[0].shape
    assert 7 <= summary["frames_with_detections"] <= 10 and summary["out"] == str(out)
    assert amber_pixels(written[0]) > amber_pixels(source[0]) + 200  # boxes drawn
    assert amber_pixels(written[5]) == amber_pixels(source[5]) == 0  # black frame: nothing drawn


def test_video_out_needs_one_video_input(capsys: pytest.CaptureFixture[str], coco_model: Path, photos: list[str],
                                         tmp_path: Path) -> None:
    assert detect_cmd.run(["--model", str(coco_model), "--out", str(tmp_path / "x.mp4"), photos[0]]) == 2
    assert "one video file" in capsys.readouterr().err
    assert detect_cmd.run(["--model", str(coco_model), "--json", "--max-frames", "3", "0"]) == 1  # no webcam here
    assert json.loads(capsys.readouterr().out) == {"video": "0", "error": "cannot open as a video or camera source"}


# --- --out: one rule, checked before any work, nothing overwritten -------------------------------

@pytest.mark.parametrize(
    ("inputs", "out", "existing", "targets", "problem"),
    [
        (["a/x.jpg"], "boxed.jpg", [], {"a/x.jpg": "boxed.jpg"}, None),  # an image file name: that file
        (["a/x.jpg", "b/y.jpg"], "boxed.jpg", [], {}, "one image file"),
        (["clip.mp4"], "boxed.jpg", [], {}, "one image file"),
        (["a/x.jpg"], "boxed.mp4", [], {}, "one video file"),
        (["clip.mp4"], "boxed.mp4", ["boxed.mp4"], {}, "exists already"),
        (["a/x.jpg"], "boxed.jpg", ["boxed.jpg"], {}, "exists already"),
        (["a/x.jpg", "clip.mp4"], "outdir", [], {"a/x.jpg": "outdir/x.jpg", "clip.mp4": "outdir/clip.mp4"}, None),
        (["a/x.jpg", "b/x.jpg"], "outdir", [], {}, "would both write"),
        (["a/x.png", "b/x.jpg"], "outdir", [], {}, "would both write"),  # both become x.jpg
        (["a/x.jpg"], "outdir", ["outdir/x.jpg"], {}, "exists already"),
        (["a/x.jpg"], "outdir", ["outdir/"], {"a/x.jpg": "outdir/x.jpg"}, None),  # an existing dir is fine
        (["a/x.jpg"], "notes", ["notes"], {}, "is a file, not a directory"),
    ],
)
def test_plan_outputs(tmp_path: Path, monkeypatch, inputs, out, existing, targets, problem) -> None:
    monkeypatch.chdir(tmp_path)
    for name in existing:
        if name.endswith("/"):
            Path(name).mkdir()
        else:
            Path(name).parent.mkdir(parents=True, exist_ok=True)
            Path(name).write_text("keep me")
    got, why = detect_cmd.plan_outputs(inputs, Path(out))
    assert {k: str(v) for k, v in got.items()} == targets
    assert (why is None) if problem is None else (why is not None and problem in why), why


def test_out_never_overwrites_and_refuses_before_any_work(capsys: pytest.CaptureFixture[str], coco_model: Path,
                                                         photos: list[str], tmp_path: Path) -> None:
    taken = tmp_path / "taken.jpg"
    taken.write_bytes(b"keep me")
    assert detect_cmd.run(["--model", str(coco_model), "--json", "--out", str(taken), photos[0]]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "exists already" in captured.err and taken.read_bytes() == b"keep me"

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for d in (a, b):
        (d / "x.jpg").write_bytes(Path(photos[0]).read_bytes())
    assert detect_cmd.run(["--model", str(coco_model), "--out", str(tmp_path / "o"), str(a / "x.jpg"),
                           str(b / "x.jpg")]) == 2
    assert "would both write" in capsys.readouterr().err and not (tmp_path / "o").exists()

    boxed = tmp_path / "boxed.jpg"  # an image file name is that file, not a directory
    assert detect_cmd.run(["--model", str(coco_model), "--out", str(boxed), photos[0]]) == 0
    capsys.readouterr()
    assert boxed.is_file() and cv2.imread(str(boxed)).shape == cv2.imread(photos[0]).shape


# --- images that lie: cut short, or far larger decoded than on disk -----------------------------

@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".ppm"])
def test_header_size_matches_the_decoded_size(ext: str) -> None:
    image = np.zeros((37, 53, 3), np.uint8)
    ok, data = cv2.imencode(ext, image)
    assert ok and imagefile.header_size(data.tobytes()) == (53, 37)


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (its pixel data is a few bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_truncated_and_oversized_images_are_per_input_errors(capsys: pytest.CaptureFixture[str], coco_model: Path,
                                                            photos: list[str], tmp_path: Path) -> None:
    cut = tmp_path / "cut.jpg"
    data = Path(photos[0]).read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # libjpeg would only warn and grey out the rest
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png_claiming(30000, 30000))  # 900 MP: 2.7 GB decoded
    code, records = run_json(capsys, coco_model, str(cut), str(huge), photos[0])
    assert code == 1 and len(records) == 3
    assert records[0] == {"image": str(cut), "error": "truncated JPEG (the file ends before its end-of-image marker)"}
    assert records[1]["image"] == str(huge) and "30000x30000" in records[1]["error"] and "limit" in records[1]["error"]
    check_record(records[2], photos[0])
    # the limit is configurable: a 640x425 photo is over 0.1 MP
    code, records = run_json(capsys, coco_model, "--max-megapixels", "0.1", photos[0])
    assert code == 1 and "over the limit of 0.1 MP" in records[0]["error"]
