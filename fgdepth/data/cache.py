"""A one-time pre-decoded copy of a dataset at one image size, shared by runs and trials.

Decoding JPEGs is what limits a CPU loader. Each (dataset, size) is decoded once into uint8 /
uint16 ``.npy`` files read through memory maps; backgrounds are stored once, not per row. The
cache key includes the dataset's fingerprint, so a changed dataset gets a new cache. A cache
may hold one part of the data only: the ``inputs`` (fg_bg, bg) or the ``targets`` (mask,
depth), for models that read their inputs at a larger size than they predict at.

A cache may also hold some rows only: a run decodes the rows its splits use (``rows=``), and a
later call that wants more decodes the missing ones into the same files (``decoded.npy``
marks which rows are there; reading one that is not is an error, never zeros).
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing as mp
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fgdepth.data.batch import DEPTH_MAX, as_float
from fgdepth.data.cleanup import workers_folder
from fgdepth.data.dataset import Dataset
from fgdepth.data.disk import Unwritable, check_room, check_writable, disk_full_as, reserve
from fgdepth.data.format import DataError, Problem, read_rgb_sizes, read_sample_sizes
from fgdepth.parallel import chunked, run_chunks

CACHE_VERSION = 2  # 2: resized by torch's antialiased bilinear kernel (1: PIL's)


def cache_root() -> Path:
    """``$FGDEPTH_CACHE`` when set, else ``~/.cache/fgdepth``."""
    env = os.environ.get("FGDEPTH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fgdepth"


def check_cache_root() -> None:
    """The cache folder can be written (checked before any work that fills it: a decode
    cache, the built-in dataset); Unwritable, one line naming it, when it cannot."""
    try:
        check_writable(cache_root(), "dir")
    except Unwritable as exc:
        raise Unwritable(f"{exc}; point FGDEPTH_CACHE at a writable folder") from None


# what each part of a cache holds
PARTS = {
    "all": ("fg_bg", "bg", "mask", "depth"),
    "inputs": ("fg_bg", "bg"),
    "targets": ("mask", "depth"),
}


@dataclass
class ArrayCache:
    """Decoded samples at ``size``: fg_bg (N,S,S,3) u8, bg (B,S,S,3) u8 with a per-row
    ``bg_index``, mask (N,S,S) u8 in {0,1}, depth (N,S,S) u16 (65535 = 1.0); the arrays
    outside the cache's ``part`` are None."""

    size: int
    fg_bg: np.ndarray | None
    bg: np.ndarray | None
    bg_index: np.ndarray
    mask: np.ndarray | None
    depth: np.ndarray | None
    bad: list[Problem]
    path: Path
    part: str = "all"
    decoded: np.ndarray | None = None  # (N,) bool: the rows decoded (None: every row)

    mode = "cache"  # what a stage's data source is (see fgdepth.data.stream)

    def __len__(self) -> int:
        return len(self.bg_index)

    # A loader's worker process gets the cache by its folder and maps it again: pickling the
    # memory maps would copy the arrays.
    def __getstate__(self) -> dict:
        return {"folder": self.path, "size": self.size, "part": self.part}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(_load(state["folder"], state["size"], state["part"]).__dict__)

    @property
    def input_size(self) -> int:
        return self.size

    def raw(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """Rows in ascending order, as stored: fg_bg, bg (B,3,S,S) uint8, mask (B,1,S,S) uint8,
        depth (B,1,S,S) uint16 (those of the cache's part), and their ``index``."""
        order = np.sort(np.asarray(indices))  # sequential reads from the memory map
        if self.decoded is not None and not self.decoded[order].all():
            missing = order[~self.decoded[order]]
            raise ValueError(f"{self.path}: row {missing[0]} was not decoded into this cache")
        out = {"index": torch.from_numpy(order.astype(np.int64))}
        if self.fg_bg is not None:
            out["fg_bg"] = torch.from_numpy(self.fg_bg[order]).permute(0, 3, 1, 2)
            out["bg"] = torch.from_numpy(self.bg[self.bg_index[order]]).permute(0, 3, 1, 2)
        if self.mask is not None:
            out["mask"] = torch.from_numpy(self.mask[order]).unsqueeze(1)
            out["depth"] = torch.from_numpy(self.depth[order]).unsqueeze(1)
        return out

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """``raw`` as float in [0, 1]."""
        return as_float(self.raw(indices))

    def batches(self, index_lists) -> Iterator[dict[str, torch.Tensor]]:
        """``raw`` of each array of rows, in order (the interface a stream shares)."""
        return (self.raw(rows) for rows in index_lists)

    def close(self) -> None: ...


@dataclass
class ScaledInputCache:
    """Inputs at ``input_scale`` times the targets' size, for models that read more pixels
    than they predict: fg_bg, bg from ``inputs`` (N,3,sS,sS); mask, depth from ``targets``
    (N,1,S,S), so the targets are the same as any other model's at size S."""

    inputs: ArrayCache
    targets: ArrayCache

    mode = "cache"

    @property
    def size(self) -> int:
        return self.targets.size

    @property
    def input_size(self) -> int:
        return self.inputs.size

    @property
    def bad(self) -> list[Problem]:
        rows = {p.row for p in self.targets.bad}
        return sorted(self.targets.bad + [p for p in self.inputs.bad if p.row not in rows],
                      key=lambda p: p.row)  # fmt: skip

    @property
    def path(self) -> Path:
        return self.targets.path

    def __len__(self) -> int:
        return len(self.targets)

    def raw(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        inputs, targets = self.inputs.raw(indices), self.targets.raw(indices)
        return {**targets, "fg_bg": inputs["fg_bg"], "bg": inputs["bg"]}

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        return as_float(self.raw(indices))

    def batches(self, index_lists) -> Iterator[dict[str, torch.Tensor]]:
        return (self.raw(rows) for rows in index_lists)

    def close(self) -> None: ...


_FILES = {
    "fg_bg": (np.uint8, 3),
    "bg": (np.uint8, 3),
    "mask": (np.uint8, 0),
    "depth": (np.uint16, 0),
}


def _open_arrays(folder: Path, mode: str, part: str) -> dict[str, np.ndarray]:
    return {name: np.load(folder / f"{name}.npy", mmap_mode=mode) for name in PARTS[part]}


# Shared with worker processes once (see fgdepth.parallel.run_chunks).
_job: dict = {}


def _setup(job: dict) -> None:
    if mp.parent_process() is not None:  # a pool worker: one thread, the pool has one per core
        torch.set_num_threads(1)
    _job.clear()
    _job.update(job)
    _job["arrays"] = {key: _open_arrays(f, "r+", key[1]) for key, f in job["folders"].items()}


def _decode_backgrounds(chunk: range) -> list[tuple[int, str]]:
    source, arrays = _job["source"], _job["arrays"]
    failed = []
    keys = _job["bg_keys"]
    for b in chunk:
        try:
            images = read_rgb_sizes(source, _job["bg_files"][b], sorted({s for s, _ in keys}))
        except DataError as exc:
            failed.append((b, str(exc)))
            continue
        for size, part in keys:
            arrays[size, part]["bg"][b] = images[size]
    return failed


def _decode_rows(chunk: range) -> list[Problem]:
    source, arrays, rows = _job["source"], _job["arrays"], _job["rows"]
    todo, want = _job["todo"], _job["want"]
    problems = []
    for j in chunk:
        i = int(todo[j])
        keys = [key for key in arrays if want[key][i]]  # the caches that lack this row
        sizes = sorted({size for size, _ in keys})
        inputs = sorted({size for size, part in keys if "fg_bg" in PARTS[part]})
        targets = sorted({size for size, part in keys if "mask" in PARTS[part]})
        try:
            samples = read_sample_sizes(source, rows[i], sizes, False, inputs, targets)
        except DataError as exc:
            problems.append(Problem(str(exc), i, line=source.line_of(i)))
            continue
        for key in keys:
            out, sample = arrays[key], samples[key[0]]
            if "fg_bg" in out:
                out["fg_bg"][i] = sample.fg_bg
            if "mask" in out:
                out["mask"][i] = sample.mask
                out["depth"][i] = np.round(sample.depth * DEPTH_MAX).astype(np.uint16)
    return problems


def _decode(task: tuple[str, range]) -> tuple[str, list]:
    kind, chunk = task
    return kind, (_decode_backgrounds if kind == "bg" else _decode_rows)(chunk)


def _load(folder: Path, size: int, part: str) -> ArrayCache:
    decoded = _decoded(folder)  # before meta.json, which a build replaces first (_finish)
    meta = json.loads((folder / "meta.json").read_text())
    arrays = dict.fromkeys(PARTS["all"]) | _open_arrays(folder, "r", part)
    bad = [Problem(p["message"], p["row"], line=p.get("line")) for p in meta["bad"]]
    bg_index = np.load(folder / "bg_index.npy")
    return ArrayCache(
        size, bg_index=bg_index, bad=bad, path=folder, part=part, decoded=decoded, **arrays
    )


def _decoded(folder: Path) -> np.ndarray | None:
    """The rows a complete cache folder holds (None: all of them)."""
    path = folder / "decoded.npy"
    return np.load(path) if path.exists() else None


def _held(folder: Path, rows: int) -> np.ndarray | None:
    """The rows a cache folder of ``rows`` rows holds, a bool each; None for no cache yet."""
    if not (folder / "meta.json").exists():
        return None
    decoded = _decoded(folder)
    return np.ones(rows, bool) if decoded is None else decoded


def build_cache(
    dataset: Dataset,
    size: int,
    workers: int = 1,
    skip_bad: bool = False,
    root: Path | None = None,
    quiet: bool = False,
    rows: np.ndarray | None = None,
) -> ArrayCache:
    """The dataset decoded at ``size``; built on first use, then read from disk.

    Every row (or each of ``rows``) is decoded once here, so an unreadable image is found
    before training starts: it raises DataError, or (``skip_bad``) the row is recorded in
    ``ArrayCache.bad``.
    """
    return build_caches(dataset, [size], workers, skip_bad, root, quiet, rows)[size]


def cache_key(item: int | tuple[int, str]) -> tuple[int, str]:
    size, part = (item, "all") if isinstance(item, int | np.integer) else item
    if part not in PARTS:
        raise ValueError(f"unknown cache part '{part}'; valid: {', '.join(PARTS)}")
    return int(size), part


def build_caches(
    dataset: Dataset,
    sizes: list[int | tuple[int, str]],
    workers: int = 1,
    skip_bad: bool = False,
    root: Path | None = None,
    quiet: bool = False,
    rows: np.ndarray | None = None,
) -> dict:
    """``build_cache`` for several sizes, each a size (all of the data) or a ``(size, part)``
    with a part of ``PARTS``; returns the caches under the items given. Those not built yet
    are built in one pass that reads each file once (and decodes a JPEG once per reduced
    scale), so a run that trains at several sizes prepares its data in little more time than
    for one. ``rows``: the rows to have decoded (None: all); the others are left out until a
    call asks for them."""
    root = Path(root) if root else cache_root()
    root.mkdir(parents=True, exist_ok=True)
    keys = {item: cache_key(item) for item in sizes}
    folders = {key: cache_folder(dataset, key, root) for key in sorted(set(keys.values()))}
    with ExitStack() as locks:
        for folder in folders.values():  # one builder per key (in sorted order: no deadlock)
            lock = locks.enter_context(open(folder.with_name(f"{folder.name}.lock"), "w"))
            fcntl.flock(lock, fcntl.LOCK_EX)  # others wait, then read it
        wanted = np.ones(len(dataset), bool)
        if rows is not None:
            wanted[:] = False
            wanted[np.asarray(rows, dtype=np.int64)] = True
        held = {key: _held(folder, len(dataset)) for key, folder in folders.items()}
        want = {}  # the rows each cache lacks
        for key, rows_held in held.items():
            lacking = wanted if rows_held is None else wanted & ~rows_held
            if lacking.any():
                want[key] = lacking
        if want:
            _build(dataset, folders, want, held, workers, skip_bad, quiet)
    caches = {key: _load(folder, *key) for key, folder in folders.items()}
    for cache in caches.values():
        if cache.bad and not skip_bad:
            raise DataError(
                f"{dataset.path}: {cache.bad[0]} ({len(cache.bad)} bad row(s); "
                "pass --skip-bad to train without them)"
            )
    return {item: caches[key] for item, key in keys.items()}


def input_size_for(size: int, input_scale: int = 1, source_side: int | None = None) -> int:
    """The side at which a model's inputs are read for output ``size``: ``size x input_scale``,
    but never more pixels than the source images have (``source_side``: the side of a square
    with as many pixels); a model that wants more gets them upsampled on its device."""
    wanted = size * input_scale
    return min(wanted, max(size, source_side)) if source_side else wanted


def model_cache_keys(
    size: int, input_scale: int = 1, source_side: int | None = None
) -> list[int | tuple[int, str]]:
    """What ``build_model_cache`` reads: the whole data at ``size``, or the targets at
    ``size`` and the inputs at ``input_size_for(size, input_scale, source_side)``."""
    inputs = input_size_for(size, input_scale, source_side)
    if inputs == size:
        return [size]
    return [(inputs, "inputs"), (size, "targets")]


def build_model_cache(
    dataset: Dataset, size: int, input_scale: int = 1, source_side: int | None = None, **kwargs
) -> ArrayCache | ScaledInputCache:
    """The cache a model with ``input_scale`` trains and is scored on at output ``size``
    (``build_cache``'s keyword arguments apply to both sizes)."""
    return caches_for_keys(dataset, model_cache_keys(size, input_scale, source_side), **kwargs)


def caches_for_keys(dataset: Dataset, keys: list, **kwargs) -> ArrayCache | ScaledInputCache:
    """The cache of ``model_cache_keys``' keys: one whole cache, or inputs and targets."""
    caches = build_caches(dataset, keys, **kwargs)
    if len(keys) == 1:
        return caches[keys[0]]
    return ScaledInputCache(*(caches[key] for key in keys))


def _array_shapes(size: int, part: str, rows: int, backgrounds: int) -> dict[str, tuple]:
    counts = {"fg_bg": rows, "bg": backgrounds, "mask": rows, "depth": rows}
    return {
        name: (counts[name], size, size) + ((_FILES[name][1],) if _FILES[name][1] else ())
        for name in PARTS[part]
    }


def _nbytes(shape: tuple, dtype) -> int:
    return int(np.prod(shape)) * np.dtype(dtype).itemsize


def cache_bytes(keys, rows: int, backgrounds: int) -> int:
    """The bytes the caches of ``keys`` take for ``rows`` rows on ``backgrounds`` backgrounds
    (the .npy headers aside)."""
    total = 0
    for size, part in {cache_key(item) for item in keys}:
        shapes = _array_shapes(size, part, rows, backgrounds)
        total += sum(_nbytes(shape, _FILES[name][0]) for name, shape in shapes.items())
        total += 4 * rows  # bg_index
    return total


def cache_folder(dataset: Dataset, item, root: Path | None = None) -> Path:
    size, part = cache_key(item)
    root = Path(root) if root else cache_root()
    suffix = "" if part == "all" else "-" + part
    return root / f"{dataset.fingerprint()[:24]}-{size}px{suffix}-v{CACHE_VERSION}"


def key_of_folder(name: str) -> tuple[int, str] | None:
    """The ``(size, part)`` of a cache folder's name (None for another name)."""
    match = re.fullmatch(rf"[0-9a-f]{{24}}-(\d+)px(?:-(inputs|targets))?-v{CACHE_VERSION}", name)
    return (int(match[1]), match[2] or "all") if match else None


def _sync(folder: Path) -> None:
    """The arrays' pages on disk before the cache is declared complete. Workers write through
    shared memory maps, which other processes see at once; syncing here, once, rather than
    after every chunk keeps the decode from waiting on the disk."""
    for path in folder.glob("*.npy"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _allocate(tmps: dict[tuple, Path], rows: int, backgrounds: int, bg_index) -> None:
    """Empty arrays for every key, their bytes reserved on disk before any decoding: a disk
    that cannot hold them fails here, in one line, not half-way through the build."""
    needed = cache_bytes(list(tmps), rows, backgrounds)
    check_room(next(iter(tmps.values())).parent, needed, margin=0)
    for (size, part), tmp in tmps.items():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, shape in _array_shapes(size, part, rows, backgrounds).items():
            path = tmp / f"{name}.npy"
            with disk_full_as(path, needed):
                np.lib.format.open_memmap(path, "w+", _FILES[name][0], shape).flush()
                reserve(path, path.stat().st_size)
        with disk_full_as(tmp, needed):
            np.save(tmp / "bg_index.npy", bg_index)


def _build(dataset: Dataset, folders: dict, want: dict, held: dict, workers, skip_bad, quiet):
    """Decode the rows of ``want`` (per key: a bool per row) for the caches of its keys
    (``held``: the rows each holds, None for none yet): a new cache into a
    ``<folder>.tmp<PID>`` folder, renamed into place once complete (on any failure, a bad
    image, a full disk, an interrupt, it is removed); a cache that lacks rows in place, the
    rows marked as there only once written."""
    folders = {key: folders[key] for key in want}
    tmps = {
        key: f.with_name(f"{f.name}.tmp{os.getpid()}")
        for key, f in folders.items()
        if held[key] is None
    }
    try:
        _build_into(dataset, folders, tmps, want, held, workers, skip_bad, quiet)
    except BaseException:
        for tmp in tmps.values():
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _build_into(dataset, folders, tmps, want, held, workers, skip_bad, quiet) -> None:
    n = len(dataset)
    bg_index = dataset.backgrounds()
    bg_files = list(dataset.rows["bg"].iloc[np.unique(bg_index, return_index=True)[1]])
    if tmps:
        _allocate(tmps, n, len(bg_files), bg_index)
    into = {key: tmps.get(key, folder) for key, folder in folders.items()}
    todo = np.flatnonzero(np.logical_or.reduce(list(want.values())))
    job = {
        "folders": into,
        "source": dataset.source,
        "bg_files": bg_files,
        "rows": dataset.rows.to_dict("records"),
        "want": want,
        "todo": todo,
        # a new cache's backgrounds: all of them (few, and rows added later share them)
        "bg_keys": [key for key in tmps if "bg" in PARTS[key[1]]],
    }
    run = dict(workers=workers, quiet=quiet, setup=_setup, setup_args=(job,),
               pid_dir=workers_folder(cache_root()))  # fmt: skip
    label = ", ".join(f"{s} px{'' if p == 'all' else ' ' + p}" for s, p in into)
    # backgrounds first, then rows, in one pool: its workers start once
    tasks = [("bg", c) for c in chunked(len(bg_files) if job["bg_keys"] else 0, 16)]
    tasks += [("rows", c) for c in chunked(len(todo), 256)]
    done = run_chunks(_decode, tasks, **run, desc=f"cache {label}",
                      weights=[len(chunk) for _, chunk in tasks])  # fmt: skip
    bg_failed, problems = {}, []
    for kind, found in done:
        if kind == "bg":
            bg_failed.update(found)
        else:
            problems += found
    line_of = dataset.source.line_of
    problems += [Problem(bg_failed[b], int(i), line=line_of(int(i)))
                 for i, b in enumerate(bg_index) if b in bg_failed]  # fmt: skip
    problems.sort(key=lambda p: p.row)
    if problems and not skip_bad:
        more = f" ({len(problems)} bad rows; pass --skip-bad to train without them)"
        raise DataError(f"{dataset.path}: {problems[0]}{more if len(problems) > 1 else ''}")
    for key, folder in into.items():
        _sync(folder)
        _finish(dataset, key, folder, want[key], held[key], problems)
        if key in tmps:
            os.replace(folder, folders[key])


def _finish(dataset, key, folder: Path, rows: np.ndarray, held, problems: list[Problem]):
    """Record what a build put into ``folder`` (``rows``: the rows it decoded there; ``held``:
    those it held before, None for a new cache): its bad rows in meta.json (a new cache: every
    row on a background that could not be read), then the rows it holds in decoded.npy, each
    file replaced whole. A reader that takes the old decoded.npy meanwhile sees fewer rows,
    never a row without its data."""
    size, part = key
    new = held is None
    old = [] if new else json.loads((folder / "meta.json").read_text())["bad"]
    known = {b["row"] for b in old}
    found = [p for p in problems if (new or rows[p.row]) and p.row not in known]
    bad = sorted(old + [{"row": p.row, "message": p.message, "line": p.line} for p in found],
                 key=lambda b: b["row"])  # fmt: skip
    decoded = rows.copy() if new else rows | held
    decoded[[p.row for p in found]] = True  # tried: not decoded again
    meta = {
        "version": CACHE_VERSION, "size": size, "part": part, "rows": len(dataset),
        "fingerprint": dataset.fingerprint(), "dataset": str(dataset.path), "bad": bad,
    }  # fmt: skip
    with disk_full_as(folder / "meta.json", 1 << 16):
        _write_replacing(folder / "meta.json", lambda f: f.write(json.dumps(meta, indent=1)))
        if decoded.all():
            (folder / "decoded.npy").unlink(missing_ok=True)
        else:
            _write_replacing(folder / "decoded.npy", lambda f: np.save(f, decoded), "wb")


def _write_replacing(path: Path, write, mode: str = "w") -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    with open(tmp, mode) as f:
        write(f)
    os.replace(tmp, path)
