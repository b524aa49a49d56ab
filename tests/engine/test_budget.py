"""``engine.budget``: a recipe fitted to a time budget keeps its shape."""

import pytest

from fgdepth.config import load_config, scaled_stages
from fgdepth.engine.budget import fit_to_budget, recipe_seconds


def rate(config, stage):  # samples per second falling with the pixels, as a model's do
    return 100.0 * (48 / stage.size) ** 2


def test_the_fitted_recipe_is_expected_to_take_the_budget():
    config = load_config("default", "cpu")
    before = recipe_seconds(config, rate)
    fitted = fit_to_budget(config, 60.0, rate)
    assert recipe_seconds(fitted, rate) == pytest.approx(60.0, rel=0.01)  # rounding of samples
    assert fitted.scale.samples == pytest.approx(config.scale.samples * 60.0 / before)
    old, new = scaled_stages(config), scaled_stages(fitted)
    assert [(s.size, s.epochs) for s in new] == [(s.size, s.epochs) for s in old]
    shares = [a.samples / b.samples for a, b in zip(new, old, strict=True)]
    assert max(shares) == pytest.approx(min(shares), rel=0.01)  # one factor for every stage


def test_a_costlier_model_gets_fewer_samples_for_the_same_budget():
    config = load_config("default", "cpu")
    cheap = fit_to_budget(config, 60.0, rate)
    costly = fit_to_budget(config, 60.0, lambda c, s: rate(c, s) / 26)
    assert costly.scale.samples == pytest.approx(cheap.scale.samples / 26)


def test_a_budget_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        fit_to_budget(load_config("default", "cpu"), 0, rate)
