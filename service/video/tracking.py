"""Track IDs for the people of consecutive frames: greedy association by OKS (or box IoU), with a
constant-velocity prediction for people who move or were missed for a few frames.

MMPose's inferencer tracks the same way (`_track_by_oks` / `_track_by_iou`: each person takes the previous
person of highest similarity above a threshold, else a new ID). Here the pairs are matched best-first over the
whole frame rather than person by person in list order, so the outcome does not depend on the detector's
ordering; and a track survives `max_missing` frames without a match (mmdeploy's PoseTracker: track_max_missing
10) so a person hidden briefly keeps their ID. IDs count up from 1 and are never reused within one tracker.

Similarity is OKS (COCO's keypoint similarity, the scale being the mean box area) when at least
`MIN_SHARED_JOINTS` joints are confident in both poses; otherwise box IoU, so untrained models and people seen
from afar still track.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from posecore.coco import OKS_SIGMAS

KEYPOINT_THRESHOLD = 0.2  # the official visibility threshold: joints below it do not count in OKS
MIN_SHARED_JOINTS = 3


@dataclass
class Track:
    track_id: int
    box: np.ndarray  # (4,) x, y, w, h of its last match
    keypoints: np.ndarray  # (K, 3) of its last match
    last_step: int
    box_velocity: np.ndarray  # (4,) per step
    keypoint_velocity: np.ndarray  # (K, 2) per step
    age: int = 1  # matches so far

    def predicted(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        gap = step - self.last_step
        box = self.box + self.box_velocity * gap
        box[2:] = np.maximum(box[2:], 1e-3)
        keypoints = self.keypoints.copy()
        keypoints[:, :2] += self.keypoint_velocity * gap
        return box, keypoints


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two x, y, w, h boxes."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


def keypoint_oks(a: np.ndarray, b: np.ndarray, area: float, sigmas: np.ndarray) -> float | None:
    """COCO OKS of two (K, 3) poses over the joints confident in both; None when too few are."""
    shared = (a[:, 2] > KEYPOINT_THRESHOLD) & (b[:, 2] > KEYPOINT_THRESHOLD)
    if shared.sum() < MIN_SHARED_JOINTS or area <= 0:
        return None
    d2 = ((a[shared, :2] - b[shared, :2]) ** 2).sum(axis=1)
    variances = (2 * sigmas[shared]) ** 2
    return float(np.exp(-d2 / (2 * area * variances)).mean())


class PoseTracker:
    """Assigns track IDs frame by frame. Pure: no I/O, no clock; `step` is the processed frame's position."""

    def __init__(self, match_threshold: float = 0.3, max_missing: int = 10,
                 sigmas: Sequence[float] = OKS_SIGMAS, velocity_weight: float = 0.5, motion: bool = True) -> None:
        self.match_threshold = match_threshold
        self.max_missing = max_missing
        self.sigmas = np.asarray(sigmas, dtype=np.float64)
        self.velocity_weight = velocity_weight  # new velocity = w * observed + (1 - w) * previous: damped noise
        self.motion = motion  # False: match against the last position as it was (mmpose's plain OKS/IoU tracking)
        self.tracks: list[Track] = []
        self.next_id = 1

    @property
    def started(self) -> int:
        """How many tracks (distinct IDs) this tracker has started."""
        return self.next_id - 1

    def similarity(self, track: Track, step: int, box: np.ndarray, keypoints: np.ndarray) -> float:
        pred_box, pred_keypoints = track.predicted(step)
        area = float((pred_box[2] * pred_box[3] + box[2] * box[3]) / 2)
        oks = keypoint_oks(pred_keypoints, keypoints, area, self.sigmas)
        return box_iou(pred_box, box) if oks is None else oks

    def update(self, step: int, boxes: np.ndarray, keypoints: np.ndarray) -> list[int]:
        """The people of frame `step` (boxes (N, 4) xywh, keypoints (N, K, 3)) -> their track IDs, in order."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        keypoints = np.asarray(keypoints, dtype=np.float64)
        pairs = []
        for t, track in enumerate(self.tracks):
            for d in range(len(boxes)):
                score = self.similarity(track, step, boxes[d], keypoints[d])
                if score >= self.match_threshold:
                    pairs.append((score, t, d))
        pairs.sort(key=lambda p: (-p[0], p[1], p[2]))  # best first; ties in a fixed order
        ids: list[int | None] = [None] * len(boxes)
        taken: set[int] = set()
        for _, t, d in pairs:
            if t in taken or ids[d] is not None:
                continue
            taken.add(t)
            ids[d] = self._follow(self.tracks[t], step, boxes[d], keypoints[d])
        for d in range(len(boxes)):
            if ids[d] is None:
                ids[d] = self._start(step, boxes[d], keypoints[d])
        self.tracks = [tr for tr in self.tracks if step - tr.last_step <= self.max_missing]
        return [i for i in ids if i is not None]

    def live_ids(self) -> set[int]:
        return {track.track_id for track in self.tracks}

    def _follow(self, track: Track, step: int, box: np.ndarray, keypoints: np.ndarray) -> int:
        gap = max(1, step - track.last_step)
        # the first observed motion is all there is, so it is taken whole
        w = (self.velocity_weight if track.age > 1 else 1.0) if self.motion else 0.0
        track.box_velocity = w * (box - track.box) / gap + (1 - w) * track.box_velocity
        track.keypoint_velocity = w * (keypoints[:, :2] - track.keypoints[:, :2]) / gap + \
            (1 - w) * track.keypoint_velocity
        track.box, track.keypoints, track.last_step = box.copy(), keypoints.copy(), step
        track.age += 1
        return track.track_id

    def _start(self, step: int, box: np.ndarray, keypoints: np.ndarray) -> int:
        track = Track(self.next_id, box.copy(), keypoints.copy(), step, np.zeros(4),
                      np.zeros((len(keypoints), 2)))
        self.next_id += 1
        self.tracks.append(track)
        return track.track_id
