"""Typed Python client for the HRNet pose service (README "Calling it from other services").

    from pose_client import PoseClient, PoseOptions

    with PoseClient("http://127.0.0.1:8000", options=PoseOptions(flip=True)) as client:
        result = client.pose("photo.jpg", boxes=[[10, 20, 100, 200]])
        no_flip = client.pose("photo.jpg", options=PoseOptions(flip=False))
        nose = result.persons[0].keypoints[0]
"""

from pose_client.aio import AsyncPoseClient
from pose_client.client import PoseClient
from pose_client.errors import (
    DeadlineExceededError,
    InvalidRequestError,
    InvalidResponseError,
    OverloadedError,
    PoseAPIError,
    PoseClientError,
    PoseConnectionError,
    PoseTimeoutError,
    ServerError,
    UnauthorizedError,
    UnavailableError,
)
from pose_client.models import ImageSize, Keypoint, ModelInfo, Person, PoseResult, RenderedImage
from pose_client.options import PoseOptions
from pose_client.retry import RetryPolicy
from pose_client.video import TrackedPerson, VideoFrame, VideoSummary

__all__ = [
    "AsyncPoseClient",
    "DeadlineExceededError",
    "ImageSize",
    "InvalidRequestError",
    "InvalidResponseError",
    "Keypoint",
    "ModelInfo",
    "OverloadedError",
    "Person",
    "PoseAPIError",
    "PoseClient",
    "PoseClientError",
    "PoseConnectionError",
    "PoseOptions",
    "PoseResult",
    "PoseTimeoutError",
    "RenderedImage",
    "RetryPolicy",
    "ServerError",
    "TrackedPerson",
    "UnauthorizedError",
    "UnavailableError",
    "VideoFrame",
    "VideoSummary",
]
__version__ = "0.1.0"
