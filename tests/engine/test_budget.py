"""``engine.budget``: a recipe fitted to a time budget keeps its shape, and a run's training
budget is fitted again to the pace it trains at."""

import pytest

from fgdepth.config import StageConfig, load_config, scaled_stages
from fgdepth.engine.budget import TrainingBudget, recipe_seconds


def rate(config, stage):  # samples per second falling with the pixels, as a model's do
    return 100.0 * (48 / stage.size) ** 2


def test_a_recipe_is_expected_to_train_for_its_stages_samples_at_their_rates():
    config = load_config("default", "cpu")
    want = sum(s.samples * s.epochs / rate(config, s) for s in scaled_stages(config))
    assert recipe_seconds(config, rate) == pytest.approx(want)


def stages_of(*sizes, samples=1000, epochs=1):
    return [StageConfig(name=f"s{s}", size=s, samples=samples, epochs=epochs) for s in sizes]


def stage_rate(stage):  # samples per second falling with the pixels, as above
    return rate(None, stage)


def expected(stages, pace=1.0):
    return pace * sum(s.samples * s.epochs / stage_rate(s) for s in stages)


@pytest.mark.parametrize("seconds", [5.0, 60.0, 600.0])
def test_a_training_budget_shares_its_seconds_among_the_stages_by_their_rates(seconds):
    stages = stages_of(48, 64, 96, epochs=2)
    planned = TrainingBudget(seconds, stage_rate).plan(stages)
    assert expected(planned) == pytest.approx(seconds, rel=0.01)  # samples are whole numbers
    shares = [a.samples / b.samples for a, b in zip(planned, stages, strict=True)]
    assert max(shares) == pytest.approx(min(shares), rel=0.01)  # the recipe keeps its shape


@pytest.mark.parametrize("pace", [0.5, 1.0, 2.0])
def test_later_stages_are_fitted_again_to_the_pace_the_run_trained_at(pace):
    """A run that trained its first stage ``pace`` times slower than its timed steps said
    gets the remaining seconds for its later stages at that pace, so that it still ends at
    its budget; the stages it trained stay as they were."""
    budget = TrainingBudget(60.0, stage_rate)
    planned = budget.plan(stages_of(48, 64, 96))
    spent = pace * expected(planned[:1])
    refitted = budget.refit(planned, 1, spent)
    assert refitted[0] == planned[0]
    assert spent + expected(refitted[1:], pace) == pytest.approx(60.0, rel=0.01)


def test_a_stage_keeps_at_least_a_batch_when_the_budget_is_spent():
    budget = TrainingBudget(10.0, stage_rate, floor=16)
    planned = budget.plan(stages_of(48, 96))
    assert [s.samples for s in budget.refit(planned, 1, 11.0)[1:]] == [16]
