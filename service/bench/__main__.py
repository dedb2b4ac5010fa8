"""`python -m service.bench --model models/hrnet_w32_256x192.onnx`: one run, every number and ratio.

(a) ceiling: raw ONNX Runtime on ready-made crops at its best batch size (in this process, server stopped)
(b) the service over HTTP on 127.0.0.1: 1 client single-person; N clients single-person; N clients multi-person
(c) PyTorch eager, one request and one crop at a time (the official style)
(d) ONNX Runtime, one request and one crop at a time, no batching
(e) with --int8-model: the INT8 model's ceiling and a second service on it, N clients single- and multi-person,
    in the same rounds, as ratios to the fp32 service; with --int8-pair FP32 INT8 (repeatable), more float32 /
    INT8 model pairs timed raw in the same rounds (batch 4), each with its card's agreement, as one table
(f) with --detector (an ONNX file, or a YOLOX arch such as yolox_s: exported with seeded random weights into a
    temporary folder): a service with that person detector, 1 and N clients sending multi-person photos without
    boxes (the detect stage, then every person found), in the same rounds; and the detector's ONNX Runtime call
    alone, ms per photo at batch 1 and at batch N (its dynamic batch axis)
(g) videos: 1 and N concurrent clients posting an H.264 clip to /v1/pose/video (frames/s, vs (b)'s crops/s)
Writes bench.json and bench.md to --out and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import onnxruntime

from posecore.backend import OrtBackend
from posecore.contract import Stage
from posecore.modelcard import read_card
from service.bench import baselines
from service.bench.detect_phase import BarePhotoPhase, describe, detector_env
from service.bench.detector_model import detector_infer_ms, resolve_bench_detector
from service.bench.http_load import http_load, peak_rss_bytes, running_service, stage_means_ms, stage_totals
from service.bench.int8 import Int8Pair, describe_int8, int8_ratios, int8_verdicts, pair_table
from service.bench.stats import Phase
from service.bench.video_phase import VideoPhase, make_clip
from service.bench.workload import DEFAULT_PEOPLE_DIR, load_photos

STAGE_ORDER = tuple(Stage)
TARGETS = {  # issue 4, 2-core CPU, W32 256x192
    "service_over_ceiling": 0.95,
    "service_over_torch_eager": 1.7,
    "single_client_p50_over_model_ms": 5.0,
    "peak_rss_gb": 1.5,
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m service.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/hrnet_w32_256x192.onnx"))
    parser.add_argument("--people", type=Path, default=DEFAULT_PEOPLE_DIR, help="photos + boxes.json")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of every phase")
    parser.add_argument("--slice-seconds", type=float, default=4.0, help="length of one phase in one round")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument("--skip-torch", action="store_true", help="skip the PyTorch eager baseline")
    parser.add_argument("--int8-model", type=Path, default=None, metavar="PATH",
                        help="also measure this INT8 model (python -m model_export quantize) against --model")
    parser.add_argument("--int8-pair", type=Path, nargs=2, action="append", default=[], metavar=("FP32", "INT8"),
                        help="also time this float32 model and its INT8 derivative raw, in the same rounds "
                             "(repeatable; e.g. the MobileNetV2 test model and its INT8)")
    parser.add_argument("--detector", default=None, metavar="PATH_OR_ARCH",
                        help="also measure bare photos (no boxes) on a service with this person detector ONNX; a "
                             "YOLOX arch (e.g. yolox_s) exports one with seeded random weights into a temporary "
                             "folder first")
    parser.add_argument("--detector-score-threshold", type=float, default=None,
                        help="the bare-photo service's POSE_DETECTOR_SCORE_THRESHOLD (default: the detector card's)")
    parser.add_argument("--skip-video", action="store_true", help="skip the video phase (g)")
    return parser.parse_args(argv)


def measure(args) -> dict:
    """Every phase runs a short slice in each of `--rounds` interleaved rounds and is pooled across them, so
    drift on a shared machine hits the service and its baselines alike. The server idles (no CPU) while the
    in-process baselines run."""
    single, multi = load_photos(args.people)
    backend = OrtBackend(args.model, provider="cpu", max_batch=args.max_batch_size)
    card, _ = read_card(args.model, backend)
    best, sweep = baselines.best_batch_size(backend, budget_s=4 * args.slice_seconds)
    ort_one = baselines.ort_per_crop_infer(args.model)
    eager = not args.skip_torch
    int8 = None
    if args.int8_model is not None:
        int8_backend = OrtBackend(args.int8_model, provider="cpu", max_batch=args.max_batch_size)
        int8_best, int8_sweep = baselines.best_batch_size(int8_backend, budget_s=4 * args.slice_seconds)
        int8 = (int8_backend, int8_best, int8_sweep, read_card(args.int8_model, int8_backend)[0])
    pairs = [Int8Pair.open(f"pair{i}", fp32, int8_path) for i, (fp32, int8_path) in enumerate(args.int8_pair)]
    if int8:
        pairs.insert(0, Int8Pair.open("pair_main", args.model, args.int8_model))
    n, t = args.clients, args.slice_seconds
    env = {"POSE_MAX_BATCH_SIZE": str(args.max_batch_size), "POSE_MAX_QUEUE_CROPS": "256"}
    phases: dict[str, Phase] = {}
    stage_sums: dict[str, dict] = {}  # per service phase: stage -> [seconds, requests], over all rounds

    def run(key: str, phase: Phase) -> None:
        phases[key] = phases[key].add(phase) if key in phases else phase

    def run_service(key: str, name: str, photos, clients: int, on: str | None = None) -> None:
        target = on or url
        before = stage_totals(target)
        run(key, http_load(target, name, photos, clients, t))
        after = stage_totals(target)
        sums = stage_sums.setdefault(key, {})
        for stage, (seconds, count) in after.items():
            seconds0, count0 = before.get(stage, (0.0, 0.0))
            total = sums.setdefault(stage, [0.0, 0.0])
            total[0] += seconds - seconds0
            total[1] += count - count0

    with ExitStack() as services:
        url, pid = services.enter_context(running_service(args.model, env))
        int8_url = services.enter_context(running_service(args.int8_model, env))[0] if int8 else None
        bare = None
        if args.detector is not None:
            detect_url = services.enter_context(running_service(
                args.model, env | detector_env(args.detector, args.detector_score_threshold)))[0]
            bare = BarePhotoPhase(detect_url, multi, n, t)
        videos = None if args.skip_video else VideoPhase(url, make_clip(single[0]), n, t)
        for _ in range(args.rounds):
            run("ceiling", baselines.model_only(backend, best, t))
            run("model_batch1", baselines.model_only(backend, 1, t))
            run("ort_per_crop_single", baselines.per_crop_pipeline("(d) ORT per crop, single-person", single, card,
                                                                   ort_one, t))
            run("ort_per_crop_multi", baselines.per_crop_pipeline("(d) ORT per crop, multi-person", multi, card,
                                                                  ort_one, t))
            eager_runs = baselines.eager_phases(card, args.people, {
                "torch_per_crop_single": ("(c) PyTorch eager per crop, single-person", single),
                "torch_per_crop_multi": ("(c) PyTorch eager per crop, multi-person", multi)}, t) if eager else None
            eager = eager_runs is not None  # without torch here: skipped from the first round on
            for key, phase in (eager_runs or {}).items():
                run(key, phase)
            run_service("service_1c_single", "(b) service, 1 client, single-person", single, 1)
            run_service("service_single", f"(b) service, {n} clients, single-person", single, n)
            run_service("service_multi", f"(b) service, {n} clients, multi-person", multi, n)
            if int8:
                run("int8_ceiling", baselines.model_only(int8[0], int8[1], t))
                run_service("int8_service_single", f"(e) INT8 service, {n} clients, single-person", single, n, int8_url)
                run_service("int8_service_multi", f"(e) INT8 service, {n} clients, multi-person", multi, n, int8_url)
            for pair in pairs:
                for key, phase in pair.phases(t / 2).items():
                    run(key, phase)
            if bare is not None:
                bare.run_round()
            if videos is not None:
                videos.run_round()
        rss = peak_rss_bytes(pid)
    stages = {key: stage_means_ms({}, {s: tuple(v) for s, v in sums.items()}) for key, sums in stage_sums.items()}
    if bare is not None:
        phases |= bare.finished_phases()
        stages |= bare.stages_ms()
    phases["ceiling"].name = f"(a) ceiling: raw ORT, best batch size ({best})"
    phases["model_batch1"].name = "raw ORT, batch 1 (single-crop model latency)"
    for pair in pairs:
        for kind in ("fp32", "int8"):
            phases[f"{pair.key}_{kind}"].name = (f"(e) raw ORT batch {pair.batch}, "
                                                 f"{(pair.parent_card if kind == 'fp32' else pair.card).name}")
    result = {"phases": phases, "sweep": sweep, "stages_ms": stages, "peak_rss_bytes": rss, "card": card,
              "int8_pairs": pair_table(pairs, phases)}
    if int8:
        phases["int8_ceiling"].name = f"(e) INT8 ceiling: raw ORT, best batch size ({int8[1]})"
        result |= {"int8_sweep": int8[2], "int8_card": int8[3]}
    if videos is not None:
        phases |= videos.phases
        result |= {"video": videos.describe(phases["service_single"].crops_per_s),
                   "video_frames_per_s": videos.frames_per_s()}
    if bare is not None:
        summary = bare.summary()
        infer_ms = detector_infer_ms(args.detector, (1, n), t)
        alone = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in infer_ms.items())
        result |= {"bare_photo": (f"{describe(summary, args.detector, args.detector_score_threshold)} Detector "
                                  f"ONNX Runtime call alone, ms per photo: {alone}."),
                   "bare_photo_persons": summary, "detector_infer_ms_per_photo": infer_ms}
    return result


def ratios(result: dict) -> dict[str, float]:
    p = result["phases"]
    rate = {key: phase.crops_per_s for key, phase in p.items()}
    out = {
        "service_single_over_ceiling": rate["service_single"] / rate["ceiling"],
        "service_multi_over_ceiling": rate["service_multi"] / rate["ceiling"],
        "service_single_over_ort_per_crop": rate["service_single"] / rate["ort_per_crop_single"],
        "service_multi_over_ort_per_crop": rate["service_multi"] / rate["ort_per_crop_multi"],
        "single_client_p50_minus_model_ms": (p["service_1c_single"].percentile_ms(50)
                                             - p["model_batch1"].percentile_ms(50)),
    }
    if "torch_per_crop_single" in p:
        out["service_single_over_torch_eager"] = rate["service_single"] / rate["torch_per_crop_single"]
        out["service_multi_over_torch_eager"] = rate["service_multi"] / rate["torch_per_crop_multi"]
    return {k: round(v, 3) for k, v in out.items()} | int8_ratios(p)


def verdicts(r: dict[str, float], rss_gb: float, clients: int = 4) -> dict[str, bool]:
    ceiling, latency = TARGETS["service_over_ceiling"], TARGETS["single_client_p50_over_model_ms"]
    v = {
        "service >= 0.95 x ceiling (4 clients, multi-person)": r["service_multi_over_ceiling"] >= ceiling,
        "service >= 0.95 x ceiling (4 clients, single-person)": r["service_single_over_ceiling"] >= ceiling,
        "single-client p50 <= model latency + 5 ms": r["single_client_p50_minus_model_ms"] <= latency,
        "peak RSS <= 1.5 GB": rss_gb <= TARGETS["peak_rss_gb"],
    }
    if "service_single_over_torch_eager" in r:
        slowest = min(r["service_single_over_torch_eager"], r["service_multi_over_torch_eager"])
        v["service >= 1.7 x PyTorch eager"] = slowest >= TARGETS["service_over_torch_eager"]
    return v | int8_verdicts(r, clients)


def markdown(result: dict, r: dict[str, float], v: dict[str, bool], env: dict) -> str:
    lines = [f"Model `{result['card'].name}` ({result['card'].arch}, trained={result['card'].trained}) on "
             f"{env['machine']}, onnxruntime {env['onnxruntime']}, {env['date']}.", "",
             "| phase | crops/s | requests/s | p50 ms | p95 ms | p99 ms |", "|---|---:|---:|---:|---:|---:|"]
    for phase in result["phases"].values():
        s = phase.summary()
        lines.append(f"| {s['name']} | {s['crops_per_s']} | {s['requests_per_s']} | {s['p50_ms']} | {s['p95_ms']} | "
                     f"{s['p99_ms']} |")
    if "int8_card" in result:
        lines += ["", describe_int8(result["int8_card"]), "",
                  f"INT8 ceiling sweep (crops/s by batch size): {result['int8_sweep']}"]
    lines += result.get("int8_pairs", [])
    if "bare_photo" in result:
        lines += ["", result["bare_photo"]]
    if "video" in result:
        lines += ["", result["video"]]
    lines += ["", f"Ceiling sweep (crops/s by batch size): {result['sweep']}", "",
              "Where a service request's time goes (mean ms per request, by stage):", "",
              "| phase | " + " | ".join(map(str, STAGE_ORDER)) + " |", "|---|" + "---:|" * len(STAGE_ORDER)]
    for key, means in result["stages_ms"].items():
        cells = " | ".join(str(means.get(s, "")) for s in STAGE_ORDER)
        lines.append(f"| {result['phases'][key].name} | {cells} |")
    lines += ["",
              f"Service peak RSS: {result['peak_rss_bytes'] / 2**30:.2f} GB", "",
              "| ratio | value |", "|---|---:|"]
    lines += [f"| {k} | {val} |" for k, val in r.items()]
    lines += ["", "| target | met |", "|---|---|"] + [f"| {k} | {'yes' if ok else 'NO'} |" for k, ok in v.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.model.is_file():
        raise SystemExit(f"model not found: {args.model}; run `make model` first")
    if args.int8_model is not None and not args.int8_model.is_file():
        raise SystemExit(f"INT8 model not found: {args.int8_model}; make it with `python -m model_export quantize`")
    with tempfile.TemporaryDirectory(prefix="bench-detector-") as folder:
        if args.detector is not None:
            args.detector = resolve_bench_detector(args.detector, Path(folder))
        result = measure(args)
    r = ratios(result)
    v = verdicts(r, result["peak_rss_bytes"] / 2**30, args.clients)
    env = {"machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}",
           "onnxruntime": onnxruntime.__version__, "date": time.strftime("%Y-%m-%d")}
    args.out.mkdir(parents=True, exist_ok=True)
    table = markdown(result, r, v, env)
    (args.out / "bench.md").write_text(table)
    (args.out / "bench.json").write_text(json.dumps({
        "env": env, "model": result["card"].name, "trained": result["card"].trained,
        "phases": {k: p.summary() for k, p in result["phases"].items()}, "ceiling_sweep": result["sweep"],
        "stages_ms": result["stages_ms"], "peak_rss_bytes": result["peak_rss_bytes"], "ratios": r, "targets": v,
        "bare_photo_persons": result.get("bare_photo_persons"),
        "detector_infer_ms_per_photo": result.get("detector_infer_ms_per_photo"),
        "video_frames_per_s": result.get("video_frames_per_s"),
    }, indent=2))
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
