"""The detector's input: the image resized to fit S x S and placed top-left on a grey canvas ("letterbox").

Two frameworks trained the published YOLOX weights, and their test-time resizes differ, so the detector card
names which one to use (`preprocessing`):

- "yolox": the official YOLOX `preproc` (yolox/data/data_augment.py), which the mmdeploy/rtmlib YOLOX exports
  share: r = min(S_h / h, S_w / w); resize to (int(w r), int(h r)) (truncated); boxes map back by dividing by r.
- "mmdet": mmdetection's test pipeline `Resize(scale=(S, S), keep_ratio=True)` + `Pad(pad_to_square, 114)`:
  mmcv's `rescale_size` takes r = min(max(S) / max(h, w), min(S) / min(h, w)) and rounds,
  (int(w r + 0.5), int(h r + 0.5)); mmdetection's Resize then records a scale per axis, (new_w / w, new_h / h),
  and its head divides boxes by those (float32). A square canvas only (the card refuses others).

Both: cv2.INTER_LINEAR on the uint8 image, top-left on a canvas of 114, BGR, float32 0-255, no normalisation;
the padding is only ever right and below. mmdet's ratio matters: rounding up can make the resized image one
pixel larger than the truncated one, shifting every sample by a fraction of a pixel.
"""

from __future__ import annotations

import cv2
import numpy as np

PAD_VALUE = 114

# float: YOLOX's single ratio r; (x, y): mmdetection's per-axis scale factors.
Ratio = float | tuple[float, float]


def _yolox_size(height: int, width: int, size_hw: tuple[int, int]) -> tuple[int, int, float]:
    ratio = min(size_hw[0] / height, size_hw[1] / width)
    # int() truncates as YOLOX does; max(1, ...) only differs for absurd aspect ratios where YOLOX's
    # cv2.resize would fail on a zero-size target.
    return max(1, int(height * ratio)), max(1, int(width * ratio)), ratio


def _mmdet_size(height: int, width: int, size_hw: tuple[int, int]) -> tuple[int, int]:
    scale = min(max(size_hw) / max(height, width), min(size_hw) / min(height, width))
    return max(1, int(height * float(scale) + 0.5)), max(1, int(width * float(scale) + 0.5))


def letterbox(image_rgb: np.ndarray, size_hw: tuple[int, int],
              preprocessing: str = "yolox") -> tuple[np.ndarray, Ratio]:
    """RGB uint8 (h, w, 3) -> (float32 (3, S_h, S_w) BGR 0-255, ratio): r for "yolox", (x, y) for "mmdet"."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"letterbox expects an RGB uint8 (h, w, 3) image, got {image_rgb.dtype} {image_rgb.shape}")
    height, width = image_rgb.shape[:2]
    target_h, target_w = size_hw
    ratio: Ratio
    if preprocessing == "yolox":
        new_h, new_w, ratio = _yolox_size(height, width, size_hw)
    elif preprocessing == "mmdet":
        new_h, new_w = _mmdet_size(height, width, size_hw)
        if new_h > target_h or new_w > target_w:
            raise ValueError(f"mmdet letterbox needs a square canvas; {list(size_hw)} does not hold {new_h}x{new_w}")
        ratio = (new_w / width, new_h / height)
    else:
        raise ValueError(f"unknown detector preprocessing {preprocessing!r} (yolox or mmdet)")
    # Channel order does not change a per-channel resize, so BGR is taken after resizing the smaller array.
    resized = cv2.resize(image_rgb, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    canvas = np.full((3, target_h, target_w), PAD_VALUE, dtype=np.float32)
    canvas[:, :new_h, :new_w] = resized[:, :, ::-1].transpose(2, 0, 1)
    return canvas, ratio


def boxes_to_image(boxes: np.ndarray, ratio: Ratio) -> np.ndarray:
    """Boxes x1, y1, x2, y2 (or x, y, w, h) in letterboxed input pixels -> image pixels.

    A single r divides everything (YOLOX's demo: float32 / r stays float32); per-axis scales divide x columns
    by the x scale and y columns by the y scale in float32, as mmdetection's head does.
    """
    boxes = np.asarray(boxes)
    if isinstance(ratio, tuple):
        scale = np.array([ratio[0], ratio[1], ratio[0], ratio[1]], dtype=np.float32)
        return boxes / scale
    return boxes / ratio
