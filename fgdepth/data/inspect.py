"""``fgdepth data inspect``: a JSON summary of a dataset, or every problem found in it."""

from __future__ import annotations

from collections import Counter

import numpy as np

from fgdepth.config import DataConfig
from fgdepth.data.format import (
    DataError,
    Problem,
    Source,
    read_depth_encoding,
    read_manifest,
    read_sample,
    structural_problems,
)
from fgdepth.data.splits import assign_splits, group_key
from fgdepth.parallel import chunked, run_chunks

_job: dict = {}


def _setup(job: dict) -> None:
    _job.clear()
    _job.update(job)


def _decode_chunk(chunk: range) -> dict:
    """Decode rows at full size; return their sizes, statistics and problems."""
    sizes, problems = Counter(), []
    fg, pixels, lo, hi = 0, 0, np.inf, -np.inf
    for i in chunk:
        row = _job["rows"][i]
        if i in _job["skip"]:
            continue
        try:
            s = read_sample(_job["source"], row)
        except DataError as exc:
            file, message = str(exc).split(": ", 1)[0], str(exc).split(": ", 1)[-1]
            problems.append(Problem(message, i, file, _job["source"].line_of(i)))
            continue
        h, w = s.fg_bg.shape[:2]
        sizes[f"{w}x{h}"] += 1
        fg += int(s.mask.sum())
        pixels += s.mask.size
        lo, hi = min(lo, float(s.depth.min())), max(hi, float(s.depth.max()))
    return {"sizes": sizes, "problems": problems, "fg": fg, "pixels": pixels, "lo": lo, "hi": hi}


def inspect_dataset(
    path, splits: DataConfig | None = None, workers: int = 1, quiet: bool = True
) -> tuple[dict, list[Problem]]:
    """Check everything (decoding every image) and summarise; problems are all returned."""
    try:
        source = Source(path)
        rows = read_manifest(source)
        encoding = read_depth_encoding(source)
    except DataError as exc:
        return {}, [Problem(str(exc))]
    problems = structural_problems(source, rows)
    split_counts: dict = {}
    try:
        split_counts = dict(Counter(assign_splits(rows, splits)))
    except DataError as exc:
        problems.append(Problem(str(exc)))
    job = {
        "source": source,
        "rows": rows.to_dict("records"),
        "skip": {p.row for p in problems if p.row is not None},
    }
    sizes, fg, pixels, lo, hi = Counter(), 0, 0, np.inf, -np.inf
    for part in run_chunks(
        _decode_chunk,
        chunked(len(rows), 128),
        workers,
        desc="inspect",
        quiet=quiet,
        setup=_setup,
        setup_args=(job,),
    ):
        sizes += part["sizes"]
        problems += part["problems"]
        fg, pixels = fg + part["fg"], pixels + part["pixels"]
        lo, hi = min(lo, part["lo"]), max(hi, part["hi"])
    problems.sort(key=lambda p: (p.row is not None, p.row or 0))
    summary = {
        "path": str(source.path),
        "format": "zip" if source.is_zip else "folder",
        "samples": len(rows),
        "backgrounds": int(group_key(rows).nunique()),
        "columns": list(rows.columns),
        "image_sizes": dict(sizes),
        "splits": split_counts,
        "foreground_fraction": round(fg / pixels, 5) if pixels else None,
        "depth_range": [round(lo, 5), round(hi, 5)] if pixels else None,
        "depth_encoding": str(encoding) if encoding else None,  # dataset.yaml's
        "problems": len(problems),
    }
    return summary, problems
