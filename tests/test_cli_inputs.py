"""`evaluate` and `quantize` on hostile or broken input files (issue 18, point 9): one line and a meaningful exit
code each, never a traceback; and a file name in an annotation never reads outside `--images`.

Each test replays what a hostile try found: annotations as a JSON list, wrong-typed fields and detections as a list
of ints gave AssertionError/TypeError/AttributeError tracebacks; an image that does not decode gave a PoseError
traceback (quantize exit 1, its code for "agreement below threshold"); `quantize --model x.jpg` a protobuf
DecodeError traceback; and `file_name: "../../../../etc/passwd"` was read (and, with --url, POSTed to the server).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from model_export.__main__ import main
from model_export.configs import get_config
from model_export.evaluate import card_for_config
from tests.helpers import jpeg_bytes

TRAVERSAL = "../../../../../../../../etc/passwd"


def keypoint_annotations(file_name: Any = "person.jpg", **changes: Any) -> dict[str, Any]:
    """A valid one-image, one-person COCO keypoint file, with `changes` applied at the top level."""
    keypoints = [v for k in range(17) for v in (20.0 + k, 30.0 + 5 * k, 2)]
    data = {"images": [{"id": 1, "file_name": file_name, "width": 160, "height": 240}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [10, 20, 100, 200],
                             "area": 20000.0, "num_keypoints": 17, "keypoints": keypoints}],
            "categories": [{"id": 1, "name": "person"}]}
    return {**data, **changes}


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "person.jpg").write_bytes(jpeg_bytes(160, 240, seed=4))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return folder


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit code, the one line on stderr); fails if the command raised or printed more than one line."""
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("INFO ", "WARNING "))]
    assert len(lines) == 1 and "Traceback" not in err, err
    return code, lines[0]


def evaluate_argv(model: Path, annotations: Path, images: Path, *extra: str) -> list[str]:
    return ["evaluate", "--model", str(model), "--annotations", str(annotations), "--images", str(images),
            "--no-progress", *extra]


# ---- evaluate -------------------------------------------------------------------------------------------------

BROKEN_ANNOTATIONS = {
    "a JSON list": ([keypoint_annotations()], "the file: expected an object, got a list"),
    "images as an object": (keypoint_annotations(images={"id": 1}), "images: expected a list, got an object"),
    "a numeric file name": (keypoint_annotations(file_name=785), "images[0].file_name: expected a file name"),
    "a string bbox": (keypoint_annotations(annotations=[{**keypoint_annotations()["annotations"][0], "bbox": "1 2"}]),
                      "annotations[0].bbox: expected a list, got a string"),
    "short keypoints": (keypoint_annotations(annotations=[{**keypoint_annotations()["annotations"][0],
                                                           "keypoints": [1, 2, 2]}]),
                        "annotations[0].keypoints: expected 51 numbers, got 3 items"),
    "no categories": ({k: v for k, v in keypoint_annotations().items() if k != "categories"}, "categories: missing"),
    "not JSON": ("{'images': []", "cannot read annotation file"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_ANNOTATIONS))
