"""What one running app holds: its settings, metrics, the loaded model and the serving layer, and readiness."""

from __future__ import annotations

from dataclasses import dataclass

from posecore.backend import Backend, ProviderStatus
from posecore.modelcard import ModelCard
from service.batching import MicroBatcher
from service.metrics import Metrics
from service.serving import DetectorStage, PoseService
from service.settings import Settings


@dataclass
class LoadedModel:
    backend: Backend
    card: ModelCard
    card_found: bool
    provider_status: ProviderStatus


@dataclass
class ServiceState:
    settings: Settings
    metrics: Metrics
    model: LoadedModel | None = None
    poser: PoseService | None = None
    batcher: MicroBatcher | None = None
    detection: DetectorStage | None = None
    ready: bool = False
    videos_active: int = 0  # video calls and live streams being served (POSE_MAX_CONCURRENT_VIDEOS)
    draining: bool = False
    not_ready_reason: str = "starting: the model is not loaded yet"

    def begin_drain(self) -> None:
        """Turn unready (load balancers stop sending) while admitted work finishes."""
        self.ready = False
        self.draining = True
        self.not_ready_reason = "shutting down"
        self.metrics.ready.set(0)
