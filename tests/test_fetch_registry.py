"""`python -m model_export fetch`: the weights registry (names, hash prefixes, archs, --list) and naming what to
fetch (URLs, registry names, mirrors, the cache folder). No server needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_export.__main__ import main
from model_export.configs import get_config
from model_export.fetch.cache import default_cache_dir
from model_export.fetch.fetcher import mirrored, resolve_request
from model_export.fetch.registry import (
    hash_prefix_in_name,
    load_registry,
    parse_registry,
    url_file_name,
)

# ---- the registry ----

def test_every_registry_prefix_matches_its_file_name() -> None:
    entries = [e for e in load_registry() if e.kind == "pose"]  # detectors: tests/test_detector_fetch.py
    assert len(entries) == 16
    for entry in entries:
        assert entry.url.startswith("https://download.openmmlab.com/mmpose/"), entry.name
        assert hash_prefix_in_name(entry.file_name) == entry.sha256_prefix, entry.name
        assert len(entry.sha256_prefix) >= 8 and entry.ap is not None and 0.7 < entry.ap < 0.8
    assert {e.arch for e in entries} == {"w32_256x192", "w32_384x288", "w48_256x192", "w48_384x288"}


def test_registry_refuses_an_entry_whose_prefix_contradicts_its_file_name() -> None:
    entry = {"name": "x", "kind": "pose", "arch": "w32_256x192", "ap": 0.7,
             "url": "https://example.org/hrnet_w32_coco_256x192-c78dce93_20200708.pth", "sha256_prefix": "c78dce94"}
    with pytest.raises(ValueError, match="does not match the hash in its file name"):
        parse_registry({"format": "hrnet-pose-weights-registry/1", "entries": [entry]})


def test_registry_archs_match_the_mmpose_configs() -> None:
    """Input size and sigma as in mmpose's td-hm_hrnet-w{32,48}_*_coco-{256x192,384x288}.py codecs."""
    for entry in (e for e in load_registry() if e.kind == "pose"):
        config = get_config(entry.arch)
        size = (256, 192) if "256x192" in entry.name else (384, 288)
        assert config.input_size == size and config.heatmap_size == (size[0] // 4, size[1] // 4)
        assert config.sigma == (2.0 if size == (256, 192) else 3.0)
        assert config.stage4.num_channels[0] == (32 if "w32" in entry.name else 48)


def test_list_json_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch", "--list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [item["name"] for item in listed] == [e.name for e in load_registry()]
    for item in listed:
        assert {"name", "kind", "arch", "url", "sha256_prefix", "ap"} <= set(item)
        assert item["kind"] in ("pose", "detector") and item["url"].endswith(".pth")


def test_list_as_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fetch", "--list"]) == 0
    out = capsys.readouterr().out
    assert "hrnet_w32_coco_256x192" in out and "0.746" in out and "td-hm_hrnet-w48_8xb32-210e_coco-384x288" in out
    assert "yolox_s_8x8_300e_coco                      detector yolox_s      0.405" in out


# ---- naming what to fetch ----

def test_a_url_needs_a_hash_and_an_arch() -> None:
    with pytest.raises(ValueError, match="--sha256"):
        resolve_request("https://example.org/x.pth", arch="tiny")
    with pytest.raises(ValueError, match="8 to 64 hex digits"):
        resolve_request("https://example.org/x.pth", sha256="abc", arch="tiny")
    request = resolve_request("https://example.org/a/x-1234abcd.pth", sha256="1234ABCD", arch="tiny")
    assert request.sha256 == "1234abcd" and request.name == "x-1234abcd" and request.file_name == "x-1234abcd.pth"


def test_registry_names_resolve_and_contradictions_are_refused() -> None:
    request = resolve_request("hrnet_w32_coco_256x192")
    assert (request.arch, request.sha256, request.ap) == ("w32_256x192", "c78dce93", 0.746)
    with pytest.raises(ValueError, match="arch w32_256x192"):
        resolve_request("hrnet_w32_coco_256x192", arch="w48_384x288")
    with pytest.raises(ValueError, match="contradicts"):
        resolve_request("hrnet_w32_coco_256x192", sha256="00000000")
    with pytest.raises(KeyError, match="hrnet_w32_coco_256x192"):
        resolve_request("hrnet_w99")


def test_mirror_keeps_the_path_and_swaps_the_host() -> None:
    url = load_registry()[0].url
    assert mirrored(url, "https://mirror.example.com/openmmlab/") == (
        "https://mirror.example.com/openmmlab/mmpose/top_down/hrnet/" + url_file_name(url))
    assert mirrored(url, None) == url
    with pytest.raises(ValueError):
        mirrored(url, "mirror.example.com")


def test_cache_dir_from_env_then_xdg_then_home(tmp_path: Path) -> None:
    assert default_cache_dir({"POSE_CACHE_DIR": str(tmp_path / "c")}) == tmp_path / "c"
    assert default_cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "hrnet-pose"
    assert default_cache_dir({"XDG_CACHE_HOME": "relative"}) == Path.home() / ".cache" / "hrnet-pose"
    assert default_cache_dir({}) == Path.home() / ".cache" / "hrnet-pose"
