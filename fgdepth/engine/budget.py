"""A run fitted to a budget of training time (``train_minutes``): every stage's samples scaled
by one factor, so that the recipe keeps its shape (sizes, epochs, the share of each stage) and
is expected to train for the budget on this machine, by the rates of a few timed steps
(``timing.training_rate``); fitted again before each later stage, by the pace the run has
trained at."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from fgdepth.config import Config, StageConfig, scaled_stages

Rate = Callable[[Config, StageConfig], float]  # training samples per second of a stage


def recipe_seconds(config: Config, rate: Rate) -> float:
    """Expected training seconds of ``config``'s stages as its profile scales them."""
    return sum(s.samples * s.epochs / rate(config, s) for s in scaled_stages(config))


StageRate = Callable[[StageConfig], float]  # a run's own: its model, precision and device


def fit_stages(
    stages: list[StageConfig],
    first: int,
    seconds: float,
    rate: StageRate,
    pace: float = 1.0,
    floor: int = 1,
) -> list[StageConfig]:
    """``stages`` with those from ``first`` on scaled by one factor, so that they are expected
    to train for ``seconds``: by their timed ``rate`` times ``pace`` (how much slower than
    its timed steps the run has trained so far; 1 before it starts). Each epoch keeps at
    least ``floor`` samples (a batch)."""
    rest = stages[first:]
    expected = pace * sum(s.samples * s.epochs / rate(s) for s in rest)
    factor = max(seconds, 0.0) / expected if expected > 0 else 1.0
    scaled = [dataclasses.replace(s, samples=max(floor, round(s.samples * factor))) for s in rest]
    return [*stages[:first], *scaled]


def reports_within(config: Config) -> int:
    """How many equal shares of the training time a run of ``config`` is validated at, within
    training (``eval.val_reports`` under ``train_minutes``; the last share ends with the last
    epoch): 0 without a training time or with fewer than 2 shares."""
    n = config.eval.val_reports
    return n if config.train_minutes and n > 1 else 0


class TrainingBudget:
    """A run's training time (its steps: not validation, tests or pictures) shared among its
    stages: fitted before the first stage from timed steps, then again before each later
    stage from how fast the run actually trained, so that the estimate's error in one stage
    is made up in the next. The last stage ends at the budget whatever its samples."""

    def __init__(self, seconds: float, rate: StageRate, floor: int = 1):
        self.seconds, self.rate, self.floor = seconds, rate, floor

    def plan(self, stages: list[StageConfig]) -> list[StageConfig]:
        return fit_stages(stages, 0, self.seconds, self.rate, floor=self.floor)

    def refit(self, stages: list[StageConfig], first: int, spent: float) -> list[StageConfig]:
        """Stages ``first`` on, after ``spent`` seconds of training in the stages before."""
        timed = sum(s.samples * s.epochs / self.rate(s) for s in stages[:first])
        pace = spent / timed if timed > 0 and spent > 0 else 1.0
        return fit_stages(stages, first, self.seconds - spent, self.rate, pace, self.floor)

    def left(self, spent: float) -> float:
        return self.seconds - spent
