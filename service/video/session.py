"""One video's (or one live stream's) state: the tracker, the smoothers, and the boxes carried between detector
runs. Frames are estimated statelessly (PoseService.estimate_frame, the images' batcher); `follow` then applies
the state in frame order."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import numpy as np

from posecore.codec import PersonPose
from posecore.errors import PoseError
from service.serving import PoseResult, PoseService
from service.video.options import VideoOptions
from service.video.smoothing import PoseSmoother
from service.video.tracking import KEYPOINT_THRESHOLD, PoseTracker

BOX_EXPANSION = 1.25  # rtmlib's pose_to_bbox: the keypoints' extent grown by a quarter for the next frame
OVERLOAD_BACKOFF_S = 0.01


@dataclass
class TrackedPerson:
    track_id: int
    person: PersonPose  # keypoints smoothed when asked for


def boxes_from_keypoints(persons: list[PersonPose], image_wh: tuple[int, int]) -> np.ndarray | None:
    """(N, 5) x, y, w, h, score around each person's confident keypoints (all of them if fewer than two are),
    grown by BOX_EXPANSION about their centre and clipped to the image; None when nobody was found."""
    rows = []
    width, height = image_wh
    for person in persons:
        points = person.keypoints
        confident = points[points[:, 2] > KEYPOINT_THRESHOLD]
        use = confident if len(confident) >= 2 else points
        x1, y1 = use[:, 0].min(), use[:, 1].min()
        x2, y2 = use[:, 0].max(), use[:, 1].max()
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half_w, half_h = max((x2 - x1) / 2, 1.0) * BOX_EXPANSION, max((y2 - y1) / 2, 1.0) * BOX_EXPANSION
        x1, y1 = max(0.0, cx - half_w), max(0.0, cy - half_h)
        x2, y2 = min(float(width), cx + half_w), min(float(height), cy + half_h)
        if x2 - x1 >= 1 and y2 - y1 >= 1:
            rows.append([x1, y1, x2 - x1, y2 - y1, person.box_score])
    return np.asarray(rows, dtype=np.float64) if rows else None


class VideoSession:
    def __init__(self, poser: PoseService, options: VideoOptions) -> None:
        self.poser = poser
        self.options = options
        # a decoding the model card does not allow is refused here, before any frame (PoseError invalid_request)
        self.decoding = poser.codec.pipeline(options.decode).decoding
        self.tracker = PoseTracker(options.track_threshold, options.track_max_missing)
        self.smoother = PoseSmoother(options.one_euro) if options.smooth else None
        self.steps = 0  # frames followed so far
        self._carried: np.ndarray | None = None

    def carries_boxes(self, step: int) -> bool:
        """Whether frame `step` takes its boxes from frame step - 1's keypoints (so must wait for it)."""
        return (self.poser.detection is not None and self.options.detect_every > 1
                and step % self.options.detect_every != 0)

    async def estimate(self, image: np.ndarray, step: int, deadline: float, patient: bool) -> PoseResult:
        """Frame `step`'s persons. `patient`: an overloaded batcher is waited for (until the deadline) rather than
        refused - a running video yields to images instead of failing mid-answer."""
        boxes = self._carried if self.carries_boxes(step) else None
        while True:
            try:
                return await self.poser.estimate_frame(image, boxes, self.options.flip, deadline, self.options.decode)
            except PoseError as error:
                if error.code != "overloaded" or not patient:
                    raise
            if time.monotonic() + OVERLOAD_BACKOFF_S > deadline:
                raise PoseError("deadline_exceeded", "the video's deadline passed while the service was busy",
                                retry_after_s=self.poser.batcher.retry_after_s)
            await asyncio.sleep(OVERLOAD_BACKOFF_S)

    def follow(self, result: PoseResult, time_s: float) -> list[TrackedPerson]:
        """Track IDs (and smoothed keypoints) for the next frame's result; call in frame order."""
        step = self.steps
        self.steps += 1
        persons = result.persons
        boxes = np.array([p.box for p in persons], dtype=np.float64).reshape(-1, 4)
        keypoints = np.array([p.keypoints for p in persons], dtype=np.float64)
        ids = self.tracker.update(step, boxes, keypoints)
        self._carried = boxes_from_keypoints(persons, result.image_wh)
        tracked = []
        for track_id, person in zip(ids, persons, strict=True):
            if self.smoother is not None:
                smoothed = self.smoother.smooth(track_id, time_s, person.keypoints)
                person = PersonPose(person.box, person.box_score, person.score, smoothed)
            tracked.append(TrackedPerson(track_id, person))
        if self.smoother is not None:
            self.smoother.forget(self.tracker.live_ids())
        return tracked

    @property
    def tracks(self) -> int:
        return self.tracker.started
