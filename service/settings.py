"""Every knob and limit of the service, in one place. Each field is also an environment variable
`POSE_<FIELD>` (e.g. POSE_MODEL_PATH, POSE_MAX_BATCH_SIZE); the README's settings table lists them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from posecore.contract import DEFAULT_MAX_BOXES

DEFAULT_QUEUE_CROPS = 64  # k8s/base and the alert rules' thresholds assume it


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POSE_", protected_namespaces=())

    # model and runtime
    model_path: Path = Field(Path("models/hrnet_w32_256x192.onnx"), description="ONNX file to serve.")
    detector_path: Path | None = Field(
        None, description="Person detector ONNX (YOLOX or mmdeploy end2end; its card NAME.json beside it). With it, "
        "a request without boxes finds the people first; without it, the whole image is one person."
    )
    detector_score_threshold: float | None = Field(
        None, ge=0, le=1, description="Detector score threshold (objectness x class probability); default: the "
        "detector card's, 0.3."
    )
    provider: Literal["auto", "cpu", "cuda", "tensorrt"] = Field(
        "auto", description="Execution provider: auto picks CUDA when onnxruntime-gpu has it, else CPU; tensorrt "
        "must be asked for."
    )
    allow_cpu_fallback: bool = Field(
        False, description="Report ready even when the requested GPU provider did not load."
    )
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads (0: all cores).")
    trt_cache_dir: Path | None = Field(None, description="TensorRT engine cache directory.")
    trt_fp16: bool = Field(False, description="Let TensorRT build FP16 engines.")
    ort_spin: bool = Field(True, description="Let ONNX Runtime's CPU threads spin between ops (lower latency; "
                           "off leaves more CPU to request preprocessing).")

    # pipeline
    flip_test: bool = Field(False, description="Default for the flip query parameter (2x compute, ~+1 AP).")
    max_batch_size: int = Field(8, ge=1, description="Most crops in one inference batch.")
    max_wait_ms: float = Field(2.0, ge=0, description="How long a batch waits for more crops.")
    max_queue_crops: int | None = Field(None, ge=1, description="Committed crops (reserved, queued, running) "
                                        "before 429. Unset: 64, or with a person detector room for 2 bare photos "
                                        "(each reserves POSE_MAX_BOXES x 2 with flip until its people are found).")

    def queue_crops(self, detector: bool) -> int:
        """The crop admission limit in force: the setting, or its default for this deployment."""
        if self.max_queue_crops is not None:
            return self.max_queue_crops
        return max(DEFAULT_QUEUE_CROPS, 2 * self.max_boxes * 2) if detector else DEFAULT_QUEUE_CROPS
    request_timeout_s: float = Field(30.0, gt=0, description="Deadline of one call (all its images), every stage.")

    # limits
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1, description="Largest accepted image file.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest accepted width x height.")
    max_boxes: int = Field(DEFAULT_MAX_BOXES, ge=1, description="Most person boxes per image.")
    max_inflight_pixels: int = Field(
        120_000_000, ge=1, description="Decoded image pixels held at once across all requests (each costs about 6 "
        "bytes while decoding); beyond it new requests get 429. An idle service admits any one image."
    )
    max_batch_items: int = Field(32, ge=1, description="Most images in one /v1/pose/batch call.")
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Largest accepted request body.")

    # video (POST /v1/pose/video, /v1/pose/video/render) and live streams (WS /v1/pose/stream)
    max_video_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Largest accepted video file (streamed to a "
                                 "temporary file; POSE_MAX_BODY_BYTES caps it too).")
    max_video_frames: int = Field(3000, ge=1, description="Most frames in one video; a longer one is refused whole.")
    max_video_pixels: int = Field(1920 * 1080, ge=1, description="Largest accepted width x height of a video frame.")
    max_video_decode_s: float = Field(60.0, gt=0, description="Wall-clock budget for decoding one video.")
    video_timeout_s: float = Field(600.0, gt=0, description="Deadline for one whole video call.")
    video_frames_in_flight: int = Field(4, ge=1, description="Frames of one video being estimated at once (so "
                                        "videos share the crop batcher with images instead of flooding it).")
    max_concurrent_videos: int = Field(4, ge=1, description="Video calls and live streams served at once; beyond "
                                       "it 429.")
    stream_queue_frames: int = Field(2, ge=1, description="Frames a live stream holds waiting; a newer frame "
                                     "pushes out the oldest (counted as dropped).")

    # access and hygiene
    api_keys: str = Field("", description="Comma-separated API keys; empty disables auth.")
    api_keys_file: Path | None = Field(None, description="File with one API key per line.")
    auth_probes: bool = Field(False, description="Also require the key on /livez, /readyz, /metrics.")
    cors_origins: str = Field("", description="Comma-separated allowed CORS origins; empty: CORS off.")
    log_level: str = Field("info", description="Log level.")

    # server
    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8000, description="Bind port.")
    max_header_bytes: int = Field(64 * 1024, ge=1024, description="Largest request line plus headers; beyond it "
                                  "431 and the connection is closed.")
    header_timeout_s: float = Field(10.0, gt=0, description="A request's line and headers must arrive within this "
                                    "long of its first byte (of the connection's opening for the first one): 408.")
    body_timeout_s: float = Field(10.0, gt=0, description="Body progress window: each window must bring "
                                  "POSE_BODY_MIN_BYTES_PER_S x this many bytes (at least one), else 408 and close.")
    body_min_bytes_per_s: float = Field(1024.0, ge=0, description="Slowest accepted body upload rate, averaged over "
                                        "each POSE_BODY_TIMEOUT_S window.")
    keep_alive_timeout_s: int = Field(5, ge=1, description="An idle keep-alive connection is closed after this "
                                        "long; behind a proxy, set it above the proxy's own idle timeout.")
    shutdown_delay_s: float = Field(
        5.0, ge=0, description="On SIGTERM: report unready (503 on /readyz) and keep serving this long, so load "
        "balancers stop sending, before the server stops accepting and drains in-flight requests."
    )
    shutdown_timeout_s: float = Field(
        30.0, gt=0, description="On SIGTERM, after the delay: how long in-flight requests may take to finish."
    )
