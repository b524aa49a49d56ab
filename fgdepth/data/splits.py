"""Train / val / test splits that never put one background in two splits."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from fgdepth.config import DataConfig
from fgdepth.data.format import DataError

SPLITS = ("train", "val", "test")


def check_fractions(data: DataConfig) -> None:
    """``data.test`` and ``data.val`` are fractions of all samples that leave a train part."""
    test, val = data.test, data.val
    if not (0 <= test < 1 and 0 <= val < 1 and test + val < 1):
        raise DataError(f"split fractions test={test} val={val} leave no train part")


def _group_order(groups: list[str], seed: int) -> list[str]:
    key = lambda g: hashlib.sha1(f"{seed}:{g}".encode()).hexdigest()  # noqa: E731
    return sorted(groups, key=key)


def assign_by_group(groups: pd.Series, fractions: dict[str, float], seed: int) -> np.ndarray:
    """Give every group (background) to one split: the one furthest below its target,
    relative to the target (so every split gets a group while there are enough groups).

    Deterministic for a given seed; the group order is a hash of the group's name.
    """
    sizes = groups.value_counts()
    targets = {name: frac * len(groups) for name, frac in fractions.items()}
    counts = dict.fromkeys(fractions, 0)
    owner = {}
    for group in _group_order(list(sizes.index), seed):
        name = max(fractions, key=lambda s: ((targets[s] - counts[s]) / targets[s], fractions[s]))
        owner[group] = name
        counts[name] += int(sizes[group])
    return groups.map(owner).to_numpy(dtype=object)


def group_key(frame: pd.DataFrame) -> pd.Series:
    """What 'the same background' means: a ``bg_id`` column when present, else the bg file."""
    return frame["bg_id"] if "bg_id" in frame.columns else frame["bg"]


def assign_splits(frame: pd.DataFrame, data: DataConfig | None = None) -> np.ndarray:
    """One of train/val/test per row: the ``split`` column when present, else by background,
    by the fractions ``data.test`` and ``data.val`` (val carved from the train part) and
    ``data.split_seed``."""
    spec = data or DataConfig()
    check_fractions(spec)
    groups = group_key(frame)
    if "split" in frame.columns:
        split = frame["split"].str.strip().str.lower().to_numpy(dtype=object)
        unknown = sorted(set(split) - set(SPLITS))
        if unknown:
            raise DataError(f"split column holds {unknown}; allowed: {', '.join(SPLITS)}")
        if "val" not in set(split) and spec.val > 0:
            train = split == "train"
            val_share = spec.val / max(1e-9, 1 - spec.test)
            carved = assign_by_group(
                groups[train].reset_index(drop=True),
                {"train": 1 - val_share, "val": val_share},
                spec.split_seed,
            )
            split[train] = carved
        return split
    fractions = {"train": 1 - spec.test - spec.val, "val": spec.val, "test": spec.test}
    fractions = {k: v for k, v in fractions.items() if v > 0}
    return assign_by_group(groups, fractions, spec.split_seed)
