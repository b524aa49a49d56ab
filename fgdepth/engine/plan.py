"""Planning a run before it trains: its splits, its stages as the profile scales them and as
the train split allows, the rows of its pictures, and how each stage reads its data."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from fgdepth.config import Config, ConfigError, StageConfig, scaled_stages
from fgdepth.data import Dataset, Problem
from fgdepth.data.cache import check_cache_root
from fgdepth.data.modes import DataPlan, DataShape, data_shape, plan_stage_data
from fgdepth.engine.checks import check
from fgdepth.models import model_class


def split_indices(config: Config, dataset: Dataset) -> dict[str, np.ndarray]:
    """Train rows, the fixed validation rows and the test rows that evaluation uses."""
    val = dataset.indices("val")[: config.data.val_samples]
    test = dataset.indices("test")
    if config.eval.max_samples:
        test = test[: config.eval.max_samples]
    out = {"train": dataset.indices("train"), "val": val, "test": test}
    for name, rows in out.items():
        if len(rows) == 0:
            raise ConfigError(f"the {name} split of {dataset.path} is empty")
    return out


def without_bad_rows(splits: dict[str, np.ndarray], bad: list[Problem]) -> dict[str, np.ndarray]:
    """The splits less the rows whose images could not be decoded (``skip_bad``)."""
    if not bad:
        return splits
    rows = np.array([p.row for p in bad], dtype=int)
    return {k: v[~np.isin(v, rows)] for k, v in splits.items()}


def check_samples(config: Config, stages: list[StageConfig], n_train: int) -> list[StageConfig]:
    """A stage cannot draw more samples than the train split has. Profile-scaled stages are
    capped at the split; stages as written are refused."""
    out = []
    for i, stage in enumerate(stages):
        if stage.samples > n_train:
            if config.scale.samples == 1.0:
                raise ConfigError(
                    f"stages.{i}.samples: {stage.samples} is more than the "
                    f"{n_train} samples of the train split"
                )
            stage = replace(stage, samples=n_train)
        out.append(stage)
    return out


def plan_data(config: Config, stages: list[StageConfig], input_scale: int, shape: DataShape):
    """How each stage reads its data, by ``data.cache`` and ``data.cache_budget_gb``; a cache
    folder that a stage would write to and cannot is one line now, not after a stage."""
    budget = config.data.cache_budget_gb
    plans = plan_stage_data(
        [s.size for s in stages],
        input_scale,
        shape,
        config.data.cache,
        None if budget is None else int(budget * 1e9),
    )
    if any(p.new_bytes for p in plans):
        check_cache_root()
    return plans


@dataclass
class RunPlan:
    splits: dict[str, np.ndarray]
    stages: list[StageConfig]
    data: list[DataPlan]  # per stage
    picture_rows: np.ndarray  # the test rows drawn after each stage

    def cached_keys(self, first: int = 0) -> list:
        """The cache keys of the cached stages from stage ``first`` on."""
        return [k for d in self.data[first:] if d.mode == "cache" for k in d.keys]

    @property
    def rows(self) -> np.ndarray:
        """Every row the run reads (its caches decode these only): its splits' rows, as
        capped by ``data.val_samples`` and ``eval.max_samples``."""
        return np.unique(np.concatenate([*self.splits.values(), self.picture_rows]))


def plan_run(config: Config, dataset: Dataset, input_scale: int) -> RunPlan:
    """Raises ConfigError (or DataError) for what cannot run on this dataset."""
    splits = split_indices(config, dataset)
    stages = check_samples(config, scaled_stages(config), len(splits["train"]))
    data = plan_data(config, stages, input_scale, data_shape(dataset))
    return RunPlan(splits, stages, data, picture_rows(dataset.indices("test"), config.eval.images))


PICTURE_SEED = 0  # the same test rows in every run on the same data and split, whatever its seed


def picture_rows(test: np.ndarray, n: int) -> np.ndarray:
    """``n`` rows of the test split, drawn with a fixed seed (ascending): every run on the same
    data and split pictures and tables the same rows, so that runs can be compared row by
    row. Drawn from the whole split, so that a cap on the rows a run evaluates
    (``eval.max_samples``) does not change them."""
    test = np.asarray(test)
    n = min(n, len(test))
    picked = np.random.default_rng(PICTURE_SEED).choice(len(test), size=n, replace=False)
    return test[np.sort(picked)]


def check_against_data(config: Config, dataset: Dataset) -> RunPlan:
    """The config's checks, then those that need the dataset (empty splits, more samples than
    the train split, a cache that cannot fit): raise before any run is created."""
    check(config)
    model = model_class(config.model.name)
    return plan_run(config, dataset, model.input_scale_of(**config.model.options))
