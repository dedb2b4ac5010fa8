"""The bench's decode-cost phase (service.bench.decode_cost): crop and decode time of each test-time pipeline."""

from __future__ import annotations

import json

import numpy as np

from posecore.backend import OrtBackend
from posecore.codec import PoseCodec
from posecore.codecs.spec import CodecSpec
from posecore.modelcard import read_card
from service.bench.decode_cost import decode_costs, main, markdown
from service.bench.workload import Photo
from tests.helpers import jpeg_bytes

PHOTOS = [Photo("a.jpg", jpeg_bytes(160, 240, seed=1), [[10, 20, 60, 120], [80, 40, 50, 100]]),
          Photo("b.jpg", jpeg_bytes(200, 150, seed=2), [[5, 5, 90, 140], [100, 10, 60, 130], [40, 30, 50, 90]])]


def test_every_allowed_pipeline_is_timed_per_request_and_per_person(tiny_onnx) -> None:
    backend = OrtBackend(tiny_onnx, provider="cpu")
    card, _ = read_card(tiny_onnx, backend)
    costs = decode_costs(PoseCodec(card), backend.infer, PHOTOS, seconds=0.05)
    assert list(costs) == ["official", "msra", "dark", "udp"]
    for cost in costs.values():
        assert all(v > 0 for v in cost.values())
        assert np.isclose(cost["decode_ms_per_person"] * 5, cost["decode_ms_per_request"] * 2, rtol=0.01, atol=2e-3)
    table = markdown(costs, 2.5)
    assert "| dark |" in table and "| udp |" in table and "2.5 persons per request" in table


def test_a_udp_card_times_only_udp(tiny_onnx) -> None:
    backend = OrtBackend(tiny_onnx, provider="cpu")
    card, _ = read_card(tiny_onnx, backend)
    card.codec = CodecSpec(type="UDPHeatmap")
    assert list(decode_costs(PoseCodec(card), backend.infer, PHOTOS[:1], seconds=0.01)) == ["udp"]


def test_the_command_prints_the_table(tiny_onnx, tmp_path, capsys) -> None:
    (tmp_path / "images").mkdir()
    entries = []
    for photo in [Photo("one.jpg", PHOTOS[0].data, PHOTOS[0].boxes[:1]), *PHOTOS]:
        (tmp_path / "images" / photo.name).write_bytes(photo.data)
        entries.append({"file": f"images/{photo.name}", "person_boxes_xywh": photo.boxes})
    (tmp_path / "boxes.json").write_text(json.dumps({"images": entries}))
    assert main(["--model", str(tiny_onnx), "--people", str(tmp_path), "--seconds", "0.01"]) == 0
    assert "| official |" in capsys.readouterr().out
