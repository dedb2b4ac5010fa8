"""The Prometheus metrics, named once. Base units, a common `pose_` prefix, small fixed label sets."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from posecore.contract import Stage

# Fine buckets for 1-100 ms work, with a tail for slow CPUs, queueing and large batches.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0,
)


class Metrics:
    """All metrics of one app instance, in their own registry so tests can build many apps."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "pose_requests", "HTTP requests by endpoint and status code.", ["endpoint", "status"], registry=r
        )
        self.request_latency = Histogram(
            "pose_request_duration_seconds", "End-to-end request latency.", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.stage_latency = Histogram(
            "pose_stage_duration_seconds", "Latency of one pipeline stage for one request.", ["stage"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.persons_per_image = Histogram(
            "pose_persons_per_image", "Person boxes per image.",
            buckets=(0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=r,
        )
        self.batch_size = Histogram(
            "pose_batch_size", "Crops per inference batch (before padding).",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=r,
        )
        self.crops = Counter("pose_crops", "Person crops run through the model.", registry=r)
        self.errors = Counter("pose_errors", "Error responses by stable error code.", ["code"], registry=r)
        self.queue_depth = Gauge("pose_queue_depth", "Crops waiting for a batch.", registry=r)
        self.inflight_crops = Gauge(
            "pose_inflight_crops", "Crops admitted and not yet answered (queued + running).", registry=r
        )
        # video calls and live streams (service/video/)
        self.video_frames = Counter("pose_video_frames", "Video and stream frames answered.", ["source"], registry=r)
        self.video_tracks = Counter("pose_video_tracks", "Track IDs started (people who appeared).", ["source"],
                                    registry=r)
        self.video_dropped_frames = Counter("pose_video_dropped_frames", "Live-stream frames dropped for a slow "
                                            "consumer.", registry=r)
        self.videos_active = Gauge("pose_videos_active", "Video calls and live streams being served.", registry=r)
        self.ready = Gauge("pose_ready", "1 when the model is loaded, warmed up and serving.", registry=r)
        self.model_info = Gauge(
            "pose_model_info", "The served model (value is always 1).",
            ["model", "arch", "trained", "provider"], registry=r,
        )

    def count_error(self, code: str) -> None:
        """A refusal or failure, by its stable code: answered by the app, by the HTTP protocol before it, or
        unanswered because the client left (client_disconnected); for a batch call, each failed item too."""
        self.errors.labels(code=code).inc()

    def observe_request(self, timings_s: Mapping[Stage, float], persons: int) -> None:
        """One answered image: each stage's latency, and how many persons it held."""
        for stage, seconds in timings_s.items():
            self.stage_latency.labels(stage=stage).observe(seconds)
        self.persons_per_image.observe(persons)

    def set_model(self, model: str, arch: str, trained: bool, provider: str) -> None:
        self.model_info.clear()
        self.model_info.labels(model=model, arch=arch, trained=str(trained).lower(), provider=provider).set(1)
