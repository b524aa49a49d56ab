"""Streaming a stage's data: rows decoded by DataLoader workers as training asks for them.

The decode cache (``fgdepth.data.cache``) holds every row at a stage's size; at the original
scale that is more than a machine's disk. A stream reads the dataset itself (folder, zip or
packed shards) instead: each worker process decodes whole batches at reduced JPEG scale, with
the same functions as the cache, and hands over uint8 / uint16 tensors, which the engine
moves to its device (pinned on a GPU) and converts there. Workers live for a whole stage.

Both give the same interface (``batches(index_lists)``: one batch per array of rows, rows in
ascending order, in the given order), so the engine neither knows nor cares which it has.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset

from fgdepth.data.batch import DEPTH_MAX
from fgdepth.data.dataset import Dataset
from fgdepth.data.format import (
    COLUMNS,
    DataError,
    Problem,
    Source,
    read_manifest,
    read_sample_sizes,
)
from fgdepth.parallel import WorkerGuard


class _Decoder(TorchDataset):
    """Item: an array of row numbers; value: those rows decoded (see ``StreamData``)."""

    def __init__(self, source: Source, size: int, input_size: int, skip_bad: bool):
        self.source, self.size, self.input_size, self.skip_bad = source, size, input_size, skip_bad
        self._rows: list[dict] | None = None  # read in the worker: no 10^5-row pickle

    def rows(self) -> list[dict]:
        if self._rows is None:
            frame = read_manifest(self.source)
            self._rows = frame[list(COLUMNS)].to_dict("records")
        return self._rows

    def __len__(self) -> int:
        return len(self.rows())

    def __getitem__(self, rows: np.ndarray) -> dict:
        out = {"fg_bg": [], "bg": [], "mask": [], "depth": [], "index": []}
        bad: list[tuple[int, str]] = []
        for row in rows:
            try:
                sample = self._decode(int(row))
            except DataError as exc:
                line = self.source.line_of(int(row))
                if not self.skip_bad:
                    return {"error": str(Problem(str(exc), int(row), line=line))}
                bad.append((int(row), str(exc), line))
                continue
            for key, value in sample.items():
                out[key].append(value)
        return self._stacked(out) | {"bad": bad}

    def _decode(self, row: int) -> dict:
        sizes = sorted({self.size, self.input_size})
        sample = read_sample_sizes(
            self.source, self.rows()[row], sizes, True, [self.input_size], [self.size]
        )
        inputs, targets = sample[self.input_size], sample[self.size]
        return {
            "fg_bg": inputs.fg_bg.transpose(2, 0, 1),
            "bg": inputs.bg.transpose(2, 0, 1),
            "mask": targets.mask[None].astype(np.uint8),
            "depth": np.round(targets.depth[None] * DEPTH_MAX).astype(np.uint16),
            "index": row,
        }

    def _stacked(self, out: dict) -> dict:
        s, i = self.size, self.input_size
        empty = {
            "fg_bg": np.zeros((0, 3, i, i), np.uint8), "bg": np.zeros((0, 3, i, i), np.uint8),
            "mask": np.zeros((0, 1, s, s), np.uint8), "depth": np.zeros((0, 1, s, s), np.uint16),
        }  # fmt: skip
        stacked = {k: np.stack(v) if v else empty[k] for k, v in out.items() if k != "index"}
        stacked = {k: torch.from_numpy(v) for k, v in stacked.items()}
        return stacked | {"index": torch.tensor(out["index"], dtype=torch.int64)}


class _CacheReader(TorchDataset):
    """Item: an array of row numbers; value: those rows as the cache holds them."""

    def __init__(self, cache):
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, rows: np.ndarray) -> dict:
        return self.cache.raw(rows) | {"bad": []}


class _Batches(Sampler):
    """The arrays of rows the next pass asks for: set before each pass, so that one loader
    (and its workers) serves every epoch and evaluation of a stage."""

    def __init__(self):
        self.items: list[np.ndarray] = []

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class LoadedData:
    """Batches of rows read by ``items`` (a decoder or a cache reader) in ``workers``
    DataLoader processes (0: this one), kept for the whole stage, ``pin_memory`` for a GPU."""

    mode = "stream"

    def __init__(self, items, path, size: int, input_size: int, workers: int, pin_memory: bool):
        self.path, self.size, self.input_size = path, size, input_size
        self.bad: list[Problem] = []
        self._plan = _Batches()
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self._loader = DataLoader(
            items, batch_size=None, sampler=self._plan, num_workers=workers,
            pin_memory=pin_memory, persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            multiprocessing_context=mp.get_context(method) if workers > 0 else None,
            worker_init_fn=WorkerGuard() if workers > 0 else None,  # they end with this process
        )  # fmt: skip
        if workers > 0:
            iter(self._loader)  # start the workers now: they import while the stage sets up

    def batches(self, index_lists) -> Iterator[dict[str, torch.Tensor]]:
        """One decoded batch per array of rows, in order (rows ascending within a batch)."""
        self._plan.items = [np.sort(np.asarray(rows)) for rows in index_lists]
        for batch in self._loader:
            if "error" in batch:
                raise DataError(f"{self.path}: {batch['error']}")
            for row, message, line in batch.pop("bad"):
                self.bad.append(Problem(message, row, line=line))
            yield batch

    def raw(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """One batch of rows (as ``ArrayCache.raw``)."""
        return next(iter(self.batches([indices])))

    def close(self) -> None:
        """Stop the worker processes."""
        self._loader = None


class StreamData(LoadedData):
    """A stage's rows decoded on demand at output ``size``, inputs at ``input_size``.

    ``workers`` processes decode (0: in this process); ``pin_memory`` for a GPU. Rows that
    cannot be decoded raise DataError naming the file, or (``skip_bad``) are left out of
    their batch and listed in ``bad``."""

    def __init__(
        self,
        dataset: Dataset,
        size: int,
        input_size: int,
        workers: int = 1,
        skip_bad: bool = False,
        pin_memory: bool = False,
    ):
        decoder = _Decoder(dataset.source, size, input_size, skip_bad)
        super().__init__(decoder, dataset.path, size, input_size, workers, pin_memory)


class LoadedCache(LoadedData):
    """A cache read by loader workers into pinned memory, ahead of the training step: for a
    GPU, whose steps should not wait on the reads (on a CPU the cache is read in place)."""

    mode = "cache"

    def __init__(self, cache, workers: int = 1, pin_memory: bool = True):
        super().__init__(
            _CacheReader(cache), cache.path, cache.size, cache.input_size, workers, pin_memory
        )
        self.bad = list(cache.bad)
