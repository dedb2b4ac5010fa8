"""The bench's INT8 pairs (service.bench.int8): a float32 model and its INT8 derivative timed alike in the same
rounds, with the INT8 card's agreement beside the measured ratio."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.bench.__main__ import parse_args
from service.bench.int8 import PAIR_HEADER, Int8Pair, pair_table

MODELS = Path(__file__).parent / "models"
FP32, INT8 = MODELS / "tiny_coco_mini_128x96.onnx", MODELS / "tiny_coco_mini_128x96.int8.onnx"


def test_a_pair_is_timed_alike_and_reported_with_its_card():
    if not INT8.is_file():
        pytest.skip(f"{INT8} is not in this checkout")
    pair = Int8Pair.open("pair0", FP32, INT8)
    assert pair.batch == 4 and pair.card.precision == "int8" and pair.parent_card.precision == "fp32"
    phases = pair.phases(0.05)
    assert set(phases) == {"pair0_fp32", "pair0_int8"}
    assert all(p.crops == 4 * p.requests and p.crops > 0 for p in phases.values())
    table = pair_table([pair], phases)
    row = table[-1]
    agreement = pair.card.quantization.agreement  # type: ignore[union-attr]
    ratio = phases["pair0_int8"].crops_per_s / phases["pair0_fp32"].crops_per_s
    assert row.startswith("| `tiny_coco_mini_128x96.int8` ") and f"{agreement['heatmap_sqnr_db']:.1f} dB" in row
    assert f"**{ratio:.2f}x**" in row and "unknown" in row  # a test model's card knows no AP
    assert table[-3:-1] == PAIR_HEADER and pair_table([], phases) == []


def test_pairs_are_given_on_the_command_line():
    args = parse_args(["--int8-pair", "a.onnx", "a.int8.onnx", "--int8-pair", "b.onnx", "b.int8.onnx"])
    assert args.int8_pair == [[Path("a.onnx"), Path("a.int8.onnx")], [Path("b.onnx"), Path("b.int8.onnx")]]
