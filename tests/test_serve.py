"""``raccoon-watch serve``, the DeepStack/CodeProject.AI-compatible API, tested as its clients use it:
a real server process, real multipart requests from ``requests`` (as Frigate's ``deepstack`` plugin
writes them), real photos from shared/.

Also: the wire format's pure functions (raccoon_watch.recognition.deepstack) and the serve settings.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests
import yaml

from raccoon_watch.recognition import deepstack as protocol
from raccoon_watch.config import ConfigError, DetectorConfig, ServeFileConfig, load_config
from raccoon_watch.recognition.detectors import create_recognizer
from raccoon_watch.types import Detection
from testkit.ports import free_port
from tests.serving import Server

KEY = "k3y-for-tests-0123456789abcdef"  # 30 characters: serve.api_key wants at least 16
PHOTO = "raccoon-186.jpg"  # one whole raccoon on grass (tests/fixtures/media.py uses it too)
DOG = "ctai_domestic_dog.jpg"  # shared/data/negatives: the proposer sees an animal, the classifier no raccoon
UPLOAD_MB = 2  # the test server's serve.max_upload_mb
# Frigate's labelmap (labelmap.txt, COCO, 0 = person .. 89 = hair brush) with the README's addition
FRIGATE_LABELS = {0: "person", 15: "cat", 16: "dog", 21: "bear", 90: "raccoon"}


def frigate_region(photo: Path, size: int = 320) -> np.ndarray:
    """What Frigate hands its detector: a square region of the frame at the model's input size, RGB
    (here the whole photo letterboxed into the square)."""
    image = cv2.imread(str(photo))
    h, w = image.shape[:2]
    side = max(h, w)
    square = np.full((side, side, 3), 114, np.uint8)
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = image
    return cv2.cvtColor(cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)


def frigate_detect_raw(api_url: str, api_key: str, tensor_rgb: np.ndarray, api_timeout: float) -> np.ndarray:
    """A client written the way Frigate's ``frigate/detectors/plugins/deepstack.py`` is: the region as a
    JPEG, ``data={"api_key": ...}``, ``files={"image": jpeg}``; rows [label index, confidence, y_min,
    x_min, y_max, x_max] (normalised), at most 20, stopping at the first prediction under 0.4 or with
    a label its labelmap lacks."""
    h, w = tensor_rgb.shape[:2]
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(tensor_rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    response = requests.post(api_url, data={"api_key": api_key}, files={"image": jpeg}, timeout=api_timeout)
    answer = response.json()
    rows = np.zeros((20, 6), np.float32)
    index = {name: i for i, name in FRIGATE_LABELS.items()}
    for i, det in enumerate(answer.get("predictions") or []):
        if det["confidence"] < 0.4 or det["label"].lower() not in index:
            break
        rows[i] = [index[det["label"].lower()], det["confidence"], det["y_min"] / h, det["x_min"] / w,
                   det["y_max"] / h, det["x_max"] / w]
    return rows


def _post(server: Server, path: str = "/v1/vision/custom/raccoon", **kwargs: Any) -> requests.Response:
    kwargs.setdefault("timeout", 30)
    return requests.post(server.url + path, **kwargs)


def _refused(response: requests.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["code"] == status, body
    for word in words:
        assert word in body["error"], body["error"]
    return body


@pytest.fixture(scope="module")
def photos(shared_dir: Path) -> dict[str, Path]:
    return {"raccoon": shared_dir / "data" / "raccoon_dataset" / "images" / PHOTO,
            "dog": shared_dir / "data" / "negatives" / DOG}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path):
    folder = tmp_path_factory.mktemp("serve")
    config = folder / "serve.yaml"  # a config with no cameras: a machine that only answers
    config.write_text(yaml.safe_dump({
        "serve": {"api_key": "${TEST_SERVE_KEY}", "max_upload_mb": UPLOAD_MB, "port": free_port()},
        "logging": {"format": "json"},
    }))
    srv = Server.start("--config", str(config), env={"TEST_SERVE_KEY": KEY})
    yield srv
    assert srv.terminate() == 0
    assert KEY not in "".join(srv.raw), "the API key appeared in the server's log"


# --- the answer ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_frigate_deepstack_plugin_finds_the_raccoon(server: Server, photos: dict[str, Path]) -> None:
    region = frigate_region(photos["raccoon"])
    rows = frigate_detect_raw(server.url + "/v1/vision/custom/raccoon", KEY, region, api_timeout=30)
    found = rows[rows[:, 1] > 0]
    assert len(found) == 1, rows
    label, confidence, y_min, x_min, y_max, x_max = found[0]
    assert FRIGATE_LABELS[int(label)] == "raccoon" and confidence >= 0.7
    # the same numbers as the local recognizer on the same JPEG: one inference path, pixels of the upload
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(region, cv2.COLOR_RGB2BGR))[1]
    local = create_recognizer(DetectorConfig(num_threads=1))
    try:
        best = local.recognize([cv2.imdecode(jpeg, cv2.IMREAD_COLOR)])[0][0]
    finally:
        local.close()
    assert best.label == "raccoon" and abs(best.score - confidence) < 0.02
    assert np.allclose([x_min, y_min, x_max, y_max], best.box, atol=3 / 320)


@pytest.mark.slow
def test_answer_has_codeproject_fields_in_pixels_of_the_upload(server: Server, photos: dict[str, Path]) -> None:
    data = photos["raccoon"].read_bytes()  # 640 x 428, sent as it is
    body = _post(server, data={"api_key": KEY, "min_confidence": "0.5"}, files={"image": data}).json()
    assert body["success"] is True and body["code"] == 200 and body["count"] == 1
    assert body["message"] == "Found raccoon" and body["command"] == "custom"
    for key in ("inferenceMs", "processMs", "analysisRoundTripMs"):
        assert isinstance(body[key], int) and body[key] >= 0
    assert body["processMs"] >= body["inferenceMs"] and body["analysisRoundTripMs"] >= body["processMs"]
    (p,) = body["predictions"]
    assert set(p) == {"label", "confidence", "x_min", "y_min", "x_max", "y_max"}
    assert all(isinstance(p[k], int) for k in ("x_min", "y_min", "x_max", "y_max"))
    assert 0 <= p["x_min"] < p["x_max"] <= 640 and 0 <= p["y_min"] < p["y_max"] <= 428
    assert p["x_max"] - p["x_min"] > 320  # the raccoon fills most of the photo


@pytest.mark.slow
def test_other_animals_only_when_asked(server: Server, photos: dict[str, Path]) -> None:
    dog = photos["dog"].read_bytes()
    custom = _post(server, data={"api_key": KEY}, files={"image": dog}).json()
    assert custom["success"] is True and custom["predictions"] == [] and custom["message"] == "No objects found"
    plain = _post(server, "/v1/vision/detection", data={"api_key": KEY}, files={"image": dog}).json()
    assert plain["predictions"] == []  # /detection without animals=1: raccoons only, as /custom/raccoon
    asked = _post(server, "/v1/vision/detection", data={"api_key": KEY, "animals": "1"}, files={"image": dog}).json()
    assert [p["label"] for p in asked["predictions"]] == ["animal"], asked
    assert asked["predictions"][0]["confidence"] >= 0.4
    raccoon = _post(server, "/v1/vision/detection", data={"api_key": KEY, "animals": "true"},
                    files={"image": photos["raccoon"].read_bytes()}).json()
    assert raccoon["predictions"][0]["label"] == "raccoon"  # raccoons first: Frigate stops at an unknown label


@pytest.mark.slow
def test_list_and_health(server: Server) -> None:
    listed = requests.get(server.url + "/v1/vision/custom/list", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert listed.status_code == 200 and listed.json()["models"] == ["raccoon"]
    posted = _post(server, "/v1/vision/custom/list", data={"api_key": KEY})
    assert posted.status_code == 200 and posted.json()["models"] == ["raccoon"]
    _refused(requests.get(server.url + "/v1/vision/custom/list", timeout=10), 401, "API key")
    health = requests.get(server.url + "/healthz", timeout=10).json()
    assert health["status"] == "ok" and health["api_key"] is True and health["workers"] == 2
    assert health["recognizer"] == "tflite+tflite-classifier" and health["thresholds"]["color"] is not None


# --- refusals -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_wrong_or_missing_key_is_401(server: Server, photos: dict[str, Path]) -> None:
    image = photos["raccoon"].read_bytes()
    _refused(_post(server, data={"api_key": "not-the-key-at-all"}, files={"image": image}), 401, "wrong API key")
    _refused(_post(server, files={"image": image}), 401, "needs an API key")
    _refused(_post(server, data={"api_key": KEY + "x"}, files={"image": image}), 401, "wrong API key")
    ok = _post(server, files={"image": image}, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and ok.json()["count"] == 1


@pytest.mark.slow
def test_bad_image_is_400(server: Server, photos: dict[str, Path]) -> None:
    _refused(_post(server, data={"api_key": KEY}, files={"image": b"this is not a picture"}), 400, "image:", "not an image")
    truncated = photos["raccoon"].read_bytes()[:20_000]
    _refused(_post(server, data={"api_key": KEY}, files={"image": truncated}), 400, "truncated JPEG")
    _refused(_post(server, data={"api_key": KEY}, files={"image": b""}), 400, "empty")
    # a small PNG header that declares 40000 x 40000 pixels: refused from the header, never decoded
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    _refused(_post(server, data={"api_key": KEY}, files={"image": bomb}), 413, "over the limit", "serve.max_megapixels")


@pytest.mark.slow
def test_missing_or_malformed_fields_are_400(server: Server, photos: dict[str, Path]) -> None:
    image = photos["raccoon"].read_bytes()
    _refused(_post(server, data={"api_key": KEY}, files={"picture": image}), 400, "missing the image field")
    _refused(_post(server, data={"api_key": KEY, "image": "abc"}, files={"other": b"1"}), 400, "file part")
    _refused(_post(server, data={"api_key": KEY, "image": "abc"}), 400, "multipart/form-data")  # url-encoded
    _refused(_post(server, data={"api_key": KEY, "min_confidence": "lots"}, files={"image": image}), 400,
             "min_confidence")
    _refused(_post(server, data={"api_key": KEY, "min_confidence": "1.5"}, files={"image": image}), 400,
             "min_confidence")
    _refused(_post(server, "/v1/vision/detection", data={"api_key": KEY, "animals": "maybe"}, files={"image": image}),
             400, "animals")
    broken = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x\"\r\n\r\n123"  # no closing boundary
    _refused(_post(server, data=broken, headers={"Content-Type": "multipart/form-data; boundary=b",
                                                  "Authorization": f"Bearer {KEY}"}), 400, "image")
    _refused(_post(server, "/v1/vision/custom/fox", data={"api_key": KEY}, files={"image": image}), 404, "'fox'")
    _refused(_post(server, "/v1/vision/face", data={"api_key": KEY}, files={"image": image}), 404, "no endpoint")
    _refused(requests.get(server.url + "/v1/vision/custom/raccoon", timeout=10), 405, "POST")


@pytest.mark.slow
def test_huge_upload_is_413_without_holding_it(server: Server, photos: dict[str, Path]) -> None:
    _post(server, data={"api_key": KEY}, files={"image": photos["raccoon"].read_bytes()})  # warm: peak RSS settles
    before = server.peak_rss_mb()
    huge = np.random.default_rng(0).integers(0, 256, 40_000_000, dtype=np.uint8).tobytes()  # 40 MB, 20x the limit
    body = _refused(_post(server, data={"api_key": KEY}, files={"image": huge}), 413, "serve.max_upload_mb", "40.0 MB")
    assert body["command"] == "custom"

    def chunks():  # no Content-Length (chunked): counted as it streams, refused at the limit
        boundary = b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n\r\n"
        yield boundary
        for _ in range(40):
            yield huge[:1_000_000]
        yield b"\r\n--XyZ--\r\n"

    _refused(_post(server, data=chunks(), headers={"Content-Type": "multipart/form-data; boundary=XyZ",
                                                    "Authorization": f"Bearer {KEY}"}), 413, "over the limit")
    grew = server.peak_rss_mb() - before
    assert grew < 20, f"the server's peak memory grew {grew:.0f} MB for 40 MB uploads it refused"
    # and the connection-level state is sound afterwards
    ok = _post(server, data={"api_key": KEY}, files={"image": photos["raccoon"].read_bytes()})
    assert ok.status_code == 200 and ok.json()["count"] == 1


# --- overload: 503, not a queue without end ------------------------------------------------------------


@pytest.mark.slow
def test_overload_is_503_and_the_rest_are_answered(tmp_path: Path, shared_dir: Path) -> None:
    big = cv2.resize(cv2.imread(str(shared_dir / "data" / "raccoon_dataset" / "images" / PHOTO)), (4000, 2700))
    jpeg = cv2.imencode(".jpg", big)[1].tobytes()  # slow to decode: the one thread stays busy a while
    # a key, but this client's address is in keyless_clients: the requests below carry none
    srv = Server.start("--port", str(free_port()), "--workers", "1",
                       "--config", str(_write(tmp_path / "s.yaml", {"serve": {"queue_size": 1, "api_key": KEY,
                                                                                 "keyless_clients": ["127.0.0.1/32"]},
                                                                       "logging": {"format": "json"}})))
    try:
        codes: list[int] = []
        lock = threading.Lock()

        def call() -> None:
            r = requests.post(srv.url + "/v1/vision/detection", files={"image": jpeg}, timeout=120)
            with lock:
                codes.append(r.status_code)
            if r.status_code == 503:
                assert r.headers["Retry-After"] == "1" and "busy" in r.json()["error"]

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(set(codes)) == [200, 503], codes
        assert 1 <= codes.count(200) <= 7
        health = requests.get(srv.url + "/healthz", timeout=10).json()
        assert health["queue"]["peak"] <= 2 and health["queue"]["capacity"] == 2 and health["api_key"] is True
    finally:
        assert srv.terminate() == 0


# --- settings -----------------------------------------------------------------------------------------


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_off_loopback_without_a_key_exits_2_naming_it(tmp_path: Path) -> None:
    srv = Server.start("--host", "0.0.0.0", "--port", str(free_port()), wait=False)
    assert srv.wait_exit() == 2
    assert "serve.api_key" in "".join(srv.raw) and "0.0.0.0" in "".join(srv.raw)
    short = tmp_path / "key"
    short.write_text("short\n")
    srv = Server.start("--api-key-file", str(short), "--port", str(free_port()), wait=False)
    assert srv.wait_exit() == 2 and "serve.api_key" in "".join(srv.raw) and "16 characters" in "".join(srv.raw)
    taken = free_port()
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", taken))
        sock.listen(1)
        srv = Server.start("--port", str(taken), wait=False)
        assert srv.wait_exit() == 2 and "serve.port" in "".join(srv.raw)
    srv = Server.start("--model", str(tmp_path / "nowhere"), "--port", str(free_port()), wait=False)
    assert srv.wait_exit() == 3 and "cannot load the model" in "".join(srv.raw)


def test_serve_config_sections(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path / "a.yaml", {"serve": {"host": "127.0.0.1", "keyless_clients": ["192.168.1.20"]}}),
                      ServeFileConfig)
    assert cfg.cameras == {} and cfg.serve.port == 32168 and cfg.serve.keyless_clients == ["192.168.1.20"]
    assert load_config(_write(tmp_path / "empty.yaml", {}), ServeFileConfig).serve.min_confidence == 0.4
    with pytest.raises(ConfigError, match=r"serve.keyless_clients"):
        load_config(_write(tmp_path / "b.yaml", {"serve": {"keyless_clients": ["my-nvr"]}}), ServeFileConfig)
    with pytest.raises(ConfigError, match=r"serve.*api_key is required"):
        load_config(_write(tmp_path / "c.yaml", {"serve": {"host": "0.0.0.0"}}), ServeFileConfig)


# --- the wire format (pure) ----------------------------------------------------------------------------


def _det(score: float, detector: float | None, label: str = "raccoon", x: float = 0.1) -> Detection:
    return Detection(label, score, (x, 0.1, x + 0.2, 0.5), detector_score=detector)


def test_choose_predictions_orders_raccoons_first_and_caps_at_20() -> None:
    dets = [_det(0.2, 0.9, x=0.0), _det(0.8, 0.3, x=0.3), _det(0.5, 0.6, x=0.6), _det(0.05, 0.02, x=0.7)]
    chosen = protocol.choose_predictions(dets, "raccoon", 0.4, animals=True)
    assert [(p.label, p.confidence) for p in chosen] == [("raccoon", 0.8), ("raccoon", 0.5), ("animal", 0.9)]
    assert [p.label for p in protocol.choose_predictions(dets, "raccoon", 0.4, animals=False)] == ["raccoon", "raccoon"]
    single = [Detection("cat", 0.7, (0, 0, 1, 1)), Detection("raccoon", 0.3, (0, 0, 1, 1))]  # a one-stage COCO model
    assert [p.label for p in protocol.choose_predictions(single, "raccoon", 0.4, animals=True)] == ["cat"]
    many = [_det(0.9, 0.9) for _ in range(30)]
    assert len(protocol.choose_predictions(many, "raccoon", 0.4, animals=False)) == protocol.MAX_PREDICTIONS


def test_parse_answer_reads_what_success_body_writes() -> None:
    preds = [protocol.Prediction("raccoon", 0.91, (0.25, 0.5, 0.75, 1.0))]
    body = protocol.success_body(preds, 640, 480, "custom", 10, 12, 15)
    (back,) = protocol.parse_answer(body, 640, 480)
    assert back.label == "raccoon" and back.confidence == 0.91 and back.box == (0.25, 0.5, 0.75, 1.0)
    for bad in ([], {"success": False, "error": "nope"}, {"success": True, "predictions": {}},
                {"success": True, "predictions": [{"label": "raccoon"}]},
                {"success": True, "predictions": [{"label": 3, "confidence": 1, "x_min": 0, "y_min": 0,
                                                   "x_max": 1, "y_max": 1}]}):
        with pytest.raises(protocol.ProtocolError):
            protocol.parse_answer(bad, 640, 480)
    assert protocol.parse_answer({"success": True}, 10, 10) == []  # DeepStack omits an empty list at times


@pytest.mark.parametrize(("value", "expected"), [(None, 0.4), ("", 0.4), ("0", 0.0), ("0.75", 0.75), ("1", 1.0)])
def test_parse_confidence(value: str | None, expected: float) -> None:
    assert protocol.parse_confidence(value, 0.4) == expected


@pytest.mark.parametrize("value", ["-0.1", "1.01", "nan", "inf", "x"])
def test_parse_confidence_refuses(value: str) -> None:
    with pytest.raises(ValueError, match="min_confidence"):
        protocol.parse_confidence(value, 0.4)


def test_accepted_connections_have_tcp_nodelay() -> None:
    """The listener is an IPPROTO_TCP socket, so asyncio (uvicorn's transports) sets TCP_NODELAY on each
    accepted connection: an answer's head and body, two writes, never wait for a kept-alive client's
    delayed ACK (it cost 40 ms a request before)."""
    import asyncio
    import socket

    from raccoon_watch.web.httpserver import bind_listener

    listener = bind_listener("127.0.0.1", 0)
    assert listener.proto == socket.IPPROTO_TCP
    seen: list[int] = []

    async def main() -> None:
        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                seen.append(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        _, writer = await asyncio.open_connection("127.0.0.1", listener.getsockname()[1])
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()

    asyncio.run(main())
    assert seen and seen[0] != 0
