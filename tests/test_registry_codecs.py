"""Every registry entry's card carries the keypoint codec of the config that trained it (model_export/fetch)."""

from __future__ import annotations

import itertools

import pytest

from model_export.fetch.registry import load_registry, parse_registry
from posecore.codecs.spec import CodecSpec


def test_every_pose_entry_carries_the_codec_of_the_config_that_trained_it() -> None:
    """mmpose's standard configs: MSRAHeatmap; _dark- configs: MSRAHeatmap(unbiased=True); _udp-: UDPHeatmap."""
    for entry in (e for e in load_registry() if e.kind == "pose"):
        assert entry.codec is not None, entry.name
        spec = CodecSpec.model_validate(entry.codec)
        expected = "udp" if "_udp-" in entry.name else "dark" if "_dark-" in entry.name else "msra"
        assert spec.decoding == expected and spec.blur_kernel_size == 11, entry.name
    names = {e.name for e in load_registry()}
    for width, size in itertools.product(("w32", "w48"), ("256x192", "384x288")):
        assert {f"td-hm_hrnet-{width}_{kind}-8xb{64 if width == 'w32' else 32}-210e_coco-{size}"
                for kind in ("dark", "udp")} <= names


def test_registry_refuses_an_unknown_codec() -> None:
    entry = {**load_registry()[0].to_json(), "codec": {"type": "SimCCLabel"}}
    detector = {**next(e for e in load_registry() if e.kind == "detector").to_json(), "codec": {"type": "MSRAHeatmap"}}
    with pytest.raises(ValueError, match="only pose entries have a codec"):
        parse_registry({"format": "hrnet-pose-weights-registry/1", "entries": [detector]})
    with pytest.raises(ValueError, match="codec"):
        parse_registry({"format": "hrnet-pose-weights-registry/1", "entries": [entry]})
