"""Datasets: the on-disk format, the built-in generator, splits, cache and augmentation."""

from fgdepth.data.cache import (
    ArrayCache,
    ScaledInputCache,
    build_cache,
    build_caches,
    build_model_cache,
    cache_root,
    model_cache_keys,
)
from fgdepth.data.dataset import Dataset, open_dataset
from fgdepth.data.format import COLUMNS, DataError, Problem, Sample

__all__ = [
    "COLUMNS",
    "ArrayCache",
    "DataError",
    "Dataset",
    "Problem",
    "Sample",
    "ScaledInputCache",
    "build_cache",
    "build_caches",
    "build_model_cache",
    "cache_root",
    "model_cache_keys",
    "open_dataset",
]
