"""Run independent chunks of work in worker processes, with a progress bar.

Workers come from a fork server, not from forking the caller: a training run has threads
(MLflow's system-metrics monitor, torch's pools), and a fork taken while one of them holds a
lock leaves the child waiting on it forever. A worker that dies raises here instead of hanging.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

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
        method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(
            min(workers, len(chunks)), mp.get_context(method), setup, setup_args
        ) as pool:
            pending = {
                pool.submit(fn, chunk): weight
                for chunk, weight in zip(chunks, weights, strict=True)
            }
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in done:
                        bar.update(pending.pop(future))
                        yield future.result()
            except BrokenProcessPool as exc:
                raise RuntimeError(f"{desc or 'work'}: a worker process died ({exc})") from None
            finally:
                for future in pending:
                    future.cancel()
    finally:
        bar.close()
