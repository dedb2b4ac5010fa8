"""The mixed-precision search's logic on a model whose agreement is a known function of which layers are float:
cumulative greedy choice, the distance to the target, skipping unhelpful candidates, the budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_export.quantize.agreement import Agreement
from model_export.quantize.layers import LayerError
from model_export.quantize.search import Target, rank_candidates, search


def agreement(sqnr: float, median: float = 0.0, within: float = 0.9) -> Agreement:
    return Agreement(crops=4, joints=68, heatmap_sqnr_db=sqnr, worst_crop_sqnr_db=sqnr, median_px=median,
                     p95_px=median, max_px=median, within_one_heatmap_px=within, confident_joints=0,
                     confident_median_px=None, confident_p95_px=None, max_score_diff=0.0)


def layer(name: str, added_db: float, op_type: str = "Conv", int8: bool = True) -> LayerError:
    return LayerError(name, op_type, f"{name}_out", int8, added_db, added_db)


class FakeModel:
    """Quantizing with a set of float layers gives a file named after them; its SQNR is 10 dB plus each float
    layer's gain, plus `together` when both 'a' and 'b' are float (noise that adds up)."""

    def __init__(self, gains: dict[str, float], together: float = 0.0) -> None:
        self.gains, self.together = gains, together
        self.quantized: list[list[str]] = []

    def quantize(self, float_layers: list[str], output: Path) -> Path:
        self.quantized.append(float_layers)
        return Path("+".join(sorted(float_layers)) or "none")

    def evaluate(self, path: Path) -> Agreement:
        names = set(str(path).split("+")) - {"none", "fixed"}
        sqnr = 10.0 + sum(self.gains.get(n, 0.0) for n in names) + (self.together if {"a", "b"} <= names else 0.0)
        return agreement(sqnr)


RANKING = [layer("a", 20.0), layer("b", 21.0), layer("c", 22.0), layer("d", 23.0)]


def run(model: FakeModel, target: Target, budget: int = 8, top_k: int = 2, ranking=RANKING):
    start = model.quantize(["fixed"], Path("start"))
    return search(model.quantize, model.evaluate, ["fixed"], start, model.evaluate(start), ranking, target,
                  budget, top_k, Path("work"))


def test_the_search_adds_the_most_helpful_layer_first_and_stops_at_the_target():
    model = FakeModel({"a": 1.0, "b": 3.0, "c": 0.5, "d": 4.0}, together=2.0)
    result = run(model, Target(min_sqnr_db=15.5, max_median_px=1.0, min_within_one=0.5))
    # step 1 tries a and b (top 2): b gains more; step 2 tries a and c on top of b: a (+1 +2 together) -> 16 dB
    assert [s.layer for s in result.steps] == ["b", "a"] and result.met
    assert result.agreement.heatmap_sqnr_db == 16.0 and result.trials == 4
    assert model.quantized[1:] == [["fixed", "a"], ["fixed", "b"], ["fixed", "b", "a"], ["fixed", "b", "c"]]
    assert result.steps[0].before.heatmap_sqnr_db == 10.0 and result.steps[0].after.heatmap_sqnr_db == 13.0
    assert "10.0 -> 13.0 dB" in result.steps[0].bought()


def test_no_search_when_the_start_meets_the_target():
    model = FakeModel({"a": 5.0})
    result = run(model, Target(min_sqnr_db=9.0, max_median_px=1.0, min_within_one=0.5))
    assert result.met and result.steps == [] and result.trials == 0


def test_unhelpful_candidates_are_skipped_for_the_next_ones_and_two_unhelpful_rounds_end_it():
    model = FakeModel({"c": 2.0})
    result = run(model, Target(min_sqnr_db=11.5, max_median_px=1.0, min_within_one=0.5), top_k=2)
    assert [s.layer for s in result.steps] == ["c"] and result.met and result.trials == 4
    stuck = run(FakeModel({}), Target(min_sqnr_db=30.0, max_median_px=1.0, min_within_one=0.5), top_k=1)
    assert stuck.steps == [] and not stuck.met and stuck.trials == 2


def test_the_budget_bounds_the_layers_kept_in_float():
    model = FakeModel({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0})
    result = run(model, Target(min_sqnr_db=40.0), budget=2, top_k=1)
    assert len(result.steps) == 2 and not result.met and result.agreement.heatmap_sqnr_db == 12.0


def test_the_distance_counts_every_unmet_figure():
    target = Target()
    assert target.distance(agreement(20.0, 0.0, 0.9)) == 0.0 and target.met(agreement(20.0, 0.0, 0.9))
    assert target.distance(agreement(12.6, 1.65, 0.578)) == pytest.approx(0.24 + 2.72 + 1.15)
    assert target.shortfalls(agreement(12.6, 1.65, 0.578)) == [
        "keypoint median 1.65 px > 0.5", "57.8% within one heatmap pixel < 85%", "heatmap SQNR 12.6 dB < 15"]
    # the keypoint figures decide before SQNR does: a better SQNR that moves more joints is not closer
    assert not target.closer(agreement(14.0, 0.0, 0.80), agreement(12.0, 0.0, 0.84))


def test_candidates_are_int8_weighted_or_merging_layers_noisiest_first():
    errors = [layer("relu", 5.0, "Relu"), layer("conv_quiet", 40.0), layer("conv_noisy", 20.0),
              layer("add", 25.0, "Add"), layer("float_conv", 1.0, int8=False), layer("fixed", 2.0)]
    assert [e.name for e in rank_candidates(errors, {"fixed"})] == ["conv_noisy", "add", "conv_quiet"]
