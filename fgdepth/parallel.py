"""Run independent chunks of work in worker processes, with a progress bar."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence

from tqdm import tqdm


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def chunked(n: int, chunk: int) -> list[range]:
    return [range(start, min(n, start + chunk)) for start in range(0, n, chunk)]


def run_chunks(
    fn: Callable[[range], object],
    chunks: Sequence[range],
    workers: int = 1,
    desc: str = "",
    quiet: bool = False,
    setup: Callable | None = None,
    setup_args: tuple = (),
    weights: Sequence[int] | None = None,
) -> Iterator[object]:
    """Yield ``fn(chunk)`` for every chunk (in completion order), advancing a bar by rows.

    ``fn`` must be a module-level function. ``setup(*setup_args)`` runs once in each worker
    (and here, when running inline) to hand it large shared state without pickling per task.
    ``weights`` (default: chunk lengths) is how far each finished chunk moves the bar.
    """
    weights = list(weights) if weights is not None else [len(c) for c in chunks]
    total = sum(weights)
    bar = tqdm(total=total, desc=desc, unit="sample", disable=quiet or not sys.stderr.isatty())
    try:
        if workers <= 1 or len(chunks) <= 1:
            if setup is not None:
                setup(*setup_args)
            results: Iterable = map(fn, chunks)
            for weight, result in zip(weights, results, strict=True):
                bar.update(weight)
                yield result
            return
        ctx = mp.get_context("fork" if sys.platform != "win32" else "spawn")
        with ctx.Pool(min(workers, len(chunks)), setup, setup_args) as pool:
            tasks = list(enumerate(chunks))
            for position, result in pool.imap_unordered(_Indexed(fn), tasks):
                bar.update(weights[position])
                yield result
    finally:
        bar.close()


class _Indexed:
    """Wraps ``fn`` so that a worker reports which chunk a result belongs to."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, task: tuple[int, range]):
        position, chunk = task
        return position, self.fn(chunk)
