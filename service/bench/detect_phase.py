"""The bare-photo phase of the bench: a service with a person detector receives multi-person photos WITHOUT boxes,
so every request pays the detect stage and then poses whoever the detector found. Measured with 1 and N clients in
the same interleaved rounds as the other phases.

The load client never parses responses (it must cost next to nothing), so the persons found are read from the
service's own `pose_persons_per_image` histogram, like the per-stage times from `pose_stage_duration_seconds`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.bench.http_load import http_load, stage_means_ms, stage_totals
from service.bench.stats import Phase
from service.bench.workload import Photo


def detector_env(detector: Path, score_threshold: float | None = None) -> dict[str, str]:
    """The service settings that turn the detector on (threshold None: the detector card's)."""
    env = {"POSE_DETECTOR_PATH": str(detector)}
    if score_threshold is not None:
        env["POSE_DETECTOR_SCORE_THRESHOLD"] = str(score_threshold)
    return env


def persons_totals(url: str) -> tuple[float, float]:
    """(persons, images) answered so far: the sum and count of the service's `pose_persons_per_image`."""
    totals = {"_sum": 0.0, "_count": 0.0}
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        for suffix in totals:
            if line.startswith(f"pose_persons_per_image{suffix} "):
                totals[suffix] = float(line.rsplit(" ", 1)[1])
    return totals["_sum"], totals["_count"]


@dataclass
class BarePhotoPhase:
    """Bare multi-person photos to the detector-enabled service at `url`, pooled over `run_round` calls."""

    url: str
    photos: list[Photo]
    clients: int
    seconds: float
    phases: dict[str, Phase] = field(default_factory=dict)
    stage_sums: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # key -> stage -> [s, requests]
    persons: dict[str, list[float]] = field(default_factory=dict)  # key -> [persons, images]

    def keys(self) -> dict[str, tuple[str, int]]:
        n = self.clients
        return {"bare_photo_1c": ("(f) service + detector, 1 client, bare multi-person photos", 1),
                "bare_photo": (f"(f) service + detector, {n} clients, bare multi-person photos", n)}

    def run_round(self) -> None:
        for key, (name, clients) in self.keys().items():
            stages0, persons0 = stage_totals(self.url), persons_totals(self.url)
            phase = http_load(self.url, name, self.photos, clients, self.seconds, with_boxes=False)
            stages1, persons1 = stage_totals(self.url), persons_totals(self.url)
            self.phases[key] = self.phases[key].add(phase) if key in self.phases else phase
            sums = self.stage_sums.setdefault(key, {})
            for stage, (seconds, count) in stages1.items():
                seconds0, count0 = stages0.get(stage, (0.0, 0.0))
                total = sums.setdefault(stage, [0.0, 0.0])
                total[0] += seconds - seconds0
                total[1] += count - count0
            found = self.persons.setdefault(key, [0.0, 0.0])
            found[0] += persons1[0] - persons0[0]
            found[1] += persons1[1] - persons0[1]

    def persons_per_image(self, key: str) -> float:
        """Mean persons the detector found per photo (the warm-up requests included: same photos)."""
        persons, images = self.persons.get(key, [0.0, 0.0])
        return persons / images if images else float("nan")

    def finished_phases(self) -> dict[str, Phase]:
        """The phases with their crops filled in: each measured request posed the mean number of persons found."""
        for key, phase in self.phases.items():
            found = self.persons_per_image(key)
            phase.crops = round(phase.requests * found) if found == found else 0
        return self.phases

    def stages_ms(self) -> dict[str, dict[str, float]]:
        return {key: stage_means_ms({}, {s: (v[0], v[1]) for s, v in sums.items()})
                for key, sums in self.stage_sums.items()}

    def summary(self) -> dict[str, float]:
        annotated = sum(len(p.boxes) for p in self.photos) / len(self.photos)
        return {"annotated_persons_per_image": round(annotated, 2)} | {
            f"{key}_persons_per_image": round(self.persons_per_image(key), 2) for key in self.phases}


def describe(summary: dict[str, float], detector: Path, score_threshold: float | None) -> str:
    """One line on what the bare-photo phase's detector found, against the photos' annotated persons."""
    threshold = "the card's" if score_threshold is None else str(score_threshold)
    found = ", ".join(f"{k.removesuffix('_persons_per_image')} {v}" for k, v in summary.items()
                      if k != "annotated_persons_per_image")
    return (f"Bare-photo phase (f): detector `{detector.name}` (score threshold {threshold}); persons found per "
            f"photo: {found}; annotated in those photos: {summary['annotated_persons_per_image']}. Its crops/s "
            f"count the persons found, so a detector that finds nobody measures the detect stage alone.")
