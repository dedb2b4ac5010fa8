"""What each test-time pipeline costs around the network: the crop (box -> affine -> normalised input) and the
decode (flip average -> maximum -> refinement -> image pixels), per request and per person, in this process.

The network's heatmaps for each pipeline's own crops are computed once, outside the timing, so only the codec is
measured; DARK and UDP blur every heatmap of every person in one call (posecore.codecs.refine.gaussian_blur).

    python -m service.bench.decode_cost --model models/hrnet_w32_256x192.onnx [--people DIR] [--seconds S]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from posecore.backend import OrtBackend
from posecore.boxes import parse_boxes
from posecore.codec import PoseCodec
from posecore.imaging import decode_image
from posecore.modelcard import read_card
from service.bench.workload import DEFAULT_PEOPLE_DIR, Photo, load_photos

MAX_PIXELS = 100_000_000


def decode_costs(codec: PoseCodec, infer: Callable[[np.ndarray], np.ndarray], photos: Sequence[Photo],
                 seconds: float = 1.0, flip: bool = True) -> dict[str, dict[str, float]]:
    """For each pipeline the card allows: median ms per request of `crop` and `decode`, and per person. The
    pipelines take turns pass by pass (interleaved rounds), so a busy machine slows them alike."""
    images = [decode_image(p.data, MAX_PIXELS, MAX_PIXELS) for p in photos]
    rows = [_rows(p.boxes) for p in photos]
    persons = sum(len(r) for r in rows)
    work: dict[str, dict[str, Callable[[], None]]] = {}
    for decoding in codec.allowed_decodings:
        prepared = [codec.crops(image, r, flip, decoding) for image, r in zip(images, rows, strict=True)]
        maps = [infer(p.inputs) for p in prepared]  # the network, once, outside the timing

        def crop(decoding: str = decoding) -> None:
            for image, r in zip(images, rows, strict=True):
                codec.crops(image, r, flip, decoding)

        def decode(prepared: list = prepared, maps: list = maps) -> None:
            for p, m in zip(prepared, maps, strict=True):
                codec.persons(p, m)

        crop()
        decode()  # warm-up
        work[decoding] = {"crop": crop, "decode": decode}
    times: dict[tuple[str, str], list[float]] = {}
    started = time.perf_counter()
    while not times or len(next(iter(times.values()))) < 5 or time.perf_counter() - started < seconds * len(work):
        for name, stages in work.items():
            for stage, run in stages.items():
                began = time.perf_counter()
                run()
                times.setdefault((name, stage), []).append(time.perf_counter() - began)
    out: dict[str, dict[str, float]] = {}
    for name in work:
        crop_s, decode_s = (float(np.median(times[name, s])) for s in ("crop", "decode"))
        out[name] = {
            "crop_ms_per_request": round(crop_s * 1000 / len(photos), 3),
            "decode_ms_per_request": round(decode_s * 1000 / len(photos), 3),
            "crop_ms_per_person": round(crop_s * 1000 / persons, 3),
            "decode_ms_per_person": round(decode_s * 1000 / persons, 3),
        }
    return out


def _rows(boxes: list[list[float]]) -> np.ndarray:
    rows = parse_boxes(boxes)
    assert rows is not None
    return rows


def markdown(costs: dict[str, dict[str, float]], persons_per_request: float) -> str:
    lines = [f"Pose codec cost by test-time pipeline (flip test, {persons_per_request:.1f} persons per request; "
             "median ms):", "",
             "| pipeline | crop / request | decode / request | crop / person | decode / person |",
             "|---|---:|---:|---:|---:|"]
    for name, c in costs.items():
        lines.append(f"| {name} | {c['crop_ms_per_request']} | {c['decode_ms_per_request']} | "
                     f"{c['crop_ms_per_person']} | {c['decode_ms_per_person']} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.bench.decode_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--people", type=Path, default=DEFAULT_PEOPLE_DIR, help="photos + boxes.json")
    parser.add_argument("--seconds", type=float, default=1.0, help="timing per pipeline and stage")
    args = parser.parse_args(argv)
    backend = OrtBackend(args.model, provider="cpu")
    card, _ = read_card(args.model, backend)
    _, multi = load_photos(args.people)
    costs = decode_costs(PoseCodec(card), backend.infer, multi, args.seconds)
    print(markdown(costs, sum(len(p.boxes) for p in multi) / len(multi)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
