"""Datasets: the on-disk format, the built-in generator, splits, cache and augmentation."""

from fgdepth.data.cache import ArrayCache, build_cache, cache_root
from fgdepth.data.dataset import Dataset, open_dataset
from fgdepth.data.format import COLUMNS, DataError, Problem, Sample
from fgdepth.data.splits import SplitSpec

__all__ = [
    "COLUMNS",
    "ArrayCache",
    "DataError",
    "Dataset",
    "Problem",
    "Sample",
    "SplitSpec",
    "build_cache",
    "cache_root",
    "open_dataset",
]
