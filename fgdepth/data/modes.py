"""Cache or stream: how each stage of a run gets its data.

The decode cache makes every epoch after the first nearly free, but it holds every row at a
stage's size: rows x size^2 bytes, about 300 GB for the original study's 400K rows at 64, 96
and 192 px. The policy (``data.cache``):

- ``auto``: a stage is cached when its new cache bytes fit the budget that is left (its
  ``cache_budget_gb``, never more than the free disk less a margin), in stage order; else it
  streams;
- ``always``: every stage is cached, and a run whose caches would not fit the disk (or a
  budget that is set) is refused before anything is decoded;
- ``never``: every stage streams.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from fgdepth.data.cache import (
    ArrayCache,
    ScaledInputCache,
    cache_bytes,
    cache_key,
    cache_root,
    caches_for_keys,
    input_size_for,
    key_of_folder,
    model_cache_keys,
)
from fgdepth.data.dataset import Dataset
from fgdepth.data.disk import MARGIN_BYTES, free_bytes, human
from fgdepth.data.format import DataError
from fgdepth.data.stream import LoadedCache, StreamData
from fgdepth.parallel import default_workers

POLICIES = ("auto", "always", "never")


@dataclass(frozen=True)
class DataPlan:
    """How one stage reads its data: ``mode`` cache or stream, at output ``size`` with inputs
    at ``input_size``; ``cache_bytes``: what its caches take (0 when streamed), of which
    ``new_bytes`` are still to be written."""

    size: int
    input_size: int
    mode: str
    cache_bytes: int
    new_bytes: int
    keys: tuple
    clamped: bool = False  # inputs read below size x input_scale: the source has fewer pixels

    def to_dict(self) -> dict:
        return asdict(self) | {"keys": [list(k) if isinstance(k, tuple) else k for k in self.keys]}


@dataclass(frozen=True)
class DataShape:
    """What the decision needs to know of a dataset (it may not exist yet: the built-in one
    is generated on first use): its rows, backgrounds, the side of its images, and which
    cache keys are on disk already."""

    rows: int
    backgrounds: int
    source_side: int | None
    cached: frozenset = frozenset()


def room_for_caches(root: Path | None = None, margin: int = MARGIN_BYTES) -> tuple[int, int]:
    """(bytes the caches may use on the cache disk, its free bytes)."""
    free = free_bytes(root or cache_root())
    return max(0, free - margin), free


def plan_stage_data(
    sizes: list[int],
    input_scale: int,
    shape: DataShape,
    policy: str = "auto",
    budget_bytes: int | None = None,
    room: int | None = None,
    free: int | None = None,
) -> list[DataPlan]:
    """A ``DataPlan`` per stage size, by ``policy`` (see the module). ``room``: the bytes
    the disk can take (default: ``room_for_caches()``); ``budget_bytes`` caps it for ``auto``."""
    if policy not in POLICIES:
        raise DataError(f"data.cache: '{policy}' is not one of {', '.join(POLICIES)}")
    if room is None:
        room, free = room_for_caches()
    limit = room if budget_bytes is None else min(room, budget_bytes)
    planned: set = set(shape.cached)
    used, out = 0, []
    for size in sizes:
        keys = tuple(cache_key(k) for k in model_cache_keys(size, input_scale, shape.source_side))
        total = cache_bytes(keys, shape.rows, shape.backgrounds)
        new = cache_bytes([k for k in keys if k not in planned], shape.rows, shape.backgrounds)
        fits = used + new <= limit
        cache = policy == "always" or (policy == "auto" and fits)
        if cache:
            used += new
            planned.update(keys)
        input_size = input_size_for(size, input_scale, shape.source_side)
        clamped = input_size < size * input_scale
        out.append(DataPlan(size, input_size, "cache" if cache else "stream",
                            total if cache else 0, new if cache else 0, keys, clamped))  # fmt: skip
    if policy == "always" and used > limit:
        where = (
            f"the budget is {human(budget_bytes)} (data.cache_budget_gb)"
            if limit < room
            else f"{human(free or 0)} is free there, {human(MARGIN_BYTES)} kept free"
        )
        raise DataError(
            f"data.cache: always needs {human(used)} of new caches under {cache_root()}, but "
            f"{where}; use data.cache: auto or never, or point FGDEPTH_CACHE at a larger disk"
        )
    return out


def decode_workers(workers: int | None, stream: bool = False) -> int:
    """``data.workers`` as set, or by default: every core for a cache build; for a stream,
    this rank's share of the node's cores (torchrun's LOCAL_WORLD_SIZE ranks share them) less
    one for the training step."""
    if workers is not None:
        return workers
    cores = default_workers()
    if not stream:
        return cores
    return max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")) - 1)


def data_shape(dataset: Dataset, root: Path | None = None) -> DataShape:
    """The ``DataShape`` of an opened dataset, with the cache keys already on disk."""
    folders = (root or cache_root()).glob(f"{dataset.fingerprint()[:24]}-*px*")
    keys = [key_of_folder(f.name) for f in folders if (f / "meta.json").exists()]
    cached = {key for key in keys if key is not None}
    backgrounds = int(dataset.backgrounds().max()) + 1
    return DataShape(len(dataset), backgrounds, dataset.source_side(), frozenset(cached))


def open_stage_data(
    dataset: Dataset,
    plan: DataPlan,
    workers: int | None = None,
    skip_bad: bool = False,
    pin_memory: bool = False,
    rows: np.ndarray | None = None,
) -> ArrayCache | ScaledInputCache | StreamData:
    """The stage's data source as planned: a stream, or its cache (built now if missing, for
    ``rows`` only when given), read ahead by loader workers into pinned memory on a GPU
    (``pin_memory``)."""
    loaders = decode_workers(workers, stream=True)
    if plan.mode == "stream":
        return StreamData(dataset, plan.size, plan.input_size, loaders, skip_bad, pin_memory)
    cache = caches_for_keys(
        dataset, list(plan.keys), workers=decode_workers(workers), skip_bad=skip_bad, rows=rows
    )
    return LoadedCache(cache, max(1, loaders)) if pin_memory else cache
