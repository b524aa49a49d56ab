"""Opening a dataset: manifest, checks, splits, and decoded samples."""

from __future__ import annotations

import hashlib
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from fgdepth.config import DataConfig
from fgdepth.data.format import (
    COLUMNS,
    MANIFEST,
    UNREADABLE,
    DataError,
    Problem,
    Sample,
    Source,
    read_depth_encoding,
    read_manifest,
    read_sample,
    structural_problems,
    unreadable,
)
from fgdepth.data.splits import assign_splits, group_key
from fgdepth.data.units import DepthEncoding


@dataclass
class Dataset:
    """A dataset opened for reading. ``rows`` keeps every manifest column (extras too);
    ``depth_encoding``: how its depth maps to metres, as its ``dataset.yaml`` declares (None:
    not declared, depth in 0..1 units only)."""

    source: Source
    rows: pd.DataFrame
    split: np.ndarray  # (N,) of "train" / "val" / "test"
    skipped: list[Problem] = field(default_factory=list)
    depth_encoding: DepthEncoding | None = None
    _fingerprint: str | None = None
    _side: int | None = None

    @property
    def path(self) -> Path:
        return self.source.path

    def __len__(self) -> int:
        return len(self.rows)

    def indices(self, split: str | None = None) -> np.ndarray:
        """Row numbers of a split (all rows for None), bad rows excluded when skipping."""
        keep = np.ones(len(self), dtype=bool) if split is None else self.split == split
        if self.skipped:
            bad = {p.row for p in self.skipped if p.row is not None}
            keep &= ~np.isin(np.arange(len(self)), list(bad))
        return np.flatnonzero(keep)

    def backgrounds(self) -> np.ndarray:
        """Per row, the index of its background among the unique backgrounds (by bg file)."""
        return pd.factorize(self.rows["bg"])[0].astype(np.int32)

    def groups(self) -> pd.Series:
        return group_key(self.rows)

    def sample(self, index: int, size: int | None = None) -> Sample:
        return read_sample(self.source, self.rows.iloc[int(index)], size)

    def source_side(self) -> int:
        """The side of a square with as many pixels as the first row's fg_bg: the most that
        reading an input at a larger size could show (the rest would be upsampling)."""
        if self._side is None:
            rel = self.rows["fg_bg"].iloc[0]
            try:
                width, height = Image.open(io.BytesIO(self.source.read(rel))).size
            except UNREADABLE as exc:
                raise unreadable(rel, exc) from exc
            self._side = int(math.isqrt(width * height))
        return self._side

    def fingerprint(self) -> str:
        """A hash of the manifest and of every referenced file's size and date (or zip CRC)."""
        if self._fingerprint is None:
            digest = hashlib.sha256(self.source.read(MANIFEST))
            files = sorted(set(self.rows[list(COLUMNS)].to_numpy().ravel()))
            for rel in files:
                try:
                    digest.update(repr(self.source.stat_key(rel)).encode())
                except (OSError, KeyError):
                    digest.update(f"{rel}:missing".encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


def open_dataset(
    path: str | os.PathLike, splits: DataConfig | None = None, skip_bad: bool = False
) -> Dataset:
    """Open a folder or zip; raise DataError on structural problems unless ``skip_bad``.
    ``splits``: the fractions and seed of the splits (``test``, ``val``, ``split_seed``).

    With ``skip_bad``, rows with problems stay in the manifest (so splits do not move) but
    are left out of every split and listed in ``Dataset.skipped``.
    """
    source = Source(path)
    rows = read_manifest(source)
    encoding = read_depth_encoding(source)
    problems = structural_problems(source, rows)
    global_problems = [p for p in problems if p.row is None]
    if global_problems or (problems and not skip_bad):
        more = f" (and {len(problems) - 1} more; see `fgdepth data inspect {path}`)"
        raise DataError(f"{source.path}: {problems[0]}{more if len(problems) > 1 else ''}")
    split = assign_splits(rows, splits)
    dataset = Dataset(source, rows, split, skipped=problems, depth_encoding=encoding)
    if len(dataset.indices()) == 0:
        raise DataError(f"{source.path}: no usable rows")
    return dataset
