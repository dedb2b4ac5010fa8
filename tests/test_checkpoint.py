"""Checkpoint layouts (official, wrapped, DataParallel, mmpose, training) and the mismatch report."""

from __future__ import annotations

import collections
import pickle

import numpy as np
import pytest
import torch

from model_export.checkpoint import (
    CheckpointError,
    CheckpointMismatch,
    file_sha256,
    load_checkpoint,
    read_checkpoint_config,
)
from model_export.configs import get_config
from model_export.hrnet import HRNet
from tests.helpers import require_shared


@pytest.fixture(scope="module")
def tiny_state() -> dict[str, torch.Tensor]:
    return torch.load(require_shared("reference/tiny_hrnet_state_dict.pt"), weights_only=True)


@pytest.fixture(scope="module")
def tiny_forward():
    data = np.load(require_shared("reference/tiny_forward.npz"))
    return torch.from_numpy(data["input"][:1]), data["output"][:1]


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return collections.OrderedDict((prefix + k, v) for k, v in state.items())


def mmpose(state: dict[str, torch.Tensor], head: str) -> dict[str, torch.Tensor]:
    return collections.OrderedDict(
        (f"{head}.{k}" if k.startswith("final_layer.") else f"backbone.{k}", v) for k, v in state.items())


LAYOUTS = {
    "plain": lambda s: s,
    "state_dict": lambda s: {"state_dict": s},
    "model": lambda s: {"model": s, "epoch": 3},
    "module-prefix": lambda s: prefixed(s, "module."),
    "wrapped-module-prefix": lambda s: {"state_dict": prefixed(s, "module."), "best_state_dict": s},
    "mmpose-1.x": lambda s: {"meta": {"epoch": 210}, "state_dict": mmpose(s, "head")},
    "mmpose-0.x": lambda s: {"state_dict": mmpose(s, "keypoint_head")},
    "training": lambda s: {"config": get_config("tiny").to_dict(), "state_dict": s, "epoch": 1},
}


def assert_reproduces(model: HRNet, tiny_forward) -> None:
    x, expected = tiny_forward
    with torch.no_grad():
        output = model.eval()(x).numpy()
    np.testing.assert_allclose(output, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_layout_loads_strictly_and_reproduces_output(layout, tiny_state, tiny_forward) -> None:
    model = HRNet(get_config("tiny"))
    report = load_checkpoint(model, LAYOUTS[layout](tiny_state))
    assert report.num_tensors == len(tiny_state)
    assert report.layout == ("mmpose" if layout.startswith("mmpose") else "official")
    assert_reproduces(model, tiny_forward)


def test_load_from_path_records_sha256_and_config(tmp_path, tiny_state, tiny_forward) -> None:
    path = tmp_path / "training.pth"
    torch.save({"config": "tiny", "state_dict": prefixed(tiny_state, "module.")}, path)
    model = HRNet(get_config("tiny"))
    report = load_checkpoint(model, path)
    assert report.sha256 == file_sha256(path)
    assert report.stripped_prefixes == ["module."] and report.unwrapped == ["state_dict"]
    assert report.config == get_config("tiny")
    assert_reproduces(model, tiny_forward)


def test_missing_batchnorm_counters_are_filled(tiny_state, tiny_forward) -> None:
    old_style = {k: v for k, v in tiny_state.items() if not k.endswith("num_batches_tracked")}
    model = HRNet(get_config("tiny"))
    report = load_checkpoint(model, old_style)
    assert report.filled_num_batches_tracked == len(tiny_state) - len(old_style) > 0
    assert_reproduces(model, tiny_forward)


def test_wrong_architecture_gives_a_short_report() -> None:
    with torch.device("meta"):  # only the shapes matter: the mismatch is found before any copy
        w32_state = HRNet(get_config("w32_256x192")).state_dict()
    with pytest.raises(CheckpointMismatch) as caught:
        load_checkpoint(HRNet(get_config("tiny")), w32_state)
    error = caught.value
    message = str(error)
    assert isinstance(error, ValueError)
    assert len(message) < 2000, message
    assert "unexpected keys" in message and "shape mismatches" in message
    assert f"... and {len(error.unexpected) - 10} more" in message
    assert "stage2.0.branches.0.1.conv1.weight" in message  # the first unexpected key is named
    assert "HRNet-W32" in message and "Traceback" not in message and "Error(s) in loading" not in message
    assert len(error.unexpected) == 1754 - 296 and len(error.shape_mismatches) > 0


def test_missing_and_unexpected_keys_are_named(tiny_state) -> None:
    broken = dict(tiny_state)
    del broken["final_layer.weight"]
    broken["head.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatch) as caught:
        load_checkpoint(HRNet(get_config("tiny")), broken)
    assert caught.value.missing == ["final_layer.weight"]
    assert caught.value.unexpected == ["head.extra.weight"]
    assert "1 missing keys: final_layer.weight" in str(caught.value)


def test_unusable_checkpoints_raise_checkpoint_error(tmp_path) -> None:
    model = HRNet(get_config("tiny"))
    with pytest.raises(CheckpointError, match="no state_dict"):
        load_checkpoint(model, {"epoch": 3, "optimizer": {"lr": 1}})
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(model, tmp_path / "absent.pth")
    unsafe = tmp_path / "unsafe.pth"
    with open(unsafe, "wb") as handle:  # a pickle that would run code under weights_only=False
        pickle.dump({"state_dict": collections.Counter()}, handle, protocol=2)
    with pytest.raises(CheckpointError, match="weights-only"):
        load_checkpoint(model, unsafe)


def test_read_checkpoint_config_forms() -> None:
    tiny = get_config("tiny")
    assert read_checkpoint_config({"config": "tiny"}) == tiny
    assert read_checkpoint_config({"arch": "w32_256x192"}) == get_config("w32_256x192")
    assert read_checkpoint_config({"config": tiny.to_dict()}) == tiny
    assert read_checkpoint_config({"state_dict": {}}) is None


def test_read_checkpoint_config_official_model_section() -> None:
    import json

    official = json.loads(require_shared("reference/official_configs.json").read_text())
    model_section = official["configs"]["w48_384x288"]["MODEL"]
    config = read_checkpoint_config({"config": {"MODEL": model_section}})
    assert config.stages == get_config("w48_384x288").stages and config.input_size == (384, 288)
