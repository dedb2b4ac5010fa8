"""The detector's input: the image resized to fit S x S and placed top-left on a grey canvas ("letterbox").

This is the preprocessing of the official YOLOX ONNX demo (yolox/data/data_augment.py `preproc`), which the
mmdeploy/rtmlib YOLOX exports share: r = min(S_h / h, S_w / w); resize to (int(w r), int(h r)) with
cv2.INTER_LINEAR; top-left on a canvas filled with 114; BGR; float32 0-255; no normalisation. Detections in
input pixels map back to the image by dividing by r (the padding is only ever right and below).
"""

from __future__ import annotations

import cv2
import numpy as np

PAD_VALUE = 114


def letterbox(image_rgb: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, float]:
    """RGB uint8 (h, w, 3) -> (float32 (3, S_h, S_w) BGR 0-255, ratio r)."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"letterbox expects an RGB uint8 (h, w, 3) image, got {image_rgb.dtype} {image_rgb.shape}")
    height, width = image_rgb.shape[:2]
    target_h, target_w = size_hw
    ratio = min(target_h / height, target_w / width)
    # int() truncates as YOLOX does; max(1, ...) only differs for absurd aspect ratios where YOLOX's
    # cv2.resize would fail on a zero-size target.
    new_w, new_h = max(1, int(width * ratio)), max(1, int(height * ratio))
    # Channel order does not change a per-channel resize, so BGR is taken after resizing the smaller array.
    resized = cv2.resize(image_rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((3, target_h, target_w), PAD_VALUE, dtype=np.float32)
    canvas[:, :new_h, :new_w] = resized[:, :, ::-1].transpose(2, 0, 1)
    return canvas, ratio


def boxes_to_image(boxes: np.ndarray, ratio: float) -> np.ndarray:
    """Coordinates in letterboxed input pixels (x1, y1, x2, y2 or x, y, w, h) -> image pixels: divide by r."""
    return np.asarray(boxes) / ratio
