"""A run fitted to a time budget: every stage's samples scaled by one factor, so that the
recipe keeps its shape (sizes, epochs, the share of each stage) and is expected to train for
the budget on this machine, by the rates of a few timed steps (``timing.training_rate``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from fgdepth.config import Config, StageConfig, scaled_stages

Rate = Callable[[Config, StageConfig], float]  # training samples per second of a stage


def recipe_seconds(config: Config, rate: Rate) -> float:
    """Expected training seconds of ``config``'s stages as its profile scales them."""
    return sum(s.samples * s.epochs / rate(config, s) for s in scaled_stages(config))


def fit_to_budget(config: Config, seconds: float, rate: Rate) -> Config:
    """``config`` with ``scale.samples`` set so that its stages are expected to train for
    ``seconds``. A stage is still capped at the train split when it runs (``check_samples``),
    so a cheap recipe with a large budget trains for less than the budget."""
    if seconds <= 0:
        raise ValueError(f"a time budget must be positive, got {seconds} s")
    factor = seconds / recipe_seconds(config, rate)
    scale = dataclasses.replace(config.scale, samples=config.scale.samples * factor)
    return dataclasses.replace(config, scale=scale)
