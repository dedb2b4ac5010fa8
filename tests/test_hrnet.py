"""HRNet structure and numerics against the official implementation's fixtures."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model_export.configs import ARCHS, config_from_dict, config_from_official_model, get_config
from model_export.hrnet import HRNet, build_hrnet
from tests.helpers import require_shared

OFFICIAL_PARAMETERS = {"w32_256x192": 28_536_113, "w48_384x288": 63_595_745}
TINY_PARAMETERS = 544_505


def meta_model(arch: str) -> HRNet:
    """Shapes without memory or init: building W48 for real would take seconds for nothing."""
    with torch.device("meta"):
        return HRNet(get_config(arch))


def load_json(relative: str) -> dict:
    return json.loads(require_shared(relative).read_text())


@pytest.fixture(scope="module")
def tiny_model() -> HRNet:
    model = HRNet(get_config("tiny"))
    model.load_state_dict(torch.load(require_shared("reference/tiny_hrnet_state_dict.pt"), weights_only=True))
    return model.eval()


@pytest.mark.parametrize("arch", ["w32_256x192", "w48_384x288"])
def test_state_dict_matches_official_schema_in_order(arch: str) -> None:
    schema = load_json("reference/state_dict_schema.json")["schemas"][arch]
    model = meta_model(arch)
    ours = [[key, list(value.shape)] for key, value in model.state_dict().items()]
    assert len(ours) == schema["num_state_dict_entries"] == 1754
    assert ours == schema["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == schema["total_parameters"]
    assert sum(b.numel() for b in model.buffers()) == schema["total_buffer_elements"]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == schema["num_batchnorm_layers"]


@pytest.mark.parametrize("arch", ["w32_256x192", "w48_384x288"])
def test_parameter_count_without_fixtures(arch: str) -> None:
    assert sum(p.numel() for p in meta_model(arch).parameters()) == OFFICIAL_PARAMETERS[arch]


def test_batchnorm_momentum_and_eps() -> None:
    norms = [m for m in meta_model("w32_256x192").modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {(m.momentum, m.eps) for m in norms} == {(0.1, 1e-5)}


def test_tiny_state_dict_matches_reference_keys_shapes_dtypes() -> None:
    reference = load_json("reference/tiny_hrnet_config.json")
    model = HRNet(get_config("tiny"))
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]
    assert ours == reference["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == reference["total_parameters"] == TINY_PARAMETERS


def test_tiny_reproduces_official_forward_and_flipped_forward(tiny_model: HRNet, reference_npz) -> None:
    forward = reference_npz("tiny_forward.npz")
    x = torch.from_numpy(forward["input"])
    with torch.no_grad():
        output = tiny_model(x).numpy()
        flipped = tiny_model(x.flip(3)).numpy()
    tolerance = 1e-5 * np.abs(forward["output"]).max()
    assert output.shape == (2, 17, 64, 48)
    np.testing.assert_allclose(output, forward["output"], rtol=0, atol=tolerance)
    np.testing.assert_allclose(flipped, forward["output_of_flipped_input"], rtol=0, atol=tolerance)


def test_heatmaps_are_a_quarter_of_the_input_for_any_size() -> None:
    model = build_hrnet(get_config("tiny"), seed=0).eval()
    with torch.no_grad():
        assert model(torch.zeros(3, 3, 128, 96)).shape == (3, 17, 32, 24)


def test_init_weights_is_official_and_reproducible() -> None:
    first = build_hrnet(get_config("tiny"), seed=7)
    second = build_hrnet(get_config("tiny"), seed=7)
    other = build_hrnet(get_config("tiny"), seed=8)
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    assert not torch.equal(first.conv1.weight, other.conv1.weight)
    assert abs(first.stage4[0].branches[3][0].conv1.weight.std().item() - 0.001) < 1e-4
    assert torch.all(first.bn1.weight == 1) and torch.all(first.bn1.bias == 0)
    assert torch.all(first.final_layer.bias == 0)


def test_registry_names_and_unknown_arch() -> None:
    assert set(ARCHS) == {"w32_256x192", "w32_384x288", "w48_256x192", "w48_384x288", "tiny"}
    with pytest.raises(KeyError, match="w32_256x192"):
        get_config("w64")


@pytest.mark.parametrize("arch", ["w32_256x192", "w48_384x288"])
def test_registry_equals_official_configs(arch: str) -> None:
    official = load_json("reference/official_configs.json")["configs"][arch]["MODEL"]
    config = get_config(arch)
    assert config_from_official_model(official, name=arch) == config
    width, height = official["IMAGE_SIZE_WH"]
    assert config.input_size == (height, width)
    assert config.heatmap_size == (official["HEATMAP_SIZE_WH"][1], official["HEATMAP_SIZE_WH"][0])
    assert config.sigma == official["SIGMA"] and config.num_joints == official["NUM_JOINTS"]


def test_tiny_registry_equals_reference_config() -> None:
    reference = load_json("reference/tiny_hrnet_config.json")["MODEL"]
    assert config_from_official_model(reference, name="tiny") == get_config("tiny")


def test_config_round_trips_through_dict() -> None:
    for arch in ARCHS:
        config = get_config(arch)
        assert config_from_dict(json.loads(json.dumps(config.to_dict()))) == config
