"""Scoring a logged model on the data and split its run used (``fgdepth evaluate``), and the
pieces the report shares with it: a model by name, the run's config, its scoring data."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from fgdepth import tracking as trk
from fgdepth.app.datasets import resolve_dataset
from fgdepth.config import PRECISIONS, Config, ConfigError, build, check_values
from fgdepth.data import DataError, Dataset, build_model_cache
from fgdepth.data.cache import check_cache_root


def load_model(spec: str):
    """A model from a checkpoint file or an MLflow model URI (``runs:/ID/model``,
    ``models:/NAME@ALIAS``); returns (model in eval mode, the size it was trained at, the
    DepthEncoding of its training data: None when not declared)."""
    from fgdepth.engine.checkpoint import depth_encoding
    from fgdepth.engine.checkpoint import load_model as load_checkpoint

    if Path(spec).exists():
        model, data = load_checkpoint(spec)
        return model, data.get("size"), depth_encoding(data)
    return trk.load_logged_model(spec)


def model_config(spec: str, default: Config | None = None) -> Config:
    """The resolved config the model of ``spec`` was trained with: the checkpoint's own, or the
    one its run logged; ``default`` for a checkpoint that holds none."""
    from fgdepth.engine.checkpoint import read_checkpoint

    if Path(spec).exists():
        data = read_checkpoint(spec).get("config")
        if not data:
            if default is not None:
                return default
            raise ConfigError(f"{spec}: this checkpoint holds no config (give --data)")
    else:
        data = trk.logged_config(trk.run_of_model(spec))
    return build(Config, data)


@dataclass
class ScoringData:
    """The dataset a run was scored on, with the rows of its splits as training used them."""

    config: Config
    dataset: Dataset
    splits: dict[str, np.ndarray]

    def cache(self, size: int, input_scale: int = 1, skip_bad: bool = True, rows=None):
        """The data at ``size`` as a model with ``input_scale`` reads it, with ``rows``
        (default: all) decoded."""
        from fgdepth.data.modes import decode_workers

        side, workers = self.dataset.source_side(), decode_workers(self.config.data.workers)
        return build_model_cache(
            self.dataset, size, input_scale, side, workers=workers, skip_bad=skip_bad,
            quiet=True, rows=rows,
        )  # fmt: skip

    def rows(self, split: str, bad=()) -> np.ndarray:
        """A split's rows (``all``: every row), less the rows that could not be decoded."""
        from fgdepth.engine.plan import without_bad_rows

        rows = np.arange(len(self.dataset)) if split == "all" else self.splits[split]
        return without_bad_rows({split: rows}, list(bad))[split]


def scoring_data(config: Config, data: str | Path | None = None) -> ScoringData:
    """The run's dataset (or the one at ``data``) split as ``config`` says, with the rows that
    training validated and tested on (``data.val_samples``, ``eval.max_samples``)."""
    from fgdepth.engine.plan import split_indices

    dataset = resolve_dataset(config, data)
    return ScoringData(config, dataset, split_indices(config, dataset))


def with_split(config: Config, seed=None, test=None, val=None, skip_bad=None) -> Config:
    """``config`` with the split settings given explicitly (None: as logged), checked as a
    config's (``data.test``: a fraction, ...; ConfigError)."""
    given = {"split_seed": seed, "test": test, "val": val, "skip_bad": skip_bad}
    changes = {k: v for k, v in given.items() if v is not None}
    if not changes:
        return config
    config = replace(config, data=replace(config.data, **changes))
    check_values(config)
    return config


def evaluate_logged_model(
    spec: str,
    *,
    split: str = "test",
    data: str | Path | None = None,
    size: int | None = None,
    precision: str | None = None,
    split_overrides: dict | None = None,
) -> dict:
    """The metrics of model ``spec`` on a split of the data its run used, split as the run
    split it (its logged ``data.test``, ``data.val``, ``data.split_seed``; ``split_overrides``
    with the keys of ``with_split`` change them). ``data``: another dataset, split the same
    way; ``size``: another size than the one the model was trained at; ``precision``: another
    than the run's."""
    from fgdepth.engine.evaluate import evaluate
    from fgdepth.engine.fit import default_device
    from fgdepth.engine.precision import resolve_precision

    if precision is not None and precision not in PRECISIONS:  # not quietly another precision
        raise ConfigError(f"--precision: '{precision}' is not one of {', '.join(PRECISIONS)}")
    check_cache_root()  # the data is decoded into a cache there
    model, trained, _ = load_model(spec)
    size = checked_size(model, size) or trained or 64
    default = Config() if data is not None else None  # the default splits, on --data
    config = with_split(model_config(spec, default), **(split_overrides or {}))
    scoring = scoring_data(config, data)
    cache = scoring.cache(size, model.input_scale, config.data.skip_bad, scoring.rows(split))
    rows = scoring.rows(split, cache.bad)
    if len(rows) == 0:
        raise DataError(f"{scoring.dataset.path}: the {split} split is empty")
    device = default_device()
    model = _layout(model, config.channels_last).to(device)
    # the truth is in the scored data's units: its encoding reads both medians in metres
    encoding = scoring.dataset.depth_encoding
    metrics = evaluate(
        model, cache, rows, device, config.eval.batch_size,
        resolve_precision(precision or config.precision, device), config.channels_last,
        to_metres=encoding.to_metres if encoding else None,
    )  # fmt: skip
    return {
        "model": spec, "data": str(scoring.dataset.path), "split": split, "samples": len(rows),
        "size": size, "split_seed": config.data.split_seed,
        "depth_encoding": str(encoding) if encoding else None,
        "metrics": {k: round(v, 6) for k, v in metrics.items()},
    }  # fmt: skip


def _layout(model, channels_last: bool):
    import torch

    return model.to(memory_format=torch.channels_last) if channels_last else model


def checked_size(model, size: int | None) -> int | None:
    """``--size``, when the model can take it; a size it cannot take is one line."""
    multiple = getattr(model, "size_multiple", 16)
    if size is not None and (size < 16 or size % multiple):
        raise ConfigError(
            f"--size: {size} is not allowed (this model takes multiples of {multiple}, 16 or more)"
        )
    return size
