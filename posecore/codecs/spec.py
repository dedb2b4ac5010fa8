"""Which test-time pipeline a model is served with: the model card's `codec` (named as mmpose configs name it) and
a request's `decode` choice resolved into one `Pipeline`.

    no codec                                          -> official   (leoxiaobin's HRNet test code)
    {"type": "MSRAHeatmap"}                           -> msra       (mmpose 1.x standard)
    {"type": "MSRAHeatmap", "unbiased": true, ...}    -> dark       (DARK: blur, log, Taylor offset)
    {"type": "UDPHeatmap", ...}                       -> udp        (UDP affine, no flip shift, DARK-UDP refinement)

A model trained with UDP targets only allows `udp`: every other pipeline maps heatmap pixels to the crop as
x * w / W, while its targets were drawn at x * (W - 1) / (w - 1), a bias that grows across the crop. A model trained
with MSRA-aligned targets (the official HRNet, mmpose's MSRAHeatmap with or without `unbiased`) allows all four, so
that users can measure what DARK or UDP decoding buys on their own model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from posecore.contract import Decoding
from posecore.errors import PoseError

DECODINGS: tuple[Decoding, ...] = get_args(Decoding)
# mmpose's MSRAHeatmap / UDPHeatmap default blur_kernel_size (the sigma=2 training kernel); its 384x288 DARK and UDP
# configs keep it although they train with sigma=3, so the published APs were measured with 11.
DEFAULT_BLUR_KERNEL = 11
# The test_cfg `shift_heatmap` of mmpose's COCO HRNet configs: True with MSRAHeatmap, False with UDPHeatmap.
DEFAULT_SHIFT = {"official": True, "msra": True, "dark": True, "udp": False}


class CodecSpec(BaseModel):
    """The card's `codec`: the keypoint codec the model was trained with (mmpose's config dict, test-time part)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["MSRAHeatmap", "UDPHeatmap"] = Field(description="mmpose codec class.")
    unbiased: bool = Field(False, description="MSRAHeatmap only: DARK decoding (blur, log, Taylor offset).")
    blur_kernel_size: int = Field(DEFAULT_BLUR_KERNEL, description="Gaussian kernel of DARK / UDP refinement (odd).")
    shift_heatmap: bool | None = Field(None, description="Flip test: shift the flipped-back heatmaps one column "
                                       "(the test config's; default True for MSRAHeatmap, False for UDPHeatmap).")

    @model_validator(mode="after")
    def _options_of_type(self) -> CodecSpec:
        if self.type == "UDPHeatmap" and self.unbiased:  # false is what a written card holds: accepted
            raise ValueError("UDPHeatmap has no 'unbiased' option (its decoding is always the DARK-UDP refinement)")
        if self.blur_kernel_size < 1 or self.blur_kernel_size % 2 == 0:
            raise ValueError(f"blur_kernel_size must be a positive odd number, not {self.blur_kernel_size}")
        return self

    @property
    def decoding(self) -> Decoding:
        if self.type == "UDPHeatmap":
            return "udp"
        return "dark" if self.unbiased else "msra"


@dataclass(frozen=True)
class Pipeline:
    """One test-time pipeline, fully resolved: how to crop, and how to turn heatmaps into crop coordinates."""

    decoding: Decoding
    shift_heatmap: bool = True
    blur_kernel_size: int = DEFAULT_BLUR_KERNEL

    @property
    def crop(self) -> Literal["official", "mmpose", "udp"]:
        """The crop it needs: crops are interchangeable exactly when this agrees (msra and dark share one)."""
        if self.decoding == "official":
            return "official"
        return "udp" if self.decoding == "udp" else "mmpose"


def card_decoding(codec: CodecSpec | None) -> Decoding:
    """The pipeline a card's model is served with by default: the one its AP was measured with."""
    return "official" if codec is None else codec.decoding


def allowed_decodings(codec: CodecSpec | None) -> tuple[Decoding, ...]:
    """What a request may ask for (see the module docstring for why UDP-trained models allow only udp)."""
    return ("udp",) if codec is not None and codec.type == "UDPHeatmap" else DECODINGS


def resolve_pipeline(codec: CodecSpec | None, decoding: str | None = None) -> Pipeline:
    """The card's pipeline, or the requested one where the card allows it; PoseError invalid_request otherwise.

    The card's own options (kernel, shift) apply when the request asks for the card's decoding; another decoding
    runs with mmpose's defaults for it.
    """
    chosen = card_decoding(codec) if decoding is None else decoding
    allowed = allowed_decodings(codec)
    if chosen not in allowed:
        raise PoseError("invalid_request", f"'decode' must be one of {', '.join(allowed)} for this model, not "
                        f"{str(chosen)[:20]!r}")
    decoding = chosen  # narrowed to a Decoding by the test above
    if codec is not None and decoding == codec.decoding:
        shift = DEFAULT_SHIFT[decoding] if codec.shift_heatmap is None else codec.shift_heatmap
        return Pipeline(decoding, shift, codec.blur_kernel_size)
    return Pipeline(decoding, DEFAULT_SHIFT[decoding])
