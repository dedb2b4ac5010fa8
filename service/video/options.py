"""The options of a video call or a live stream, read from query parameters (and, for multipart, form fields)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from posecore.codecs.spec import DECODINGS
from posecore.contract import PoseOptions
from posecore.errors import PoseError
from service.request import bool_from_text, decoding
from service.video.smoothing import OneEuroParams


@dataclass(frozen=True)
class VideoOptions:
    flip: bool
    smooth: bool = True
    fps: float | None = None  # sample the video down to at most this many frames per second
    detect_every: int = 1  # run the detector on every k-th frame; between, boxes come from the last keypoints
    one_euro: OneEuroParams = field(default_factory=OneEuroParams)
    track_threshold: float = 0.3  # OKS (IoU) a person must reach to continue a track: mmpose's tracking_thr
    track_max_missing: int = 10  # frames a track survives unmatched: mmdeploy's track_max_missing
    decode: str | None = None  # the test-time pipeline (posecore.codecs.spec); None: the model card's


def _number(name: str, text: str, low: float, *, above: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        raise PoseError("invalid_request", f"'{name}' must be a number, not {text[:20]!r}") from None
    if not math.isfinite(value) or value < low or (above and value == low):
        raise PoseError("invalid_request", f"'{name}' must be a finite number {'>' if above else '>='} {low:g}")
    return value


def _count(name: str, text: str, low: int = 1) -> int:
    if not text.strip().isdigit() or int(text) < low or int(text) > 10_000:
        raise PoseError("invalid_request", f"'{name}' must be a whole number from {low} to 10000, not {text[:20]!r}")
    return int(text)


def _fraction(name: str, text: str) -> float:
    value = _number(name, text, 0.0, above=True)
    if value > 1:
        raise PoseError("invalid_request", f"'{name}' must be in (0, 1]")
    return value


OPTIONS: dict[str, tuple[Callable[[str, str], Any], str]] = {
    "flip": (bool_from_text, "Flip test (2x compute); default from POSE_FLIP_TEST."),
    "smooth": (bool_from_text, "One-Euro smoothing of the keypoints per track (default true); false: raw "
                               "keypoints, equal to /v1/pose on each frame."),
    "fps": (lambda n, t: _number(n, t, 0.0, above=True), "Sample the video down to at most this many frames per "
            "second (by presentation time)."),
    "detect_every": (_count, "Run the person detector on every k-th frame (default 1); between, each person's box "
                     "comes from their last keypoints (rtmlib's det_frequency)."),
    "smooth_min_cutoff": (lambda n, t: _number(n, t, 0.0, above=True), "One-Euro cutoff at rest, Hz (default 1.0)."),
    "smooth_beta": (lambda n, t: _number(n, t, 0.0), "One-Euro speed coefficient, per pixel/s (default 0.007)."),
    "smooth_d_cutoff": (lambda n, t: _number(n, t, 0.0, above=True), "One-Euro cutoff of the speed, Hz "
                        "(default 1.0)."),
    "track_threshold": (_fraction, "Similarity (OKS, or box IoU) a person needs to keep a track's ID (default 0.3)."),
    "track_max_missing": (lambda n, t: _count(n, t, 0), "Frames a person may go unseen and keep their ID "
                          "(default 10)."),
    "decode": (decoding, PoseOptions.model_fields["decode"].description or ""),
}


def read_options(sources: list[Mapping[str, Any]], default_flip: bool) -> VideoOptions:
    """Later sources win (query parameters, then form fields). Unknown names are ignored like /v1/pose does."""
    values: dict[str, Any] = {}
    for source in sources:
        for name, (parse, _) in OPTIONS.items():
            raw = source.get(name)
            if raw is None or raw == "":
                continue
            if not isinstance(raw, str):
                raise PoseError("invalid_request", f"field '{name}' must be text, not a file")
            values[name] = parse(name, raw)
    defaults = OneEuroParams()
    return VideoOptions(
        flip=values.get("flip", default_flip),
        smooth=values.get("smooth", True),
        fps=values.get("fps"),
        detect_every=values.get("detect_every", 1),
        one_euro=OneEuroParams(values.get("smooth_min_cutoff", defaults.min_cutoff),
                               values.get("smooth_beta", defaults.beta),
                               values.get("smooth_d_cutoff", defaults.d_cutoff)),
        track_threshold=values.get("track_threshold", 0.3),
        track_max_missing=values.get("track_max_missing", 10),
        decode=values.get("decode"),
    )


def query_parameters() -> list[dict[str, Any]]:
    """OpenAPI parameters of the options."""
    kinds = {"flip": "boolean", "smooth": "boolean", "detect_every": "integer", "track_max_missing": "integer"}
    schemas = {name: {"type": kind} for name, kind in kinds.items()} | {"decode": {"type": "string",
                                                                                  "enum": list(DECODINGS)}}
    return [{"name": name, "in": "query", "required": False, "schema": schemas.get(name, {"type": "number"}),
             "description": doc} for name, (_, doc) in OPTIONS.items()]