def test_evaluate_refuses_broken_annotations_in_one_line(case: str, tiny_onnx: Path, images: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    data, message = BROKEN_ANNOTATIONS[case]
    annotations = tmp_path / "ann.json"
    annotations.write_text(data if isinstance(data, str) else json.dumps(data))
    code, line = run_cli(evaluate_argv(tiny_onnx, annotations, images), capsys)
    assert code == 2 and message in line and str(annotations) in line, line


@pytest.mark.parametrize(("detections", "message"), [
    ([1, 2, 3], "[0]: expected an object, got a number"),
    ({"image_id": 1}, "expected a list, got an object"),
    ([{"image_id": "1", "bbox": [1, 2, 3, 4]}], "[0].image_id: expected an integer, got a string"),
    ([{"image_id": 1, "bbox": [1, 2]}], "[0].bbox: expected at least 4 numbers, got 2 items"),
])
def test_evaluate_refuses_broken_detections_in_one_line(detections: Any, message: str, tiny_onnx: Path,
                                                        images: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    annotations = write(tmp_path / "ann.json", keypoint_annotations())
    dets = write(tmp_path / "dets.json", detections)
    code, line = run_cli(evaluate_argv(tiny_onnx, annotations, images, "--detections", str(dets)), capsys)
    assert code == 2 and message in line and "detections file" in line, line


def test_evaluate_names_an_image_that_does_not_decode(tiny_onnx: Path, images: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    annotations = write(tmp_path / "ann.json", keypoint_annotations("broken.jpg"))
    code, line = run_cli(evaluate_argv(tiny_onnx, annotations, images), capsys)
    assert code == 2 and str(images / "broken.jpg") in line and "corrupt_image" in line, line


class FakeService:
    """A 127.0.0.1 stand-in for the pose service: a model card, and a note of every image POSTed to it."""

    def __init__(self) -> None:
        self.posted: list[bytes] = []
        card = {"card": card_for_config(get_config("tiny")).model_dump(mode="json")}
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self.reply(200, card)

            def do_POST(self) -> None:
                service.posted.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.reply(400, {"error": {"code": "corrupt_image", "message": "not an image"}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def fake_service() -> Iterator[FakeService]:
    service = FakeService()
    threading.Thread(target=service.httpd.serve_forever, daemon=True).start()
    yield service
    service.httpd.shutdown()
    service.httpd.server_close()


def test_evaluate_never_reads_outside_the_image_folder(fake_service: FakeService, images: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """With --url, what evaluate reads is POSTed: a traversal would hand the server the machine's files."""
    annotations = write(tmp_path / "ann.json", keypoint_annotations(TRAVERSAL))
    code, line = run_cli(["evaluate", "--url", fake_service.url, "--annotations", str(annotations), "--images",
                          str(images), "--no-progress"], capsys)
    assert code == 2 and "is not a file name inside the image folder" in line, line
    assert fake_service.posted == []
    absolute = write(tmp_path / "abs.json", keypoint_annotations("/etc/passwd"))
    code, line = run_cli(["evaluate", "--url", fake_service.url, "--annotations", str(absolute), "--images",
                          str(images), "--no-progress"], capsys)
    assert code == 2 and "'/etc/passwd'" in line and fake_service.posted == []


# ---- quantize -------------------------------------------------------------------------------------------------

def quantize_argv(model: Path, annotations: Path, images: Path, tmp_path: Path) -> list[str]:
    return ["quantize", "--model", str(model), "--output", str(tmp_path / "out.int8.onnx"),
            "--calibration-annotations", str(annotations), "--calibration-images", str(images),
            "--max-crops", "2", "--max-held-out-crops", "1", "--no-search"]


def test_quantize_refuses_a_model_that_is_not_onnx(images: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    annotations = write(tmp_path / "ann.json", keypoint_annotations())
    code, line = run_cli(quantize_argv(images / "person.jpg", annotations, images, tmp_path), capsys)
    assert code == 2 and "person.jpg is not an ONNX model" in line, line
    assert not (tmp_path / "out.int8.onnx").exists()


def test_quantize_names_an_image_that_does_not_decode_with_exit_2(tiny_onnx: Path, images: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Exit 1 is documented as 'agreement below threshold': unusable data is 2."""
    box = [[10, 20, 100, 200]]
    annotations = write(tmp_path / "ann.json", {"images": [{"file": "person.jpg", "person_boxes_xywh": box},
                                                           {"file": "broken.jpg", "person_boxes_xywh": box}]})
    code, line = run_cli(quantize_argv(tiny_onnx, annotations, images, tmp_path), capsys)
    assert code == 2 and str(images / "broken.jpg") in line and "corrupt_image" in line, line


@pytest.mark.parametrize("index", [False, True])
def test_quantize_never_reads_outside_the_image_folder(index: bool, tiny_onnx: Path, images: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Two photos, so that both the calibration and the held-out side have one: the second is /etc/passwd."""
    box = [10, 20, 100, 200]
    index_data = {"images": [{"file": name, "person_boxes_xywh": [box]} for name in ("person.jpg", TRAVERSAL)]}
    coco_data = {"images": [{"id": i, "file_name": name, "width": 160, "height": 240}
                            for i, name in enumerate(("person.jpg", TRAVERSAL))],
                 "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": box} for i in range(2)]}
    annotations = write(tmp_path / "ann.json", index_data if index else coco_data)
    code, line = run_cli(quantize_argv(tiny_onnx, annotations, images, tmp_path), capsys)
    assert code == 2 and "is not a file name inside the image folder" in line, line


def test_quantize_refuses_wrong_typed_boxes_in_one_line(tiny_onnx: Path, images: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    annotations = write(tmp_path / "ann.json", {"images": [{"file": "person.jpg", "person_boxes_xywh": ["box"]}]})
    code, line = run_cli(quantize_argv(tiny_onnx, annotations, images, tmp_path), capsys)
    assert code == 2 and "images[0].person_boxes_xywh[0]: expected a list, got a string" in line, line
