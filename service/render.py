"""Skeletons drawn over the photo, for /v1/pose/render and for people who want to see a result."""

from __future__ import annotations

import cv2
import numpy as np

KEYPOINT_THRESHOLD = 0.2  # the official in-visibility threshold; lower-scored joints are not drawn
LIMB_COLOR = (0, 200, 255)
JOINT_COLOR = (255, 60, 60)
BOX_COLOR = (60, 220, 60)


def draw_poses(image_rgb: np.ndarray, persons, skeleton, threshold: float = KEYPOINT_THRESHOLD) -> np.ndarray:
    """A copy of the RGB image with each person's box, limbs and joints drawn."""
    canvas = np.ascontiguousarray(image_rgb).copy()
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    for person in persons:
        x, y, w, h = (round(v) for v in person.box)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), BOX_COLOR, thickness)
        points = person.keypoints
        for a, b in skeleton:
            if points[a, 2] > threshold and points[b, 2] > threshold:
                cv2.line(canvas, _pt(points[a]), _pt(points[b]), LIMB_COLOR, thickness + 1, cv2.LINE_AA)
        for point in points:
            if point[2] > threshold:
                cv2.circle(canvas, _pt(point), thickness + 2, JOINT_COLOR, -1, cv2.LINE_AA)
    return canvas


def _pt(point: np.ndarray) -> tuple[int, int]:
    return round(float(point[0])), round(float(point[1]))
