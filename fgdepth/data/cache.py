"""A one-time pre-decoded copy of a dataset at one image size, shared by runs and trials.

Decoding JPEGs is what limits a CPU loader. Each (dataset, size) is decoded once into uint8 /
uint16 ``.npy`` files read through memory maps; backgrounds are stored once, not per row. The
cache key includes the dataset's fingerprint, so a changed dataset gets a new cache.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fgdepth.data.dataset import Dataset
from fgdepth.data.format import DataError, Problem, read_rgb, read_sample
from fgdepth.parallel import chunked, run_chunks

CACHE_VERSION = 1
DEPTH_MAX = 65535


def cache_root() -> Path:
    """``$FGDEPTH_CACHE`` when set, else ``~/.cache/fgdepth``."""
    env = os.environ.get("FGDEPTH_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fgdepth"


@dataclass
class ArrayCache:
    """Decoded samples at ``size``: fg_bg (N,S,S,3) u8, bg (B,S,S,3) u8 with a per-row
    ``bg_index``, mask (N,S,S) u8 in {0,1}, depth (N,S,S) u16 (65535 = 1.0)."""

    size: int
    fg_bg: np.ndarray
    bg: np.ndarray
    bg_index: np.ndarray
    mask: np.ndarray
    depth: np.ndarray
    bad: list[Problem]
    path: Path

    def __len__(self) -> int:
        return len(self.fg_bg)

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """Rows as tensors: fg_bg, bg (B,3,S,S) and mask, depth (B,1,S,S), float in [0, 1]."""
        order = np.sort(np.asarray(indices))  # sequential reads from the memory map
        fg_bg = torch.from_numpy(self.fg_bg[order]).permute(0, 3, 1, 2)
        bg = torch.from_numpy(self.bg[self.bg_index[order]]).permute(0, 3, 1, 2)
        mask = torch.from_numpy(self.mask[order]).unsqueeze(1)
        depth = torch.from_numpy(self.depth[order].astype(np.int32)).unsqueeze(1)
        return {
            "fg_bg": fg_bg.float().div_(255),
            "bg": bg.float().div_(255),
            "mask": mask.float(),
            "depth": depth.float().div_(DEPTH_MAX),
            "index": torch.from_numpy(order.astype(np.int64)),
        }


_FILES = {
    "fg_bg": (np.uint8, 3),
    "bg": (np.uint8, 3),
    "mask": (np.uint8, 0),
    "depth": (np.uint16, 0),
}


def _open_arrays(folder: Path, mode: str) -> dict[str, np.ndarray]:
    return {name: np.load(folder / f"{name}.npy", mmap_mode=mode) for name in _FILES}


# Shared with worker processes once (see fgdepth.parallel.run_chunks).
_job: dict = {}


def _setup(job: dict) -> None:
    _job.clear()
    _job.update(job)
    _job["arrays"] = _open_arrays(job["folder"], "r+")


def _decode_backgrounds(chunk: range) -> list[tuple[int, str]]:
    source, size, arrays = _job["source"], _job["size"], _job["arrays"]
    failed = []
    for b in chunk:
        try:
            arrays["bg"][b] = read_rgb(source, _job["bg_files"][b], size)
        except DataError as exc:
            failed.append((b, str(exc)))
    arrays["bg"].flush()
    return failed


def _decode_rows(chunk: range) -> list[Problem]:
    source, size, arrays, rows = _job["source"], _job["size"], _job["arrays"], _job["rows"]
    problems = []
    for i in chunk:
        try:
            sample = read_sample(source, rows[i], size, decode_bg=False)
        except DataError as exc:
            problems.append(Problem(str(exc), i))
            continue
        arrays["fg_bg"][i] = sample.fg_bg
        arrays["mask"][i] = sample.mask
        arrays["depth"][i] = np.round(sample.depth * DEPTH_MAX).astype(np.uint16)
    for array in arrays.values():
        array.flush()
    return problems


def _load(folder: Path, size: int) -> ArrayCache:
    meta = json.loads((folder / "meta.json").read_text())
    arrays = _open_arrays(folder, "r")
    bad = [Problem(p["message"], p["row"]) for p in meta["bad"]]
    bg_index = np.load(folder / "bg_index.npy")
    return ArrayCache(size, bg_index=bg_index, bad=bad, path=folder, **arrays)


def build_cache(
    dataset: Dataset,
    size: int,
    workers: int = 1,
    skip_bad: bool = False,
    root: Path | None = None,
    quiet: bool = False,
) -> ArrayCache:
    """The dataset decoded at ``size``; built on first use, then read from disk.

    Every row is decoded once here, so an unreadable image is found before training starts:
    it raises DataError, or (``skip_bad``) the row is recorded in ``ArrayCache.bad``.
    """
    root = Path(root) if root else cache_root()
    root.mkdir(parents=True, exist_ok=True)
    key = f"{dataset.fingerprint()[:24]}-{size}px-v{CACHE_VERSION}"
    folder = root / key
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per key; others wait, then read it
        if not (folder / "meta.json").exists():
            _build(dataset, size, workers, skip_bad, folder, quiet)
    cache = _load(folder, size)
    if cache.bad and not skip_bad:
        raise DataError(
            f"{dataset.path}: {cache.bad[0]} ({len(cache.bad)} bad row(s); "
            "pass --skip-bad to train without them)"
        )
    return cache


def _build(dataset: Dataset, size: int, workers: int, skip_bad: bool, folder: Path, quiet):
    tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n = len(dataset)
    bg_index = dataset.backgrounds()
    bg_files = list(dataset.rows["bg"].iloc[np.unique(bg_index, return_index=True)[1]])
    counts = {"fg_bg": n, "bg": len(bg_files), "mask": n, "depth": n}
    for name, (dtype, channels) in _FILES.items():
        shape = (counts[name], size, size) + ((channels,) if channels else ())
        np.lib.format.open_memmap(tmp / f"{name}.npy", "w+", dtype, shape).flush()
    np.save(tmp / "bg_index.npy", bg_index)
    job = {
        "folder": tmp,
        "source": dataset.source,
        "size": size,
        "bg_files": bg_files,
        "rows": dataset.rows.to_dict("records"),
    }
    run = dict(workers=workers, quiet=quiet, setup=_setup, setup_args=(job,))
    bg_failed = dict(
        failure
        for part in run_chunks(
            _decode_backgrounds,
            chunked(len(bg_files), 16),
            **run,
            desc=f"decode backgrounds {size}px",
        )
        for failure in part
    )
    problems = [
        problem
        for part in run_chunks(_decode_rows, chunked(n, 256), **run, desc=f"cache {size}px")
        for problem in part
    ]
    problems += [Problem(bg_failed[b], int(i)) for i, b in enumerate(bg_index) if b in bg_failed]
    problems.sort(key=lambda p: p.row)
    if problems and not skip_bad:
        shutil.rmtree(tmp, ignore_errors=True)
        more = f" ({len(problems)} bad rows; pass --skip-bad to train without them)"
        raise DataError(f"{dataset.path}: {problems[0]}{more if len(problems) > 1 else ''}")
    meta = {
        "version": CACHE_VERSION,
        "size": size,
        "rows": n,
        "fingerprint": dataset.fingerprint(),
        "dataset": str(dataset.path),
        "bad": [{"row": p.row, "message": p.message} for p in problems],
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    os.replace(tmp, folder)
